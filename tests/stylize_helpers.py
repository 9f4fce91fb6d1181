"""Shared by the stylize tests: random weights that make structured outputs, test images.

The reference the tests compare with is `adain_jax.apply` as a library user calls it
(itself checked against the PyTorch port in test_transfer.py), quantised like
torchvision's save_image.
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
