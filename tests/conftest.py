"""Settings for every test process and the commands tests start."""
import os
import tempfile
from pathlib import Path

# One compilation cache for this run's processes: both xdist workers (they share
# PYTEST_XDIST_TESTRUNUID) and every command a test starts, in a fresh folder, never the
# users' ~/.cache/adain_jax/xla. The tests compile the same few programs (one model, a
# few image sizes) in dozens of processes; each is compiled once per run instead.
# tests/test_compile_cache.py, and tests that must see a compilation happen, set their own.
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID")
CACHE = (Path(tempfile.gettempdir()) / f"adain_jax_test_xla_{_RUN}" if _RUN
         else Path(tempfile.mkdtemp(prefix="adain_jax_test_xla_")))
os.environ["ADAIN_JAX_COMPILE_CACHE"] = str(CACHE)

from adain_jax import compile_cache  # noqa: E402  (after the variable: it reads it)

compile_cache.enable(CACHE)
