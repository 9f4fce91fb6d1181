"""adain_jax.serve, the web app: over HTTP and in headless Chromium, against adain_jax.apply.

Every result is compared with `apply` on the same inputs, decoded independently here with
images.load_image from the files uploaded. The app answers 8-bit PNGs: a pixel may differ
from apply's float output, clipped to [0, 1], by its rounding (1/2 of 1/255) plus float32
differences between two compiled programs, so the tolerance is 1/255; in the browser the
in-browser mode runs ONNX Runtime's WebAssembly kernels, so 2/255 there.

The weights are random (init_params), rescaled so that activations stay O(1) and the
output inside (0, 1) (see `params`): with PyTorch's default init the decoder's output is
nearly constant and a wrong alpha or weight would go unseen.

Browser tests need chromium and chromedriver (and, for the in-browser mode, the
onnxruntime-web files: `python -m adain_jax.serve --fetch-onnxruntime-web`, or
$ADAIN_JAX_ORT_WEB_DIR); without them they skip, unless ADAIN_JAX_REQUIRE_BROWSER=1, where
that is a failure. ADAIN_JAX_SCREENSHOT=1 saves docs/web-app.png (the README's picture).
"""
from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import hashlib
import http.client
import io
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("multipart")
import httpx  # noqa: E402
import uvicorn  # noqa: E402

import adain_jax  # noqa: E402
from adain_jax import download, images, serve  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONTENT_SHAPE = (48, 64)  # (H, W): not square, so a transposed image would show
STYLE_SHAPE = (40, 40)
MAX_SIDE = 64
MAX_UPLOAD_MB = 0.25
TOL = 1 / 255
BROWSER_TOL = 2 / 255
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROME_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--window-size=1280,1000")


# ---- Inputs and references ---------------------------------------------------------------

@pytest.fixture(scope="module")
def params():
    """init_params(key 0), encoder and decoder x 2.5 (activations O(1) through the layers,
    as tests/test_transfer.py's SCALE), the last decoder convolution x 0.05 with bias 0.5:
    outputs spread over about [0.25, 0.8]."""
    params = jax.tree.map(lambda x: 2.5 * x, adain_jax.init_params(jax.random.key(0)))
    last = next(k for k, v in params["decoder"].items() if v["kernel"].shape[-1] == 3)
    params["decoder"][last] = {"kernel": 0.05 * params["decoder"][last]["kernel"],
                               "bias": jnp.full(3, 0.5)}
    return params


def _png(pixels: np.ndarray, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _content(seed: int) -> bytes:
    """A smooth colour field plus noise: structure for the encoder to see."""
    rng = np.random.default_rng(seed)
    h, w = CONTENT_SHAPE
    yy, xx = np.mgrid[0:h, 0:w] / np.float32(max(h, w))
    phase = rng.uniform(0, 6, 3)
    smooth = np.stack([np.sin(6 * xx + phase[0]), np.cos(5 * yy + phase[1]),
                       np.sin(4 * (xx + yy) + phase[2])], -1) * 0.35 + 0.5
    noisy = smooth + 0.15 * rng.standard_normal((h, w, 3))
    return _png(np.clip(noisy * 255, 0, 255).astype(np.uint8))


def _style(kind: int) -> bytes:
    """Styles with clearly different statistics: stripes, a gradient, a flat colour."""
    h, w = STYLE_SHAPE
    yy, xx = np.mgrid[0:h, 0:w] / np.float32(max(h, w))
    rng = np.random.default_rng(100 + kind)
    if kind % 3 == 0:
        rgb = np.stack([np.sin(xx * 20) * 0.5 + 0.5, yy, 0.2 + 0 * xx], -1)
    elif kind % 3 == 1:
        rgb = np.stack([yy, 1 - xx, (xx + yy) / 2], -1) ** 2
    else:
        rgb = 0.7 + 0.05 * rng.random((h, w, 3))
    rgb = rgb + 0.02 * kind * rng.standard_normal((h, w, 3))
    return _png(np.clip(rgb * 255, 0, 255).astype(np.uint8))


def _mask() -> tuple[bytes, np.ndarray]:
    """A gray PNG, white on the left 40% of the content; and its (H, W) values in [0, 1]."""
    h, w = CONTENT_SHAPE
    pixels = np.zeros((h, w), np.uint8)
    pixels[:, : int(0.4 * w)] = 255
    return _png(pixels, "L"), pixels.astype(np.float32) / 255


def _decoded(data: bytes, tmp: Path) -> np.ndarray:
    path = tmp / f"{hashlib.sha256(data).hexdigest()[:16]}.png"
    path.write_bytes(data)
    return images.load_image(path).rgb


def reference(params, tmp, content: bytes, styles, alpha, **kwargs) -> np.ndarray:
    """apply on the decoded files, clipped to [0, 1] as an 8-bit PNG holds it."""
    style_images = [_decoded(s, tmp)[None] for s in styles]
    out = adain_jax.apply(params, _decoded(content, tmp), style_images, alpha, **kwargs)
    return np.clip(np.asarray(out), 0, 1)


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.float32) / 255


def assert_close(png: bytes, expected: np.ndarray, tol: float = TOL) -> None:
    got = pixels(png)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    err = np.abs(got - expected).max()
    assert err <= tol + 1e-6, f"max error {err * 255:.2f}/255 > {tol * 255:.0f}/255"


def assert_differs(a: np.ndarray, b: np.ndarray) -> None:
    """Two settings that must give visibly different results (so a test can fail)."""
    assert np.abs(a - b).max() > 5 / 255, np.abs(a - b).max() * 255


# ---- A real server on an ephemeral port --------------------------------------------------

@contextlib.contextmanager
def running(app):
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def app(params):
    return serve.create_app(params, max_side=MAX_SIDE, max_upload_mb=MAX_UPLOAD_MB,
                            content_cache=2, style_cache=4)


@pytest.fixture(scope="module")
def url(app):
    with running(app) as base:
        yield base


@pytest.fixture
def client(url):
    with httpx.Client(base_url=url, timeout=120) as c:
        yield c


def upload(client, kind: str, data: bytes, name: str = "image.png") -> str:
    response = client.post(f"/api/{kind}", files={"file": (name, data, "image/png")})
    assert response.status_code == 200, response.text
    return response.json()["id"]


def stylize(client, data=None, files=None) -> httpx.Response:
    response = client.post("/api/stylize", data=data, files=files)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return response


# ---- HTTP ----------------------------------------------------------------------------------

def test_stylize_equals_apply_and_alpha_reuses_the_cache(params, app, client, tmp_path):
    content, style = _content(1), _style(0)
    content_id, style_id = upload(client, "content", content), upload(client, "style", style)
    engine = app.state.engine
    encoded = dict(engine.encoded)
    results = {}
    for alpha in (1.0, 0.3):
        png = stylize(client, {"content": content_id, "style": style_id,
                               "alpha": str(alpha)}).content
        assert_close(png, reference(params, tmp_path, content, [style], alpha))
        results[alpha] = pixels(png)
    assert dict(engine.encoded) == encoded, "a stylise call ran the encoder again"
    assert_differs(results[1.0], results[0.3])


def test_interpolation_weights_and_masks_equal_apply(params, client, tmp_path):
    content, styles = _content(2), [_style(0), _style(1)]
    ids = {"content": upload(client, "content", content),
           "style": [upload(client, "style", s) for s in styles]}
    weighted = stylize(client, {**ids, "weight": ["3", "1"], "alpha": "0.8"}).content
    expected = reference(params, tmp_path, content, styles, 0.8, style_weights=[3.0, 1.0])
    assert_close(weighted, expected)
    assert_differs(expected, reference(params, tmp_path, content, styles, 0.8,
                                       style_weights=[1.0, 3.0]))

    mask_png, white = _mask()
    masked = stylize(client, {**ids, "mask": upload(client, "mask", mask_png)}).content
    expected = reference(params, tmp_path, content, styles, 1.0,
                         masks=np.stack([white, 1 - white]))
    assert_close(masked, expected)
    # one style and a mask: black keeps the content (alpha 0 there)
    one = stylize(client, {"content": ids["content"], "style": ids["style"][0],
                           "mask": hashlib.sha256(mask_png).hexdigest()}).content
    assert_close(one, reference(params, tmp_path, content, styles[:1], 1.0,
                                masks=white[None]))
    assert_differs(pixels(one), pixels(masked))


def test_preserve_color_equals_apply(params, client, tmp_path):
    content, style = _content(3), _style(1)
    png = stylize(client, files=[("content", ("c.png", content)), ("style", ("s.png", style))],
                  data={"alpha": "0.9", "preserve_color": "1"}).content
    expected = reference(params, tmp_path, content, [style], 0.9, preserve_color=True)
    assert_close(png, expected)
    assert_differs(expected, reference(params, tmp_path, content, [style], 0.9))


def _bomb_png(side: int = 20000) -> bytes:
    """A valid PNG header for a side x side RGB image, with almost no data behind it."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_bad_uploads_get_one_line_and_the_server_goes_on(params, client, tmp_path):
    noisy = np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    too_big = _png(noisy)
    assert len(too_big) > MAX_UPLOAD_MB * 2**20
    cases = {"notes.txt": (b"just some text\n", 400, "not an image"),
             "cut.png": (_content(4)[:400], 400, "truncated"),
             "bomb.png": (_bomb_png(20000), 400, "decompression bomb"),  # PIL's own limit
             "large.png": (_bomb_png(9000), 400, "over the limit of 67108864 pixels"),
             "huge.png": (too_big, 413, "over the limit of 0.25 MB")}
    for name, (data, status, words) in cases.items():
        for kind in ("content", "style"):
            response = client.post(f"/api/{kind}", files={"file": (name, data)})
            assert response.status_code == status, (name, response.text)
            message = response.json()["error"]
            assert words in message and "\n" not in message, message
    response = client.post("/api/stylize", data={"content": "0" * 64, "style": "1" * 64})
    assert response.status_code == 404 and "upload it again" in response.json()["error"]
    content, style = _content(5), _style(2)
    response = client.post("/api/stylize", files=[("content", ("c.png", content)),
                                                  ("style", ("s.png", style))],
                           data={"alpha": "1.5"})
    assert response.status_code == 400 and "alpha" in response.json()["error"]
    # and the next good request is answered
    png = stylize(client, files=[("content", ("c.png", content)),
                                 ("style", ("s.png", style))]).content
    assert_close(png, reference(params, tmp_path, content, [style], 1.0))


@pytest.mark.parametrize("path", [
    "/static/../serve.py", "/static/%2e%2e/serve.py", "/static/%2E%2E/%2e%2e/adain_jax/serve.py",
    "/static/..%2fserve.py", "/static/..%5cserve.py", "/static/%2fetc%2fpasswd",
    "/static//etc/passwd", "/../adain_jax/serve.py", "/vendor/ort/..%2f..%2fserve.py",
    "/vendor/ort/../../serve.py", "/models/..%2fserve.py", "/web/../serve.py"])
def test_nothing_outside_the_static_folder_is_served(url, path):
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("GET", path)  # sent as written: no client-side normalisation
    response = connection.getresponse()
    body = response.read()
    connection.close()
    assert response.status in (400, 404), (path, response.status)
    assert b"import" not in body and b"root:" not in body


def test_static_files_are_served(client):
    """The positive control of the traversal test: the page and its script are there."""
    page, script = client.get("/"), client.get("/static/app.js")
    assert page.status_code == 200 and 'src="/static/app.js"' in page.text
    assert script.status_code == 200 and "requestRender" in script.text


def test_20_concurrent_requests_each_equal_apply(params, app, url, tmp_path):
    """Distinct contents, styles and alphas at once, through caches smaller than the load
    (2 contents, 4 styles): each answer is its own inputs' apply, caches stay bounded and
    one worker thread does the work."""
    jobs = [(_content(100 + i), _style(i), round(0.4 + 0.03 * i, 2)) for i in range(20)]

    def post(job):
        content, style, alpha = job
        with httpx.Client(base_url=url, timeout=300) as c:
            return c.post("/api/stylize", files=[("content", ("c.png", content)),
                                                 ("style", ("s.png", style))],
                          data={"alpha": str(alpha)})

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(post, jobs))
    for (content, style, alpha), response in zip(jobs, responses):
        assert response.status_code == 200, response.text
        assert_close(response.content, reference(params, tmp_path, content, [style], alpha))
    caches = app.state.engine.caches
    assert len(caches["content"]) <= 2 and len(caches["style"]) <= 4
    workers = [t for t in threading.enumerate() if t.name.startswith("adain-jax-worker")]
    assert len(workers) == 1, [t.name for t in workers]


def test_listens_on_loopback_by_default(params, tmp_path, monkeypatch):
    """main() binds 127.0.0.1 unless --host says otherwise, and then refuses other Host
    headers (a web page cannot reach the app by DNS rebinding)."""
    weights = tmp_path / "w.safetensors"
    adain_jax.save_params(params, weights)
    started = {}

    def fake_run(self, sockets=None):
        started["config"], started["sockets"] = self.config, sockets

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    assert serve.build_parser().parse_args([]).host == "127.0.0.1"
    assert serve.main(["--weights", str(weights), "--port", "0", "--no-compile-cache"]) == 0
    sock = started["sockets"][0]
    assert sock.getsockname()[0] == "127.0.0.1" and started["config"].host == "127.0.0.1"
    from starlette.testclient import TestClient

    with TestClient(started["config"].app, base_url="http://127.0.0.1") as c:
        assert c.get("/api/config").status_code == 200
        assert c.get("/api/config", headers={"host": "evil.example"}).status_code == 400
    sock.close()


def test_help_without_jax_and_missing_weights_in_one_line(tmp_path):
    code = ("import sys; from adain_jax import serve; serve.build_parser(); "
            "assert 'jax' not in sys.modules and 'starlette' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
    result = subprocess.run([sys.executable, "-m", "adain_jax.serve", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--max-side" in result.stdout
    assert "longer side is at most" in " ".join(result.stdout.split())
    missing = tmp_path / "none.safetensors"
    result = subprocess.run([sys.executable, "-m", "adain_jax.serve", "--weights", str(missing)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"{serve.PROG}: error: {missing}: no weights file; create it with `python "
        "convert_weights.py --download`, or pass --weights FILE"]


# ---- onnxruntime-web download --------------------------------------------------------------

def _tarball(members: dict) -> bytes:
    """A .tgz of {name: bytes, or ("link", target)}."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(body, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, body[1]
                tar.addfile(info)
            else:
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


@pytest.fixture
def tarball_server():
    """A local server of {path: bytes} (set `.files`); counts GETs in `.hits`."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            httpd.hits.append(self.path)
            body = httpd.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.files, httpd.hits = {}, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_fetch_onnxruntime_web(tarball_server, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    monkeypatch.setenv("ADAIN_JAX_CACHE", str(cache))
    wanted = {name: f"// {name}\n".encode() for name in serve.ORT_WEB_FILES}
    good = _tarball({**{f"package/dist/{n}": b for n, b in wanted.items()},
                     "package/dist/ort.all.min.js": b"not wanted",
                     "package/../../escaped.js": b"evil", "/tmp/absolute.js": b"evil"})
    linked = _tarball({**{f"package/dist/{n}": b for n, b in wanted.items()},
                       "package/dist/ort.wasm.min.js": ("link", "/etc/passwd")})
    tarball_server.files = {"/good.tgz": good, "/linked.tgz": linked}
    folder = cache / f"onnxruntime-web-{serve.ORT_WEB_VERSION}"

    def fetch(path: str, sha256: str) -> int:
        monkeypatch.setattr(serve, "ORT_WEB_SHA256", sha256)
        return serve.main(["--fetch-onnxruntime-web", "--onnxruntime-web-url",
                           tarball_server.url + path])

    assert fetch("/good.tgz", "0" * 64) == 1  # a wrong hash: nothing kept
    assert "checksum mismatch" in capsys.readouterr().err and not any(folder.glob("*"))
    assert fetch("/linked.tgz", hashlib.sha256(linked).hexdigest()) == 1
    assert "not a regular file" in capsys.readouterr().err
    assert not (folder / "ort.wasm.min.js").exists()
    assert fetch("/missing.tgz", hashlib.sha256(good).hexdigest()) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after tqdm's \r lines
    assert err.startswith(f"{serve.PROG}: error: cannot download http://127.0.0.1")
    assert "HTTP 404" in err and "fetch it by hand" in err

    assert fetch("/good.tgz", hashlib.sha256(good).hexdigest()) == 0
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == wanted
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(wanted)
    hits = len(tarball_server.hits)
    assert fetch("/good.tgz", hashlib.sha256(good).hexdigest()) == 0  # there: no download
    assert len(tarball_server.hits) == hits


# ---- In a real browser -----------------------------------------------------------------------

def _missing(reason: str):
    """Skip loudly, or fail where the CI asks for browser tests (ADAIN_JAX_REQUIRE_BROWSER)."""
    if os.environ.get("ADAIN_JAX_REQUIRE_BROWSER") == "1":
        pytest.fail(f"ADAIN_JAX_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(f"BROWSER TEST NOT RUN: {reason}")


@pytest.fixture
def browser(tmp_path):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed (pip install 'adain-jax[test]')")
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        _missing(f"no chromium or chromedriver ({CHROMIUM}, {CHROMEDRIVER}); on Debian: "
                 "apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (*CHROME_ARGS, f"--user-data-dir={tmp_path / 'chrome-profile'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, condition: str, timeout: float = 120):
    """Wait until the JS expression `condition` is true; the page's error line if it fails."""
    deadline = time.monotonic() + timeout
    while not driver.execute_script(f"return Boolean({condition});"):
        error = driver.execute_script("return document.getElementById('error').textContent")
        assert not error, f"the page says: {error}"
        assert time.monotonic() < deadline, f"timed out waiting for {condition}"
        time.sleep(0.1)


def _settled(alpha: str) -> str:
    return (f"document.body.dataset.busy === '0' && "
            f"document.getElementById('result').dataset.alpha === '{alpha}'")


def _result_png(driver) -> bytes:
    """The bytes behind the result image's blob URL: what the download link saves."""
    data = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(document.getElementById('result').src).then((r) => r.arrayBuffer()).then((b) => {
          let s = ''; for (const x of new Uint8Array(b)) s += String.fromCharCode(x);
          done(btoa(s));
        });""")
    assert driver.execute_script(
        "return document.getElementById('download').href") == driver.execute_script(
        "return document.getElementById('result').src")
    return base64.b64decode(data)


def _no_console_errors(driver):
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe


def _write(tmp: Path, name: str, data: bytes) -> str:
    path = tmp / name
    path.write_bytes(data)
    return str(path)


def _slide(driver, element_id: str, key_name: str, times: int):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    slider = driver.find_element(By.ID, element_id)
    for _ in range(times):
        slider.send_keys(getattr(Keys, key_name))


def test_browser_server_mode(params, app, url, browser, client, tmp_path):
    """Upload, alpha, colour preservation, a mask, and a cache eviction (the page uploads
    its images again), each result compared with apply."""
    from selenium.webdriver.common.by import By

    content, styles = _content(7), [_style(0), _style(1)]
    browser.get(url + "/")
    _wait(browser, "document.body.dataset.started === '1'")
    browser.find_element(By.ID, "content-input").send_keys(_write(tmp_path, "c.png", content))
    browser.find_element(By.ID, "style-input").send_keys(_write(tmp_path, "s.png", styles[0]))
    _wait(browser, _settled("1.00"))
    assert_close(_result_png(browser), reference(params, tmp_path, content, styles[:1], 1.0))
    encoded = dict(app.state.engine.encoded)
    _slide(browser, "alpha", "PAGE_DOWN", 4)  # a range input's page step: a tenth
    _wait(browser, _settled("0.60"))
    assert_close(_result_png(browser), reference(params, tmp_path, content, styles[:1], 0.6))
    assert dict(app.state.engine.encoded) == encoded, "moving alpha re-encoded an image"

    browser.find_element(By.ID, "preserve-color").click()
    _wait(browser, _settled("0.60") + " && document.getElementById('result').dataset"
                                      ".preserve === '1'")
    assert_close(_result_png(browser), reference(params, tmp_path, content, styles[:1], 0.6,
                                                 preserve_color=True))
    browser.find_element(By.ID, "preserve-color").click()
    browser.find_element(By.ID, "style-input").send_keys(_write(tmp_path, "t.png", styles[1]))
    mask_png, white = _mask()
    browser.find_element(By.ID, "mask-input").send_keys(_write(tmp_path, "m.png", mask_png))
    _wait(browser, _settled("0.60") + " && document.getElementById('result').dataset.mask "
                                      "=== '1' && document.getElementById('result').dataset"
                                      ".weights === '1,1'")
    assert_close(_result_png(browser), reference(params, tmp_path, content, styles, 0.6,
                                                 masks=np.stack([white, 1 - white])))
    _no_console_errors(browser)

    for seed in (8, 9):  # the app keeps 2 contents: the page's is pushed out
        upload(client, "content", _content(seed))
    encoded = app.state.engine.encoded["content"]
    _slide(browser, "alpha", "PAGE_UP", 1)
    _wait(browser, _settled("0.70"))
    assert_close(_result_png(browser), reference(params, tmp_path, content, styles, 0.7,
                                                 masks=np.stack([white, 1 - white])))
    assert app.state.engine.encoded["content"] == encoded + 1
    logged = browser.get_log("browser")  # the one 404 that sent the page to upload again
    assert [e["level"] for e in logged] == ["SEVERE"] and "404" in logged[0]["message"], logged


def _ort_dir() -> Path:
    return Path(os.environ.get("ADAIN_JAX_ORT_WEB_DIR") or serve.ort_web_dir())


def test_browser_onnx_mode(params, browser, tmp_path):
    from selenium.webdriver.common.by import By

    pytest.importorskip("jax2onnx", reason="IN-BROWSER TEST NOT RUN: no jax2onnx to export")
    from adain_jax.export import export_onnx
    ort_dir = _ort_dir()
    if not all((ort_dir / n).is_file() for n in serve.ORT_WEB_FILES):
        _missing(f"no onnxruntime-web files in {ort_dir}: run python -m adain_jax.serve "
                 "--fetch-onnxruntime-web, or set ADAIN_JAX_ORT_WEB_DIR")
    export_onnx(params, tmp_path / "onnx", names=serve.ONNX_FILES)
    onnx_app = serve.create_app(params, max_side=MAX_SIDE, onnx_dir=tmp_path / "onnx",
                                ort_dir=ort_dir)
    content, styles = _content(8), [_style(0), _style(1)]
    with running(onnx_app) as base:
        browser.get(base + "/")
        _wait(browser, "document.body.dataset.started === '1'")
        browser.find_element(By.CSS_SELECTOR, "input[name=mode][value=browser]").click()
        browser.find_element(By.ID, "content-input").send_keys(
            _write(tmp_path, "c.png", content))
        browser.find_element(By.ID, "style-input").send_keys("\n".join(
            _write(tmp_path, f"s{i}.png", s) for i, s in enumerate(styles)))
        _wait(browser, _settled("1.00"))
        weight = browser.find_elements(By.CSS_SELECTOR, "input.style-weight")[0]
        weight.clear()
        weight.send_keys("3")
        _slide(browser, "alpha", "PAGE_DOWN", 3)
        _wait(browser, _settled("0.70") + " && document.getElementById('result')"
                                          ".dataset.weights === '3,1'")
        assert_close(_result_png(browser),
                     reference(params, tmp_path, content, styles, 0.7, style_weights=[3.0, 1.0]),
                     BROWSER_TOL)
        assert onnx_app.state.engine.encoded == {}, "the in-browser mode used the server"
        _no_console_errors(browser)


@pytest.mark.skipif(os.environ.get("ADAIN_JAX_SCREENSHOT") != "1",
                    reason="ADAIN_JAX_SCREENSHOT=1 saves docs/web-app.png")
def test_screenshot(params, browser):
    """docs/web-app.png: the examples' harbour in the mosaic and waves styles, 3:1, alpha
    0.8, with the default weights file where there is one (else the random test weights)."""
    from selenium.webdriver.common.by import By

    weights = download.default_weights_path()
    real = adain_jax.load_params(weights) if weights.is_file() else params
    examples = ROOT / "examples"
    with running(serve.create_app(real, max_side=384)) as base:
        browser.get(base + "/")
        _wait(browser, "document.body.dataset.started === '1'")
        browser.find_element(By.ID, "content-input").send_keys(
            str(examples / "content" / "harbour.jpg"))
        browser.find_element(By.ID, "style-input").send_keys(
            f"{examples / 'style' / 'mosaic.jpg'}\n{examples / 'style' / 'waves.jpg'}")
        _wait(browser, _settled("1.00"), timeout=300)
        weight = browser.find_elements(By.CSS_SELECTOR, "input.style-weight")[0]
        weight.clear()
        weight.send_keys("3")
        _slide(browser, "alpha", "PAGE_DOWN", 2)
        _wait(browser, _settled("0.80") + " && document.getElementById('result')"
                                          ".dataset.weights === '3,1'", timeout=300)
        out = ROOT / "docs" / "web-app.png"
        out.parent.mkdir(exist_ok=True)
        browser.save_screenshot(str(out))
        assert Image.open(out).size[0] >= 1000
