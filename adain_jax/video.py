"""Video files in and out, frame by frame, with PyAV (the `video` extra: pip install av).

Frames are read as float32 HWC RGB in [0, 1], like `images.load_image`, upright: a display
rotation (phones record portrait video as landscape frames plus a rotation) is applied as
FFmpeg's command line does, like EXIF orientation for images. They are written at the
input's average frame rate. The output codec follows the file name: `.mp4`, `.mov` and
`.m4v` get H.264 (yuv420p, CRF 17, visually lossless; MPEG-4 Part 2 where this FFmpeg has
no libx264), `.mkv` gets FFV1 in RGB, which is lossless. H.264 in yuv420p needs even
frame sides, so `even_shape` gives the size to process frames at.

The first audio stream is copied as it is (packets, not re-encoded) when the output
container can hold its codec: Matroska takes any, MP4/MOV those in `MP4_AUDIO`; otherwise,
and for subtitle or further streams, a warning says what was left out.

A video is written to `NAME.partial.PID.EXT` beside the output (PID: this process's id)
and renamed when complete, so a finished-looking file is always a whole one; when
reading stops part-way (a damaged file, an interrupted run) the frames done so far stay
in the partial file (without audio) and the error says so. While it is written, an
`fcntl.flock` on `.NAME.EXT.lock` beside it (removed at the end; the kernel releases it
if the process dies) makes a second writer of the same output, in this process or
another, refuse with a VideoError instead of racing it. Where there is no `fcntl` (not
POSIX) there is no lock: writers then race, but each renames its own partial file, so
the output is still one writer's whole video, the last to finish. (Images, written in
an instant, take no lock: the last writer's whole file wins; see `images.save_image`.)

`interrupts_between_frames` turns a first Ctrl-C into a request that the frame loop
honours between frames, so that no KeyboardInterrupt is raised inside PyAV or inside an
XLA compilation (which goes on in a thread of JAX's own, and a process that exits under
it crashes).
"""
from __future__ import annotations

import logging
import os
import signal
import threading
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
# Audio codecs (FFmpeg decoder names) that MP4/MOV outputs take without re-encoding;
# PCM, for one, they refuse.
MP4_AUDIO = ("aac", "mp3", "mp3float", "alac", "ac3", "eac3", "opus", "flac")


class VideoError(images.ImageError):
    """A video file that cannot be read or written; str() is one line, "PATH: reason"."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C while a video was stylised: `partial` holds its first `written` frames
    (None when there were none); `output` is the file it was for."""

    def __init__(self, output: Path, partial: Path | None, written: int):
        super().__init__(f"{output}: interrupted after {written} frames")
        self.output, self.partial, self.written = output, partial, written


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
    shape: (height, width) of the coded frames, before any display rotation.
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
        audio = self._container.streams.audio
        self.audio = audio[0] if audio else None  # the audio stream VideoWriter can copy
        self.other_streams = [s.type for s in self._container.streams
                              if s is not self._stream and s is not self.audio]
        self.start_s = float(self._stream.start_time * self._stream.time_base
                             if self._stream.start_time is not None else 0.0)
        self.read = 0  # frames decoded so far

    def __iter__(self) -> Iterator[np.ndarray]:
        av = _av(self.path)
        try:
            for frame in self._container.decode(self._stream):
                self.read += 1
                rgb = frame.to_ndarray(format="rgb24").astype(np.float32) / 255.0
                # frame.rotation: degrees counterclockwise, from the display matrix
                yield np.ascontiguousarray(np.rot90(rgb, round((frame.rotation or 0) / 90) % 4))
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

    Frames must all have the shape of the first; `close()` copies the audio of `audio_from`
    (a VideoReader of the source, if given), finishes the file and renames it into place;
    leaving the `with` block on an exception keeps the frames written, if any, under the
    partial name, and does not rename it. Entering the `with` block (or the first
    `write`) takes the output's lock: VideoError if another writer holds it.
    """

    def __init__(self, path, rate=DEFAULT_RATE, audio_from: VideoReader | None = None):
        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.codec, self.pix_fmt, self.options = _codec_for(self.path)
        self.rate = Fraction(rate).limit_denominator(1_000_000) if rate else DEFAULT_RATE
        self.audio_from = audio_from
        self.written = 0
        self._container = self._stream = self._audio = None
        self._lock_fd = None

    def _lock(self) -> None:
        """Hold the output's lock file until `_unlock`; VideoError if someone else does."""
        if self._lock_fd is not None:
            return
        try:
            import fcntl
        except ImportError:  # not POSIX; unique partial names still keep outputs whole
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = lock_path(self.path)
        while True:
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as err:
                raise VideoError(self.path, f"cannot write here: cannot create {lock.name} "
                                 f"({err.strerror or err})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip()
                os.close(fd)
                raise VideoError(self.path, "another run is writing this video now"
                                 f"{f' (process {holder})' if holder else ''}; wait for it "
                                 f"to finish or write elsewhere (lock: {lock.name})") from None
            except OSError:  # a file system without locks (some network ones): go on without
                os.close(fd)
                lock.unlink(missing_ok=True)
                return
            # The holder before us removes the file before it lets go: if we locked a file
            # no longer at `lock`, a third writer may hold the one there now. Try again.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(lock))
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
                self._lock_fd = fd
                return
            os.close(fd)

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            try:  # removed while still held, so nobody can lock it and then lose it
                lock_path(self.path).unlink(missing_ok=True)
            finally:
                os.close(self._lock_fd)
                self._lock_fd = None

    def _open(self, height: int, width: int) -> None:
        av = _av(self.path)
        if self.pix_fmt == "yuv420p" and (height % 2 or width % 2):
            raise VideoError(self.path, f"{self.codec} needs even frame sides, got "
                             f"{width}x{height} (see video.even_shape)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock()
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
        source = self.audio_from
        if source is not None and source.audio is not None:
            codec = source.audio.codec_context.name
            if self.path.suffix.lower() == ".mkv" or codec in MP4_AUDIO:
                self._audio = self._container.add_stream_from_template(source.audio)
            else:
                log.warning("%s: its %s audio cannot go into %s as it is and is not copied "
                            "(an .mkv output keeps it)", source.path, codec, self.path.suffix)

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
            self._unlock()
            raise VideoError(self.path, "no frames to write")
        try:
            self._container.mux(self._stream.encode(None))
            if self._audio is not None:
                self._copy_audio()
            self._container.close()
            self._container = None
            self.partial.replace(self.path)  # under the lock: no other writer renames now
        finally:
            self._unlock()
        return self.path

    def _copy_audio(self) -> None:
        """Mux the source's first audio stream, shifted as the video (which starts at 0)."""
        av = _av(self.path)
        source = self.audio_from
        copied = 0
        try:
            with av.open(str(source.path)) as container:
                stream = container.streams.audio[0]  # the one VideoReader.audio names
                shift = round(source.start_s / stream.time_base) if source.start_s else 0
                for packet in container.demux(stream):
                    if packet.dts is None:  # the demuxer's end-of-stream marker
                        continue
                    packet.pts = None if packet.pts is None else packet.pts - shift
                    packet.dts -= shift
                    packet.stream = self._audio
                    self._container.mux(packet)
                    copied += 1
        except (av.error.FFmpegError, OSError, ValueError) as err:
            log.warning("%s: audio copy stopped after %d packets (%s); the video is complete",
                        self.path, copied, images._one_line(err))

    def __enter__(self):
        self._lock()
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()
            return
        try:
            if self._container is not None:
                try:  # keep the frames written so far playable, under the partial name
                    self._container.mux(self._stream.encode(None))
                except Exception:  # noqa: BLE001  (the original error is the one to report)
                    pass
                finally:
                    self._container.close()
                    self._container = None
                    if not self.written:  # nothing worth keeping
                        self.partial.unlink(missing_ok=True)
        finally:
            self._unlock()


def partial_path(path, pid: int | None = None) -> Path:
    """Where this process (or process `pid`) writes a video before it is complete:
    `name.partial.PID.ext` beside it (folder runs skip names with `.partial.`)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.partial.{os.getpid() if pid is None else pid}"
                          f"{path.suffix}")


def lock_path(path) -> Path:
    """The lock file held while a video is written: `.name.ext.lock` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


class interrupts_between_frames:
    """While active, a first SIGINT (Ctrl-C) only sets `requested`, for a frame loop to
    check between frames and stop cleanly; a second one raises KeyboardInterrupt at once,
    as without it. It does nothing outside the main thread, or where SIGINT does not
    already raise KeyboardInterrupt (ignored, as in a background job, or handled by the
    application).

    Why: a KeyboardInterrupt raised while XLA compiles returns at once, but the
    compilation goes on in a JAX thread, and if the process exits before it ends the
    runtime is freed under it: a segfault (exit 139) instead of exit 130.
    """

    def __init__(self):
        self.requested = False
        self._installed = False

    def _handle(self, signum, frame):
        if self.requested:
            self._restore()
            raise KeyboardInterrupt
        self.requested = True

    def _restore(self):
        if self._installed:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self._installed = False

    def __enter__(self):
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc):
        self._restore()


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


__all__ = ["VIDEO_EXTENSIONS", "Interrupted", "VideoError", "VideoReader", "VideoWriter",
           "batches", "can_write", "even_shape", "interrupts_between_frames", "is_video_path",
           "lock_path", "needs_even_sides", "partial_path"]
