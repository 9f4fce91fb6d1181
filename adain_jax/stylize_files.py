"""Stylising image files and folders: the logic behind stylize.py.

`plan_jobs` expands the content and style arguments into output jobs (one per content x
style, or one per content for a set of several style files, which are interpolated or,
with masks, spatially combined); `check_outputs` tries every output folder before any
work; `run` stylises the jobs with weights loaded once and returns the failures instead of
stopping at the first bad file.

Each image goes through one jitted `transfer.apply`; jit compiles again for every new
image size (the first image of each size is slower), and reuses the compiled function
for repeated sizes. Without colour preservation a style is encoded once, with
`encode_style`, however many contents use it.

With `Settings(method="gatys")` each content x style pair is instead optimised by
`gatys.gatys` (the baseline of Gatys et al.; no decoder needed), one pair at a time.

A content video (see `video.VIDEO_EXTENSIONS`) is stylised frame by frame with the style
encoded once, `Settings.video_batch` frames per call, into a video of the same frame rate;
`Settings.temporal` chooses how frames share content statistics or are blended along the
optical flow (`video_outputs`, temporal.py). An animated GIF, WebP or PNG content
(animation.py) is stylised frame by frame into an animation of its own format.
"""
from __future__ import annotations

import collections
import functools
import logging
import os
import sys
from pathlib import Path
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from tqdm import tqdm

from adain_jax import (animation, architectures, images, outputs, temporal, tiling, transfer,
                       video)
from adain_jax.configs import (DEFAULT_OUTPUT, DEFAULT_VIDEO_EXT, GATYS_OPTIMIZERS,
                               GATYS_STYLE_LOSSES, METHODS, TEMPORAL_MODES, Settings)

log = logging.getLogger(__name__)



def min_side(arch: architectures.Architecture) -> int:
    """The smallest image side whose AdaIN-layer map has 2 positions along it.

    The unbiased std there needs at least 2 positions, and reflection padding (VGG's
    encoder, both decoders) at least 2 pixels on every axis at every level. Smaller
    images are upscaled to it for processing and the output is resized back.
    """
    return next(side for side in range(1, 1024) if arch.feature_size(side) >= 2)


MIN_SIDE = min_side(architectures.VGG19)  # 9; DenseNet-121 needs 17
# ITU-R 601 luma, the weights PIL uses for mode "L": masks given as RGB become gray.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


class UsageError(ValueError):
    """Arguments that cannot work together; str() is one line."""


class Job(NamedTuple):
    content: Path
    styles: tuple[Path, ...]
    output: Path


class Failure(NamedTuple):
    job: Job
    message: str


def list_images(path, role: str, videos: bool = False, exclude=()) -> list[Path]:
    """A file as itself; a folder as the image files under it (`images.list_image_files`:
    subfolders included, sorted), and its video files too if `videos`.

    Every other file is logged as skipped, and so is a video's unfinished output
    (NAME.partial.EXT). `exclude`: folders not to enter (the output folder).
    """
    path = Path(path)
    if path.is_dir():
        extensions = images.IMAGE_EXTENSIONS + (video.VIDEO_EXTENSIONS if videos else ())
        found, skipped = images.list_image_files(path, extensions, exclude)
        partial = [p for p in found if ".partial." in p.name]
        if skipped:
            log.warning("%s", images.skipped_note(path, skipped, extensions))
        if partial:
            log.warning("%s: skipped %d unfinished output(s) (NAME.partial.EXT): %s", path,
                        len(partial), ", ".join(str(p.relative_to(path)) for p in partial))
        found = [p for p in found if p not in partial]
        if not found:
            kinds = "images or videos" if videos else "images"
            raise UsageError(f"{path}: no {role} {kinds} in this folder or its subfolders "
                             f"(looked for {', '.join(extensions)})")
        return found
    if not path.exists():
        raise UsageError(f"{path}: no such {role} file or folder")
    return [path]


def _number(value: float) -> str:
    """A weight as written in a file name: short (%g) unless that would change it."""
    text = f"{value:g}"
    return text if float(text) == value else repr(value)


def output_name(content: Path, styles: Sequence[Path], ext: str,
                settings: Settings = Settings(), style_names: Sequence[str] | None = None) -> str:
    """`{content}_stylized_{style1}[_{style2}...][_w{w1}-{w2}...|_mask-{m1}-{m2}...].{ext}`.

    Unequal --style-weights and --mask each add their part, so that interpolation,
    spatial control and plain style transfer never share a name. `style_names` replace the
    styles' stems (a style in a subfolder of a style folder is named by its path there).
    """
    names = [s.stem for s in styles] if style_names is None else list(style_names)
    weights = settings.style_weights
    if weights is not None and len(set(weights)) > 1:
        names.append("w" + "-".join(_number(w) for w in weights))
    if settings.masks is not None:
        names.append("mask-" + "-".join(m.stem for m in settings.masks))
    return f"{content.stem}_stylized_{'_'.join(names)}.{ext}"


def _check_gatys(settings: Settings, styles: Sequence[Path], style_is_folder: bool):
    """What --method gatys cannot do: it optimises one image for one style image."""
    if settings.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {settings.steps}")
    if settings.optimizer not in GATYS_OPTIMIZERS:
        raise UsageError(f"--optimizer must be one of {', '.join(GATYS_OPTIMIZERS)}")
    if settings.style_loss not in GATYS_STYLE_LOSSES:
        raise UsageError(f"--style-loss must be one of {', '.join(GATYS_STYLE_LOSSES)}")
    unsupported = [
        ("--alpha", settings.alpha != 1.0, "it has no content-style blend; fewer --steps "
         "or a different loss weight change the balance"),
        ("--style-weights", settings.style_weights is not None, "it takes one style image"),
        ("--mask", settings.masks is not None, "it has no spatial control"),
        ("--preserve-color", settings.preserve_color is not None, "it has no colour "
         "preservation"),
        ("several style files", len(styles) > 1 and not style_is_folder,
         "it takes one style image per output; give one style file or a style folder"),
    ]
    for flag, given, why in unsupported:
        if given:
            raise UsageError(f"--method gatys cannot use {flag}: {why}")


def _check_settings(settings: Settings, styles: Sequence[Path], style_is_folder: bool):
    if settings.method not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}, got "
                         f"{settings.method!r}")
    if settings.method == "gatys":
        _check_gatys(settings, styles, style_is_folder)
    if not 0.0 <= settings.alpha <= 1.0:
        raise UsageError(f"--alpha must be in [0, 1], got {settings.alpha}")
    for name in ("content_size", "style_size"):
        if getattr(settings, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0 (0 keeps the size)")
    if settings.preserve_color not in (None, *transfer.COLOR_MODES):
        raise UsageError(f"--preserve-color must be one of {transfer.COLOR_MODES}")
    for flag, values in (("--style-weights", settings.style_weights),
                         ("--mask", settings.masks)):
        if values is None:
            continue
        if style_is_folder:
            raise UsageError(f"{flag} needs style files, not a style folder")
        if len(values) != len(styles):
            raise UsageError(f"{flag} got {len(values)} values for {len(styles)} styles; "
                             "give one per style")
    if settings.style_weights is not None and settings.masks is not None:
        raise UsageError("give --style-weights or --mask, not both")
    if settings.style_weights is not None:
        if min(settings.style_weights) < 0 or sum(settings.style_weights) <= 0:
            raise UsageError("--style-weights must be >= 0 with a positive sum")
    _check_temporal(settings)


def _check_temporal(settings: Settings):
    if settings.temporal not in TEMPORAL_MODES:
        raise UsageError(f"--temporal must be one of {', '.join(TEMPORAL_MODES)}, got "
                         f"{settings.temporal!r}")
    if not 0.0 <= settings.temporal_weight < 1.0:
        raise UsageError(f"--temporal-weight must be in [0, 1), got {settings.temporal_weight}")
    if settings.stats_momentum is not None:
        if not 0.0 <= settings.stats_momentum < 1.0:
            raise UsageError(f"--stats-momentum must be in [0, 1), got "
                             f"{settings.stats_momentum}")
        if not temporal.uses_stats(settings.temporal):
            raise UsageError("--stats-momentum needs --temporal stats or stats+flow")
    if temporal.uses_stats(settings.temporal) and settings.masks is not None:
        raise UsageError(f"--temporal {settings.temporal} cannot be used with --mask: masks "
                         "take each region's own statistics in every frame")


def plan_jobs(content, styles: Sequence, *, output=None, ext: str | None = None,
              video_ext: str | None = None, settings: Settings = Settings()) -> list[Job]:
    """Expand content and style paths (files or folders) into output jobs.

    One style folder gives one output per style; several style files give one combined
    output per content. Folders are searched with their subfolders (`list_images`): a
    content in a subfolder is written to the same subfolder of the output folder, a style
    in one is named by its path there (`sub-name`). `output` ending in an image or video
    extension is the output file (only for a single output); an existing folder, a name
    ending in "/" or one without an extension is a folder (default `output/`), where
    images are written as `ext` (default png), content videos as `video_ext` (default
    mp4) and animated GIF, WebP and PNG contents in their own format. Any other extension
    is refused, and so is an `ext` or `video_ext` that differs from the output file's.
    """
    styles = [Path(s) for s in styles]
    if not styles:
        raise UsageError("give at least one --style")
    folder_styles = [s for s in styles if s.is_dir()]
    if folder_styles and len(styles) > 1:
        raise UsageError(f"{folder_styles[0]}: a style folder cannot be combined with other "
                         "styles; give one folder, or several style files")
    _check_settings(settings, styles, bool(folder_styles))

    ext_given, video_ext_given = ext is not None, video_ext is not None
    ext = "png" if ext is None else ext.lower().lstrip(".")
    if f".{ext}" not in images.SAVE_FORMATS:
        raise UsageError(f"--ext {ext}: cannot write that format; use one of "
                         f"{', '.join(s.lstrip('.') for s in images.SAVE_FORMATS)}")
    video_ext = DEFAULT_VIDEO_EXT if video_ext is None else video_ext.lower().lstrip(".")
    if not video.can_write(f"x.{video_ext}"):
        raise UsageError(f"--video-ext {video_ext}: cannot write that format; use one of "
                         f"{', '.join(s.lstrip('.') for s in video.OUTPUT_CODECS)}")

    slash = output is not None and os.fspath(output).endswith(("/", os.sep))
    output = DEFAULT_OUTPUT if output is None else Path(output)
    # Any extension PIL knows (.gif too) means a file, so a format we cannot write is
    # refused instead of silently becoming a folder name; so is any other extension.
    to_file = not (slash or output.is_dir()) and bool(output.suffix)
    if to_file and not (images.is_image_path(output) or video.is_video_path(output)
                        or output.suffix.lower() in Image.registered_extensions()):
        raise UsageError(f"--output {output}: {output.suffix} is not an image or video "
                         f"extension; name a {', '.join(images.SAVE_FORMATS)} file, or a "
                         f"folder (end it with / if its name has a dot: {output}/)")

    exclude = () if to_file else (output,)  # an output folder inside an input folder
    contents = list_images(content, "content", videos=True, exclude=exclude)
    if settings.method == "gatys" and any(video.is_video_path(c) for c in contents):
        raise UsageError("--method gatys cannot stylise videos (one optimisation per frame "
                         "would take hours); use --method adain")
    animated = {c for c in contents if animation.is_animated(c)}  # from headers only
    if settings.method == "gatys" and animated:
        raise UsageError(f"--method gatys cannot stylise animations ({min(animated)} has "
                         "several frames); use --method adain")
    style_names = {}  # a style folder's files, by their path in it: sub/a.jpg -> sub-a
    if folder_styles:
        style_sets = [(s,) for s in list_images(folder_styles[0], "style", exclude=exclude)]
        for (style,) in style_sets:
            parts = style.relative_to(folder_styles[0]).parent.parts
            style_names[style] = "-".join((*parts, style.stem))
    else:
        style_sets = [tuple(list_images(s, "style")[0] for s in styles)]
    count = len(contents) * len(style_sets)

    if to_file:
        if count != 1:
            raise UsageError(f"--output {output} names one file, but this run makes {count} "
                             "outputs; give a folder instead")
        _check_output_file(contents[0], output)
        is_video = video.is_video_path(contents[0])
        flag, given = ("--video-ext", video_ext) if is_video else ("--ext", ext)
        # an animation takes its output file's format: --ext does not apply to it
        if (contents[0] not in animated and (video_ext_given if is_video else ext_given)
                and not _same_format(f"x.{given}", output)):
            raise UsageError(f"{flag} {given} and --output {output} disagree; give one of them")
        jobs = [Job(contents[0], style_sets[0], output)]
    else:
        if output.exists() and not output.is_dir():
            raise UsageError(f"--output {output}: exists and is not a folder")
        content_root = Path(content)
        jobs = []
        for c in contents:
            # a content in a subfolder goes to the same subfolder of the output folder
            sub = c.relative_to(content_root).parent if content_root.is_dir() else Path()
            folder = output / sub
            if video.is_video_path(c):
                suffix = video_ext
            elif c in animated:
                # an animation keeps its own format whatever --ext says: a still format
                # would lose the frames, and each of the three holds what the source held
                suffix = c.suffix.lower().lstrip(".")
            else:
                suffix = ext
            for s in style_sets:
                names = [style_names[s[0]]] if style_names else None
                name = output_name(c, s, suffix, settings, names)
                jobs.append(Job(c, s, folder / name))

    inputs = {p.resolve(): p for p in [*contents, *styles, *(settings.masks or ())]}
    seen = {}
    for job in jobs:
        target = job.output.resolve()
        if target in inputs:
            raise UsageError(f"{job.output}: the output would overwrite this input file; "
                             "choose another --output")
        if target in seen:
            first = seen[target]
            a, b = ((first.content, job.content) if first.content != job.content
                    else (first.styles[0], job.styles[0]))
            raise UsageError(f"{job.output}: both {a} and {b} would be written there; "
                             "rename one")
        seen[target] = job
    return jobs


def _same_format(a: Path | str, b: Path) -> bool:
    """Whether two file names have the same format (.jpg and .jpeg do)."""
    a, b = Path(a).suffix.lower(), b.suffix.lower()
    return a == b or (a in images.SAVE_FORMATS and b in images.SAVE_FORMATS
                      and images.SAVE_FORMATS[a][0] == images.SAVE_FORMATS[b][0])


class OutputError(Exception):
    """An output that cannot be written; str() is one line."""


def check_outputs(jobs: Sequence[Job]) -> None:
    """Refuse, before any work, output folders that cannot be created or written to
    (tried for real, see `outputs.folder_problem`)."""
    for job in jobs:
        if job.output.is_dir():
            raise OutputError(f"{job.output}: is a folder, so the output cannot be written "
                              "there; choose another --output")
    for folder in sorted({job.output.parent for job in jobs}):
        problem = outputs.folder_problem(folder)
        if problem:
            raise OutputError(f"{folder}: output folder {problem}; choose another --output")


def _check_output_file(content: Path, output: Path) -> None:
    """An output file name must suit its content: an image for an image, a video for a
    video, and a GIF, WebP or PNG name for an animation (written in that format)."""
    if animation.is_animated(content):
        if output.suffix.lower() not in animation.ANIMATED_FORMATS:
            raise UsageError(f"--output {output}: {content} is an animation; name a "
                             f"{', '.join(animation.ANIMATED_EXTENSIONS)} file or a folder")
        return
    if video.is_video_path(content):
        if not video.can_write(output):
            raise UsageError(f"--output {output}: {content} is a video; name a "
                             f"{', '.join(video.OUTPUT_CODECS)} file or a folder")
        return
    if video.is_video_path(output):
        raise UsageError(f"--output {output}: names a video, but {content} is an image")
    try:
        images.save_format(output)
    except images.ImageError as err:
        raise UsageError(str(err)) from None


# --- stylising ------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("preserve_color", "dtype"))
def _stylize(params, content, style, alpha, style_weights, masks, preserve_color,
             dtype="float32", content_stats=None, running=None):
    """The clipped output; with `running` (temporal.running_stats' state, momentum and
    started flag), also the content statistics each frame used. The content is encoded
    once: XLA merges the statistics' encoder with apply's (one program, no second pass)."""
    if running is not None:
        own = transfer.encode_content_stats(params, content, preserve_color=preserve_color,
                                            dtype=dtype)
        content_stats = temporal.running_stats(*own, *running)
    out = transfer.apply(params, content, style, alpha, style_weights=style_weights,
                         masks=masks, preserve_color=preserve_color, dtype=dtype,
                         content_stats=content_stats)
    out = jnp.clip(out, 0.0, 1.0)
    return out if running is None else (out, content_stats)


def prepare(loaded: images.LoadedImage, size: int, crop: bool):
    """Reference preprocessing: Resize(size) (0 keeps), then a centre square if `crop`."""
    rgb, alpha = images.resize_shorter(loaded.rgb, size, loaded.alpha)
    if crop:
        rgb, alpha = images.center_crop_square(rgb, alpha)
    return rgb, alpha


def fit_min_side(rgb: np.ndarray, side: int = MIN_SIDE) -> np.ndarray:
    """Upscale (bilinear) so the shorter side is at least `side` (see `min_side`)."""
    height, width = rgb.shape[:2]
    if min(height, width) >= side:
        return rgb
    return images.resize(rgb, *images.resized_shape(height, width, side))


def load_mask(path, height: int, width: int) -> np.ndarray:
    """A mask image as (height, width) float32 in [0, 1] (nearest resize; soft values kept)."""
    rgb = images.load_image(path).rgb
    return images.resize_nearest(rgb @ _LUMA, height, width).astype(np.float32)


@functools.lru_cache(maxsize=4)  # a video's frames share one size: load the masks once
def load_masks(paths: tuple[Path, ...], height: int, width: int) -> np.ndarray:
    """(K, height, width) masks; warns once when they leave pixels uncovered.

    Where the masks sum below 1 the content shows through (alpha 0 where none covers, see
    `ops.masked_adain`); that is seldom what was meant, so it is said.
    """
    masks = np.stack([load_mask(m, height, width) for m in paths])
    coverage = masks.sum(axis=0)
    uncovered = float(np.mean(coverage < 1 - 1 / 512))  # below 1 by more than 8-bit rounding
    if uncovered > 0:
        log.warning("warning: the masks (%s) leave %.1f%% of the pixels not fully covered; "
                    "those keep the content there (alpha 0 where no mask covers)",
                    ", ".join(str(m) for m in paths), 100 * uncovered)
    return masks


class _Styles:
    """Style images and statistics, each loaded and encoded once per run.

    A style that serves several outputs (a folder run, a video's frames) is encoded once
    into its statistics. One that serves a single image goes into that image's program as
    an image: one compilation instead of two.
    """

    def __init__(self, params, settings: Settings, uses: dict[Path, int] | None = None):
        self.params, self.settings = params, settings
        self.min_side = min_side(architectures.detect(params))
        self.uses = uses or {}
        self._images, self._stats = {}, {}

    def image(self, path: Path) -> np.ndarray:
        if path not in self._images:
            try:
                rgb, _ = prepare(images.load_image(path), self.settings.style_size,
                                 self.settings.crop)
                self._images[path] = fit_min_side(rgb, self.min_side)
            except images.ImageError as err:
                self._images[path] = err  # fail every job of this style, read it once
        value = self._images[path]
        if isinstance(value, Exception):
            raise value
        return value

    def stats(self, path: Path) -> transfer.StyleStats:
        if path not in self._stats:
            self._stats[path] = transfer.encode_style(self.params, self.image(path),
                                                      dtype=self.settings.dtype)
            self._images.pop(path)  # the statistics are all later jobs need
        return self._stats[path]

    def for_apply(self, paths: Sequence[Path], reused: bool = True):
        """What `apply` takes as `style`: images (for colour matching, or styles that serve
        one image only: `reused` False and used by one job) or stacked StyleStats."""
        if self.settings.preserve_color:
            return [jnp.asarray(self.image(p)) for p in paths]
        if not reused and all(self.uses.get(p, 1) == 1 for p in paths):
            style = [self.image(p) for p in paths]
            for p in paths:
                self._images.pop(p)  # its only job has it
            return style
        stats = [self.stats(p) for p in paths]
        if len(stats) == 1:
            return stats[0]
        return transfer.StyleStats(*(jnp.concatenate(parts) for parts in zip(*stats)))


def stylize_job(params, job: Job, settings: Settings, styles: _Styles,
                progress: bool = False) -> None:
    """Stylise one job and write its output; raises ImageError for a bad input file.

    progress: a bar over the optimisation steps (method "gatys"), or over the frames of
    a video or an animation.
    """
    if video.is_video_path(job.content):
        return stylize_video_job(params, job, settings, styles, progress=progress)
    if animation.is_animated(job.content):
        return stylize_animation_job(params, job, settings, styles, progress=progress)
    rgb, alpha = prepare(images.load_image(job.content), settings.content_size, settings.crop)
    height, width = rgb.shape[:2]
    content = fit_min_side(rgb, styles.min_side)
    if settings.method == "gatys":
        out = _gatys(params, content, styles.image(job.styles[0]), settings, job, progress)
    else:
        out = _adain(params, content, job, settings, styles, reused=False)
    out = np.asarray(out)
    if out.shape[:2] != (height, width):
        out = np.clip(images.resize(out, height, width), 0.0, 1.0)
    job.output.parent.mkdir(parents=True, exist_ok=True)
    images.save_image(job.output, out, alpha)


# Above this many content pixels a plain single-style VGG stylisation goes through
# tiling.apply_tiled: 2048^2 untiled peaks near 3.8 GiB RSS, 4096^2 would need ~15 GiB.
TILE_ABOVE_PIXELS = 2048 * 2048


def stylize_video_job(params, job: Job, settings: Settings, styles: _Styles,
                      progress: bool = False) -> None:
    """Stylise a content video frame by frame into `job.output` (same frame rate).

    Frames get the images' preprocessing (--content-size, --crop); for H.264 outputs a
    frame with an odd side loses its last row or column (yuv420p needs even sides).
    Raises VideoError; frames stylised before a failure are kept in the partial file.
    A first Ctrl-C stops it after the frames being stylised (a second one at once):
    video.Interrupted, a KeyboardInterrupt that names the partial file.
    """
    even = video.needs_even_sides(job.output)
    with video.VideoReader(job.content) as reader, \
            video.interrupts_between_frames() as interrupt:
        if reader.other_streams:
            log.warning("%s: only its first video and audio streams are used (%s left out)",
                        job.content, ", ".join(reader.other_streams))
        bar = tqdm(total=reader.frames, disable=not progress, file=sys.stderr, unit="frame",
                   leave=False, desc=job.output.name)
        writer = video.VideoWriter(job.output, reader.rate, audio_from=reader)

        def interrupted():
            kept = writer.partial if writer.written and writer.partial.exists() else None
            return video.Interrupted(job.output, kept, writer.written)

        try:
            with bar, writer:  # takes the output's lock: refused here if another run has it
                for out in video_outputs(params, job, reader, settings, styles, even=even,
                                         interrupt=interrupt, progress=progress):
                    writer.write(out)
                    bar.update(1)
                if interrupt.requested:  # after the last batch: stop the run here
                    raise KeyboardInterrupt
                if not writer.written:
                    raise video.VideoError(job.content, "no video frames could be decoded")
        except KeyboardInterrupt:  # ours, or a second Ctrl-C from anywhere
            raise interrupted() from None
        except images.ImageError as err:  # VideoError included
            if interrupt.requested:
                raise interrupted() from None
            if writer.written:
                raise video.VideoError(err.path, f"{err.reason}; the {writer.written} frames "
                                       f"before it are in {writer.partial}") from None
            raise  # the writer removed its empty partial file (if it made one)
        if interrupt.requested:  # while the file was finished: it is whole; stop the run
            raise video.Interrupted(job.output, None, writer.written)


def video_outputs(params, job: Job, frames, settings: Settings, styles: _Styles, *,
                  even: bool = False, interrupt=None, progress: bool = False):
    """The stylised frames of `frames` (an iterable of (H, W, 3) frames in [0, 1], e.g. a
    VideoReader of `job.content`) for `job`, in order, with `settings.temporal`.

    `--temporal stats` without momentum first reads `job.content` once more for the
    content statistics. `interrupt.requested` (video.interrupts_between_frames) is
    honoured between batches by raising KeyboardInterrupt; nothing is under way then.
    even: drop a last odd row or column of each frame (for H.264 outputs).
    """
    batch_size = settings.video_batch
    if settings.masks is not None or settings.preserve_color:
        batch_size = 1  # per-frame masks resizing and colour matching: one frame at a time
    requested = lambda: interrupt is not None and interrupt.requested
    state = temporal.VideoState(settings.temporal, settings.temporal_weight,
                                settings.stats_momentum)
    if state.needs_first_pass:
        state.first_pass(_video_stats(params, job, settings, styles, even, requested,
                                      progress))
    for batch in video.batches(frames, batch_size):
        if requested():  # here no PyAV or XLA call is under way
            raise KeyboardInterrupt
        yield from _stylize_frames(params, batch, job, settings, styles, even, batch_size,
                                   state)


def _prepare_frame(frame: np.ndarray, settings: Settings, even: bool) -> np.ndarray:
    """A video frame as the images' preprocessing leaves it (--content-size, --crop); for
    H.264 a last odd row or column is dropped (yuv420p needs even sides), not resampled."""
    rgb, _ = prepare(images.LoadedImage(frame, None), settings.content_size, settings.crop)
    if even:
        height, width = video.even_shape(*rgb.shape[:2])
        rgb = rgb[:height, :width]
    return rgb


def _stylize_frames(params, frames, job, settings, styles, even: bool, batch_size: int,
                    state: temporal.VideoState):
    """Stylised frames (float32 HWC), at the preprocessed size of `frames`, in order."""
    prepared = [_prepare_frame(frame, settings, even) for frame in frames]
    height, width = prepared[0].shape[:2]
    contents = [fit_min_side(rgb, styles.min_side) for rgb in prepared]
    # Pad a short last batch with copies so one compiled shape serves the whole video.
    contents += contents[-1:] * (batch_size - len(contents))
    out = _adain(params, np.stack(contents), job, settings, styles, state=state,
                 real=len(frames))
    for rgb, frame_out in zip(prepared, np.asarray(out)[: len(frames)]):
        if frame_out.shape[:2] != (height, width):
            frame_out = np.clip(images.resize(frame_out, height, width), 0.0, 1.0)
        yield state.blend(rgb, frame_out)


def _video_stats(params, job: Job, settings: Settings, styles: _Styles, even: bool,
                 requested, progress: bool):
    """[(mean, std, positions)] of the content statistics of up to STATS_FRAMES evenly
    spaced frames, for `--temporal stats`: a first pass over the video."""
    stats = list(_sampled_stats(params, job, settings, styles, even, requested, progress))
    if not stats:
        raise video.VideoError(job.content, "no video frames could be decoded")
    return stats


def _sampled_stats(params, job, settings, styles, even, requested, progress):
    with video.VideoReader(job.content) as reader:
        count = reader.frames
    if not count:  # the container does not say: count by decoding (cheap next to stylising)
        with video.VideoReader(job.content) as reader:
            count = sum(1 for _ in reader)
    with video.VideoReader(job.content) as reader:
        wanted = set(temporal.sample_indices(count))
        with tqdm(total=len(wanted), disable=not progress, file=sys.stderr, unit="frame",
                  leave=False, desc=f"{job.output.name}: statistics") as bar:
            for index, frame in enumerate(reader):
                if requested():
                    raise KeyboardInterrupt
                if index not in wanted:
                    continue
                content = fit_min_side(_prepare_frame(frame, settings, even), styles.min_side)
                if _tiled(params, content, job, settings):
                    feat = tiling.encode_tiled(params, content)
                    mean, std = (x[None] for x in tiling.mean_std_float64(feat))
                else:
                    mean, std = transfer.encode_content_stats(
                        params, content, preserve_color=settings.preserve_color or False,
                        dtype=settings.dtype)
                rows, cols = (architectures.detect(params).feature_size(n)
                              for n in content.shape[:2])
                yield np.asarray(mean), np.asarray(std), rows * cols
                bar.update(1)


def _tiled(params, content: np.ndarray, job: Job, settings: Settings) -> bool:
    """Whether `content` goes through tiling.apply_tiled (see TILE_ABOVE_PIXELS)."""
    height, width = content.shape[-3:-1]
    return (height * width > TILE_ABOVE_PIXELS and len(job.styles) == 1
            and settings.masks is None and not settings.preserve_color
            and architectures.detect(params).name == "vgg19")


def _adain(params, content: np.ndarray, job: Job, settings: Settings, styles: _Styles,
           reused: bool = True, state: temporal.VideoState | None = None, real: int = 0):
    """Stylise (H, W, 3) or (N, H, W, 3) content for `job` (N only without masks).

    reused: whether these styles serve later calls for this job (a video's frames).
    state: a video's temporal state, whose content statistics the frames use (the first
    `real` of them are frames, the rest padding)."""
    height, width = content.shape[-3:-1]
    content_stats = None if state is None else state.content_stats
    if _tiled(params, content, job, settings):
        if settings.dtype != "float32":
            _warn_once(f"warning: --dtype {settings.dtype} is not used for images above "
                       f"{TILE_ABOVE_PIXELS} pixels, which are stylised in tiles in float32")
        if state is not None and state.is_running:
            content_stats = functools.partial(_running_average, state)
        out = tiling.apply_tiled(params, content, styles.for_apply(job.styles), settings.alpha,
                                 content_stats=content_stats)
        return np.clip(out, 0.0, 1.0)
    running = None if state is None else state.running(
        lambda: _channels(params, styles.min_side))
    masks = None
    if settings.masks is not None:
        masks = jnp.asarray(load_masks(settings.masks, height, width))
    style_weights = settings.style_weights
    if style_weights is None and masks is None and len(job.styles) > 1:
        style_weights = (1.0,) * len(job.styles)  # equal interpolation weights
    out = _stylize(params, content, styles.for_apply(job.styles, reused),
                   np.float32(settings.alpha),  # a NumPy scalar: no program to make it
                   None if style_weights is None else np.asarray(style_weights, np.float32),
                   masks, settings.preserve_color or False, settings.dtype,
                   content_stats, running)
    if running is None:
        return out
    out, (mean, std) = out
    state.advance(mean[real - 1], std[real - 1])  # the last real frame's, not padding's
    return out


def _running_average(state: temporal.VideoState, mean, std):
    """One tiled frame's content statistics for the running average, from its own (the
    frames come one at a time, on the host); advances `state`."""
    used = temporal.running_stats(mean[None].astype(np.float32), std[None].astype(np.float32),
                                  *state.running(lambda: mean.shape[-1]))
    state.advance(used[0][0], used[1][0])
    return tuple(np.asarray(x[0]) for x in used)


def _channels(params, side: int) -> int:
    """C at the AdaIN layer (from shapes only: no computation)."""
    return jax.eval_shape(lambda p: transfer.encode(p, jnp.zeros((1, side, side, 3))),
                          params).shape[-1]


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    log.warning("%s", message)


def _gatys(params, content: np.ndarray, style: np.ndarray, settings: Settings, job: Job,
           progress: bool):
    with tqdm(total=settings.steps, disable=not progress, file=sys.stderr, unit="step",
              leave=False, desc=job.output.name) as bar:
        def callback(step, loss):
            bar.update(1)
            if not bar.disable:
                bar.set_postfix(loss=f"{float(loss):.4g}", refresh=False)

        from adain_jax import gatys  # Optax: imported only for this method

        return gatys.gatys(params, content, style, steps=settings.steps,
                           optimizer=settings.optimizer, style_loss=settings.style_loss,
                           callback=callback)


def run(params, jobs: Sequence[Job], settings: Settings = Settings(), *,
        progress: bool | None = None) -> list[Failure]:
    """Stylise every job, going on past bad files; returns the failures (empty if none).

    progress: tqdm bars on stderr, one over the jobs and, for method "gatys", one over
    each job's steps nested in it. None (the default): the job bar only when there are
    several jobs, the step bar always; False: none; True: both always.
    """
    params = jax.device_put(params)  # once, not on every call
    uses = collections.Counter(path for job in jobs for path in job.styles)
    styles = _Styles(params, settings, uses)
    failures = []
    show = len(jobs) > 1 if progress is None else progress
    for job in tqdm(jobs, disable=not show, file=sys.stderr, unit="output", leave=False):
        try:
            stylize_job(params, job, settings, styles, progress=progress is not False)
        except images.ImageError as err:
            failures.append(Failure(job, str(err)))
        except OSError as err:  # creating the output folder
            failures.append(Failure(job, f"{job.output.parent}: {err.strerror or err}"))
        except jax.errors.JaxRuntimeError as err:  # e.g. out of memory for one huge image
            failures.append(Failure(job, f"{job.content}: {str(err).splitlines()[0]}"))
        else:
            log.debug("wrote %s", job.output)
    return failures


def stylize_animation_job(params, job: Job, settings: Settings, styles: _Styles,
                          progress: bool = False) -> None:
    """Stylise an animated GIF, WebP or PNG content frame by frame, the style encoded once,
    into an animation in `job.output`'s format with the source's durations and loop count.

    Each frame is what the animation displays there (`animation.load_animation`) and gets
    the images' preprocessing (--content-size, --crop); its alpha is kept. The file is
    written when every frame is done, so a failure or Ctrl-C part-way leaves none. A
    first Ctrl-C stops after the frame being stylised (see stylize_video_job).
    """
    if settings.method != "adain":  # plan_jobs refuses this first
        raise images.ImageError(job.content, f"--method {settings.method} cannot stylise "
                                "animations; use --method adain")
    source = animation.load_animation(job.content)
    frames, alphas = [], []
    with video.interrupts_between_frames() as interrupt, \
            tqdm(total=len(source.frames), disable=not progress, file=sys.stderr,
                 unit="frame", leave=False, desc=job.output.name) as bar:
        for i, frame in enumerate(source.frames):
            alpha = None if source.alphas is None else source.alphas[i]
            rgb, alpha = prepare(images.LoadedImage(frame, alpha), settings.content_size,
                                 settings.crop)
            source.frames[i] = None  # done with it: hold one copy of the animation, not two
            height, width = rgb.shape[:2]
            out = np.asarray(_adain(params, fit_min_side(rgb, styles.min_side), job, settings,
                                    styles, reused=True))
            if out.shape[:2] != (height, width):
                out = np.clip(images.resize(out, height, width), 0.0, 1.0)
            frames.append(out)
            alphas.append(alpha)
            bar.update(1)
            if interrupt.requested:  # here no XLA call is under way
                raise KeyboardInterrupt
    job.output.parent.mkdir(parents=True, exist_ok=True)
    animation.save_animation(job.output, frames, source.durations, source.loop,
                             None if source.alphas is None else alphas)
