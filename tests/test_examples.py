"""examples/style_augmented_classifier.py runs its real loop on mock TFDS data.

Random adain-jax weights (he_scaled_params) and a 5-style bank, 16x16 images. Checks with
values: the loss is finite and near ln 10 (random init, 10 classes), the share stylised is
within 4 binomial standard deviations of p, and the classifier's input is the raw batch
bit for bit at p = 0 and is changed at p = 0.5.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adain_jax
from adain_jax import transfer
from adain_jax.download import sha256_file
from adain_jax.style_bank import StyleBank, save_bank
from tests.stylize_helpers import he_scaled_params

tfds = pytest.importorskip("tensorflow_datasets")

EXAMPLE = Path(__file__).parent.parent / "examples" / "style_augmented_classifier.py"
STEPS, BATCH = 3, 16


def _load_example():
    name = "style_augmented_classifier"
    if name not in sys.modules:  # registered first: Linen's dataclasses look themselves up
        spec = importlib.util.spec_from_file_location(name, EXAMPLE)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("example")
    params = he_scaled_params()
    weights = adain_jax.save_params(params, folder / "rand.safetensors")
    stats = transfer.encode_style(params, np.random.default_rng(1).random((5, 16, 16, 3),
                                                                          np.float32))
    bank = StyleBank(np.asarray(stats.mean), np.asarray(stats.std),
                     tuple(f"s{i}.png" for i in range(5)), ("0" * 64,) * 5,
                     weights_sha256=sha256_file(weights), encoder="vgg19", style_size=0)
    return str(weights), str(save_bank(bank, folder / "bank.safetensors"))


def test_classifier_trains_with_style_augmentation(files, capsys):
    weights, bank = files
    with tfds.testing.mock_data(num_examples=40):
        result = _load_example().main([
            "--bank", bank, "--weights", weights, "--p", "0.5", "--alpha", "0.5", "1",
            "--steps", str(STEPS), "--batch-size", str(BATCH), "--image-size", "16",
            "--eval-examples", "32", "--log-every", "3"])
    history = result["history"]
    assert len(history) == STEPS
    losses = np.array([m["loss"] for m in history])
    assert np.isfinite(losses).all() and abs(losses[0] - np.log(10)) < 0.5, losses
    n, p = STEPS * BATCH, 0.5
    applied = sum(m["applied"] for m in history) * BATCH
    assert abs(applied - n * p) <= 4 * np.sqrt(n * p * (1 - p)), applied
    assert all(m["input_change"] > 0.01 for m in history if m["applied"] > 0)
    assert 0.0 <= result["accuracy"] <= 1.0
    out = capsys.readouterr().out
    assert "step 3: loss" in out and "test accuracy:" in out


def test_p_zero_leaves_the_input_as_it_was():
    # The example's own train step and loader, on plain records (no TFDS, no init program:
    # zero weights do for a step whose input is the point).
    example = _load_example()
    rng = np.random.default_rng(2)
    records = [{"image": rng.integers(0, 256, (16, 16, 3), np.uint8), "label": i % 10}
               for i in range(BATCH)]
    batch = next(example.batches(records, 16, BATCH, seed=0))
    model, tx = example.Classifier(10), optax.adam(1e-3)
    params = jax.tree.map(jnp.zeros_like, jax.eval_shape(
        model.init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))["params"])
    state = {"params": params, "opt": tx.init(params), "step": jnp.zeros((), jnp.int32)}
    _, train_step, _ = example.make_steps(model, tx, 16, 0.0, 1.0)
    _, metrics = train_step(state, he_scaled_params(), None, batch, jax.random.key(0))
    assert metrics["applied"] == 0 and metrics["input_change"] == 0
    assert abs(metrics["loss"] - np.log(10)) < 1e-6  # zero logits: uniform over 10 classes


def test_user_errors_are_one_line(files, tmp_path, capsys):
    weights, _ = files
    with pytest.raises(SystemExit):
        _load_example().main(["--bank", str(tmp_path / "none.safetensors"),
                              "--weights", weights])
    assert "no such style bank file" in capsys.readouterr().err
