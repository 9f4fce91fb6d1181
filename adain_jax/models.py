"""The VGG-19 encoder (up to relu4_1) and its mirror decoder, as Flax Linen modules.

Layer lists here are the one place that states the architecture (Sec. 6.1 of the paper):
`weights.py` derives the torch state-dict names from them, and tests and benchmarks
import them. Images and feature maps are NHWC float32.
"""
from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


class Conv(NamedTuple):
    name: str
    in_channels: int
    out_channels: int
    kernel: int = 3


POOL = "pool"  # 2x2 max-pool, stride 2, ceil mode
UP = "up"  # nearest-neighbour 2x upsampling

# VGG-19 up to relu4_1. `conv0` is the 1x1 conv of the normalised VGG that maps RGB in
# [0, 1] to the mean-subtracted BGR*255 input the original Caffe VGG expects.
ENCODER_LAYERS = (
    Conv("conv0", 3, 3, kernel=1),
    Conv("conv1_1", 3, 64), Conv("conv1_2", 64, 64), POOL,
    Conv("conv2_1", 64, 128), Conv("conv2_2", 128, 128), POOL,
    Conv("conv3_1", 128, 256), Conv("conv3_2", 256, 256),
    Conv("conv3_3", 256, 256), Conv("conv3_4", 256, 256), POOL,
    Conv("conv4_1", 256, 512),
)
# Activations used by the style loss (Eq. 13); the last is the AdaIN layer.
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
CONTENT_LAYER = "relu4_1"

# The decoder mirrors the encoder; ReLU after every conv but the last, no normalisation.
DECODER_LAYERS = (
    Conv("conv4_1", 512, 256), UP,
    Conv("conv3_4", 256, 256), Conv("conv3_3", 256, 256), Conv("conv3_2", 256, 256),
    Conv("conv3_1", 256, 128), UP,
    Conv("conv2_2", 128, 128), Conv("conv2_1", 128, 64), UP,
    Conv("conv1_2", 64, 64), Conv("conv1_1", 64, 3),
)
FEATURE_STRIDE = 8  # relu4_1 is three ceil-mode pools below the image


def feature_size(size: int) -> int:
    """Spatial size at relu4_1 of an image side of `size` pixels (ceil-mode pooling)."""
    for _ in range(3):
        size = -(-size // 2)
    return size


def reflect_pad(x: jax.Array) -> jax.Array:
    return jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")


def max_pool_ceil(x: jax.Array) -> jax.Array:
    """2x2/2 max-pool that keeps a last odd row/column, like torch's ceil_mode=True."""
    n, h, w, c = x.shape
    ph, pw = h % 2, w % 2
    if ph or pw:
        x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), constant_values=-jnp.inf)
    return x.reshape(n, (h + ph) // 2, 2, (w + pw) // 2, 2, c).max(axis=(2, 4))


def upsample_nearest(x: jax.Array) -> jax.Array:
    n, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, 2, w, 2, c))
    return x.reshape(n, 2 * h, 2 * w, c)


class ConvLayer(nn.Module):
    """A conv with reflection padding (3x3) or none (1x1), as in the reference port."""

    features: int
    kernel: int = 3
    precision: lax.Precision = lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        in_channels = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (self.kernel, self.kernel, in_channels, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        if self.kernel == 3:
            x = reflect_pad(x)
        y = lax.conv_general_dilated(x, kernel, (1, 1), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     precision=self.precision)
        return y + bias


def relu_name(conv_name: str) -> str:
    return "relu" + conv_name[len("conv"):]


class Encoder(nn.Module):
    """VGG-19 to relu4_1. Returns {tap: activation} for `taps`, or relu4_1 alone."""

    taps: tuple[str, ...] = (CONTENT_LAYER,)

    @nn.compact
    def __call__(self, images):
        x, out = images, {}
        for layer in ENCODER_LAYERS:
            if layer == POOL:
                x = max_pool_ceil(x)
                continue
            x = ConvLayer(layer.out_channels, layer.kernel, name=layer.name)(x)
            if layer.kernel == 1:
                continue  # conv0 is a linear colour transform, no ReLU
            x = nn.relu(x)
            if relu_name(layer.name) in self.taps:
                out[relu_name(layer.name)] = x
            if len(out) == len(self.taps):
                break
        return out


class Decoder(nn.Module):
    """g in the paper: relu4_1 features back to an RGB image."""

    @nn.compact
    def __call__(self, t):
        x = t
        convs = [layer for layer in DECODER_LAYERS if layer != UP]
        for layer in DECODER_LAYERS:
            if layer == UP:
                x = upsample_nearest(x)
                continue
            x = ConvLayer(layer.out_channels, layer.kernel, name=layer.name)(x)
            if layer is not convs[-1]:
                x = nn.relu(x)
        return x


def torch_default_conv_init(key, layers, dtype=jnp.float32):
    """Parameters drawn like PyTorch's default Conv2d init (kaiming_uniform a=sqrt(5)).

    Both kernel and bias are U(-1/sqrt(fan_in), 1/sqrt(fan_in)); this is how the reference
    port initialises the decoder it trains.
    """
    params = {}
    for layer in layers:
        if not isinstance(layer, Conv):
            continue
        key, k_w, k_b = jax.random.split(key, 3)
        fan_in = layer.in_channels * layer.kernel * layer.kernel
        bound = 1.0 / fan_in**0.5
        shape = (layer.kernel, layer.kernel, layer.in_channels, layer.out_channels)
        params[layer.name] = {
            "kernel": jax.random.uniform(k_w, shape, dtype, -bound, bound),
            "bias": jax.random.uniform(k_b, (layer.out_channels,), dtype, -bound, bound),
        }
    return params


def init_params(key) -> dict:
    """Random {"encoder", "decoder"} parameters (PyTorch default init for both)."""
    k_enc, k_dec = jax.random.split(key)
    return {"encoder": torch_default_conv_init(k_enc, ENCODER_LAYERS),
            "decoder": torch_default_conv_init(k_dec, DECODER_LAYERS)}
