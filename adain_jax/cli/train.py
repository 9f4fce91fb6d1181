"""Train the AdaIN decoder on content (COCO) and style images; resumes by itself.

The command line behind `train.py` at the top of a checkout and the `adain-train` console
script; the examples are in train.py's docstring and in --help.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

from adain_jax.cli import (Parser, add_common_flags, run_main, setup_logging,
                           start_compile_cache, work_starts)
from adain_jax.configs import DTYPE_CHOICES, DTYPES, RESIZE_MODES, DataConfig, TrainConfig

PROG = "train.py"
EPILOG = """\
outputs in --workdir:
  checkpoints/        Orbax checkpoints (the last --keep), resumed automatically
  tensorboard/        losses, lr, images/s, and content | style | output samples
  adain.safetensors   encoder + trained decoder, for stylize.py --weights; written every
                      --export-every steps, at the end, on SIGTERM/Ctrl-C, and on a rerun
                      of a finished run

losses are logged unweighted: loss = content_weight * loss_c + style_weight * loss_s.
exit status: 0 when training finished or stopped by a signal after saving; 1 on a usage or
data error, when --workdir or a file in it cannot be written (checked before training
starts), or when the loss became NaN/inf (the last good checkpoint is kept).
"""


def _env_int(name: str):
    value = os.environ.get(name)
    return int(value) if value and value.isdigit() else None


def parse_args(argv=None) -> argparse.Namespace:
    train, data = TrainConfig(), DataConfig()
    parser = Parser(prog=PROG, epilog=EPILOG,
                    description="Train the AdaIN decoder (Huang & Belongie, 2017).")
    parser.add_argument("--workdir", required=True, metavar="DIR",
                        help="run directory: checkpoints, TensorBoard events, the exported "
                             "model; an existing run there is resumed")
    parser.add_argument("--encoder", choices=("vgg19", "densenet121"),
                        help="encoder architecture, checked against --encoder-weights; "
                             "densenet121 defaults to the file `convert_weights.py "
                             "--torchvision-densenet` writes (default: whatever the "
                             "weights file holds, VGG-19 for the default file)")
    parser.add_argument("--encoder-weights", metavar="FILE",
                        help="adain-jax safetensors with the VGG encoder, from "
                             "convert_weights.py (a decoder in it is ignored; default: the "
                             "file `convert_weights.py --download` writes)")

    g = parser.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, default=train.steps, metavar="N",
                   help="total training steps (default: %(default)s)")
    g.add_argument("--batch-size", type=int, default=train.batch_size, metavar="N",
                   help="GLOBAL batch over all devices and hosts; must divide evenly over "
                        "the devices (default: %(default)s)")
    g.add_argument("--lr", type=float, default=train.lr, metavar="LR",
                   help="Adam learning rate at step 0 (default: %(default)s)")
    g.add_argument("--lr-decay", type=float, default=train.lr_decay, metavar="D",
                   help="step i uses lr / (1 + lr_decay * i) (default: %(default)s)")
    g.add_argument("--content-weight", type=float, default=train.content_weight, metavar="W",
                   help="weight of the content loss L_c (default: %(default)s)")
    g.add_argument("--style-weight", type=float, default=train.style_weight, metavar="W",
                   help="weight of the style loss L_s, lambda in Eq. 11 (default: %(default)s)")

    g = parser.add_argument_group("data")
    g.add_argument("--dtype", choices=DTYPE_CHOICES, default="float32",
                   help="compute dtype of the convolutions: bf16 for GPUs and TPUs (mixed "
                        "precision: parameters, gradients, Adam and the losses stay "
                        "float32) (default: %(default)s)")
    g.add_argument("--tfds", metavar="NAME[:SPLIT]", default=data.tfds,
                   help="TFDS content dataset, e.g. coco/2017 (split train unless given)")
    g.add_argument("--data-dir", metavar="DIR", default=data.data_dir,
                   help="TFDS data directory (default: TFDS's own)")
    g.add_argument("--content-dir", metavar="DIR", default=data.content_dir,
                   help="a folder of content images, instead of --tfds")
    g.add_argument("--styles", metavar="DIR", default=data.styles,
                   help="a folder of style images (e.g. WikiArt). Folders are read as "
                        "stylize.py reads them: subfolders searched, names starting with '.' "
                        "ignored, files without an image extension listed as skipped")
    g.add_argument("--resize", type=int, default=data.resize, metavar="PX",
                   help="resize images to this size before cropping (default: %(default)s)")
    g.add_argument("--crop-size", type=int, default=data.crop_size, metavar="PX",
                   help="random square crop size, a multiple of 8 (default: %(default)s)")
    g.add_argument("--resize-mode", choices=RESIZE_MODES, default=data.resize_mode,
                   help="'shorter': shorter side to --resize, aspect kept (the paper); "
                        "'square': --resize x --resize (the PyTorch port) "
                        "(default: %(default)s)")
    g.add_argument("--seed", type=int, default=data.seed, metavar="N",
                   help="seeds the data order, crops and the decoder init (default: %(default)s)")
    g.add_argument("--workers", type=int, default=data.workers, metavar="N",
                   help="image decoding processes per host; 0 decodes in threads of the "
                        "training process (default: %(default)s)")

    g = parser.add_argument_group("checkpoints and logging")
    g.add_argument("--save-every", type=int, default=train.save_every, metavar="N",
                   help="checkpoint every N steps (default: %(default)s)")
    g.add_argument("--keep", type=int, default=train.max_to_keep, metavar="K",
                   help="checkpoints to keep (default: %(default)s)")
    g.add_argument("--export-every", type=int, default=train.export_every, metavar="N",
                   help="write WORKDIR/adain.safetensors every N steps and at the end "
                        "(default: %(default)s)")
    g.add_argument("--sample-every", type=int, default=train.sample_every, metavar="N",
                   help="TensorBoard image of content | style | output every N steps "
                        "(default: %(default)s)")
    g.add_argument("--log-every", type=int, default=train.log_every, metavar="N",
                   help="TensorBoard scalars every N steps (default: %(default)s)")
    g.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar, warnings and errors only")

    g = parser.add_argument_group("several hosts")
    g.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize; unset values below come from the "
                        "environment (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
                        "JAX_PROCESS_ID, or SLURM / Open MPI detection)")
    g.add_argument("--coordinator-address", metavar="HOST:PORT",
                   help="process 0's address, reachable from every host")
    g.add_argument("--num-processes", type=int, default=_env_int("JAX_NUM_PROCESSES"), metavar="N",
                   help="number of processes (hosts)")
    g.add_argument("--process-id", type=int, default=_env_int("JAX_PROCESS_ID"), metavar="I",
                   help="this process's index, 0 .. num-processes - 1")
    add_common_flags(parser)
    args = parser.parse_args(argv)
    if args.coordinator_address and not args.distributed:
        parser.error("--coordinator-address needs --distributed")
    return args


def make_config(args: argparse.Namespace) -> TrainConfig:
    data = dataclasses.replace(
        DataConfig(), tfds=args.tfds, data_dir=args.data_dir, content_dir=args.content_dir,
        styles=args.styles, resize=args.resize, crop_size=args.crop_size,
        resize_mode=args.resize_mode, seed=args.seed, workers=args.workers)
    encoder_weights = args.encoder_weights
    if encoder_weights is None and args.encoder == "densenet121":
        from adain_jax.convert import densenet_encoder_path
        encoder_weights = str(densenet_encoder_path())
    return TrainConfig(
        encoder=args.encoder, encoder_weights=encoder_weights, steps=args.steps, batch_size=args.batch_size,
        lr=args.lr, lr_decay=args.lr_decay, content_weight=args.content_weight,
        style_weight=args.style_weight, dtype=DTYPES[args.dtype],
        save_every=args.save_every,
        export_every=args.export_every, sample_every=args.sample_every,
        log_every=args.log_every, max_to_keep=args.keep, data=data)


def _drop_reraised_os_errors(record: logging.LogRecord) -> bool:
    """Orbax logs a failed background save with its traceback and raises it again from the
    next save or wait, where it becomes our one-line error: keep only that one."""
    return not (record.exc_info and isinstance(record.exc_info[1], OSError))


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(args.quiet, args.verbose)
    if _drop_reraised_os_errors not in logging.getLogger("absl").filters:
        logging.getLogger("absl").addFilter(_drop_reraised_os_errors)
    import jax
    from tqdm.contrib.logging import logging_redirect_tqdm

    from adain_jax import checkpoint, data, parallel, train
    from adain_jax.weights import WeightsError

    if args.distributed:
        parallel.initialize_distributed(args.coordinator_address, args.num_processes,
                                        args.process_id)
        if jax.process_index() != 0:  # one process speaks for the run
            logging.getLogger().setLevel(logging.WARNING)
            logging.getLogger("adain_jax").setLevel(logging.WARNING)
    cache = start_compile_cache(args)  # a resumed run loads its train step, not 15 s
    work_starts()  # the trainer saves a checkpoint on Ctrl-C/SIGTERM once it runs
    try:
        with logging_redirect_tqdm():
            train.train(make_config(args), args.workdir, progress=not args.quiet)
    except (WeightsError, data.DataError, train.ConfigError, checkpoint.CheckpointError,
            train.OutputError, train.TrainingDiverged) as err:
        message = " ".join(str(err).split())
        if isinstance(err, WeightsError) and not args.encoder_weights:
            message += " (pass --encoder-weights, or run `python convert_weights.py --download`)"
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1
    finally:
        from adain_jax import compile_cache

        compile_cache.log_stats(cache)
    return 0


def run() -> None:
    """The `adain-train` console script."""
    global PROG
    PROG = "adain-train"
    sys.exit(run_main(main, PROG))

