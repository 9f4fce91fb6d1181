"""adain_jax.models: parameter shapes and counts against the PyTorch reference modules."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adain_jax import models
from tests import torch_reference as ref


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_parameter_counts_match_reference_modules():
    params = models.init_params(jax.random.key(0))
    vgg = ref.port_vgg_to_relu4_1(ref.make_port_vgg())
    decoder = ref.make_port_decoder()
    assert _count(params["encoder"]) == sum(p.numel() for p in vgg.parameters())
    assert _count(params["decoder"]) == sum(p.numel() for p in decoder.parameters())


def test_init_matches_module_shapes():
    """init_params builds exactly the tree the Linen modules create."""
    params = models.init_params(jax.random.key(0))
    x = np.zeros((1, 16, 16, 3), np.float32)
    # shapes only: eval_shape traces the modules' init without running it (36 s op by op)
    enc = jax.eval_shape(models.Encoder().init, jax.random.key(1), x)["params"]
    dec = jax.eval_shape(models.Decoder().init, jax.random.key(1),
                         np.zeros((1, 2, 2, 512), np.float32))["params"]
    shapes = lambda t: jax.tree.map(lambda a: a.shape, t)
    assert shapes(enc) == shapes(params["encoder"])
    assert shapes(dec) == shapes(params["decoder"])


def test_torch_default_init_bounds():
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for kernel and bias, as torch.nn.Conv2d."""
    params = models.init_params(jax.random.key(3))["decoder"]["conv3_4"]
    bound = 1 / np.sqrt(256 * 9)
    k = np.asarray(params["kernel"])
    assert np.abs(k).max() <= bound and np.abs(k).max() > 0.99 * bound
    assert abs(k.std() - bound / np.sqrt(3)) < 0.01 * bound  # std of U(-b, b)


def test_feature_size_is_ceil_div_8():
    for size in [1, 2, 7, 8, 9, 37, 91, 512, 513]:
        assert models.feature_size(size) == -(-size // 8)


def test_unknown_tap_is_an_error():
    import pytest
    with pytest.raises(ValueError, match="unknown VGG taps"):
        models.Encoder(taps=("relu4_2",)).init(jax.random.key(0), np.zeros((1, 16, 16, 3)))


# ---- the CPU-only Winograd convolution -------------------------------------------------

def np_conv3x3_reflect(x, kernel):
    """Float64 reference: torch's ReflectionPad2d(1) then a 3x3 valid correlation."""
    x = np.pad(np.asarray(x, np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    kernel = np.asarray(kernel, np.float64)
    h, w = x.shape[1] - 2, x.shape[2] - 2
    return sum(np.einsum("nhwi,io->nhwo", x[:, i:i + h, j:j + w], kernel[i, j])
               for i in range(3) for j in range(3))


def np_conv3x3_reflect_grads(x, kernel, g):
    """Float64 gradients of `np_conv3x3_reflect` for the output cotangent `g`: the kernel's
    correlates the padded input with g; the input's scatters g through each tap, then
    folds each reflected border row and column back onto the one it copies."""
    x, kernel, g = (np.asarray(a, np.float64) for a in (x, kernel, g))
    n, h, w, _ = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    dkernel = np.array([[np.einsum("nhwi,nhwo->io", xp[:, i:i + h, j:j + w], g)
                         for j in range(3)] for i in range(3)])
    dxp = np.zeros_like(xp)
    for i in range(3):
        for j in range(3):
            dxp[:, i:i + h, j:j + w] += g @ kernel[i, j].T
    source = lambda size: np.r_[1, np.arange(size), size - 2]  # padded index -> source
    dx_rows = np.zeros((n, h, w + 2, x.shape[-1]))
    for p, row in enumerate(source(h)):
        dx_rows[:, row] += dxp[:, p]
    dx = np.zeros_like(x)
    for p, col in enumerate(source(w)):
        dx[:, :, col] += dx_rows[:, :, p]
    return dx, dkernel


# 2 px (the smallest side reflection allows), whole 4-px tiles, and sides that leave
# partial tiles; 9 input channels: the transforms do not depend on how many.
@pytest.mark.parametrize("h,w", [(2, 3), (4, 8), (13, 6)])
def test_winograd_conv_matches_float64(h, w):
    """F(4x4, 3x3) and its hand-written gradient against the direct float64 sums; tolerance
    1e-5 relative L2 (float32 Winograd rounding lands near 1e-6; a wrong transform entry,
    or overlapping tiles not added up in the gradient, is off by O(1e-1) or more)."""
    rng = np.random.default_rng(h * w)
    x = rng.standard_normal((2, h, w, 9)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 9, 5)).astype(np.float32)
    g = rng.standard_normal((2, h, w, 5)).astype(np.float32)
    expected = np_conv3x3_reflect(x, kernel)
    expected_dx, expected_dkernel = np_conv3x3_reflect_grads(x, kernel, g)

    # jitted: eagerly each of Winograd's few dozen ops would compile on its own
    @jax.jit
    def both(x, k, g):
        winograd, vjp = jax.vjp(models.winograd_conv3x3_reflect, x, k)
        return winograd, vjp(g), models.conv_valid(models.reflect_pad(x), k)

    winograd, (dx, dkernel), direct = both(x, kernel, g)
    assert winograd.shape == expected.shape
    assert ref.rel_l2(winograd, expected) < 1e-5
    assert ref.rel_l2(direct, expected) < 1e-5
    assert dx.shape == x.shape and dkernel.shape == kernel.shape
    assert ref.rel_l2(dx, expected_dx) < 1e-5
    assert ref.rel_l2(dkernel, expected_dkernel) < 1e-5


@pytest.mark.parametrize("h,w,cin,cout", [(2, 3, 9, 3), (13, 6, 64, 3), (5, 7, 4, 8)])
def test_taps_conv_matches_float64(h, w, cin, cout):
    """The few-outputs form and its hand-written gradient against the direct float64 sums
    (1e-5 relative L2; a tap shifted by one pixel or swapped, or a border not folded back
    in the gradient, is off by O(1e-1) or more)."""
    rng = np.random.default_rng(h * w + cin)
    x = rng.standard_normal((2, h, w, cin)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, cin, cout)).astype(np.float32)
    g = rng.standard_normal((2, h, w, cout)).astype(np.float32)
    expected = np_conv3x3_reflect(x, kernel)
    expected_dx, expected_dkernel = np_conv3x3_reflect_grads(x, kernel, g)
    out, vjp = jax.vjp(models.taps_conv3x3_reflect, x, kernel)
    dx, dkernel = jax.jit(vjp)(g)
    assert out.shape == expected.shape
    assert ref.rel_l2(out, expected) < 1e-5
    assert dx.shape == x.shape and dkernel.shape == kernel.shape
    assert ref.rel_l2(dx, expected_dx) < 1e-5
    assert ref.rel_l2(dkernel, expected_dkernel) < 1e-5


def _convolutions(fn, *args) -> int:
    """How many convolution ops the lowered program of `fn(*args)` holds (no compile)."""
    return jax.jit(fn).lower(*args).as_text().count("stablehlo.convolution")


def test_backend_picks_winograd_on_cpu_only():
    """On CPU a 3x3 layer with >= WINOGRAD_MIN_CHANNELS inputs lowers to Winograd, and one
    with <= TAPS_MAX_OUT_CHANNELS outputs to the taps product (matrix products, no
    convolution op); other layers, and every layer elsewhere, convolve."""
    cpu = jax.default_backend() == "cpu"
    wide = jax.ShapeDtypeStruct((1, 8, 8, models.WINOGRAD_MIN_CHANNELS), jnp.float32)
    narrow = jax.ShapeDtypeStruct((1, 8, 8, models.WINOGRAD_MIN_CHANNELS - 1), jnp.float32)
    kernel = lambda x, cout=16: jax.ShapeDtypeStruct((3, 3, x.shape[-1], cout), jnp.float32)
    few = models.TAPS_MAX_OUT_CHANNELS
    assert _convolutions(models.conv3x3_reflect, wide, kernel(wide)) == (0 if cpu else 1)
    assert _convolutions(models.conv3x3_reflect, narrow, kernel(narrow)) == 1
    assert _convolutions(models.conv3x3_reflect, narrow, kernel(narrow, few)) == (0 if cpu else 1)
    assert _convolutions(models.conv3x3_reflect, narrow, kernel(narrow, few + 1)) == 1

    # The real layers: in the decoder only conv1_2 (64 -> 64) convolves on CPU, conv1_1
    # (64 -> 3) takes the taps product; in the encoder conv0 (1x1), conv1_1, conv1_2 and
    # conv2_1 (3 or 64 inputs) convolve.
    params = jax.eval_shape(models.init_params, jax.random.key(0))
    narrow_dec = [c for c in models.DECODER_LAYERS
                  if c != models.UP and c.in_channels < models.WINOGRAD_MIN_CHANNELS
                  and c.out_channels > models.TAPS_MAX_OUT_CHANNELS]
    narrow_enc = [c for c in models.ENCODER_LAYERS
                  if c != models.POOL and (c.kernel == 1 or c.in_channels < 128)]
    assert [c.name for c in narrow_dec] == ["conv1_2"]
    assert [c.name for c in narrow_enc] == ["conv0", "conv1_1", "conv1_2", "conv2_1"]
    t = jax.ShapeDtypeStruct((1, 2, 2, 512), jnp.float32)
    image = jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32)
    decode = lambda p, t: models.Decoder().apply({"params": p}, t)
    encode = lambda p, x: models.Encoder().apply({"params": p}, x)
    n_dec = sum(c != models.UP for c in models.DECODER_LAYERS)
    n_enc = sum(c != models.POOL for c in models.ENCODER_LAYERS)
    assert _convolutions(decode, params["decoder"], t) == (len(narrow_dec) if cpu else n_dec)
    assert _convolutions(encode, params["encoder"], image) == (len(narrow_enc) if cpu else n_enc)
