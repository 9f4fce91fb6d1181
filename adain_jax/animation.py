"""Animated image files (GIF, WebP, APNG) in and out, frame by frame (no JAX here).

A file is animated when PIL counts more than one frame in it (`is_animated`, from the
headers); a one-frame GIF, WebP or PNG is a still image for `images.load_image`. Frames
are read as they are displayed: PIL composites each onto the ones before it (GIF disposal
methods, APNG dispose and blend operations, WebP's canvas), and come as float32 RGB in
[0, 1] like `images.load_image`, with alpha kept apart when some frame has transparent
pixels. An APNG's default image (shown by viewers without APNG support when it is not
part of the animation) is left out, and EXIF orientation is not applied.

The loop count is kept as the source states it: PIL's `loop`, 0 for forever. GIF alone
can say nothing (no NETSCAPE extension: it plays once), and `Animation.loop` is then None;
written as WebP or APNG, which always state a count, that becomes 1, one play. Durations
are milliseconds per frame; GIF stores hundredths of a second, so it rounds them down to
those. PIL's GIF and APNG writers merge a frame equal to the one before it into that one
(durations added), so such an animation comes back with fewer frames that play the same.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from adain_jax import images

# Formats that hold animations, by suffix: PIL's format name and its writer's options.
# WebP is written lossless so that it round-trips like APNG (the colour of fully
# transparent pixels aside: libwebp's animation encoder drops it, `exact` or not); GIF
# frames are quantised to a palette each (see `_gif_frame`).
ANIMATED_FORMATS = {".gif": ("GIF", {}), ".webp": ("WEBP", {"lossless": True}),
                    ".png": ("PNG", {})}
ANIMATED_EXTENSIONS = tuple(ANIMATED_FORMATS)


class Animation(NamedTuple):
    frames: list[np.ndarray]  # (H, W, 3) float32 in [0, 1], each the whole displayed frame
    alphas: list[np.ndarray] | None  # (H, W) float32 per frame; None when all are opaque
    durations: list[float]  # milliseconds each frame shows
    loop: int | None  # plays: 0 forever, None when the file says nothing (GIF: once)


def is_animated(path) -> bool:
    """Whether `path` is a GIF, WebP or PNG file with more than one frame.

    Reads headers only (PIL seeks over GIF frames without decoding them). A file that
    cannot be opened is not animated here: `images.load_image` then says what is wrong.
    """
    path = Path(path)
    if path.suffix.lower() not in ANIMATED_FORMATS or not path.is_file():
        return False
    try:
        with Image.open(path) as img:
            return getattr(img, "n_frames", 1) > 1
    except Exception:  # noqa: BLE001 - PIL raises many types on bad data; see docstring
        return False


def load_animation(path) -> Animation:
    """All frames of an animated file, as displayed, with durations and loop count.

    Refuses with a one-line `images.ImageError` a file that cannot be decoded completely
    (a truncated one too) or whose frames hold more than `images.MAX_PIXELS` pixels together.
    """
    path = Path(path)
    if not path.is_file():
        raise images.ImageError(path, "no such file")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as img:
                return _read_frames(path, img)
        except images.ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise images.ImageError(path, f"refused as a possible decompression bomb ({err})"
                                    ) from None
        except Image.UnidentifiedImageError:
            raise images.ImageError(path, "not an image file PIL can read") from None
        except MemoryError:
            raise images.ImageError(path, "not enough memory to decode the animation"
                                    ) from None
        except Exception as err:  # noqa: BLE001 - PIL decoders raise many types on bad data
            reason = str(err) or type(err).__name__
            if "truncated" in reason.lower() or isinstance(err, EOFError):
                raise images.ImageError(path, f"the file is truncated ({reason})") from None
            raise images.ImageError(path, f"cannot decode animation: {reason}") from None


def _read_frames(path: Path, img: Image.Image) -> Animation:
    count = getattr(img, "n_frames", 1)
    first = 1 if img.info.get("default_image") else 0  # an APNG's non-animation image
    width, height = img.size
    if width == 0 or height == 0:
        raise images.ImageError(path, f"image has zero size ({width}x{height})")
    if width * height * (count - first) > images.MAX_PIXELS:
        raise images.ImageError(path, f"animation is {count - first} frames of {width}x"
                                f"{height}, over the limit of {images.MAX_PIXELS} pixels "
                                "in all (images.MAX_PIXELS)")
    loop = img.info.get("loop")  # GIF: only with a NETSCAPE extension
    frames, alphas, durations = [], [], []
    for index in range(first, count):
        img.seek(index)
        img.load()  # full decode now: truncation and corrupt data fail here
        has_alpha = "A" in img.mode or "transparency" in img.info
        array = np.asarray(img.convert("RGBA" if has_alpha else "RGB"), np.float32) / 255.0
        frames.append(np.ascontiguousarray(array[..., :3]))
        alphas.append(array[..., 3].copy() if has_alpha else None)
        durations.append(img.info.get("duration") or 0)
    if all(a is None or a.min() == 1.0 for a in alphas):
        alphas = None
    else:
        alphas = [np.ones((height, width), np.float32) if a is None else a for a in alphas]
    return Animation(frames, alphas, durations, loop)


def save_animation(path, frames, durations, loop: int | None = None, alphas=None) -> Path:
    """Write (H, W, 3) [0, 1] frames (+ optional (H, W) alphas) as an animation, atomically.

    The format follows the suffix (`ANIMATED_FORMATS`): GIF, lossless WebP or APNG. Like
    `images.save_image`, it writes a temporary file beside `path` and renames it over it.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ANIMATED_FORMATS:
        raise images.ImageError(path, f"cannot write an animation as "
                                f"{suffix or 'a file without an extension'}; use one of "
                                f"{', '.join(ANIMATED_EXTENSIONS)}")
    fmt, options = ANIMATED_FORMATS[suffix]
    assert len(frames) == len(durations) and frames, (len(frames), len(durations))
    assert alphas is None or len(alphas) == len(frames)
    pictures = []
    for i, rgb in enumerate(frames):
        pixels = images.to_uint8(rgb)
        alpha = None if alphas is None else images.to_uint8(alphas[i])
        if fmt == "GIF":
            pictures.append(_gif_frame(pixels, alpha))
        elif alpha is None:
            pictures.append(Image.fromarray(pixels, "RGB"))
        else:
            pictures.append(Image.fromarray(np.dstack([pixels, alpha]), "RGBA"))
    options = dict(options, duration=[round(d) for d in durations])
    if fmt == "GIF" and alphas is not None:
        options["disposal"] = 2  # clear each frame first, or the one before shows through
    if loop is not None:
        options["loop"] = loop
    elif fmt != "GIF":
        options["loop"] = 1  # a GIF without NETSCAPE extension plays once; so does this
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        pictures[0].save(tmp, format=fmt, save_all=True, append_images=pictures[1:],
                         **options)
        os.replace(tmp, path)
    except OSError as err:
        raise images.ImageError(path, f"cannot write animation: {err.strerror or err}"
                                ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


_TRANSPARENT = 255  # the palette index a GIF frame's transparent pixels get
# Pixels a GIF frame's palette is chosen from: median cut refined by k-means takes ~8 s on
# all of a 512x683 frame, ~0.15 s on this many, and maps the frame as closely.
_PALETTE_SAMPLE = 2**14


def _gif_frame(pixels: np.ndarray, alpha: np.ndarray | None) -> Image.Image:
    """A palette image of uint8 RGB: this frame's own colours (median cut and k-means on
    up to `_PALETTE_SAMPLE` of its opaque pixels), each pixel mapped to the nearest without
    dithering, whose noise would change from frame to frame and flicker. Pixels with
    alpha below half are transparent (GIF has no partial transparency)."""
    opaque = pixels.reshape(-1, 3) if alpha is None else pixels[alpha >= 128]
    if not len(opaque):
        opaque = pixels.reshape(-1, 3)[:1]
    step = -(-len(opaque) // _PALETTE_SAMPLE)
    sample = Image.fromarray(np.ascontiguousarray(opaque[::step][None]), "RGB")
    # 255 colours where one index is kept for transparency; PIL maps only to those
    palette = sample.quantize(256 if alpha is None else _TRANSPARENT,
                              Image.Quantize.MEDIANCUT, kmeans=1)
    frame = Image.fromarray(pixels, "RGB").quantize(palette=palette, dither=Image.Dither.NONE)
    if alpha is None:
        return frame
    index = np.asarray(frame).copy()
    assert index.max() < _TRANSPARENT, index.max()
    index[alpha < 128] = _TRANSPARENT
    out = Image.fromarray(index, "P")
    colours = frame.getpalette()
    out.putpalette(colours + [0] * (3 * 256 - len(colours)))
    out.info["transparency"] = _TRANSPARENT
    return out
