"""The speed ideas behind adain_jax/models.py and _xla.py, each measured on this machine.

    python benchmarks/ideas.py                 # everything (several minutes on 2 cores)
    python benchmarks/ideas.py --only layers,flags --reps 3

  layers     every 3x3 conv shape of a 512² stylise: XLA's direct convolution, Winograd
             F(4x4, 3x3), the taps product (few outputs: x @ all nine taps, shifted sum),
             shift-and-matmul (9 shifted views x matmul) and im2col + one dot
  pad        reflection padding: jnp.pad(mode="reflect") vs the static gather models.py uses
  precision  lax.Precision.HIGHEST vs DEFAULT for float32 convolutions on CPU
  gradients  gradients of 3x3 layers at train-step shapes (batch 8): the direct convolution,
             Winograd or the taps product differentiated by JAX, their written-out
             gradients (kept)
  threshold  stylise 512² with Winograd from 64 / 128 / 256 input channels, or never
  flags      stylise 512² under XLA CPU option sets (fresh process each)

Each line gives the median wall time and the process CPU time (all threads) per call:
on a shared machine the CPU time moves less with other people's load than the wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import adain_jax  # noqa: E402,F401  (sets XLA_FLAGS first)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

from adain_jax import models  # noqa: E402

FLAG_SETS = {
    "jaxlib default": "",
    "ours: ynn_fusion_type= (no YNNPACK)": "--xla_cpu_experimental_ynn_fusion_type=",
    "YNNPACK dots only": "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",
    "ours + use_xnnpack=false": ("--xla_cpu_experimental_ynn_fusion_type= "
                                 "--xla_cpu_use_xnnpack=false"),
    "ours + prefer_vector_width=512": ("--xla_cpu_experimental_ynn_fusion_type= "
                                       "--xla_cpu_prefer_vector_width=512"),
    "ours + multi_thread_eigen=false": ("--xla_cpu_experimental_ynn_fusion_type= "
                                        "--xla_cpu_multi_thread_eigen=false"),
}


def measure(fn, *args, reps: int = 5) -> dict:
    """Compile (timed), one warm-up, then `reps` timed calls: median wall and CPU ms."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))
    walls, cpus = [], []
    for _ in range(reps):
        wall, cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(compiled(*args))
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {"wall_ms": 1e3 * statistics.median(walls), "cpu_ms": 1e3 * statistics.median(cpus),
            "compile_s": compile_s}


def show(label: str, r: dict, flops: float | None = None) -> None:
    rate = f"  {flops / (r['cpu_ms'] / 1e3) / 1e9:6.0f} GFLOP per CPU-s" if flops else ""
    print(f"  {label:46} wall {r['wall_ms']:8.1f} ms  cpu {r['cpu_ms']:8.1f} ms  "
          f"compile {r['compile_s']:5.2f} s{rate}", flush=True)


# ---- 3x3 convolution algorithms ------------------------------------------------------------

direct = models.direct_conv3x3_reflect


def shift_matmul(x, k):
    """Sum over the 9 taps of (shifted view) @ k[i, j]."""
    xp, (h, w) = models.reflect_pad(x), x.shape[1:3]
    return sum(jnp.einsum("nhwc,cd->nhwd", xp[:, i:i + h, j:j + w], k[i, j])
               for i in range(3) for j in range(3))


def im2col(x, k):
    """The 9 shifted views concatenated on channels, then one matmul."""
    xp, (h, w) = models.reflect_pad(x), x.shape[1:3]
    cols = jnp.concatenate([xp[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], -1)
    return jnp.einsum("nhwc,cd->nhwd", cols, k.reshape(-1, k.shape[-1]))


def conv_shapes(size: int = 512):
    """(side, in, out) of every 3x3 conv in a `size`² stylise, with its count."""
    shapes = {}
    for layers, side in ((models.ENCODER_LAYERS, size), (models.DECODER_LAYERS, size // 8)):
        for layer in layers:
            if layer == models.POOL:
                side = -(-side // 2)
            elif layer == models.UP:
                side *= 2
            elif layer.kernel == 3:
                key = (side, layer.in_channels, layer.out_channels)
                shapes[key] = shapes.get(key, 0) + (2 if layers is models.ENCODER_LAYERS else 1)
    return shapes


def ideas_layers(reps):
    print("3x3 conv layers of a 512² stylise (count = uses per stylise)")
    rng = np.random.default_rng(0)
    for (side, cin, cout), count in conv_shapes().items():
        x = jnp.asarray(rng.random((1, side, side, cin), dtype=np.float32))
        k = jnp.asarray(rng.standard_normal((3, 3, cin, cout), dtype=np.float32) / (3 * cin**0.5))
        flops = 2 * side * side * 9 * cin * cout
        print(f" {side}² {cin}->{cout} x{count}: {flops / 1e9:.1f} GFLOP")
        ref = np.asarray(direct(x, k), np.float64)
        for name, fn in (("direct (lax.conv)", direct),
                         ("winograd F(4x4,3x3)", models.winograd_conv3x3_reflect),
                         ("taps product, shifted sum", models.taps_conv3x3_reflect),
                         ("shift-and-matmul", shift_matmul), ("im2col + dot", im2col)):
            if name == "im2col + dot" and side * side * cin > 2**24:
                continue  # the 9x copy is gigabytes: no contender
            if name.startswith("taps") and cout > 4 * models.TAPS_MAX_OUT_CHANNELS:
                continue  # the product is 9x the output: only for few outputs
            r = measure(fn, x, k, reps=reps)
            err = np.linalg.norm(np.asarray(fn(x, k), np.float64) - ref) / np.linalg.norm(ref)
            show(f"{name} (rel diff {err:.0e})", r, flops)


def ideas_pad(reps):
    print("reflection pad (+ ReLU, as in the network)")
    for side, c in ((512, 64), (128, 256)):
        x = jnp.asarray(np.random.default_rng(0).random((1, side, side, c), dtype=np.float32))
        jnp_pad = lambda x: jax.nn.relu(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), "reflect"))
        gather = lambda x: jax.nn.relu(models.reflect_pad(x))
        assert np.array_equal(np.asarray(jnp_pad(x)), np.asarray(gather(x)))
        show(f"{side}²x{c} jnp.pad(mode='reflect')", measure(jnp_pad, x, reps=reps))
        show(f"{side}²x{c} gather (models.reflect_pad)", measure(gather, x, reps=reps))
        grad = lambda f: (lambda x: jax.grad(lambda y: jnp.sum(jnp.sin(f(y))))(x))
        show(f"{side}²x{c} gradient, jnp.pad", measure(grad(jnp_pad), x, reps=reps))
        show(f"{side}²x{c} gradient, models.reflect_pad", measure(grad(gather), x, reps=reps))


def ideas_precision(reps):
    print("lax.Precision on CPU, float32 3x3 conv 128²x256->256")
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((1, 128, 128, 256), dtype=np.float32))
    k = jnp.asarray(rng.standard_normal((3, 3, 256, 256), dtype=np.float32) / 48)
    outs = {}
    for p in (lax.Precision.HIGHEST, lax.Precision.DEFAULT):
        fn = lambda x, k, p=p: models.direct_conv3x3_reflect(x, k, p)
        outs[p] = np.asarray(fn(x, k))
        show(f"direct, {p.name}", measure(fn, x, k, reps=reps))
    diff = np.abs(outs[lax.Precision.HIGHEST] - outs[lax.Precision.DEFAULT]).max()
    print(f"  max |HIGHEST - DEFAULT| = {diff}")


def ideas_gradients(reps):
    print("gradients of 3x3 layers, batch 8 as in a train step: input only (the encoder on "
          "g(t)), input and kernel (the decoder); a vjp of a linear op needs no forward")
    rng = np.random.default_rng(0)
    for side, cin, cout in ((64, 256, 256), (128, 128, 128), (128, 128, 64), (256, 64, 3)):
        x = jnp.asarray(rng.standard_normal((8, side, side, cin), dtype=np.float32))
        k = jnp.asarray(rng.standard_normal((3, 3, cin, cout), dtype=np.float32) / (3 * cin**0.5))
        g = jnp.asarray(rng.standard_normal((8, side, side, cout), dtype=np.float32))
        print(f" {side}² {cin}->{cout}")
        name, fast = (("taps", models.taps_conv3x3_reflect) if cout <= models.TAPS_MAX_OUT_CHANNELS
                      else ("winograd", models.winograd_conv3x3_reflect))
        # .fun: the forward pass alone, which jax then differentiates
        for label, fn in (("direct", direct), (f"{name}, differentiated", fast.fun),
                          (f"{name}, written-out gradient (kept)", fast)):
            input_grad = lambda x, k, g, fn=fn: jax.vjp(lambda x: fn(x, k), x)[1](g)
            show(f"{label}: input", measure(input_grad, x, k, g, reps=reps))
            both = lambda x, k, g, fn=fn: jax.vjp(fn, x, k)[1](g)
            show(f"{label}: input and kernel", measure(both, x, k, g, reps=reps))


def stylize_512(reps):
    params = models.init_params(jax.random.key(0))
    rng = np.random.default_rng(0)
    c, s = (jnp.asarray(rng.random((1, 512, 512, 3), dtype=np.float32)) for _ in range(2))
    return measure(adain_jax.apply, params, c, s, reps=reps)


def ideas_threshold(reps):
    print("stylise 512²: Winograd from how many input channels")
    default = models.WINOGRAD_MIN_CHANNELS
    for minimum in (64, 128, 256, 10**9):
        models.WINOGRAD_MIN_CHANNELS = minimum
        jax.clear_caches()
        label = "never (direct everywhere)" if minimum == 10**9 else f">= {minimum} channels"
        show(label + (" (kept)" if minimum == default else ""), stylize_512(reps))
    models.WINOGRAD_MIN_CHANNELS = default


def ideas_flags(reps):
    print("stylise 512² under XLA CPU options (fresh process each)")
    for label, flags in FLAG_SETS.items():
        env = {**os.environ, "XLA_FLAGS": flags, "ADAIN_JAX_XLA_FLAGS": "0"}
        proc = subprocess.run([sys.executable, __file__, "--child-stylize", str(reps)],
                              env=env, capture_output=True, text=True)
        if proc.returncode:
            print(f"  {label:46} failed: {proc.stderr.strip()[-200:]}")
            continue
        show(label, json.loads(proc.stdout.strip().splitlines()[-1]))


IDEAS = {"layers": ideas_layers, "pad": ideas_pad, "precision": ideas_precision,
         "gradients": ideas_gradients, "threshold": ideas_threshold, "flags": ideas_flags}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(IDEAS), help=",".join(IDEAS))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--child-stylize", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_stylize:
        print(json.dumps(stylize_512(args.child_stylize)))
        return 0
    print(f"load average {os.getloadavg()[0]:.1f}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    for name in args.only.split(","):
        IDEAS[name](args.reps)
    print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
