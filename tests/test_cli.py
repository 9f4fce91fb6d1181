"""adain_jax.cli: what every command line shares (--version, --help before JAX, console
scripts, Ctrl-C at any moment, logging without JAX's start-up lines)."""
from __future__ import annotations

import importlib.metadata
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import adain_jax

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"stylize.py": "adain-stylize", "train.py": "adain-train",
           "convert_weights.py": "adain-convert"}


def run(args, cwd=ROOT, **kwargs):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, **kwargs)


def test_version_is_one_fact():
    """__version__ is what pyproject.toml installs (it reads the attribute)."""
    assert adain_jax.__version__ == importlib.metadata.version("adain-jax")


@pytest.mark.parametrize("script", [*SCRIPTS, "-m adain_jax.evaluate"])
def test_every_entry_point_has_version(script):
    result = run([sys.executable, *script.split(), "--version"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(f"(adain-jax {adain_jax.__version__})")


@pytest.mark.parametrize("script", [*SCRIPTS, "-m adain_jax.evaluate"])
def test_help_does_not_import_jax(script):
    """--help answers before the libraries load (it took seconds importing JAX first)."""
    run_it = (f"runpy.run_module({script[3:]!r}, run_name='__main__', alter_sys=True)"
              if script.startswith("-m ") else f"runpy.run_path({script!r}, run_name='__main__')")
    probe = ("import runpy, sys\n"
             f"sys.argv = [{script!r}, '--help']\n"
             "try:\n"
             f"    {run_it}\n"
             "except SystemExit as stop:\n"
             "    assert stop.code in (0, None), stop.code\n"
             "print('jax imported' if 'jax' in sys.modules else 'no jax')\n")
    result = run([sys.executable, "-c", probe])
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout and result.stdout.strip().endswith("no jax")


@pytest.mark.parametrize("console", [*SCRIPTS.values(), "adain-evaluate"])
def test_console_scripts_work_outside_a_checkout(console, tmp_path):
    """pip install puts adain-stylize & co. beside the interpreter; they need no checkout."""
    path = shutil.which(console, path=str(Path(sys.executable).parent))
    if path is None:
        pytest.skip(f"{console} is not installed beside {sys.executable}")
    result = run([path, "--help"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {console} ")
    result = run([path, "--no-such-flag"], cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().startswith(f"{console}: error: ")
    assert "\n" not in result.stderr.strip()


def test_ctrl_c_while_starting_up_is_one_line_and_130(tmp_path):
    """SIGINT while JAX and the library load: no traceback (run_main around main)."""
    proc = subprocess.Popen([sys.executable, "stylize.py", "--content", "examples/content",
                             "--style", "examples/style", "--output", str(tmp_path / "out"),
                             "--weights", str(tmp_path / "missing.safetensors")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)  # past the interpreter's start (--help answers in 0.13 s), inside main's
    # imports of JAX (the run reaches its "no weights file" error after 1.3 s)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 130, err
    assert lines == ["stylize.py: interrupted"], err


def test_logging_shows_ours_and_not_jax_backend_probing():
    """With the root logger at INFO, JAX printed "Unable to initialize backend 'tpu'" on
    every CPU-only start of convert_weights.py and evaluate."""
    probe = ("import logging\n"
             "from adain_jax.cli import setup_logging\n"
             "setup_logging(quiet=False)\n"
             "import jax\n"
             "jax.devices()\n"
             "logging.getLogger('adain_jax.probe').info('our line')\n"
             "logging.getLogger('jax._src.xla_bridge').info('a jax info line')\n")
    result = run([sys.executable, "-c", probe], env={**os.environ, "JAX_PLATFORMS": ""})
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["our line"]


def test_logging_survives_a_replaced_stderr_and_a_default_root_handler(capsys):
    """CI failure: importing Orbax inside one test (absl's first log line runs
    logging.basicConfig) bound a root handler to that test's captured stderr; a later
    test's warning then printed "--- Logging error ---" with a traceback. Also in a real
    process that default handler printed our lines as "INFO:adain_jax...:"."""
    import io
    import logging

    from adain_jax.cli import setup_logging

    root = logging.getLogger()
    stale, default = io.StringIO(), logging.StreamHandler(sys.stderr)
    stale_handler = logging.StreamHandler(stale)
    stale.close()
    root.addHandler(stale_handler)
    root.addHandler(default)
    try:
        setup_logging(quiet=False)
        setup_logging(quiet=False)  # a second command in the same process: still once
        capsys.readouterr()
        logging.getLogger("adain_jax.probe").info("our line")
        logging.getLogger("adain_jax.probe").warning("our warning")
        assert capsys.readouterr().err.splitlines() == ["our line", "our warning"]
        assert stale_handler not in root.handlers and default not in root.handlers
    finally:
        for handler in (stale_handler, default):
            if handler in root.handlers:
                root.removeHandler(handler)
