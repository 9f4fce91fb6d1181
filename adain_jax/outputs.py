"""Output folders and write errors, for the entry points that write results (no JAX here).

A run that cannot write its results should say so before it loads weights or data, not
after hours of work: `folder_problem` tries a write where the output folder will be.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def folder_problem(folder) -> str | None:
    """Why `folder` cannot hold new files, or None. Creates nothing that stays.

    It tries for real, a file written and removed in the folder, or a folder made and
    removed in its nearest existing parent when it does not exist yet, instead of reading
    permission bits: root writes through them, and a read-only mount or a quota ignores them.
    """
    folder = existing = Path(folder)
    try:
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        if not existing.is_dir():
            return ("is a file, not a folder" if existing == folder
                    else f"{existing} is a file, not a folder")
        if existing == folder:
            fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
            os.close(fd)
            os.unlink(probe)
        else:  # the folder will be created there
            os.rmdir(tempfile.mkdtemp(prefix=".write-test-", dir=existing))
    except OSError as err:
        return (f"not writable ({reason(err)})" if existing == folder
                else f"cannot be created ({reason(err)} in {existing})")
    return None


def reason(err: BaseException) -> str:
    """The first line of an error without its path: "Permission denied", "No space left...".

    OSError's strerror leaves out the file name, which the caller states itself; other
    errors (safetensors' SafetensorError wraps its I/O errors) give their first line.
    """
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def write_atomic(path, data: bytes) -> Path:
    """Write `data` to `path` through `.NAME.tmpPID` beside it, synced, then renamed over
    it: a reader (or a rerun after a crash) sees the old file or the whole new one. The
    file gets the umask's mode, like any other output (not mkstemp's 0600, unreadable to
    the rest of a shared cache or workdir)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
