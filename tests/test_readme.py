"""README's two set-up commands: the test command is what .ci/run runs, and the main job
(stylise the examples) works end to end once weights are in the cache.

The download step of the main command needs the internet; tests/test_download.py covers it
against a local server. Here the cache holds random weights written with save_params.
"""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

import adain_jax
from adain_jax import images

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    text = (ROOT / "README.md").read_text()
    head = text.split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", head, flags=re.S)
    assert len(blocks) == 2, "README must open with exactly two set-up commands"
    return [b.strip() for b in blocks]


def test_ci_runs_the_readme_test_command():
    _, test_command = readme_commands()
    assert "pytest" in test_command
    ci_lines = [l.strip() for l in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_main_command_stylises_the_examples(tmp_path):
    main_command, _ = readme_commands()
    stylize = [part.strip() for part in main_command.split("&&")
               if part.strip().startswith("python stylize.py")]
    assert len(stylize) == 1
    args = shlex.split(stylize[0])[2:]
    params = adain_jax.init_params(jax.random.key(0))
    cache = tmp_path / "cache"
    adain_jax.save_params(params, cache / "adain.safetensors")
    out = tmp_path / "out"
    env = dict(os.environ, ADAIN_JAX_CACHE=str(cache))
    # a small content size keeps CI fast; everything else is the README's command
    run = subprocess.run([sys.executable, "stylize.py", *args, "--output", str(out),
                          "--content-size", "64", "--style-size", "64"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    contents = sorted(p.stem for p in (ROOT / "examples" / "content").iterdir())
    styles = sorted(p.stem for p in (ROOT / "examples" / "style").iterdir())
    assert len(contents) >= 2 and len(styles) >= 2
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(f"{c}_stylized_{s}.png" for c in contents for s in styles)
    # each output is a real image of the resized content's size, not a blank
    for name in written:
        img = images.load_image(out / name).rgb
        assert min(img.shape[:2]) == 64
        assert np.std(img) > 0.01
