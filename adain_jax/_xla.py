"""XLA options adain-jax sets for itself, before JAX starts its backends.

Measured in benchmarks/bench.py (see README): on the CPU backend the default convolution
path is much slower for VGG-sized convs than with the YNN fusion turned off. Options are
appended to XLA_FLAGS and never override one the user set; ADAIN_JAX_XLA_FLAGS=0 disables.
"""
from __future__ import annotations

import os
import sys

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=",)


def _backends_started() -> bool:
    xb = sys.modules.get("jax._src.xla_bridge")
    return bool(xb is not None and getattr(xb, "_backends", None))


def configure() -> list[str]:
    """Append our flags to XLA_FLAGS (if JAX has not started); returns those added."""
    if os.environ.get("ADAIN_JAX_XLA_FLAGS", "1") == "0" or _backends_started():
        return []
    current = os.environ.get("XLA_FLAGS", "")
    set_names = {flag.split("=", 1)[0] for flag in current.split()}
    added = [flag for flag in CPU_FLAGS if flag.split("=", 1)[0] not in set_names]
    if added:
        os.environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return added
