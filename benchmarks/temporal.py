"""Seconds per frame of stylize.py's --temporal modes, against per-frame AdaIN, on CPU.

    python benchmarks/temporal.py                      # 512 x 512, 12 frames, markdown
    python benchmarks/temporal.py --size 256 --json t.json

A generated clip (a photo-like scene panning by 3 px a frame, lossless FFV1) is stylised
by `stylize_files.video_outputs`, as stylize.py runs it, with random weights, once per mode
after an untimed warm-up on its first two frames (compilation), modes interleaved over
--reps rounds; medians. `stats` reads the clip twice: its first pass (content statistics
of up to STATS_FRAMES frames) is timed apart, and its cost per frame for a clip of
--long-clip frames is projected as first pass per sampled frame x STATS_FRAMES / frames.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import bench  # noqa: E402  (random weights, machine facts)
from adain_jax import stylize_files, video  # noqa: E402
from adain_jax.configs import STATS_FRAMES, TEMPORAL_MODES, Settings  # noqa: E402
from process import photo  # noqa: E402

SHIFT = 3


def make_clip(folder: Path, size: int, frames: int) -> tuple[Path, Path]:
    import av
    from PIL import Image

    scene = photo(size + SHIFT * frames, size, seed=0)
    clip = folder / "pan.mkv"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.height = stream.width = size
        stream.pix_fmt = "bgr0"
        for t in range(frames):
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(scene[:, SHIFT * t: SHIFT * t + size]), format="rgb24")
            frame.pts = t
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    style = folder / "style.png"
    Image.fromarray(photo(size, size, seed=1)).save(style)
    return clip, style


def run_mode(params, clip, style, mode, frames) -> float:
    settings = Settings(content_size=0, style_size=0, temporal=mode)
    styles = stylize_files._Styles(params, settings, {style: 2})
    job = stylize_files.Job(clip, (style,), clip.with_suffix(".out.mkv"))
    start = time.perf_counter()
    for out in stylize_files.video_outputs(params, job, frames, settings, styles):
        np.asarray(out)
    return time.perf_counter() - start


def first_pass(params, clip, style) -> float:
    settings = Settings(content_size=0, style_size=0, temporal="stats")
    styles = stylize_files._Styles(params, settings, {style: 2})
    job = stylize_files.Job(clip, (style,), clip.with_suffix(".out.mkv"))
    start = time.perf_counter()
    list(stylize_files._video_stats(params, job, settings, styles, False, lambda: False, False))
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--long-clip", type=int, default=300)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    _, _, params = bench.make_models()
    params = jax.device_put(params)
    with tempfile.TemporaryDirectory() as tmp:
        clip, style = make_clip(Path(tmp), args.size, args.frames)
        with video.VideoReader(clip) as reader:
            frames = list(reader)
        times = {mode: [] for mode in TEMPORAL_MODES}
        passes = []
        for mode in TEMPORAL_MODES:  # warm-up: compile every program
            run_mode(params, clip, style, mode, frames[:2])
        for _ in range(args.reps):
            for mode in TEMPORAL_MODES:
                times[mode].append(run_mode(params, clip, style, mode, frames) / len(frames))
            passes.append(first_pass(params, clip, style))
    per_frame = {mode: statistics.median(t) for mode, t in times.items()}
    sampled = min(args.frames, STATS_FRAMES)
    pass_per_sampled = statistics.median(passes) / sampled
    long_extra = pass_per_sampled * min(args.long_clip, STATS_FRAMES) / args.long_clip
    rows = []
    for mode in TEMPORAL_MODES:
        steady = per_frame[mode] - (statistics.median(passes) / args.frames
                                    if mode.startswith("stats") else 0.0)
        long_clip = steady + (long_extra if mode.startswith("stats") else 0.0)
        rows.append({"mode": mode, "s_per_frame": per_frame[mode],
                     "ratio": per_frame[mode] / per_frame["none"],
                     f"ratio_{args.long_clip}_frames": long_clip / per_frame["none"]})
    print(f"{args.size}x{args.size}, {args.frames} frames; first pass "
          f"{pass_per_sampled:.3f} s per sampled frame\n")
    print(f"| mode | s/frame | vs none ({args.frames} frames) | vs none ({args.long_clip} "
          "frames, projected) |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['mode']} | {row['s_per_frame']:.3f} | {row['ratio']:.2f} | "
              f"{row[f'ratio_{args.long_clip}_frames']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": bench.machine(), "size": args.size, "frames": args.frames,
            "reps": args.reps, "first_pass_s_per_sampled_frame": pass_per_sampled,
            "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
