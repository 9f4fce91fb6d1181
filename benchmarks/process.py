"""Whole processes, as a user waits for them: `stylize.py` against the PyTorch port's
test.py steps (benchmarks/port_test.py), from start to files written.

    python benchmarks/process.py                       # every case, markdown table
    python benchmarks/process.py --cases single --reps 3 --json process.json

Cases (the same random weights in the port's .pth layout and converted for us, the same
JPEG files, the default 512 resize, alternating runs, medians):
  single       one 640x480 photo (683x512 after resizing) and one style; our persistent
               compilation cache warm, as on every run after a user's first;
  single-cold  the same with an empty compilation cache each time (a user's first run);
  folder       8 photos of 7 different shapes x 3 styles into a folder (warm cache);
  folder-cold  the same, cold.
The port re-encodes the style for every pair, as its test.py does; we encode each once.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CASES = ("single", "single-cold", "folder", "folder-cold")
SCALE = 2.5  # random weights that keep activations O(1), as the tests'
# A folder of photos as cameras and phones make them: 7 shapes after resizing to 512.
FOLDER_SIZES = [(640, 480), (480, 640), (800, 600), (1024, 683), (600, 600), (1280, 720),
                (720, 1280), (500, 375)]
STYLE_SIZES = [(600, 450), (512, 640), (700, 700)]


def photo(width: int, height: int, seed: int) -> np.ndarray:
    """A photo-like uint8 image: smooth shapes at several scales, edges and fine noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = np.zeros((height, width, 3), np.float32)
    for cells, weight in ((4, 0.5), (16, 0.3), (64, 0.15)):
        coarse = rng.random((cells, cells, 3), dtype=np.float32)
        layer = Image.fromarray((coarse * 255).astype(np.uint8)).resize((width, height),
                                                                        Image.BICUBIC)
        out += weight * np.asarray(layer, np.float32)
    out += rng.normal(0, 6, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def make_fixtures(folder: Path) -> dict:
    """Random port weights (.pth), the same converted for us, and JPEG inputs."""
    import torch
    from PIL import Image

    sys.path.insert(0, str(ROOT))
    from tests import torch_reference as ref

    folder.mkdir(parents=True, exist_ok=True)
    vgg = ref.randomize_(ref.make_port_vgg(), 0, SCALE)
    decoder = ref.randomize_(ref.make_port_decoder(), 1, SCALE)
    torch.save(vgg.state_dict(), folder / "vgg_normalised.pth")
    torch.save(decoder.state_dict(), folder / "decoder.pth")
    subprocess.run([sys.executable, str(ROOT / "convert_weights.py"), "--quiet",
                    "--vgg", str(folder / "vgg_normalised.pth"),
                    "--decoder", str(folder / "decoder.pth"),
                    "--out", str(folder / "adain.safetensors")], check=True)
    for sub in ("photos", "styles"):
        (folder / sub).mkdir(exist_ok=True)
    for i, (w, h) in enumerate(FOLDER_SIZES):
        Image.fromarray(photo(w, h, i)).save(folder / "photos" / f"photo{i}.jpg", quality=90)
    for i, (w, h) in enumerate(STYLE_SIZES):
        Image.fromarray(photo(w, h, 100 + i)).save(folder / "styles" / f"style{i}.jpg",
                                                   quality=90)
    return {"weights": folder / "adain.safetensors", "vgg": folder / "vgg_normalised.pth",
            "decoder": folder / "decoder.pth",
            "photos": sorted((folder / "photos").glob("*.jpg")),
            "styles": sorted((folder / "styles").glob("*.jpg"))}


def commands(case: str, fx: dict, out: Path) -> dict[str, list[str]]:
    single = case.startswith("single")
    photos = fx["photos"][:1] if single else fx["photos"]
    styles = fx["styles"][:1] if single else fx["styles"]
    ours = [sys.executable, str(ROOT / "stylize.py"), "--weights", str(fx["weights"]),
            "--quiet"]
    if single:
        ours += ["--content", str(photos[0]), "--style", str(styles[0]),
                 "--output", str(out / "ours" / "out.png")]
    else:
        ours += ["--content", str(photos[0].parent), "--style", str(styles[0].parent),
                 "--output", str(out / "ours")]
    port = [sys.executable, str(ROOT / "benchmarks" / "port_test.py"),
            "--vgg", str(fx["vgg"]), "--decoder", str(fx["decoder"]),
            "--content", *map(str, photos), "--style", *map(str, styles),
            "--output-dir", str(out / "port")]
    return {"adain-jax": ours, "port": port}


def timed(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def run_case(case: str, fx: dict, reps: int, work: Path) -> dict:
    out = work / case
    cmds = commands(case, fx, out)
    cache = work / f"cache-{case}"
    env = {**os.environ, "ADAIN_JAX_CACHE": str(cache)}
    cold = case.endswith("-cold")
    if not cold:  # a user's earlier run filled the cache
        timed(cmds["adain-jax"], env)
    times = {name: [] for name in cmds}
    for rep in range(reps):
        order = list(cmds) if rep % 2 == 0 else list(cmds)[::-1]
        for name in order:
            if cold:
                shutil.rmtree(cache, ignore_errors=True)
            times[name].append(timed(cmds[name], env))
    outputs = len(list((out / "port").glob("*.png")))
    medians = {name: statistics.median(t) for name, t in times.items()}
    return {"case": case, "outputs": outputs, "reps": reps,
            "median_s": medians, "all_s": {k: [round(x, 2) for x in v] for k, v in times.items()},
            "ratio": medians["adain-jax"] / medians["port"]}


def machine(load_at_start: float) -> dict:
    """bench.machine()'s facts (CPU model and vector extension: ratios depend on them).

    Imported only here, after the timed runs: bench imports adain_jax, which appends its
    XLA options to this process's XLA_FLAGS, and the runs' environments copy it.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench

    return {**bench.machine(), "load": load_at_start, "python": platform.python_version()}


def table(results: list[dict]) -> str:
    lines = ["| case | outputs | adain-jax s | port s | ours / port | port / ours "
             "(throughput) |", "|---|---|---|---|---|---|"]
    for r in results:
        ours, port = r["median_s"]["adain-jax"], r["median_s"]["port"]
        lines.append(f"| {r['case']} | {r['outputs']} | {ours:.2f} | {port:.2f} | "
                     f"{ours / port:.2f} | {port / ours:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"comma-separated, from {', '.join(CASES)} (default: all)")
    parser.add_argument("--reps", type=int, default=5, help="runs of each (default: 5)")
    parser.add_argument("--workdir", type=Path,
                        help="fixtures and outputs here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="write all results here")
    args = parser.parse_args(argv)
    cases = args.cases.split(",")
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown cases: {', '.join(unknown)}")
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        fx = make_fixtures(work / "fixtures")
        results = []
        for case in cases:
            results.append(run_case(case, fx, args.reps, work))
            print(table(results[-1:]).splitlines()[-1], flush=True)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(load_at_start), "results": results},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
