"""Convert PyTorch AdaIN weights into one adain-jax safetensors file.

    # the PyTorch port's release files, fetched and checked (sha256) into the cache:
    python convert_weights.py --download
    # the same files, already on disk:
    python convert_weights.py --vgg vgg_normalised.pth --decoder decoder.pth --out adain.safetensors
    # torchvision's ImageNet VGG-19 as the encoder, no decoder (a starting point for train.py):
    python convert_weights.py --torchvision --encoder-only --out vgg19_encoder.safetensors
    # torchvision's ImageNet DenseNet-121 as the encoder (always encoder only):
    python convert_weights.py --torchvision-densenet
"""
import sys

from adain_jax.cli.convert_weights import PROG, main, parse_args  # noqa: F401  (importable here)

if __name__ == "__main__":
    from adain_jax.cli import run_main

    sys.exit(run_main(main, PROG))
