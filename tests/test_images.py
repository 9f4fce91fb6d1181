"""adain_jax.images: loading every kind of file PIL gives us, refusals, resize/crop, saving.

References are NumPy float64 computations on the pixels written (or on PIL's raw decode,
before any of our conversions). Tolerances: lossless formats 1e-6 (float32 rounding of
v/255 or v/65535); JPEG decodes are compared with the raw decoded samples, so also 1e-6.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from adain_jax import images
from adain_jax.images import ImageError, load_image, save_image

TOL = 1e-6


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _u8(rng, *shape):
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _assert_one_line_error(err: ImageError, path):
    message = str(err)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert path.name in message


# --- formats and modes -------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".png", ".bmp", ".ppm", ".tif", ".webp"])
def test_rgb_lossless(tmp_path, rng, suffix):
    pixels = _u8(rng, 5, 7, 3)
    path = tmp_path / f"a{suffix}"
    Image.fromarray(pixels, "RGB").save(path, **({"lossless": True} if suffix == ".webp" else {}))
    loaded = load_image(path)
    assert loaded.rgb.dtype == np.float32 and loaded.alpha is None
    np.testing.assert_allclose(loaded.rgb, pixels / 255.0, atol=TOL, rtol=0)


def test_rgb_jpeg_matches_raw_decode(tmp_path, rng):
    path = tmp_path / "a.jpg"
    Image.fromarray(_u8(rng, 16, 12, 3), "RGB").save(path, quality=90)
    with Image.open(path) as img:
        raw = np.asarray(img, np.float64)
    np.testing.assert_allclose(load_image(path).rgb, raw / 255.0, atol=TOL, rtol=0)


def test_grayscale_l_becomes_rgb(tmp_path, rng):
    gray = _u8(rng, 6, 4)
    path = tmp_path / "g.png"
    Image.fromarray(gray, "L").save(path)
    loaded = load_image(path)
    assert loaded.alpha is None
    np.testing.assert_allclose(loaded.rgb, np.repeat(gray[..., None], 3, -1) / 255.0,
                               atol=TOL, rtol=0)


def test_one_bit(tmp_path, rng):
    bits = rng.random((9, 5)) > 0.5
    path = tmp_path / "b.png"
    Image.fromarray(bits).save(path)
    with Image.open(path) as img:
        assert img.mode == "1"
    np.testing.assert_array_equal(load_image(path).rgb, np.repeat(bits[..., None], 3, -1) * 1.0)


def _palette_image(rng, transparency=None):
    palette = _u8(rng, 4, 3)
    index = rng.integers(0, 4, (6, 8)).astype(np.uint8)
    img = Image.fromarray(index, "P")
    img.putpalette(palette.ravel().tolist())
    return img, palette, index


def test_palette_without_transparency(tmp_path, rng):
    img, palette, index = _palette_image(rng)
    path = tmp_path / "p.png"
    img.save(path)
    loaded = load_image(path)
    assert loaded.alpha is None
    np.testing.assert_allclose(loaded.rgb, palette[index] / 255.0, atol=TOL, rtol=0)


def test_palette_with_transparency(tmp_path, rng):
    img, palette, index = _palette_image(rng)
    path = tmp_path / "pt.png"
    img.save(path, transparency=2)  # palette entry 2 is fully transparent
    loaded = load_image(path)
    np.testing.assert_allclose(loaded.rgb, palette[index] / 255.0, atol=TOL, rtol=0)
    np.testing.assert_array_equal(loaded.alpha, np.where(index == 2, 0.0, 1.0))
    assert (index == 2).any() and (index != 2).any()


def test_rgba_alpha_kept_separately(tmp_path, rng):
    pixels = _u8(rng, 5, 6, 4)
    path = tmp_path / "a.png"
    Image.fromarray(pixels, "RGBA").save(path)
    loaded = load_image(path)
    # straight (not premultiplied) colour: RGB is what was written, whatever the alpha
    np.testing.assert_allclose(loaded.rgb, pixels[..., :3] / 255.0, atol=TOL, rtol=0)
    np.testing.assert_allclose(loaded.alpha, pixels[..., 3] / 255.0, atol=TOL, rtol=0)


def test_la(tmp_path, rng):
    pixels = _u8(rng, 4, 9, 2)
    path = tmp_path / "la.png"
    Image.fromarray(pixels, "LA").save(path)
    loaded = load_image(path)
    np.testing.assert_allclose(loaded.rgb, np.repeat(pixels[..., :1], 3, -1) / 255.0,
                               atol=TOL, rtol=0)
    np.testing.assert_allclose(loaded.alpha, pixels[..., 1] / 255.0, atol=TOL, rtol=0)


def test_cmyk_jpeg(tmp_path, rng):
    path = tmp_path / "c.jpg"
    Image.fromarray(_u8(rng, 8, 8, 4), "CMYK").save(path, quality=95)
    with Image.open(path) as img:
        assert img.mode == "CMYK"
        cmyk = np.asarray(img, np.float64)  # decoded samples, before any RGB conversion
    # naive (no ICC profile) CMYK -> RGB: (255 - c) * (255 - k) / 255, PIL's integer formula
    expected = (255 - cmyk[..., :3]) * (255 - cmyk[..., 3:]) / 255.0 / 255.0
    np.testing.assert_allclose(load_image(path).rgb, expected, atol=1 / 255 + TOL, rtol=0)


def test_16bit_grayscale_png(tmp_path, rng):
    values = rng.integers(0, 65536, (7, 5)).astype(np.uint16)
    values[0, 0], values[0, 1] = 0, 65535
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)  # uint16 -> mode I;16
    with Image.open(path) as img:
        assert img.mode in ("I;16", "I")  # PIL versions differ
    loaded = load_image(path)
    expected = np.repeat((values.astype(np.float64) / 65535.0)[..., None], 3, -1)
    np.testing.assert_allclose(loaded.rgb, expected, atol=TOL, rtol=0)
    assert loaded.rgb[0, 0, 0] == 0.0 and loaded.rgb[0, 1, 0] == 1.0


def test_32bit_integer_tiff(tmp_path, rng):
    # mode "I" (what older PIL gives 16-bit PNGs as) is scaled as 16-bit; values that do
    # not fit 16 bits are refused rather than silently clipped
    values = rng.integers(0, 65536, (3, 5)).astype(np.int32)
    path = tmp_path / "i32.tif"
    Image.fromarray(values, "I").save(path)
    expected = np.repeat((values / 65535.0)[..., None], 3, -1)
    np.testing.assert_allclose(load_image(path).rgb, expected, atol=TOL, rtol=0)
    values[1, 2] = 70000
    Image.fromarray(values, "I").save(path)
    _refused(path, "outside 0..65535")


def _png(width, height, bit_depth, color_type, raw_rows: bytes) -> bytes:
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw_rows))
            + chunk(b"IEND", b""))


def test_16bit_rgb_png(tmp_path, rng):
    # PIL cannot write 16-bit RGB, so the PNG is built by hand. PIL decodes it to 8-bit RGB
    # (the high byte of each sample); the result stays within one 8-bit step of v / 65535.
    values = rng.integers(0, 65536, (3, 4, 3)).astype(">u2")
    rows = b"".join(b"\x00" + row.tobytes() for row in values)
    path = tmp_path / "rgb16.png"
    path.write_bytes(_png(4, 3, 16, 2, rows))
    loaded = load_image(path)
    np.testing.assert_allclose(loaded.rgb, (values >> 8) / 255.0, atol=TOL, rtol=0)
    np.testing.assert_allclose(loaded.rgb, values / 65535.0, atol=1 / 255, rtol=0)


@pytest.mark.parametrize("orientation, turns", [(6, -1), (8, 1), (3, 2)])
def test_exif_orientation_applied(tmp_path, rng, orientation, turns):
    path = tmp_path / f"o{orientation}.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(_u8(rng, 8, 16, 3), "RGB").save(path, exif=exif, quality=95)
    with Image.open(path) as img:
        raw = np.asarray(img.convert("RGB"), np.float64)  # stored pixels, not rotated
    loaded = load_image(path)
    np.testing.assert_allclose(loaded.rgb, np.rot90(raw, k=turns) / 255.0, atol=TOL, rtol=0)
    if orientation != 3:
        assert loaded.rgb.shape == (16, 8, 3)


def test_one_by_one(tmp_path):
    path = tmp_path / "dot.png"
    Image.fromarray(np.array([[[10, 20, 250]]], np.uint8), "RGB").save(path)
    loaded = load_image(path)
    np.testing.assert_allclose(loaded.rgb, [[[10 / 255, 20 / 255, 250 / 255]]], atol=TOL)


# --- refusals ------------------------------------------------------------------------------

def _refused(path, *words):
    with pytest.raises(ImageError) as info:
        load_image(path)
    _assert_one_line_error(info.value, path)
    for word in words:
        assert word in str(info.value).lower()
    return str(info.value)


@pytest.mark.parametrize("suffix, kwargs", [(".png", {}), (".jpg", {"quality": 95})])
def test_truncated_file_refused(tmp_path, rng, suffix, kwargs):
    path = tmp_path / f"t{suffix}"
    Image.fromarray(_u8(rng, 64, 64, 3), "RGB").save(path, **kwargs)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _refused(path)


def test_random_bytes_refused(tmp_path, rng):
    path = tmp_path / "noise.png"
    path.write_bytes(rng.integers(0, 256, 1000, dtype=np.uint8).tobytes())
    _refused(path, "not an image")


def test_empty_file_refused(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    _refused(path)


def test_missing_file_and_folder_refused(tmp_path):
    _refused(tmp_path / "nope.png", "no such file")
    (tmp_path / "dir.png").mkdir()
    _refused(tmp_path / "dir.png", "folder")


def test_decompression_bomb_header_refused(tmp_path):
    # A valid PNG header claiming 100000 x 100000 pixels; it must be refused from the
    # header alone (decoding it would need 30 GB).
    path = tmp_path / "bomb.png"
    path.write_bytes(_png(100_000, 100_000, 8, 2, b"\x00" * 10))
    _refused(path, "pixels")


def test_max_pixels_limit(tmp_path, rng, monkeypatch):
    path = tmp_path / "big.png"
    Image.fromarray(_u8(rng, 10, 20, 3), "RGB").save(path)
    monkeypatch.setattr(images, "MAX_PIXELS", 199)
    assert "20x10" in _refused(path, "over the limit")
    monkeypatch.setattr(images, "MAX_PIXELS", 200)
    assert load_image(path).rgb.shape == (10, 20, 3)


def test_zero_size_refused(tmp_path):
    path = tmp_path / "zero.png"
    path.write_bytes(_png(0, 5, 8, 2, b""))
    _refused(path)


def test_unsupported_mode_refused(tmp_path, rng):
    path = tmp_path / "float.tif"
    Image.fromarray(rng.random((4, 4)).astype(np.float32), "F").save(path)
    _refused(path, "unsupported image mode")


# --- geometry ------------------------------------------------------------------------------

@pytest.mark.parametrize("hw, size, expected", [
    ((23, 37), 16, (16, 25)),   # int(16 * 37 / 23) = 25, truncated like torchvision
    ((37, 23), 16, (25, 16)),
    ((30, 30), 12, (12, 12)),
    ((23, 37), 0, (23, 37)),
    ((5, 9), 20, (20, 36)),     # upscaling too
])
def test_resized_shape_like_torchvision(hw, size, expected):
    assert images.resized_shape(*hw, size) == expected


def test_resize_shorter_matches_pil_on_uint8(rng):
    # On 8-bit images, the float resize must agree with PIL's own bilinear resize of the
    # uint8 image (what torchvision's Resize does) to within one 8-bit step.
    pixels = _u8(rng, 23, 37, 3)
    alpha = _u8(rng, 23, 37)
    rgb, a = images.resize_shorter(pixels / np.float32(255), 16, alpha / np.float32(255))
    ref = np.asarray(Image.fromarray(pixels, "RGB").resize((25, 16), Image.BILINEAR)) / 255.0
    ref_a = np.asarray(Image.fromarray(alpha, "L").resize((25, 16), Image.BILINEAR)) / 255.0
    assert rgb.shape == (16, 25, 3) and a.shape == (16, 25)
    np.testing.assert_allclose(rgb, ref, atol=1 / 255 + TOL, rtol=0)
    np.testing.assert_allclose(a, ref_a, atol=1 / 255 + TOL, rtol=0)
    same, none = images.resize_shorter(rgb, 0)
    assert same is rgb and none is None


@pytest.mark.parametrize("hw, top_left", [((10, 15), (0, 2)), ((15, 10), (2, 0)),
                                          ((6, 6), (0, 0)), ((7, 10), (0, 2))])
def test_center_crop_square(rng, hw, top_left):
    rgb = rng.random(hw + (3,)).astype(np.float32)
    alpha = rng.random(hw).astype(np.float32)
    side = min(hw)
    # torchvision CenterCrop: top = round((H - side) / 2), left = round((W - side) / 2)
    top, left = top_left
    out, out_a = images.center_crop_square(rgb, alpha)
    np.testing.assert_array_equal(out, rgb[top : top + side, left : left + side])
    np.testing.assert_array_equal(out_a, alpha[top : top + side, left : left + side])


def test_resize_nearest_floor_index():
    mask = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = images.resize_nearest(mask, 6, 2)
    rows, cols = [0, 0, 1, 1, 2, 2], [0, 2]  # floor(i * in / out)
    np.testing.assert_array_equal(out, mask[np.ix_(rows, cols)])


# --- saving --------------------------------------------------------------------------------

def test_to_uint8_like_torchvision_save_image():
    x = np.array([-0.5, 0.0, 0.4 / 255, 0.6 / 255, 0.5, 254.4 / 255, 1.0, 3.0], np.float32)
    # torchvision: mul(255).add_(0.5).clamp_(0, 255).to(uint8)
    np.testing.assert_array_equal(images.to_uint8(x), [0, 0, 0, 1, 128, 254, 255, 255])


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".webp"])
def test_save_round_trip(tmp_path, rng, suffix):
    rgb = rng.random((9, 11, 3)).astype(np.float32)
    path = save_image(tmp_path / f"out{suffix}", rgb)
    loaded = load_image(path)
    np.testing.assert_allclose(loaded.rgb, rgb, atol=0.5 / 255 + TOL, rtol=0)  # WebP: lossless
    assert loaded.alpha is None


def test_save_alpha_png_and_dropped_for_jpeg(tmp_path, rng):
    rgb = rng.random((8, 8, 3)).astype(np.float32)
    alpha = rng.random((8, 8)).astype(np.float32)
    loaded = load_image(save_image(tmp_path / "a.png", rgb, alpha))
    np.testing.assert_allclose(loaded.alpha, alpha, atol=0.5 / 255 + TOL, rtol=0)
    np.testing.assert_allclose(loaded.rgb, rgb, atol=0.5 / 255 + TOL, rtol=0)
    webp = load_image(save_image(tmp_path / "a.webp", rgb, alpha))
    np.testing.assert_allclose(webp.alpha, alpha, atol=0.5 / 255 + TOL, rtol=0)
    jpg = load_image(save_image(tmp_path / "a.jpg", rgb, alpha))
    assert jpg.alpha is None and jpg.rgb.shape == (8, 8, 3)


def test_save_clips(tmp_path):
    rgb = np.array([[[-1.0, 0.5, 2.0]]], np.float32)
    loaded = load_image(save_image(tmp_path / "c.png", rgb))
    np.testing.assert_allclose(loaded.rgb, [[[0.0, 128 / 255, 1.0]]], atol=TOL)


def test_save_unknown_extension_refused(tmp_path):
    with pytest.raises(ImageError, match="cannot write .gif"):
        save_image(tmp_path / "a.gif", np.zeros((2, 2, 3), np.float32))
    assert not list(tmp_path.iterdir())


def test_save_is_atomic(tmp_path, rng, monkeypatch):
    path = tmp_path / "out.png"
    old = rng.random((4, 4, 3)).astype(np.float32)
    save_image(path, old)
    before = path.read_bytes()

    def failing_save(self, fp, format=None, **params):
        with open(fp, "wb") as f:
            f.write(b"\x89PNG half")  # a partial file, then the disk "fills up"
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(ImageError) as info:
        save_image(path, rng.random((4, 4, 3)).astype(np.float32))
    _assert_one_line_error(info.value, path)
    assert "No space left" in str(info.value)
    assert path.read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # no temp file left

    new_path = tmp_path / "new.png"
    with pytest.raises(ImageError):
        save_image(new_path, old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_is_image_path():
    assert images.is_image_path("a/b.JPG") and images.is_image_path("x.tiff")
    assert not images.is_image_path("notes.txt") and not images.is_image_path("png")


def test_gif_gives_its_first_frame_and_transparency(tmp_path, rng):
    img, palette, index = _palette_image(rng)
    second = Image.fromarray(np.roll(index, 1, axis=1), "P")
    second.putpalette(palette.ravel().tolist())
    path = tmp_path / "anim.gif"
    img.save(path, save_all=True, append_images=[second], transparency=2)
    loaded = load_image(path)
    np.testing.assert_allclose(loaded.rgb, palette[index] / 255.0, atol=TOL, rtol=0)
    np.testing.assert_array_equal(loaded.alpha, np.where(index == 2, 0.0, 1.0))
    assert images.is_image_path(path)


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_list_image_files_one_rule_for_folders(tmp_path):
    """Subfolders searched (sorted as path strings), extensions any case, hidden names
    ignored, every other file returned as skipped, `exclude` not entered, a symlink
    loop visited once."""
    root = tmp_path / "in"
    want = [_touch(root / n) for n in ("a.png", "b.GIF", "m-n/c.jpg", "m/z/d.TIFF")]
    skipped = [_touch(root / n) for n in ("m/notes.txt", "README")]
    for name in (".hidden.png", ".cache/e.png", "out/old.png"):
        _touch(root / name)
    (root / "m" / "z" / "loop").symlink_to(root, target_is_directory=True)
    found = images.list_image_files(root, exclude=[root / "out"])
    assert found.found == sorted(want, key=str)
    assert [str(p) for p in found.found] == sorted(str(p) for p in want)  # m-n/ before m/
    assert found.skipped == sorted(skipped, key=str)
    note = images.skipped_note(root, found.skipped)
    assert note == (f"{root}: skipped 2 files, not {' '.join(images.IMAGE_EXTENSIONS)}: "
                    "README, m/notes.txt")
    # extensions are the caller's: videos too for stylize.py's content folders
    assert images.list_image_files(root, (".txt",)).found == [root / "m" / "notes.txt"]
