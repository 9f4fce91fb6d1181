"""Latency of the web app (adain_jax.serve), on CPU and in headless Chromium.

    python benchmarks/serve.py                          # 512^2 server, 256^2 in-browser
    python benchmarks/serve.py --size 256 --reps 3 --json r.json --no-browser

Server mode: the app runs on 127.0.0.1 (uvicorn in a thread); content and style are
uploaded (encoded and cached) first, then each timed request is POST /api/stylize with a
new alpha, answered with a PNG (AdaIN + decoder + PNG encoding + HTTP). Against it, a bare
jitted `apply` on the same inputs (content and style images: both encoded every call),
and `apply` with the style pre-encoded (`encode_style`). Interleaved over --reps rounds,
medians, after a warm-up (compilation) of each.

In-browser mode (needs adain_jax.export, chromium and the onnxruntime-web files, see
serve.py): decoder.onnx run --reps times on one --browser-size content's features, timed in
the page with performance.now(), and the page's whole alpha change (slider to new PNG).
Random weights (init_params): speed does not depend on their values.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import adain_jax  # noqa: E402  (first: sets XLA_FLAGS before JAX starts)
import httpx  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import bench  # noqa: E402  (timing, machine facts)
from adain_jax import serve  # noqa: E402
from tests.test_serve import CHROME_ARGS, CHROMEDRIVER, CHROMIUM, running  # noqa: E402


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def image(size: int, seed: int) -> np.ndarray:
    return (bench.images(1, size, seed)[0] * 255).astype(np.uint8)


def server_mode(params, size: int, reps: int) -> dict:
    content, style = image(size, 1), image(size, 2)
    app = serve.create_app(params, max_side=size)
    with running(app) as url, httpx.Client(base_url=url, timeout=600) as client:
        ids = {kind: client.post(f"/api/{kind}", files={"file": ("x.png", png(x))}).json()["id"]
               for kind, x in (("content", content), ("style", style))}
        alphas = iter(np.linspace(0.2, 1.0, 10 * (reps + 2)))

        def request():
            r = client.post("/api/stylize", data={**ids, "alpha": f"{next(alphas):.3f}"})
            assert r.status_code == 200, r.text

        c, s = (jax.numpy.asarray(x / np.float32(255)) for x in (content, style[None]))
        stats = adain_jax.encode_style(params, s)
        runners = {
            "app_alpha_change": bench.prepared(request),
            "apply": bench.prepared(lambda: jax.block_until_ready(
                adain_jax.apply(params, c, s, 0.5))),
            "apply_style_cached": bench.prepared(lambda: jax.block_until_ready(
                adain_jax.apply(params, c, stats, 0.5))),
        }
        times = bench.interleaved(runners, reps)
        encoded = dict(app.state.engine.encoded)
    assert encoded == {"content": 1, "style": 1}, encoded  # alpha changes never re-encode
    return {"size": size, **{k: t["median_ms"] for k, t in times.items()}, "times": times}


def browser_mode(params, size: int, reps: int) -> dict | None:
    try:
        from adain_jax.export import export_onnx
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
    except ImportError as err:
        print(f"in-browser mode not measured: {err}", file=sys.stderr)
        return None
    ort_dir = Path(os.environ.get("ADAIN_JAX_ORT_WEB_DIR") or serve.ort_web_dir())
    if not all((ort_dir / n).is_file() for n in serve.ORT_WEB_FILES):
        print(f"in-browser mode not measured: no onnxruntime-web in {ort_dir}", file=sys.stderr)
        return None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export_onnx(params, tmp / "onnx")
        for name, seed in (("c.png", 3), ("s.png", 4)):
            (tmp / name).write_bytes(png(image(size, seed)))
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in (*CHROME_ARGS, f"--user-data-dir={tmp / 'profile'}"):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        driver.set_script_timeout(600)
        app = serve.create_app(params, max_side=size, onnx_dir=tmp / "onnx", ort_dir=ort_dir)
        try:
            with running(app) as url:
                driver.get(url + "/")
                wait(driver, "document.body.dataset.started === '1'")
                driver.find_element(By.CSS_SELECTOR, "input[name=mode][value=browser]").click()
                driver.find_element(By.ID, "content-input").send_keys(str(tmp / "c.png"))
                driver.find_element(By.ID, "style-input").send_keys(str(tmp / "s.png"))
                wait(driver, "document.body.dataset.renders === '1' && "
                             "document.body.dataset.busy === '0'")
                decoder_ms = driver.execute_async_script(DECODER_TIMING, reps)
                page_ms = []
                for i in range(reps):  # the page's own path: slider, decoder, PNG, <img>
                    start = time.perf_counter()
                    driver.execute_script(
                        "const a = document.getElementById('alpha'); a.value = arguments[0];"
                        "a.dispatchEvent(new Event('input'));", f"{0.5 + 0.01 * i:.2f}")
                    wait(driver, f"document.body.dataset.renders === '{i + 2}' && "
                                 "document.body.dataset.busy === '0'")
                    page_ms.append(1e3 * (time.perf_counter() - start))
        finally:
            driver.quit()
    return {"size": size, "decoder_ms": statistics.median(decoder_ms),
            "decoder_all_ms": [round(x, 1) for x in decoder_ms],
            "page_alpha_change_ms": statistics.median(page_ms),
            "chromium": CHROMIUM, "ort_web": serve.ORT_WEB_VERSION}


# Runs the page's decoder session directly on the content it encoded (state is app.js's).
DECODER_TIMING = """
const reps = arguments[0], done = arguments[arguments.length - 1];
(async () => {
  const content = state.content.browser, style = state.styles[0].browser;
  const C = style.mean.length, times = [];
  for (let i = 0; i < reps + 1; i++) {
    const start = performance.now();
    await state.ort.decoder.run({
      features: content.features,
      style_mean: new ort.Tensor('float32', style.mean, [1, C]),
      style_std: new ort.Tensor('float32', style.std, [1, C]),
      alpha: new ort.Tensor('float32', new Float32Array([0.5 + 0.01 * i]), []),
    });
    if (i > 0) times.push(performance.now() - start);  // the first is a warm-up
  }
  done(times);
})();
"""


def wait(driver, condition: str, timeout: float = 600):
    deadline = time.monotonic() + timeout
    while not driver.execute_script(f"return Boolean({condition});"):
        error = driver.execute_script("return document.getElementById('error').textContent")
        if error or time.monotonic() > deadline:
            raise RuntimeError(error or f"timed out waiting for {condition}")
        time.sleep(0.05)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512, help="server mode, square side")
    parser.add_argument("--browser-size", type=int, default=256)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    params = adain_jax.init_params(jax.random.key(0))
    server = server_mode(params, args.size, args.reps)
    print(f"server mode at {args.size}^2: alpha change through the app "
          f"{server['app_alpha_change']:.0f} ms; bare apply {server['apply']:.0f} ms, "
          f"apply with the style cached {server['apply_style_cached']:.0f} ms", flush=True)
    browser = None
    if not args.no_browser and shutil.which(CHROMIUM):
        browser = browser_mode(params, args.browser_size, args.reps)
        if browser:
            print(f"in-browser at {args.browser_size}^2: decoder.onnx {browser['decoder_ms']:.0f}"
                  f" ms; alpha change in the page {browser['page_alpha_change_ms']:.0f} ms",
                  flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": bench.machine(), "reps": args.reps,
                                               "server": server, "browser": browser},
                                              indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
