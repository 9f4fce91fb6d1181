"""Style-augmentation decisions drawn on the host, in a Grain pipeline (no JAX here).

    draw = DrawStyles(len(bank), p=0.5, alpha=(0.5, 1.0), seed=0)  # reads record["id"]
    ds = (grain.MapDataset.source(records).map(draw).shuffle(seed=1).repeat().batch(64))

    @jax.jit
    def train_step(state, batch):
        images, info = augment.apply_decisions(params, batch["image"], bank.stats,
                                               to_decisions(batch), slots=slots)
        ...

Each record gets "style_applied" (bool, with probability `p`), "style_index" (int32,
uniform over the bank's rows), "style_alpha" (float32, Eq. 14: the number, or uniform in
(low, high)) and "style_order" (float32 in [0, 1): the uniform draw behind "style_applied",
which `apply_decisions` uses to choose who keeps a slot when a batch asks for more than
`slots`; give `augment.default_slots(B, p)` so the cost follows p). Batching turns them
into (B,) arrays; `to_decisions(batch)` makes them an `augment.Decisions`.

Decisions are a pure function of (seed, record id): a NumPy generator seeded with both,
made afresh for each record, so the same record gets the same decisions whatever the batch
size, the shuffle, the number of worker processes or the order records are read in. The
id is `record[id_key]` (an integer, or a string such as TFDS's "tfds_id", hashed), or with
`id_key=None` Grain's index, through `MapDataset.map_with_index`: placed right after the
source that is the record's index (the same decisions every epoch); placed after
`.repeat()` it is the position in the endless stream, so every epoch draws anew.
"""
from __future__ import annotations

import hashlib
from typing import Any

import grain
import numpy as np

from adain_jax.configs import alpha_range

KEYS = ("style_applied", "style_index", "style_alpha", "style_order")


def _entropy(record_id) -> int:
    if isinstance(record_id, (str, bytes)):
        data = record_id.encode() if isinstance(record_id, str) else record_id
        return int.from_bytes(hashlib.sha256(data).digest()[:16], "little")
    value = int(record_id)
    if value < 0:
        raise ValueError(f"record ids must be non-negative, got {value}")
    return value


def decide(seed: int, record_id, *, p: float, alpha, n_styles: int) -> dict[str, Any]:
    """One record's decisions (the four KEYS), from (seed, record id) alone."""
    rng = np.random.default_rng([int(seed), _entropy(record_id)])
    u = np.float32(rng.random(dtype=np.float32))  # in [0, 1), a float32 exactly
    index = rng.integers(n_styles)
    low, high = alpha
    a = low + (high - low) * rng.random()
    return {"style_applied": np.bool_(u < p), "style_index": np.int32(index),
            "style_alpha": np.float32(a), "style_order": u}


class DrawStyles(grain.transforms.Map, grain.transforms.MapWithIndex):
    """Adds the four KEYS to each dict record: `.map(draw)`, or `.map_with_index(draw)`
    with `id_key=None` to use Grain's index as the record id (see the module docstring)."""

    def __init__(self, n_styles: int, *, p: float = 0.5, alpha=1.0, seed: int = 0,
                 id_key: str | None = "id"):
        if n_styles < 1:
            raise ValueError(f"n_styles must be at least 1, got {n_styles}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        low, high = alpha_range(alpha)
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.n_styles, self.p, self.alpha = int(n_styles), float(p), (float(low), float(high))
        self.seed, self.id_key = int(seed), id_key

    def _add(self, record, record_id):
        return {**record, **decide(self.seed, record_id, p=self.p, alpha=self.alpha,
                                   n_styles=self.n_styles)}

    def map(self, element):
        if self.id_key is None:
            raise ValueError("DrawStyles(id_key=None) takes Grain's index: use it with "
                             "map_with_index")
        if self.id_key not in element:
            raise KeyError(f"DrawStyles: the record has no {self.id_key!r} key (it has "
                           f"{sorted(element)}); give id_key, or id_key=None with "
                           "map_with_index")
        return self._add(element, element[self.id_key])

    def map_with_index(self, index: int, element):
        return self._add(element, index if self.id_key is None else element[self.id_key])


def to_decisions(batch):
    """The KEYS of a batch ((B,) arrays) as an `augment.Decisions` for `apply_decisions`."""
    from adain_jax.augment import Decisions

    return Decisions(*(batch[k] for k in KEYS))
