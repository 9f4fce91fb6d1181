"""Fetching the published weights into a local cache (stdlib urllib, sha256-checked).

Files go to `cache_dir()` ($ADAIN_JAX_CACHE, else ~/.cache/adain_jax). A download streams
into a temporary file beside its destination, is hashed on the way, and is renamed into
place only when the hash matches, so the cache never holds a partial or wrong file under
its final name. Mirrors: $ADAIN_JAX_BASE_URL replaces the pytorch-AdaIN release URL and
$ADAIN_JAX_TORCHVISION_BASE_URL the torchvision one (two variables, since the two hosts
differ and one run may fetch from both).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import sys
import secrets
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterable, Mapping

CACHE_ENV = "ADAIN_JAX_CACHE"
BASE_URL_ENV = "ADAIN_JAX_BASE_URL"
TORCHVISION_BASE_URL_ENV = "ADAIN_JAX_TORCHVISION_BASE_URL"
WEIGHTS_NAME = "adain.safetensors"

PORT_BASE_URL = "https://github.com/naoto0804/pytorch-AdaIN/releases/download/v0.0.0"
PORT_RELEASE = "pytorch-AdaIN v0.0.0"
# sha256 of the release assets of the PyTorch port (vgg_normalised.pth is 80102481 bytes).
PORT_SHA256 = {
    "vgg_normalised.pth": "804ca2835ecf7539f0cd2a7ac3c18ce81e6f8468969ae7117ac0c148d286bb4a",
    "decoder.pth": "379ca41d59f3a37eed3599bbbc2560c19da5c458870a5ffd3a9dd41aa88f9472",
}
TORCHVISION_BASE_URL = "https://download.pytorch.org/models"
# torch hub convention: the name ends in the first hex digits of the file's sha256.
TORCHVISION_FILE = "vgg19-dcbb9e9d.pth"
TORCHVISION_DENSENET_FILE = "densenet121-a639ec97.pth"

DEFAULT_TIMEOUT = 30.0  # seconds per socket operation, not for the whole transfer
_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download that failed; the message is one line naming the file and the fix."""


class OfflineError(DownloadError):
    """The server could not be reached or did not serve the file."""


def cache_dir() -> Path:
    """Where downloads and the default weights live: $ADAIN_JAX_CACHE or ~/.cache/adain_jax."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "adain_jax").expanduser()


def default_weights_path() -> Path:
    """The file `convert_weights.py --download` writes and `stylize.py` reads by default."""
    return cache_dir() / WEIGHTS_NAME


def port_base_url(base_url: str | None = None) -> str:
    """--base-url, else $ADAIN_JAX_BASE_URL, else the pytorch-AdaIN release."""
    return _checked(base_url or os.environ.get(BASE_URL_ENV) or PORT_BASE_URL,
                    f"--base-url / ${BASE_URL_ENV}")


def torchvision_base_url(base_url: str | None = None) -> str:
    """--torchvision-base-url, else $ADAIN_JAX_TORCHVISION_BASE_URL, else download.pytorch.org."""
    return _checked(base_url or os.environ.get(TORCHVISION_BASE_URL_ENV) or TORCHVISION_BASE_URL,
                    f"--torchvision-base-url / ${TORCHVISION_BASE_URL_ENV}")


def _checked(url: str, origin: str) -> str:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https", "ftp", "file"):
        raise DownloadError(f"{url!r} (from {origin}) is not a URL; give one such as "
                            "http://host/path or file:///path")
    return url.rstrip("/")


def hash_prefix(name: str) -> str:
    """The sha256 prefix a torch-hub file name carries: `vgg19-dcbb9e9d.pth` -> `dcbb9e9d`."""
    stem = name.split(".")[0]
    assert "-" in stem, name
    return stem.rsplit("-", 1)[1]


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _matches(digest: str, sha256: str | None, prefix: str | None) -> bool:
    assert (sha256 is None) != (prefix is None), "give exactly one of sha256, prefix"
    return digest == sha256 if sha256 is not None else digest.startswith(prefix)


def fetch(url: str, dest, *, sha256: str | None = None, sha256_prefix: str | None = None,
          timeout: float = DEFAULT_TIMEOUT, progress: bool = True) -> Path:
    """Download `url` to `dest` unless a file with the right hash is already there.

    Checks the full `sha256`, or (torch hub files) that the digest starts with
    `sha256_prefix`. Network failures raise OfflineError, a wrong hash DownloadError.
    """
    dest = Path(dest)
    if dest.is_file() and _matches(sha256_file(dest), sha256, sha256_prefix):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 would keep other users of a shared cache from reading the file.
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    try:
        with open(tmp, "xb") as f:
            digest, size, total = _stream(url, f, dest.name, timeout, progress)
        if total is not None and size != total:
            raise DownloadError(f"{dest.name}: download from {url} stopped after {size} of "
                                f"{total} bytes; run again to retry")
        if not _matches(digest, sha256, sha256_prefix):
            expected = sha256 if sha256 is not None else f"{sha256_prefix}..."
            raise DownloadError(f"{dest.name}: checksum mismatch for {url}: expected sha256 "
                                f"{expected}, got {digest}; the download was discarded")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _stream(url, f, name, timeout, progress):
    """Copy `url` into the open file `f`; returns (sha256 hex, bytes read, Content-Length)."""
    from tqdm import tqdm

    digest, size = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                      file=sys.stderr, disable=not progress, leave=False) as bar:
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, TimeoutError, ConnectionError,
            http.client.HTTPException) as err:
        raise OfflineError(f"{url}: {_reason(err)}") from None
    return digest.hexdigest(), size, total


def _reason(err: Exception) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        if not isinstance(err.reason, BaseException):
            return str(err.reason)
        err = err.reason
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def fetch_port_files(names: Iterable[str] = ("vgg_normalised.pth", "decoder.pth"), *,
                     base_url: str | None = None, cache: Path | None = None,
                     expected: Mapping[str, str] | None = None,
                     timeout: float = DEFAULT_TIMEOUT, progress: bool = True) -> dict[str, Path]:
    """Fetch the PyTorch port's release files into the cache; returns {name: path}.

    When the server cannot be reached, the error says which URLs to fetch by hand and the
    convert_weights.py command that converts them.
    """
    names = tuple(names)
    base = port_base_url(base_url)
    cache = Path(cache) if cache is not None else cache_dir()
    expected = PORT_SHA256 if expected is None else expected
    paths = {}
    for name in names:
        try:
            paths[name] = fetch(f"{base}/{name}", cache / name, sha256=expected[name],
                                timeout=timeout, progress=progress)
        except OfflineError as err:
            urls = " and ".join(f"{base}/{n}" for n in names)
            flags = " ".join(f"--{_PORT_FLAG[n]} PATH/{n}" for n in names)
            if "decoder.pth" not in names:
                flags += " --encoder-only"
            raise OfflineError(f"cannot download {err}; fetch {urls} by hand, then run: "
                               f"python convert_weights.py {flags}") from None
    return paths


_PORT_FLAG = {"vgg_normalised.pth": "vgg", "decoder.pth": "decoder"}


def fetch_torchvision_vgg19(*, base_url: str | None = None, cache: Path | None = None,
                            timeout: float = DEFAULT_TIMEOUT, progress: bool = True) -> Path:
    """Fetch torchvision's ImageNet VGG-19 state dict, checked by its hash-prefixed name."""
    return _fetch_torchvision(TORCHVISION_FILE, "--torchvision", "(with your other options)",
                              base_url=base_url, cache=cache, timeout=timeout, progress=progress)


def fetch_torchvision_densenet121(*, base_url: str | None = None, cache: Path | None = None,
                                  timeout: float = DEFAULT_TIMEOUT,
                                  progress: bool = True) -> Path:
    """Fetch torchvision's ImageNet DenseNet-121 state dict, checked by its hash-prefixed name."""
    return _fetch_torchvision(TORCHVISION_DENSENET_FILE, "--torchvision-densenet", "",
                              base_url=base_url, cache=cache, timeout=timeout, progress=progress)


def _fetch_torchvision(name: str, flag: str, hint: str, *, base_url, cache, timeout,
                       progress) -> Path:
    """A torch-hub file from the torchvision base URL; offline, the command that converts it."""
    url = f"{torchvision_base_url(base_url)}/{name}"
    cache = Path(cache) if cache is not None else cache_dir()
    try:
        return fetch(url, cache / name, sha256_prefix=hash_prefix(name), timeout=timeout,
                     progress=progress)
    except OfflineError as err:
        command = f"python convert_weights.py {flag} PATH/{name} {hint}".rstrip()
        raise OfflineError(f"cannot download {err}; fetch {url} by hand, then run: "
                           f"{command}") from None
