"""Speed and memory of adain-jax against the PyTorch reference port, on CPU.

    python benchmarks/bench.py                                  # every case, markdown table
    python benchmarks/bench.py --quick --cases stylize256,train # fewer repeats, two cases
    python benchmarks/bench.py --json bench.json --memory       # + peak RSS, JSON output

The PyTorch side is tests/torch_reference.py (the public port's net.py / test.py) with the
same random weights, run three ways: eager NCHW as the port runs it, eager channels-last,
and torch.compile, so we are compared with the best PyTorch a user could get on this CPU.
Times are medians after warm-up; the first call (tracing + compilation) is reported apart.
FLOPs are counted analytically from the layer lists in adain_jax.models (2 x multiply-adds
of the direct convolutions), so "% of peak" is the effective rate even where a faster
algorithm (Winograd) does fewer multiplications.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import adain_jax  # noqa: E402  (first: sets XLA_FLAGS before JAX starts)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from adain_jax import _malloc, losses, models, train  # noqa: E402

# As the command lines do (adain_jax/_malloc.py), before JAX's backend starts its threads;
# it holds for torch in this process too. ADAIN_JAX_KEEP_MEMORY=0 measures without.
KEEPS_FREED_MEMORY = _malloc.keep_freed_memory()

SCALE = 2.5  # random weights that keep activations O(1), as tests/test_transfer.py
CASES = ("stylize256", "stylize512", "cached512", "batch4", "train")
TORCH_CONFIGS = ("eager_nchw", "eager_cl", "compile")


# ---- FLOPs -----------------------------------------------------------------------------

def conv_flops(layers, height: int, width: int) -> int:
    """2 x multiply-adds of the convolutions in `layers` on one (height, width) input."""
    total = 0
    for layer in layers:
        if layer == models.POOL:
            height, width = -(-height // 2), -(-width // 2)
        elif layer == models.UP:
            height, width = 2 * height, 2 * width
        else:
            total += 2 * height * width * layer.kernel**2 * layer.in_channels * layer.out_channels
    return total


def encoder_flops(size: int) -> int:
    return conv_flops(models.ENCODER_LAYERS, size, size)


def decoder_flops(size: int) -> int:
    f = models.feature_size(size)
    return conv_flops(models.DECODER_LAYERS, f, f)


def stylize_flops(size: int, batch: int = 1, style_cached: bool = False) -> int:
    style = 0 if style_cached else encoder_flops(size)
    return batch * (encoder_flops(size) + decoder_flops(size)) + style


def train_flops(size: int, batch: int) -> int:
    """Forward: f(s), f(c), g(t), f(g(t)); backward: input gradients through the frozen
    encoder on g(t) (1x) and input + weight gradients of the decoder (2x)."""
    return batch * (4 * encoder_flops(size) + 3 * decoder_flops(size))


# ---- Timing ----------------------------------------------------------------------------

class Runner(NamedTuple):
    """One configuration of one case, ready to time: `call()` runs it once, synchronously."""

    call: Callable[[], object]
    first_call_s: float  # the first call, compilation included
    compile_s: float | None = None  # explicit jit compilation (adain-jax only)


def prepared(call: Callable[[], object], compile_s: float | None = None) -> Runner:
    start = time.perf_counter()
    call()
    return Runner(call, time.perf_counter() - start + (compile_s or 0.0), compile_s)


def interleaved(runners: dict[str, Runner], reps: int, warmup: int = 1) -> dict:
    """Time `reps` calls of each runner, round-robin, so load from other processes on a
    shared machine hits every configuration alike. Medians are what the table shows."""
    for runner in runners.values():
        for _ in range(warmup):
            runner.call()
    times = {name: [] for name in runners}
    names = list(runners)
    for rep in range(reps):
        for name in names[rep % len(names):] + names[: rep % len(names)]:
            start = time.perf_counter()
            runners[name].call()
            times[name].append(time.perf_counter() - start)
            time.sleep(0.05)  # let the previous runtime's spinning workers go idle
    return {name: {"median_ms": 1e3 * statistics.median(t), "min_ms": 1e3 * min(t),
                   "first_call_s": runners[name].first_call_s,
                   "compile_s": runners[name].compile_s, "reps": reps,
                   "all_ms": [round(1e3 * x, 1) for x in t]}
            for name, t in times.items()}


def measured_peak(reps: int) -> dict:
    """Best fp32 matmul rate (GFLOP/s) of numpy, torch and jax on this machine."""
    import torch

    n = 2048
    rng = np.random.default_rng(0)
    a, b = (rng.random((n, n), dtype=np.float32) for _ in range(2))
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    jmm = jax.jit(jnp.matmul)
    runs = {"numpy": lambda: a @ b, "torch": lambda: ta @ tb,
            "jax": lambda: jmm(ja, jb).block_until_ready()}
    out = {}
    for name, fn in runs.items():
        fn()
        best = min(_once(fn) for _ in range(max(reps, 5)))
        out[name] = 2 * n**3 / best / 1e9
    out["best"] = max(out.values())
    return out


def _once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ---- Models ----------------------------------------------------------------------------

def make_models(seed: int = 0):
    """Random port-layout torch modules and the same weights as our params."""
    from tests import torch_reference as ref

    vgg = ref.port_vgg_to_relu4_1(ref.randomize_(ref.make_port_vgg(), seed, SCALE)).eval()
    decoder = ref.randomize_(ref.make_port_decoder(), seed + 1, SCALE).eval()
    params = {"encoder": ref.convs_from(vgg, ref.PORT_VGG_CONVS),
              "decoder": ref.convs_from(decoder, ref.PORT_DECODER_CONVS)}
    return vgg, decoder, jax.tree.map(jnp.asarray, params)


def images(n: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, size, size, 3), dtype=np.float32)


# ---- adain-jax runners -----------------------------------------------------------------

def jax_runner(fn, args) -> Runner:
    """Compile explicitly (timed), then call the compiled executable."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    return prepared(lambda: jax.block_until_ready(compiled(*args)), compile_s)


def jax_stylize(params, content, style) -> Runner:
    return jax_runner(adain_jax.apply, (params, jnp.asarray(content), jnp.asarray(style)))


def jax_cached(params, content, style) -> Runner:
    """The style encoded once (adain_jax.encode_style), outside the timed call."""
    stats = jax.jit(adain_jax.encode_style)(params, jnp.asarray(style))
    return jax_runner(adain_jax.apply, (params, jnp.asarray(content), stats))


def jax_train(params, content, style) -> Runner:
    """One Adam step on the decoder: adain_jax.train.train_step, state donated."""
    config = train.TrainConfig()
    batch = {"content": jnp.asarray(np.round(content * 255).astype(np.uint8)),
             "style": jnp.asarray(np.round(style * 255).astype(np.uint8))}
    holder = {"state": train.init_state(jax.random.key(0), train.make_optimizer(config))}
    start = time.perf_counter()
    step = jax.jit(functools.partial(train.train_step, config=config), donate_argnums=0)
    step = step.lower(holder["state"], params["encoder"], batch).compile()
    compile_s = time.perf_counter() - start

    def call():
        holder["state"], metrics = step(holder["state"], params["encoder"], batch)
        return jax.block_until_ready(metrics["loss"])

    return prepared(call, compile_s)


# ---- PyTorch runners -------------------------------------------------------------------

def torch_modules(config: str, vgg, decoder):
    """Private copies of the modules in `config`'s memory format, and an input converter."""
    import torch

    vgg, decoder = copy.deepcopy(vgg), copy.deepcopy(decoder)
    layout = torch.channels_last if config == "eager_cl" else torch.contiguous_format
    vgg, decoder = vgg.to(memory_format=layout), decoder.to(memory_format=layout)

    def to_input(x):
        x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        return x.contiguous(memory_format=layout)

    return vgg, decoder, to_input


def torch_stylize(config, vgg, decoder, content, style, cached=False) -> Runner:
    """The port's test.py style_transfer; `cached`: vgg(style) computed once, outside."""
    import torch

    from tests import torch_reference as ref

    vgg, decoder, to_input = torch_modules(config, vgg, decoder)
    content, style = to_input(content), to_input(style)

    def transfer(c, s):
        return ref.style_transfer(vgg, decoder, c, s)

    def transfer_cached(c, style_f):
        return decoder(ref.adaptive_instance_normalization(vgg(c), style_f))

    fn = transfer_cached if cached else transfer
    if config == "compile":
        fn = torch.compile(fn)
    with torch.inference_mode():
        second = vgg(style) if cached else style

    def call():
        with torch.inference_mode():
            return fn(content, second)

    return prepared(call)


def torch_train(config, vgg, decoder, content, style) -> Runner:
    """The port's train.py step: ref.Net losses, Adam on the decoder."""
    import torch

    from tests import torch_reference as ref

    vgg, decoder, to_input = torch_modules(config, vgg, decoder)
    net = ref.Net(vgg, decoder).train()
    optimizer = torch.optim.Adam(net.decoder.parameters(), lr=1e-4)
    content, style = to_input(content), to_input(style)
    model = torch.compile(net) if config == "compile" else net

    def call():
        loss_c, loss_s = model(content, style)
        loss = loss_c + losses.STYLE_WEIGHT * loss_s
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    return prepared(call)


# ---- Cases -----------------------------------------------------------------------------

def case_spec(name: str):
    """(description, batch, size, FLOPs, adain-jax runner, torch runner)."""
    if name in ("stylize256", "stylize512"):
        size = int(name[len("stylize"):])
        return (f"stylize {size}², batch 1", 1, size, stylize_flops(size),
                jax_stylize, torch_stylize)
    if name == "cached512":
        return ("stylize 512², style cached", 1, 512, stylize_flops(512, style_cached=True),
                jax_cached, functools.partial(torch_stylize, cached=True))
    if name == "batch4":
        return ("stylize 512², batch 4", 4, 512, stylize_flops(512, batch=4),
                jax_stylize, torch_stylize)
    if name == "train":
        return ("train step, batch 8, 256²", 8, 256, train_flops(256, 8), jax_train, torch_train)
    raise ValueError(f"unknown case {name!r}; choose from {', '.join(CASES)}")


def run_case(name, models_, reps, torch_configs):
    import torch

    vgg, decoder, params = models_
    desc, batch, size, flops, jax_run, torch_run = case_spec(name)
    content = images(batch, size, seed=1)
    style = images(batch if name == "train" else 1, size, seed=2)
    runners = {"jax": jax_run(params, content, style)}
    for config in torch_configs:
        torch._dynamo.reset()
        runners[f"torch_{config}"] = torch_run(config, vgg, decoder, content, style)
    slow = name == "train" or batch > 1
    timings = interleaved(runners, max(3, reps // 2) if slow and reps > 3 else reps)
    for who, r in timings.items():
        print(f"  {name:11} {who:18} median {r['median_ms']:9.1f} ms  min {r['min_ms']:9.1f} ms"
              f"  first call {r['first_call_s']:6.2f} s", file=sys.stderr, flush=True)
    return {"case": name, "description": desc, "batch": batch, "size": size, "flops": flops,
            **timings}


def check_parity(models_) -> float:
    """Relative L2 of our stylised image vs the torch port's (same weights), at 64²."""
    import torch

    from tests import torch_reference as ref

    vgg, decoder, params = models_
    c, s = images(1, 64, 5), images(1, 64, 6)
    ours = np.asarray(adain_jax.apply(params, c, s))
    with torch.inference_mode():
        theirs = ref.nhwc(ref.style_transfer(vgg, decoder, ref.nchw(c), ref.nchw(s)))
    return ref.rel_l2(ours, theirs)


# ---- Memory ----------------------------------------------------------------------------

def rss_child(size: int, tiled: bool) -> None:
    """Stylise one size x size image in this (fresh) process; print peak RSS in MiB."""
    params = models.init_params(jax.random.key(0))
    content = np.random.default_rng(1).random((size, size, 3), dtype=np.float32)
    style = jnp.asarray(np.random.default_rng(2).random((512, 512, 3), dtype=np.float32))
    start = time.perf_counter()
    if tiled:
        out = adain_jax.apply_tiled(params, content, style)
    else:
        out = np.asarray(jax.jit(adain_jax.apply)(params, content, style))
    seconds = time.perf_counter() - start
    assert out.shape == content.shape and np.isfinite(out).all()
    rss_mib = peak_rss_mib()
    print(json.dumps({"size": size, "tiled": tiled, "peak_rss_mib": rss_mib,
                      "seconds": seconds}))


def peak_rss_mib() -> float:
    """This process's peak resident memory since it started (exec), in MiB.

    Linux's ru_maxrss also counts the parent's pages a child inherited at fork, before it
    exec'ed: a child of this 5 GB benchmark process would report 5 GB whatever it did.
    /proc/self/status VmHWM is the high-water mark of the current address space only.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def memory(runs) -> list[dict]:
    out = []
    for size, tiled in runs:
        cmd = [sys.executable, __file__, "--rss-child", str(size)] + (["--tiled"] if tiled else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            out.append({"size": size, "tiled": tiled, "error": proc.stderr.strip()[-500:]})
        else:
            out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"  memory {out[-1]}", file=sys.stderr, flush=True)
    return out


# ---- Report ----------------------------------------------------------------------------

def vector_isa() -> str:
    """The widest x86 vector extension the CPU reports ("avx512f", "avx2", ...), or "".

    Ratios against PyTorch depend on the machine (stylise 256²: 1.00x the best torch on
    the 2-core EPYC of 2026-11-22, whose fp32 matmul peak measured 365 GFLOP/s; 0.72x on
    the AVX2 2-core EPYC of 2026-12-02, 189 GFLOP/s), so results name it.
    """
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return ""
    return next((isa for isa in ("avx512f", "avx2", "avx", "sse4_2") if isa in flags), "")


def machine() -> dict:
    model = platform.processor()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    import torch

    return {"cpu": model, "vector_isa": vector_isa(), "cores": os.cpu_count(),
            "jax": jax.__version__,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "load_avg": os.getloadavg(),
            "keeps_freed_memory": KEEPS_FREED_MEMORY,
            "date": datetime.date.today().isoformat()}


def table(results, peak_gflops: float) -> str:
    head = ("| case | GFLOP | adain-jax ms | % peak | torch eager NCHW ms | torch eager "
            "channels-last ms | torch.compile ms | ours / eager NCHW | ours / best torch "
            "| first call: ours (compile) / torch.compile |")
    rows = [head, "|" + "---|" * 10]
    for r in results:
        ours = r["jax"]["median_ms"]
        torch_ms = {c: r[f"torch_{c}"]["median_ms"] for c in TORCH_CONFIGS if f"torch_{c}" in r}
        best = min(torch_ms.values()) if torch_ms else float("nan")
        pct = 100 * r["flops"] / (ours / 1e3) / (peak_gflops * 1e9)
        unit = lambda ms: (f"{ms:.0f} ({1e3 * r['batch'] / ms:.2f} img/s)"
                           if r["case"] == "batch4" else f"{ms:.0f}")  # throughput
        cell = lambda c: unit(torch_ms[c]) if c in torch_ms else "–"
        eager = torch_ms.get("eager_nchw", float("nan"))
        compile_s = r["jax"].get("compile_s")
        first = f"{r['jax']['first_call_s']:.1f} s"
        if compile_s is not None:
            first += f" ({compile_s:.1f} s)"
        if "torch_compile" in r:
            first += f" / {r['torch_compile']['first_call_s']:.1f} s"
        rows.append(f"| {r['description']} | {r['flops'] / 1e9:.0f} | {unit(ours)} | {pct:.0f}% "
                    f"| {cell('eager_nchw')} | {cell('eager_cl')} | {cell('compile')} "
                    f"| {ours / eager:.2f} | {ours / best:.2f} | {first} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"comma-separated subset of {','.join(CASES)}")
    parser.add_argument("--reps", type=int, default=10,
                        help="timed repeats per configuration (train, batch4: half)")
    parser.add_argument("--quick", action="store_true", help="3 repeats, for a smoke run")
    parser.add_argument("--torch", default=",".join(TORCH_CONFIGS),
                        help="PyTorch configurations to run ('' for none)")
    parser.add_argument("--memory", action="store_true",
                        help="peak RSS of stylize at 512², 1024², 2048² and tiled 4096²")
    parser.add_argument("--memory-sizes", default="512,1024,2048,t2048,t4096",
                        help="sizes for --memory; a 't' prefix uses apply_tiled")
    parser.add_argument("--json", type=Path, help="write all results here")
    parser.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tiled", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.rss_child:
        rss_child(args.rss_child, args.tiled)
        return 0

    import torch

    cases = [c for c in args.cases.split(",") if c]
    for c in cases:
        case_spec(c)  # unknown names fail before anything runs
    torch_configs = [c for c in args.torch.split(",") if c]
    reps = 3 if args.quick else args.reps
    torch.manual_seed(0)

    info = machine()
    print(f"# {info['date']}  {info['cpu']} ({info['vector_isa']}), {info['cores']} cores, "
          f"load {info['load_avg']}", file=sys.stderr)
    models_ = make_models()
    parity = check_parity(models_)
    print(f"  parity with the torch port at 64²: rel L2 {parity:.1e}", file=sys.stderr)
    peak = measured_peak(reps)
    print(f"  measured fp32 peak (GFLOP/s): {json.dumps({k: round(v) for k, v in peak.items()})}",
          file=sys.stderr)
    results = [run_case(c, models_, reps, torch_configs) for c in cases]
    report = {"machine": info, "peak_gflops": peak, "parity_rel_l2": parity, "cases": results}
    if args.memory:
        runs = [(int(s.lstrip("t")), s.startswith("t")) for s in args.memory_sizes.split(",")]
        report["memory"] = memory(runs)
    info["load_avg_end"] = os.getloadavg()

    print(f"\n{info['date']}, {info['cpu']} ({info['vector_isa']}), {info['cores']} cores, "
          f"jax {info['jax']}, torch {info['torch']} ({info['torch_threads']} threads); "
          f"measured fp32 peak {peak['best']:.0f} GFLOP/s; load average "
          f"{info['load_avg'][0]:.1f} -> {info['load_avg_end'][0]:.1f}\n")
    if results:
        print(table(results, peak["best"]))
    if "cached512" in cases and "stylize512" in cases:
        by = {r["case"]: r for r in results}
        ratio = by["cached512"]["jax"]["median_ms"] / by["stylize512"]["jax"]["median_ms"]
        report["cached_over_uncached"] = ratio
        print(f"\ncached / uncached stylize 512² (adain-jax): {ratio:.2f}")
    if args.memory:
        print("\n| content | tiled | peak RSS (MiB) | seconds |\n|---|---|---|---|")
        for m in report["memory"]:
            if "error" in m:
                print(f"| {m['size']}² | {m['tiled']} | failed: {m['error'][-80:]} | |")
            else:
                print(f"| {m['size']}² | {m['tiled']} | {m['peak_rss_mib']:.0f} "
                      f"| {m['seconds']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
