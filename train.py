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
checkpoint left off (parameters, Adam state, step and data position), naming each setting
that differs from the checkpoint's; SIGTERM or Ctrl-C saves a checkpoint, exports and exits.
TensorBoard: `tensorboard --logdir runs/coco`. The trained model is written to
WORKDIR/adain.safetensors (encoder + decoder) every --export-every steps, on every stop,
and when a finished run is run again, for
`python stylize.py --weights runs/coco/adain.safetensors ...`.

As the public PyTorch port: Adam with lr 1e-4 / (1 + 5e-5 * step), batch 8, 160k steps,
content weight 1, style weight 10, the decoder initialised with PyTorch's default conv init
(uniform +-1/sqrt(fan_in) for weights and biases). COCO images must be prepared for TFDS
first (`tfds build coco/2017 --file_format array_record`), or use --content-dir.
"""
import sys

from adain_jax.cli.train import EPILOG, PROG, main, parse_args  # noqa: F401  (importable here)

if __name__ == "__main__":
    from adain_jax.cli import run_main

    sys.exit(run_main(main, PROG))
