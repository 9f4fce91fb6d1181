"""Convert PyTorch AdaIN weights into one adain-jax safetensors file.

The command line behind `convert_weights.py` at the top of a checkout and the `adain-convert` console
script; the examples are in convert_weights.py's docstring and in --help.
"""
from __future__ import annotations

import argparse
import sys

from adain_jax.cli import Parser, run_main, setup_logging

PROG = "convert_weights.py"
EPILOG = """\
sources:
  --vgg FILE        the port's vgg_normalised.pth (its 53-module VGG nn.Sequential, keys
                    0.weight, 2.weight, ...); layers after relu4_1 are dropped
  --decoder FILE    the port's decoder.pth (keys 1.weight, 5.weight, ...)
  --torchvision [FILE]
                    torchvision's ImageNet VGG-19 (features.N.* keys) instead of --vgg; its
                    mean/std normalisation is folded into the first 1x1 conv. Without FILE,
                    vgg19-dcbb9e9d.pth is downloaded (its sha256 must start with dcbb9e9d)
  --torchvision-densenet [FILE]
                    torchvision's ImageNet DenseNet-121 (features.* keys, old "norm.1" names
                    too) as the encoder instead, up to dense block 3. There is no published
                    DenseNet decoder, so the file holds the encoder only (train one with
                    train.py; stylize.py --method gatys needs none). Without FILE,
                    densenet121-a639ec97.pth is downloaded (sha256 must start with a639ec97)
  --download        fetch whichever of vgg_normalised.pth / decoder.pth is needed and not
                    given, from %(port)s

downloads go to $ADAIN_JAX_CACHE (default ~/.cache/adain_jax); files already there with the
right sha256 are reused. Mirrors: --base-url or $ADAIN_JAX_BASE_URL for the port's files,
--torchvision-base-url or $ADAIN_JAX_TORCHVISION_BASE_URL for torchvision's.
Offline: fetch the two files by hand and pass them with --vgg and --decoder.

--out defaults to %(weights)s, the file stylize.py reads by default
(with --encoder-only: vgg19_encoder.safetensors in the same directory; with
--torchvision-densenet: densenet121_encoder.safetensors there).

examples:
  python convert_weights.py --download
  python convert_weights.py --vgg vgg_normalised.pth --decoder decoder.pth --out adain.safetensors
  python convert_weights.py --torchvision --decoder decoder.pth
  python convert_weights.py --torchvision vgg19.pth --encoder-only --out vgg19_encoder.safetensors
  python convert_weights.py --torchvision-densenet densenet121.pth --out densenet.safetensors
"""


def parse_args(argv=None) -> argparse.Namespace:
    from adain_jax import download

    parser = Parser(
        prog=PROG,
        description="Convert PyTorch AdaIN weights (the pytorch-AdaIN port's release files,\n"
                    "or torchvision's VGG-19 or DenseNet-121) into one adain-jax safetensors "
                    "file.",
        epilog=EPILOG % {"port": download.PORT_BASE_URL,
                         "weights": download.default_weights_path()})
    parser.add_argument("--vgg", metavar="FILE", help="the port's vgg_normalised.pth")
    parser.add_argument("--decoder", metavar="FILE", help="the port's decoder.pth")
    parser.add_argument("--torchvision", metavar="FILE", nargs="?", const="",
                        help="encoder from torchvision's VGG-19 (downloaded if FILE is omitted)")
    parser.add_argument("--torchvision-densenet", metavar="FILE", nargs="?", const="",
                        help="encoder only, from torchvision's DenseNet-121 (downloaded if "
                             "FILE is omitted)")
    parser.add_argument("--download", action="store_true",
                        help="download the port's files that are not given (sha256-checked)")
    parser.add_argument("--encoder-only", action="store_true",
                        help="write no decoder (a starting point for training)")
    parser.add_argument("--out", metavar="FILE", help="output .safetensors (see below)")
    parser.add_argument("--base-url", metavar="URL",
                        help=f"mirror of {download.PORT_BASE_URL} (env ADAIN_JAX_BASE_URL)")
    parser.add_argument("--torchvision-base-url", metavar="URL",
                        help=f"mirror of {download.TORCHVISION_BASE_URL} "
                             "(env ADAIN_JAX_TORCHVISION_BASE_URL)")
    parser.add_argument("--timeout", type=float, default=download.DEFAULT_TIMEOUT,
                        help="network timeout in seconds (default %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    args = parser.parse_args(argv)

    given = [flag for flag, value in (("--vgg", args.vgg), ("--torchvision", args.torchvision),
                                      ("--torchvision-densenet", args.torchvision_densenet))
             if value is not None]
    if len(given) > 1:
        parser.error(f"give one encoder source, not {' and '.join(given)}")
    if args.torchvision_densenet is not None:
        if args.decoder is not None:
            parser.error("--decoder with --torchvision-densenet: decoder.pth is the VGG "
                         "decoder; a DenseNet file holds the encoder only (train a decoder "
                         "with train.py)")
        if args.download:
            parser.error("--download fetches the VGG port's files; --torchvision-densenet "
                         "without FILE downloads DenseNet-121 itself")
        args.encoder_only = True  # there is no published DenseNet AdaIN decoder
        return args
    if args.encoder_only and args.decoder is not None:
        parser.error("--encoder-only and --decoder contradict each other")
    if args.vgg is None and args.torchvision is None and not args.download:
        parser.error("no encoder: give --vgg FILE, --torchvision [FILE], "
                     "--torchvision-densenet [FILE] or --download")
    if args.decoder is None and not (args.encoder_only or args.download):
        parser.error("no decoder: give --decoder FILE, --download, or --encoder-only")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(args.quiet)
    try:
        from adain_jax.convert import run
        run(vgg=args.vgg, decoder=args.decoder, torchvision=args.torchvision,
            densenet=args.torchvision_densenet, download_missing=args.download,
            encoder_only=args.encoder_only, out=args.out,
            base_url=args.base_url, torchvision_base_url=args.torchvision_base_url,
            timeout=args.timeout, progress=not args.quiet)
    except Exception as err:  # noqa: BLE001 - user errors end in one line, see user_error
        from adain_jax.convert import user_error
        message = user_error(err)
        if message is None:
            raise
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1
    return 0


def run() -> None:
    """The `adain-convert` console script."""
    global PROG
    PROG = "adain-convert"
    sys.exit(run_main(main, PROG))

