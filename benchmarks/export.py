"""The exported graphs' speed on CPU: ONNX Runtime and the StableHLO program against
jitted `adain_jax.apply` and the PyTorch port, same random weights, same images.

    python benchmarks/export.py                   # 256 and 512, 5 interleaved rounds
    python benchmarks/export.py --sizes 256 --reps 9 --json results/export.json

Timed per size: adain.onnx in ONNX Runtime (content and style, as a user of the drop-in
graph calls it), decoder.onnx alone (what moving alpha costs in the web app's browser
mode and for an ONNX user), the deserialised StableHLO program, `adain_jax.apply` jitted,
and the port's eager PyTorch `style_transfer`. Medians; first calls are not counted.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from jax import export as jax_export  # noqa: E402

import bench  # noqa: E402  (random weights, timing, machine facts)
from adain_jax import export  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    vgg, decoder, params = bench.make_models()
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        export.export_onnx(params, tmp)
        onnx_export_s = time.perf_counter() - began
        began = time.perf_counter()
        program = jax_export.deserialize(export.export_stablehlo(params, tmp).read_bytes())
        stablehlo_export_s = time.perf_counter() - began
        sessions = {name: ort.InferenceSession(str(Path(tmp) / name),
                                               providers=["CPUExecutionProvider"])
                    for name in ("adain.onnx", "encoder.onnx", "decoder.onnx")}
    results = {"machine": bench.machine(), "onnxruntime": ort.__version__,
               "onnx_export_s": onnx_export_s, "stablehlo_export_s": stablehlo_export_s,
               "sizes": {}}
    nchw = lambda x: np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    alpha = np.array(1.0, np.float32)
    for size in args.sizes:
        content, style = bench.images(1, size, 1), bench.images(1, size, 2)
        features = sessions["encoder.onnx"].run(None, {"image": nchw(content)})[0]
        _, mean, std = sessions["encoder.onnx"].run(None, {"image": nchw(style)})
        feeds = {"content": nchw(content), "style": nchw(style), "alpha": alpha}
        decoder_feeds = {"features": features, "style_mean": mean, "style_std": std,
                         "alpha": alpha}
        runners = {
            "onnxruntime adain.onnx": bench.prepared(
                lambda: sessions["adain.onnx"].run(None, feeds)),
            "onnxruntime decoder.onnx": bench.prepared(
                lambda: sessions["decoder.onnx"].run(None, decoder_feeds)),
            "stablehlo": bench.prepared(lambda: jax.block_until_ready(
                program.call(content, style, np.float32(1.0)))),
            "jax apply": bench.jax_stylize(params, content, style),
            "torch eager": bench.torch_stylize("eager", vgg, decoder, content, style),
        }
        timed = bench.interleaved(runners, args.reps)
        torch_ms = timed["torch eager"]["median_ms"]
        for name, row in timed.items():
            row["x_torch"] = row["median_ms"] / torch_ms
            print(f"{size}²  {name:26s} {row['median_ms']:8.1f} ms  {row['x_torch']:.2f}x torch")
        results["sizes"][str(size)] = timed
    print(f"export: onnx {onnx_export_s:.1f} s, stablehlo {stablehlo_export_s:.1f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
