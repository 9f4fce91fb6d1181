"""adain_jax.beam: the dataset job as a Beam pipeline, against the command's files.

The pipeline runs on Beam's FnApiRunner (the in-process engine of the DirectRunner, which
would first try to download Prism), one worker. Tolerance: none. The pipeline stylises
the command's groups with the same jitted program in the same process, so every file it
writes, job.json, records and images included, must equal the command's byte for byte;
a group of another size could differ in the last bit of a float and so in a pixel value.
Weights are random (stylize_helpers.he_scaled_params); 13 contents of three sizes, one
corrupt, in chunks of 4 with batches of 2, so chunks, groups and failures all occur.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

beam = pytest.importorskip("apache_beam",
                           reason='adain_jax.beam needs apache-beam: pip install '
                                  '"adain-jax[beam]"')

from adain_jax import beam as adain_beam  # noqa: E402  (after the skip)
from adain_jax import style_bank  # noqa: E402
from adain_jax import stylize_dataset as sd  # noqa: E402
from adain_jax.download import sha256_file  # noqa: E402
from tests.stylize_helpers import random_image, write_image  # noqa: E402
from tests.stylize_helpers import bank_path, params, weights  # noqa: E402,F401  (fixtures)

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ["--runner=FnApiRunner", "--direct_num_workers=1"]
SHAPES = [(32, 40), (40, 32), (36, 36)]


@pytest.fixture(scope="module")
def content_dir(tmp_path_factory):
    """12 images of three sizes (a third in a subfolder), and a corrupt PNG."""
    root = tmp_path_factory.mktemp("contents")
    rng = np.random.default_rng(3)
    for i in range(12):
        write_image(root / ("sub" if i % 3 == 0 else "") / f"c{i:02d}.png",
                    random_image(rng, *SHAPES[i % 3]))
    (root / "c05b.png").write_bytes(b"\x89PNG\r\n\x1a\n not a PNG")
    return root


def job_args(content_dir, bank_path, weights, out, *extra):
    return ["--content-dir", str(content_dir), "--styles", str(bank_path), "--out", str(out),
            "--weights", str(weights), "--alpha", "0.8", "--batch", "2", "--chunk-size", "4",
            "-q", *map(str, extra)]


@pytest.fixture(scope="module")
def cli_out(content_dir, bank_path, weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "out"
    assert sd.main(job_args(content_dir, bank_path, weights, out)) == 2  # the corrupt one
    return out


@pytest.fixture(scope="module")
def beam_out(content_dir, bank_path, weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("beam") / "out"
    assert adain_beam.main(job_args(content_dir, bank_path, weights, out) + RUNNER) == 2
    return out


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_same_files(actual: Path, expected: Path):
    got, want = tree(actual), tree(expected)
    assert sorted(got) == sorted(want)
    assert [name for name in want if got[name] != want[name]] == []


# --- the same files as the command ----------------------------------------------------------

def test_pipeline_writes_the_command_s_files(cli_out, beam_out, content_dir):
    assert_same_files(beam_out, cli_out)
    with open(beam_out / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and len({r["style"] for r in rows}) > 1
    assert (beam_out / "failures.csv").read_text().startswith(
        "content_id,reason\nc05b.png,")
    assert len(list((beam_out / "_chunks").glob("chunk-*.json"))) == 4  # 13 contents / 4
    assert (beam_out / "sub" / "c00.png").is_file()  # the source tree mirrored


def test_arrayrecord_and_sin_through_build_pipeline(params, weights, bank_path, content_dir,
                                                    tmp_path):
    """The library call, a StyleBank object instead of a file, odd batch and chunk."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to

    settings = sd.Settings(alpha=0.5, resize="sin", fmt="arrayrecord", batch=3, chunk=5,
                           sin_sizes=(40, 32))
    bank = style_bank.load_bank(bank_path)
    a, b = tmp_path / "a", tmp_path / "b"
    sd.run_job(params, sha256_file(weights), bank, sd.FolderContents(content_dir, a), a,
               settings)
    with beam.Pipeline(options=PipelineOptions(RUNNER)) as p:
        merged = adain_beam.build_pipeline(p, weights, bank, sd.FolderContents(content_dir, b),
                                           b, settings)
        assert_that(merged, equal_to([True]))
    assert_same_files(b, a)
    assert sorted(p.name for p in (b / "records").iterdir()) == [
        f"chunk-{c:06d}.array_record" for c in range(3)]


def test_tfds_contents_through_the_pipeline(params, weights, bank_path, tmp_path):
    """TFDS contents travel pickled without their data source, reopened by the worker."""
    tfds = pytest.importorskip("tensorflow_datasets")
    from apache_beam.options.pipeline_options import PipelineOptions

    settings = sd.Settings(resize="sin", batch=2, chunk=2, sin_sizes=(40, 32))
    a, b = tmp_path / "a", tmp_path / "b"
    with tfds.testing.mock_data(num_examples=5):
        sd.run_job(params, sha256_file(weights), style_bank.load_bank(bank_path),
                   sd.TfdsContents("imagenet2012", "validation"), a, settings)
        with beam.Pipeline(options=PipelineOptions(RUNNER)) as p:
            adain_beam.build_pipeline(p, weights, bank_path,
                                      sd.TfdsContents("imagenet2012", "validation"), b,
                                      settings)
    assert_same_files(b, a)
    assert len(list(b.glob("validation/*/*.png"))) == 5


# --- resuming and refusing ------------------------------------------------------------------

def test_rerun_redoes_only_a_chunk_without_record(content_dir, bank_path, weights, cli_out,
                                                  beam_out, tmp_path, capsys):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(beam_out, out)
    record = sd.chunk_record(out, 1)
    done = json.loads(record.read_text())
    assert [f[0] for f in done["failures"]] == ["c05b.png"]  # the corrupt one is in it
    redone = {r[-1] for r in done["rows"]} | {record.relative_to(out).as_posix()}
    assert len(redone) == 4  # its three images and its record
    record.unlink()
    for path in out.rglob("*"):
        os.utime(path, ns=(1, 1))  # a time no write now gives
    # --share-model: the model behind Beam's proxy (multi_process_shared), same results
    assert adain_beam.main(job_args(content_dir, bank_path, weights, out, "--share-model")
                           + RUNNER) == 2
    assert_same_files(out, cli_out)
    rewritten = {p.relative_to(out).as_posix() for p in out.rglob("*")
                 if p.is_file() and p.stat().st_mtime_ns != 1}
    assert rewritten == redone | {"manifest.csv", "failures.csv"}

    # every chunk done: nothing stylised again, the manifest written again
    for path in out.rglob("*"):
        os.utime(path, ns=(1, 1))
    assert adain_beam.main(job_args(content_dir, bank_path, weights, out) + RUNNER) == 2
    assert {p.name for p in out.rglob("*") if p.is_file() and p.stat().st_mtime_ns != 1} == {
        "manifest.csv", "failures.csv"}
    assert_same_files(out, cli_out)

    # other settings against the same --out: refused in one line, nothing written
    capsys.readouterr()
    assert adain_beam.main(job_args(content_dir, bank_path, weights, out, "--seed", 1)
                           + RUNNER) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "other settings (seed)" in err
    assert_same_files(out, cli_out)


# --- the model handler ----------------------------------------------------------------------

class _Recorder:
    """A stand-in for the loaded model: the rows of each call, outputs marked by row."""

    def __init__(self):
        self.calls = []

    def stylize(self, rgbs, rows, alpha):
        assert len({r.shape for r in rgbs}) == 1 and alpha == 0.25
        self.calls.append(list(rows))
        return [np.full(r.shape, row, np.float32) for r, row in zip(rgbs, rows)]


def test_handler_groups_shapes_and_keeps_order(bank_path, weights):
    handler = adain_beam.AdainModelHandler(weights, bank_path, 0.25, batch=3,
                                           share_model=True)
    assert handler.batch_elements_kwargs()["max_batch_size"] == 3
    assert handler.share_model_across_processes()
    examples = [adain_beam.Example(np.zeros(shape, np.float32), row)
                for row, shape in enumerate([(4, 6, 3), (6, 4, 3), (4, 6, 3), (6, 4, 3),
                                             (5, 5, 3)])]
    model = _Recorder()
    results = handler.run_inference(examples, model)
    assert model.calls == [[0, 2], [1, 3], [4]]  # one call a shape, shapes in first order
    assert [r.example.row for r in results] == [0, 1, 2, 3, 4]
    assert [float(r.inference[0, 0, 0]) for r in results] == [0, 1, 2, 3, 4]
    assert handler.get_num_bytes(examples) == sum(e.rgb.nbytes for e in examples)


def test_handler_loads_the_weights_and_the_bank(params, weights, bank_path):
    model = adain_beam.AdainModelHandler(weights, bank_path).load_model()
    bank = style_bank.load_bank(bank_path)
    np.testing.assert_array_equal(model.bank.mean, bank.mean)
    np.testing.assert_array_equal(model.params["decoder"]["conv1_1"]["kernel"],
                                  params["decoder"]["conv1_1"]["kernel"])


# --- without Beam -------------------------------------------------------------------------

def test_missing_beam_is_one_line():
    code = ("import runpy, sys; sys.modules['apache_beam'] = None; "
            "runpy.run_module('adain_jax.beam', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code, "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    err = done.stderr.strip()
    assert done.returncode == 1 and "\n" not in err, err
    assert err.startswith("python -m adain_jax.beam: error:")
    assert 'pip install "adain-jax[beam]"' in err
