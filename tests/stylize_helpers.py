"""Shared by the stylize tests: random weights that make structured outputs, test images.

The reference the tests compare with is `adain_jax.apply` as a library user calls it
(itself checked against the PyTorch port in test_transfer.py), quantised like
torchvision's save_image; or, where the numbers are the point (masks, colour
preservation, interpolation, video frames), `torch_stylize`: the PyTorch port itself.
"""
from __future__ import annotations

import jax
import numpy as np
import pytest
from PIL import Image

import adain_jax

H, W = 24, 32  # content size shared by most tests

# Jitted only because compiling the whole graph is faster here than running it op by op
# for each new size.
reference_apply = jax.jit(adain_jax.apply, static_argnames=("preserve_color",))


def he_scaled_params(seed: int = 0) -> dict:
    """Random weights in init_params' tree, He-scaled so the output has structure.

    With PyTorch's default init (init_params) activations shrink layer by layer, relu4_1 is
    nearly constant over space and every output is one flat colour, whatever the inputs.
    He-uniform kernels and zero biases keep content and style visible; the last conv is
    then rescaled so a probe output has mean 0.5 and std 0.15 per channel, and clipping to
    [0, 1] hides little. Drawn with NumPy from init_params' shapes (jax.eval_shape).
    """
    rng = np.random.default_rng(seed)

    def he(leaf):
        if leaf.ndim == 1:
            return np.zeros(leaf.shape, np.float32)
        bound = np.sqrt(6.0 / np.prod(leaf.shape[:3]))  # fan_in = kh * kw * in
        return rng.uniform(-bound, bound, leaf.shape).astype(np.float32)

    params = jax.tree.map(he, jax.eval_shape(adain_jax.init_params, jax.random.key(0)))
    probe = np.asarray(reference_apply(params, as_float(random_image(rng, H, W)),
                                       as_float(random_image(rng, 20, 20)), 1.0))
    last = params["decoder"]["conv1_1"]
    scale = 0.15 / probe.std(axis=(0, 1))  # the last conv is linear and its bias is 0
    last["kernel"] = (last["kernel"] * scale).astype(np.float32)
    last["bias"] = (0.5 - scale * probe.mean(axis=(0, 1))).astype(np.float32)
    return params


@pytest.fixture(scope="module")
def params():
    """he_scaled_params(), once per test module (import it there to use it)."""
    return he_scaled_params()


@pytest.fixture(scope="module")
def weights(params, tmp_path_factory):
    """`params` saved as a weights file, for stylize.py --weights."""
    return str(adain_jax.save_params(params, tmp_path_factory.mktemp("w") / "rand.safetensors"))


@pytest.fixture(scope="module")
def bank_path(params, weights, tmp_path_factory):
    """A style bank of three random 20 x 20 styles, built with `params` (style_bank.py)."""
    folder = tmp_path_factory.mktemp("styles") / "images"
    rng = np.random.default_rng(7)
    for name in ("a.png", "b.png", "c.png"):
        write_image(folder / name, random_image(rng, 20, 20))
    path = folder.parent / "bank.safetensors"
    from adain_jax import style_bank
    from adain_jax.download import sha256_file

    style_bank.build_bank(params, sha256_file(weights), folder, path, style_size=0)
    return path


def write_image(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def random_image(rng, h, w, channels=3):
    # smooth-ish colours plus noise, so statistics are not those of pure noise
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([x, y, 1 - x * y, np.full_like(x, 0.8)][:channels], -1) * 180
    return np.clip(base + rng.integers(0, 76, (h, w, channels)), 0, 255).astype(np.uint8)


def pixels(path):
    with Image.open(path) as img:
        return np.asarray(img)


def as_float(u8):
    return np.asarray(u8, np.float32) / 255.0


def quantise(x):
    """torchvision save_image: (x * 255 + 0.5) clamped to [0, 255], truncated."""
    return np.clip(np.asarray(x, np.float64) * 255 + 0.5, 0, 255).astype(np.uint8)


def assert_matches(actual, expected):
    assert actual.shape == expected.shape
    diff = np.abs(actual.astype(np.int16) - expected.astype(np.int16))
    assert diff.max() <= 1, diff.max()
    assert (diff == 0).mean() >= 0.99, (diff == 0).mean()


# --- the independent reference: tests/torch_reference.py on HWC float images -------------

_YIQ = np.array([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263],
                 [0.211456, -0.522591, 0.311135]])  # Gatys et al.'s luminance transform


_TORCH_MODELS: dict = {}  # id(params) -> (params, vgg, decoder): the last params used


def _torch_models(params):
    """Port-layout torch modules holding `params`, built once per params dict."""
    from tests import torch_reference as ref

    if id(params) not in _TORCH_MODELS:
        _TORCH_MODELS.clear()  # params stays referenced here, so its id stays its own
        _TORCH_MODELS[id(params)] = (params, *ref.params_to_torch(params))
    return _TORCH_MODELS[id(params)][1:]


def torch_stylize(params, content, style, alpha=1.0, *, style_weights=None, masks=None,
                  preserve_color=None) -> np.ndarray:
    """What stylize.py should write for one (H, W, 3) content in [0, 1], by the PyTorch
    port (tests/torch_reference.py), cropped to H x W; not clipped.

    style: an (Hs, Ws, 3) image or a list of them (interpolated with `style_weights`, or
    combined by binary `masks` (K, H, W) with the Lua procedure). preserve_color: None,
    "coral" (the port's CORAL of the style onto the content) or "luminance" (Gatys et
    al.: stylise luminance images, keep the content's chroma; float64 colour algebra).
    """
    import torch

    from tests import torch_reference as ref

    vgg, decoder = _torch_models(params)
    content = np.asarray(content, np.float32)
    styles = [np.asarray(s, np.float32) for s in (style if isinstance(style, list) else [style])]
    h, w = content.shape[:2]
    if preserve_color == "luminance":
        c_yiq = content.astype(np.float64) @ _YIQ.T
        grey = lambda y: np.repeat(y[..., None], 3, axis=-1).astype(np.float32)
        y_c = c_yiq[..., 0]
        matched = []
        for s in styles:
            y_s = (s.astype(np.float64) @ _YIQ.T)[..., 0]
            matched.append(grey((y_s - y_s.mean()) / y_s.std() * y_c.std() + y_c.mean()))
        lum = torch_stylize(params, grey(y_c), matched if len(matched) > 1 else matched[0],
                            alpha, style_weights=style_weights, masks=masks)
        y_out = (lum.astype(np.float64) @ _YIQ.T)[..., :1]
        return np.concatenate([y_out, c_yiq[..., 1:]], -1) @ np.linalg.inv(_YIQ).T
    with torch.no_grad():
        c = ref.nchw(content[None])
        s = [ref.nchw(x[None]) for x in styles]
        if preserve_color == "coral":
            s = [ref.coral(x[0], c[0])[None] for x in s]
        elif preserve_color is not None:
            raise ValueError(f"unknown preserve_color {preserve_color!r}")
        if masks is not None:
            out = ref.masked_style_transfer(vgg, decoder, c, s, np.asarray(masks), alpha)
        elif style_weights is not None:
            share = np.asarray(style_weights, np.float64) / np.sum(style_weights)
            out = ref.style_transfer(vgg, decoder, c, torch.cat(s), alpha, share.tolist())
        else:
            assert len(s) == 1, "several styles need style_weights or masks"
            out = ref.style_transfer(vgg, decoder, c, s[0], alpha)
    return ref.nhwc(out)[0, :h, :w]
