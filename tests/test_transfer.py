"""adain_jax.apply/encode/decode against the PyTorch reference port (tests/torch_reference.py).

Weights are random, saved with torch.save in the published layouts and read back through
adain_jax.weights, so the torch->Flax name map is under test too. Tolerance: relative L2
error <= 1e-5 (a correct float32 implementation lands near 1e-6; a biased variance in
AdaIN is caught, see test_biased_variance_would_be_caught).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import adain_jax
from adain_jax import ops, transfer, weights
from tests import torch_reference as ref
from tests.torch_reference import nchw, nhwc, rel_l2

TOL = 1e-5
SCALE = 2.5  # keeps activations O(1) through 10 random layers (default init shrinks them)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Port-layout torch models and our params, converted from their .pth files."""
    tmp = tmp_path_factory.mktemp("weights")
    vgg = ref.randomize_(ref.make_port_vgg(), seed=1, scale=SCALE)
    decoder = ref.randomize_(ref.make_port_decoder(), seed=2, scale=SCALE)
    torch.save(vgg.state_dict(), tmp / "vgg_normalised.pth")
    torch.save(decoder.state_dict(), tmp / "decoder.pth")
    params = {
        "encoder": weights.encoder_from_port(weights.torch_load_state_dict(tmp / "vgg_normalised.pth")),
        "decoder": weights.decoder_from_port(weights.torch_load_state_dict(tmp / "decoder.pth")),
    }
    params = jax.tree.map(jnp.asarray, params)
    return ref.port_vgg_to_relu4_1(vgg).eval(), decoder.eval(), params


def images(n, h, w, seed):
    return np.random.default_rng(seed).random((n, h, w, 3)).astype(np.float32)


# Jitted: eager, every op of a new shape compiles a program of its own (slow on CPU).
encode_jit = jax.jit(adain_jax.encode, static_argnames=("taps",))

CONTENT = images(1, 40, 48, seed=10)
STYLE = images(1, 48, 40, seed=11)


@pytest.mark.parametrize("h,w", [(40, 48), (37, 45)])
def test_encoder_taps_match_reference(models, h, w):
    vgg, _, params = models
    x = images(2, h, w, seed=3)
    ours = encode_jit(params, x, taps=adain_jax.STYLE_LAYERS)
    with torch.no_grad():
        theirs = ref.Net(vgg, ref.make_port_decoder()).encode_with_intermediate(nchw(x))
    for name, t in zip(adain_jax.STYLE_LAYERS, theirs):
        assert ours[name].shape == nhwc(t).shape, name
        assert rel_l2(ours[name], nhwc(t)) < TOL, name


def test_adain_output_and_decoded_image_match_reference(models):
    vgg, decoder, params = models
    with torch.no_grad():
        t_ref = ref.adaptive_instance_normalization(vgg(nchw(CONTENT)), vgg(nchw(STYLE)))
        out_ref = decoder(t_ref)

    @jax.jit  # one program: eager, encode and decode compiled each op on its own
    def adain_and_decoded(params, content, style):
        t = adain_jax.adain(adain_jax.encode(params, content), adain_jax.encode(params, style))
        return t, adain_jax.decode(params, t)

    t, decoded = adain_and_decoded(params, CONTENT, STYLE)
    assert rel_l2(t, nhwc(t_ref)) < TOL
    assert rel_l2(decoded, nhwc(out_ref)) < TOL
    assert rel_l2(adain_jax.apply(params, CONTENT, STYLE), nhwc(out_ref)) < TOL


@pytest.mark.parametrize("alpha", [0.0, 0.35, 1.0])
def test_alpha_matches_reference(models, alpha):
    vgg, decoder, params = models
    with torch.no_grad():
        out_ref = ref.style_transfer(vgg, decoder, nchw(CONTENT), nchw(STYLE), alpha=alpha)
    assert rel_l2(adain_jax.apply(params, CONTENT, STYLE, alpha), nhwc(out_ref)) < TOL


def test_interpolation_matches_reference(models):
    vgg, decoder, params = models
    styles = images(3, 48, 40, seed=12) * np.array([1.0, 0.5, 0.8], np.float32)
    w = [0.2, 0.3, 0.5]
    with torch.no_grad():
        out_ref = ref.style_transfer(vgg, decoder, nchw(CONTENT), nchw(styles), 0.8, w)
    out = adain_jax.apply(params, CONTENT, styles, 0.8, style_weights=w)
    assert rel_l2(out, nhwc(out_ref)) < TOL
    # unnormalised weights mean the same convex combination
    out2 = adain_jax.apply(params, CONTENT, list(styles[:, None]), 0.8, style_weights=[2, 3, 5])
    assert rel_l2(out2, nhwc(out_ref)) < TOL


def test_coral_colour_preservation_matches_reference(models):
    vgg, decoder, params = models
    style = STYLE * np.array([1.0, 0.3, 0.6], np.float32)
    with torch.no_grad():
        style_ref = ref.coral(nchw(style)[0], nchw(CONTENT)[0])[None]
        out_ref = ref.style_transfer(vgg, decoder, nchw(CONTENT), style_ref)
    out = adain_jax.apply(params, CONTENT, style, preserve_color=True)
    assert rel_l2(out, nhwc(out_ref)) < TOL


def test_binary_masks_match_lua_procedure(models):
    """At 37x45, not a multiple of 8: the relu4_1 map is 5x6 (ceil-mode pooling), not
    4x5, and the masks must be resized to it, as the Lua procedure does."""
    vgg, decoder, params = models
    content = images(1, 37, 45, seed=23)
    styles = [images(1, 48, 40, seed=13), images(1, 32, 56, seed=14) * 0.5]
    fg = np.zeros((37, 45), np.float32)
    fg[9:30, 13:41] = 1  # 3x4 of the 5x6 cells after the nearest resize
    masks = np.stack([fg, 1 - fg])
    with torch.no_grad():
        out_ref = ref.masked_style_transfer(vgg, decoder, nchw(content),
                                            [nchw(s) for s in styles], masks, alpha=0.9)
    assert out_ref.shape[-2:] == (40, 48)
    out = adain_jax.apply(params, content, styles, 0.9, masks=masks)
    assert out.shape == (1, 37, 45, 3)
    assert rel_l2(out, nhwc(out_ref)[:, :37, :45]) < TOL


def test_masks_leaving_pixels_uncovered_keep_the_content(models):
    """One mask over the left half, one style: the right half keeps f(c) (alpha 0 there);
    an all-black mask gives g(f(c)). Both against the reference (issue 14: flat colour)."""
    vgg, decoder, params = models
    style = images(1, 48, 40, seed=13)
    half = np.zeros((1, 40, 48), np.float32)
    half[:, :, :24] = 1
    for masks in (half, np.zeros_like(half)):
        with torch.no_grad():
            out_ref = ref.masked_style_transfer(vgg, decoder, nchw(CONTENT), [nchw(style)],
                                                masks, alpha=0.9)
        out = adain_jax.apply(params, CONTENT, [style], 0.9, masks=masks)
        assert rel_l2(out, nhwc(out_ref)) < TOL
    with torch.no_grad():
        content_only = nhwc(decoder(vgg(nchw(CONTENT))))
    assert rel_l2(out, content_only) < TOL


def test_luminance_mode_against_reference(models):
    """Stylise luminance images with the port, then put back the content's chroma (float64)."""
    vgg, decoder, params = models
    yiq = np.array([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263],
                    [0.211456, -0.522591, 0.311135]])
    c_yiq = CONTENT.astype(np.float64) @ yiq.T
    s_y = (STYLE.astype(np.float64) @ yiq.T)[..., 0]
    s_y = (s_y - s_y.mean()) / s_y.std() * c_yiq[..., 0].std() + c_yiq[..., 0].mean()
    lum = lambda y: np.repeat(y[..., None], 3, axis=-1).astype(np.float32)
    with torch.no_grad():
        out_lum = nhwc(ref.style_transfer(vgg, decoder, nchw(lum(c_yiq[..., 0])), nchw(lum(s_y))))
    y_out = (out_lum.astype(np.float64) @ yiq.T)[..., :1]
    expected = np.concatenate([y_out, c_yiq[..., 1:]], -1) @ np.linalg.inv(yiq).T
    out = adain_jax.apply(params, CONTENT, STYLE, preserve_color="luminance")
    assert rel_l2(out, expected) < TOL


def test_odd_size_output_is_exact_and_aligned(models):
    """37x91 comes back 37x91: the reference's 40x96 output, cropped at the top left."""
    vgg, decoder, params = models
    content = images(1, 37, 91, seed=15)
    with torch.no_grad():
        out_ref = ref.style_transfer(vgg, decoder, nchw(content), nchw(STYLE), alpha=0.7)
    assert out_ref.shape[-2:] == (40, 96)
    out = adain_jax.apply(params, content, STYLE, 0.7)
    assert out.shape == (1, 37, 91, 3)
    assert rel_l2(out, nhwc(out_ref)[:, :37, :91]) < TOL


def test_biased_variance_would_be_caught(models, monkeypatch):
    """The parity tolerance separates the port's unbiased std from the Lua-style biased one.

    With equal content and style feature sizes the n/(n-1) factors cancel but for eps, so
    the sizes differ here (8x8 vs 4x6 at relu4_1), as they do for real inputs.
    """
    vgg, decoder, params = models
    content, style = images(1, 64, 64, seed=16), images(1, 32, 48, seed=17)
    with torch.no_grad():
        out_ref = nhwc(ref.style_transfer(vgg, decoder, nchw(content), nchw(style)))
    assert rel_l2(adain_jax.apply(params, content, style), out_ref) < TOL

    def biased(x, eps=ops.EPS):
        return jnp.mean(x, axis=(1, 2)), jnp.sqrt(jnp.var(x, axis=(1, 2)) + eps)

    monkeypatch.setattr(ops, "mean_std", biased)
    # a fresh jit traces again (apply's compiled program for these shapes holds the old one)
    fresh = jax.jit(transfer._apply, static_argnames=("color_mode",))
    out = fresh(params, content, style, 1.0, None, None, color_mode=None)
    assert rel_l2(out, out_ref) > 2 * TOL


def test_batched_pairs_and_shared_style(models):
    _, _, params = models
    contents, styles = images(3, 40, 48, seed=18), images(3, 48, 40, seed=19)
    paired = adain_jax.apply(params, contents, styles, 0.5)
    for i in range(3):
        single = adain_jax.apply(params, contents[i], styles[i], 0.5)
        assert rel_l2(paired[i], single) < TOL
    shared = adain_jax.apply(params, contents, styles[:1])
    assert rel_l2(shared[2], adain_jax.apply(params, contents[2], styles[0])) < TOL


def test_encoded_style_equals_images(models):
    _, _, params = models
    stats = adain_jax.encode_style(params, STYLE)
    contents = images(2, 40, 48, seed=20)
    assert rel_l2(adain_jax.apply(params, contents, stats, 0.6),
                  adain_jax.apply(params, contents, STYLE, 0.6)) < TOL
    with pytest.raises(ValueError, match="preserve_color"):
        adain_jax.apply(params, contents, stats, preserve_color=True)


def test_jit_and_vmap_match_eager(models):
    _, _, params = models
    contents = images(3, 40, 48, seed=21)
    eager = adain_jax.apply(params, contents, STYLE, 0.7)
    jitted = jax.jit(adain_jax.apply)(params, contents, STYLE, 0.7)
    assert rel_l2(jitted, eager) < TOL
    # vmap over contents and alpha at once (a traced alpha is allowed): one program, each
    # row against a plain call on that content at that alpha (0.7 as above among them).
    # params go in as an argument: closed over, XLA constant-folds the encoder (4x the compile).
    alphas = [0.0, 0.7, 1.0]
    vmapped = jax.jit(jax.vmap(lambda p, c, a: adain_jax.apply(p, c, STYLE[0], a),
                               in_axes=(None, 0, 0)))(params, contents, jnp.array(alphas))
    assert vmapped.shape == eager.shape
    assert rel_l2(vmapped[1], eager[1]) < TOL
    for c, a, out in zip(contents, alphas, vmapped):
        assert rel_l2(out, adain_jax.apply(params, c, STYLE[0], a)) < TOL


def test_grad_matches_torch_autograd(models):
    """d/d(content) and d/d(decoder params) of <apply(...), probe>, against torch autograd."""
    vgg, decoder, params = models
    probe = np.random.default_rng(22).standard_normal((1, 40, 48, 3)).astype(np.float32)

    # the encoder is an argument: closed over, XLA constant-folds it while compiling (slow)
    def objective(dec, content, encoder):
        out = adain_jax.apply({"encoder": encoder, "decoder": dec}, content, STYLE, 0.8)
        return jnp.sum(out * probe)

    g_dec, g_content = jax.jit(jax.grad(objective, argnums=(0, 1)))(
        params["decoder"], CONTENT, params["encoder"])

    content_t = nchw(CONTENT).requires_grad_(True)
    decoder.zero_grad()
    out = ref.style_transfer(vgg, decoder, content_t, nchw(STYLE), alpha=0.8)
    (out * nchw(probe)).sum().backward()
    assert rel_l2(g_content, nhwc(content_t.grad)) < 1e-4
    for name, index in ref.PORT_DECODER_CONVS.items():
        w_grad = decoder[index].weight.grad.numpy().transpose(2, 3, 1, 0)
        assert rel_l2(g_dec[name]["kernel"], w_grad) < 1e-4, name
        assert rel_l2(g_dec[name]["bias"], decoder[index].bias.grad.numpy()) < 1e-4, name


def test_bad_arguments_are_clear(models):
    _, _, params = models
    with pytest.raises(ValueError, match="alpha"):
        adain_jax.apply(params, CONTENT, STYLE, 1.5)
    with pytest.raises(ValueError, match="preserve_color"):
        adain_jax.apply(params, CONTENT, STYLE, preserve_color="sepia")
    with pytest.raises(ValueError, match="not both"):
        adain_jax.apply(params, CONTENT, [STYLE, STYLE], style_weights=[1, 1],
                        masks=np.ones((2, 40, 48)))
    with pytest.raises(ValueError, match="masks must be"):
        adain_jax.apply(params, CONTENT, [STYLE, STYLE], masks=np.ones((2, 10, 10)))
    with pytest.raises(ValueError, match="styles for"):
        adain_jax.apply(params, images(3, 40, 48, 0), images(2, 40, 48, 1))


def test_torchvision_layout_encoder_matches_reference(tmp_path):
    """torchvision VGG-19 weights: ImageNet normalisation, then the port's reflect-padded layers."""
    features = ref.randomize_(ref.make_torchvision_vgg19_features(), seed=5, scale=SCALE)
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(8, 4)  # the full model's head is ignored
    torch.save(state, tmp_path / "vgg19.pth")
    params = {"encoder": weights.encoder_from_torchvision(
        weights.torch_load_state_dict(tmp_path / "vgg19.pth"))}

    port = ref.port_vgg_to_relu4_1(ref.make_port_vgg())
    tv_convs = ref.convs_from(features, ref.TORCHVISION_CONVS)
    ref.load_into(port, tv_convs, {k: v for k, v in ref.PORT_VGG_CONVS.items() if k != "conv0"})
    net = ref.Net(port.eval(), ref.make_port_decoder())
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = images(2, 37, 45, seed=6)
    with torch.no_grad():
        normalized = (nchw(x) - mean) / std
        feats = []
        h = normalized
        for i, enc in enumerate(net.enc):
            h = enc[1:](h) if i == 0 else enc(h)  # skip the port's own 1x1 conv
            feats.append(h)
    ours = encode_jit(params, x, taps=adain_jax.STYLE_LAYERS)
    for name, theirs in zip(adain_jax.STYLE_LAYERS, feats):
        assert rel_l2(ours[name], nhwc(theirs)) < TOL, name


def test_too_small_images_refused_not_nan(models):
    _, _, params = models
    with pytest.raises(ValueError, match="content image too small"):
        adain_jax.apply(params, images(1, 8, 8, 0), STYLE)
    with pytest.raises(ValueError, match="style image too small"):
        adain_jax.apply(params, CONTENT, images(1, 8, 5, 0))
    out = adain_jax.apply(params, images(1, 9, 9, 0), STYLE)  # 2x2 at relu4_1: fine
    assert np.isfinite(np.asarray(out)).all()


def test_mask_region_empty_at_feature_resolution_is_not_nan(models):
    """A region that vanishes when masks are resized to relu4_1 contributes nothing."""
    _, _, params = models
    styles = [images(1, 48, 40, seed=13), images(1, 48, 40, seed=14)]
    fg = np.zeros((40, 48), np.float32)
    fg[1:3, 1:3] = 1  # nearest resize by 8 samples rows/cols 0, 8, ...: the region vanishes
    out = adain_jax.apply(params, CONTENT, styles, masks=np.stack([fg, 1 - fg]))
    alone = adain_jax.apply(params, CONTENT, styles[1])
    assert rel_l2(out, alone) < TOL


def _count_compiles(fn):
    """Run fn(); how many XLA programs JAX compiled meanwhile."""
    from jax._src import dispatch, monitoring

    events = []

    def listener(event, duration, **kwargs):
        if event == dispatch.BACKEND_COMPILE_EVENT:
            events.append(duration)

    monitoring.register_event_duration_secs_listener(listener)
    try:
        jax.block_until_ready(fn())
    finally:
        monitoring.unregister_event_duration_listener(listener)
    return len(events)


def test_plain_apply_call_is_one_compiled_program(models):
    """Issue 14: called as the README shows, apply ran op by op (13 s for a first 512^2
    call). Now: at most a couple of programs for a new shape, none for a new alpha."""
    _, _, params = models
    content = images(1, 41, 50, seed=21)  # a shape no other test uses: compiled here
    assert _count_compiles(lambda: adain_jax.apply(params, content, STYLE, 0.3)) <= 2
    assert _count_compiles(lambda: adain_jax.apply(params, content, STYLE, 0.7)) == 0
    assert _count_compiles(lambda: adain_jax.encode_style(params, STYLE)) <= 1


def test_uint8_images_are_divided_by_255_and_out_of_range_floats_warn(models):
    vgg, decoder, params = models
    content8 = (CONTENT[0] * 255).round().astype(np.uint8)
    style8 = (STYLE * 255).round().astype(np.uint8)
    with torch.no_grad():
        out_ref = ref.style_transfer(vgg, decoder, nchw(content8[None] / 255.0),
                                     nchw(style8 / 255.0), alpha=0.6)
    out = adain_jax.apply(params, content8, style8, 0.6)
    assert out.dtype == jnp.float32
    assert rel_l2(out, nhwc(out_ref)[0]) < TOL
    stats = adain_jax.encode_style(params, style8)
    assert rel_l2(adain_jax.apply(params, content8, stats, 0.6), out) < TOL
    with pytest.warns(UserWarning, match=r"content values span \[[0-9.]+, 255\]"):
        adain_jax.apply(params, CONTENT * 255, STYLE)
    with pytest.raises(TypeError, match=r"float in \[0, 1\] or uint8, got int32"):
        adain_jax.apply(params, CONTENT.astype(np.int32), STYLE)
