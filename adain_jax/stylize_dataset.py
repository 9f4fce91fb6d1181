"""Stylising a whole dataset, Stylized-ImageNet-like: every image re-rendered by AdaIN with
a style drawn from a bank (Geirhos et al., ICLR 2019; alpha 1 there).

    python -m adain_jax.stylize_dataset --tfds imagenet2012 --split train \\
        --styles bank.safetensors --out DIR --resize sin
    python -m adain_jax.stylize_dataset --content-dir photos/ --styles paintings/ --out DIR
    python -m adain_jax.stylize_dataset ... --shard 3/8          # the 4th of 8 processes
    python -m adain_jax.stylize_dataset ... --distributed        # one share per JAX process
    python -m adain_jax.beam ... --runner FlinkRunner ...        # the same job on Apache Beam

Order and identity. The contents are put in one order first: a folder's image files by
path (`images.list_image_files`), a TFDS split by example index. A content's id is its
path relative to --content-dir, or its TFDS `file_name` (the example index when the
dataset has none). The style of a content is `style_row(seed, id, n)`, a pure function of
the seed and the id (sha256 of "SEED/ID", first 8 bytes big-endian, modulo the number of
styles; the modulo bias is below 1e-13 for any real bank), so every shard and every rerun
agrees. Alpha is --alpha for every content.

Chunks. The ordered contents are cut into chunks of CHUNK images, the unit of work: a
chunk is stylised, its outputs written (each atomically), and then its record
OUT/_chunks/chunk-NNNNNN.json (its manifest rows and failures) is written atomically. A
rerun skips the chunks with a record and redoes any other from its start, grouping its
images into batches exactly as before, so SIGKILL at any moment and a rerun give the same
bytes as a run never interrupted. Shard I of N takes the contiguous chunks
[I*C/N, (I+1)*C/N) of the C chunks, so any N writes the same files.

Outputs (relative to --out):
  job.json                the settings; a rerun with other settings is refused
  manifest.csv            one row per image stylised, in content order: content_id,
                          style, style_sha256, alpha, seed, weights_sha256, output
  failures.csv            content_id, reason of each content that could not be used
  _chunks/                one record per finished chunk (what the two CSVs are made of)
  style_bank.safetensors  when --styles is a folder: the bank built from it first
  png/jpg: the source tree mirrored (NAME.png); TFDS: SPLIT/LABEL/FILE_NAME.png
  arrayrecord: records/chunk-NNNNNN.array_record, one per chunk, readable in content
      order by grain.ArrayRecordDataSource(sorted(glob("records/*.array_record")));
      a record is `encode_record`'s: one line of JSON (content_id, style, alpha, height,
      width, label when the dataset has one) then "\\n" then the PNG; `decode_record`
      reads it. The manifest's output is "records/chunk-NNNNNN.array_record#K" (record K).
The manifest and failures files are written by the run that finds every chunk done (one
process, or the last shard to finish; a rerun of any shard writes them again).

--resize sin is Stylized-ImageNet's content recipe: shorter side 256, centre crop 224
(torchvision Resize(256), CenterCrop(224)); styles built from a folder are then resized to
224 and centre-cropped square. --resize keep stylises each image at its own size (tiled
above stylize_files.TILE_ABOVE_PIXELS, as stylize.py), styles at 512.

--sin-compat assigns styles as the published Stylized-ImageNet code does
(rgeirhos/Stylized-ImageNet, code/preprocess_imagenet.py and code/adain.py's StyleLoader,
with code/general.py's settings): the style list is the sorted names of the preprocessed
paintings folder; one np.random.RandomState(49809) draws randint(0, n_styles) for every
content, batch by batch, over the val set and then the train set, each in torchvision
ImageFolder order (sorted class folders, then sorted file names); alpha 1. Here the draw
for a content is that stream's value at its position (val images first when the split is
train). A folder with train/ and val/ is processed whole in that order; a folder named
train beside a val/ folder starts after val's count; a TFDS split is put in ImageFolder
order by (label, file_name), train after validation. Not reproduced: the paintings'
preprocessing (crop then PIL thumbnail to 224, Lanczos; here resize then crop, bilinear)
and the float arithmetic of the original GPU run.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import csv
import dataclasses
import functools
import glob
import hashlib
import io
import json
import logging
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from adain_jax.cli import (Parser, add_common_flags, run_main, setup_logging,
                           start_compile_cache, work_starts)
from adain_jax.outputs import write_atomic

log = logging.getLogger(__name__)

PROG = "python -m adain_jax.stylize_dataset"
FORMAT = "adain-jax-dataset/1"
CHUNK = 256  # images per chunk: the unit of work, of resuming and of sharding
SIN_SEED = 49809  # np.random.RandomState seed of Stylized-ImageNet's StyleLoader
SIN_SIZES = (256, 224)  # Resize(256), CenterCrop(224)
KEEP_STYLE_SIZE = 512  # styles of --resize keep, as stylize.py's default
MANIFEST_COLUMNS = ("content_id", "style", "style_sha256", "alpha", "seed",
                    "weights_sha256", "output")
FORMATS = ("png", "jpg", "arrayrecord")
# torchvision's ImageFolder extensions (lower case), for --sin-compat's file order
IMAGEFOLDER_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff",
                          ".webp")


class JobError(ValueError):
    """A job that cannot run as asked; str() is one line."""


# ---- Assignment ----------------------------------------------------------------------------

def style_row(seed: int, content_id: str, n_styles: int) -> int:
    """The bank row of the style for `content_id`: sha256("SEED/ID") mod n_styles."""
    digest = hashlib.sha256(f"{seed}/{content_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % n_styles


def sin_rows(n_styles: int, count: int, offset: int = 0) -> np.ndarray:
    """Stylized-ImageNet's style draws for contents offset..offset+count-1 of its stream.

    RandomState.randint over a range below 2**32 takes one 32-bit draw per value (masked
    rejection), so drawing per batch, as the original does, gives the same stream."""
    draws = np.random.RandomState(SIN_SEED).randint(0, n_styles, size=offset + count)
    return draws[offset:]


# ---- Contents ------------------------------------------------------------------------------

class Item(NamedTuple):
    """One content, loaded: `rgb` (H, W, 3) float32 in [0, 1], or the reason it is not."""

    position: int  # in the job's content order
    content_id: str
    output_base: str  # output path relative to --out, without extension
    rgb: np.ndarray | None
    error: str | None
    label: int | None = None


def imagefolder_files(root: Path) -> list[Path]:
    """torchvision ImageFolder's samples under `root`, in its order: class folders sorted,
    then each class's os.walk sorted by folder and file name."""
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    found = []
    for name in classes:
        for parent, _, files in sorted(os.walk(root / name, followlinks=True)):
            found += [Path(parent) / f for f in sorted(files)
                      if f.lower().endswith(IMAGEFOLDER_EXTENSIONS)]
    return found


class FolderContents:
    """Image files under `root`, mirrored under --out (NAME.EXT -> NAME)."""

    def __init__(self, root: Path, out: Path | None = None, sin_compat: bool = False):
        from adain_jax import images

        self.root, self.offset = Path(root), 0
        if not self.root.is_dir():
            raise JobError(f"--content-dir {root}: not a folder")
        if sin_compat:
            self.files = self._sin_order()
        else:
            self.files = images.list_image_files(self.root, exclude=(out,) if out else ()).found
        if not self.files:
            raise JobError(f"--content-dir {root}: no image files in it or its subfolders")
        self.ids = [p.relative_to(self.root).as_posix() for p in self.files]
        self.bases = [i.rsplit(".", 1)[0] if "." in Path(i).name else i for i in self.ids]
        seen = {}
        for i, b in zip(self.ids, self.bases):
            if b in seen:
                raise JobError(f"--content-dir {root}: {seen[b]} and {i} would be written "
                               "to the same output; rename one")
            seen[b] = i

    def _sin_order(self) -> list[Path]:
        train, val = self.root / "train", self.root / "val"
        if train.is_dir() and val.is_dir():  # an ImageNet root: val first, as SIN
            return imagefolder_files(val) + imagefolder_files(train)
        sibling = self.root.parent / "val"
        if self.root.name == "train" and sibling.is_dir():
            self.offset = len(imagefolder_files(sibling))
        else:
            log.warning("%s: not an ImageNet root (train/ and val/) nor its train/ folder; "
                        "--sin-compat draws from the start of its stream", self.root)
        return imagefolder_files(self.root)

    def __len__(self) -> int:
        return len(self.files)

    def describe(self) -> dict:
        listing = hashlib.sha256("\n".join(self.ids).encode()).hexdigest()
        return {"content_dir": str(self.root.resolve()), "contents": len(self.ids),
                "contents_sha256": listing}

    def load(self, position: int) -> Item:
        from adain_jax import images

        cid, base = self.ids[position], self.bases[position]
        try:
            rgb = images.load_image(self.files[position]).rgb
        except images.ImageError as err:
            return Item(position, cid, base, None, err.reason)
        return Item(position, cid, base, rgb, None)


class TfdsContents:
    """One split of a TFDS dataset, read with `tfds.data_source` (prepared beforehand)."""

    def __init__(self, name: str, split: str, data_dir: str | None = None,
                 sin_compat: bool = False):
        from adain_jax.data import find_image_feature

        self.name, self.split, self.data_dir = name, split, data_dir
        self.source = self._open(split)
        features = self.source.dataset_info.features
        self.feature = find_image_feature(features)
        if self.feature is None:
            raise JobError(f"TFDS dataset {name} has no Image feature to stylise")
        self.has_file_name = "file_name" in features
        label = features["label"] if "label" in features else None
        self.label_names = getattr(label, "names", None)
        self.folder = re.sub(r"[^A-Za-z0-9_.-]+", "_", split)
        self.order, self.offset = list(range(len(self.source))), 0
        if sin_compat:
            self._sin_order()

    def _open(self, split: str, decoders=None):
        import tensorflow_datasets as tfds

        try:
            return tfds.data_source(self.name, split=split, data_dir=self.data_dir,
                                    download=False, decoders=decoders)
        except Exception as err:  # noqa: BLE001 - TFDS raises many types here
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise JobError(f"cannot read TFDS dataset {self.name} split {split!r} ({reason}); "
                           f"prepare it with `tfds build {self.name} --file_format "
                           "array_record`") from None

    def __getstate__(self) -> dict:
        # pickled without its open data source, which is opened again where it is
        # unpickled (adain_jax.beam ships the contents to its workers)
        return {k: v for k, v in self.__dict__.items() if k != "source"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.source = self._open(self.split)

    def _sin_order(self) -> None:
        if not self.has_file_name or self.label_names is None:
            raise JobError(f"--sin-compat needs the label and file_name features of an "
                           f"ImageNet-like dataset; {self.name} lacks them")
        import tensorflow_datasets as tfds

        # labels and names only: the images are read, not decoded
        undecoded = self._open(self.split, {self.feature[0]: tfds.decode.SkipDecoding()})
        keys = []
        for index in range(len(undecoded)):
            example = undecoded[index]
            keys.append((int(example["label"]), _text(example["file_name"]), index))
        self.order = [index for *_, index in sorted(keys)]
        base = self.split.split("[")[0]
        if base == "train":
            self.offset = len(self._open("validation"))  # SIN stylised val first

    def __len__(self) -> int:
        return len(self.order)

    def describe(self) -> dict:
        return {"tfds": self.name, "split": self.split, "contents": len(self.order)}

    def load(self, position: int) -> Item:
        index = self.order[position]
        cid, label = str(index), None
        try:
            example = self.source[index]
            if self.has_file_name:
                cid = _text(example["file_name"])
            pixels = example
            for key in self.feature:
                pixels = pixels[key]
            if self.label_names is not None:
                label = int(example["label"])
            rgb = _as_rgb(pixels)
        except Exception as err:  # noqa: BLE001 - a bad record: its reason, and go on
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            return Item(position, cid, f"{self.folder}/{index:08d}", None, reason)
        stem = Path(cid).stem if self.has_file_name else f"{index:08d}"
        folder = (self.folder if label is None
                  else f"{self.folder}/{self.label_names[label]}")
        return Item(position, cid, f"{folder}/{stem}", rgb, None, label)


def _text(value) -> str:
    value = value.item() if isinstance(value, np.ndarray) else value
    return value.decode() if isinstance(value, bytes) else str(value)


def _as_rgb(pixels) -> np.ndarray:
    from adain_jax import images

    return images.rgb_pixels(pixels).astype(np.float32) / 255.0


# ---- Preprocessing and stylising -----------------------------------------------------------

def sin_preprocess(rgb: np.ndarray, sizes: tuple[int, int] = SIN_SIZES) -> np.ndarray:
    """torchvision Resize(resize) then CenterCrop(crop) (its offsets: round((H - crop) / 2)),
    Stylized-ImageNet's content recipe with sizes (256, 224)."""
    from adain_jax import images

    resize, crop = sizes
    rgb, _ = images.resize_shorter(rgb, resize)
    top = int(round((rgb.shape[0] - crop) / 2.0))
    left = int(round((rgb.shape[1] - crop) / 2.0))
    return rgb[top: top + crop, left: left + crop]


@functools.lru_cache(maxsize=None)
def _stylize_fn():
    """transfer.apply on a batch with per-example style statistics and alpha, clipped."""
    import jax
    import jax.numpy as jnp

    from adain_jax import transfer

    def stylize(params, content, mean, std, alpha):
        out = transfer.apply(params, content, transfer.StyleStats(mean, std), alpha)
        return jnp.clip(out, 0.0, 1.0)

    return jax.jit(stylize)


def stylize_batch(params, contents: np.ndarray, mean: np.ndarray, std: np.ndarray,
                  alpha: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) contents with style rows (B, C) and alphas (B,): outputs in [0, 1].

    Images over TILE_ABOVE_PIXELS (VGG-19) go through tiling.apply_tiled one by one;
    images below the encoder's minimum side are upscaled for it and resized back."""
    from adain_jax import architectures, images, tiling, transfer
    from adain_jax.stylize_files import TILE_ABOVE_PIXELS, fit_min_side, min_side

    height, width = contents.shape[1:3]
    arch = architectures.detect(params)
    if height * width > TILE_ABOVE_PIXELS and arch.name == "vgg19":
        return np.stack([np.clip(tiling.apply_tiled(
            params, c, transfer.StyleStats(m[None], s[None]), float(a)), 0.0, 1.0)
            for c, m, s, a in zip(contents, mean, std, alpha)])
    side = min_side(arch)
    small = min(height, width) < side
    if small:
        contents = np.stack([fit_min_side(c, side) for c in contents])
    out = np.asarray(_stylize_fn()(params, contents, mean, std,
                                   np.asarray(alpha, np.float32).reshape(-1, 1, 1, 1)))
    if small:
        out = np.stack([np.clip(images.resize(o, height, width), 0.0, 1.0) for o in out])
    return out


# ---- Records -------------------------------------------------------------------------------

def encode_record(header: dict, rgb: np.ndarray) -> bytes:
    """One array_record record: a line of JSON, "\\n", then the image as PNG."""
    from PIL import Image

    from adain_jax import images

    buffer = io.BytesIO()
    Image.fromarray(images.to_uint8(rgb)).save(buffer, format="PNG")
    line = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return line + b"\n" + buffer.getvalue()


def decode_record(record: bytes) -> tuple[dict, np.ndarray]:
    """(header, uint8 (H, W, 3) pixels) of a record written by `encode_record`."""
    from PIL import Image

    line, png = record.split(b"\n", 1)
    with Image.open(io.BytesIO(png)) as img:
        return json.loads(line), np.asarray(img.convert("RGB"))


# ---- Files ---------------------------------------------------------------------------------

def _clear_temporaries(path: Path) -> None:
    """Remove what a killed writer of `path` left (`.NAME.tmpPID`, ours and save_image's)."""
    if path.parent.is_dir():
        for stale in path.parent.glob(f".{glob.escape(path.name)}.tmp*"):
            stale.unlink(missing_ok=True)


def _csv_bytes(header: Sequence[str], rows) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def chunk_record(out: Path, chunk: int) -> Path:
    return out / "_chunks" / f"chunk-{chunk:06d}.json"


def records_file(out: Path, chunk: int) -> Path:
    return out / "records" / f"chunk-{chunk:06d}.array_record"


def check_job(out: Path, spec: dict) -> None:
    """Write OUT/job.json, or refuse (one line) a job whose settings differ from it."""
    path = out / "job.json"
    text = json.dumps(spec, indent=1, sort_keys=True) + "\n"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise JobError(f"{path}: unreadable ({err}); delete it or choose another --out")
        differ = sorted(k for k in set(old) | set(spec) if old.get(k) != spec.get(k))
        if differ:
            raise JobError(f"--out {out} holds a job with other settings ({', '.join(differ)}"
                           f"); rerun it as it was, or choose another --out")
        return
    write_atomic(path, text.encode())


# ---- The job -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Settings:
    """How a dataset is stylised (what job.json records, with the inputs' fingerprints)."""

    seed: int = 0
    alpha: float = 1.0
    resize: str = "keep"  # or "sin"
    fmt: str = "png"  # or "jpg", "arrayrecord"
    sin_compat: bool = False
    batch: int = 1
    chunk: int = CHUNK
    sin_sizes: tuple[int, int] = SIN_SIZES


class Result(NamedTuple):
    images: int  # stylised in this process's share (earlier runs included)
    failures: list[tuple[str, str]]  # (content_id, reason) in this process's share
    merged: bool  # whether manifest.csv was written (every chunk done)


def shard_chunks(n_chunks: int, shard: tuple[int, int]) -> range:
    """The contiguous chunks of shard (I, N)."""
    index, count = shard
    return range(index * n_chunks // count, (index + 1) * n_chunks // count)


def assigner(contents, bank, settings: Settings):
    """A function of an Item to its bank row: `style_row` of its id, or with --sin-compat
    Stylized-ImageNet's draw at its position (`sin_rows`, drawn once here)."""
    if settings.sin_compat:
        draws = sin_rows(len(bank), len(contents), contents.offset)
        return lambda item: int(draws[item.position])
    return lambda item: style_row(settings.seed, item.content_id, len(bank))


def run_job(params, weights_sha256: str, bank, contents, out: Path,
            settings: Settings = Settings(), *, shard: tuple[int, int] = (0, 1),
            progress: bool = False) -> Result:
    """Stylise this shard's chunks of `contents` that are not done yet into `out`, then
    write the manifest if every chunk is done. `bank`: a style_bank.StyleBank."""
    from tqdm import tqdm

    n_chunks = math.ceil(len(contents) / settings.chunk)
    mine = shard_chunks(n_chunks, shard)
    todo = [c for c in mine if not chunk_record(out, c).exists()]
    size = lambda c: len(chunk_positions(len(contents), settings, c))
    total = sum(size(c) for c in mine)
    bar = tqdm(total=total, initial=total - sum(size(c) for c in todo), disable=not progress,
               file=sys.stderr, unit="img", dynamic_ncols=True)
    row_of = assigner(contents, bank, settings)
    with bar:
        for c in todo:
            _run_chunk(params, weights_sha256, bank, contents, out, settings, c, row_of, bar)
    images, failures = tally(out, mine)
    return Result(images, failures, merge_if_done(out, n_chunks))


def _run_chunk(params, weights_sha256, bank, contents, out, settings, chunk, row_of,
               bar) -> None:
    done: dict[int, Done] = {}

    def failed(item):
        done[item.position] = Done(item, None, None)
        bar.update(1)

    loaded = load_chunk(contents, settings, out, chunk, failed)
    with concurrent.futures.ThreadPoolExecutor(2) as savers:  # PNG/JPEG encoding
        saving = []
        for group in batches(loaded, settings.batch):
            rows = [row_of(item) for item in group]
            outs = stylize_group(params, bank, [item.rgb for item in group], rows,
                                 settings.alpha)
            for item, row, pixels in zip(group, rows, outs):
                item = item._replace(rgb=None)
                saving.append((item, row, savers.submit(save_output, out, settings, bank,
                                                        item, row, pixels)))
            bar.update(len(group))
        for item, row, future in saving:  # every output is on disk before the record is
            done[item.position] = Done(item, row, future.result())
    positions = chunk_positions(len(contents), settings, chunk)
    write_chunk(out, chunk, settings, bank, weights_sha256, [done[p] for p in positions])


# ---- The pieces of a chunk (the job above; adain_jax.beam's pipeline) ----------------------

class Done(NamedTuple):
    """One content of a chunk, finished: stylised (`row` set) or failed (`item.error`)."""

    item: Item  # without its pixels
    row: int | None
    record: bytes | None  # --format arrayrecord: its record, written with its chunk's


def chunk_positions(n_contents: int, settings: Settings, chunk: int) -> range:
    """The positions of the contents in `chunk`."""
    start = chunk * settings.chunk
    return range(start, min(start + settings.chunk, n_contents))


def load_item(contents, settings: Settings, position: int) -> Item:
    """The content at `position`, decoded and resized as the job stylises it (--resize)."""
    item = contents.load(position)
    if item.error is None and settings.resize == "sin":
        try:
            item = item._replace(rgb=sin_preprocess(item.rgb, settings.sin_sizes))
        except ValueError as err:  # e.g. too small to crop
            item = item._replace(rgb=None, error=str(err))
    return item


def load_chunk(contents, settings: Settings, out: Path, chunk: int,
               failed: Callable[[Item], object]) -> Iterator[Item]:
    """The contents of `chunk` that load, in order, decoded and resized (`load_item`) on
    the prefetch threads, beside the encoder; `failed(item)` for each that does not.
    What a killed run left of the chunk's record is cleared first."""
    from adain_jax import images

    _clear_temporaries(chunk_record(out, chunk))
    load = functools.partial(load_item, contents, settings)
    for item in images.prefetched(load, chunk_positions(len(contents), settings, chunk)):
        if item.error is None:
            yield item
        else:
            failed(item)


def batches(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    """Loaded `items` of one chunk, in content order, as the groups that are stylised
    together: equal shapes, each group given out as soon as it holds `size`, the
    rest at the end (in the order their shapes first came). A chunk's groups depend on
    its items only, so a rerun or another runner stylises the same groups."""
    pending: dict[tuple, list[Item]] = {}
    for item in items:
        group = pending.setdefault(item.rgb.shape, [])
        group.append(item)
        if len(group) == size:
            yield pending.pop(item.rgb.shape)
    yield from pending.values()


def stylize_group(params, bank, rgbs: Sequence[np.ndarray], rows: Sequence[int],
                  alpha: float) -> np.ndarray:
    """Contents of one shape, each with the style of its bank row, at `alpha`: (B, H, W, 3)."""
    rows = np.asarray(rows)
    return stylize_batch(params, np.stack(rgbs), bank.mean[rows], bank.std[rows],
                         np.full(len(rows), alpha, np.float32))


def save_output(out: Path, settings: Settings, bank, item: Item, row: int,
                pixels: np.ndarray) -> bytes | None:
    """A stylised content written to its file (png, jpg); or (arrayrecord) its record,
    returned for `write_chunk`."""
    if settings.fmt == "arrayrecord":
        header = {"content_id": item.content_id, "style": bank.names[row],
                  "alpha": settings.alpha, "height": int(pixels.shape[0]),
                  "width": int(pixels.shape[1])}
        if item.label is not None:
            header["label"] = item.label
        return encode_record(header, pixels)
    _save(out / f"{item.output_base}.{settings.fmt}", pixels)
    return None


def write_chunk(out: Path, chunk: int, settings: Settings, bank, weights_sha256: str,
                done: Sequence[Done]) -> None:
    """A chunk's array_record file (arrayrecord), then its record
    OUT/_chunks/chunk-NNNNNN.json: its manifest rows and failures. `done`: the chunk's
    contents in order, their png/jpg outputs already on disk."""
    rows, failures, records = [], [], []
    for item, row, record in done:
        if item.error is not None:
            failures.append([item.content_id, item.error])
            log.warning("%s: skipped (%s)", item.content_id, item.error)
            continue
        if settings.fmt == "arrayrecord":
            output = f"{records_file(out, chunk).relative_to(out).as_posix()}#{len(records)}"
            records.append(record)
        else:
            output = f"{item.output_base}.{settings.fmt}"
        rows.append([item.content_id, bank.names[row], bank.sha256[row], repr(settings.alpha),
                     str(settings.seed), weights_sha256, output])
    if settings.fmt == "arrayrecord":
        _write_records(records_file(out, chunk), records)
    summary = {"rows": rows, "failures": failures}
    write_atomic(chunk_record(out, chunk),
                 (json.dumps(summary, sort_keys=True) + "\n").encode())


def tally(out: Path, chunks: Iterable[int]) -> tuple[int, list[tuple[str, str]]]:
    """(images stylised, failures) in the records of `chunks`, every one of them done."""
    images, failures = 0, []
    for c in chunks:
        done = json.loads(chunk_record(out, c).read_text())
        images += len(done["rows"])
        failures += [tuple(f) for f in done["failures"]]
    return images, failures


def merge_if_done(out: Path, n_chunks: int) -> bool:
    """`write_manifest` if every chunk has its record; whether it did."""
    merged = all(chunk_record(out, c).exists() for c in range(n_chunks))
    if merged:
        write_manifest(out, n_chunks)
    return merged


def _save(path: Path, pixels: np.ndarray) -> None:
    from adain_jax import images

    path.parent.mkdir(parents=True, exist_ok=True)
    _clear_temporaries(path)
    images.save_image(path, pixels)


def _write_records(path: Path, records: list[bytes]) -> None:
    from array_record.python.array_record_module import ArrayRecordWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    _clear_temporaries(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        writer = ArrayRecordWriter(str(tmp), "group_size:1")
        for record in records:
            writer.write(record)
        writer.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_manifest(out: Path, n_chunks: int) -> None:
    """manifest.csv and failures.csv from every chunk's record, in content order."""
    rows, failures = [], []
    for c in range(n_chunks):
        done = json.loads(chunk_record(out, c).read_text())
        rows += done["rows"]
        failures += done["failures"]
    for name in ("manifest.csv", "failures.csv"):
        _clear_temporaries(out / name)
    write_atomic(out / "manifest.csv", _csv_bytes(MANIFEST_COLUMNS, rows))
    write_atomic(out / "failures.csv", _csv_bytes(("content_id", "reason"), failures))


def job_spec(settings: Settings, contents, bank, weights_sha256: str, styles: str) -> dict:
    """What job.json holds: everything that decides the outputs, and no shard."""
    listing = json.dumps([bank.names, bank.sha256]).encode()
    return {"format": FORMAT, "seed": settings.seed, "alpha": settings.alpha,
            "resize": settings.resize, "sin_sizes": list(settings.sin_sizes),
            "output_format": settings.fmt, "sin_compat": settings.sin_compat,
            "batch": settings.batch, "chunk": settings.chunk, "styles": styles,
            "styles_sha256": hashlib.sha256(listing).hexdigest(), "style_count": len(bank),
            "weights_sha256": weights_sha256, **contents.describe()}


def load_styles(params, weights_sha256: str, styles: Path, out: Path, settings: Settings,
                progress: bool = False):
    """The style bank: a bank file as it is, or a folder built (or resumed) into
    OUT/style_bank.safetensors; refused (one line) if made with other weights."""
    from adain_jax import style_bank

    if styles.is_dir():
        path = bank_file(styles, out)
        if (out / "job.json").exists() and path.exists():
            bank = style_bank.load_bank(path, allow_incomplete=True)
            if bank.complete:
                return bank  # the job's bank: not re-read from the folder
        sin = settings.resize == "sin"
        result = style_bank.build_bank(
            params, weights_sha256, styles, path,
            style_size=settings.sin_sizes[1] if sin else KEEP_STYLE_SIZE, crop=sin,
            progress=progress)
        for name, reason in result.failures:
            log.warning("style %s: skipped (%s)", styles / name, reason)
        bank = result.bank
    else:
        bank = style_bank.load_bank(styles)
    if bank.weights_sha256 != weights_sha256:
        raise JobError(f"--styles {styles}: encoded with other weights (sha256 "
                       f"{bank.weights_sha256[:12]}...); build the bank with --weights")
    if not len(bank):
        raise JobError(f"--styles {styles}: no styles in it")
    return bank


def bank_file(styles: Path, out: Path) -> Path:
    """The job's bank file: --styles, or OUT/style_bank.safetensors built from its folder."""
    return out / "style_bank.safetensors" if styles.is_dir() else styles


class Job(NamedTuple):
    """What a run of the job works with, once `prepare_job` has checked and loaded it."""

    params: dict
    weights_path: Path
    weights_sha256: str
    contents: object  # FolderContents or TfdsContents
    bank: object  # style_bank.StyleBank


def prepare_job(args: argparse.Namespace, out: Path, styles: Path, settings: Settings) -> Job:
    """The weights, contents and style bank of the job the command line asks for, with
    OUT made and its job.json checked (`start_job`); from here Ctrl-C is the job's to
    handle (`work_starts`). Raises JobError, WeightsError, BankError or OSError."""
    from adain_jax.download import default_weights_path, sha256_file
    from adain_jax.weights import load_params

    weights_path = Path(args.weights) if args.weights else default_weights_path()
    params = load_params(weights_path)
    weights_sha256 = sha256_file(weights_path)
    contents = open_contents(args, out)
    out.mkdir(parents=True, exist_ok=True)
    start_compile_cache(args)
    work_starts()
    bank = start_job(params, weights_sha256, contents, styles, out, settings,
                     not args.quiet)
    return Job(params, weights_path, weights_sha256, contents, bank)


def start_job(params, weights_sha256: str, contents, styles: Path, out: Path,
              settings: Settings, progress: bool = False):
    """The job's style bank (`load_styles`), once OUT/job.json is written or found to hold
    the same settings (`check_job`)."""
    bank = load_styles(params, weights_sha256, styles, out, settings, progress)
    check_job(out, job_spec(settings, contents, bank, weights_sha256, str(styles.resolve())))
    return bank


# ---- Command line --------------------------------------------------------------------------

EPILOG = f"""\
examples:
  {PROG} --tfds imagenet2012 --split train --styles bank.safetensors --out sin/ --resize sin
  {PROG} --content-dir photos/ --styles paintings/ --out stylized/
  {PROG} --content-dir imagenet/ --styles paintings_preprocessed/ --out sin/ --sin-compat

assignment: each content gets the bank row sha256("SEED/CONTENT_ID") mod N (content id:
  its path under --content-dir, or its TFDS file_name or example index), and --alpha.
  --sin-compat uses Stylized-ImageNet's own draws instead (RandomState(49809), val then
  train in ImageFolder order; see the module docstring).
outputs in --out: the images (png/jpg: the source tree mirrored; arrayrecord:
  records/chunk-NNNNNN.array_record, each record a line of JSON then a PNG, see
  adain_jax.stylize_dataset.decode_record), manifest.csv (content_id, style, style_sha256,
  alpha, seed, weights_sha256, output), failures.csv, job.json, _chunks/.
resuming: run the same command again after an interruption (even kill -9): finished
  chunks of {CHUNK} images are kept, the rest redone, with the same result as one
  uninterrupted run. Other settings (--batch included: it groups the images) against an
  existing --out are refused, in one line.
sharding: --shard I/N runs the I-th (from 0) of N contiguous shares; any run that finds
  every chunk done writes manifest.csv. --distributed takes I/N from jax.distributed.
exit status: 0 when every content was stylised; 2 when some could not be (listed in
  failures.csv; the count is printed); 1 on a usage error; 130 on Ctrl-C.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, epilog=EPILOG,
                    description="Stylise a whole dataset with AdaIN, each image with a style "
                                "drawn from a bank (Stylized-ImageNet-like), resumably.")
    add_job_flags(parser, shards=True)
    return parser


def add_job_flags(parser: argparse.ArgumentParser, *, shards: bool) -> None:
    """This command's flags, and adain_jax.beam's (shards=False: no --shard, --distributed)."""
    from adain_jax.download import default_weights_path

    source = parser.add_argument_group("contents (one of)")
    source.add_argument("--tfds", metavar="NAME",
                        help="a prepared TFDS dataset (e.g. imagenet2012), read with "
                             "tfds.data_source")
    source.add_argument("--split", default="train",
                        help="its split (default: train; slices like train[:1%%] work)")
    source.add_argument("--data-dir", metavar="DIR", help="TFDS data directory")
    source.add_argument("--content-dir", metavar="DIR",
                        help="a folder of images (subfolders included, mirrored in --out)")
    parser.add_argument("--styles", required=True, metavar="BANK|DIR",
                        help="a style bank (python -m adain_jax.style_bank) or a folder of "
                             "style images, built first into OUT/style_bank.safetensors")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--weights", metavar="FILE",
                        help=f"adain-jax weights file (default: {default_weights_path()})")
    parser.add_argument("--alpha", type=float, default=1.0,
                        help="content-style trade-off in [0, 1] (default: 1, as SIN)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the style assignment (default: 0; --sin-compat uses "
                             f"SIN's {SIN_SEED})")
    parser.add_argument("--resize", choices=("keep", "sin"), default=None,
                        help="keep: each image at its own size (default); sin: shorter side "
                             "256, centre crop 224, as Stylized-ImageNet (default with "
                             "--sin-compat)")
    parser.add_argument("--format", choices=FORMATS, default="png",
                        help="png or jpg files mirroring the source, or arrayrecord shards "
                             "(default: png)")
    if shards:
        parser.add_argument("--shard", metavar="I/N",
                            help="do the I-th of N shares (0 <= I < N)")
        parser.add_argument("--distributed", action="store_true",
                            help="jax.distributed.initialize (cluster environment), then "
                                 "--shard process_index/process_count")
    parser.add_argument("--batch", type=int, default=1,
                        help="images per jitted call when their shapes match (default: 1)")
    parser.add_argument("--sin-compat", action="store_true",
                        help="Stylized-ImageNet's own style assignment (seed 49809, val "
                             "then train, ImageFolder order), alpha 1")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bar" if shards else "log only problems")
    parser.add_argument("--chunk-size", type=int, default=CHUNK, help=argparse.SUPPRESS)
    parser.add_argument("--sin-sizes", default=",".join(map(str, SIN_SIZES)),
                        help=argparse.SUPPRESS)  # for tests: tiny images
    add_common_flags(parser)


def job_settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Settings:
    """The Settings of `add_job_flags`' arguments; a usage error (exit 1) if they clash."""
    if (args.tfds is None) == (args.content_dir is None):
        parser.error("give --tfds NAME or --content-dir DIR (one of them)")
    if not 0.0 <= args.alpha <= 1.0:
        parser.error(f"--alpha must be in [0, 1], got {args.alpha}")
    if args.batch < 1 or args.chunk_size < 1:
        parser.error("--batch must be 1 or more")
    if args.sin_compat and args.seed is not None:
        parser.error(f"--sin-compat uses Stylized-ImageNet's seed {SIN_SEED}; drop --seed")
    sizes = tuple(int(x) for x in args.sin_sizes.split(",") if x.strip().isdigit())
    if len(sizes) != 2 or not sizes[0] >= sizes[1] > 0:
        parser.error("--sin-sizes must be RESIZE,CROP with RESIZE >= CROP > 0")
    return Settings(seed=SIN_SEED if args.sin_compat else (args.seed or 0), alpha=args.alpha,
                    resize=args.resize or ("sin" if args.sin_compat else "keep"),
                    fmt=args.format, sin_compat=args.sin_compat, batch=args.batch,
                    chunk=args.chunk_size, sin_sizes=sizes)


def open_contents(args: argparse.Namespace, out: Path):
    """The contents `add_job_flags`' arguments name: TfdsContents or FolderContents."""
    if args.tfds:
        return TfdsContents(args.tfds, args.split, args.data_dir, args.sin_compat)
    return FolderContents(Path(args.content_dir), out, args.sin_compat)


def parse_shard(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)/(\d+)", text or "")
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise JobError(f"--shard {text}: give I/N with 0 <= I < N, e.g. 0/4")
    return int(match[1]), int(match[2])


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.quiet, args.verbose)
    settings = job_settings(parser, args)
    if args.distributed and args.shard:
        parser.error("give --shard or --distributed, not both")
    try:
        shard = parse_shard(args.shard) if args.shard else (0, 1)
    except JobError as err:
        parser.error(str(err))
    out, styles = Path(args.out), Path(args.styles)
    from adain_jax import outputs, style_bank
    from adain_jax.weights import WeightsError

    try:
        problem = outputs.folder_problem(out)
        if problem:
            raise JobError(f"--out {out}: {problem}")
        if args.distributed:
            import jax

            from adain_jax import parallel

            parallel.initialize_distributed()
            shard = (jax.process_index(), jax.process_count())
        job = prepare_job(args, out, styles, settings)
        began = time.perf_counter()
        result = run_job(job.params, job.weights_sha256, job.bank, job.contents, out, settings,
                         shard=shard, progress=not args.quiet)
    except (JobError, WeightsError, style_bank.BankError, OSError) as err:
        message = err.strerror if isinstance(err, OSError) and err.strerror else err
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1
    log.info("%s: %d images (shard %d/%d) in %.1f s%s", out, result.images, *shard,
             time.perf_counter() - began, "; manifest.csv written" if result.merged else "")
    if result.failures:
        print(f"{PROG}: {len(result.failures)} contents could not be stylised (see "
              f"{out / 'failures.csv' if result.merged else out / '_chunks'})", file=sys.stderr)
        return 2
    return 0


def run() -> int:
    return run_main(main, PROG)


if __name__ == "__main__":
    sys.exit(run())
