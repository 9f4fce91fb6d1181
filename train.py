"""Train the AdaIN decoder on content (COCO) and style images; resumes by itself.

    # the encoder: the port's VGG (this file also holds its decoder, which is ignored)
    python convert_weights.py --download
    # one device (a GPU, or the CPU):
    python train.py --workdir runs/coco --tfds coco/2017 --styles wikiart/
    # every local device: the same command; the global --batch-size (default 8) is split
    # over all devices, so it must be a multiple of their number
    python train.py --workdir runs/coco --tfds coco/2017 --styles wikiart/ --batch-size 32
    # several hosts: run on each, with its --process-id (or let JAX read SLURM / Open MPI)
    python train.py --workdir /shared/runs/coco --tfds coco/2017 --styles wikiart/ \\
        --batch-size 64 --distributed --coordinator-address host0:1234 \\
        --num-processes 2 --process-id 0

Running the same command again with the same --workdir resumes exactly where the last
checkpoint left off (parameters, Adam state, step and data position); SIGTERM or Ctrl-C
saves a checkpoint and exits. TensorBoard: `tensorboard --logdir runs/coco`.
The trained model is written to WORKDIR/adain.safetensors (encoder + decoder), for
`python stylize.py --weights runs/coco/adain.safetensors ...`.

As the public PyTorch port: Adam with lr 1e-4 / (1 + 5e-5 * step), batch 8, 160k steps,
content weight 1, style weight 10, the decoder initialised with PyTorch's default conv init
(uniform +-1/sqrt(fan_in) for weights and biases). COCO images must be prepared for TFDS
first (`tfds build coco/2017 --file_format array_record`), or use --content-dir.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

PROG = "train.py"
EPILOG = """\
outputs in --workdir:
  checkpoints/        Orbax checkpoints (the last --keep), resumed automatically
  tensorboard/        losses, lr, images/s, and content | style | output samples
  adain.safetensors   encoder + trained decoder, for stylize.py --weights

losses are logged unweighted: loss = content_weight * loss_c + style_weight * loss_s.
exit status: 0 when training finished or stopped by a signal after saving; 1 on a usage or
data error, or when the loss became NaN/inf (the last good checkpoint is kept).
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # one line and exit status 1, like every other user error of this script
        self.exit(1, f"{self.prog}: error: {message} (see --help)\n")


def _env_int(name: str):
    value = os.environ.get(name)
    return int(value) if value and value.isdigit() else None


def parse_args(argv=None) -> argparse.Namespace:
    from adain_jax.data import DataConfig, RESIZE_MODES
    from adain_jax.train import TrainConfig

    train, data = TrainConfig(), DataConfig()
    parser = _Parser(prog=PROG, epilog=EPILOG,
                     description="Train the AdaIN decoder (Huang & Belongie, 2017).",
                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
    g.add_argument("--tfds", metavar="NAME[:SPLIT]", default=data.tfds,
                   help="TFDS content dataset, e.g. coco/2017 (split train unless given)")
    g.add_argument("--data-dir", metavar="DIR", default=data.data_dir,
                   help="TFDS data directory (default: TFDS's own)")
    g.add_argument("--content-dir", metavar="DIR", default=data.content_dir,
                   help="a folder of content images, instead of --tfds")
    g.add_argument("--styles", metavar="DIR", default=data.styles,
                   help="a folder of style images (e.g. WikiArt), searched recursively")
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
    args = parser.parse_args(argv)
    if args.coordinator_address and not args.distributed:
        parser.error("--coordinator-address needs --distributed")
    return args


def make_config(args: argparse.Namespace):
    import dataclasses

    from adain_jax.data import DataConfig
    from adain_jax.train import TrainConfig

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
        style_weight=args.style_weight, save_every=args.save_every,
        export_every=args.export_every, sample_every=args.sample_every,
        log_every=args.log_every, max_to_keep=args.keep, data=data)


def main(argv=None) -> int:
    args = parse_args(argv)
    # force: importing the libraries above may already have configured the root logger
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(message)s", stream=sys.stderr, force=True)
    for chatty in ("absl", "jax"):  # Orbax logs every save step at INFO through absl
        logging.getLogger(chatty).setLevel(logging.WARNING)
    import jax
    from tqdm.contrib.logging import logging_redirect_tqdm

    from adain_jax import checkpoint, data, parallel, train
    from adain_jax.weights import WeightsError

    if args.distributed:
        parallel.initialize_distributed(args.coordinator_address, args.num_processes,
                                        args.process_id)
        if jax.process_index() != 0:  # one process speaks for the run
            logging.getLogger().setLevel(logging.WARNING)
    try:
        with logging_redirect_tqdm():
            train.train(make_config(args), args.workdir, progress=not args.quiet)
    except (WeightsError, data.DataError, train.ConfigError, checkpoint.CheckpointError,
            train.TrainingDiverged) as err:
        message = " ".join(str(err).split())
        if isinstance(err, WeightsError) and not args.encoder_weights:
            message += " (pass --encoder-weights, or run `python convert_weights.py --download`)"
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
