"""A DenseNet-121 encoder (torchvision's `features` to the end of dense block 3) and its decoder.

The encoder is torchvision's ImageNet DenseNet-121 exactly, with batch norm in inference
mode: conv0 7x7/2 (zero pad 3), norm0, relu0, pool0 3x3/2 max (pad 1); dense block 1 (6
layers), transition 1, dense block 2 (12), transition 2, dense block 3 (24): 1024 channels
at stride 16. Each dense layer is norm1-relu1-conv1 (1x1 to 4 * 32 channels)-norm2-relu2-
conv2 (3x3, zero pad 1, to 32 channels), concatenated to its input; each transition is
norm-relu-conv (1x1, halving the channels)-2x2/2 average pool. The ImageNet mean/std
normalisation of the input is part of the encoder (constants, not parameters).

Choices for style transfer (the follow-up study's design, made concrete here):
- AdaIN acts on the raw output of dense block 3 (CONTENT_LAYER, no final norm/ReLU).
- The style loss taps (STYLE_LAYERS) are the two transitions' 1x1 conv outputs, taken
  *before* their average pool (strides 4 and 8: the finer of the two choices), plus the
  dense block 3 output (stride 16).
- Images are padded at the bottom and right by edge replication to a multiple of 16
  before the encoder (`pad_to_stride`), so the feature map covers the whole image and the
  decoder's output, 16 x the feature size, can be cropped to it, top-left aligned. The
  Linen `Encoder` itself does not pad: it is torchvision's network for any input size.

Parameters form a plain tree like the VGG encoder's, batch-norm statistics included:
{"conv0": {"kernel"}, "norm0": {"scale", "bias", "mean", "var"},
 "denseblock1": {"denselayer1": {"norm1", "conv1", "norm2", "conv2"}, ...},
 "transition1": {"norm", "conv"}, ...}; `densenet_from_torchvision` maps a torchvision
state dict into it.
"""
from __future__ import annotations

import functools
import re
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from adain_jax import models
from adain_jax.models import UP, Conv, ConvLayer, torch_default_conv_init, upsample_nearest
from adain_jax.errors import WeightsError

GROWTH = 32
BOTTLENECK = 4 * GROWTH  # bn_size * growth_rate channels out of each dense layer's 1x1 conv
INIT_FEATURES = 64
BLOCKS = (6, 12, 24)  # dense layers per block; DenseNet-121's fourth block (16) is not used
BN_EPS = 1e-5
STRIDE = 16  # dense block 3 is four halvings below the image
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Every activation the encoder can return, in network order.
TAPS = ("relu0", "pool0", "denseblock1", "transition1_conv", "transition1", "denseblock2",
        "transition2_conv", "transition2", "denseblock3")
STYLE_LAYERS = ("transition1_conv", "transition2_conv", "denseblock3")
CONTENT_LAYER = "denseblock3"

# The decoder: from 1024 channels at stride 16 to RGB, one stage per encoder stage it
# mirrors (dense block 3, block 2, block 1, the stem), each ending in a nearest 2x
# upsampling; 3x3 reflection-padded convs, ReLU after every conv but the last. About
# 3.5 M parameters, like the VGG decoder, but with 7 convs instead of 9 and only one
# (to RGB) at full resolution.
DECODER_LAYERS = (
    Conv("block3", 1024, 256), UP,
    Conv("block2_1", 256, 256), Conv("block2_2", 256, 128), UP,
    Conv("block1_1", 128, 128), Conv("block1_2", 128, 64), UP,
    Conv("stem_1", 64, 32), UP,
    Conv("stem_2", 32, 3),
)


def feature_size(size: int) -> int:
    """Side of the dense block 3 map for an image side of `size` (padded to a multiple of 16)."""
    return -(-size // STRIDE)


def torchvision_feature_size(size: int) -> int:
    """Side of torchvision's dense block 3 map for an unpadded input side of `size`."""
    size = (size - 1) // 2 + 1  # conv0 7x7/2 pad 3
    size = (size - 1) // 2 + 1  # pool0 3x3/2 pad 1
    return size // 4  # two 2x2/2 average pools, floor


def pad_to_stride(images: jax.Array) -> jax.Array:
    """Edge-pad NHWC images at the bottom/right to a multiple of STRIDE (no-op if already)."""
    n, h, w, c = images.shape
    if not models.is_static(h, w):
        # Symbolic sizes (exported graphs): STRIDE - 1 copies of the last row and column,
        # then the multiple of STRIDE kept (concatenations and a slice export to ONNX).
        hp, wp = STRIDE * ((h + STRIDE - 1) // STRIDE), STRIDE * ((w + STRIDE - 1) // STRIDE)
        last_row = lax.slice_in_dim(images, h - 1, h, axis=1)
        images = lax.concatenate([images] + [last_row] * (STRIDE - 1), 1)
        last_col = lax.slice_in_dim(images, w - 1, w, axis=2)
        images = lax.concatenate([images] + [last_col] * (STRIDE - 1), 2)
        return lax.slice(images, (0, 0, 0, 0), (n, hp, wp, c))
    ph, pw = -h % STRIDE, -w % STRIDE
    if not (ph or pw):
        return images
    return jnp.pad(images, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")


# ---- Encoder -----------------------------------------------------------------------------

class BatchNorm(nn.Module):
    """Batch norm in inference mode, (x - mean) / sqrt(var + eps) * scale + bias.

    The running statistics are parameters here (the encoder is frozen), so a weights file
    is one flat tree of arrays.
    """

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        mean = self.param("mean", nn.initializers.zeros, (c,))
        var = self.param("var", nn.initializers.ones, (c,))
        return (x - mean) * (scale * lax.rsqrt(var + BN_EPS)) + bias


class ZeroPadConv(nn.Module):
    """A bias-free conv with torch's symmetric zero padding, kaiming-normal init (torchvision)."""

    features: int
    kernel: int
    stride: int = 1
    padding: int = 0
    precision: lax.Precision = lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.variance_scaling(2.0, "fan_in", "normal"),
                            (self.kernel, self.kernel, x.shape[-1], self.features))
        pad = ((self.padding, self.padding),) * 2
        return lax.conv_general_dilated(x, kernel, (self.stride, self.stride), pad,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        precision=self.precision)


class DenseLayer(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = ZeroPadConv(BOTTLENECK, 1, name="conv1")(nn.relu(BatchNorm(name="norm1")(x)))
        y = ZeroPadConv(GROWTH, 3, padding=1, name="conv2")(nn.relu(BatchNorm(name="norm2")(y)))
        return jnp.concatenate([x, y], axis=-1)


class DenseBlock(nn.Module):
    num_layers: int

    @nn.compact
    def __call__(self, x):
        for i in range(1, self.num_layers + 1):
            x = DenseLayer(name=f"denselayer{i}")(x)
        return x


def max_pool_3x3_s2(x):
    """torch MaxPool2d(3, stride=2, padding=1): the padding never wins the max."""
    if not models.is_static(*x.shape[1:3]):
        return _max_pool_3x3_s2_symbolic(x)
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                             ((0, 0), (1, 1), (1, 1), (0, 0)))


def _max_pool_3x3_s2_symbolic(x):
    """max_pool_3x3_s2 from concatenations and strided slices (jax2onnx 0.17 lowers
    reduce_window to a 4-D MaxPool that ONNX Runtime refuses). A copy of the edge row
    pads as well as -inf: it always shares its window with the row it copies."""
    for axis in (1, 2):
        size = x.shape[axis]
        out = (size - 1) // 2 + 1
        x = lax.concatenate([lax.slice_in_dim(x, 0, 1, axis=axis), x,
                             lax.slice_in_dim(x, size - 1, size, axis=axis)], axis)
        x = functools.reduce(jnp.maximum, [
            lax.slice_in_dim(x, i, i + 2 * out - 1, 2, axis=axis) for i in range(3)])
    return x


def avg_pool_2x2(x):
    """torch AvgPool2d(2, stride=2): floor mode, a last odd row/column is dropped."""
    n, h, w, c = x.shape
    x = x[:, : h - h % 2, : w - w % 2]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


class Transition(nn.Module):
    """norm-relu-conv (1x1); returns the conv output, the caller pools (a tap sits between)."""

    features: int

    @nn.compact
    def __call__(self, x):
        return ZeroPadConv(self.features, 1, name="conv")(nn.relu(BatchNorm(name="norm")(x)))


class Encoder(nn.Module):
    """DenseNet-121 features to dense block 3 on RGB in [0, 1]; returns {tap: activation}.

    Stops after the last requested tap. No padding: see `pad_to_stride`.
    """

    taps: tuple[str, ...] = (CONTENT_LAYER,)

    @nn.compact
    def __call__(self, images):
        unknown = [tap for tap in self.taps if tap not in TAPS]
        if unknown:
            raise ValueError(f"DenseNet-121 has no tap {unknown[0]!r}; its taps are "
                             f"{', '.join(TAPS)}")
        out = {}

        def keep(name, value):
            if name in self.taps:
                out[name] = value
            return len(out) == len(self.taps)

        mean = jnp.asarray(IMAGENET_MEAN, images.dtype)
        std = jnp.asarray(IMAGENET_STD, images.dtype)
        x = ZeroPadConv(INIT_FEATURES, 7, stride=2, padding=3, name="conv0")((images - mean) / std)
        x = nn.relu(BatchNorm(name="norm0")(x))
        if keep("relu0", x):
            return out
        x = max_pool_3x3_s2(x)
        if keep("pool0", x):
            return out
        for block, num_layers in enumerate(BLOCKS, start=1):
            x = DenseBlock(num_layers, name=f"denseblock{block}")(x)
            if keep(f"denseblock{block}", x) or block == len(BLOCKS):
                return out
            x = Transition(x.shape[-1] // 2, name=f"transition{block}")(x)
            if keep(f"transition{block}_conv", x):
                return out
            x = avg_pool_2x2(x)
            if keep(f"transition{block}", x):
                return out
        raise AssertionError("unreachable")


class Decoder(nn.Module):
    """Dense block 3 features back to RGB, following DECODER_LAYERS."""

    @nn.compact
    def __call__(self, t):
        x = t
        last = [layer for layer in DECODER_LAYERS if layer != UP][-1]
        for layer in DECODER_LAYERS:
            if layer == UP:
                x = upsample_nearest(x)
                continue
            x = ConvLayer(layer.out_channels, layer.kernel, name=layer.name)(x)
            if layer is not last:
                x = nn.relu(x)
        return x


def init_encoder(key) -> dict:
    """Random encoder params as torchvision initialises DenseNet (BN identity statistics).

    Kernels are kaiming-normal, N(0, 2 / fan_in). They are drawn with NumPy from a seed
    taken from `key`: XLA compiles JAX's sampler once per kernel shape, ~45 shapes here.
    """
    rng = np.random.default_rng(int(jax.random.randint(key, (), 0, 2**31 - 1)))
    params: dict = {}
    for path, shape in encoder_shapes().items():
        if path[-1] == "kernel":
            fan_in = shape[0] * shape[1] * shape[2]
            value = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        else:
            value = np.full(shape, 1.0 if path[-1] in ("scale", "var") else 0.0)
        node = params
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = jnp.asarray(value, jnp.float32)
    return params


def init_decoder(key) -> dict:
    """Decoder params with PyTorch's default conv init, like the VGG decoder's."""
    return torch_default_conv_init(key, DECODER_LAYERS)


def init_params(key) -> dict:
    k_enc, k_dec = jax.random.split(key)
    return {"encoder": init_encoder(k_enc), "decoder": init_decoder(k_dec)}


# ---- Porting torchvision's weights ---------------------------------------------------------

# Our leaf name -> torchvision's, per module kind.
_TORCH_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
               "var": "running_var"}
# Old torchvision checkpoints (densenet121-a639ec97.pth among them) name dense-layer
# modules "norm.1", "conv.2", ...; torchvision renames them on load, and so do we.
_LEGACY_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.\w+)$")
_BLOCK_LAYER_KEY = re.compile(r"^features\.denseblock(\d+)\.denselayer(\d+)\.")


def encoder_shapes() -> dict:
    """The encoder's parameter tree as {path tuple: shape}, from the module itself."""
    dummy = jax.ShapeDtypeStruct((1, 2 * STRIDE, 2 * STRIDE, 3), jnp.float32)
    tree = jax.eval_shape(Encoder().init, jax.random.key(0), dummy)["params"]
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {tuple(k.key for k in path): tuple(leaf.shape) for path, leaf in flat}


def torchvision_key(path: tuple[str, ...]) -> str:
    """torchvision state-dict key of our parameter at `path`, e.g. ("norm0", "mean")."""
    return "features." + ".".join(path[:-1]) + "." + _TORCH_LEAF[path[-1]]


def densenet_from_torchvision(state: Mapping, source: str = "densenet121.pth") -> dict:
    """Encoder params from a torchvision DenseNet-121 state dict ({key: ndarray}).

    Takes the full model's keys (`features.*`, `classifier.*`) or those of `model.features`
    alone; old-style keys ("norm.1") are accepted. Only the tensors up to dense block 3
    are used; norm5, transition3, denseblock4, the classifier and num_batches_tracked are
    ignored. Conv kernels go from (O, I, kh, kw) to (kh, kw, I, O).
    """
    state = {_LEGACY_KEY.sub(r"\1\2", key): value for key, value in state.items()}
    if "features.conv0.weight" not in state and "conv0.weight" in state:
        state = {f"features.{key}": value for key, value in state.items()}
    if "features.conv0.weight" not in state:
        raise WeightsError(f"{source}: no tensor 'features.conv0.weight'; is this a "
                           "torchvision DenseNet-121 state dict?")
    for key in state:
        match = _BLOCK_LAYER_KEY.match(key)
        if match and int(match[1]) <= len(BLOCKS) and int(match[2]) > BLOCKS[int(match[1]) - 1]:
            raise WeightsError(f"{source}: has {key!r}, but DenseNet-121's dense block "
                               f"{match[1]} has {BLOCKS[int(match[1]) - 1]} layers; is this "
                               "another DenseNet?")

    params: dict = {}
    for path, shape in encoder_shapes().items():
        key = torchvision_key(path)
        if key not in state:
            raise WeightsError(f"{source}: missing tensor {key!r}; is this a torchvision "
                               "DenseNet-121 state dict?")
        value = np.asarray(state[key], dtype=np.float32)
        if path[-1] == "kernel":
            value = value.transpose(2, 3, 1, 0)
        if value.shape != shape:
            torch_shape = (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape
            raise WeightsError(f"{source}: {key} has shape {np.asarray(state[key]).shape}, "
                               f"expected {torch_shape} for DenseNet-121")
        if path[-1] == "var" and not np.all(value >= 0):
            raise WeightsError(f"{source}: {key} has negative running variances")
        node = params
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = np.ascontiguousarray(value)
    return params
