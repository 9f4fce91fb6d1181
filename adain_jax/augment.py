"""Style augmentation inside a jitted train step: AdaIN on a random share of each batch.

    bank = adain_jax.style_bank.load_bank("wikiart.safetensors")
    styles = bank.stats                       # or fit_gaussian(bank), or "batch"

    @jax.jit
    def train_step(state, batch, key):
        images, info = augment(params, key, batch["image"], styles, p=0.5,
                               alpha=(0.5, 1.0), example_ids=batch["id"])
        ...

Each example is stylised with probability `p`, with a style drawn uniformly from a bank
(Geirhos et al.'s Stylized-ImageNet draws a random painting per image), sampled from the
bank's Gaussian (style_bank.fit_gaussian: new styles, no images), or taken from another
image of the same batch (a permutation), and alpha (Eq. 14) a number or drawn from a
(low, high) range.

- Decisions are a pure function of (key, example id): an example gets the same style
  (except styles="batch", whose partner is in the batch), alpha and coin flip whatever
  batch it is in, on however many devices (`draw`). Pass each
  example's dataset index as `example_ids` and a key folded with the step.
- The cost follows `p`, not the batch: a static number of slots (`default_slots`) is
  gathered, stylised and scattered back. The examples applied are the requested ones with
  the smallest uniform draws; in the rare batch that requests more than there are slots,
  the rest are left as they were, and `applied` says so.
- Any input convention: `value_range` (e.g. (0, 255)) and/or per-channel `mean`/`std` of a
  normalisation x = (v - mean) / std; any float dtype, or uint8. The output has the
  input's convention, dtype and shape; examples not stylised are returned bit for bit.
- On a batch sharded over a mesh, give `mesh` (and the batch axis name): each device
  stylises its own examples (shard_map), nothing is gathered. Inside a user's own
  shard_map, call it without `mesh` on the local batch.

Pass `params` into your jitted step as an argument: weights closed over become constants
that XLA folds while compiling (the VGG and decoder program then compiles about 4x slower).

`apply_decisions` stylises with decisions made elsewhere, e.g. on the host by
`augment_grain.DrawStyles` in a Grain pipeline.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from adain_jax import transfer
from adain_jax.configs import alpha_range
from adain_jax.parallel import AXIS
from adain_jax.style_bank import StyleBank, StyleGaussian, sample_stats

SLOT_SIGMAS = 2.0  # default slots: p*B plus this many binomial standard deviations
BATCH = "batch"  # `styles` value: each example takes the style of another batch image


class Decisions(NamedTuple):
    """What to do to each example (B,): made by `draw` or on the host (augment_grain)."""

    applied: jax.Array  # bool: stylise this example
    style_index: jax.Array  # int32: bank row, or batch position for styles="batch"
    alpha: jax.Array  # float32, Eq. 14
    order: jax.Array  # float32 in [0, 1): the uniform draw; smallest first take the slots


def default_slots(batch_size: int, p: float) -> int:
    """Stylised slots per batch: ceil(p B + SLOT_SIGMAS sqrt(B p (1 - p))), at most B.

    Binomial(B, p) requests exceed it in about 2% of batches, by an example or two."""
    if p <= 0:
        return 0
    need = batch_size * p + SLOT_SIGMAS * math.sqrt(batch_size * p * (1 - p))
    return min(batch_size, math.ceil(need - 1e-9))


def draw(key, example_ids, *, p: float, alpha=1.0, n_styles: int) -> Decisions:
    """Per-example decisions from (key, example id) alone: applied with probability `p`,
    style index uniform in [0, n_styles), alpha uniform in the range (or the number)."""
    low, high = alpha_range(alpha)

    def one(example_id):
        # One draw of random bits per example: a third of the compile time of split +
        # uniform + randint + uniform (2.75 s of CPU at B = 16).
        bits = jax.random.bits(jax.random.fold_in(key, example_id), (3,), jnp.uint32)
        u, v = (bits[:2] >> 8).astype(jnp.float32) * (1.0 / (1 << 24))  # in [0, 1)
        style = (bits[2] % max(n_styles, 1)).astype(jnp.int32)  # modulo bias < N / 2**32
        return Decisions(u < p, style, low + (high - low) * v, u)

    return jax.vmap(one)(jnp.asarray(example_ids).astype(jnp.uint32))


class Info(NamedTuple):
    """What `augment` did to each example (B,)."""

    applied: jax.Array  # bool: stylised
    style_index: jax.Array  # int32: bank row or batch position; -1 if not applied or sampled
    alpha: jax.Array  # float32: the alpha used (0 where not applied)


def augment(params, key, images, styles, *, p: float = 0.5, alpha=1.0,
            example_ids=None, slots: int | None = None, value_range=(0.0, 1.0),
            mean=None, std=None, dtype=None, mesh: Mesh | None = None,
            axis: str = AXIS):
    """Stylise a random share `p` of `images` (B, H, W, 3). Returns (images, Info).

    styles: a StyleBank or its `stats` (StyleStats, each (N, C)), a StyleGaussian
        (sampled per example), or "batch" (another image of the same batch, never the
        example itself; which one depends on the batch, the coin flip and alpha do not).
    example_ids: (B,) integers identifying the examples (default 0..B-1); decisions are a
        function of (key, id) only (see the module docstring).
    slots: how many examples are stylised at most (default `default_slots(B, p)` of the
        per-device batch); p and slots are static.
    """
    images = jnp.asarray(images)
    n = images.shape[0]
    if example_ids is None:
        example_ids = jnp.arange(n, dtype=jnp.uint32)
    styles = _styles_arg(styles)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    devices = 1 if mesh is None else mesh.shape[axis]
    if n % devices:
        raise ValueError(f"a batch of {n} does not split over {devices} devices")
    local = n // devices
    slots = default_slots(local, p) if slots is None else min(int(slots), local)
    n_styles = local if isinstance(styles, str) else (
        0 if isinstance(styles, StyleGaussian) else styles.mean.shape[0])

    def run(params, key, images, styles, example_ids):
        decisions = draw(key, example_ids, p=p, alpha=alpha, n_styles=n_styles)
        if isinstance(styles, str):
            decisions = decisions._replace(style_index=_partners(key, images.shape[0]))
        sample_key = key if isinstance(styles, StyleGaussian) else None
        return _apply(params, images, styles, decisions, example_ids, slots, sample_key,
                      value_range, mean, std, dtype)

    if mesh is None:
        return run(params, key, images, styles, example_ids)
    batch, rep = P(axis), P()
    if isinstance(styles, str):  # not an array: closed over, not passed
        body, args, style_specs = (lambda prm, k, im, ids: run(prm, k, im, styles, ids),
                                   (params, key, images, example_ids), ())
    else:
        body, args = run, (params, key, images, styles, example_ids)
        style_specs = (jax.tree.map(lambda _: rep, styles),)
    return jax.shard_map(body, mesh=mesh,
                         in_specs=(rep, rep, batch, *style_specs, batch),
                         out_specs=(batch, Info(batch, batch, batch)), check_vma=False)(*args)


def _partners(key, n: int):
    """Each position's partner for styles="batch": one random cycle through the batch (a
    random order, each taking the next one's image), so no image is its own style. It
    depends on the batch's positions, not on example ids; each device cycles its own."""
    order = jax.random.permutation(jax.random.fold_in(key, 0xBA7C), n)
    return jnp.zeros(n, jnp.int32).at[order].set(jnp.roll(order, -1).astype(jnp.int32))


def apply_decisions(params, images, styles, decisions: Decisions, *, slots: int | None = None,
                    key=None, example_ids=None, value_range=(0.0, 1.0), mean=None,
                    std=None, dtype=None):
    """Stylise `images` as `decisions` say (e.g. drawn on the host); see `augment`.

    slots: default all B; give `default_slots(B, p)` so the cost follows p. For a
    StyleGaussian, `key` and `example_ids` seed each example's sampled style. For
    styles="batch", `style_index` is a position in the batch."""
    images = jnp.asarray(images)
    n = images.shape[0]
    slots = n if slots is None else min(int(slots), n)
    styles = _styles_arg(styles)
    if isinstance(styles, StyleGaussian) and key is None:
        raise ValueError("a StyleGaussian needs `key` (and example_ids) to sample styles")
    ids = jnp.arange(n, dtype=jnp.uint32) if example_ids is None else example_ids
    return _apply(params, images, styles, decisions, ids, slots, key, value_range,
                  mean, std, dtype)


def _styles_arg(styles):
    if isinstance(styles, StyleBank):
        return transfer.StyleStats(jnp.asarray(styles.mean), jnp.asarray(styles.std))
    if isinstance(styles, str):
        if styles != BATCH:
            raise ValueError(f"styles must be a StyleBank, StyleStats, StyleGaussian or "
                             f"{BATCH!r}, got {styles!r}")
        return styles
    if isinstance(styles, (transfer.StyleStats, StyleGaussian)):
        return styles
    raise TypeError(f"styles must be a StyleBank, StyleStats, StyleGaussian or {BATCH!r}, "
                    f"got {type(styles).__name__}")


def _to_unit(x, value_range, mean, std):
    x = x.astype(jnp.float32)
    if std is not None:
        x = x * jnp.asarray(std, jnp.float32) + jnp.asarray(mean, jnp.float32)
    low, high = value_range
    return (x - low) / (high - low)


def _from_unit(x, value_range, mean, std, dtype):
    low, high = value_range
    x = x * (high - low) + low
    if std is not None:
        x = (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
    if jnp.issubdtype(dtype, jnp.integer):
        info = jnp.iinfo(dtype)
        x = jnp.clip(jnp.round(x), info.min, info.max)
    return x.astype(dtype)


def _apply(params, images, styles, decisions: Decisions, example_ids, slots: int, key,
           value_range, mean, std, dtype):
    n = images.shape[0]
    none = Info(jnp.zeros(n, bool), jnp.full(n, -1, jnp.int32), jnp.zeros(n, jnp.float32))
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std of the normalisation, or neither")
    if slots == 0:
        return images, none
    # The `slots` examples with the smallest draws: every requested one unless there are
    # more requests than slots (then the extra ones, largest draws, are left out).
    _, order = jax.lax.top_k(-jnp.where(decisions.applied, decisions.order, 2.0), slots)
    applied = decisions.applied[order]
    alpha = decisions.alpha[order]
    content = jnp.clip(_to_unit(images[order], value_range, mean, std), 0.0, 1.0)
    if isinstance(styles, str):  # the partner images, encoded here
        partners = decisions.style_index[order]
        style = jnp.clip(_to_unit(images[partners], value_range, mean, std), 0.0, 1.0)
        stats = transfer.encode_style(params, style, dtype=dtype)
        index = partners
    elif isinstance(styles, StyleGaussian):
        keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(key, 0x5A3),
                                                     i))(example_ids[order].astype(jnp.uint32))
        stats = jax.vmap(lambda k: jax.tree.map(lambda x: x[0], sample_stats(k, styles, 1)))(keys)
        stats = transfer.StyleStats(*stats)
        index = jnp.full(slots, -1, jnp.int32)
    else:
        index = decisions.style_index[order]
        stats = transfer.StyleStats(jnp.asarray(styles.mean)[index],
                                    jnp.asarray(styles.std)[index])
    out = transfer.apply(params, content, stats, alpha[:, None, None, None], dtype=dtype)
    out = _from_unit(jnp.clip(out, 0.0, 1.0), value_range, mean, std, images.dtype)
    kept = jnp.where(applied[:, None, None, None], out, images[order])
    info = Info(none.applied.at[order].set(applied),
                none.style_index.at[order].set(jnp.where(applied, index, -1)),
                none.alpha.at[order].set(jnp.where(applied, alpha, 0.0)))
    return images.at[order].set(kept), info
