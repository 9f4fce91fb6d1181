"""benchmarks/bench.py: its FLOP counts and one quick run of the harness (no timings checked).

FLOPs are compared with PyTorch's own counter (torch.utils.flop_counter, 2 x multiply-adds
per convolution) run on the reference port: exact integers must be equal. The quick run
checks what the harness reports besides times: parity with the port (relative L2 <= 1e-5,
as tests/test_transfer.py), a table row whose ratios are the JSON medians' ratios, and a
memory child whose peak RSS is its own (VmHWM), not its parent's.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tests import torch_reference as ref

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench  # noqa: E402


def torch_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("size", [64, 80])
def test_stylize_flops_equal_torch_counter(size):
    vgg = ref.port_vgg_to_relu4_1(ref.make_port_vgg()).eval()
    decoder = ref.make_port_decoder().eval()
    content = torch.rand(1, 3, size, size)
    style = torch.rand(1, 3, size, size)
    assert bench.stylize_flops(size) == torch_flops(
        lambda: ref.style_transfer(vgg, decoder, content, style))
    assert bench.stylize_flops(size, style_cached=True) == torch_flops(
        lambda: decoder(vgg(content)))
    assert bench.encoder_flops(size) == torch_flops(lambda: vgg(content))


def test_quick_run_reports_parity_ratios_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--cases", "stylize256", "--torch", "eager_nchw",
                       "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["parity_rel_l2"] <= 1e-5
    (case,) = report["cases"]
    ours, theirs = case["jax"], case["torch_eager_nchw"]
    assert case["flops"] == bench.stylize_flops(256)
    for timing in (ours, theirs):
        assert len(timing["all_ms"]) == 3
        assert timing["median_ms"] == pytest.approx(np.median(timing["all_ms"]), abs=0.05)
    row = next(line for line in capsys.readouterr().out.splitlines()
               if line.startswith("| stylize 256²"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    ratio = ours["median_ms"] / theirs["median_ms"]
    assert cells[7] == cells[8] == f"{ratio:.2f}"  # ours / eager, ours / best (one config)


def test_memory_child_reports_its_own_peak():
    """A child of a process holding 1 GiB must not report that GiB (ru_maxrss would)."""
    ballast = np.ones(2**28, np.float32)  # 1 GiB resident in this process
    code = ("import sys; sys.path.insert(0, 'benchmarks'); import bench; "
            "print(bench.peak_rss_mib())")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    assert ballast.sum() == 2**28
    assert float(proc.stdout.split()[-1]) < 900, proc.stdout
