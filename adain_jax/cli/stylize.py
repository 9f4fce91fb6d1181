"""Stylise images with AdaIN: content x style files or folders, written as PNG files.

The command line behind `stylize.py` at the top of a checkout and the `adain-stylize` console
script; the examples are in stylize.py's docstring and in --help.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from adain_jax.cli import (Parser, add_common_flags, run_main, setup_logging,
                           start_compile_cache, whole_number, work_starts)
from adain_jax.configs import (DEFAULT_OUTPUT, DEFAULT_SIZE, DEFAULT_VIDEO_BATCH,
                               DEFAULT_VIDEO_EXT, GATYS_OPTIMIZERS, GATYS_STYLE_LOSSES,
                               DTYPE_CHOICES, DTYPES, METHODS, STATS_FRAMES, TEMPORAL_MODES,
                               TEMPORAL_WEIGHT, Settings)
from adain_jax.download import default_weights_path

PROG = "stylize.py"
EPILOG = """\
folders:
  A content or style folder is searched with its subfolders (as train.py does) for
  .jpg .jpeg .png .webp .bmp .ppm .tif .tiff .gif files, and content videos; names
  starting with "." are ignored, and every other file is listed as skipped. An --output
  folder inside an input folder is not searched. An animated GIF, WebP or PNG content is
  stylised frame by frame into an animation of its own format (whatever --ext says),
  with the same frame durations and loop count; as a style or a mask, its first frame.

outputs:
  One output per content x style, named {content}_stylized_{style}.{ext} in the --output
  folder; a content from a subfolder goes to the same subfolder there, and a style from
  one is named by its path (impressionism/monet.jpg: ..._stylized_impressionism-monet).
  Several style files give one output per content: their interpolation (Eq. 15 of the
  paper; equal weights unless --style-weights) or, with --mask, a spatial combination,
  named after all its styles, then the weights if unequal, or the masks:
  photo_stylized_waves_stripes.png, photo_stylized_waves_stripes_w3-1.png (--style-weights
  3 1), photo_stylized_waves_stripes_mask-fg-bg.png (--mask fg.png bg.png). A content
  image's alpha channel is carried over to PNG and WebP outputs. Every output folder is
  tried before anything is stylised.

videos:
  A content video (.mp4 .mov .m4v .mkv .avi .webm, also inside a content folder) is
  stylised frame by frame, the style encoded once, into {content}_stylized_{style}.mp4
  at the same frame rate (--video-ext mkv: lossless FFV1), with the first audio stream
  copied unchanged where the container can hold it (any in .mkv; AAC, MP3, Opus, FLAC,
  ALAC, AC-3 in .mp4). Frames are written to NAME.partial.PID.EXT first (PID: the
  process id) and renamed when done; after a failure or Ctrl-C that file holds the
  frames done. Ctrl-C stops a video after the frames being stylised (press it again to
  stop at once). While a video is written its lock file .NAME.EXT.lock is held, and a
  second run writing the same video at the same time fails for that output.
  Needs PyAV: pip install 'adain-jax[video]'.

video flicker (--temporal):
  Per-frame AdaIN normalises each frame by its own content statistics, so a bright
  object entering, a change of light or a pan makes the whole frame's colours and
  texture jump. stats takes the content statistics over the whole video instead (a first
  pass over %(stats_frames)d evenly spaced frames), or as a running average with
  --stats-momentum M (s = M s_before + (1 - M) s_frame; one pass, for long videos).
  flow blends each output with the previous output carried along the optical flow of
  the content (OpenCV's DIS), by --temporal-weight, except where the flow does not hold
  both ways (pixels just uncovered, or occluded), which come from the frame alone.
  stats+flow does both. Flow needs OpenCV: pip install 'adain-jax[video]'. The warping
  error they reduce is measured by python -m adain_jax.evaluate --video CLIP.

methods:
  adain (default) runs the encoder, AdaIN and the trained decoder once per output.
  gatys optimises each output image itself (Gatys et al. 2016) with the same encoder,
  starting from the content: --steps, --optimizer and --style-loss apply to it only. It
  needs no decoder (an encoder-only weights file will do) and takes one style image per
  output, so --alpha, --style-weights, --mask, --preserve-color and several style files
  do not work with it.

exit status: 0 when every output was written; 1 on a usage error, a missing weights
file, an output folder that cannot be written (found before any work), or when any
output failed (each failure is listed at the end, one line per file);
130 when interrupted (Ctrl-C).
""".replace("%(stats_frames)d", str(STATS_FRAMES))


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = Parser(prog=PROG, epilog=EPILOG,
                    description="Arbitrary style transfer with AdaIN (Huang & Belongie, 2017).")
    parser.add_argument("--content", required=True, metavar="PATH",
                        help="content image or video file, or a folder of them")
    parser.add_argument("--style", required=True, nargs="+", metavar="PATH",
                        help="style image file(s), or one folder of them; several files are "
                             "combined into one output")
    parser.add_argument("--style-weights", nargs="+", type=float, metavar="W",
                        help="interpolation weights, one per style file (normalised to sum "
                             "1; default: equal)")
    parser.add_argument("--alpha", type=_alpha, default=1.0,
                        help="content-style trade-off in [0, 1], 1 = full style "
                             "(default: %(default)s)")
    parser.add_argument("--mask", nargs="+", metavar="MASK",
                        help="spatial control: one grayscale mask image per style file, "
                             "white = that style (resized to the content, soft values "
                             "allowed; default: none)")
    parser.add_argument("--preserve-color", nargs="?", const="coral",
                        choices=("coral", "luminance"), default=None,
                        help="keep the content's colours: 'coral' (the default when the "
                             "flag is given alone) matches the style image's colour "
                             "statistics to the content's, as the reference; 'luminance' "
                             "stylises luminance only (default: off)")
    parser.add_argument("--content-size", type=whole_number(0, "pixels"), default=DEFAULT_SIZE,
                        metavar="N",
                        help="resize the content's shorter side to N px, 0 keeps its size "
                             "(default: %(default)s)")
    parser.add_argument("--style-size", type=whole_number(0, "pixels"), default=DEFAULT_SIZE,
                        metavar="N",
                        help="resize the style's shorter side to N px, 0 keeps its size "
                             "(default: %(default)s)")
    parser.add_argument("--crop", action="store_true",
                        help="take the central square of content and style after resizing "
                             "(default: off)")
    parser.add_argument("--method", choices=METHODS, default="adain",
                        help="adain: one pass through the trained decoder; gatys: optimise "
                             "the image (slow, no decoder; see below) (default: %(default)s)")
    # None when not given, so that giving them with --method adain can be refused
    parser.add_argument("--steps", type=whole_number(1, "steps"), metavar="N",
                        help=f"gatys: optimisation steps (default: {Settings.steps})")
    parser.add_argument("--optimizer", choices=GATYS_OPTIMIZERS,
                        help=f"gatys: the optimiser (default: {Settings.optimizer})")
    parser.add_argument("--style-loss", choices=GATYS_STYLE_LOSSES,
                        help="gatys: Gram matrices as Gatys et al., or the AdaIN paper's "
                             f"mean/std loss (Eq. 13) (default: {Settings.style_loss})")
    parser.add_argument("--weights", metavar="FILE",
                        help=f"adain-jax weights file (default: {default_weights_path()}, "
                             "written by `python convert_weights.py --download`)")
    parser.add_argument("--output", metavar="PATH",
                        help="output folder, created if needed, or, for a single output, "
                             "a file name with an image extension (a video one for a content "
                             "video); any other extension is refused, so end a folder name "
                             f"that has a dot with / (out.v2/) (default: {DEFAULT_OUTPUT}/)")
    # None when not given, so that one disagreeing with an --output file can be refused
    parser.add_argument("--ext", choices=("png", "jpg", "jpeg", "webp", "bmp"),
                        help="format of the images written to an output folder; an "
                             "animated GIF, WebP or PNG content is written as an animation "
                             "in its own format whatever this says (default: png)")
    parser.add_argument("--video-ext", choices=("mp4", "mkv"),
                        help="format of videos written to an output folder: mp4 (H.264) or "
                             f"mkv (lossless FFV1) (default: {DEFAULT_VIDEO_EXT})")
    parser.add_argument("--video-batch", type=whole_number(1, "frames"),
                        default=DEFAULT_VIDEO_BATCH, metavar="N",
                        help="video frames stylised per call; more can be faster on a GPU "
                             "(default: %(default)s)")
    parser.add_argument("--temporal", choices=TEMPORAL_MODES, default="none",
                        help="temporal consistency of content videos: none (frame by frame), "
                             "stats, flow or stats+flow; see 'video flicker' below "
                             "(default: %(default)s)")
    parser.add_argument("--temporal-weight", type=float, default=TEMPORAL_WEIGHT, metavar="W",
                        help="flow: the previous output's share in each blended pixel, in "
                             "[0, 1) (default: %(default)s)")
    parser.add_argument("--stats-momentum", type=float, metavar="M",
                        help="stats: a running average of the content statistics with this "
                             "momentum in [0, 1), instead of a first pass (default: first pass)")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default="float32",
                        help="compute dtype of the convolutions: bf16 is faster on GPUs and "
                             "TPUs (AdaIN's statistics stay float32; outputs differ from "
                             "float32 by about 1/255 on average), not on CPUs "
                             "(default: %(default)s)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bar or log lines, only errors (default: off)")
    add_common_flags(parser)
    args = parser.parse_args(argv)
    gatys_only = [f"--{name.replace('_', '-')}" for name in ("steps", "optimizer", "style_loss")
                  if getattr(args, name) is not None]
    if gatys_only and args.method != "gatys":
        parser.error(f"{gatys_only[0]} applies to --method gatys only")
    if args.method == "gatys" and args.dtype != "float32":
        parser.error("--dtype applies to --method adain only")
    for name in ("steps", "optimizer", "style_loss"):
        if getattr(args, name) is None:
            setattr(args, name, getattr(Settings, name))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(args.quiet, args.verbose)
    from tqdm.contrib.logging import logging_redirect_tqdm

    from adain_jax import stylize_files
    from adain_jax.weights import WeightsError, load_params

    def error(message: str) -> int:
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1

    settings = stylize_files.Settings(
        alpha=args.alpha,
        style_weights=None if args.style_weights is None else tuple(args.style_weights),
        masks=None if args.mask is None else tuple(Path(m) for m in args.mask),
        preserve_color=args.preserve_color, content_size=args.content_size,
        style_size=args.style_size, crop=args.crop, method=args.method, steps=args.steps,
        optimizer=args.optimizer, style_loss=args.style_loss, video_batch=args.video_batch,
        dtype=DTYPES[args.dtype], temporal=args.temporal,
        temporal_weight=args.temporal_weight, stats_momentum=args.stats_momentum)
    try:
        jobs = stylize_files.plan_jobs(args.content, args.style, output=args.output,
                                       ext=args.ext, video_ext=args.video_ext,
                                       settings=settings)
    except stylize_files.UsageError as err:
        return error(f"{err} (see --help)")
    try:
        stylize_files.check_outputs(jobs)  # before loading weights or stylising anything
    except stylize_files.OutputError as err:
        return error(str(err))

    weights = Path(args.weights) if args.weights else default_weights_path()
    if not weights.is_file():
        gatys_hint = (" (gatys needs only an encoder: `python convert_weights.py --torchvision "
                      "--encoder-only` writes one)" if args.method == "gatys" else "")
        return error(f"{weights}: no weights file; create it with `python convert_weights.py "
                     f"--download`, or pass --weights FILE{gatys_hint}")
    cache = start_compile_cache(args)
    try:
        # Gatys et al. optimise the image through the encoder alone: no decoder needed.
        params = load_params(weights, require_decoder=args.method == "adain")
    except WeightsError as err:
        return error(str(err))

    work_starts()  # Ctrl-C from here keeps the finished outputs and a video's frames
    try:
        with logging_redirect_tqdm():
            failures = stylize_files.run(params, jobs, settings,
                                         progress=False if args.quiet else None)
    except KeyboardInterrupt as err:
        partial, kept = getattr(err, "partial", None), ""  # a video.Interrupted has one
        if partial:
            frames = "frame" if err.written == 1 else f"{err.written} frames"
            kept = f", and {partial} holds the first {frames} of {err.output.name}"
        print(f"\n{PROG}: interrupted; finished outputs are kept{kept}", file=sys.stderr)
        # Leave without the interpreter's shutdown: a Ctrl-C that landed while XLA compiled
        # leaves the compilation running in a JAX thread, and shutdown would free the
        # runtime under it (a segfault, exit 139). Files are closed by now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    from adain_jax import compile_cache

    compile_cache.log_stats(cache)
    written = len(jobs) - len(failures)
    if written:
        where = (jobs[0].output if len(jobs) == 1
                 else os.path.commonpath([job.output.parent for job in jobs]))
        logging.getLogger("adain_jax.stylize").info("wrote %d of %d outputs: %s",
                                                     written, len(jobs), where)
    if failures:
        print(f"{PROG}: {len(failures)} of {len(jobs)} outputs failed:", file=sys.stderr)
        for failure in failures:
            print(f"  {failure.job.output.name}: {failure.message}", file=sys.stderr)
        return 1
    return 0


def run() -> None:
    """The `adain-stylize` console script."""
    global PROG
    PROG = "adain-stylize"
    sys.exit(run_main(main, PROG))

