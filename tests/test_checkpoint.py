"""Checkpoints through the real CLI, in subprocesses: SIGKILL, SIGTERM, Ctrl-C, NaN.

Every run is `python train.py ...` on tiny images (16 px crops, batch 2) with a shared
JAX compilation cache, so only the first run compiles. Resuming must be exact: CPU XLA
runs the same executable on the same batches, so a resumed run ends with bit-identical
parameters to an uninterrupted one (tolerance: none).
"""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from adain_jax import weights
from tests.test_train import make_images

ROOT = Path(__file__).resolve().parents[1]
STEPS = 12


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from tests.test_parallel import random_params

    tmp = tmp_path_factory.mktemp("ckpt")
    encoder = weights.save_params({"encoder": random_params()["encoder"]},
                                  tmp / "encoder.safetensors")
    return {"tmp": tmp, "encoder": encoder, "content": make_images(tmp / "content", 8, seed=1),
            "styles": make_images(tmp / "styles", 3, seed=2), "cache": tmp / "jax_cache"}


def start(setup, workdir, *extra, steps=STEPS, session=False):
    """train.py in a subprocess; `session=True` gives it its own process group."""
    args = [sys.executable, "train.py", "--workdir", str(workdir),
            "--encoder-weights", str(setup["encoder"]), "--content-dir", str(setup["content"]),
            "--styles", str(setup["styles"]), "--resize", "20", "--crop-size", "16",
            "--batch-size", "2", "--steps", str(steps), "--save-every", "2", *extra]
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(setup["cache"]), PYTHONPATH=str(ROOT),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")  # the small ones add up
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=session)


def finish(proc, timeout=180):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def run(setup, workdir, *extra, **kw):
    code, err = finish(start(setup, workdir, *extra, **kw))
    assert code == 0, err[-3000:]
    return err


def saved_steps(workdir) -> list[int]:
    folder = Path(workdir) / "checkpoints"
    if not folder.exists():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def wait_for_checkpoint(proc, workdir, after=0, timeout=180):
    """Poll until a finalised checkpoint newer than `after` exists (Orbax renames it into
    place when complete)."""
    deadline = time.monotonic() + timeout
    while not [step for step in saved_steps(workdir) if step > after]:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)


def proc_stat(pid) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:  # exited meanwhile
        return None


def children(pid: int) -> set[tuple[int, str]]:
    """(pid, start time) of the processes whose parent is `pid`, from /proc (Linux)."""
    found = set()
    for entry in Path("/proc").glob("[0-9]*"):
        fields = proc_stat(entry.name)
        if fields is not None and int(fields[1]) == pid:
            found.add((int(entry.name), fields[19]))
    return found


def alive(processes: set[tuple[int, str]]) -> set[tuple[int, str]]:
    """Those of `processes` (from `children`) still running: same start time, not zombies."""
    left = set()
    for pid, started in processes:
        fields = proc_stat(pid)
        if fields is not None and fields[19] == started and fields[0] != "Z":
            left.add((pid, started))
    return left


def decoder(workdir):
    return weights.load_params(Path(workdir) / "adain.safetensors")["decoder"]


def assert_identical(a, b):
    for name in a:
        for kind in a[name]:
            np.testing.assert_array_equal(a[name][kind], b[name][kind], err_msg=f"{name}/{kind}")


def assert_exports_checkpoint(workdir, step):
    """adain.safetensors holds the decoder of the checkpoint of `step`, read with Orbax."""
    import orbax.checkpoint as ocp

    path = Path(workdir) / "adain.safetensors"
    assert path.is_file(), f"no {path.name} after stopping at step {step}"
    assert weights.read_metadata(path)["step"] == str(step)
    saved = ocp.StandardCheckpointer().restore(Path(workdir) / "checkpoints" / str(step) / "state")
    assert_identical(saved["params"], decoder(workdir))


@pytest.fixture(scope="module")
def uninterrupted(setup):
    workdir = setup["tmp"] / "uninterrupted"
    run(setup, workdir)
    assert saved_steps(workdir)[-1] == STEPS
    return decoder(workdir)


def test_sigkill_then_sigterm_then_rerun_ends_identical(setup, uninterrupted):
    """One workdir: killed hard after its first checkpoint, rerun, stopped by SIGTERM after
    a newer checkpoint, rerun to the end; its parameters equal the uninterrupted run's."""
    workdir = setup["tmp"] / "interrupted"
    proc = start(setup, workdir)
    wait_for_checkpoint(proc, workdir)
    proc.send_signal(signal.SIGKILL)
    code, _ = finish(proc)
    assert code == -signal.SIGKILL
    killed_at = saved_steps(workdir)[-1]
    assert killed_at < STEPS and not (workdir / "adain.safetensors").exists()

    proc = start(setup, workdir)
    wait_for_checkpoint(proc, workdir, after=killed_at)
    proc.send_signal(signal.SIGTERM)
    code, err = finish(proc)
    assert code == 0, err[-3000:]
    resumed = int(re.search(r"resumed from step (\d+)", err).group(1))
    assert resumed >= killed_at  # an async save may have completed as it died
    stopped = int(re.search(r"stopped by SIGTERM at step (\d+); checkpoint saved", err).group(1))
    assert resumed < stopped == saved_steps(workdir)[-1] < STEPS
    assert_exports_checkpoint(workdir, stopped)

    err = run(setup, workdir)
    assert f"resumed from step {stopped}" in err
    assert saved_steps(workdir)[-1] == STEPS
    assert_identical(decoder(workdir), uninterrupted)


def assert_exit(processes, timeout=5):
    """Wait for `processes` (from `children`) to end; kill and fail on any still running."""
    deadline = time.monotonic() + timeout
    while alive(processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = alive(processes)
    for pid, _ in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"{len(left)} worker processes outlived train.py: {sorted(left)}"


def test_workers_sigkill_then_ctrl_c_then_rerun_ends_identical(setup, uninterrupted):
    """--workers 2. Killed hard after its first checkpoint: its Grain workers exit too. Rerun,
    Ctrl-C (SIGINT to the whole process group, workers included) after a newer checkpoint:
    exit 0 with one line, no worker left. Rerun to the end: identical to the workers=0 run
    (data.py: the batches do not depend on the number of workers)."""
    workdir = setup["tmp"] / "workers"
    proc = start(setup, workdir, "--workers", "2", session=True)
    wait_for_checkpoint(proc, workdir)
    workers = children(proc.pid)
    assert len(workers) >= 2, workers  # the decoding workers (and a resource tracker)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert_exit(workers)  # before reading the pipes: live workers hold them open
    finish(proc)
    killed_at = saved_steps(workdir)[-1]

    proc = start(setup, workdir, "--workers", "2", session=True)
    wait_for_checkpoint(proc, workdir, after=killed_at)
    workers = children(proc.pid)
    assert len(workers) >= 2, workers
    os.killpg(proc.pid, signal.SIGINT)
    code, err = finish(proc)
    assert code == 0 and "Traceback" not in err and "Warning" not in err, err[-3000:]
    assert f"resumed from step {killed_at}" in err
    stopped = int(re.search(r"stopped by SIGINT at step (\d+); checkpoint saved", err).group(1))
    assert killed_at < stopped == saved_steps(workdir)[-1] < STEPS
    assert_exports_checkpoint(workdir, stopped)
    assert_exit(workers)

    err = run(setup, workdir, "--workers", "2")
    assert f"resumed from step {stopped}" in err
    assert saved_steps(workdir)[-1] == STEPS
    assert_identical(decoder(workdir), uninterrupted)


def test_nan_stops_with_one_line_and_keeps_the_last_good_checkpoint(setup, uninterrupted):
    """A NaN injected through the encoder weights (a runtime input, so the cached step is
    reused) into a run resumed from the finished one: the first new step's loss is NaN."""
    import shutil

    workdir = setup["tmp"] / "nan"
    shutil.copytree(setup["tmp"] / "uninterrupted", workdir)
    encoder = weights.load_params(setup["encoder"], require_decoder=False)["encoder"]
    encoder["conv4_1"]["bias"][0] = np.nan
    poisoned = weights.save_params({"encoder": encoder}, setup["tmp"] / "nan.safetensors")
    before = saved_steps(workdir)

    code, err = finish(start(setup, workdir, "--encoder-weights", str(poisoned),
                             steps=STEPS + 4))
    assert code == 1
    last_line = err.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"train\.py: error: loss is not finite at step {STEPS + 1} \(loss_c=nan, .*\); "
        rf"stopped without saving, the last checkpoint, step {STEPS}, is kept in .*; try a "
        r"lower --lr", last_line), last_line
    assert saved_steps(workdir) == before and before[-1] == STEPS
    assert_identical(decoder(workdir), uninterrupted)  # the export was not overwritten
