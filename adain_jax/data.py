"""Training input: every content image paired with a random style image, as uint8 crops.

As in the paper's training setup, each image is resized so that its shorter side is
`resize` (512) with its aspect ratio kept (bilinear, antialiased when shrinking), then a
random `crop_size` (256) square is cut out; content and style are treated alike.
`resize_mode="square"` instead squashes to `resize` x `resize` before the crop, as the
PyTorch port's training script does. No flips, like both references.

Content comes from a TFDS dataset (`tfds="coco/2017"`, any split; the first `Image`
feature is used) or from a folder tree; styles come from a folder tree. Files that cannot
be decoded completely are skipped, logged once and counted (`skipped_files()`).

Why Grain. The pipeline is a `grain.MapDataset` over content indices: shard by process
(`[process_index::process_count]`), shuffle, repeat forever (each epoch reshuffled from the
seed), then one `random_map` that reads, resizes and crops a content image and a randomly
drawn style image. Grain seeds that map per element index, so the output depends only on
the seed and not on thread timing or on how many worker processes run it, and the
iterator's state is one small dict (`get_state()` / `set_state()`, or Orbax through
`grain.checkpoint.CheckpointSave` / `CheckpointRestore`): a resumed run sees exactly the
batches it would have seen. TFDS is read through `tfds.data_source` (ArrayRecord random
access, decoded with NumPy): TensorFlow must be installed because TFDS's builders import it,
but no tf.data graph runs in the training process. A tf.data pipeline would give the same
crops but no exact, cheap resume across restarts and a second runtime competing with JAX
for the CPU; a PyTorch DataLoader would need torch at training time.

Corrupt files never stop training and do not break determinism or resume: a failed read
becomes a marker element, which is counted and dropped in the consuming process before
batching, so the count is exact even with `workers > 0` worker processes. Decoding runs in
`threads` threads of the training process by default (PIL releases the GIL while decoding
and resizing); `workers` moves it into that many processes when one host's Python is the
bottleneck. The batches are the same either way, but the iterator state's layout depends
on `workers`, so resume with the value the checkpoint was written with. Worker processes
are spawned, so a script using them needs the `if __name__ == "__main__":` guard. Large
JPEGs are decoded at a reduced DCT scale while both sides stay >= 2 * `resize`.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import re
import signal
import threading
import time
from typing import Any, Sequence

import grain
import numpy as np
from PIL import Image, ImageOps

from adain_jax import images
from adain_jax.configs import RESIZE_MODES, DataConfig  # noqa: F401  (defined there)
from adain_jax.images import MAX_PIXELS

log = logging.getLogger(__name__)

# A pair whose style image fails is retried with other random styles up to this many
# times in all, then with every style in turn.
STYLE_TRIES = 32
# More consecutive unreadable content images than this means the data, not a few files,
# is broken: raise rather than spin.
MAX_CONSECUTIVE_SKIPS = 1000


class DataError(ValueError):
    """A problem with the training data or its options; str() is one line."""


# ---------------------------------------------------------------- skipped-file count

_skipped: set[str] = set()
_skipped_lock = threading.Lock()


def skipped_files() -> int:
    """Number of distinct unreadable files skipped so far by iterators in this process."""
    with _skipped_lock:
        return len(_skipped)


def _record_skip(key: str, reason: str) -> None:
    with _skipped_lock:
        new = key not in _skipped
        _skipped.add(key)
    if new:
        log.warning("skipping unreadable image %s: %s", key, reason)


def _reason(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


# ---------------------------------------------------------------- image ops

def resized_size(width: int, height: int, resize: int, mode: str = "shorter") -> tuple[int, int]:
    """(width, height) after resizing: shorter side to `resize` (torchvision's rounding
    down of the longer side), or `resize` x `resize` for mode "square"."""
    if mode == "square":
        return resize, resize
    if width <= height:
        return resize, resize * height // width
    return resize * width // height, resize


def resize_image(image: Image.Image, resize: int, mode: str = "shorter") -> Image.Image:
    """Bilinear (antialiased when shrinking) resize of an RGB image, see `resized_size`."""
    size = resized_size(*image.size, resize, mode)
    return image.resize(size, Image.Resampling.BILINEAR)


def random_crop(pixels: np.ndarray, crop_size: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly placed `crop_size` square window of an (H, W, C) array."""
    height, width = pixels.shape[:2]
    assert height >= crop_size and width >= crop_size, (pixels.shape, crop_size)
    top = int(rng.integers(0, height - crop_size + 1))
    left = int(rng.integers(0, width - crop_size + 1))
    return pixels[top:top + crop_size, left:left + crop_size]


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # PIL's convert clips 16-bit samples at 255; keep the high byte instead.
        gray = (np.clip(np.asarray(image, np.int64), 0, 65535) >> 8).astype(np.uint8)
        return Image.fromarray(np.repeat(gray[..., None], 3, axis=-1))
    return image if image.mode == "RGB" else image.convert("RGB")


def read_image(path: str, min_size: int = 0) -> Image.Image:
    """Decode an image file completely, as RGB with EXIF orientation applied.

    A JPEG is decoded at a reduced scale (1/2, 1/4 or 1/8, by libjpeg's DCT scaling) when
    both its sides stay >= `min_size`; `min_size=0` always decodes at full size.
    Raises on any failure; callers decide whether to skip.
    """
    with Image.open(path) as image:
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise ValueError(f"image is {width}x{height}, over {MAX_PIXELS} pixels")
        if min_size and image.format == "JPEG":
            image.draft("RGB", (min_size, min_size))
        image.load()  # the full decode: truncated or corrupt data fails here
        image = ImageOps.exif_transpose(image) or image
        return _to_rgb(image)


def _array_to_image(pixels: Any) -> Image.Image:
    return Image.fromarray(images.rgb_pixels(pixels))


# ---------------------------------------------------------------- sources

def find_images(root: str, what: str) -> list[str]:
    """Image files under `root` by images.list_image_files' rule (stylize.py's too):
    subfolders searched, hidden names ignored, every other file skipped is logged."""
    if not os.path.isdir(root):
        raise DataError(f"{what} folder {root} does not exist or is not a folder")
    found, skipped = images.list_image_files(root)
    if skipped:
        log.warning("%s", images.skipped_note(root, skipped))
    if not found:
        kinds = ", ".join(e[1:] for e in images.IMAGE_EXTENSIONS)
        raise DataError(f"no {what} images ({kinds}) found in {root}")
    return [str(p) for p in found]


def parse_tfds_spec(spec: str) -> tuple[str, str]:
    """"NAME[/CONFIG][:VERSION][:SPLIT]" -> (TFDS name with version, split or "train")."""
    name, _, rest = spec.partition(":")
    version = re.match(r"(\d+\.\d+\.\d+)(:|$)", rest)
    if version:
        name, rest = f"{name}:{version.group(1)}", rest[version.end():]
    if not name or name.startswith("/") or name.endswith("/"):
        raise DataError(f"bad TFDS dataset {spec!r}: expected NAME[:SPLIT], e.g. coco/2017:train")
    return name, rest or "train"


def find_image_feature(features) -> tuple[str, ...] | None:
    """Key path of the first `tfds.features.Image` in a FeaturesDict, searching nested
    FeaturesDicts depth-first in key order; None if there is none."""
    import tensorflow_datasets as tfds

    for key, feature in features.items():
        if isinstance(feature, tfds.features.Image):
            return (key,)
        if isinstance(feature, tfds.features.FeaturesDict):
            inner = find_image_feature(feature)
            if inner is not None:
                return (key, *inner)
    return None


@dataclasses.dataclass(frozen=True)
class _FolderImages:
    """Image files by index; pickles as its path list (for worker processes)."""
    paths: Sequence[str]
    min_size: int

    def __len__(self) -> int:
        return len(self.paths)

    def key(self, index: int) -> str:
        return self.paths[index]

    def read(self, index: int) -> Image.Image:
        return read_image(self.paths[index], self.min_size)


@dataclasses.dataclass(frozen=True)
class _TfdsImages:
    """Decoded images of one TFDS split, read through `tfds.data_source`."""
    source: Any
    feature: tuple[str, ...]
    label: str

    def __len__(self) -> int:
        return len(self.source)

    def key(self, index: int) -> str:
        return f"{self.label}[{index}]"

    def read(self, index: int) -> Image.Image:
        record = self.source[index]
        for key in self.feature:
            record = record[key]
        return _array_to_image(record)


def _open_tfds(spec: str, data_dir: str | None) -> _TfdsImages:
    name, split = parse_tfds_spec(spec)
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError("reading TFDS datasets needs tensorflow-datasets and tensorflow: "
                        "pip install 'adain-jax[data]'") from None
    where = data_dir or "the default TFDS data directory"
    try:
        # download=False: COCO is ~20 GB, so preparing it is an explicit step (tfds build).
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except tfds.core.DatasetNotFoundError:
        raise DataError(f"unknown TFDS dataset {name!r}; see "
                        "https://www.tensorflow.org/datasets/catalog") from None
    except Exception as err:  # noqa: BLE001 - TFDS raises many types for an unprepared dataset
        raise DataError(f"cannot read TFDS dataset {name} split {split!r} from {where} "
                        f"({_reason(err)}); prepare it with `tfds build {name} "
                        f"--data_dir DIR --file_format array_record`") from None
    feature = find_image_feature(source.dataset_info.features)
    if feature is None:
        raise DataError(f"TFDS dataset {name} has no Image feature to use as content")
    if len(source) == 0:
        raise DataError(f"TFDS dataset {name} split {split!r} is empty")
    return _TfdsImages(source, feature, f"{name}:{split}")


# ---------------------------------------------------------------- pipeline

class _Pair(grain.transforms.RandomMap):
    """Content index -> {"content", "style"} uint8 crops, plus the files that failed.

    Element-level failures become {"skipped": ...} markers rather than exceptions, so
    that they reach the consuming process (see _Tally) even from worker processes.
    """

    def __init__(self, content, styles, resize: int, crop_size: int, mode: str):
        self.content, self.styles = content, styles
        self.resize, self.crop_size, self.mode = resize, crop_size, mode
        # Styles known to fail in this process, with the reason: a property of the file, so
        # not decoding them again changes speed only, never the output.
        self._bad_styles: dict[int, str] = {}

    def _crop(self, image: Image.Image, rng: np.random.Generator) -> np.ndarray:
        pixels = np.asarray(resize_image(image, self.resize, self.mode))
        return np.array(random_crop(pixels, self.crop_size, rng))

    def _style(self, j: int, rng: np.random.Generator, skipped: list) -> np.ndarray | None:
        if j in self._bad_styles:
            skipped.append((self.styles.key(j), self._bad_styles[j]))
            return None
        try:
            return self._crop(self.styles.read(j), rng)
        except Exception as err:  # noqa: BLE001 - any undecodable file is skipped, never fatal
            self._bad_styles[j] = _reason(err)
            skipped.append((self.styles.key(j), self._bad_styles[j]))
            return None

    def random_map(self, index, rng: np.random.Generator) -> dict:
        index = int(index)
        try:
            content = self._crop(self.content.read(index), rng)
        except Exception as err:  # noqa: BLE001
            return {"skipped": ((self.content.key(index), _reason(err)),)}
        skipped: list = []
        # Redraw on failure (unbiased); then, so that bad styles never cost a content
        # image, scan on from the last draw through every style.
        draws = rng.integers(len(self.styles), size=STYLE_TRIES).tolist()
        scan = (draws[-1] + 1 + k for k in range(len(self.styles) - 1))
        for j in itertools.chain(draws, scan):
            style = self._style(j % len(self.styles), rng, skipped)
            if style is not None:
                return {"content": content, "style": style, "skipped": tuple(skipped)}
        return {"skipped": tuple(skipped),
                "fatal": f"none of the {len(self.styles)} style images can be read"}


class _Tally(grain.transforms.Map):
    """Counts skipped files in the consuming process and turns failed pairs into None."""

    def __init__(self):
        self._run = 0

    def map(self, element: dict) -> dict | None:
        for key, reason in element["skipped"]:
            _record_skip(key, reason)
        if "fatal" in element:
            raise DataError(element["fatal"])
        if "content" not in element:
            self._run += 1
            if self._run > MAX_CONSECUTIVE_SKIPS:
                raise DataError(f"over {MAX_CONSECUTIVE_SKIPS} consecutive content images "
                                "were unreadable; check the data (see the warnings)")
            return None
        self._run = 0
        return {"content": element["content"], "style": element["style"]}


def _is_pair(element) -> bool:
    return element is not None


def _init_worker(index: int, count: int) -> None:
    """Grain worker setup: the training process alone handles Ctrl-C / SIGTERM, and a
    worker exits once that process is gone.

    Ctrl-C signals the whole process group: workers dying of it printed tracebacks, leaked
    shared memory and could starve the batches still needed before the final checkpoint.
    Grain stops its workers only from a live parent, so after a SIGKILL they ran forever.
    """
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    parent = os.getppid()

    def exit_with_parent():
        while os.getppid() == parent:  # an orphan is re-parented
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=exit_with_parent, name="exit-with-parent", daemon=True).start()


def _check(cfg: DataConfig) -> None:
    if cfg.tfds and cfg.content_dir:
        raise DataError("give either --tfds or --content-dir for content images, not both")
    if not cfg.tfds and not cfg.content_dir:
        raise DataError("no content images: give --tfds NAME (e.g. coco/2017) or "
                        "--content-dir DIR")
    if not cfg.styles:
        raise DataError("no style images: give --styles DIR")
    if cfg.resize_mode not in RESIZE_MODES:
        raise DataError(f"unknown resize mode {cfg.resize_mode!r}; use one of {RESIZE_MODES}")
    if cfg.crop_size < 1 or cfg.resize < 1:
        raise DataError(f"--resize {cfg.resize} and --crop-size {cfg.crop_size} must be positive")
    if cfg.crop_size > cfg.resize:
        raise DataError(f"--crop-size {cfg.crop_size} is larger than --resize {cfg.resize}")
    if cfg.batch_size < 1:
        raise DataError(f"batch size must be positive, got {cfg.batch_size}")
    if cfg.seed < 0:
        raise DataError(f"seed must be >= 0, got {cfg.seed}")
    if cfg.workers < 0 or cfg.threads < 0:
        raise DataError(f"workers ({cfg.workers}) and threads ({cfg.threads}) must be >= 0")
    if not 0 <= cfg.process_index < cfg.process_count:
        raise DataError(f"process index {cfg.process_index} is outside 0..{cfg.process_count - 1}")


def make_dataset(cfg: DataConfig) -> grain.IterDataset:
    """The batched pipeline; iterate it, or call `make_iterator`, to get batches."""
    _check(cfg)
    # JPEGs are decoded at reduced scale only while both sides stay >= 2 * resize, so the
    # antialiased resize still has at least twice the output resolution to work from.
    min_size = 2 * cfg.resize
    if cfg.tfds:
        content = _open_tfds(cfg.tfds, cfg.data_dir)
    else:
        content = _FolderImages(tuple(find_images(cfg.content_dir, "content")), min_size)
    styles = _FolderImages(tuple(find_images(cfg.styles, "style")), min_size)
    shard = range(len(content))[cfg.process_index::cfg.process_count]
    if len(content) < cfg.process_count:  # some process would get no content at all
        raise DataError(f"{len(content)} content images cannot be shared among "
                        f"{cfg.process_count} processes")
    log.info("content: %d images (%d in shard %d of %d); styles: %d images",
             len(content), len(shard), cfg.process_index, cfg.process_count, len(styles))

    # Folding the process index into the seeds keeps hosts from drawing the same styles
    # and crops at the same step.
    shuffle_seed, map_seed = (int(s) for s in np.random.SeedSequence(
        [cfg.seed, cfg.process_index]).generate_state(2))
    ds = (grain.MapDataset.source(shard)
          .shuffle(seed=shuffle_seed)
          .repeat()  # forever, reshuffled each epoch
          .random_map(_Pair(content, styles, cfg.resize, cfg.crop_size, cfg.resize_mode),
                      seed=map_seed))
    buffer = max(cfg.threads, 4 * cfg.batch_size)
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=cfg.threads,
                                              prefetch_buffer_size=buffer))
    if cfg.workers > 0:
        # Grain's worker start reads an absl flag, which raises unless absl flags were
        # parsed; scripts using argparse never parse them, so take the defaults.
        from absl import flags
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.workers),
                            worker_init_fn=_init_worker)
    return (it.map(_Tally())
            .filter(_is_pair)
            .batch(cfg.batch_size, drop_remainder=True))


def make_iterator(cfg: DataConfig) -> grain.DatasetIterator:
    """An endless iterator of {"content", "style"}: uint8 (batch, crop, crop, 3) batches.

    Its `get_state()` / `set_state()` (or grain.checkpoint with Orbax) resume exactly.
    Raises DataError for unusable options or data.
    """
    return iter(make_dataset(cfg))
