"""The paper's quantitative comparison (Sec. 7.1, Fig. 3) as functions: content and style
losses of each method's outputs, time per image, contact sheets, and the temporal measures
of video. The command `python -m adain_jax.evaluate` (adain_jax/cli/evaluate.py) runs them;
its --help states the protocol.
"""
from __future__ import annotations

import csv
import dataclasses
import logging
import re
import time
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from adain_jax import architectures, gatys, images, losses, transfer, weights
from adain_jax.configs import EVAL_SIZE as SIZE, EVAL_THUMB as THUMB
from adain_jax.models import CONTENT_LAYER, STYLE_LAYERS

log = logging.getLogger(__name__)

SHEET_GAP = 4
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
