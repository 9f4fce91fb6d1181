"""Tests for adain_jax/data.py: the Grain training pipeline.

Crops are checked against an independent reference: the test computes each expected
resized size itself (test images have exact aspect ratios), resizes the decoded pixels
with PIL's bilinear filter, and requires every output crop to equal (tolerance 0, uint8)
a contiguous window of exactly the source it came from. Images are tiny (resize=24,
crop_size=16) to keep the file fast.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil

import grain
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from adain_jax import data, images

RESIZE, CROP = 24, 16


# ---------------------------------------------------------------- helpers

def _noise(rng, h, w):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path, pixels, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP",
           ".webp": "WEBP", ".ppm": "PPM"}[path.suffix.lower()]
    Image.fromarray(pixels).save(path, format=fmt, **kwargs)
    return path


def _decoded(path):
    """Pixels as the test's own plain PIL decode gives them (no EXIF handling)."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _reference(pixels, resize=RESIZE, mode="shorter"):
    """Independent resize: sizes computed here (exact aspect only), PIL bilinear."""
    h, w = pixels.shape[:2]
    if mode == "square":
        size = (resize, resize)
    else:
        short, long = min(h, w), max(h, w)
        assert (long * resize) % short == 0, "test images must have an exact aspect"
        long_out = long * resize // short
        size = (resize, long_out) if w <= h else (long_out, resize)
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR))


def _windows(crop, image):
    """(top, left) of every window of `image` exactly equal to `crop`."""
    if image.shape[0] < crop.shape[0] or image.shape[1] < crop.shape[1]:
        return []
    win = sliding_window_view(image, crop.shape)[:, :, 0]
    return [tuple(p) for p in np.argwhere((win == crop).all(axis=(-3, -2, -1)))]


def _source_of(crop, references):
    """Name of the one reference containing `crop`, and the window; fails otherwise."""
    hits = [(name, pos) for name, ref in references.items() for pos in _windows(crop, ref)]
    assert len(hits) == 1, f"crop matches {len(hits)} windows: {hits[:4]}"
    return hits[0]


def _take(it, n):
    return [next(it) for _ in range(n)]


def _cfg(**kwargs):
    base = dict(resize=RESIZE, crop_size=CROP, batch_size=3, seed=1, threads=4)
    base.update(kwargs)
    return data.DataConfig(**base)


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Content and style trees: nested folders, mixed-case extensions, 3 corrupt files,
    and files that must be ignored. Returns paths plus per-file reference resizes."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    content, styles = root / "content", root / "styles"
    # (relative path, height, width); every size resizes to exact integers at 24.
    good = [("a/n0.png", 20, 30), ("a/deep/n1.PNG", 30, 20), ("b/n2.jpg", 16, 40),
            ("b/n3.JPEG", 24, 24), ("n4.Png", 12, 18), ("n5.bmp", 18, 27),
            ("c/n6.WebP", 20, 25), ("c/d/e/n7.ppm", 40, 16)]
    refs = {}
    for rel, h, w in good:
        path = _save(content / rel, _noise(rng, h, w),
                     **({"lossless": True} if rel.lower().endswith("webp") else {}))
        refs[str(path)] = _reference(_decoded(path))
    # EXIF orientation 6 (rotate 90 degrees clockwise to display): stored 20x30, shown 30x20.
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = _save(content / "b/rot.jpg", _noise(rng, 20, 30), exif=exif.tobytes())
    refs[str(rotated)] = _reference(np.rot90(_decoded(rotated), k=-1))
    # Corrupt: random bytes, a PNG cut in half, an empty file.
    (content / "junk.jpg").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    whole = _save(root / "whole.png", _noise(rng, 30, 30)).read_bytes()
    (content / "a/trunc.png").write_bytes(whole[: len(whole) // 2])
    (content / "c/empty.jpeg").write_bytes(b"")
    # Ignored: not an image extension (garbage, so counting it would show).
    (content / "notes.txt").write_text("not an image")
    (content / "a/README").write_text("nope")

    style_refs = {}
    for rel, h, w in [("x/s0.jpg", 30, 20), ("y/z/s1.PNG", 24, 36), ("s2.JpEg", 16, 16),
                      ("s3.bmp", 20, 20)]:
        path = _save(styles / rel, _noise(rng, h, w))
        style_refs[str(path)] = _reference(_decoded(path))
    (styles / "x/ignored.psd").write_bytes(b"8BPS")
    return {"content": str(content), "styles": str(styles), "refs": refs,
            "style_refs": style_refs, "corrupt": 3}


@pytest.fixture(scope="module")
def solid(tmp_path_factory):
    """8 single-colour content images (colour identifies the file) and 2 style images."""
    root = tmp_path_factory.mktemp("solid")
    colours = [(10 * i, 255 - 10 * i, 7 * i) for i in range(8)]
    for i, colour in enumerate(colours):
        _save(root / "content" / f"{i}.png", np.full((20 + i, 30, 3), colour, np.uint8))
    for i in range(2):
        _save(root / "styles" / f"{i}.png", np.full((30, 30, 3), 200 + i, np.uint8))
    return {"content": str(root / "content"), "styles": str(root / "styles"),
            "colours": colours}


def _colour(crop):
    assert (crop == crop[0, 0]).all(), "a solid image's crop must be solid"
    return tuple(int(v) for v in crop[0, 0])


# ---------------------------------------------------------------- folder source

def test_folder_batches_are_crops_of_reference_resizes(folders, tmp_path):
    # A fresh copy: skipped_files() counts distinct paths, which other tests may have met.
    content = shutil.copytree(folders["content"], tmp_path / "content")
    refs = {str(content / os.path.relpath(p, folders["content"])): ref
            for p, ref in folders["refs"].items()}
    before = data.skipped_files()
    it = data.make_iterator(_cfg(content_dir=str(content), styles=folders["styles"]))
    batches = _take(it, 4)
    for batch in batches:
        assert set(batch) == {"content", "style"}
        for key in batch:
            assert batch[key].shape == (3, CROP, CROP, 3) and batch[key].dtype == np.uint8
    contents = [c for b in batches for c in b["content"]]
    sources = [_source_of(c, refs) for c in contents]
    # 9 readable content files: the first 9 crops are one epoch, each file exactly once.
    assert sorted(name for name, _ in sources[:9]) == sorted(refs)
    # Crops are placed at random in both directions, not always in a corner.
    assert len({top for _, (top, _) in sources}) > 1
    assert len({left for _, (_, left) in sources}) > 1
    styles = [_source_of(s, folders["style_refs"])[0] for b in batches for s in b["style"]]
    assert len(set(styles)) > 1
    # 4 batches consume more than one epoch, so each corrupt file was met (and counted
    # once) exactly; the .txt, README and .psd were never opened.
    assert data.skipped_files() - before == folders["corrupt"]


def test_corrupt_style_files_are_skipped_and_counted(solid, tmp_path):
    styles = tmp_path / "styles"
    _save(styles / "good.png", np.full((30, 30, 3), 77, np.uint8))
    (styles / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (styles / "sub").mkdir()
    (styles / "sub/empty.webp").write_bytes(b"")
    before = data.skipped_files()
    it = data.make_iterator(_cfg(content_dir=solid["content"], styles=str(styles),
                                 batch_size=8))
    batches = _take(it, 3)
    assert all((b["style"] == 77).all() for b in batches)
    # Every content image still appears once per epoch despite the bad styles.
    assert sorted(_colour(c) for c in batches[0]["content"]) == sorted(solid["colours"])
    assert data.skipped_files() - before == 2


def test_find_images_follows_the_shared_folder_rule(tmp_path, caplog):
    """train.py reads folders as stylize.py does (images.list_image_files): subfolders,
    GIF (its first frame) and TIFF included, hidden names ignored, other files logged."""
    root = tmp_path / "styles"
    (root / "sub").mkdir(parents=True)
    (root / ".git").mkdir()
    frame = np.array([[[0, 64, 128], [255, 0, 0]]], np.uint8)  # GIF's palette keeps these
    Image.fromarray(frame).save(root / "sub/b.GIF", save_all=True,
                                append_images=[Image.fromarray(255 - frame)])
    Image.fromarray(frame).save(root / "c.tif")
    _save(root / "a.png", frame)
    _save(root / ".hidden.png", frame)
    _save(root / ".git/x.png", frame)
    (root / "notes.txt").write_text("x")
    found = data.find_images(str(root), "style")
    assert found == [str(root / "a.png"), str(root / "c.tif"), str(root / "sub/b.GIF")]
    assert found == [str(p) for p in images.list_image_files(root).found]
    assert "skipped 1 file" in caplog.text and "notes.txt" in caplog.text
    assert "hidden" not in caplog.text and ".git" not in caplog.text
    np.testing.assert_array_equal(np.asarray(data.read_image(found[2])), frame)


# ---------------------------------------------------------------- resize semantics

def _gradient(h=30, w=60):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([4 * x, 8 * y, np.full_like(x, 50)], -1).astype(np.uint8)


def _linear_expected(n_out, n_in, slope):
    """A linear ramp resampled by any symmetric filter: slope * source centre."""
    scale = n_in / n_out
    return slope * ((np.arange(n_out) + 0.5) * scale - 0.5)


@pytest.mark.parametrize("mode, size", [("shorter", (24, 48)), ("square", (24, 24))])
def test_resize_values_and_aspect(mode, size):
    out = np.asarray(data.resize_image(Image.fromarray(_gradient()), RESIZE, mode))
    assert out.shape == (*size, 3)
    # Away from the borders (where the filter is cut) the ramps must be exact to within
    # PIL's uint8 rounding: tolerance 1 level. A wrong scale on either axis changes the
    # ramp's slope by several levels per pixel.
    inner = slice(3, -3)
    red = np.broadcast_to(_linear_expected(size[1], 60, 4.0), size)
    green = np.broadcast_to(_linear_expected(size[0], 30, 8.0)[:, None], size)
    np.testing.assert_allclose(out[inner, inner, 0], red[inner, inner], atol=1)
    np.testing.assert_allclose(out[inner, inner, 1], green[inner, inner], atol=1)
    assert (out[..., 2] == 50).all()


def test_resized_size():
    assert data.resized_size(640, 480, 512) == (682, 512)  # torchvision rounds down
    assert data.resized_size(480, 640, 512) == (512, 682)
    assert data.resized_size(100, 300, 512, "square") == (512, 512)
    assert data.resized_size(10, 10, 512) == (512, 512)  # small images are enlarged


@pytest.mark.parametrize("mode", ["shorter", "square"])
def test_pipeline_resize_mode(mode, tmp_path):
    _save(tmp_path / "c/g.png", _gradient())
    _save(tmp_path / "s/g.png", _gradient())
    it = data.make_iterator(_cfg(content_dir=str(tmp_path / "c"), styles=str(tmp_path / "s"),
                                 crop_size=RESIZE, resize_mode=mode, batch_size=4))
    batch = next(it)
    ref = _reference(_gradient(), RESIZE, mode)
    for crop in [*batch["content"], *batch["style"]]:
        assert len(_windows(crop, ref)) == 1
    if mode == "square":  # the crop is the whole squashed image
        assert all((c == ref).all() for c in batch["content"])


def test_random_crop_covers_every_position():
    h, w = 20, 30
    pixels = np.stack(np.mgrid[0:h, 0:w], -1)  # each pixel holds its (row, column)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(3000):
        crop = data.random_crop(pixels, CROP, rng)
        top, left = crop[0, 0]
        np.testing.assert_array_equal(crop, pixels[top:top + CROP, left:left + CROP])
        seen.add((int(top), int(left)))
    # Every one of the 5 x 15 placements occurs (uniform: each has probability 1/75).
    assert seen == {(t, l) for t in range(h - CROP + 1) for l in range(w - CROP + 1)}


def test_exif_orientation_and_16_bit(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 degrees counter-clockwise to display
    pixels = _noise(np.random.default_rng(3), 10, 14)
    _save(tmp_path / "r.png", pixels, exif=exif.tobytes())
    np.testing.assert_array_equal(np.asarray(data.read_image(str(tmp_path / "r.png"))),
                                  np.rot90(pixels, k=1))
    deep = (np.arange(12 * 5).reshape(5, 12) * 1000).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")
    out = np.asarray(data.read_image(str(tmp_path / "d.png")))
    assert out.shape == (5, 12, 3)
    np.testing.assert_array_equal(out, np.repeat((deep >> 8).astype(np.uint8)[..., None], 3, -1))


def test_large_jpeg_reduced_decode_is_close(tmp_path):
    # A smooth 240x160 image: with resize 24, libjpeg may decode it at 1/2 (both sides
    # stay >= 2 * resize = 48) instead of full size.
    y, x = np.mgrid[0:160, 0:240] / 20.0
    pixels = np.stack([128 + 100 * np.sin(x), 128 + 100 * np.cos(y),
                       128 + 60 * np.sin(x + y)], -1).astype(np.uint8)
    path = _save(tmp_path / "big.jpg", pixels, quality=95)
    reduced = data.read_image(str(path), min_size=2 * RESIZE)
    assert reduced.size == (120, 80)  # decoded at 1/2
    full = data.read_image(str(path))
    assert full.size == (240, 160)
    a = np.asarray(data.resize_image(reduced, RESIZE)).astype(int)
    b = np.asarray(data.resize_image(full, RESIZE)).astype(int)
    assert a.shape == b.shape == (24, 36, 3)
    # DCT scaling vs. antialiased bilinear: within 4 levels everywhere, 1 on average.
    assert np.abs(a - b).max() <= 4 and np.abs(a - b).mean() <= 1.0


# ---------------------------------------------------------------- determinism, resume

def _same(a, b):
    return all((x["content"] == y["content"]).all() and (x["style"] == y["style"]).all()
               for x, y in zip(a, b, strict=True))


def test_determinism(folders):
    cfg = _cfg(content_dir=folders["content"], styles=folders["styles"])
    first = _take(data.make_iterator(cfg), 5)
    # Same seed, different decoding threads: identical batches.
    assert _same(first, _take(data.make_iterator(dataclasses.replace(cfg, threads=0)), 5))
    other = _take(data.make_iterator(dataclasses.replace(cfg, seed=2)), 5)
    assert not _same(first[:1], other[:1]) and not _same(first, other)


def test_checkpoint_resume(folders):
    cfg = _cfg(content_dir=folders["content"], styles=folders["styles"])
    it = data.make_iterator(cfg)
    _take(it, 2)
    state = json.loads(json.dumps(it.get_state()))  # states must survive a file
    expected = _take(it, 5)  # crosses the epoch boundary (9 readable files, 3 per batch)
    resumed = data.make_iterator(cfg)
    resumed.set_state(state)
    assert _same(expected, _take(resumed, 5))
    # And a fresh iterator is not already at that point.
    assert not _same(expected[:1], _take(data.make_iterator(cfg), 1))


def test_grain_checkpoint_handler_roundtrip(folders, tmp_path):
    cfg = _cfg(content_dir=folders["content"], styles=folders["styles"])
    it = data.make_iterator(cfg)
    _take(it, 3)
    handler = grain.checkpoint.CheckpointHandler()  # what Orbax calls for CheckpointSave
    (tmp_path / "ckpt").mkdir()
    handler.save(tmp_path / "ckpt", args=grain.checkpoint.CheckpointSave(it))
    expected = _take(it, 2)
    resumed = data.make_iterator(cfg)
    handler.restore(tmp_path / "ckpt", args=grain.checkpoint.CheckpointRestore(resumed))
    assert _same(expected, _take(resumed, 2))


# ---------------------------------------------------------------- sharding

def test_shards_are_disjoint_and_cover_one_epoch(solid):
    seen = []
    for index in range(2):
        it = data.make_iterator(_cfg(content_dir=solid["content"], styles=solid["styles"],
                                     batch_size=2, process_index=index, process_count=2))
        epoch = [_colour(c) for b in _take(it, 2) for c in b["content"]]  # 4 files per shard
        assert len(set(epoch)) == 4
        seen.append(set(epoch))
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(solid["colours"])


def test_worker_processes_give_the_same_batches(solid):
    cfg = _cfg(content_dir=solid["content"], styles=solid["styles"], batch_size=4)
    expected = _take(data.make_iterator(cfg), 3)
    it = data.make_iterator(dataclasses.replace(cfg, workers=2))
    try:
        assert _same(expected, _take(it, 3))
    finally:
        it.close()


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs, message", [
    (dict(), "no content images"),
    (dict(tfds="coco/2017", content_dir="x"), "not both"),
    (dict(content_dir="C"), "no style images"),
    (dict(content_dir="C", styles="S", crop_size=32), "larger than --resize"),
    (dict(content_dir="C", styles="S", resize_mode="fit"), "unknown resize mode"),
    (dict(content_dir="/nonexistent/dir", styles="S"), "does not exist"),
    (dict(content_dir="EMPTY", styles="S"), "no content images (jpg"),
    (dict(content_dir="C", styles="S", process_count=100), "cannot be shared"),
], ids=["neither", "both", "no-styles", "crop", "mode", "missing-dir", "empty-dir", "shards"])
def test_data_errors_are_one_line(kwargs, message, folders, tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "a.txt").write_text("x")
    subst = {"C": folders["content"], "S": folders["styles"], "EMPTY": str(tmp_path / "empty")}
    kwargs = {k: subst.get(v, v) for k, v in kwargs.items()}
    with pytest.raises(data.DataError) as err:
        data.make_iterator(_cfg(**kwargs))
    assert message in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- TFDS

def test_parse_tfds_spec():
    assert data.parse_tfds_spec("coco/2017") == ("coco/2017", "train")
    assert data.parse_tfds_spec("coco/2017:validation") == ("coco/2017", "validation")
    assert data.parse_tfds_spec("coco/2017:train[:10%]") == ("coco/2017", "train[:10%]")
    assert data.parse_tfds_spec("coco/2017:1.1.0") == ("coco/2017:1.1.0", "train")
    assert data.parse_tfds_spec("coco/2017:1.1.0:test") == ("coco/2017:1.1.0", "test")


def test_find_image_feature_nested():
    tfds = pytest.importorskip("tensorflow_datasets")
    f = tfds.features
    features = f.FeaturesDict({"id": np.int64,
                               "meta": {"label": f.ClassLabel(num_classes=2)},
                               "x": {"caption": f.Text(), "photo": f.Image()}})
    assert data.find_image_feature(features) == ("x", "photo")
    assert data.find_image_feature(f.FeaturesDict({"t": f.Text()})) is None


def test_tfds_mock_coco(folders):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=5):
        records = tfds.data_source("coco/2017", split="train", download=False)
        assert data.find_image_feature(records.dataset_info.features) == ("image",)
        refs = {i: _reference(records[i]["image"], mode="square") for i in range(5)}
        it = data.make_iterator(_cfg(tfds="coco/2017", styles=folders["styles"],
                                     resize_mode="square", batch_size=5))
        batch, second = _take(it, 2)
    assert batch["content"].shape == batch["style"].shape == (5, CROP, CROP, 3)
    assert batch["content"].dtype == np.uint8
    # One epoch: each of the 5 records once, each crop a window of its squashed image.
    assert sorted(_source_of(c, refs)[0] for c in batch["content"]) == list(range(5))
    style_refs = {p: _reference(_decoded(p), mode="square") for p in folders["style_refs"]}
    for s in [*batch["style"], *second["style"]]:
        _source_of(s, style_refs)


class _FlakyRecords:
    """A TFDS data source whose record 2 cannot be decoded and record 3 is grayscale."""

    def __init__(self, inner):
        self.inner, self.dataset_info = inner, inner.dataset_info

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, index):
        if index == 2:
            raise OSError("image file is truncated")
        record = self.inner[index]
        if index == 3:
            record = {**record, "image": record["image"][..., :1]}
        return record


def test_tfds_bad_and_grayscale_records(folders, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=5):
        records = tfds.data_source("coco/2017", split="train", download=False)
        refs = {i: _reference(records[i]["image"], mode="square") for i in (0, 1, 4)}
        refs[3] = _reference(np.repeat(records[3]["image"][..., :1], 3, -1), mode="square")
        original = tfds.data_source
        monkeypatch.setattr(tfds, "data_source", lambda *a, **k: _FlakyRecords(original(*a, **k)))
        before = data.skipped_files()
        it = data.make_iterator(_cfg(tfds="coco/2017:train", styles=folders["styles"],
                                     resize_mode="square", batch_size=4))
        batch, _ = _take(it, 2)
    assert sorted(_source_of(c, refs)[0] for c in batch["content"]) == [0, 1, 3, 4]
    assert data.skipped_files() - before == 1


def test_tfds_errors(folders, tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(data.DataError, match="unknown TFDS dataset 'no_such_dataset_xyz'") as err:
        data.make_iterator(_cfg(tfds="no_such_dataset_xyz", styles=folders["styles"]))
    assert "\n" not in str(err.value)
    # A known dataset that is not prepared in data_dir: one line naming the fix.
    with pytest.raises(data.DataError, match="tfds build mnist") as err:
        data.make_iterator(_cfg(tfds="mnist", data_dir=str(tmp_path), styles=folders["styles"]))
    assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)


def test_tfds_without_image_feature(folders):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=2):
        with pytest.raises(data.DataError, match="no Image feature"):
            data.make_iterator(_cfg(tfds="imdb_reviews", styles=folders["styles"]))


def test_epochs_are_reshuffled(solid):
    it = data.make_iterator(_cfg(content_dir=solid["content"], styles=solid["styles"],
                                 batch_size=8))
    epochs = [[_colour(c) for c in next(it)["content"]] for _ in range(3)]
    for epoch in epochs:
        assert sorted(epoch) == sorted(solid["colours"])
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]


def test_all_unreadable_raises_data_error(solid, tmp_path, monkeypatch):
    (tmp_path / "s").mkdir()
    (tmp_path / "s/a.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "s/b.png").write_bytes(b"")
    it = data.make_iterator(_cfg(content_dir=solid["content"], styles=str(tmp_path / "s")))
    with pytest.raises(data.DataError, match="none of the 2 style images") as err:
        next(it)
    assert "\n" not in str(err.value)
    # All content unreadable: stops after MAX_CONSECUTIVE_SKIPS instead of spinning.
    monkeypatch.setattr(data, "MAX_CONSECUTIVE_SKIPS", 20)
    (tmp_path / "c").mkdir()
    (tmp_path / "c/a.png").write_bytes(b"")
    it = data.make_iterator(_cfg(content_dir=str(tmp_path / "c"), styles=solid["styles"]))
    with pytest.raises(data.DataError, match="over 20 consecutive content images"):
        next(it)


# ---------------------------------------------------------------- seeds per process, style retries

def test_processes_draw_their_own_styles_and_together_cover_one_epoch(solid, tmp_path):
    """Two processes with the same seed: disjoint contents that make up one process's
    epoch, and different style draws (the process index is part of the seed; 8 styles,
    so equal sequences by chance have probability 8^-4)."""
    styles = tmp_path / "styles"
    for i in range(8):
        _save(styles / f"s{i}.png", np.full((24, 24, 3), (30 * i, 90, 255 - 30 * i), np.uint8))
    cfg = _cfg(content_dir=solid["content"], styles=str(styles), batch_size=4)
    whole = next(data.make_iterator(dataclasses.replace(cfg, batch_size=8)))
    one_epoch = sorted(_colour(c) for c in whole["content"])
    assert one_epoch == sorted(solid["colours"])
    contents, style_draws = [], []
    for index in range(2):
        batch = next(data.make_iterator(dataclasses.replace(cfg, process_index=index,
                                                            process_count=2)))
        contents.append([_colour(c) for c in batch["content"]])
        style_draws.append([_colour(s) for s in batch["style"]])
    assert sorted(contents[0] + contents[1]) == one_epoch
    assert style_draws[0] != style_draws[1], style_draws


def test_one_readable_style_among_many_unreadable_still_trains(solid, tmp_path):
    """63 empty style files and one image: STYLE_TRIES random draws alone would miss the
    image for most contents ((63/64)^32 = 0.6), so the scan after them must find it."""
    assert (63 / 64) ** data.STYLE_TRIES > 0.5  # else this test no longer needs the scan
    styles = tmp_path / "styles"
    _save(styles / "s40_good.png", np.full((30, 30, 3), 77, np.uint8))
    for i in range(63):
        (styles / f"s{i:02d}.png").write_bytes(b"")
    it = data.make_iterator(_cfg(content_dir=solid["content"], styles=str(styles),
                                 batch_size=8))
    batch = next(it)
    assert (batch["style"] == 77).all()
    assert sorted(_colour(c) for c in batch["content"]) == sorted(solid["colours"])
