"""Images per second of the dataset job (stylize_dataset, --resize sin, 224^2) against the
Stylized-ImageNet approach, on CPU.

    python benchmarks/stylize_dataset.py                        # 16 images, markdown
    python benchmarks/stylize_dataset.py --images 32 --batch 8 --json r.json

Both read the same JPEG photos (generated, 7 shapes), resize the shorter side to 256,
centre-crop 224, stylise with the same random weights and write PNGs. Ours:
`stylize_dataset.run_job` with styles from a bank (encoded once, not timed) and --batch
images per call, timed after an untimed warm-up job of the same shapes (compilation; its
time is reported apart). Stylized-ImageNet's way (code/adain.py, as it calls the
pytorch-AdaIN port): one image at a time through tests/torch_reference.py, the style
image read and encoded again for every content, alpha 1. Torch's default threads.
Runs alternate over --reps rounds; medians.
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

import adain_jax  # noqa: E402,F401  (first: sets XLA_FLAGS before JAX starts)
import numpy as np  # noqa: E402

import bench  # noqa: E402  (random weights, machine facts)
from adain_jax import style_bank  # noqa: E402
from adain_jax import stylize_dataset as sd  # noqa: E402
from process import FOLDER_SIZES, photo  # noqa: E402

STYLES = 8


def make_inputs(folder: Path, count: int, params) -> tuple[Path, Path, Path, str]:
    """JPEG contents, 224^2 PNG styles (SIN's preprocessed paintings), weights, a bank."""
    from PIL import Image

    from adain_jax.download import sha256_file

    contents, styles = folder / "contents", folder / "styles"
    contents.mkdir()
    styles.mkdir()
    for i in range(count):
        width, height = FOLDER_SIZES[i % len(FOLDER_SIZES)]
        Image.fromarray(photo(width, height, seed=i)).save(contents / f"{i:04d}.jpg",
                                                           quality=90)
    for i in range(STYLES):
        Image.fromarray(photo(224, 224, seed=1000 + i)).save(styles / f"style{i}.png")
    weights = adain_jax.save_params(params, folder / "weights.safetensors")
    sha = sha256_file(weights)
    bank = folder / "bank.safetensors"
    style_bank.build_bank(params, sha, styles, bank, style_size=224, crop=True)
    return contents, styles, bank, sha


def run_ours(params, sha, bank, contents: Path, out: Path, batch: int) -> float:
    settings = sd.Settings(resize="sin", batch=batch, chunk=sd.CHUNK)
    job = sd.FolderContents(contents, out)
    start = time.perf_counter()
    result = sd.run_job(params, sha, style_bank.load_bank(bank), job, out, settings)
    assert not result.failures and result.merged
    return time.perf_counter() - start


def run_sin(vgg, decoder, contents: Path, styles: Path, out: Path) -> float:
    """Stylized-ImageNet's loop: per image, Resize(256) + CenterCrop(224) with PIL (as
    torchvision does), a style image drawn and read, both encoded, decoded, saved."""
    import torch
    from PIL import Image

    from tests import torch_reference as ref

    style_files = sorted(styles.iterdir())
    rng = np.random.RandomState(sd.SIN_SEED)
    out.mkdir()
    start = time.perf_counter()
    for path in sorted(contents.iterdir()):
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            size = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
            img = img.resize(size, Image.BILINEAR)
            left, top = int(round((size[0] - 224) / 2)), int(round((size[1] - 224) / 2))
            content = np.asarray(img.crop((left, top, left + 224, top + 224)), np.float32) / 255
        with Image.open(style_files[rng.randint(0, len(style_files))]) as s:
            style = np.asarray(s.convert("RGB"), np.float32) / 255
        with torch.inference_mode():
            result = ref.style_transfer(vgg, decoder, ref.nchw(content[None]),
                                        ref.nchw(style[None]), alpha=1.0)
        pixels = np.clip(ref.nhwc(result)[0] * 255 + 0.5, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(out / f"{path.stem}.png")
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    vgg, decoder, params = bench.make_models()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        contents, styles, bank, sha = make_inputs(tmp, args.images, params)
        warm = tmp / "warm"  # the same shapes: every batch size the timed run will use
        warm.mkdir()
        for path in sorted(contents.iterdir())[: args.batch + args.images % args.batch]:
            (warm / path.name).symlink_to(path)
        compile_s = run_ours(params, sha, bank, warm, tmp / "warm-out", args.batch)
        ours, theirs = [], []
        for rep in range(args.reps):
            ours.append(run_ours(params, sha, bank, contents, tmp / f"ours{rep}", args.batch))
            theirs.append(run_sin(vgg, decoder, contents, styles, tmp / f"sin{rep}"))
    ours_ips = args.images / statistics.median(ours)
    sin_ips = args.images / statistics.median(theirs)
    info = bench.machine()
    print(f"{info['date']}, {info['cpu']}, {info['cores']} cores, load {info['load_avg'][0]:.1f}"
          f"; {args.images} images at 224^2, --batch {args.batch}\n")
    print("| | images/s |\n|---|---|")
    print(f"| stylize_dataset (bank, batch {args.batch}) | {ours_ips:.2f} |")
    print(f"| Stylized-ImageNet way (torch, one by one, style re-encoded) | {sin_ips:.2f} |")
    print(f"\nratio ours / SIN: {ours_ips / sin_ips:.2f}; warm-up job (compilation, "
          f"{args.batch + args.images % args.batch} images): {compile_s:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": info, "images": args.images, "batch": args.batch, "reps": args.reps,
            "size": 224, "ours_images_per_s": ours_ips, "sin_images_per_s": sin_ips,
            "ratio": ours_ips / sin_ips, "warmup_s": compile_s,
            "ours_s": ours, "sin_s": theirs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
