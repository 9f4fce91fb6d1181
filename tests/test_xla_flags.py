"""adain_jax._xla: our XLA CPU options reach XLA_FLAGS before JAX starts, and only then.

Each case runs in a fresh interpreter (XLA reads XLA_FLAGS once, when its first backend
starts) and prints what it saw as JSON. The effect is checked on the compiled program
too: with our option a 3x3 convolution is not handed to YNNPACK, which jaxlib 0.10
otherwise does (see _xla.py for the measured cost).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adain_jax import _xla

ROOT = Path(__file__).resolve().parents[1]
OPTION = "--xla_cpu_experimental_ynn_fusion_type"

PROBE = """
import json, os, sys
{before}
import adain_jax
import jax, jax.numpy as jnp
from adain_jax import _xla
x = jax.ShapeDtypeStruct((1, 18, 18, 64), jnp.float32)
k = jax.ShapeDtypeStruct((3, 3, 64, 64), jnp.float32)
conv = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "VALID",
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
hlo = jax.jit(conv).lower(x, k).compile().as_text()
print(json.dumps({{"xla_flags": os.environ.get("XLA_FLAGS"), "ynn_conv": "ynn_fusion" in hlo,
                  "started": _xla._backends_started()}}))
"""


def probe(env_updates: dict, before: str = "") -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "ADAIN_JAX_XLA_FLAGS")}
    env.update(env_updates)
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-c", PROBE.format(before=before)], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_flags_appended_when_absent():
    seen = probe({})
    assert seen["xla_flags"].split() == list(_xla.CPU_FLAGS)
    assert not seen["ynn_conv"]  # the option took effect in XLA
    assert seen["started"]


def test_other_user_flags_kept():
    seen = probe({"XLA_FLAGS": "--xla_cpu_enable_fast_math=false"})
    assert seen["xla_flags"].split() == ["--xla_cpu_enable_fast_math=false", *_xla.CPU_FLAGS]


def test_user_value_of_the_same_option_not_overridden():
    user = f"{OPTION}=individual_convolution"
    seen = probe({"XLA_FLAGS": user})
    assert seen["xla_flags"] == user
    assert seen["ynn_conv"]  # the user's value, not ours, reached XLA


def test_disabled_by_environment():
    seen = probe({"ADAIN_JAX_XLA_FLAGS": "0"})
    assert seen["xla_flags"] is None
    assert seen["ynn_conv"]  # jaxlib's default: what our option turns off


def test_nothing_happens_after_backends_started():
    seen = probe({}, before="import jax; jax.devices()")
    assert seen["xla_flags"] is None  # too late to matter, so left alone
    assert seen["ynn_conv"]


def test_started_detection_in_process():
    """jax 0.10 keeps its live backends in jax._src.xla_bridge._backends; a rename would
    make configure() touch XLA_FLAGS too late without noticing, so check it directly."""
    import jax
    import jax._src.xla_bridge as xb

    assert isinstance(xb._backends, dict)
    jax.devices()
    assert _xla._backends_started()
    assert _xla.configure() == []


@pytest.mark.parametrize("current,expected", [
    ("", list(_xla.CPU_FLAGS)),
    (f"{OPTION}=dot", [f"{OPTION}=dot"]),
    (f"  --xla_foo=1   {OPTION}=  ", ["--xla_foo=1", f"{OPTION}="]),
])
def test_configure_merges(monkeypatch, current, expected):
    monkeypatch.setattr(_xla, "_backends_started", lambda: False)
    monkeypatch.delenv("ADAIN_JAX_XLA_FLAGS", raising=False)
    monkeypatch.setenv("XLA_FLAGS", current)
    _xla.configure()
    assert os.environ["XLA_FLAGS"].split() == expected
