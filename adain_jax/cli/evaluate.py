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
import logging
import sys
from pathlib import Path

from adain_jax.cli import Parser, run_main, setup_logging, whole_number
from adain_jax.configs import (EVAL_MIN_SIZE as MIN_SIZE, EVAL_NUM_CONTENTS, EVAL_NUM_STYLES,
                               EVAL_SIZE, EVAL_THUMB, GATYS_OPTIMIZERS, GATYS_STEPS,
                               TEMPORAL_MODES)

log = logging.getLogger(__name__)

PROG = "python -m adain_jax.evaluate"


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
    parser.add_argument("--num-contents", type=whole_number(1), default=EVAL_NUM_CONTENTS,
                        metavar="N", help="first N content images by name (default: %(default)s)")
    parser.add_argument("--num-styles", type=whole_number(1), default=EVAL_NUM_STYLES,
                        metavar="N", help="first N style images by name (default: %(default)s)")
    parser.add_argument("--size", type=int, default=EVAL_SIZE, metavar="PX",
                        help="resize the shorter side to PX and crop the centre square, for "
                             f"every image (>= {MIN_SIZE}; default: %(default)s)")
    parser.add_argument("--gatys-steps", type=whole_number(1), default=GATYS_STEPS, metavar="N",
                        help="optimisation steps of gatys (default: %(default)s)")
    parser.add_argument("--gatys-optimizer", choices=GATYS_OPTIMIZERS, default="lbfgs",
                        help="(default: %(default)s)")
    parser.add_argument("--thumb", type=whole_number(1), default=EVAL_THUMB, metavar="PX",
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
    import jax

    from adain_jax import architectures, images, outputs, weights
    from adain_jax import evaluation as ev
    from adain_jax.download import default_weights_path

    try:
        out = Path(args.out)
        problem = outputs.folder_problem(out)  # before the slow part, not after it
        if problem:
            raise ev.UsageError(f"{out}: {problem} (--out)")
        vgg_path = Path(args.vgg) if args.vgg else default_weights_path()
        if not vgg_path.is_file():
            raise ev.UsageError(f"{vgg_path}: no weights file; create it with `python "
                                "convert_weights.py --download`, or pass --vgg FILE")
        vgg_params = weights.load_params(vgg_path, require_decoder=False)
        if architectures.detect(vgg_params).name != "vgg19":
            raise ev.UsageError(f"{vgg_path}: --vgg needs a VGG-19 encoder")
        vgg_params = jax.device_put(vgg_params)  # not copied again for every image
        if args.video is not None:
            return _main_video(args, vgg_path, out)
        methods = ev.parse_methods(args.methods, vgg_path, vgg_params,
                                   gatys_steps=args.gatys_steps,
                                   gatys_optimizer=args.gatys_optimizer)
        contents = ev.load_folder(args.content, args.num_contents, args.size, "content")
        styles = ev.load_folder(args.style, args.num_styles, args.size, "style")
    except (ev.UsageError, weights.WeightsError, images.ImageError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1

    rows, sheets = ev.evaluate(methods, contents, styles, vgg_params["encoder"],
                               thumb=args.thumb, progress=not args.quiet)
    print(ev.format_table(ev.summarize(rows)))
    csv_path = out / "results.csv"
    try:  # the folder was writable at the start; a full disk, or a folder in the way
        out.mkdir(parents=True, exist_ok=True)
        log.info("wrote %s", ev.write_csv(rows, csv_path))
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
    import jax

    from adain_jax import architectures, images, outputs, video, weights
    from adain_jax import evaluation as ev

    params = jax.device_put(weights.load_params(weights_path))
    if architectures.detect(params).name != "vgg19":
        raise ev.UsageError(f"{weights_path}: --video needs VGG-19 AdaIN weights")
    clip, style = Path(args.video), Path(args.style)
    if not style.is_file():
        raise ev.UsageError(f"{style}: --style must be an image file with --video")
    images.load_image(style)  # a bad style file: one line, before any work
    try:
        rows = ev.evaluate_video(params, clip, style, args.temporal, size=args.size,
                                 progress=not args.quiet)
    except video.VideoError as err:
        raise ev.UsageError(str(err)) from None
    print(ev.format_video_table(rows))
    path = out / "video_results.csv"
    try:
        out.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=ev.VIDEO_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    except OSError as err:
        raise ev.UsageError(f"{path}: cannot write ({outputs.reason(err)})") from None
    log.info("wrote %s", path)
    return 0


def run() -> None:
    """The `adain-evaluate` console script."""
    global PROG
    PROG = "adain-evaluate"
    sys.exit(run_main(main, PROG))


if __name__ == "__main__":
    sys.exit(run_main(main, PROG))
