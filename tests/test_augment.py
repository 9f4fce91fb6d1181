"""Style augmentation (adain_jax/augment.py) against per-example references.

- Each stylised example equals the PyTorch port (torch_stylize) on that content with the
  style image its bank row came from and its alpha, both clipped to [0, 1]: within 1e-5
  relative L2 (float32 noise is ~1e-6). Examples not stylised are returned bit for bit.
- Decisions depend on (key, example id) only: batch 32 vs 4 x 8, and one vs four CPU
  devices (a fresh process with --xla_force_host_platform_device_count=4), give identical
  decisions and outputs within 1e-5 relative L2.
- The applied share over 20000 ids lies within 4 binomial sigmas of p.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adain_jax import augment, style_bank, transfer
from tests.stylize_helpers import he_scaled_params, params, torch_stylize  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
SIDE = 16  # contents
N_STYLES = 5


def style_images(seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (N_STYLES, 20, 20, 3)).astype(np.float32)


def make_bank(params, seed=0):
    stats = transfer.encode_style(params, style_images(seed))
    n = N_STYLES
    return style_bank.StyleBank(np.asarray(stats.mean), np.asarray(stats.std),
                                tuple(f"s{i}.png" for i in range(n)), ("0",) * n, "w",
                                "vgg19", 0)


def contents(n, seed=1):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    base = np.stack([x, y, 1 - x * y], -1)[None]
    return np.clip(base * 0.7 + rng.uniform(0, 0.3, (n, SIDE, SIDE, 3)), 0, 1).astype(np.float32)


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def test_applied_examples_equal_the_port_and_the_rest_are_untouched(params):
    bank = make_bank(params)
    images = contents(8)
    out, info = jax.jit(lambda w, k, x: augment.augment(w, k, x, bank.stats, p=0.5,
                                                        alpha=(0.3, 1.0), slots=8))(
        params, jax.random.key(0), images)
    out, applied = np.asarray(out), np.asarray(info.applied)
    assert 0 < applied.sum() < 8  # this key stylises some examples and not others
    styles = style_images()
    for i in range(8):
        if not applied[i]:
            np.testing.assert_array_equal(out[i], images[i])
            assert int(info.style_index[i]) == -1 and float(info.alpha[i]) == 0.0
            continue
        a = float(info.alpha[i])
        assert 0.3 <= a <= 1.0
        expected = np.clip(torch_stylize(params, images[i], styles[int(info.style_index[i])],
                                         a), 0, 1)
        assert rel_l2(out[i], expected) <= 1e-5, i


def test_p_zero_is_the_identity_and_p_one_stylises_all(params):
    bank = make_bank(params)
    images = contents(4)
    out, info = augment.augment(params, jax.random.key(1), images, bank, p=0.0)
    np.testing.assert_array_equal(np.asarray(out), images)
    assert not np.asarray(info.applied).any()
    out, info = augment.augment(params, jax.random.key(1), images, bank, p=1.0)
    assert np.asarray(info.applied).all()
    assert np.abs(np.asarray(out) - images).mean() > 0.02


def test_applied_share_is_binomial_and_styles_and_alpha_uniform():
    ids = jnp.arange(20000)
    d = augment.draw(jax.random.key(2), ids, p=0.3, alpha=(0.2, 0.6), n_styles=7)
    applied = np.asarray(d.applied)
    sigma = np.sqrt(0.3 * 0.7 / applied.size)
    assert abs(applied.mean() - 0.3) <= 4 * sigma
    counts = np.bincount(np.asarray(d.style_index), minlength=7)
    chi2 = float(((counts - 20000 / 7) ** 2 / (20000 / 7)).sum())
    assert chi2 < 22.5  # chi-square, 6 degrees of freedom, p = 0.001
    alpha = np.asarray(d.alpha)
    assert alpha.min() >= 0.2 and alpha.max() <= 0.6
    assert abs(alpha.mean() - 0.4) <= 4 * 0.4 / np.sqrt(12) / np.sqrt(alpha.size)
    # another key, other decisions
    other = augment.draw(jax.random.key(3), ids, p=0.3, alpha=(0.2, 0.6), n_styles=7)
    assert (np.asarray(other.applied) != applied).mean() > 0.3


def test_the_same_example_gets_the_same_style_in_any_batch(params):
    bank = make_bank(params)
    images = contents(32, seed=5)
    ids = np.arange(1000, 1032)
    key = jax.random.key(4)
    jitted = jax.jit(lambda w, x, i: augment.augment(w, key, x, bank.stats, p=0.5,
                                                     example_ids=i, slots=x.shape[0]))
    run = lambda x, i: jitted(params, x, i)
    whole, info = run(images, ids)
    parts = [run(images[j:j + 8], ids[j:j + 8]) for j in range(0, 32, 8)]
    for field in ("applied", "style_index", "alpha"):
        np.testing.assert_array_equal(np.concatenate([np.asarray(getattr(p[1], field))
                                                      for p in parts]),
                                      np.asarray(getattr(info, field)))
    assert rel_l2(np.concatenate([np.asarray(p[0]) for p in parts]), whole) <= 1e-5
    # shuffled within the batch: each example keeps its decisions
    perm = np.random.default_rng(0).permutation(32)
    shuffled, sinfo = run(images[perm], ids[perm])
    np.testing.assert_array_equal(np.asarray(sinfo.style_index), np.asarray(info.style_index)[perm])
    assert rel_l2(shuffled, np.asarray(whole)[perm]) <= 1e-5


def test_slots_cap_the_work_and_take_the_smallest_draws(params):
    bank = make_bank(params)
    images = contents(8)
    key = jax.random.key(5)
    out, info = augment.augment(params, key, images, bank, p=1.0, slots=3)
    applied = np.asarray(info.applied)
    assert applied.sum() == 3
    order = np.asarray(augment.draw(key, jnp.arange(8), p=1.0, n_styles=N_STYLES).order)
    assert set(np.flatnonzero(applied)) == set(np.argsort(order)[:3])
    np.testing.assert_array_equal(np.asarray(out)[~applied], images[~applied])
    assert augment.default_slots(32, 0.25) == 13 and augment.default_slots(32, 0.0) == 0
    assert augment.default_slots(8, 1.0) == 8


@pytest.mark.parametrize("convention", ["255", "normalised", "bfloat16", "uint8"])
def test_input_conventions_round_trip(params, convention):
    """The output keeps the input's range, dtype and shape; stylised values equal the
    [0, 1] float32 run mapped into that convention (within the dtype's rounding)."""
    bank = make_bank(params)
    images = contents(4)
    key = jax.random.key(6)
    base, info = augment.augment(params, key, images, bank, p=0.5, slots=4)
    base = np.asarray(base, np.float64)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    kwargs, x, back, tol = {}, images, lambda y: y, 1e-5
    if convention == "255":
        kwargs, x, back = {"value_range": (0, 255)}, images * 255, lambda y: y / 255
    elif convention == "normalised":
        kwargs, x = {"mean": mean, "std": std}, (images - mean) / std
        x, back = x.astype(np.float32), lambda y: y * std + mean
    elif convention == "bfloat16":
        x, tol = images.astype(jnp.bfloat16), 1e-2
    elif convention == "uint8":
        kwargs, x = {"value_range": (0, 255)}, np.round(images * 255).astype(np.uint8)
        back, tol = lambda y: y / 255, 2e-2
    out, info2 = augment.augment(params, key, x, bank, p=0.5, slots=4, **kwargs)
    assert out.dtype == x.dtype and out.shape == x.shape
    np.testing.assert_array_equal(np.asarray(info2.applied), np.asarray(info.applied))
    applied = np.asarray(info.applied)
    assert applied.any() and not applied.all()
    got = back(np.asarray(out, np.float64))
    assert rel_l2(got[applied], base[applied]) <= tol
    np.testing.assert_array_equal(np.asarray(out)[~applied], np.asarray(x)[~applied])


def test_batch_styles_and_gaussian_styles(params):
    images = contents(6, seed=7)
    key = jax.random.key(7)
    out, info = augment.augment(params, key, images, "batch", p=1.0)
    partners = np.asarray(info.style_index)
    assert sorted(partners) == list(range(6))  # a permutation of the batch ...
    assert (partners != np.arange(6)).all()  # ... where no image is its own style
    for i in (0, 3):
        expected = np.clip(torch_stylize(params, images[i], images[partners[i]]), 0, 1)
        assert rel_l2(np.asarray(out)[i], expected) <= 1e-5

    bank = make_bank(params)
    bank = style_bank.StyleBank(*(np.concatenate([x, x * 1.1]) for x in (bank.mean, bank.std)),
                                tuple(f"{i}" for i in range(10)), ("0",) * 10, "w", "vgg19", 0)
    gaussian = style_bank.fit_gaussian(bank)
    jitted = jax.jit(lambda w, x, i: augment.augment(w, key, x, gaussian, p=1.0,
                                                     example_ids=i))
    run = lambda x, i: jitted(params, x, i)
    out, info = run(images, jnp.arange(6))
    assert (np.asarray(info.style_index) == -1).all() and np.isfinite(np.asarray(out)).all()
    assert np.abs(np.asarray(out) - images).mean() > 0.02
    # a sampled style belongs to the example: the same id in another batch, the same output
    again, _ = run(images[[3, 1]], jnp.array([3, 1]))
    assert rel_l2(again, np.asarray(out)[[3, 1]]) <= 1e-5


# ---- one device vs four -------------------------------------------------------------------

def sharded_worker(path):
    """In a process with 4 CPU devices: the same batch sharded over a mesh, plus the HLO."""
    from adain_jax import parallel

    assert jax.device_count() == 4
    params = he_scaled_params()
    bank = make_bank(params)
    mesh = parallel.make_mesh()
    images = jax.device_put(contents(16, seed=3), parallel.batch_sharded(mesh))
    ids = jax.device_put(np.arange(16), parallel.batch_sharded(mesh))
    run = jax.jit(lambda w, k, x, i: augment.augment(w, k, x, bank.stats, p=0.5,
                                                     example_ids=i, mesh=mesh))
    hlo = run.lower(params, jax.random.key(10), images, ids).compile().as_text()
    out, info = run(params, jax.random.key(10), images, ids)
    assert len(out.sharding.device_set) == 4
    # inside the user's own shard_map, called on the local batch without `mesh`
    P = jax.sharding.PartitionSpec
    inner = jax.jit(jax.shard_map(
        lambda w, x, i: augment.augment(w, jax.random.key(10), x, bank.stats, p=0.5,
                                        example_ids=i)[0],
        mesh=mesh, in_specs=(P(), P("data"), P("data")), out_specs=P("data"),
        check_vma=False))
    np.savez(path, out=np.asarray(out), applied=np.asarray(info.applied),
             style_index=np.asarray(info.style_index), alpha=np.asarray(info.alpha),
             inner=np.asarray(inner(params, images, ids)))
    print("RESULT " + json.dumps({"all_gather": "all-gather" in hlo,
                                  "all_to_all": "all-to-all" in hlo}), flush=True)


def test_four_devices_equal_one_without_gathering_the_batch(params, tmp_path):
    path = tmp_path / "four.npz"
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4"
    env = dict(os.environ, XLA_FLAGS=flags.strip(),
               PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", "import tests.test_augment as t; "
                           f"t.sharded_worker({str(path)!r})"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads([line for line in proc.stdout.splitlines()
                         if line.startswith("RESULT ")][-1][7:])
    assert result == {"all_gather": False, "all_to_all": False}
    four = np.load(path)
    # one device, slots for the whole batch of 16 (the four devices had 4 each, enough:
    # the comparison holds when no device had more requests than slots)
    bank = make_bank(params)
    out, info = augment.augment(params, jax.random.key(10), contents(16, seed=3), bank.stats,
                                p=0.5, example_ids=np.arange(16), slots=16)
    for field in ("applied", "style_index", "alpha"):
        np.testing.assert_array_equal(four[field], np.asarray(getattr(info, field)))
    assert rel_l2(four["out"], out) <= 1e-5
    assert rel_l2(four["inner"], out) <= 1e-5
