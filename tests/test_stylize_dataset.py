"""adain_jax.stylize_dataset: assignment, manifest, resuming, shards, bad inputs, SIN's
own assignment and TFDS input.

Pixels are compared with `adain_jax.apply` jitted here (stylize_helpers.reference_apply)
on the same content and the bank's style statistics, clipped and quantised like
torchvision's save_image: tolerance 1 step of 255, at least 99% of values equal (the job
runs its own jitted program, float32 results differ by ~1e-6). Resumed and sharded runs
must equal the one-process run byte for byte. --sin-compat is checked against the
published procedure restated here with numpy (rgeirhos/Stylized-ImageNet,
code/preprocess_imagenet.py: RandomState(49809), randint per batch of 256, val then train,
ImageFolder order). Images are tiny and of few shapes, so jit compiles a handful of times.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from adain_jax import images, style_bank, transfer
from adain_jax import stylize_dataset as sd
from adain_jax.download import sha256_file
from tests.stylize_helpers import (as_float, assert_matches, pixels, quantise, random_image,
                                   reference_apply, write_image)
from tests.stylize_helpers import bank_path, params, weights  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[1]
SIZES = (40, 32)  # --resize sin at a test size: Resize(40), CenterCrop(32)
CHUNK = 2


@pytest.fixture(scope="module")
def bank(bank_path):
    return style_bank.load_bank(bank_path)


@pytest.fixture(scope="module")
def content_dir(tmp_path_factory):
    """Seven 24 x 32 contents, two in a subfolder (one JPEG)."""
    root = tmp_path_factory.mktemp("contents")
    rng = np.random.default_rng(3)
    for name in ("c0.png", "c1.png", "c2.png", "c3.png", "c4.png", "sub/d0.png", "sub/d1.jpg"):
        write_image(root / name, random_image(rng, 24, 32))
    return root


def cli_args(content_dir, bank_path, weights, out, *extra):
    return ["--content-dir", str(content_dir), "--styles", str(bank_path), "--out", str(out),
            "--weights", str(weights), "--alpha", "0.8", "--chunk-size", str(CHUNK), "-q",
            *map(str, extra)]


@pytest.fixture(scope="module")
def one_run(content_dir, bank_path, weights, tmp_path_factory):
    """The uninterrupted one-process run (keep, png), through main() in-process."""
    out = tmp_path_factory.mktemp("one") / "out"
    assert sd.main(cli_args(content_dir, bank_path, weights, out)) == 0
    return out


def read_manifest(out):
    with open(out / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def expected(params, bank, content, style_name, alpha):
    row = bank.index(style_name)
    stats = transfer.StyleStats(bank.mean[row:row + 1], bank.std[row:row + 1])
    return quantise(np.clip(reference_apply(params, content, stats, alpha), 0, 1))


# --- assignment -------------------------------------------------------------------------

def test_style_row_is_a_pure_function_of_seed_and_id():
    ids = [f"class{i % 7}/img{i}.JPEG" for i in range(600)]
    rows = [sd.style_row(0, i, 5) for i in ids]
    # the documented rule, restated: sha256("SEED/ID"), first 8 bytes big-endian, mod N
    assert rows == [int(hashlib.sha256(f"0/{i}".encode()).hexdigest()[:16], 16) % 5
                    for i in ids]
    assert rows == [sd.style_row(0, i, 5) for i in ids]  # again: no hidden state
    assert rows != [sd.style_row(1, i, 5) for i in ids]  # the seed matters
    counts = np.bincount(rows, minlength=5)
    assert counts.min() > 600 / 5 * 0.7, counts  # every style used, roughly evenly


def test_sin_rows_equal_per_batch_draws():
    """The original draws randint(size=batch) batch by batch; one draw of the whole
    stream must give the same values, also across a batch boundary (256) and an offset."""
    rng = np.random.RandomState(49809)
    stream = np.concatenate([rng.randint(low=0, high=79395, size=256) for _ in range(3)])
    np.testing.assert_array_equal(sd.sin_rows(79395, 700), stream[:700])
    np.testing.assert_array_equal(sd.sin_rows(79395, 300, offset=200), stream[200:500])


# --- values, manifest, formats ------------------------------------------------------------

def test_folder_run_matches_apply_and_manifest(params, bank, weights, content_dir, one_run):
    rows = read_manifest(one_run)
    ids = sorted(p.relative_to(content_dir).as_posix() for p in content_dir.rglob("*.*"))
    assert [r["content_id"] for r in rows] == ids
    weights_sha = sha256_file(weights)
    for r in rows:
        assert r["output"] == r["content_id"].rsplit(".", 1)[0] + ".png"  # tree mirrored
        assert r["style"] == bank.names[sd.style_row(0, r["content_id"], len(bank))]
        assert (r["alpha"], r["seed"], r["weights_sha256"]) == ("0.8", "0", weights_sha)
        content = as_float(pixels(content_dir / r["content_id"]))
        result = pixels(one_run / r["output"])
        assert_matches(result, expected(params, bank, content, r["style"], 0.8))
        assert result.std() > 10  # a varied image: the comparison is not vacuous
    assert len({r["style"] for r in rows}) > 1
    assert (one_run / "failures.csv").read_text() == "content_id,reason\n"


def test_style_sha256_is_the_style_file_s(bank_path, one_run):
    for r in read_manifest(one_run):
        style = bank_path.parent / "images" / r["style"]
        assert r["style_sha256"] == hashlib.sha256(style.read_bytes()).hexdigest()


def test_sin_resize_batched_and_arrayrecord(params, bank, bank_path, weights, tmp_path):
    """--resize sin with --batch 2 into arrayrecord, read by grain."""
    import grain

    root = tmp_path / "c"
    rng = np.random.default_rng(5)
    shapes = [(30, 50), (48, 36), (40, 40), (33, 41)]
    for i, (h, w) in enumerate(shapes):
        write_image(root / f"x{i}.png", random_image(rng, h, w))
    out = tmp_path / "out"
    settings = sd.Settings(alpha=1.0, resize="sin", fmt="arrayrecord", batch=2, chunk=8,
                           sin_sizes=SIZES)
    result = sd.run_job(params, sha256_file(weights), bank, sd.FolderContents(root, out),
                        out, settings)
    assert result == (4, [], True)
    rows = read_manifest(out)
    assert [r["output"] for r in rows] == [
        f"records/chunk-000000.array_record#{k}" for k in range(4)]
    source = grain.sources.ArrayRecordDataSource(
        sorted(str(p) for p in (out / "records").glob("*.array_record")))
    assert len(source) == 4
    for k, r in enumerate(rows):
        header, got = sd.decode_record(source[k])
        assert header["content_id"] == r["content_id"] and header["style"] == r["style"]
        assert (header["height"], header["width"]) == (32, 32)
        # Resize(40) as images.resize_shorter (checked against torchvision elsewhere), then
        # torchvision CenterCrop's offsets: int(round((size - 32) / 2))
        full = images.resize_shorter(as_float(pixels(root / r["content_id"])), 40)[0]
        top, left = (int(round((n - 32) / 2.0)) for n in full.shape[:2])
        content = full[top:top + 32, left:left + 32]
        assert_matches(got, expected(params, bank, content, r["style"], 1.0))


# --- resuming, refusing, shards -------------------------------------------------------------

def test_resume_after_sigkill_equals_uninterrupted(content_dir, bank_path, weights, one_run,
                                                   tmp_path, capsys):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "adain_jax.stylize_dataset",
                             *cli_args(content_dir, bank_path, weights, out)],
                            cwd=ROOT, env=env, stderr=subprocess.PIPE)
    chunks = out / "_chunks"
    deadline = time.monotonic() + 120
    while not (chunks.is_dir() and any(chunks.glob("*.json"))):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    done = len(list(chunks.glob("*.json")))
    assert 1 <= done < 4 and not (out / "manifest.csv").exists()  # killed mid-run
    # what a killed save_image leaves beside an output of a chunk not done yet
    (out / "sub").mkdir(exist_ok=True)
    (out / "sub" / ".d1.png.tmp99999").write_bytes(b"partial")

    assert sd.main(cli_args(content_dir, bank_path, weights, out)) == 0
    assert tree(out) == tree(one_run)

    # other settings against the same --out: refused in one line, nothing changed
    capsys.readouterr()
    assert sd.main(cli_args(content_dir, bank_path, weights, out, "--seed", 1)) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "other settings (seed)" in err
    assert tree(out) == tree(one_run)


def test_shards_union_equals_one_process(params, bank, weights, content_dir, one_run,
                                         tmp_path):
    out = tmp_path / "out"
    settings = sd.Settings(alpha=0.8, chunk=CHUNK)
    contents = sd.FolderContents(content_dir, out)
    spec = sd.job_spec(settings, contents, bank, sha256_file(weights),
                       json.loads((one_run / "job.json").read_text())["styles"])
    sd.check_job(out, spec)
    merged = []
    for index in (2, 0, 1):  # any order; the last to finish writes the manifest
        result = sd.run_job(params, sha256_file(weights), bank, contents, out, settings,
                            shard=(index, 3))
        merged.append(result.merged)
        assert result.failures == []
    assert merged == [False, False, True]
    assert [sd.shard_chunks(4, (i, 3)) for i in range(3)] == [range(0, 1), range(1, 2),
                                                               range(2, 4)]
    assert tree(out) == tree(one_run)


# --- bad inputs ---------------------------------------------------------------------------

def test_corrupt_image_is_logged_and_the_job_goes_on(params, content_dir, bank_path, weights,
                                                     tmp_path, capsys):
    root = tmp_path / "c"
    rng = np.random.default_rng(9)
    write_image(root / "good.png", random_image(rng, 24, 32))
    (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG")
    write_image(root / "later.png", random_image(rng, 24, 32))
    out = tmp_path / "out"
    argv = cli_args(root, bank_path, weights, out)
    argv.remove("-q")  # the progress bar
    assert sd.main(argv) == 2
    err = capsys.readouterr().err
    assert "1 contents could not be stylised" in err
    assert "img/s" in err  # tqdm's rate (and ETA) on stderr
    with pytest.raises(images.ImageError) as reason:
        images.load_image(root / "bad.png")
    with open(out / "failures.csv", newline="") as f:
        assert list(csv.reader(f)) == [["content_id", "reason"],
                                       ["bad.png", reason.value.reason]]
    assert [r["content_id"] for r in read_manifest(out)] == ["good.png", "later.png"]
    assert (out / "later.png").exists() and not (out / "bad.png").exists()


def test_help_explains_the_job(capsys):
    with pytest.raises(SystemExit) as done:
        sd.main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for words in ("--tfds", "--content-dir", "--shard", "--distributed", "--sin-compat",
                  "--format", "arrayrecord", "manifest.csv", "resuming", "exit status"):
        assert words in text


def test_usage_errors_are_one_line(bank_path, weights, content_dir, tmp_path, capsys):
    base = ["--styles", str(bank_path), "--out", str(tmp_path / "o"), "--weights",
            str(weights)]
    for argv, words in (([], "--tfds NAME or --content-dir"),
                        (["--content-dir", str(content_dir), "--shard", "3/3"], "--shard 3/3"),
                        (["--content-dir", str(content_dir), "--sin-compat", "--seed", "1"],
                         "drop --seed")):
        with pytest.raises(SystemExit) as done:
            sd.main(base + argv)
        err = capsys.readouterr().err.strip()
        assert done.value.code == 1 and words in err and "\n" not in err


# --- Stylized-ImageNet's assignment ---------------------------------------------------------

def published_order(root: Path) -> list[str]:
    """torchvision ImageFolder over val, then over train: class folders sorted, files
    sorted (ImageNet's folders hold images only)."""
    order = []
    for split in ("val", "train"):
        for cls in sorted(os.listdir(root / split)):
            order += [f"{split}/{cls}/{f}" for f in sorted(os.listdir(root / split / cls))]
    return order


def published_draws(count: int, n_styles: int, batch: int = 256) -> list[int]:
    """StyleLoader: one RandomState(seed=49809), randint(low=0, high=N, size=batch) per
    batch of the DataLoader, the same generator over val and then train."""
    rng = np.random.RandomState(seed=49809)
    draws = []
    for start in range(0, count, batch):
        draws += list(rng.randint(low=0, high=n_styles, size=min(batch, count - start)))
    return draws


def test_sin_compat_reproduces_published_assignment(params, bank, bank_path, weights,
                                                    tmp_path):
    root = tmp_path / "imagenet"
    rng = np.random.default_rng(11)
    # "n1-b" sorts before "n1/" as a path string but after "n1" as a folder name
    for split, cls, name in [("val", "n1", "v1.JPEG"), ("val", "n1-b", "v0.JPEG"),
                             ("train", "n1", "t_b.JPEG"),
                             ("train", "n1", "t_a.JPEG"), ("train", "n1-b", "t_c.JPEG"),
                             ("train", "n2", "t_d.JPEG")]:
        write_image(root / split / cls / name, random_image(rng, 36, 44))
    out = tmp_path / "out"
    sha = sha256_file(weights)
    settings = sd.Settings(seed=sd.SIN_SEED, resize="sin", sin_compat=True, batch=2,
                           chunk=4, sin_sizes=SIZES)
    assert sd.run_job(params, sha, bank, sd.FolderContents(root, out, sin_compat=True),
                      out, settings).merged
    rows = read_manifest(out)
    order = published_order(root)
    draws = published_draws(len(order), len(bank))
    assert [r["content_id"] for r in rows] == order
    styles = sorted(os.listdir(bank_path.parent / "images"))  # SIN's all_styles
    assert [r["style"] for r in rows] == [styles[d] for d in draws]
    assert {(r["alpha"], r["seed"]) for r in rows} == {("1.0", "49809")}
    assert [r["output"] for r in rows] == [o.replace(".JPEG", ".png") for o in order]

    # train/ alone continues the stream after val's 2 images
    train_out = tmp_path / "train_out"
    sd.run_job(params, sha, bank, sd.FolderContents(root / "train", train_out, True),
               train_out, settings)
    assert [r["style"] for r in read_manifest(train_out)] == [r["style"] for r in rows[2:]]


# --- TFDS -------------------------------------------------------------------------------

def test_tfds_mock_imagenet(params, bank, weights, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    sha = sha256_file(weights)
    with tfds.testing.mock_data(num_examples=4):
        source = tfds.data_source("imagenet2012", split="validation", download=False)
        examples = [source[i] for i in range(4)]
        names = source.dataset_info.features["label"].names
        out = tmp_path / "out"
        settings = sd.Settings(resize="sin", batch=2, chunk=2, sin_sizes=SIZES)
        contents = sd.TfdsContents("imagenet2012", "validation")
        assert sd.run_job(params, sha, bank, contents, out, settings).images == 4
        rows = read_manifest(out)
        text = lambda x: x.decode() if isinstance(x, bytes) else str(x)
        assert [r["content_id"] for r in rows] == [text(e["file_name"]) for e in examples]
        for r, e in zip(rows, examples):
            assert r["output"] == (f"validation/{names[int(e['label'])]}/"
                                   f"{Path(text(e['file_name'])).stem}.png")
            assert r["style"] == bank.names[sd.style_row(0, r["content_id"], len(bank))]
        content = sd.sin_preprocess(as_float(examples[0]["image"]), SIZES)
        assert_matches(pixels(out / rows[0]["output"]),
                       expected(params, bank, content, rows[0]["style"], 1.0))

        # --sin-compat: ImageFolder order (label, file_name); train after validation's 4
        compat = sd.TfdsContents("imagenet2012", "train", sin_compat=True)
        train = tfds.data_source("imagenet2012", split="train", download=False)
        keyed = sorted((int(train[i]["label"]), text(train[i]["file_name"]))
                       for i in range(len(train)))
        assert compat.offset == 4
        assert [compat.load(p).content_id for p in range(4)] == [n for _, n in keyed]
        row_of = sd.assigner(compat, bank, sd.Settings(sin_compat=True))
        assert [row_of(sd.Item(p, "", "", None, None)) for p in range(4)] == \
            published_draws(8, len(bank))[4:]
