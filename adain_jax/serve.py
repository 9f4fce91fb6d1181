"""A local web app for AdaIN: upload a content and style images, move alpha, download a PNG.

    python -m adain_jax.serve                            # http://127.0.0.1:8000
    python -m adain_jax.serve --weights w.safetensors --port 8080 --max-side 512
    python -m adain_jax.serve --fetch-onnxruntime-web    # once, for the in-browser mode
    python -m adain_jax.serve --onnx DIR                 # DIR from export.export_onnx

Server mode: the page (adain_jax/web/) uploads each image once; the server decodes it as
images.py reads a file, downscales it to --max-side, encodes it and keeps the result in a
bounded LRU cache keyed by the sha256 of its bytes: the content's AdaIN-layer features
f(c) (relu4_1), each style's statistics (mu, sigma). Moving alpha (Eq. 14) or the
interpolation weights (Eq. 15), or adding a mask, reruns only AdaIN and the decoder. All
JAX work runs on one worker thread: requests queue for it, so memory stays bounded.

In-browser mode (--onnx DIR): the page runs DIR/encoder.onnx and DIR/decoder.onnx with
onnxruntime-web (WebAssembly, one thread), whose files --fetch-onnxruntime-web downloads
once into the cache and the app serves from /vendor/ort/; nothing comes from the internet
at run time. Masks and colour preservation are server-mode only.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import hashlib
import io
import logging
import math
import socket
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from adain_jax import download, images
from adain_jax.cli import (Parser, add_common_flags, run_main, setup_logging,
                           start_compile_cache, whole_number)

log = logging.getLogger(__name__)

PROG = "python -m adain_jax.serve"
WEB_DIR = Path(__file__).with_name("web")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
# A slider move reruns the decoder: on a 2-core CPU 1.4 s at 512^2, 3.3 s at 768^2 and
# 4.5 s at 1024^2 (the encoder costs as much again on each new upload).
DEFAULT_MAX_SIDE = 768
DEFAULT_MAX_UPLOAD_MB = 32
DEFAULT_STYLE_CACHE = 16
DEFAULT_CONTENT_CACHE = 4
MAX_STYLES = 8
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")

ORT_WEB_VERSION = "1.30.0"
ORT_WEB_URL = f"https://registry.npmjs.org/onnxruntime-web/-/onnxruntime-web-{ORT_WEB_VERSION}.tgz"
ORT_WEB_SHA256 = "d2228df7e4616bc3348bf504ee888f3bec43789a273f0a63f3e68d203ce3bf71"
# The files the page loads from the npm package's dist/ (the WebAssembly build, no WebGPU),
# with the media type each must be served with.
ORT_WEB_FILES = {"ort.wasm.min.js": "text/javascript", "ort.wasm.min.mjs": "text/javascript",
                 "ort-wasm-simd-threaded.mjs": "text/javascript",
                 "ort-wasm-simd-threaded.wasm": "application/wasm"}
ONNX_FILES = ("encoder.onnx", "decoder.onnx")  # what export.export_onnx writes, and the page runs

EPILOG = f"""\
uploads:
  Each upload is read as stylize.py reads an image file (EXIF orientation applied, 16-bit
  kept, alpha dropped; truncated files and images over {images.MAX_PIXELS} pixels are
  refused), then downscaled (bilinear, aspect kept) so that its longer side is at most
  --max-side; smaller images keep their size. A mask is read as stylize.py --mask reads
  one (gray, nearest resize to the content): with one style white = the style, black =
  the content; with two, white = the first style, black = the second.

caches:
  The last --content-cache contents (their relu4_1 features) and --style-cache styles
  (their statistics and image) stay encoded, so alpha, weights and masks rerun only the
  decoder. Colour preservation recolours the styles to each content, so it re-encodes
  them on every change.

in-browser mode:
  --fetch-onnxruntime-web downloads onnxruntime-web {ORT_WEB_VERSION} from the npm registry
  (33 MB, sha256-checked) and keeps its four WebAssembly files in
  $ADAIN_JAX_CACHE/onnxruntime-web-{ORT_WEB_VERSION}/. Then --onnx DIR (encoder.onnx and
  decoder.onnx from adain_jax.export.export_onnx) lets the page run the network in the
  browser itself; it works offline.

The app listens on 127.0.0.1 (this machine only) unless --host says otherwise; it has no
authentication, so give --host 0.0.0.0 only on a network you trust.
"""


class UploadError(ValueError):
    """A request the app refuses: `status` is its HTTP status, str() one line."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Upload(NamedTuple):
    """An uploaded file's bytes and the name the browser gave it."""

    data: bytes
    name: str


class LRU:
    """At most `size` entries, the least recently used dropped first."""

    def __init__(self, size: int):
        assert size >= 1, size
        self.size = size
        self._entries: collections.OrderedDict = collections.OrderedDict()

    def get(self, key):
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key, entry) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


# ---- Uploads ---------------------------------------------------------------------------

def downscaled_shape(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(H, W) with the longer side at most `max_side`, aspect kept (rounded); never enlarged."""
    scale = max_side / max(height, width)
    if scale >= 1:
        return height, width
    return max(1, round(height * scale)), max(1, round(width * scale))


def _label(name: str | None, kind: str) -> str:
    """The browser's file name, safe to put in a one-line message."""
    text = " ".join(Path(name or "").name.split())[:120]
    return text or f"the {kind} upload"


@contextlib.contextmanager
def _as_file(data: bytes):
    """`data` as a file, so that images.py's loaders (which take paths) read it."""
    with tempfile.TemporaryDirectory(prefix="adain-jax-upload-") as folder:
        path = Path(folder) / "upload"
        path.write_bytes(data)
        yield path


def load_upload(upload: Upload, kind: str, max_side: int) -> np.ndarray:
    """An uploaded image as float32 (H, W, 3) RGB in [0, 1] (images.load_image's rules,
    alpha dropped), downscaled so that its longer side is at most `max_side`."""
    with _as_file(upload.data) as path:
        try:
            rgb = images.load_image(path).rgb
        except images.ImageError as err:
            raise UploadError(400, f"{_label(upload.name, kind)}: {err.reason}") from None
    return images.resize(rgb, *downscaled_shape(*rgb.shape[:2], max_side))


def png_bytes(rgb: np.ndarray) -> bytes:
    """(H, W, 3) [0, 1] RGB as 8-bit PNG bytes (images.to_uint8: clipped, rounded)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(images.to_uint8(rgb), "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


# ---- Inference -------------------------------------------------------------------------

class Content(NamedTuple):
    image: np.ndarray  # (H, W, 3) float32
    feat: object  # f(c), (1, h, w, C) at the AdaIN layer


class Style(NamedTuple):
    image: np.ndarray  # (H, W, 3) float32, kept for colour preservation
    stats: object  # transfer.StyleStats, each (1, C)


class Mask(NamedTuple):
    image: np.ndarray  # (H, W) float32 in [0, 1]


def _stylized(params, content_feat, style_mean, style_std, weights, masks, alpha, size):
    """T(c, s, alpha) = g((1 - alpha) f(c) + alpha t) from the cached f(c) (1, h, w, C) and K
    styles' statistics (K, C): t mixes them by Eq. 15 `weights` (K,), or by `masks`
    (K, H, W) for spatial control. (H, W) = `size` crops the decoder's output."""
    from adain_jax import ops, transfer

    if masks is None:
        mean, std = ops.interpolate_stats(style_mean, style_std, weights)
        t = ops.adain_from_stats(content_feat, *ops.mean_std(content_feat), mean[None], std[None])
    else:
        masks = ops.resize_nearest(masks, *content_feat.shape[1:3])
        t = ops.masked_adain(content_feat, style_mean[None], style_std[None], masks[None])
    t = ops.blend_alpha(t, content_feat, alpha)
    return transfer.decode(params, t, size=size)[0]


class Engine:
    """The app's inference: uploads encoded once into LRU caches, then stylised from them.

    Not thread-safe: the app calls it from its one worker thread only. `encoded` counts
    encoder passes by kind ("content", "style"); tests and benchmarks/serve.py read it.
    """

    def __init__(self, params, *, max_side: int = DEFAULT_MAX_SIDE,
                 style_cache: int = DEFAULT_STYLE_CACHE,
                 content_cache: int = DEFAULT_CONTENT_CACHE):
        import jax

        from adain_jax import architectures, stylize_files, transfer

        self.params, self.max_side = params, max_side
        self.min_side = stylize_files.min_side(architectures.detect(params))
        self.caches = {"content": LRU(content_cache), "style": LRU(style_cache),
                       "mask": LRU(style_cache)}
        self.encoded: collections.Counter = collections.Counter()
        # params go in as arguments, never closed over: XLA would fold captured weights
        # into the program as constants and compile several times slower.
        self._encode = jax.jit(transfer.encode)
        self._encode_style = transfer.encode_style  # jitted inside, params an argument
        self._stylize = jax.jit(_stylized, static_argnames="size")
        self._apply = transfer.apply

    def add(self, kind: str, upload: Upload) -> tuple[str, tuple]:
        """Decode and encode an upload unless its bytes are cached: (sha256 hex, entry)."""
        key = hashlib.sha256(upload.data).hexdigest()
        entry = self.caches[kind].get(key)
        if entry is None:
            entry = self._read(kind, upload)
            self.caches[kind].put(key, entry)
        return key, entry

    def _read(self, kind: str, upload: Upload):
        rgb = load_upload(upload, kind, self.max_side)
        height, width = rgb.shape[:2]
        if kind == "mask":
            from adain_jax import stylize_files

            with _as_file(upload.data) as path:  # stylize.py's rule for masks (gray, nearest)
                return Mask(stylize_files.load_mask(path, height, width))
        if min(height, width) < self.min_side:
            raise UploadError(400, f"{_label(upload.name, kind)}: image is {width}x{height}; "
                              f"the encoder needs at least {self.min_side} px on each side")
        self.encoded[kind] += 1
        if kind == "content":
            return Content(rgb, self._encode(self.params, rgb[None]))
        return Style(rgb, self._encode_style(self.params, rgb[None]))

    def entry(self, kind: str, ref: Upload | str):
        """The cache entry for an upload or for the id (sha256 hex) of an earlier one."""
        if isinstance(ref, Upload):
            return self.add(kind, ref)[1]
        entry = self.caches[kind].get(ref)
        if entry is None:
            raise UploadError(404, f"the {kind} image {ref[:12]} is not in the server's cache "
                              f"(it keeps the last {self.caches[kind].size}); upload it again")
        return entry

    def stylize(self, content, styles: Sequence, *, alpha: float = 1.0,
                weights: Sequence[float] | None = None, mask=None,
                preserve_color: bool = False) -> np.ndarray:
        """The stylised content, (H, W, 3) float32; content, styles and mask are `Upload`s
        or ids of earlier ones. A mask takes one or two styles; with it, weights are unused."""
        content = self.entry("content", content)
        styles = [self.entry("style", s) for s in styles]
        height, width = content.image.shape[:2]
        weights = np.ones(len(styles), np.float32) if weights is None else weights
        masks = None
        if mask is not None:
            if len(styles) > 2:
                raise UploadError(400, f"a mask takes one or two styles, not {len(styles)}: "
                                  "white is the first style, black the second (or the "
                                  "content)")
            white = images.resize_nearest(self.entry("mask", mask).image, height, width)
            masks = np.stack([white, 1.0 - white][: len(styles)])
        if preserve_color:
            # Colour preservation recolours every style image to this content before it is
            # encoded (ops.coral), so the statistics depend on the content: this path
            # re-encodes the styles (and the content) on every call, not cached by style.
            mixed = None if masks is not None or len(styles) == 1 else weights
            out = self._apply(self.params, content.image, [s.image[None] for s in styles],
                              alpha, style_weights=mixed, masks=masks, preserve_color=True)
        else:
            mean = np.concatenate([np.asarray(s.stats.mean) for s in styles])
            std = np.concatenate([np.asarray(s.stats.std) for s in styles])
            out = self._stylize(self.params, content.feat, mean, std,
                                np.asarray(weights, np.float32), masks, np.float32(alpha),
                                size=(height, width))
        return np.asarray(out)


# ---- HTTP ------------------------------------------------------------------------------

def _number(text, name: str, default: float, low: float, high: float | None = None) -> float:
    """A form field as a number in [low, high]; `default` when absent."""
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise UploadError(400, f"{name} must be a number, got {str(text)[:40]!r}") from None
    if not (math.isfinite(value) and low <= value and (high is None or value <= high)):
        bound = f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        raise UploadError(400, f"{name} must be {bound}, got {value:g}")
    return value


async def _ref(item, kind: str):
    """A form value as an `Upload` (a file) or an id (hex text)."""
    from starlette.datastructures import UploadFile

    if isinstance(item, UploadFile):
        return Upload(await item.read(), item.filename or "")
    text = str(item).strip().lower()
    if len(text) != 64 or any(ch not in "0123456789abcdef" for ch in text):
        raise UploadError(400, f"{kind} must be an image file or the id of an upload")
    return text


class _BodyLimit:
    """ASGI middleware: request bodies over `limit` bytes get 413 and `message`, from the
    Content-Length header before anything is read, or once a streamed body passes it."""

    def __init__(self, app, limit: int, message: str):
        self.app, self.limit, self.message = app, limit, message

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from starlette.datastructures import Headers
        from starlette.responses import JSONResponse

        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            return await JSONResponse({"error": self.message}, 413)(scope, receive, send)
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise UploadError(413, self.message)
            return message

        await self.app(scope, limited, send)


def create_app(params, *, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
               max_side: int = DEFAULT_MAX_SIDE, style_cache: int = DEFAULT_STYLE_CACHE,
               content_cache: int = DEFAULT_CONTENT_CACHE, onnx_dir=None, ort_dir=None,
               allowed_hosts: Sequence[str] | None = None):
    """The Starlette app. `app.state.engine` is its `Engine`.

    Routes: / (the page), /static/* (adain_jax/web), GET /api/config, POST
    /api/{content,style,mask} (form field "file"; answers its id and size), POST
    /api/stylize (form fields content, style (repeated), weight (repeated, optional),
    alpha, mask, preserve_color; each image a file or an id; answers a PNG), and for the
    in-browser mode /models/{encoder,decoder}.onnx and /vendor/ort/*. Errors are JSON
    {"error": one line}. `allowed_hosts`: Host headers accepted (None: any).
    """
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    engine = Engine(params, max_side=max_side, style_cache=style_cache,
                    content_cache=content_cache)
    worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="adain-jax-worker")
    onnx_dir = Path(onnx_dir) if onnx_dir is not None else None
    ort_dir = Path(ort_dir) if ort_dir is not None else ort_web_dir()
    max_bytes = int(max_upload_mb * 2**20)

    async def on_worker(fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(
            worker, functools.partial(fn, *args, **kwargs))

    async def index(request):
        return FileResponse(WEB_DIR / "index.html")

    async def config(request):
        problem = in_browser_problem(onnx_dir, ort_dir)
        return JSONResponse({"max_side": max_side, "max_upload_bytes": max_bytes,
                             "max_styles": MAX_STYLES, "in_browser": problem is None,
                             "in_browser_problem": problem})

    async def upload(kind: str, request):
        async with request.form(max_files=1, max_fields=0) as form:
            item = form.get("file")
            if item is None or isinstance(item, str):
                raise UploadError(400, f"send the {kind} image as the form field 'file'")
            ref = await _ref(item, kind)
        key, entry = await on_worker(engine.add, kind, ref)
        height, width = entry.image.shape[:2]
        return JSONResponse({"id": key, "width": width, "height": height})

    async def stylize(request):
        async with request.form(max_files=MAX_STYLES + 2, max_fields=MAX_STYLES * 2 + 8) as form:
            if form.get("content") is None or not form.getlist("style"):
                raise UploadError(400, "give a content image and at least one style image")
            content = await _ref(form.get("content"), "content")
            styles = [await _ref(item, "style") for item in form.getlist("style")]
            if len(styles) > MAX_STYLES:
                raise UploadError(400, f"at most {MAX_STYLES} styles, got {len(styles)}")
            mask = await _ref(form.get("mask"), "mask") if form.get("mask") else None
            weights = None
            if form.getlist("weight"):
                weights = [_number(w, "weight", 1.0, 0.0) for w in form.getlist("weight")]
                if len(weights) != len(styles) or sum(weights) <= 0:
                    raise UploadError(400, f"give one weight per style ({len(styles)}), not all "
                                      "zero")
            alpha = _number(form.get("alpha"), "alpha", 1.0, 0.0, 1.0)
            preserve = form.get("preserve_color", "") in ("1", "true", "on")
        out = await on_worker(engine.stylize, content, styles, alpha=alpha, weights=weights,
                              mask=mask, preserve_color=preserve)
        return Response(await on_worker(png_bytes, out), media_type="image/png",
                        headers={"Cache-Control": "no-store"})

    async def model(request):
        name = request.path_params["name"]
        if onnx_dir is None or name not in ONNX_FILES or not (onnx_dir / name).is_file():
            raise HTTPException(404)
        return FileResponse(onnx_dir / name, media_type="application/octet-stream")

    async def vendor(request):
        name = request.path_params["name"]
        if name not in ORT_WEB_FILES or not (ort_dir / name).is_file():
            raise HTTPException(404)
        return FileResponse(ort_dir / name, media_type=ORT_WEB_FILES[name])

    async def refused(request, err: UploadError):
        return JSONResponse({"error": str(err)}, status_code=err.status)

    async def http_error(request, err: HTTPException):
        return JSONResponse({"error": err.detail}, status_code=err.status_code)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        worker.shutdown(wait=True, cancel_futures=True)

    routes = [Route("/", index),
              Route("/api/config", config),
              Route("/api/stylize", stylize, methods=["POST"]),
              *(Route(f"/api/{kind}", functools.partial(upload, kind), methods=["POST"])
                for kind in ("content", "style", "mask")),
              Route("/models/{name}", model),
              Route("/vendor/ort/{name}", vendor),
              Mount("/static", StaticFiles(directory=WEB_DIR))]
    too_large = f"the upload is over the limit of {max_upload_mb:g} MB (--max-upload-mb)"
    middleware = [Middleware(_BodyLimit, limit=max_bytes, message=too_large)]
    if allowed_hosts:
        middleware.insert(0, Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers={UploadError: refused, HTTPException: http_error})
    app.state.engine = engine
    return app


def in_browser_problem(onnx_dir, ort_dir) -> str | None:
    """Why the in-browser mode is off (one line), or None when it can run."""
    if onnx_dir is None:
        return "start the server with --onnx DIR (from adain_jax.export) for in-browser mode"
    missing = [n for n in ONNX_FILES if not (Path(onnx_dir) / n).is_file()]
    if missing:
        return f"{onnx_dir}: no {' or '.join(missing)}; write them with adain_jax.export"
    if not all((Path(ort_dir) / n).is_file() for n in ORT_WEB_FILES):
        return (f"onnxruntime-web is not in {ort_dir}; run {PROG} --fetch-onnxruntime-web "
                "once")
    return None


# ---- onnxruntime-web -------------------------------------------------------------------

def ort_web_dir() -> Path:
    """Where --fetch-onnxruntime-web keeps the files and the app serves them from."""
    return download.cache_dir() / f"onnxruntime-web-{ORT_WEB_VERSION}"


def fetch_onnxruntime_web(url: str | None = None, *, sha256: str | None = None,
                          folder=None, progress: bool = True) -> Path:
    """Download the onnxruntime-web npm tarball (default ORT_WEB_URL, checked against
    ORT_WEB_SHA256) and extract the files of ORT_WEB_FILES into `folder` (default
    `ort_web_dir()`); returns the folder. Files already there are kept."""
    folder = Path(folder) if folder is not None else ort_web_dir()
    if all((folder / name).is_file() for name in ORT_WEB_FILES):
        return folder
    url = url or ORT_WEB_URL
    tarball = folder / f"onnxruntime-web-{ORT_WEB_VERSION}.tgz"
    try:
        download.fetch(url, tarball, sha256=sha256 or ORT_WEB_SHA256, progress=progress)
    except download.OfflineError as err:
        raise download.OfflineError(f"cannot download {err}; fetch it by hand, save it as "
                                    f"{tarball} and run {PROG} --fetch-onnxruntime-web "
                                    "again") from None
    try:
        _extract(tarball, folder)
    finally:
        tarball.unlink()
    return folder


def _extract(tarball: Path, folder: Path) -> None:
    """Copy package/dist/NAME for each NAME of ORT_WEB_FILES out of `tarball`, and nothing
    else: members are looked up by those exact names and written under them, so no
    member's own path (.., absolute, a link) decides where anything is written."""
    from adain_jax import outputs

    with tarfile.open(tarball, "r:gz") as tar:
        for name in ORT_WEB_FILES:
            try:
                member = tar.getmember(f"package/dist/{name}")
            except KeyError:
                raise download.DownloadError(f"{tarball}: no package/dist/{name} in it; is it "
                                             "onnxruntime-web?") from None
            if not member.isfile():
                raise download.DownloadError(f"{tarball}: package/dist/{name} is not a "
                                             "regular file; refused")
            outputs.write_atomic(folder / name, tar.extractfile(member).read())


# ---- Command line ----------------------------------------------------------------------

def _megabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of MB, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value:g}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, epilog=EPILOG,
                    description="A local web app for AdaIN style transfer (Huang & Belongie, "
                                "2017): content and style uploads, alpha, interpolation, "
                                "masks, colour preservation, PNG download.")
    parser.add_argument("--weights", metavar="FILE",
                        help=f"adain-jax weights file (default: "
                             f"{download.default_weights_path()})")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to listen on (default: %(default)s, this machine only)")
    parser.add_argument("--port", type=whole_number(0), default=DEFAULT_PORT,
                        help="port to listen on; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--max-upload-mb", type=_megabytes, default=DEFAULT_MAX_UPLOAD_MB,
                        metavar="MB", help="largest request body; a larger upload is refused "
                                           "(HTTP 413) (default: %(default)s)")
    parser.add_argument("--max-side", type=whole_number(16), default=DEFAULT_MAX_SIDE, metavar="PX",
                        help="downscale each upload so that its longer side is at most PX "
                             "(aspect kept; never enlarged) (default: %(default)s)")
    parser.add_argument("--style-cache", type=whole_number(1), default=DEFAULT_STYLE_CACHE,
                        metavar="N", help="styles (and masks) kept encoded (default: "
                                          "%(default)s)")
    parser.add_argument("--content-cache", type=whole_number(1), default=DEFAULT_CONTENT_CACHE,
                        metavar="N", help="contents kept encoded (default: %(default)s)")
    parser.add_argument("--onnx", metavar="DIR",
                        help="folder with encoder.onnx and decoder.onnx (adain_jax.export) "
                             "for the in-browser mode (default: server mode only)")
    parser.add_argument("--fetch-onnxruntime-web", action="store_true",
                        help=f"download onnxruntime-web {ORT_WEB_VERSION} for the in-browser "
                             "mode (33 MB, once) and exit")
    parser.add_argument("--onnxruntime-web-url", metavar="URL",
                        help="a mirror of the onnxruntime-web tarball (checked against the "
                             "same sha256) (default: the npm registry)")
    add_common_flags(parser)
    return parser


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port); OSError when it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    return sock


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(False, args.verbose)

    def error(message: str) -> int:
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1

    if args.fetch_onnxruntime_web:
        try:
            folder = fetch_onnxruntime_web(args.onnxruntime_web_url)
        except download.DownloadError as err:
            return error(str(err))
        log.info("onnxruntime-web %s: %s", ORT_WEB_VERSION, folder)
        return 0
    try:
        import multipart  # noqa: F401  (Starlette's form parser)
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as err:
        return error(f"the web app needs {err.name}: pip install 'adain-jax[web]'")
    if args.onnx is not None:
        problem = in_browser_problem(args.onnx, ort_web_dir())
        if problem:
            return error(problem)
    weights = Path(args.weights) if args.weights else download.default_weights_path()
    if not weights.is_file():
        return error(f"{weights}: no weights file; create it with `python convert_weights.py "
                     "--download`, or pass --weights FILE")
    try:
        sock = listen(args.host, args.port)
    except OSError as err:
        return error(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}; "
                     "pass another --port")
    start_compile_cache(args)
    from adain_jax.weights import WeightsError, load_params

    try:
        params = load_params(weights)
    except WeightsError as err:
        sock.close()
        return error(str(err))
    loopback = args.host in LOOPBACK_HOSTS
    app = create_app(params, max_upload_mb=args.max_upload_mb, max_side=args.max_side,
                     style_cache=args.style_cache, content_cache=args.content_cache,
                     onnx_dir=args.onnx, allowed_hosts=LOOPBACK_HOSTS if loopback else None)
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, host=host, port=port, lifespan="on",
                            log_level="info" if args.verbose else "warning")
    log.info("serving on http://%s:%d/ (Ctrl-C stops)", f"[{host}]" if ":" in host else host,
             port)
    uvicorn.Server(config).run(sockets=[sock])  # uvicorn handles Ctrl-C itself
    return 0


def run() -> int:
    return run_main(main, PROG)


if __name__ == "__main__":
    sys.exit(run())
