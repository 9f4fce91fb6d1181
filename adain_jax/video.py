"""Video files in and out, frame by frame, with PyAV (the `video` extra: pip install av).

Frames are read as float32 HWC RGB in [0, 1], like `images.load_image`, and written at the
input's average frame rate. The output codec follows the file name: `.mp4`, `.mov` and
`.m4v` get H.264 (yuv420p, CRF 17, visually lossless; MPEG-4 Part 2 where this FFmpeg has
no libx264), `.mkv` gets FFV1 in RGB, which is lossless. H.264 in yuv420p needs even
frame sides, so `even_shape` gives the size to process frames at.

A video is written to a `.partial` file beside the output and renamed when complete, so a
finished-looking file is always a whole one; when reading stops part-way (a damaged file,
an interrupted run) the frames done so far stay in the `.partial` file and the error says
so. Audio and subtitle streams are not copied (a warning says so).
"""
from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from adain_jax import images

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm")
# Output container suffix -> (codec, pixel format, codec options), best first.
_H264 = [("libx264", "yuv420p", {"crf": "17", "preset": "medium"}),
         ("mpeg4", "yuv420p", {"qscale": "2"})]
OUTPUT_CODECS = {".mp4": _H264, ".mov": _H264, ".m4v": _H264, ".mkv": [("ffv1", "bgr0", {})]}
DEFAULT_RATE = Fraction(25)  # when a file does not say its frame rate


class VideoError(images.ImageError):
    """A video file that cannot be read or written; str() is one line, "PATH: reason"."""


def is_video_path(path) -> bool:
    """True for a file name with one of VIDEO_EXTENSIONS (case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def can_write(path) -> bool:
    return Path(path).suffix.lower() in OUTPUT_CODECS


def _av(path):
    """The PyAV module, or a VideoError about `path` saying how to install it."""
    try:
        import av
    except ImportError:
        raise VideoError(path, "videos need PyAV: pip install 'adain-jax[video]' "
                         "(or pip install av)") from None
    return av


def _codec_for(path: Path):
    """(codec, pixel format, options) for an output file name, or VideoError."""
    av = _av(path)
    choices = OUTPUT_CODECS.get(path.suffix.lower())
    if choices is None:
        raise VideoError(path, f"cannot write {path.suffix or 'files without a suffix'}; "
                         f"video outputs can be {', '.join(OUTPUT_CODECS)}")
    for codec, pix_fmt, options in choices:
        if codec in av.codecs_available:
            return codec, pix_fmt, options
    raise VideoError(path, f"this FFmpeg has none of the encoders for {path.suffix}: "
                     f"{', '.join(c for c, _, _ in choices)}")


def needs_even_sides(path) -> bool:
    """Whether frames written to `path` must have even height and width (yuv420p)."""
    return _codec_for(Path(path))[1] == "yuv420p"


def even_shape(height: int, width: int) -> tuple[int, int]:
    """The largest even sides not above (height, width), at least 2."""
    return max(2, height - height % 2), max(2, width - width % 2)


class VideoReader:
    """Frames of a video file's first video stream as float32 (H, W, 3) arrays in [0, 1].

    rate: average frame rate (a Fraction); frames: the count the container states, or None;
    shape: (height, width) of the coded frames.
    """

    def __init__(self, path):
        self.path = Path(path)
        av = _av(self.path)
        if not self.path.exists():
            raise VideoError(self.path, "no such file")
        try:
            self._container = av.open(str(self.path), mode="r")
        except (av.error.FFmpegError, OSError, ValueError) as err:
            raise VideoError(self.path, f"cannot open as a video: {err}") from None
        if not self._container.streams.video:
            self._container.close()
            raise VideoError(self.path, "has no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self.rate = self._stream.average_rate or self._stream.guessed_rate or DEFAULT_RATE
        self.frames = self._stream.frames or None
        self.shape = (self._stream.codec_context.height, self._stream.codec_context.width)
        self.dropped_streams = [s.type for s in self._container.streams
                                if s.index != self._stream.index]
        self.read = 0  # frames decoded so far

    def __iter__(self) -> Iterator[np.ndarray]:
        av = _av(self.path)
        try:
            for frame in self._container.decode(self._stream):
                self.read += 1
                yield frame.to_ndarray(format="rgb24").astype(np.float32) / 255.0
        except (av.error.FFmpegError, ValueError) as err:
            raise VideoError(self.path, f"cannot decode frame {self.read + 1}: {err}") from None

    def close(self) -> None:
        self._container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class VideoWriter:
    """Writes float32 (H, W, 3) frames in [0, 1] to `path`, via `partial_path(path)`.

    Frames must all have the shape of the first; `close()` finishes the file and renames it
    into place; leaving the `with` block on an exception keeps what was written, under the
    partial name, and does not rename it.
    """

    def __init__(self, path, rate=DEFAULT_RATE):
        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.codec, self.pix_fmt, self.options = _codec_for(self.path)
        self.rate = Fraction(rate).limit_denominator(1_000_000) if rate else DEFAULT_RATE
        self.written = 0
        self._container = self._stream = None

    def _open(self, height: int, width: int) -> None:
        av = _av(self.path)
        if self.pix_fmt == "yuv420p" and (height % 2 or width % 2):
            raise VideoError(self.path, f"{self.codec} needs even frame sides, got "
                             f"{width}x{height} (see video.even_shape)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # by name FFmpeg would take .m4v for raw MPEG-4 video; the others it guesses right
        fmt = {".m4v": "mp4", ".mkv": "matroska"}.get(self.path.suffix.lower())
        try:
            self._container = av.open(str(self.partial), mode="w", format=fmt)
            self._stream = self._container.add_stream(self.codec, rate=self.rate,
                                                      options=self.options)
        except (av.error.FFmpegError, OSError, ValueError) as err:
            raise VideoError(self.path, f"cannot write: {err}") from None
        self._stream.height, self._stream.width = height, width
        self._stream.pix_fmt = self.pix_fmt

    def write(self, rgb: np.ndarray) -> None:
        av = _av(self.path)
        if self._container is None:
            self._open(*rgb.shape[:2])
        frame = av.VideoFrame.from_ndarray(images.to_uint8(rgb), format="rgb24")
        frame.pts = self.written  # the stream's time base is 1 / rate
        try:
            self._container.mux(self._stream.encode(frame))
        except (av.error.FFmpegError, ValueError) as err:
            raise VideoError(self.path, f"cannot encode frame {self.written + 1}: {err}") \
                from None
        self.written += 1

    def close(self) -> Path:
        """Flush the encoder and move the finished file to `path`."""
        if self._container is None:
            raise VideoError(self.path, "no frames to write")
        self._container.mux(self._stream.encode(None))
        self._container.close()
        self._container = None
        self.partial.replace(self.path)
        return self.path

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()
        elif self._container is not None:
            try:  # keep the frames written so far playable, under the partial name
                self._container.mux(self._stream.encode(None))
            except Exception:  # noqa: BLE001  (the original error is the one to report)
                pass
            finally:
                self._container.close()
                self._container = None


def partial_path(path) -> Path:
    """Where a video is written before it is complete: `name.partial.ext` beside it."""
    path = Path(path)
    return path.with_name(f"{path.stem}.partial{path.suffix}")


def batches(frames, size: int) -> Iterator[list[np.ndarray]]:
    """Consecutive lists of up to `size` frames."""
    batch = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


__all__ = ["VIDEO_EXTENSIONS", "VideoError", "VideoReader", "VideoWriter", "batches",
           "can_write", "even_shape", "is_video_path", "needs_even_sides", "partial_path"]
