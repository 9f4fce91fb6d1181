"""The Gatys et al. baseline: its losses against float64 references, and its optimisers.

Gram matrices and E_l are checked against NumPy float64 written from Gatys et al.'s
formula (unnormalised G = F F^T, 1 / (4 N^2 M^2)), tolerance 1e-6 relative. The full
objective is checked against the PyTorch port's VGG (tests/torch_reference.py) with the
losses restated in float64 torch, tolerance 1e-4 relative (float32 features).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from adain_jax import gatys
from tests import torch_reference as ref
from tests.torch_reference import nchw

SCALE = 2.5  # keeps activations O(1) through the random VGG, as in test_transfer


@pytest.fixture(scope="module")
def vgg_and_params():
    vgg = ref.port_vgg_to_relu4_1(ref.randomize_(ref.make_port_vgg(), seed=3, scale=SCALE)).eval()
    params = {"encoder": jax.tree.map(jnp.asarray, ref.convs_from(vgg, ref.PORT_VGG_CONVS))}
    return vgg, params


def images(n, h, w, seed):
    return np.random.default_rng(seed).random((n, h, w, 3)).astype(np.float32)


def numpy_gatys_E(x_feat, s_feat):
    """E_l of Gatys et al. (Eq. 4 there) per image, from NHWC float64 features."""
    def gram(f):
        n, h, w, c = f.shape
        flat = f.reshape(n, h * w, c).transpose(0, 2, 1)  # (n, N_l, M_l)
        return flat @ flat.transpose(0, 2, 1), c, h * w
    g, n_l, m_l = gram(x_feat.astype(np.float64))
    a, _, m_s = gram(s_feat.astype(np.float64))
    # A comes from the style image, whose M differs: each side is normalised by its own M.
    return np.sum((g / m_l - a / m_s) ** 2, axis=(1, 2)) / (4 * n_l**2)


def test_gram_and_gram_loss_match_float64():
    rng = np.random.default_rng(0)
    x = rng.random((2, 5, 7, 6)).astype(np.float32)
    s = rng.random((2, 4, 3, 6)).astype(np.float32)
    flat = x.astype(np.float64).reshape(2, 35, 6)
    np.testing.assert_allclose(gatys.gram(x), np.einsum("npc,npd->ncd", flat, flat) / 35, rtol=1e-6)
    # With M_x = M_s the normalised form is exactly Gatys's 1 / (4 N^2 M^2) sum (G - A)^2.
    s_same = rng.random((2, 5, 7, 6)).astype(np.float32)
    x64, s64 = x.astype(np.float64).reshape(2, 35, 6), s_same.astype(np.float64).reshape(2, 35, 6)
    g, a = x64.transpose(0, 2, 1) @ x64, s64.transpose(0, 2, 1) @ s64
    expected = np.mean(np.sum((g - a) ** 2, axis=(1, 2)) / (4 * 6**2 * 35**2))
    got = gatys.gram_style_loss({"l": gatys.gram(x)}, {"l": gatys.gram(s_same)})
    np.testing.assert_allclose(float(got), expected, rtol=1e-6)
    got = gatys.gram_style_loss({"l": gatys.gram(x)}, {"l": gatys.gram(s)})
    np.testing.assert_allclose(float(got), np.mean(numpy_gatys_E(x, s)), rtol=1e-6)


def test_objective_matches_torch_vgg(vgg_and_params):
    vgg, params = vgg_and_params
    content, style, x = images(1, 32, 40, 1), images(1, 24, 32, 2), images(1, 32, 40, 3)

    @jax.jit  # params an argument: closed over, XLA constant-folds the encoder (slowly)
    def both(params, x, content, style):
        return {loss: gatys.objective(x, params, gatys._targets(params, content, style, loss),
                                      style_loss=loss, content_weight=0.7, style_weight=3.0)
                for loss in gatys.STYLE_LOSSES}

    net = ref.Net(vgg, ref.make_port_decoder())
    with torch.no_grad():
        fx = [f.double() for f in net.encode_with_intermediate(nchw(x))]
        fs = [f.double() for f in net.encode_with_intermediate(nchw(style))]
        fc = net.encode(nchw(content)).double()
    expected_c = torch.mean((fx[-1] - fc) ** 2).item()
    expected_s = {"gram": 0.0, "meanstd": 0.0}
    for a, b in zip(fx, fs):
        expected_s["gram"] += numpy_gatys_E(a.numpy().transpose(0, 2, 3, 1),
                                            b.numpy().transpose(0, 2, 3, 1)).mean()
        (am, astd), (bm, bstd) = ref.calc_mean_std(a), ref.calc_mean_std(b)
        expected_s["meanstd"] += (torch.mean((am - bm) ** 2)
                                  + torch.mean((astd - bstd) ** 2)).item()

    for style_loss, (total, (loss_c, loss_s)) in both(params, x, content, style).items():
        assert abs(float(loss_c) - expected_c) <= 1e-4 * expected_c
        assert abs(float(loss_s) - expected_s[style_loss]) <= 1e-4 * expected_s[style_loss]
        expected = 0.7 * expected_c + 3.0 * expected_s[style_loss]
        assert abs(float(total) - expected) <= 1e-4 * expected


def test_adam_with_a_small_lr_lowers_the_loss_every_step(vgg_and_params):
    _, params = vgg_and_params
    content, style = images(1, 32, 32, 4)[0], images(1, 24, 32, 5)
    history = []
    out = gatys.gatys(params, content, style, steps=4, optimizer="adam", style_loss="meanstd",
                      lr=1e-3, callback=lambda step, loss: history.append((step, float(loss))))
    assert out.shape == content.shape
    assert [s for s, _ in history] == [1, 2, 3, 4]
    losses = [v for _, v in history]
    assert losses[0] > 0  # the content image is not already a solution
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0


def test_lbfgs_lowers_the_loss_and_keeps_shapes(vgg_and_params):
    _, params = vgg_and_params
    content, style = images(2, 32, 32, 6), images(1, 24, 32, 7)
    history = []
    compiled = gatys._step._cache_size()
    out = gatys.gatys(params, content, style, steps=3, optimizer="lbfgs",
                      callback=lambda step, loss: history.append(float(loss)))
    assert gatys._step._cache_size() - compiled <= 1  # the step compiles once, not per step
    assert out.shape == content.shape
    assert np.all(np.isfinite(np.asarray(out)))
    # the zoom line search only accepts steps that decrease the objective
    assert all(b < a for a, b in zip(history, history[1:])), history
    assert not np.allclose(np.asarray(out), content)  # it moved


def test_bad_arguments_are_clear(vgg_and_params):
    _, params = vgg_and_params
    content = images(1, 32, 32, 8)
    with pytest.raises(ValueError, match="optimizer"):
        gatys.gatys(params, content, content, steps=1, optimizer="sgd")
    with pytest.raises(ValueError, match="style_loss"):
        gatys.gatys(params, content, content, steps=1, style_loss="patch")
    with pytest.raises(ValueError, match="2 styles for 1 content"):
        gatys.gatys(params, content, images(2, 32, 32, 9), steps=1)
