"""Stylise images with AdaIN: content x style files or folders, written as PNG files.

    python stylize.py --content examples/content/harbour.jpg --style examples/style/stripes.jpg
    python stylize.py --content examples/content --style examples/style --alpha 0.8
    python stylize.py --content c.jpg --style a.jpg b.jpg --style-weights 2 1 --output out.png
    python stylize.py --content c.jpg --style a.jpg b.jpg --mask left.png right.png
    python stylize.py --content c.jpg --style a.jpg --preserve-color luminance
    python stylize.py --content clip.mp4 --style a.jpg --alpha 0.8   # a video, frame by frame
    # the optimisation baseline of Gatys et al. (slow; needs only an encoder):
    python stylize.py --content c.jpg --style a.jpg --method gatys --steps 300
"""
import sys

from adain_jax.cli.stylize import EPILOG, PROG, main, parse_args  # noqa: F401  (importable here)

if __name__ == "__main__":
    from adain_jax.cli import run_main

    sys.exit(run_main(main, PROG))
