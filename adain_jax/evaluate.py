"""`python -m adain_jax.evaluate`: the paper's quantitative comparison as a command.

The command line is adain_jax/cli/evaluate.py (its --help answers before JAX loads); the
functions it runs are in adain_jax/evaluation.py.
"""
import sys

from adain_jax.cli import run_main
from adain_jax.cli.evaluate import PROG, main

if __name__ == "__main__":
    sys.exit(run_main(main, PROG))
