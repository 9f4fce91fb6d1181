"""Style banks: many style images encoded once into their AdaIN-layer statistics.

    python -m adain_jax.style_bank --styles wikiart/ --out bank.safetensors

A bank holds, for each style image, the channel mean and std of f(s) at the AdaIN layer
(relu4_1 for VGG-19), each (N, C) float32: what Eq. 8 needs of a style, so stylising with
a banked style skips its encoder pass. It also records each file's name (relative to the
folder) and sha256, and the sha256 of the weights whose encoder made it, so every output
can be traced to its inputs. It is one safetensors file (tensors "mean" and "std", the rest
in its metadata); `load_bank` refuses anything else, and a bank whose run was interrupted,
in one line.

`fit_gaussian` fits one multivariate normal to the banked [mean, std] vectors, and
`sample_stats` draws new styles from it, without images (for augmentation, augment.py).

Building is resumable: the bank is written (atomically) every SAVE_EVERY_SECONDS with what
is done so far, marked incomplete; running the same command again encodes only the files
it does not hold yet. A bank that is complete is updated the same way when files are added
or changed (and loses the entries of files that are gone).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from adain_jax import __version__
from adain_jax.cli import (Parser, add_common_flags, run_main, setup_logging,
                           start_compile_cache, work_starts)
from adain_jax.configs import DEFAULT_SIZE
from adain_jax.outputs import write_atomic

log = logging.getLogger(__name__)

PROG = "python -m adain_jax.style_bank"
FORMAT = "adain-jax-bank/1"
SAVE_EVERY_SECONDS = 30.0
GAUSSIAN_RIDGE = 1e-6  # x mean variance, added to the covariance's diagonal (N may be < 2C)


class BankError(ValueError):
    """A file that is not a usable style bank; str() is one line naming it."""


class StyleGaussian(NamedTuple):
    """A normal distribution over styles' [mean, std] vectors (2C,): `fit_gaussian`."""

    mean: np.ndarray  # (2C,)
    scale_tril: np.ndarray  # (2C, 2C), lower Cholesky factor of the covariance
    std_floor: float  # sampled stds are kept at or above this (the smallest banked std)


@dataclasses.dataclass(frozen=True)
class StyleBank:
    """Encoded styles: `mean` and `std` (N, C) float32, one row per file in `names`.

    `stats` is what `transfer.apply` and `augment` take; `bank[i]` a StyleStats of one row
    (or of rows, for an index array).
    """

    mean: np.ndarray
    std: np.ndarray
    names: tuple[str, ...]  # paths relative to the style folder, "/"-separated
    sha256: tuple[str, ...]  # of each style file
    weights_sha256: str  # of the weights file whose encoder made the statistics
    encoder: str  # "vgg19" or "densenet121"
    style_size: int  # shorter side the styles were resized to (0: kept)
    crop: bool = False  # centre square crop after resizing
    complete: bool = True  # False while a build is unfinished

    def __post_init__(self):
        n = len(self.names)
        assert self.mean.shape == self.std.shape and self.mean.shape[0] == n, (
            self.mean.shape, self.std.shape, n)
        assert len(self.sha256) == n

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index):
        from adain_jax.transfer import StyleStats

        index = np.asarray(index)
        return StyleStats(self.mean[index], self.std[index])

    @property
    def stats(self):
        """All N styles as a `transfer.StyleStats`, each (N, C)."""
        from adain_jax.transfer import StyleStats

        return StyleStats(self.mean, self.std)

    def index(self, name: str) -> int:
        """The row of the style file `name` (as in `names`)."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"no style named {name!r} in the bank") from None

    def subset(self, rows: Sequence[int]) -> "StyleBank":
        rows = list(rows)
        return dataclasses.replace(self, mean=self.mean[rows], std=self.std[rows],
                                   names=tuple(self.names[i] for i in rows),
                                   sha256=tuple(self.sha256[i] for i in rows))


# ---- Files -------------------------------------------------------------------------------

def save_bank(bank: StyleBank, path) -> Path:
    """Write `bank` to one safetensors file, atomically (a reader sees the old or new one)."""
    from safetensors.numpy import save

    path = Path(path)
    meta = {"format": FORMAT, "names": json.dumps(list(bank.names)),
            "sha256": json.dumps(list(bank.sha256)), "weights_sha256": bank.weights_sha256,
            "encoder": bank.encoder, "style_size": str(bank.style_size),
            "crop": json.dumps(bank.crop), "complete": json.dumps(bank.complete),
            "adain_jax": __version__}
    data = save({"mean": np.ascontiguousarray(bank.mean, np.float32),
                 "std": np.ascontiguousarray(bank.std, np.float32)}, metadata=meta)
    write_atomic(path, data)
    return path


def load_bank(path, *, allow_incomplete: bool = False) -> StyleBank:
    """Read a bank written by `save_bank`; BankError (one line) if it is not one, or is
    the partial result of an interrupted build (unless `allow_incomplete`)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise BankError(f"{path}: no such style bank file")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise BankError(f"{path}: not a readable safetensors file ({err})") from None
    if meta.get("format") != FORMAT:
        raise BankError(f"{path}: not an adain-jax style bank (metadata format "
                        f"{meta.get('format')!r}); make one with {PROG}")
    try:
        bank = StyleBank(mean=tensors["mean"], std=tensors["std"],
                         names=tuple(json.loads(meta["names"])),
                         sha256=tuple(json.loads(meta["sha256"])),
                         weights_sha256=meta["weights_sha256"], encoder=meta["encoder"],
                         style_size=int(meta["style_size"]), crop=json.loads(meta["crop"]),
                         complete=json.loads(meta["complete"]))
    except (KeyError, ValueError, AssertionError) as err:
        raise BankError(f"{path}: a damaged style bank ({type(err).__name__}: {err})") from None
    if not bank.complete and not allow_incomplete:
        raise BankError(f"{path}: an unfinished style bank ({len(bank)} styles so far); run "
                        f"the {PROG} command that made it again to finish it")
    return bank


# ---- Sampling new styles -------------------------------------------------------------------

def fit_gaussian(bank: StyleBank) -> StyleGaussian:
    """Maximum-likelihood normal over the banked [mean, std] vectors (float64), with a
    small ridge (GAUSSIAN_RIDGE x the mean variance) so fewer styles than 2C dimensions
    still give a valid covariance."""
    x = np.concatenate([bank.mean, bank.std], axis=1).astype(np.float64)
    if len(x) < 2:
        raise ValueError("a Gaussian needs at least 2 styles in the bank")
    mean = x.mean(axis=0)
    cov = np.cov(x, rowvar=False, bias=True)
    cov += np.eye(len(mean)) * GAUSSIAN_RIDGE * max(float(np.trace(cov)) / len(mean), 1e-12)
    return StyleGaussian(mean.astype(np.float32),
                         np.linalg.cholesky(cov).astype(np.float32),
                         float(bank.std.min()))


def sample_stats(key, gaussian: StyleGaussian, n: int):
    """`n` styles drawn from `gaussian`: a `transfer.StyleStats`, each (n, C). Pure (JAX)."""
    import jax
    import jax.numpy as jnp

    from adain_jax.transfer import StyleStats

    mean, scale_tril, floor = gaussian
    z = jax.random.normal(key, (n, mean.shape[0]), jnp.float32)
    x = mean + z @ jnp.asarray(scale_tril).T
    channels = mean.shape[0] // 2
    return StyleStats(x[:, :channels], jnp.maximum(x[:, channels:], floor))


# ---- Building a bank ---------------------------------------------------------------------

class _Loaded(NamedTuple):
    name: str
    sha256: str
    rgb: np.ndarray | None
    error: str | None


def _load(path: Path, name: str, style_size: int, crop: bool, side: int) -> _Loaded:
    from adain_jax import images
    from adain_jax.stylize_files import fit_min_side, prepare

    try:
        data = path.read_bytes()
    except OSError as err:
        return _Loaded(name, "", None, f"cannot read: {err.strerror or err}")
    digest = hashlib.sha256(data).hexdigest()
    try:
        rgb, _ = prepare(images.load_image(path), style_size, crop)
    except images.ImageError as err:
        return _Loaded(name, digest, None, err.reason)
    return _Loaded(name, digest, fit_min_side(rgb, side), None)


class BuildResult(NamedTuple):
    bank: StyleBank
    encoded: int  # styles encoded by this run (the rest came from the existing bank)
    failures: list[tuple[str, str]]  # (name, reason) of files that could not be used


def build_bank(params, weights_sha256: str, styles: Path, out: Path, *,
               style_size: int = DEFAULT_SIZE, crop: bool = False, progress: bool = False,
               dtype=None) -> BuildResult:
    """Encode every image under `styles` into the bank at `out`, keeping what `out` already
    holds for unchanged files (same name and sha256) when it was made the same way.

    The bank is saved every SAVE_EVERY_SECONDS while this runs (marked incomplete) and at
    the end (complete, rows in name order), so an interrupted run loses at most that much.
    """
    from tqdm import tqdm

    from adain_jax import architectures, images, transfer
    from adain_jax.stylize_files import min_side

    arch = architectures.detect(params)
    files = images.list_image_files(styles).found
    if not files:
        raise BankError(f"{styles}: no image files found (looked for "
                        f"{' '.join(images.IMAGE_EXTENSIONS)})")
    names = [p.relative_to(styles).as_posix() for p in files]
    rows: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}  # name -> (sha256, mean, std)
    if out.exists():
        old = load_bank(out, allow_incomplete=True)
        made = (old.weights_sha256, old.encoder, old.style_size, old.crop)
        if made != (weights_sha256, arch.name, style_size, crop):
            raise BankError(f"{out}: made with other settings (weights sha256 "
                            f"{old.weights_sha256[:12]}..., --style-size {old.style_size}, "
                            f"crop {old.crop}); choose another --out or delete it")
        rows = {n: (s, old.mean[i], old.std[i]) for i, (n, s) in
                enumerate(zip(old.names, old.sha256))}

    present = set(names)

    def snapshot(complete: bool) -> StyleBank:
        kept = sorted(n for n in rows if n in present) if complete else sorted(rows)
        stack = lambda j: (np.stack([rows[n][j] for n in kept]) if kept
                           else np.zeros((0, 0), np.float32))
        mean, std = stack(1), stack(2)
        return StyleBank(mean.astype(np.float32), std.astype(np.float32), tuple(kept),
                         tuple(rows[n][0] for n in kept), weights_sha256, arch.name,
                         style_size, crop, complete)

    # A file whose bytes are unchanged keeps its row; the sha256 is taken as it is loaded,
    # so banked files are read (not decoded) again: cheap next to encoding them.
    side = min_side(arch)
    todo = list(zip(files, names))
    failures: list[tuple[str, str]] = []
    encoded, last_save = 0, time.monotonic()
    bar = tqdm(total=len(todo), disable=not progress, file=sys.stderr, unit="img",
               dynamic_ncols=True)
    try:
        def load(path, name):
            if name in rows:
                digest = _sha256(path)
                if digest == rows[name][0]:
                    return _Loaded(name, digest, None, None)
            return _load(path, name, style_size, crop, side)

        for item in images.prefetched(lambda pair: load(*pair), todo):
            if item.error is not None:
                failures.append((item.name, item.error))
                rows.pop(item.name, None)
                log.warning("%s: skipped (%s)", styles / item.name, item.error)
            elif item.rgb is not None:
                stats = transfer.encode_style(params, item.rgb, dtype=dtype)
                rows[item.name] = (item.sha256, np.asarray(stats.mean[0]),
                                   np.asarray(stats.std[0]))
                encoded += 1
            bar.update(1)
            if time.monotonic() - last_save > SAVE_EVERY_SECONDS:
                save_bank(snapshot(complete=False), out)
                last_save = time.monotonic()
    except BaseException:
        if encoded:
            save_bank(snapshot(complete=False), out)  # Ctrl-C or an error: keep the work
        raise
    finally:
        bar.close()
    bank = snapshot(complete=True)
    save_bank(bank, out)
    return BuildResult(bank, encoded, failures)


def _sha256(path: Path) -> str:
    from adain_jax.download import sha256_file

    try:
        return sha256_file(path)
    except OSError:
        return ""  # unreadable now: loaded again, which reports why


# ---- Command line ------------------------------------------------------------------------

EPILOG = """\
examples:
  python -m adain_jax.style_bank --styles wikiart/ --out wikiart.safetensors
  python -m adain_jax.style_bank --styles wikiart/ --out wikiart.safetensors --style-size 256

the bank: one safetensors file with the AdaIN-layer channel mean and std of every style
  image (its "mean" and "std" tensors, N x C), each file's name and sha256, and the sha256
  of the weights file. Use it with adain_jax.augment and stylize_dataset --styles.
resuming: the bank is saved every 30 s while the run goes on; run the same command again
  after an interruption and only the files it does not hold yet are encoded. Run it again
  later to add new or changed files (the entries of removed files are dropped).
exit status: 0 when every image was encoded; 2 when some could not be read (they are
  listed at the end, the bank holds the rest); 1 on a usage error; 130 on Ctrl-C.
"""


def build_parser() -> argparse.ArgumentParser:
    from adain_jax.download import default_weights_path

    parser = Parser(prog=PROG, epilog=EPILOG,
                    description="Encode a folder of style images once into a style bank "
                                "(AdaIN-layer mean and std per image).")
    parser.add_argument("--styles", required=True, metavar="DIR",
                        help="folder of style images (subfolders included)")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="the bank file to write (.safetensors)")
    parser.add_argument("--weights", metavar="FILE",
                        help=f"adain-jax weights file (default: {default_weights_path()})")
    parser.add_argument("--style-size", type=int, default=DEFAULT_SIZE, metavar="PX",
                        help=f"resize each style's shorter side to PX before encoding, as "
                             f"stylize.py does (default: {DEFAULT_SIZE}; 0 keeps the size)")
    parser.add_argument("--crop", action="store_true",
                        help="centre-crop each resized style to a square (default: off)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_common_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.quiet, args.verbose)
    styles, out = Path(args.styles), Path(args.out)
    if not styles.is_dir():
        parser.error(f"--styles {styles}: not a folder")
    if args.style_size < 0:
        parser.error("--style-size must be 0 or more")
    from adain_jax import outputs
    from adain_jax.download import default_weights_path, sha256_file

    problem = outputs.folder_problem(out.parent if str(out.parent) else Path("."))
    if problem:
        print(f"{PROG}: error: --out {out}: its folder is {problem}", file=sys.stderr)
        return 1
    weights_path = Path(args.weights) if args.weights else default_weights_path()
    from adain_jax.weights import WeightsError, load_params

    try:
        params = load_params(weights_path, require_decoder=False)
    except WeightsError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    start_compile_cache(args)
    work_starts()
    began = time.perf_counter()
    try:
        result = build_bank(params, sha256_file(weights_path), styles, out,
                            style_size=args.style_size, crop=args.crop,
                            progress=not args.quiet)
    except BankError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - began
    log.info("%s: %d styles (%d encoded now, %.1f img/s)", out, len(result.bank),
             result.encoded, result.encoded / max(seconds, 1e-9))
    if result.failures:
        for name, reason in result.failures:
            print(f"failed: {styles / name}: {reason}", file=sys.stderr)
        print(f"{PROG}: {len(result.failures)} of {len(result.failures) + len(result.bank)} "
              "style images could not be used (listed above)", file=sys.stderr)
        return 2
    return 0


def run() -> int:
    return run_main(main, PROG)


if __name__ == "__main__":
    sys.exit(run())
