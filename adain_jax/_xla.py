"""XLA options adain-jax sets for itself, before JAX starts its backends.

jaxlib 0.10 hands large float32 convolutions on CPU to YNNPACK, which runs VGG-sized
layers at a third of the speed of XLA's own (Eigen) convolution: stylising 512² took
3.8 CPU-s with jaxlib's defaults and 1.7 with `--xla_cpu_experimental_ynn_fusion_type=`
(no YNNPACK fusions), on a 2-core AMD EPYC (benchmarks/ideas.py, "flags"). Also measured
there and not kept, for no gain: YNNPACK for dots only (2.6 CPU-s),
`--xla_cpu_use_xnnpack=false`, `--xla_cpu_prefer_vector_width=512`.

Options are appended to XLA_FLAGS and never override one the user set;
ADAIN_JAX_XLA_FLAGS=0 disables. XLA reads XLA_FLAGS once, when its first backend
starts, so nothing is changed if that has already happened (it could not take effect).
"""
from __future__ import annotations

import os
import sys

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=",)


def _backends_started() -> bool:
    """Whether JAX has created a backend (jax 0.10 keeps them in xla_bridge._backends)."""
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
