"""The VGG-19 encoder (up to relu4_1) and its mirror decoder, as Flax Linen modules.

Layer lists here are the one place that states the architecture (Sec. 6.1 of the paper):
`weights.py` derives the torch state-dict names from them, and tests and benchmarks
import them. Images and feature maps are NHWC float32.
"""
from __future__ import annotations

import functools
import math
import operator

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
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


def is_static(*sizes) -> bool:
    """Whether every size is a plain int, not a symbolic dimension of `jax.export`.

    Exported graphs (adain_jax/export.py) take any image size: where a shape is symbolic,
    the functions below use forms that need no concrete size (slices and concatenations,
    a padded window reduction, direct convolutions), the same values by other means.
    """
    return all(isinstance(size, int) for size in sizes)


def _reflect_index(size: int) -> np.ndarray:
    """Indices into an axis of `size` that pad it by one pixel with reflection."""
    return np.r_[min(1, size - 1), np.arange(size), max(size - 2, 0)]


def reflect_pad(x: jax.Array) -> jax.Array:
    """1-pixel reflection padding of NHWC `x` (torch's ReflectionPad2d(1)).

    Concrete sizes take `_reflect_pad_gather`; symbolic ones (exported graphs, whose
    constraints keep every side >= 2) concatenate the reflected edge rows and columns.
    """
    h, w = x.shape[1:3]
    if is_static(h, w):
        return _reflect_pad_gather(x)
    edges = lambda x, axis: lax.concatenate(  # (jax2onnx 0.17 mis-shapes jnp.concatenate)
        [lax.slice_in_dim(x, 1, 2, axis=axis), x,
         lax.slice_in_dim(x, x.shape[axis] - 2, x.shape[axis] - 1, axis=axis)], axis)
    return edges(edges(x, 1), 2)


@jax.custom_vjp
def _reflect_pad_gather(x: jax.Array) -> jax.Array:
    """A gather with static indices: XLA makes it one fusion, where jnp.pad(mode="reflect")
    is two concatenations (two passes, and slower to compile). The gradient folds the
    border back with slices and pads rather than the gather's transpose, a scatter-add:
    with jaxlib 0.10, a gather-based Winograd tiling gave wrong gradients (6.6e-3
    relative) once jitted inside the whole style-transfer gradient, so the backward pass
    avoids scatters altogether.
    """
    h, w = x.shape[1:3]
    return x[:, _reflect_index(h)][:, :, _reflect_index(w)]


def _pad_axis(x: jax.Array, axis: int, before: int, after: int) -> jax.Array:
    """Zeros before and after `x` along one axis."""
    return jnp.pad(x, [(0, 0)] * axis + [(before, after)] + [(0, 0)] * (x.ndim - axis - 1))


def _fold_border(g: jax.Array, axis: int) -> jax.Array:
    """Adjoint of 1-pixel reflection padding along `axis`."""
    size = g.shape[axis] - 2
    first, last = _reflect_index(size)[[0, -1]]
    edge = lambda i, at: _pad_axis(lax.slice_in_dim(g, i, i + 1, axis=axis), axis, at,
                                   size - 1 - at)
    return lax.slice_in_dim(g, 1, size + 1, axis=axis) + edge(0, first) + edge(size + 1, last)


_reflect_pad_gather.defvjp(lambda x: (_reflect_pad_gather(x), None),
                   lambda _, g: (_fold_border(_fold_border(g, 1), 2),))


def max_pool_ceil(x: jax.Array) -> jax.Array:
    """2x2/2 max-pool that keeps a last odd row/column, like torch's ceil_mode=True."""
    n, h, w, c = x.shape
    if not is_static(h, w):
        # Repeat the last row and column, then keep an even number of each: a repeated
        # edge ties its own maximum as -inf padding would (and lax.pad's ONNX lowering
        # in jax2onnx 0.17 needs concrete sizes).
        hp, wp = 2 * ((h + 1) // 2), 2 * ((w + 1) // 2)
        x = lax.concatenate([x, lax.slice_in_dim(x, h - 1, h, axis=1)], 1)
        x = lax.concatenate([x, lax.slice_in_dim(x, w - 1, w, axis=2)], 2)
        x = lax.slice(x, (0, 0, 0, 0), (n, hp, wp, c))
        return x.reshape(n, hp // 2, 2, wp // 2, 2, c).max(axis=(2, 4))
    ph, pw = h % 2, w % 2
    if ph or pw:
        x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), constant_values=-jnp.inf)
    return x.reshape(n, (h + ph) // 2, 2, (w + pw) // 2, 2, c).max(axis=(2, 4))


def upsample_nearest(x: jax.Array) -> jax.Array:
    n, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, 2, w, 2, c))
    return x.reshape(n, 2 * h, 2 * w, c)


def conv_valid(x: jax.Array, kernel: jax.Array, precision=lax.Precision.HIGHEST) -> jax.Array:
    return lax.conv_general_dilated(x, kernel, (1, 1), "VALID",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    precision=precision)


# Winograd F(4x4, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
# 2016), interpolation points 0, +-1, +-2, inf: Y = A^T [(G g G^T) * (B^T d B)] A on 6x6
# input tiles d giving 4x4 output tiles, 36 multiplications instead of 144. In float32
# its rounding error is ~1e-6 relative per layer (tests/test_transfer.py holds the whole
# pipeline to 1e-5 against the PyTorch port).
WINOGRAD_BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                        [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]])
WINOGRAD_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                       [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])
WINOGRAD_AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                        [0, 1, -1, 8, -8, 1]])
# Below this many input channels XLA's direct convolution is faster on CPU (measured by
# benchmarks/ideas.py): the transforms' memory traffic outweighs the saved multiplications.
WINOGRAD_MIN_CHANNELS = 128
# At most this many output channels take taps_conv3x3_reflect on CPU (benchmarks/ideas.py).
TAPS_MAX_OUT_CHANNELS = 8


def _combine(coefficients, arrays) -> jax.Array:
    """sum_k coefficients[k] * arrays[k], zero terms left out: one elementwise fusion."""
    terms = [a if c == 1 else -a if c == -1 else float(c) * a
             for c, a in zip(coefficients, arrays) if c != 0]
    return functools.reduce(operator.add, terms)


def _tile_rows(x: jax.Array, axis: int, tiles: int) -> list[jax.Array]:
    """Row a (0..5) of every 6-row tile of `x` along `axis` (tile t starts at 4t), as six
    strided slices; `x` holds 4 * tiles + 2 rows."""
    return [lax.slice_in_dim(x, a, a + 4 * tiles - 3, 4, axis) for a in range(6)]


def _untile_rows(rows: list[jax.Array], axis: int, tiles: int) -> jax.Array:
    """Adjoint of `_tile_rows`: 4 * tiles + 2 rows, where neighbouring tiles overlap (rows 4
    and 5 of tile t are rows 0 and 1 of tile t + 1) their two contributions add up."""
    pad = lambda z, before, after: _pad_axis(z, axis, before, after)
    blocks = [pad(rows[a], 0, 1) + pad(rows[a + 4], 1, 0) if a < 2 else pad(rows[a], 0, 1)
              for a in range(4)]  # rows 4t + a for t in 0..tiles
    x = jnp.stack(blocks, axis=axis + 1)
    x = x.reshape(x.shape[:axis] + (4 * tiles + 4,) + x.shape[axis + 2:])
    return lax.slice_in_dim(x, 0, 4 * tiles + 2, axis=axis)


def _transform(matrix: np.ndarray, x: jax.Array, precision) -> jax.Array:
    """sum_k matrix[r, k] x[k, ...]: a small matrix applied along the leading axis."""
    flat = x.reshape(x.shape[0], -1)
    out = jnp.dot(jnp.asarray(matrix, x.dtype), flat, precision=precision)
    return out.reshape((matrix.shape[0],) + x.shape[1:])


def _winograd_input(x: jax.Array, precision) -> jax.Array:
    """B^T d B of every 6x6 tile d of reflect-padded `x` (n, h, w, c), laid out as
    (6 column, 6 row, n, tiles down, tiles across, c)."""
    n, h, w, _ = x.shape
    th, tw = -(-h // 4), -(-w // 4)
    # Zero rows and columns past the end only reach outputs that are cropped away.
    xp = jnp.pad(reflect_pad(x), ((0, 0), (0, 4 * th - h), (0, 4 * tw - w), (0, 0)))
    down = _transform(WINOGRAD_BT, jnp.stack(_tile_rows(xp, 1, th)), precision)
    return _transform(WINOGRAD_BT, jnp.stack(_tile_rows(down, 3, tw)), precision)


def _winograd_input_adjoint(dv: jax.Array, h: int, w: int) -> jax.Array:
    """The gradient of `_winograd_input` for its output's cotangent `dv`: (n, h, w, c)."""
    tw, th = dv.shape[4], dv.shape[3]
    down = _untile_rows([_combine(WINOGRAD_BT[:, b], list(dv)) for b in range(6)], 3, tw)
    xp = _untile_rows([_combine(WINOGRAD_BT[:, a], list(down)) for a in range(6)], 1, th)
    return _fold_border(_fold_border(xp[:, :h + 2, :w + 2], 1), 2)


def _winograd_output(m: jax.Array, h: int, w: int, precision) -> jax.Array:
    """A^T M A of every tile M of `m` (6 column, 6 row, n, th, tw, d), each 4x4 result
    written in place: (n, h, w, d)."""
    _, _, n, th, tw, d = m.shape
    y = _transform(WINOGRAD_AT, m, precision)  # (4 j, 6 row, ...)
    y = _transform(WINOGRAD_AT, jnp.moveaxis(y, 1, 0), precision)  # (4 i, 4 j, ...)
    return jnp.transpose(y, (2, 3, 0, 4, 1, 5)).reshape(n, 4 * th, 4 * tw, d)[:, :h, :w]


def _winograd_output_adjoint(g: jax.Array, th: int, tw: int) -> jax.Array:
    """The gradient of `_winograd_output` for its output's cotangent `g` (n, h, w, d)."""
    n, h, w, d = g.shape
    g = jnp.pad(g, ((0, 0), (0, 4 * th - h), (0, 4 * tw - w), (0, 0)))
    g = g.reshape(n, th, 4, tw, 4, d)
    down = jnp.stack([_combine(WINOGRAD_AT[:, a], [g[:, :, i] for i in range(4)])
                      for a in range(6)])  # (6 row, n, th, tw, 4, d)
    return jnp.stack([_combine(WINOGRAD_AT[:, b], [down[..., j, :] for j in range(4)])
                      for b in range(6)])


# U = G g G^T of a 3x3 kernel g, as one (36, 9) matrix: U[b, a] = G[a, i] g[i, j] G[b, j].
_WINOGRAD_KERNEL = np.einsum("bj,ai->baij", WINOGRAD_G, WINOGRAD_G).reshape(36, 9)


def _winograd(x, kernel, precision):
    """The forward pass; returns the output and the transformed input and kernel."""
    n, h, w, cin = x.shape
    cout = kernel.shape[-1]
    v = _winograd_input(x, precision)
    u = jnp.dot(jnp.asarray(_WINOGRAD_KERNEL, kernel.dtype), kernel.reshape(9, cin * cout),
                precision=precision).reshape(36, cin, cout)
    m = jnp.einsum("pkc,pcd->pkd", v.reshape(36, -1, cin), u, precision=precision)
    return _winograd_output(m.reshape(v.shape[:-1] + (cout,)), h, w, precision), (v, u)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def winograd_conv3x3_reflect(x: jax.Array, kernel: jax.Array, precision=lax.Precision.HIGHEST):
    """conv3x3_reflect by Winograd F(4x4, 3x3): 36 multiplications per 4x4 tile, not 144.

    Y = A^T [U * V] A with V = B^T d B for the 6x6 input tiles d and U = G g G^T: the
    transforms are products with the small matrices (quick to compile), the products
    one batched matrix product. The gradient is written out (the transposed transforms
    as stacked sums of strided slices, elementwise fusions, and the transposed products)
    instead of differentiated: autodiff turned each tiling into pads and adds over 6x
    the data, and at 64x64x256 the input gradient took 1.5x as long (benchmarks/ideas.py,
    "gradients"). Written-out forward transforms were no faster and doubled the compile
    time of a stylisation.
    """
    return _winograd(x, kernel, precision)[0]


def _winograd_bwd(precision, saved, g):
    v, u = saved
    (h, w), (cin, cout) = g.shape[1:3], u.shape[1:]
    dm = _winograd_output_adjoint(g, *v.shape[3:5]).reshape(36, -1, cout)
    dv = jnp.einsum("pkd,pcd->pkc", dm, u, precision=precision)
    dx = _winograd_input_adjoint(dv.reshape(v.shape), h, w)
    du = jnp.einsum("pkc,pkd->pcd", v.reshape(36, -1, cin), dm, precision=precision)
    dkernel = jnp.dot(jnp.asarray(_WINOGRAD_KERNEL.T, du.dtype), du.reshape(36, -1),
                      precision=precision)
    return dx, dkernel.reshape(3, 3, cin, cout)


winograd_conv3x3_reflect.defvjp(_winograd, _winograd_bwd)


def _taps(kernel: jax.Array) -> jax.Array:
    """(3, 3, cin, cout) -> (cin, 9 * cout): every tap's matrix side by side, tap (i, j) at
    columns (3i + j) * cout onwards."""
    cin, cout = kernel.shape[2:]
    return jnp.transpose(kernel, (2, 0, 1, 3)).reshape(cin, 9 * cout)


@jax.custom_vjp
def taps_conv3x3_reflect(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """conv3x3_reflect for few output channels (the decoder's last layer, 64 -> 3).

    One matrix product gives all nine taps' contributions, z = x @ (cin, 9 * cout), and the
    output sums their shifted slices; padding commutes with the per-pixel product, so the
    (small) product is padded instead of `x`. XLA's direct convolution vectorises over
    output channels: on a 2-core EPYC it ran 64 -> 3 at 512² in 61 ms, this in 9 ms.
    """
    n, h, w, _ = x.shape
    cout = kernel.shape[-1]
    z = reflect_pad(jnp.dot(x, _taps(kernel), precision=lax.Precision.HIGHEST))
    out = [lax.slice(z, (0, i, j, (3 * i + j) * cout), (n, i + h, j + w, (3 * i + j + 1) * cout))
           for i in range(3) for j in range(3)]
    return functools.reduce(operator.add, out)


def _taps_bwd(saved, g):
    """The gradient written out: the cotangent of z (the shifted sum's and the padding's
    adjoints applied to `g`, a small array), then two products, x's gradient dz @ taps^T and
    the taps' x^T @ dz. At batch 8, 256², 64 -> 3 (a train step's last layer) this took 153
    ms where the direct convolution's gradient took 422, and JAX's differentiation of the
    forward pass 3x as long for the kernel's (benchmarks/ideas.py, "gradients")."""
    x, kernel = saved
    cin, cout = kernel.shape[2:]
    dz = jnp.concatenate([jnp.pad(g, ((0, 0), (i, 2 - i), (j, 2 - j), (0, 0)))
                          for i in range(3) for j in range(3)], axis=-1)
    dz = _fold_border(_fold_border(dz, 1), 2).reshape(-1, 9 * cout)
    hi = lax.Precision.HIGHEST
    dx = jnp.dot(dz, _taps(kernel).T, precision=hi).reshape(x.shape)
    dtaps = jnp.dot(x.reshape(-1, cin).T, dz, precision=hi)
    return dx, jnp.transpose(dtaps.reshape(cin, 3, 3, cout), (1, 2, 0, 3))


def direct_conv3x3_reflect(x, kernel, precision=lax.Precision.HIGHEST):
    """conv3x3_reflect as XLA's own convolution of the padded `x`."""
    return conv_valid(reflect_pad(x), kernel, precision)


taps_conv3x3_reflect.defvjp(lambda x, kernel: (taps_conv3x3_reflect(x, kernel), (x, kernel)),
                            _taps_bwd)


def conv3x3_reflect(x: jax.Array, kernel: jax.Array, precision=lax.Precision.HIGHEST):
    """3x3 convolution of the reflection-padded `x` (same spatial size out).

    On CPU, layers with many input channels use Winograd F(4x4, 3x3), layers with few
    output channels `taps_conv3x3_reflect`; elsewhere (GPUs pick their own algorithms) a
    direct convolution. Only in float32: Winograd's transforms (entries up to 8 and 1/24)
    would add to bfloat16's rounding. Nor for symbolic sizes (exported graphs run on any
    backend).
    """
    if (jax.default_backend() == "cpu" and x.dtype == jnp.float32
            and is_static(*x.shape[1:3])):
        if x.shape[-1] >= WINOGRAD_MIN_CHANNELS:
            return winograd_conv3x3_reflect(x, kernel, precision)
        if (kernel.shape[-1] <= TAPS_MAX_OUT_CHANNELS
                and precision == lax.Precision.HIGHEST):
            return taps_conv3x3_reflect(x, kernel)
    return direct_conv3x3_reflect(x, kernel, precision)


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
            return conv3x3_reflect(x, kernel, self.precision) + bias
        return conv_valid(x, kernel, self.precision) + bias


def relu_name(conv_name: str) -> str:
    return "relu" + conv_name[len("conv"):]


class Encoder(nn.Module):
    """VGG-19 to relu4_1. Returns {tap: activation} for `taps`, or relu4_1 alone."""

    taps: tuple[str, ...] = (CONTENT_LAYER,)

    @nn.compact
    def __call__(self, images):
        unknown = set(self.taps) - set(STYLE_LAYERS)
        if unknown:
            raise ValueError(f"unknown VGG taps {sorted(unknown)}; available: {STYLE_LAYERS}")
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


@functools.partial(jax.jit, static_argnums=(1, 2))
def torch_default_conv_init(key, layers, dtype=jnp.float32):
    """Parameters drawn like PyTorch's default Conv2d init (kaiming_uniform a=sqrt(5)).

    Both kernel and bias are U(-1/sqrt(fan_in), 1/sqrt(fan_in)); this is how the reference
    port initialises the decoder it trains. All tensors come from one U(-1, 1) draw, sliced
    and scaled per layer: one random kernel to compile instead of two per layer (eager init
    of VGG's 20 tensors took ~6 s of XLA compilation on a 2-core CPU, this takes ~0.5 s).
    """
    convs = [layer for layer in layers if isinstance(layer, Conv)]
    shapes = [((c.kernel, c.kernel, c.in_channels, c.out_channels), (c.out_channels,))
              for c in convs]
    sizes = [math.prod(shape) for pair in shapes for shape in pair]
    flat = jax.random.uniform(key, (sum(sizes),), dtype, -1.0, 1.0)
    params, offset = {}, 0
    for conv, (kernel_shape, bias_shape) in zip(convs, shapes):
        bound = 1.0 / (conv.in_channels * conv.kernel * conv.kernel) ** 0.5
        tensors = []
        for shape in (kernel_shape, bias_shape):
            size = math.prod(shape)
            tensors.append(bound * flat[offset:offset + size].reshape(shape))
            offset += size
        params[conv.name] = {"kernel": tensors[0], "bias": tensors[1]}
    return params


def init_params(key) -> dict:
    """Random {"encoder", "decoder"} parameters (PyTorch default init for both)."""
    k_enc, k_dec = jax.random.split(key)
    return {"encoder": torch_default_conv_init(k_enc, ENCODER_LAYERS),
            "decoder": torch_default_conv_init(k_dec, DECODER_LAYERS)}
