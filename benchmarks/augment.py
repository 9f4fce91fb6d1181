"""What style augmentation adds to a jitted train step, at p = 0.25 against p = 1, on CPU.

    python benchmarks/augment.py                         # batch 32 and 128 at 32 x 32
    python benchmarks/augment.py --batch 64 --size 64 --json a.json

The step is a small classifier's (examples/style_augmented_classifier.py's kind: four
convolutions, Adam) on a CIFAR-sized batch, with `augment` from a bank of 64 random
styles inside the same jitted function. Timed: the step without augmentation, and with
it at p = 0.25 (default slots, and slots = p B exactly) and p = 1; compiled first, then
interleaved over --reps rounds, medians. The overhead of a configuration is its step
time minus the plain step's; the ratio asked for is overhead(p = 0.25) / overhead(p = 1).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import bench  # noqa: E402  (random weights, timing, machine facts)
from adain_jax import augment  # noqa: E402
from adain_jax.transfer import StyleStats  # noqa: E402

N_STYLES = 64


class Classifier(nn.Module):
    @nn.compact
    def __call__(self, x):
        for features in (32, 64, 128, 128):
            x = nn.relu(nn.Conv(features, (3, 3), strides=2)(x))
        return nn.Dense(10)(x.mean(axis=(1, 2)))


def make_step(bank, p: float | None, slots: int | None):
    model, optimizer = Classifier(), optax.adam(1e-3)

    def step(state, adain_params, images, labels, ids, key):
        if p is not None:
            images, _ = augment.augment(adain_params, key, images, bank, p=p, alpha=1.0,
                                        example_ids=ids, slots=slots)

        def loss_fn(w):
            logits = model.apply({"params": w}, images)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        updates, opt = optimizer.update(grads, state["opt"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates), "opt": opt}, loss

    def init(size):
        w = model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)))["params"]
        return {"params": w, "opt": optimizer.init(w)}

    return step, init


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    _, _, params = bench.make_models()
    rng = np.random.default_rng(0)
    bank = StyleStats(jnp.asarray(rng.uniform(0, 2, (N_STYLES, 512)), jnp.float32),
                      jnp.asarray(rng.uniform(0.5, 3, (N_STYLES, 512)), jnp.float32))
    rows = []
    for batch in args.batch:
        images = jnp.asarray(bench.images(batch, args.size, seed=1))
        labels = jnp.asarray(rng.integers(0, 10, batch))
        ids = jnp.arange(batch)
        configs = {"none": (None, None), "p=0.25": (0.25, None),
                   "p=0.25 exact": (0.25, math.ceil(0.25 * batch)), "p=1": (1.0, None)}
        runners = {}
        for name, (p, slots) in configs.items():
            step, init = make_step(bank, p, slots)
            state = init(args.size)
            runners[name] = bench.jax_runner(
                step, (state, params, images, labels, ids, jax.random.key(2)))
        times = bench.interleaved(runners, args.reps)
        base = times["none"]["median_ms"]
        over = {name: times[name]["median_ms"] - base for name in configs if name != "none"}
        row = {"batch": batch, "size": args.size, "step_ms": {k: t["median_ms"]
                                                               for k, t in times.items()},
               "slots_default": augment.default_slots(batch, 0.25),
               "overhead_ms": over,
               "ratio_default": over["p=0.25"] / over["p=1"],
               "ratio_exact": over["p=0.25 exact"] / over["p=1"]}
        rows.append(row)
        print(f"batch {batch} at {args.size}^2: plain step {base:.1f} ms; overhead p=1 "
              f"{over['p=1']:.1f} ms, p=0.25 {over['p=0.25']:.1f} ms "
              f"({row['slots_default']} slots: {row['ratio_default']:.2f}x), p=0.25 with "
              f"{math.ceil(0.25 * batch)} slots {over['p=0.25 exact']:.1f} ms "
              f"({row['ratio_exact']:.2f}x)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": bench.machine(), "reps": args.reps,
                                               "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
