"""Image files in and out: float32 HWC RGB in [0, 1], with any alpha channel kept apart.

Loading follows one set of conventions for every format PIL reads: EXIF orientation is
applied; 8-bit samples are divided by 255 and 16-bit ones by 65535; grayscale, palette,
1-bit and CMYK images become RGB; alpha (RGBA, LA, PA, palette or tRNS transparency) is
returned separately. Anything that cannot be decoded completely is refused with an
`ImageError` naming the file: truncated files are never padded (PIL's
LOAD_TRUNCATED_IMAGES is left off) and images over `MAX_PIXELS` are not decoded at all.
The resize and crop helpers reproduce torchvision's `Resize(size)` and `CenterCrop`
geometry, which the reference test script applies before stylising.
"""
from __future__ import annotations

import collections
import concurrent.futures
import logging
import os
import warnings
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
from PIL import Image, ImageOps

log = logging.getLogger(__name__)

# Refuse images over 2**26 pixels (64 Mpx, e.g. 8192 x 8192): decoded as float32 RGB one
# already takes 768 MiB, and VGG activations at that size are 64x more. This is below
# PIL's own decompression-bomb limits (a warning over Image.MAX_IMAGE_PIXELS, ~89 Mpx, an
# error over twice that), so this limit, checked from the header, is the one that applies.
MAX_PIXELS = 2**26

# What a folder of images is read for, by stylize.py and train.py alike (see
# `list_image_files`); `load_image` gives an animation's first frame (stylize.py reads an
# animated content whole, with `animation.load_animation`).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".ppm", ".tif", ".tiff", ".gif")
PREFETCH = 8  # images `prefetched` decodes ahead of its caller
# Formats `save_image` writes, and whether each keeps an alpha channel.
SAVE_FORMATS = {".png": ("PNG", True), ".jpg": ("JPEG", False), ".jpeg": ("JPEG", False),
                ".webp": ("WEBP", True), ".bmp": ("BMP", False)}

_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# Modes PIL converts to RGB(A) exactly as we want (CMYK with PIL's naive formula, no ICC).
_TO_RGB = {"RGB": "RGB", "RGBX": "RGB", "YCbCr": "RGB", "CMYK": "RGB", "L": "RGB",
           "1": "RGB", "P": "RGB", "HSV": "RGB",
           "RGBA": "RGBA", "RGBa": "RGBA", "LA": "RGBA", "La": "RGBA", "PA": "RGBA"}


class ImageError(ValueError):
    """An image file that cannot be used; str() is one line, "PATH: reason"."""

    def __init__(self, path, reason: str):
        self.path = Path(path)
        self.reason = _one_line(reason)
        super().__init__(f"{self.path}: {self.reason}")


class LoadedImage(NamedTuple):
    rgb: np.ndarray  # (H, W, 3) float32 in [0, 1]
    alpha: np.ndarray | None  # (H, W) float32 in [0, 1], or None when opaque by format


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else "unknown error"


def is_image_path(path) -> bool:
    """True for a file name with one of IMAGE_EXTENSIONS (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


class ImageFiles(NamedTuple):
    found: list[Path]  # sorted by path string
    skipped: list[Path]  # files left out for their extension, sorted


def list_image_files(folder, extensions=IMAGE_EXTENSIONS, exclude=()) -> ImageFiles:
    """The files under `folder` with one of `extensions` (any case), subfolders included.

    The one rule for folders of images (stylize.py's content and style folders, train.py's
    --styles and --content-dir): every subfolder is searched, symlinked ones too (each
    real folder once, so a link loop ends); names starting with "." (hidden files and
    folders) are ignored; every other file is found or, for its extension, skipped. A
    folder that cannot be read is logged as a warning with its reason (os.walk would
    pass over it without a word), so no file is left out silently.
    `exclude`: folders not to enter, e.g. an output folder inside the input folder.
    """
    folder = Path(folder)
    excluded = {os.path.realpath(p) for p in exclude}
    seen = {os.path.realpath(folder)}
    found, skipped = [], []
    for parent, subfolders, files in os.walk(folder, followlinks=True, onerror=_unreadable):
        kept = []
        for name in sorted(subfolders):
            real = os.path.realpath(os.path.join(parent, name))
            if not name.startswith(".") and real not in seen and real not in excluded:
                seen.add(real)
                kept.append(name)
        subfolders[:] = kept  # os.walk enters only these
        for name in files:
            if not name.startswith("."):
                wanted = os.path.splitext(name)[1].lower() in extensions
                (found if wanted else skipped).append(Path(parent) / name)
    return ImageFiles(sorted(found, key=str), sorted(skipped, key=str))


def _unreadable(err: OSError) -> None:
    log.warning("%s: cannot read this folder (%s); the files in it are skipped",
                err.filename, err.strerror or err)


def skipped_note(folder, skipped, extensions=IMAGE_EXTENSIONS) -> str:
    """One line naming every file in `skipped` (relative to `folder`) and what was read."""
    folder = Path(folder)
    names = ", ".join(str(p.relative_to(folder)) if p.is_relative_to(folder) else str(p)
                      for p in skipped)
    plural = "s" * (len(skipped) != 1)
    return f"{folder}: skipped {len(skipped)} file{plural}, not {' '.join(extensions)}: {names}"


def _decode(path: Path) -> Image.Image:
    """Open and fully decode `path`; PIL and decoder errors become one-line reasons."""
    if not path.exists():
        raise ImageError(path, "no such file")
    if path.is_dir():
        raise ImageError(path, "is a folder, not an image file")
    with warnings.catch_warnings():
        # A user-lowered Image.MAX_IMAGE_PIXELS warns at open: treat that as a refusal too.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as img:
                width, height = img.size
                if width == 0 or height == 0:
                    raise ImageError(path, f"image has zero size ({width}x{height})")
                if width * height > MAX_PIXELS:
                    raise ImageError(path, f"image is {width}x{height}, over the limit of "
                                     f"{MAX_PIXELS} pixels (images.MAX_PIXELS)")
                img.load()  # full decode now: truncation and corrupt data fail here
                # exif_transpose copies; keep the result independent of the closed file.
                return ImageOps.exif_transpose(img) or img.copy()
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise ImageError(path, f"refused as a possible decompression bomb ({err})") from None
        except Image.UnidentifiedImageError:
            raise ImageError(path, "not an image file PIL can read") from None
        except MemoryError:
            raise ImageError(path, "not enough memory to decode the image") from None
        except Exception as err:  # noqa: BLE001 - PIL decoders raise many types on bad data
            reason = str(err) or type(err).__name__
            if "truncated" in reason.lower():
                raise ImageError(path, f"the file is truncated ({reason})") from None
            raise ImageError(path, f"cannot decode image: {reason}") from None


def load_image(path) -> LoadedImage:
    """Read an image file as float32 RGB in [0, 1] plus its alpha channel (or None)."""
    path = Path(path)
    img = _decode(path)
    mode = img.mode
    if mode in _16BIT_MODES:
        values = np.asarray(img)
        if mode == "I" and (values.min() < 0 or values.max() > 65535):
            raise ImageError(path, f"32-bit integer pixels outside 0..65535 (mode {mode}) "
                             "are not supported")
        gray = values.astype(np.float64) / 65535.0
        rgb = np.repeat(gray[..., None], 3, axis=-1).astype(np.float32)
        return LoadedImage(rgb, None)
    if mode not in _TO_RGB:
        raise ImageError(path, f"unsupported image mode {mode!r}; save it as 8-bit RGB")
    target = _TO_RGB[mode]
    if target == "RGB" and "transparency" in img.info and mode in ("P", "L", "RGB", "1"):
        target = "RGBA"  # palette or tRNS transparency
    if img.mode != target:
        try:
            img = img.convert(target)
        except (ValueError, OSError) as err:
            raise ImageError(path, f"cannot convert mode {mode!r} to {target}: {err}") from None
    array = np.asarray(img, dtype=np.float32) / 255.0
    alpha = array[..., 3].copy() if target == "RGBA" else None
    return LoadedImage(np.ascontiguousarray(array[..., :3]), alpha)


def prefetched(load, items, *, ahead: int = PREFETCH, workers: int = 2) -> Iterator:
    """load(item) for each of `items`, in order, decoded on `workers` threads at most
    `ahead` items in front of the caller (PIL and NumPy release the GIL while decoding)."""
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        pending: collections.deque = collections.deque()
        for item in items:
            pending.append(pool.submit(load, item))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(H, W) after torchvision's Resize(size): shorter side `size`, longer int(size*long/short)."""
    if size == 0:
        return height, width
    if width <= height:
        return int(size * height / width), size
    return size, int(size * width / height)


def _resize_channels(array: np.ndarray, height: int, width: int, resample) -> np.ndarray:
    """Resize (H, W) or (H, W, C) float32 with PIL channel by channel (mode F keeps precision)."""
    if array.shape[:2] == (height, width):
        return array
    channels = array[..., None] if array.ndim == 2 else array
    out = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(channels[..., c],
                                                                    dtype=np.float32), "F")
                               .resize((width, height), resample))
                    for c in range(channels.shape[-1])], axis=-1)
    return out[..., 0] if array.ndim == 2 else out


def resize(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear (antialiased, as PIL) resize of an (H, W) or (H, W, C) float image."""
    return _resize_channels(array, height, width, Image.BILINEAR)


def resize_nearest(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest resize, source index floor(i * in / out) like torch's F.interpolate."""
    rows = (np.arange(height) * array.shape[0]) // height
    cols = (np.arange(width) * array.shape[1]) // width
    return array[rows][:, cols]


def resize_shorter(rgb: np.ndarray, size: int, alpha: np.ndarray | None = None):
    """torchvision Resize(size) with PIL bilinear; size 0 keeps the image. Returns (rgb, alpha)."""
    height, width = resized_shape(*rgb.shape[:2], size)
    return (resize(rgb, height, width),
            None if alpha is None else resize(alpha, height, width))


def center_crop_square(rgb: np.ndarray, alpha: np.ndarray | None = None):
    """Central square of side min(H, W), placed as torchvision's CenterCrop. Returns (rgb, alpha)."""
    height, width = rgb.shape[:2]
    side = min(height, width)
    top, left = int(round((height - side) / 2.0)), int(round((width - side) / 2.0))
    crop = lambda a: None if a is None else a[top : top + side, left : left + side]
    return crop(rgb), crop(alpha)


def rgb_pixels(pixels) -> np.ndarray:
    """A dataset's decoded uint8 image, (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), as
    (H, W, 3) uint8 (gray repeated, alpha dropped); ValueError for anything else."""
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.dtype != np.uint8 or pixels.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected uint8 (H, W, 1|3|4) pixels, got {pixels.dtype} "
                         f"{pixels.shape}")
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    return np.ascontiguousarray(pixels[..., :3])


def to_uint8(array: np.ndarray) -> np.ndarray:
    """[0, 1] floats to uint8 as torchvision's save_image: clamp(x * 255 + 0.5) truncated."""
    return np.clip(np.asarray(array, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def save_format(path) -> tuple[str, bool]:
    """(PIL format, keeps alpha) for an output path, from its extension."""
    suffix = Path(path).suffix.lower()
    if suffix not in SAVE_FORMATS:
        raise ImageError(path, f"cannot write {suffix or 'files without an extension'}; use "
                         f"one of {', '.join(sorted(SAVE_FORMATS))}")
    return SAVE_FORMATS[suffix]


def save_image(path, rgb, alpha=None) -> Path:
    """Write (H, W, 3) [0, 1] RGB (+ optional (H, W) alpha) atomically; format from extension.

    Alpha is written only to formats that hold it (PNG, WebP) and dropped otherwise. The
    image goes to a temporary file beside `path` and is renamed over it, so `path` is
    either the old file or the complete new one.
    """
    path = Path(path)
    fmt, keeps_alpha = save_format(path)
    rgb = np.asarray(rgb)
    assert rgb.ndim == 3 and rgb.shape[-1] == 3, rgb.shape
    pixels = to_uint8(rgb)
    if alpha is not None and keeps_alpha:
        alpha = np.asarray(alpha)
        assert alpha.shape == rgb.shape[:2], (alpha.shape, rgb.shape)
        pixels = np.concatenate([pixels, to_uint8(alpha)[..., None]], axis=-1)
    image = Image.fromarray(pixels, "RGBA" if pixels.shape[-1] == 4 else "RGB")
    # JPEG is the lossy choice; WebP is written lossless so it round-trips like PNG.
    options = {"JPEG": {"quality": 95}, "WEBP": {"lossless": True}}.get(fmt, {})
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        image.save(tmp, format=fmt, **options)
        os.replace(tmp, path)
    except OSError as err:
        raise ImageError(path, f"cannot write image: {err.strerror or err}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path
