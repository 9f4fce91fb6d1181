"""The paper's quantitative comparison (Sec. 7.1, Fig. 3): content loss, style loss, time.

    python -m adain_jax.evaluate --content coco_test/ --style wikiart_test/ \\
        --methods adain-vgg adain-densenet:densenet.safetensors gatys --out eval/

Every method stylises every content x style pair (by default the paper's protocol: the
first 50 contents and 10 styles of the folders, in name order, each resized so its shorter
side is 512 px and centre-cropped to 512 x 512). Each output o is then measured with the
same VGG-19 encoder f (the --vgg file, whatever encoder the method used), as in Fig. 3:
- content loss: mse(f(o), f(c)) at relu4_1, the target being the content image's features
  (the loss of Gatys et al., the same for every method; AdaIN's training loss, Eq. 12,
  targets its own t instead);
- style loss: Eq. 13 against the style image, sum over relu1_1..relu4_1 of the mean
  squared differences of the channel means and of the stds (losses.style_loss);
both as mean squared errors over all elements (torch's MSELoss), on the output clipped to
[0, 1] (what is saved). Time per image is the wall time of the stylisation alone (for
AdaIN: encoding content and style, AdaIN, decoding; for Gatys: every step), with the
inputs already on the device, after one untimed warm-up run that compiles it, until the
output is ready.

Methods: `adain-vgg[:WEIGHTS]` (default weights: the --vgg file), `adain-densenet:WEIGHTS`,
`gatys[:meanstd|gram]` (default meanstd: Fig. 3 uses the AdaIN paper's style loss for Gatys
et al. too). Each method has a label: adain-vgg, adain-vgg_<file name without .safetensors>,
adain-densenet_<...>, gatys-meanstd, gatys-gram. To choose it, write the weights as
NAME=FILE (NAME: letters, digits, '.', '_', '-'); two runs whose files share a name:
`adain-vgg:coco=runs/coco/adain.safetensors adain-vgg:wiki=runs/wiki/adain.safetensors`.
Labels must differ. Outputs in --out (checked before anything is loaded): results.csv (one
row per label x content x style) and one contact sheet per method, sheet_<label>.png; the
table of means and standard deviations is printed. Exit status 0, or 1 on a usage or file
error.

Video (`--video CLIP --style IMAGE`): the clip is stylised with each --temporal mode of
stylize.py (default: all four) and measured per mode: the warping error of Lai et al.
(ECCV 2018; `temporal.warping_error`) at frame intervals 1 and 5, its flow estimated by
Farneback's method (not the DIS flow the flow modes use); the content and style losses
above, averaged over frames; and seconds per frame (the whole mode, flow and first pass
included, after a warm-up run on the first frames). Frames are resized as stylize.py
does (--size: shorter side; 0 keeps the size). Outputs: video_results.csv in --out, one
row per mode, and the table printed.

Contact sheet layout: a grid of (1 + contents) rows x (1 + styles) columns of square cells
of --thumb px, separated and surrounded by SHEET_GAP px of white: the top row holds the
style images (the top-left cell is white), the left column the content images, and cell
(1 + i, 1 + j) the output for content i and style j.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import re
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from adain_jax import architectures, gatys, images, losses, outputs, transfer, weights
from adain_jax.cli import Parser, run_main, setup_logging, whole_number
from adain_jax.configs import TEMPORAL_MODES
from adain_jax.models import CONTENT_LAYER, STYLE_LAYERS

log = logging.getLogger(__name__)

PROG = "python -m adain_jax.evaluate"
NUM_CONTENTS, NUM_STYLES, SIZE = 50, 10, 512  # the paper's protocol
THUMB = 128
SHEET_GAP = 4
MIN_SIZE = 32  # DenseNet's stride-16 map needs 2 x 2 positions for a std
CSV_COLUMNS = ("method", "content", "style", "content_loss", "style_loss", "seconds")
VIDEO_COLUMNS = ("temporal", "frames", "warping_error_1", "warping_error_5", "content_loss",
                 "style_loss", "seconds_per_frame")
WARM_UP_FRAMES = 2
ADAIN_ARCHS = {"adain-vgg": "vgg19", "adain-densenet": "densenet121"}
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # safe in a file name (sheet_LABEL.png)


class UsageError(ValueError):
    """Bad arguments or input files; str() is one line."""


class Row(NamedTuple):
    method: str
    content: str
    style: str
    content_loss: float
    style_loss: float
    seconds: float


@dataclasses.dataclass(frozen=True)
class Method:
    """A way to stylise: `run(content, style)` on (1, H, W, 3) device arrays -> output."""

    label: str
    run: Callable[[jax.Array, jax.Array], jax.Array]
    warm_up: Callable[[jax.Array, jax.Array], jax.Array]


# ---- Methods -----------------------------------------------------------------------------

@jax.jit
def _adain(params, content, style):
    return jnp.clip(transfer.apply(params, content, style), 0.0, 1.0)


def adain_method(label: str, params) -> Method:
    params = jax.device_put(params)  # once: the timed runs start with the inputs on the device
    run = lambda content, style: _adain(params, content, style)
    return Method(label, run, run)


def gatys_method(label: str, vgg_params, *, style_loss: str, steps: int,
                 optimizer: str) -> Method:
    def run(content, style, steps=steps):
        return gatys.gatys(vgg_params, content, style, steps=steps, optimizer=optimizer,
                           style_loss=style_loss)
    # One step compiles everything the timed run uses (every step is the same function).
    return Method(label, run, lambda content, style: run(content, style, steps=1))


def split_label(arg: str) -> tuple[str | None, str]:
    """(label, file) from a method's WEIGHTS, `NAME=FILE` or `FILE` (label None).

    An existing file whose name holds "=" stays a file; so does a path with "/" before it.
    """
    name, eq, rest = arg.partition("=")
    if not eq or Path(arg).is_file() or "/" in name:
        return None, arg
    if not LABEL.fullmatch(name):
        raise UsageError(f"{arg}: a label holds letters, digits, '.', '_' and '-' and "
                         "starts with a letter or digit")
    if not rest:
        raise UsageError(f"{arg}: give the weights file after {name}=")
    return name, rest


def parse_methods(specs, vgg_path: Path, vgg_params, *, gatys_steps: int,
                  gatys_optimizer: str) -> list[Method]:
    """Methods from `adain-vgg[:[NAME=]W]`, `adain-densenet:[NAME=]W`, `gatys[:meanstd|gram]`
    specs; NAME labels the method instead of the kind and the file name."""
    parsed = []  # (label, kind, weights path or Gatys loss): every label known before loading
    for spec in specs:
        kind, _, arg = spec.partition(":")
        if kind in ADAIN_ARCHS:
            if not arg and kind == "adain-densenet":
                raise UsageError(f"--methods {spec}: give the trained weights, "
                                 "adain-densenet:FILE or adain-densenet:NAME=FILE")
            label, file = split_label(arg)
            path = Path(file) if file else vgg_path
            parsed.append((label or (f"{kind}_{path.stem}" if file else kind), kind, path))
        elif kind == "gatys":
            loss = arg or "meanstd"
            if loss not in gatys.STYLE_LOSSES:
                raise UsageError(f"--methods {spec}: the Gatys style loss is one of "
                                 f"{', '.join(gatys.STYLE_LOSSES)}")
            parsed.append((f"gatys-{loss}", kind, loss))
        else:
            raise UsageError(f"--methods {spec}: unknown method; use adain-vgg[:FILE], "
                             "adain-densenet:FILE or gatys[:meanstd|gram]")
    labels = [label for label, _, _ in parsed]
    for label in labels:
        if labels.count(label) > 1:
            raise UsageError(f"--methods: two methods are labelled {label}; name them apart "
                             "with KIND:NAME=FILE, e.g. adain-vgg:run1=runs/1/adain.safetensors")
    methods = []
    for label, kind, arg in parsed:
        if kind == "gatys":
            methods.append(gatys_method(label, vgg_params, style_loss=arg, steps=gatys_steps,
                                        optimizer=gatys_optimizer))
            continue
        params = weights.load_params(arg)
        found = architectures.detect(params).name
        if found != ADAIN_ARCHS[kind]:
            raise UsageError(f"{arg}: holds a {found} encoder, {kind} needs {ADAIN_ARCHS[kind]}")
        methods.append(adain_method(label, params))
    return methods


# ---- Measuring ---------------------------------------------------------------------------

@jax.jit
def measure(vgg_params, output, content, style):
    """(content loss, style loss) of `output` as in Fig. 3 (module docstring), with VGG-19."""
    params = {"encoder": vgg_params}
    out_feats = transfer.encode(params, output, taps=STYLE_LAYERS)
    content_loss = losses.mse(out_feats[CONTENT_LAYER], transfer.encode(params, content,
                                                                        taps=CONTENT_LAYER))
    style_feats = transfer.encode(params, style, taps=STYLE_LAYERS)
    return content_loss, losses.style_loss(out_feats, style_feats)


def thumbnail(rgb, side: int) -> np.ndarray:
    rgb = np.asarray(rgb, np.float32)
    return rgb if rgb.shape[:2] == (side, side) else images.resize(rgb, side, side)


def evaluate(methods, contents: dict, styles: dict, vgg_params, *, thumb: int = THUMB,
             progress: bool = False):
    """Run every method on every content x style pair (square (S, S, 3) arrays in [0, 1]).

    Returns (rows, sheets): a Row per method x content x style, and per method label its
    contact sheet as an (H, W, 3) uint8 array (layout in the module docstring).
    """
    from tqdm.auto import tqdm

    names_c, names_s = list(contents), list(styles)
    dev_c = {k: jnp.asarray(v)[None] for k, v in contents.items()}
    dev_s = {k: jnp.asarray(v)[None] for k, v in styles.items()}
    thumbs_c = [thumbnail(contents[k], thumb) for k in names_c]
    thumbs_s = [thumbnail(styles[k], thumb) for k in names_s]
    rows, sheets = [], {}
    bar = tqdm(total=len(methods) * len(names_c) * len(names_s), unit="image",
               disable=not progress, dynamic_ncols=True)
    try:
        for method in methods:
            bar.set_description(method.label)
            jax.block_until_ready(method.warm_up(dev_c[names_c[0]], dev_s[names_s[0]]))
            outputs = []
            for c in names_c:
                outputs.append([])
                for s in names_s:
                    start = time.perf_counter()
                    out = jax.block_until_ready(method.run(dev_c[c], dev_s[s]))
                    seconds = time.perf_counter() - start
                    loss_c, loss_s = measure(vgg_params, out, dev_c[c], dev_s[s])
                    rows.append(Row(method.label, c, s, float(loss_c), float(loss_s), seconds))
                    outputs[-1].append(thumbnail(out[0], thumb))
                    bar.update()
            sheets[method.label] = contact_sheet(thumbs_c, thumbs_s, outputs)
    finally:
        bar.close()
    return rows, sheets


def evaluate_video(params, clip: Path, style: Path, modes, *, size: int = SIZE,
                   progress: bool = False) -> list[dict]:
    """One row (VIDEO_COLUMNS) per temporal mode for `clip` stylised with `style` by
    `params` (AdaIN weights with a VGG-19 encoder, which also measures the losses)."""
    from adain_jax import stylize_files, temporal, video
    from adain_jax.configs import Settings

    with video.VideoReader(clip) as reader:
        frames = list(reader)
    # What every mode stylises and is measured against: the same for all modes.
    settings = Settings(content_size=size, style_size=size)
    contents = [stylize_files._prepare_frame(f, settings, even=False) for f in frames]
    style_image = jnp.asarray(stylize_files._Styles(params, settings).image(style))[None]
    job = stylize_files.Job(clip, (style,), clip.with_suffix(".unused.mkv"))
    rows = []
    for mode in modes:
        settings = Settings(content_size=size, style_size=size, temporal=mode)
        styles = stylize_files._Styles(params, settings, {style: 2})
        warm_up = frames[:WARM_UP_FRAMES]  # compiles every program the mode runs
        list(stylize_files.video_outputs(params, job, warm_up, settings, styles))
        start = time.perf_counter()
        outs = list(stylize_files.video_outputs(params, job, frames, settings, styles,
                                                progress=progress))
        seconds = (time.perf_counter() - start) / len(outs)
        losses_ = [measure(params["encoder"], jnp.asarray(o)[None], jnp.asarray(c)[None],
                           style_image) for c, o in zip(contents, outs)]
        content_loss, style_loss = (float(np.mean(x)) for x in zip(*losses_))
        rows.append(dict(zip(VIDEO_COLUMNS, (
            mode, len(outs), temporal.warping_error(contents, outs, 1),
            temporal.warping_error(contents, outs, 5), content_loss, style_loss, seconds))))
        log.info("%s: warping error %.5f (interval 1), %.3f s per frame", mode,
                 rows[-1]["warping_error_1"], seconds)
    return rows


def format_video_table(rows) -> str:
    head = f"{'temporal':<11} {'frames':>6} {'warp@1':>9} {'warp@5':>9} {'content':>9} " \
           f"{'style':>9} {'s/frame':>8}"
    lines = [head] + [f"{r['temporal']:<11} {r['frames']:>6} {r['warping_error_1']:>9.5f} "
                      f"{r['warping_error_5']:>9.5f} {r['content_loss']:>9.4f} "
                      f"{r['style_loss']:>9.4f} {r['seconds_per_frame']:>8.3f}" for r in rows]
    return "\n".join(lines)


# ---- Reporting ---------------------------------------------------------------------------

def sheet_shape(num_contents: int, num_styles: int, thumb: int, gap: int = SHEET_GAP):
    """(height, width) of a contact sheet."""
    rows, cols = num_contents + 1, num_styles + 1
    return rows * thumb + (rows + 1) * gap, cols * thumb + (cols + 1) * gap


def cell_origin(row: int, col: int, thumb: int, gap: int = SHEET_GAP) -> tuple[int, int]:
    """Top-left pixel of grid cell (row, col); row 0 holds the styles, column 0 the contents."""
    return gap + row * (thumb + gap), gap + col * (thumb + gap)


def contact_sheet(content_thumbs, style_thumbs, output_thumbs, gap: int = SHEET_GAP):
    """uint8 (H, W, 3) grid: styles on top, contents on the left, output_thumbs[i][j] inside."""
    thumb = content_thumbs[0].shape[0]
    sheet = np.full((*sheet_shape(len(content_thumbs), len(style_thumbs), thumb, gap), 3),
                    255, np.uint8)

    def put(row, col, rgb):
        top, left = cell_origin(row, col, thumb, gap)
        sheet[top : top + thumb, left : left + thumb] = images.to_uint8(rgb)

    for j, rgb in enumerate(style_thumbs):
        put(0, 1 + j, rgb)
    for i, rgb in enumerate(content_thumbs):
        put(1 + i, 0, rgb)
        for j, out in enumerate(output_thumbs[i]):
            put(1 + i, 1 + j, out)
    return sheet


def summarize(rows) -> dict:
    """{method: {"n", metric: (mean, std)}}, std the sample standard deviation (0 for n = 1)."""
    summary = {}
    for method in dict.fromkeys(r.method for r in rows):
        mine = [r for r in rows if r.method == method]
        entry = {"n": len(mine)}
        for metric in ("content_loss", "style_loss", "seconds"):
            values = np.array([getattr(r, metric) for r in mine], np.float64)
            entry[metric] = (float(values.mean()),
                             float(values.std(ddof=1)) if len(values) > 1 else 0.0)
        summary[method] = entry
    return summary


def format_table(summary: dict) -> str:
    header = ("method", "n", "content loss", "style loss", "seconds/image")
    lines = [header]
    for method, entry in summary.items():
        cells = [f"{entry[m][0]:.4g} +- {entry[m][1]:.2g}"
                 for m in ("content_loss", "style_loss", "seconds")]
        lines.append((method, str(entry["n"]), *cells))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) if i != 1 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(line, widths))).rstrip()
                     for line in lines)


def write_csv(rows, path) -> Path:
    path = Path(path)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for r in rows:
            writer.writerow([r.method, r.content, r.style, repr(r.content_loss),
                             repr(r.style_loss), repr(r.seconds)])
    return path


# ---- Command line ------------------------------------------------------------------------

def load_folder(folder, count: int, size: int, what: str) -> dict:
    """The first `count` images of `folder` (name order), as size x size centre squares."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder}: not a folder (--{what})")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and images.is_image_path(p))
    if not paths:
        raise UsageError(f"{folder}: no image files (--{what})")
    if len(paths) < count:
        log.info("%s: %d images, fewer than %d; using all", folder, len(paths), count)
    loaded = {}
    for path in paths[:count]:
        rgb, _ = images.resize_shorter(images.load_image(path).rgb, size)
        rgb, _ = images.center_crop_square(rgb)
        loaded[path.name] = np.ascontiguousarray(rgb, np.float32)
    return loaded


def parse_args(argv=None) -> argparse.Namespace:
    from adain_jax.download import default_weights_path

    parser = Parser(prog=PROG, description=__doc__)
    parser.add_argument("--content", metavar="DIR", help="content images folder")
    parser.add_argument("--style", required=True, metavar="DIR",
                        help="style images folder (a style image with --video)")
    parser.add_argument("--video", metavar="CLIP",
                        help="measure temporal consistency on this video instead (see above)")
    parser.add_argument("--temporal", nargs="+", choices=TEMPORAL_MODES,
                        default=list(TEMPORAL_MODES), metavar="MODE",
                        help="--video: the stylize.py --temporal modes to measure, of "
                             f"{', '.join(TEMPORAL_MODES)} (default: all)")
    parser.add_argument("--methods", nargs="+", default=["adain-vgg"], metavar="METHOD",
                        help="adain-vgg[:FILE], adain-densenet:FILE, gatys[:meanstd|gram]; "
                             "FILE may be NAME=FILE to label the method NAME "
                             "(default: adain-vgg)")
    parser.add_argument("--vgg", metavar="FILE",
                        help="weights with the VGG-19 encoder that measures the losses and "
                             "that Gatys et al. optimise with; adain-vgg's weights unless "
                             f"given (default: {default_weights_path()})")
    parser.add_argument("--num-contents", type=whole_number(1), default=NUM_CONTENTS, metavar="N",
                        help="first N content images by name (default: %(default)s)")
    parser.add_argument("--num-styles", type=whole_number(1), default=NUM_STYLES, metavar="N",
                        help="first N style images by name (default: %(default)s)")
    parser.add_argument("--size", type=int, default=SIZE, metavar="PX",
                        help="resize the shorter side to PX and crop the centre square, for "
                             f"every image (>= {MIN_SIZE}; default: %(default)s)")
    parser.add_argument("--gatys-steps", type=whole_number(1), default=gatys.STEPS, metavar="N",
                        help="optimisation steps of gatys (default: %(default)s)")
    parser.add_argument("--gatys-optimizer", choices=gatys.OPTIMIZERS, default="lbfgs",
                        help="(default: %(default)s)")
    parser.add_argument("--thumb", type=whole_number(1), default=THUMB, metavar="PX",
                        help="contact sheet cell side (default: %(default)s)")
    parser.add_argument("--out", default="evaluation", metavar="DIR",
                        help="folder for results.csv and sheet_<label>.png "
                             "(default: %(default)s)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if (args.content is None) == (args.video is None):
        parser.error("give --content DIR (images) or --video CLIP, one of them")
    if args.video is not None:
        if args.size < MIN_SIZE and args.size != 0:
            parser.error(f"--size must be 0 or at least {MIN_SIZE}, got {args.size}")
        return args
    if args.size < MIN_SIZE:
        parser.error(f"--size must be at least {MIN_SIZE}, got {args.size}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(args.quiet)
    from adain_jax.download import default_weights_path

    try:
        out = Path(args.out)
        problem = outputs.folder_problem(out)  # before the slow part, not after it
        if problem:
            raise UsageError(f"{out}: {problem} (--out)")
        vgg_path = Path(args.vgg) if args.vgg else default_weights_path()
        if not vgg_path.is_file():
            raise UsageError(f"{vgg_path}: no weights file; create it with `python "
                             "convert_weights.py --download`, or pass --vgg FILE")
        vgg_params = weights.load_params(vgg_path, require_decoder=False)
        if architectures.detect(vgg_params).name != "vgg19":
            raise UsageError(f"{vgg_path}: --vgg needs a VGG-19 encoder")
        vgg_params = jax.device_put(vgg_params)  # not copied again for every image
        if args.video is not None:
            return _main_video(args, vgg_path, out)
        methods = parse_methods(args.methods, vgg_path, vgg_params,
                                gatys_steps=args.gatys_steps,
                                gatys_optimizer=args.gatys_optimizer)
        contents = load_folder(args.content, args.num_contents, args.size, "content")
        styles = load_folder(args.style, args.num_styles, args.size, "style")
    except (UsageError, weights.WeightsError, images.ImageError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1

    rows, sheets = evaluate(methods, contents, styles, vgg_params["encoder"],
                            thumb=args.thumb, progress=not args.quiet)
    print(format_table(summarize(rows)))
    csv_path = out / "results.csv"
    try:  # the folder was writable at the start; a full disk, or a folder in the way
        out.mkdir(parents=True, exist_ok=True)
        log.info("wrote %s", write_csv(rows, csv_path))
        for label, sheet in sheets.items():
            log.info("wrote %s", images.save_image(out / f"sheet_{label}.png", sheet / 255.0))
    except OSError as err:
        print(f"{PROG}: error: {csv_path}: cannot write ({outputs.reason(err)})",
              file=sys.stderr)
        return 1
    except images.ImageError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    return 0


def _main_video(args, weights_path: Path, out: Path) -> int:
    from adain_jax import video

    params = jax.device_put(weights.load_params(weights_path))
    if architectures.detect(params).name != "vgg19":
        raise UsageError(f"{weights_path}: --video needs VGG-19 AdaIN weights")
    clip, style = Path(args.video), Path(args.style)
    if not style.is_file():
        raise UsageError(f"{style}: --style must be an image file with --video")
    images.load_image(style)  # a bad style file: one line, before any work
    try:
        rows = evaluate_video(params, clip, style, args.temporal, size=args.size,
                              progress=not args.quiet)
    except video.VideoError as err:
        raise UsageError(str(err)) from None
    print(format_video_table(rows))
    path = out / "video_results.csv"
    try:
        out.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=VIDEO_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    except OSError as err:
        raise UsageError(f"{path}: cannot write ({outputs.reason(err)})") from None
    log.info("wrote %s", path)
    return 0


def run() -> None:
    """The `adain-evaluate` console script."""
    global PROG
    PROG = "adain-evaluate"
    sys.exit(run_main(main, PROG))


if __name__ == "__main__":
    sys.exit(run_main(main, PROG))
