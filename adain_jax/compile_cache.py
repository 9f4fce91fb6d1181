"""JAX's persistent compilation cache, for the command lines.

Compiling the stylisation program takes 2 s at 683x512 on a 2-core CPU, a whole training
step 15 s: more than the work itself for one image. The command lines keep compiled
programs in `$ADAIN_JAX_CACHE/xla` (default ~/.cache/adain_jax/xla), so a second run with
the same image sizes compiles nothing (benchmarks/process.py measures it).

- Stale programs cannot be loaded: JAX's cache key hashes the program, the jax and jaxlib
  versions, the device kind, the compile options and XLA_FLAGS.
- Several processes may share it: with a size bound set, JAX reads and writes entries under
  a lock file (the `filelock` package) and evicts the least recently used beyond the bound.
- Off with `--no-compile-cache` or ADAIN_JAX_COMPILE_CACHE=0; ADAIN_JAX_COMPILE_CACHE=DIR
  puts it elsewhere. A cache that cannot be used (an unwritable folder) costs a warning,
  never the run.

The library itself never turns it on: a program that imports adain_jax keeps its own
JAX configuration.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

ENV = "ADAIN_JAX_COMPILE_CACHE"
MAX_BYTES = 2 << 30  # LRU bound; one 683x512 stylisation program is about 1.5 MB
_REQUESTS, _HITS = ("/jax/compilation_cache/compile_requests_use_cache",
                    "/jax/compilation_cache/cache_hits")

log = logging.getLogger(__name__)
_counts = {_REQUESTS: 0, _HITS: 0}
_listening = False


def default_dir() -> Path | None:
    """The cache folder: $ADAIN_JAX_COMPILE_CACHE, else `download.cache_dir()`/xla; None
    when ADAIN_JAX_COMPILE_CACHE is 0 (off)."""
    from adain_jax.download import cache_dir

    value = os.environ.get(ENV, "")
    if value in ("0", "off", "false"):
        return None
    return Path(value).expanduser() if value else cache_dir() / "xla"


def enable(folder: Path | None = None) -> Path | None:
    """Turn JAX's persistent compilation cache on in `folder` (default `default_dir()`).

    Returns the folder, or None when it is off or cannot be created (with a warning).
    """
    folder = folder or default_dir()
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(13, "permission denied")
    except OSError as err:
        log.warning("warning: compilation cache %s: %s; compiling without it (set %s=0 "
                    "to silence this)", folder, err.strerror or err, ENV)
        return None
    import importlib.util

    if importlib.util.find_spec("filelock") is None:  # JAX locks entries with it
        log.warning("warning: the compilation cache needs the filelock package; compiling "
                    "without it")
        return None
    import jax
    from jax import monitoring

    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)  # also: the lock
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # no overrides
    global _listening
    if not _listening:
        monitoring.register_event_listener(_count)
        _listening = True
    return folder


def _count(event: str, **kwargs) -> None:
    if event in _counts:
        _counts[event] += 1


def stats() -> tuple[int, int]:
    """(programs compiled, programs loaded from the cache) in this process so far, among
    those that went through the cache."""
    return _counts[_REQUESTS] - _counts[_HITS], _counts[_HITS]


def log_stats(folder: Path | None) -> None:
    """One DEBUG line (shown with --verbose): how many programs this run compiled and how
    many it loaded from the cache."""
    if folder is not None:
        compiled, loaded = stats()
        log.debug("compilation cache %s: %d compiled, %d loaded", folder, compiled, loaded)
