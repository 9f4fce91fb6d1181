"""adain_jax.ops against float64 NumPy / PyTorch references."""
import numpy as np
import pytest
import torch

from adain_jax import ops
from tests.torch_reference import coral as torch_coral
from tests.torch_reference import rel_l2

RNG = np.random.default_rng(0)


def np_mean_std(x, eps=1e-5):
    """Float64 reference: unbiased variance over space, as the PyTorch port."""
    x = np.asarray(x, np.float64)
    n = x.shape[1] * x.shape[2]
    mean = x.mean(axis=(1, 2))
    var = ((x - mean[:, None, None]) ** 2).sum(axis=(1, 2)) / (n - 1)
    return mean, np.sqrt(var + eps)


def np_adain(x, y):
    xm, xs = np_mean_std(x)
    ym, ys = np_mean_std(y)
    return (x - xm[:, None, None]) / xs[:, None, None] * ys[:, None, None] + ym[:, None, None]


def feats(*shape, scale=1.0, shift=0.0):
    return (RNG.standard_normal(shape) * scale + shift).astype(np.float32)


def test_mean_std_matches_float64_unbiased():
    x = feats(2, 5, 7, 6, scale=3.0, shift=1.0)
    mean, std = ops.mean_std(x)
    ref_mean, ref_std = np_mean_std(x)
    assert rel_l2(mean, ref_mean) < 1e-6
    assert rel_l2(std, ref_std) < 1e-6
    # the biased estimator is 1 - sqrt(34/35) ~ 1.4e-2 away: this test would catch it
    biased = np.sqrt(np.asarray(x, np.float64).var(axis=(1, 2)) + 1e-5)
    assert rel_l2(biased, ref_std) > 1e-3


def test_adain_eq8_float64():
    x, y = feats(2, 6, 5, 8), feats(2, 9, 4, 8, scale=2.0, shift=-1.0)
    out = np.asarray(ops.adain(x, y))
    assert rel_l2(out, np_adain(x, y)) < 1e-6
    # the output carries the style's statistics
    out_mean, out_std = np_mean_std(out)
    y_mean, y_std = np_mean_std(y)
    np.testing.assert_allclose(out_mean, y_mean, atol=1e-5)
    np.testing.assert_allclose(np.sqrt(out_std**2 - 1e-5), np.sqrt(y_std**2 - 1e-5),
                               rtol=1e-3)


def test_alpha_blend_eq14():
    t, c = feats(1, 3, 3, 4), feats(1, 3, 3, 4)
    np.testing.assert_allclose(ops.blend_alpha(t, c, 0.3), 0.3 * t + 0.7 * c, rtol=1e-6, atol=1e-6)


def test_interpolated_stats_equal_weighted_adain_outputs_eq15():
    x = feats(1, 6, 7, 5)
    styles = [feats(1, 4, 6, 5, scale=s, shift=s) for s in (0.5, 2.0, 4.0)]
    weights = np.array([1.0, 2.0, 5.0])
    stats = [ops.mean_std(s) for s in styles]
    mean = np.stack([m for m, _ in stats], axis=1)
    std = np.stack([s for _, s in stats], axis=1)
    m, s = ops.interpolate_stats(mean, std, weights)
    out = ops.adain_from_stats(x, *ops.mean_std(x), m, s)
    w = weights / weights.sum()
    ref = sum(wk * np_adain(x, sk) for wk, sk in zip(w, styles))
    assert rel_l2(out, ref) < 1e-6


def _style_stats(styles):
    stats = [ops.mean_std(s) for s in styles]
    return (np.stack([m for m, _ in stats], axis=1), np.stack([s for _, s in stats], axis=1))


def test_masked_adain_binary_equals_per_region_gather():
    """Binary masks: each region normalised by its own pixels' statistics (Lua test.lua)."""
    x = feats(1, 6, 8, 4, scale=2.0)
    styles = [feats(1, 5, 5, 4, scale=3.0, shift=2.0), feats(1, 5, 5, 4, scale=0.5)]
    fg = np.zeros((6, 8), np.float32)
    fg[1:5, 2:7] = 1
    masks = np.stack([fg, 1 - fg])[None]
    out = np.asarray(ops.masked_adain(x, *_style_stats(styles), masks))
    ref = np.zeros((6, 8, 4))
    for k, style in enumerate(styles):
        region = np.asarray(x[0], np.float64)[masks[0, k] > 0]  # (P, C)
        rm, rs = region.mean(0), np.sqrt(region.var(0, ddof=1) + 1e-5)
        sm, ss = np_mean_std(style)
        ref[masks[0, k] > 0] = (region - rm) / rs * ss[0] + sm[0]
    assert rel_l2(out[0], ref) < 1e-6


def test_masked_adain_constant_soft_masks_equal_interpolation():
    """Masks c and 1 - c everywhere weight every pixel alike: that is Eq. 15 with (c, 1 - c)."""
    x = feats(1, 5, 6, 4)
    styles = [feats(1, 5, 5, 4, scale=3.0, shift=2.0), feats(1, 5, 5, 4, scale=0.5)]
    masks = np.stack([np.full((5, 6), 0.3), np.full((5, 6), 0.7)])[None].astype(np.float32)
    out = ops.masked_adain(x, *_style_stats(styles), masks)
    ref = 0.3 * np_adain(x, styles[0]) + 0.7 * np_adain(x, styles[1])
    assert rel_l2(out, ref) < 1e-5


def test_masked_adain_uncovered_pixels_keep_content_float64():
    """Where masks sum below 1 the content features fill the rest (alpha = 0 uncovered)."""
    x = feats(1, 6, 8, 4, scale=2.0)
    style = feats(1, 5, 5, 4, scale=3.0, shift=2.0)
    mask = np.zeros((6, 8), np.float32)
    mask[:, :4] = 1.0
    mask[:, 4] = 0.25  # a soft edge: a quarter styled, three quarters content
    out = np.asarray(ops.masked_adain(x, *_style_stats([style]), mask[None, None]))
    x64 = np.asarray(x[0], np.float64)
    m = mask[..., None].astype(np.float64)
    w1, w2 = m.sum(), (m * m).sum()
    mean = (m * x64).sum((0, 1)) / w1
    std = np.sqrt((m * (x64 - mean) ** 2).sum((0, 1)) / (w1 - w2 / w1) + 1e-5)
    sm, ss = np_mean_std(style)
    styled = (x64 - mean) / std * ss[0] + sm[0]
    ref = m * styled + (1 - m) * x64
    assert rel_l2(out[0], ref) < 1e-6
    np.testing.assert_allclose(out[0][:, 5:], x64[:, 5:], rtol=0, atol=1e-6)
    empty = ops.masked_adain(x, *_style_stats([style]), np.zeros((1, 1, 6, 8), np.float32))
    np.testing.assert_allclose(empty, x, rtol=0, atol=1e-6)


def test_resize_nearest_matches_torch():
    m = RNG.random((2, 37, 91)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(m)[None], size=(5, 12), mode="nearest")
    np.testing.assert_array_equal(ops.resize_nearest(m, 5, 12), ref[0].numpy())


def test_coral_matches_reference_port():
    source = RNG.random((20, 17, 3)).astype(np.float32)
    target = (RNG.random((20, 17, 3)) * np.array([0.3, 0.8, 0.5]) + 0.1).astype(np.float32)
    target[..., 1] += 0.4 * target[..., 0]  # correlated channels
    out = np.asarray(ops.coral(source, target))
    ref = torch_coral(torch.from_numpy(source.transpose(2, 0, 1)).double(),
                      torch.from_numpy(target.transpose(2, 0, 1)).double())
    assert rel_l2(out, ref.numpy().transpose(1, 2, 0)) < 1e-5
    # the result has the target's channel means
    np.testing.assert_allclose(out.reshape(-1, 3).mean(0), target.reshape(-1, 3).mean(0), atol=1e-5)


def test_luminance_recombination_keeps_content_chroma():
    yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    content, stylized = RNG.random((2, 9, 7, 3)), RNG.random((2, 9, 7, 3))
    out = np.asarray(ops.recombine_luminance(stylized.astype(np.float32),
                                             content.astype(np.float32)), np.float64)
    out_yiq, c_yiq, s_yiq = out @ yiq.T, content @ yiq.T, stylized @ yiq.T
    np.testing.assert_allclose(out_yiq[..., 0], s_yiq[..., 0], atol=1e-5)
    np.testing.assert_allclose(out_yiq[..., 1:], c_yiq[..., 1:], atol=2e-3)  # 3-digit matrix


@pytest.mark.parametrize("shape", [(1, 7, 7, 2), (2, 5, 9, 3)])
def test_max_pool_ceil_and_upsample_match_torch(shape):
    from adain_jax.models import max_pool_ceil, upsample_nearest
    x = feats(*shape)
    t = torch.from_numpy(x.transpose(0, 3, 1, 2))
    pooled = torch.nn.functional.max_pool2d(t, 2, 2, 0, ceil_mode=True).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(max_pool_ceil(x), pooled)
    up = torch.nn.functional.interpolate(t, scale_factor=2, mode="nearest").numpy().transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(upsample_nearest(x), up)
