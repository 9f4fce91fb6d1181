"""Mixed precision: `dtype="bfloat16"` in apply, encode_style, the training loss and step,
and stylize.py --dtype bf16, on CPU.

The reference is the same function in float32 (itself checked against the PyTorch port
in test_transfer.py). With the He-scaled random weights of stylize_helpers (outputs of mean
0.5, std 0.15) bfloat16 differs from float32 by 1.0/255 on average (99th percentile
5-6/255) on the photo-like images of benchmarks/process.py at 64x64 and 256x256, and by
2.2-2.5/255 (99th percentile 10/255) on the noisy 40x56 images here; the bounds below
(mean <= 4/255, 99th percentile <= 16/255 of the clipped outputs) leave 1.6x room. That a float32 computation passed off as bfloat16 fails: the difference must
also be above 0.05/255 on average, and the lowered program is read for bf16 convolutions
and float32 AdaIN statistics.
"""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import adain_jax
import stylize
from adain_jax import train, transfer

from tests.stylize_helpers import as_float, pixels, random_image, write_image
from tests.stylize_helpers import params, weights  # noqa: F401  (fixtures)

MEAN_BOUND, P99_BOUND, USED_BOUND = 4 / 255, 16 / 255, 0.05 / 255


def _images(seed=0):
    rng = np.random.default_rng(seed)
    return as_float(random_image(rng, 40, 56)), as_float(random_image(rng, 32, 32))


def conv_operand_types(stablehlo: str) -> list[str]:
    """The operand types of every convolution in a lowered program's text."""
    return [t for line in stablehlo.splitlines() if "stablehlo.convolution(" in line
            for t in re.findall(r"tensor<[^>]*>", line.rsplit(" : (", 1)[1])[:2]]


def _assert_close_not_equal(low, full):
    diff = np.abs(np.clip(low, 0, 1) - np.clip(full, 0, 1))
    assert diff.mean() <= MEAN_BOUND and np.percentile(diff, 99) <= P99_BOUND, \
        (diff.mean() * 255, np.percentile(diff, 99) * 255)
    assert diff.mean() > USED_BOUND, "no difference: bfloat16 was not used"


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_apply_bf16_close_to_float32(params, alpha):
    content, style = _images()
    full = np.asarray(adain_jax.apply(params, content, style, alpha))
    low = adain_jax.apply(params, content, style, alpha, dtype="bf16")
    assert low.dtype == jnp.float32 and low.shape == full.shape
    _assert_close_not_equal(np.asarray(low), full)
    stats = adain_jax.encode_style(params, style, dtype=jnp.bfloat16)
    assert stats.mean.dtype == jnp.float32 and stats.std.dtype == jnp.float32
    from_stats = np.asarray(adain_jax.apply(params, content, stats, alpha, dtype="bfloat16"))
    _assert_close_not_equal(from_stats, full)


def test_bf16_program_convolves_in_bf16_and_keeps_statistics_float32(params):
    content, style = _images()
    text = jax.jit(lambda p, c, s: transfer.apply(p, c, s, dtype="bf16")).lower(
        params, content, style).as_text()
    types = conv_operand_types(text)
    # 10 encoder convs for the content, 10 for the style, 9 decoder convs; on CPU the
    # wide layers are Winograd in float32 only, so in bf16 every one is a convolution.
    assert len(types) == 2 * 29 and all(t.endswith("xbf16>") for t in types), types
    # Channel means and variances at relu4_1 (512 channels): reductions over f32 maps.
    reduces = [line.rsplit(" : (", 1)[1] for line in text.splitlines()
               if "stablehlo.reduce(" in line and "x512x" in line]
    assert len(reduces) >= 4 and all("x512xf32>" in types for types in reduces), reduces
    with pytest.raises(ValueError, match="dtype must be one of"):
        adain_jax.apply(params, content, style, dtype="int8")


def test_training_loss_and_gradients_bf16(params):
    rng = np.random.default_rng(3)
    batch = {"content": jnp.asarray(random_image(rng, 32, 32)[None].repeat(2, 0)),
             "style": jnp.asarray(np.stack([random_image(rng, 32, 32) for _ in range(2)]))}
    results = {}
    for dtype in ("float32", "bfloat16"):
        step = jax.jit(lambda d, e, b, dtype=dtype: train.grads_and_metrics(
            d, e, b, content_weight=1.0, style_weight=10.0, compute_dtype=dtype))
        results[dtype] = step(params["decoder"], params["encoder"], batch)
    (g32, m32), (g16, m16) = results["float32"], results["bfloat16"]
    for name in ("loss", "loss_c", "loss_s"):
        assert float(m16[name]) == pytest.approx(float(m32[name]), rel=0.05), name
        assert float(m16[name]) != float(m32[name])
    flat32, flat16 = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)])
                      for g in (g32, g16))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(g16))
    cosine = flat16 @ flat32 / np.linalg.norm(flat16) / np.linalg.norm(flat32)
    assert cosine > 0.99, cosine
    # TrainConfig.dtype (train.py --dtype) reaches the step: its convolutions (forward and
    # backward) take bf16 operands
    config = train.TrainConfig(dtype="bfloat16")
    state = train.init_state(jax.random.key(0), train.make_optimizer(config))
    text = jax.jit(lambda s: train.train_step(s, params["encoder"], batch, config=config)
                   ).lower(state).as_text()
    types = conv_operand_types(text)
    assert len(types) > 100 and all(t.endswith("xbf16>") for t in types)


def test_stylize_cli_dtype_bf16(weights, tmp_path):
    rng = np.random.default_rng(4)
    content = write_image(tmp_path / "c.png", random_image(rng, 40, 56))
    style = write_image(tmp_path / "s.png", random_image(rng, 32, 32))
    outs = {}
    for dtype in ("float32", "bf16"):
        outs[dtype] = tmp_path / f"{dtype}.png"
        assert stylize.main([
            "--content", str(content), "--style", str(style), "--weights", weights,
            "--content-size", "0", "--style-size", "0", "--dtype", dtype, "-q",
            "--output", str(outs[dtype])]) == 0
    _assert_close_not_equal(pixels(outs["bf16"]) / 255.0, pixels(outs["float32"]) / 255.0)
    with pytest.raises(SystemExit):
        stylize.main(["--content", str(content), "--style", str(style), "--method", "gatys",
                      "--dtype", "bf16"])
