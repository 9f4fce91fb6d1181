"""DrawStyles (augment_grain.py): host decisions that depend on (seed, record id) only,
with the stated distributions, and that `augment.apply_decisions` carries out exactly.

References: exact equality for determinism; binomial and chi-square bounds for the
distributions (thresholds below); `transfer.apply` per example for the stylised images.
"""
from __future__ import annotations

import grain
import numpy as np
import pytest

from adain_jax import augment, transfer
from adain_jax.augment_grain import KEYS, DrawStyles, decide, to_decisions
from adain_jax.style_bank import StyleBank
from tests.stylize_helpers import he_scaled_params

# Chi-square critical values at 1e-4 (scipy.stats.chi2.ppf(1 - 1e-4, df)): a correct
# sampler fails one run in 10,000.
CHI2_1E4 = {6: 27.86, 9: 33.72}
REL_L2 = 1e-5  # float32 batched vs one-by-one convolutions


def _records(n):
    """Records with ids that are not their positions."""
    return [{"id": 1000 + 7 * i, "x": i} for i in range(n)]


def _by_id(batches):
    out = {}
    for b in batches:
        for j, rid in enumerate(b["id"]):
            assert int(rid) not in out
            out[int(rid)] = tuple(b[k][j].item() for k in KEYS)
    return out


def test_decisions_do_not_depend_on_batching_shuffle_or_workers():
    draw = DrawStyles(9, p=0.5, alpha=(0.2, 0.8), seed=11)
    base = grain.MapDataset.source(_records(64)).map(draw)
    reference = _by_id(base.batch(32))
    assert len(reference) == 64
    applied = [v[0] for v in reference.values()]
    assert 0 < sum(applied) < 64  # both kinds present, so the comparisons mean something
    assert _by_id(base.batch(8)) == reference
    assert _by_id(grain.MapDataset.source(_records(64)).shuffle(seed=3).map(draw).batch(4)) \
        == reference
    # Drawn after the shuffle, in threads (worker processes would run the same code on
    # the same records: nothing in a decision depends on where it is made).
    threaded = (grain.MapDataset.source(_records(64)).shuffle(seed=4).to_iter_dataset(
        grain.ReadOptions(num_threads=4)).map(draw).batch(16))
    assert _by_id(threaded) == reference
    # Another seed: other decisions.
    other = _by_id(grain.MapDataset.source(_records(64))
                   .map(DrawStyles(9, p=0.5, alpha=(0.2, 0.8), seed=12)).batch(32))
    assert other != reference


def test_grain_index_is_the_record_id():
    draw = DrawStyles(5, p=0.3, alpha=0.7, seed=1, id_key=None)
    ds = grain.MapDataset.source([{"x": i} for i in range(20)]).map_with_index(draw)
    for i in range(20):
        assert tuple(ds[i][k] for k in KEYS) == tuple(
            decide(1, i, p=0.3, alpha=(0.7, 0.7), n_styles=5).values())
    # String ids (TFDS's "tfds_id") are hashed, and stable.
    a = decide(0, "cifar10-train.array_record-00000-of-00001__5", p=0.5, alpha=(0, 1),
               n_styles=3)
    assert a == decide(0, "cifar10-train.array_record-00000-of-00001__5", p=0.5,
                       alpha=(0, 1), n_styles=3)


def _chi2(counts, expected):
    return float(((counts - expected) ** 2 / expected).sum())


def test_distributions_of_applied_style_and_alpha():
    n, p, n_styles, (low, high) = 20000, 0.3, 7, (0.25, 0.75)
    draws = [decide(5, i, p=p, alpha=(low, high), n_styles=n_styles) for i in range(n)]
    applied = np.array([d["style_applied"] for d in draws])
    index = np.array([d["style_index"] for d in draws])
    alpha = np.array([d["style_alpha"] for d in draws])
    order = np.array([d["style_order"] for d in draws])
    # Binomial(n, p): within 4 standard deviations.
    assert abs(applied.sum() - n * p) <= 4 * np.sqrt(n * p * (1 - p)), applied.sum()
    np.testing.assert_array_equal(applied, order < p)  # the order is the coin's draw
    assert order.dtype == np.float32 and 0 <= order.min() and order.max() < 1
    # Style index uniform over 7 rows: chi-square, 6 degrees of freedom.
    counts = np.bincount(index, minlength=n_styles)
    assert len(counts) == n_styles and _chi2(counts, n / n_styles) < CHI2_1E4[6], counts
    # Alpha inside its range and uniform: chi-square over 10 equal bins, 9 dof.
    assert alpha.dtype == np.float32 and low <= alpha.min() and alpha.max() <= high
    hist, _ = np.histogram(alpha, bins=10, range=(low, high))
    assert _chi2(hist, n / 10) < CHI2_1E4[9], hist
    # The checks can fail: a skewed alpha (u squared) is rejected by a wide margin.
    skewed, _ = np.histogram(low + (high - low) * (alpha - low) ** 2 / (high - low) ** 2,
                             bins=10, range=(low, high))
    assert _chi2(skewed, n / 10) > 10 * CHI2_1E4[9]
    # The edges: p = 0 and p = 1, a fixed alpha.
    edge = [decide(5, i, p=1.0, alpha=(0.6, 0.6), n_styles=1) for i in range(50)]
    assert all(d["style_applied"] and d["style_index"] == 0 for d in edge)
    assert {d["style_alpha"] for d in edge} == {np.float32(0.6)}
    assert not any(decide(5, i, p=0.0, alpha=(0, 1), n_styles=3)["style_applied"]
                   for i in range(50))


def test_bad_arguments_are_one_line():
    for kwargs, message in [(dict(p=1.5), "p must be in"), (dict(alpha=(0.8, 0.2)), "alpha"),
                            (dict(seed=-1), "seed")]:
        with pytest.raises(ValueError, match=message):
            DrawStyles(3, **kwargs)
    with pytest.raises(KeyError, match="no 'id' key"):
        DrawStyles(3).map({"index": 1})


# ---------------------------------------------------------------- on the device

@pytest.fixture(scope="module")
def setup():
    params = he_scaled_params()
    rng = np.random.default_rng(0)
    styles = rng.random((5, 16, 16, 3), dtype=np.float32)
    stats = transfer.encode_style(params, styles)
    bank = StyleBank(np.asarray(stats.mean), np.asarray(stats.std),
                     tuple(f"s{i}.png" for i in range(5)), ("0" * 64,) * 5,
                     weights_sha256="x", encoder="vgg19", style_size=0)
    images = rng.random((8, 16, 16, 3), dtype=np.float32)
    batch = next(iter(grain.MapDataset.source([{"id": i} for i in range(8)])
                      .map(DrawStyles(5, p=0.6, alpha=(0.3, 1.0), seed=2)).batch(8)))
    assert 2 < batch["style_applied"].sum() < 8, batch["style_applied"]
    # The reference: transfer.apply on each example in place, with its bank row and alpha,
    # clipped as augment clips (one batched call: the same compiled program, so this
    # checks the selection, gathering and scattering, not the convolutions again).
    refs = np.clip(np.asarray(transfer.apply(params, images, bank[batch["style_index"]],
                                             batch["style_alpha"][:, None, None, None])),
                   0.0, 1.0)
    return params, bank, images, batch, refs


def _rel_l2(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _check(out, images, applied, refs):
    out = np.asarray(out)
    for i in range(len(images)):
        if applied[i]:
            assert _rel_l2(out[i], refs[i]) <= REL_L2, i
        else:
            np.testing.assert_array_equal(out[i], images[i])


def test_apply_decisions_matches_transfer_apply(setup):
    params, bank, images, batch, refs = setup
    out, info = augment.apply_decisions(params, images, bank, to_decisions(batch))
    np.testing.assert_array_equal(info.applied, batch["style_applied"])
    np.testing.assert_array_equal(
        info.style_index, np.where(batch["style_applied"], batch["style_index"], -1))
    np.testing.assert_array_equal(
        info.alpha, np.where(batch["style_applied"], batch["style_alpha"], 0))
    _check(out, images, batch["style_applied"], refs)


def test_limited_slots_go_to_the_smallest_orders(setup):
    params, bank, images, batch, refs = setup
    requested = np.flatnonzero(batch["style_applied"])
    kept = requested[np.argsort(batch["style_order"][requested])[:2]]
    out, info = augment.apply_decisions(params, images, bank, to_decisions(batch), slots=2)
    np.testing.assert_array_equal(np.flatnonzero(info.applied), np.sort(kept))
    _check(out, images, np.asarray(info.applied), refs)
