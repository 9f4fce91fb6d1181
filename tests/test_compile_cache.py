"""adain_jax.compile_cache: the command lines' persistent compilation cache.

Each run is a fresh `stylize.py` process with the cache in a temporary folder
(ADAIN_JAX_COMPILE_CACHE; tests/conftest.py turns it off everywhere else). `-v` prints
how many programs the run compiled and how many it loaded from the cache, counted from
JAX's own cache events. A single output must be one compiled program (the style goes into
it as an image, not encoded by a program of its own); a second run must compile nothing;
changed XLA flags must not load the old program; outputs are byte-identical with the cache,
without it, and from it. Three of the runs share the cache at once.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.stylize_helpers import random_image, write_image
from tests.stylize_helpers import params, weights  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[1]
COUNTS = re.compile(r"compilation cache (.+): (\d+) compiled, (\d+) loaded")


def start(args, cache, extra_env=None) -> subprocess.Popen:
    env = {**os.environ, "ADAIN_JAX_COMPILE_CACHE": str(cache), **(extra_env or {})}
    return subprocess.Popen([sys.executable, str(ROOT / "stylize.py"), *map(str, args), "-v"],
                            stderr=subprocess.PIPE, text=True, env=env)


def counts(proc: subprocess.Popen, cache) -> tuple[int, int] | None:
    """(programs compiled, programs loaded) that a finished run printed."""
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode == 0, err
    found = COUNTS.search(err)
    if found is None:
        return None
    assert Path(found.group(1)) == Path(cache)
    return int(found.group(2)), int(found.group(3))


def cache_entries(cache) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.name.endswith("-cache"))


def test_second_run_compiles_nothing_and_results_are_identical(weights, tmp_path):
    rng = np.random.default_rng(0)
    content = write_image(tmp_path / "c.png", random_image(rng, 28, 36))
    style = write_image(tmp_path / "s.png", random_image(rng, 24, 24))
    cache = tmp_path / "xla"
    common = ["--content", content, "--style", style, "--weights", weights,
              "--content-size", "0", "--style-size", "0", "--alpha", "0.7"]
    out = {name: tmp_path / f"{name}.png" for name in ("first", "second", "off", "flags")}

    assert counts(start([*common, "--output", out["first"]], cache), cache) == (1, 0)
    [entry] = cache_entries(cache)
    # Then three at once: one loading, one without the cache, and one with other XLA
    # flags, which make another program: compiled again (and written while the first
    # process reads the cache), not the stale one loaded.
    flags = {"XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") +
                           " --xla_cpu_enable_fast_min_max=true").strip()}
    second = start([*common, "--output", out["second"]], cache)
    off = start([*common, "--output", out["off"], "--no-compile-cache"], cache)
    other = start([*common, "--output", out["flags"]], cache, flags)
    assert counts(second, cache) == (0, 1)
    assert counts(off, cache) is None
    assert counts(other, cache) == (1, 0)
    assert entry in cache_entries(cache) and len(cache_entries(cache)) == 2

    first = out["first"].read_bytes()
    for name in ("second", "off", "flags"):
        assert out[name].read_bytes() == first, name


def test_unusable_cache_folder_is_a_warning_not_a_failure(weights, tmp_path):
    rng = np.random.default_rng(1)
    content = write_image(tmp_path / "c.png", random_image(rng, 28, 36))
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would go")
    env = {**os.environ, "ADAIN_JAX_COMPILE_CACHE": str(blocker / "xla")}
    proc = subprocess.run([sys.executable, str(ROOT / "stylize.py"), "--content", content,
                           "--style", content, "--weights", weights, "--content-size", "0",
                           "--style-size", "0", "--output", tmp_path / "o.png"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "o.png").is_file()
    [line] = [line for line in proc.stderr.splitlines() if "compilation cache" in line]
    assert str(blocker / "xla") in line and "compiling without it" in line
    assert "Traceback" not in proc.stderr
