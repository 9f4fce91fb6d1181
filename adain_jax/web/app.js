// adain-jax web app: uploads, controls and the two ways of running the network.
//
// Server mode: each image is uploaded once (POST /api/content, /api/style, /api/mask,
// answered with its id); the server keeps its encoding, so alpha, weights, the mask and
// colour preservation only send ids to POST /api/stylize, which answers a PNG.
// In-browser mode: onnxruntime-web runs encoder.onnx once per image and decoder.onnx on
// every change; Eq. 15 (the weighted average of the styles' mean and std) is done here.
"use strict";

const $ = (id) => document.getElementById(id);

const state = {
  config: null,
  mode: "server",
  content: null,  // {file, url, id, browser}
  styles: [],     // [{file, url, id, weight, browser}]
  mask: null,     // {file, id}
  busy: false,
  pending: false,
  renders: 0,
  resultUrl: null,
  ort: null,      // {encoder, decoder} sessions once loaded
};

// ---- Status, errors, result -------------------------------------------------------

function setStatus(text) {
  $("status-text").textContent = text;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function setBusy(busy) {
  state.busy = busy;
  document.body.classList.toggle("busy", busy);
  document.body.dataset.busy = busy ? "1" : "0";
}

function showResult(blob, settings) {
  if (state.resultUrl) URL.revokeObjectURL(state.resultUrl);
  state.resultUrl = URL.createObjectURL(blob);
  const img = $("result");
  img.src = state.resultUrl;
  img.hidden = false;
  Object.assign(img.dataset, settings);
  const link = $("download");
  link.href = state.resultUrl;
  link.hidden = false;
  state.renders += 1;
  document.body.dataset.renders = String(state.renders);
}

// ---- Settings -----------------------------------------------------------------------

function settings() {
  return {
    mode: state.mode,
    alpha: Number($("alpha").value).toFixed(2),
    weights: state.styles.map((s) => s.weight).join(","),
    mask: state.mode === "server" && state.mask ? "1" : "0",
    preserve: state.mode === "server" && $("preserve-color").checked ? "1" : "0",
  };
}

function ready() {
  return state.content && state.styles.length > 0;
}

// Renders run one at a time; changes made meanwhile are folded into one more render.
function requestRender() {
  if (!ready()) return;
  state.pending = true;
  if (!state.busy) pump();
}

async function pump() {
  setBusy(true);
  while (state.pending) {
    state.pending = false;
    const started = performance.now();
    try {
      const wanted = settings();
      const blob = state.mode === "browser" ? await renderInBrowser(wanted)
                                            : await renderOnServer(wanted);
      showError("");
      showResult(blob, wanted);
      setStatus(`Done in ${((performance.now() - started) / 1000).toFixed(2)} s.`);
    } catch (err) {
      showError(err.message || String(err));
      setStatus("Stopped.");
    }
  }
  setBusy(false);
}

// ---- Server mode --------------------------------------------------------------------

function upload(kind, item, label) {
  const limit = state.config.max_upload_bytes;
  if (item.file.size > limit) {
    const mb = (limit / 2 ** 20).toFixed(0);
    return Promise.reject(new Error(`${item.file.name}: over the upload limit of ${mb} MB`));
  }
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/api/${kind}`);
    xhr.responseType = "json";
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) {
        setStatus(`Uploading ${label}… ${Math.round((100 * e.loaded) / e.total)}%`);
      }
    };
    xhr.upload.onload = () => setStatus(kind === "mask" ? `Reading the mask…`
                                                        : `Encoding ${label}…`);
    xhr.onload = () => {
      const body = xhr.response || {};
      if (xhr.status === 200) {
        item.id = body.id;
        resolve(body);
      } else {
        reject(new Error(body.error || `${label}: HTTP ${xhr.status}`));
      }
    };
    xhr.onerror = () => reject(new Error(`${label}: the server did not answer`));
    setStatus(`Uploading ${label}…`);
    const form = new FormData();
    form.append("file", item.file);
    xhr.send(form);
  });
}

async function uploadMissing() {
  if (!state.content.id) await upload("content", state.content, "the content");
  for (const [i, style] of state.styles.entries()) {
    if (!style.id) await upload("style", style, `style ${i + 1}`);
  }
  if (state.mask && !state.mask.id) await upload("mask", state.mask, "the mask");
}

async function renderOnServer(wanted) {
  for (let attempt = 0; ; attempt++) {
    await uploadMissing();
    const form = new FormData();
    form.append("content", state.content.id);
    for (const style of state.styles) {
      form.append("style", style.id);
      form.append("weight", String(style.weight));
    }
    if (wanted.mask === "1") form.append("mask", state.mask.id);
    form.append("alpha", wanted.alpha);
    form.append("preserve_color", wanted.preserve);
    setStatus("Stylising…");
    const response = await fetch("/api/stylize", {method: "POST", body: form});
    if (response.ok) return await response.blob();
    const body = await response.json().catch(() => ({}));
    if (response.status === 404 && attempt === 0) {
      // another tab pushed our images out of the server's caches: upload them again
      for (const item of [state.content, state.mask, ...state.styles]) if (item) item.id = null;
      continue;
    }
    throw new Error(body.error || `HTTP ${response.status}`);
  }
}

// ---- In-browser mode (onnxruntime-web) -----------------------------------------------

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = src;
    script.onload = resolve;
    script.onerror = () => reject(new Error(`cannot load ${src}`));
    document.head.appendChild(script);
  });
}

async function loadOrt() {
  if (state.ort) return state.ort;
  setStatus("Loading onnxruntime-web…");
  if (!window.ort) await loadScript("/vendor/ort/ort.wasm.min.js");
  // Files from this server only; one thread needs no cross-origin isolation.
  ort.env.wasm.wasmPaths = "/vendor/ort/";
  ort.env.wasm.numThreads = 1;
  ort.env.logLevel = "error";  // its warnings (e.g. an unused initializer) are not the user's
  setStatus("Loading the ONNX models…");
  const options = {executionProviders: ["wasm"], logSeverityLevel: 3};
  state.ort = {
    encoder: await ort.InferenceSession.create("/models/encoder.onnx", options),
    decoder: await ort.InferenceSession.create("/models/decoder.onnx", options),
  };
  return state.ort;
}

// The same size rule as the server: longer side at most max_side, never enlarged.
function downscaled(height, width) {
  const scale = state.config.max_side / Math.max(height, width);
  if (scale >= 1) return [height, width];
  return [Math.max(1, Math.round(height * scale)), Math.max(1, Math.round(width * scale))];
}

async function imageTensor(file) {
  const bitmap = await createImageBitmap(file, {imageOrientation: "from-image"});
  const [height, width] = downscaled(bitmap.height, bitmap.width);
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d", {willReadFrequently: true});
  context.imageSmoothingQuality = "high";
  context.drawImage(bitmap, 0, 0, width, height);
  bitmap.close();
  const rgba = context.getImageData(0, 0, width, height).data;
  const plane = height * width;
  const chw = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) {
    chw[i] = rgba[4 * i] / 255;
    chw[plane + i] = rgba[4 * i + 1] / 255;
    chw[2 * plane + i] = rgba[4 * i + 2] / 255;
  }
  return {tensor: new ort.Tensor("float32", chw, [1, 3, height, width]), height, width};
}

async function encodeInBrowser(item, label) {
  if (item.browser) return item.browser;
  const {encoder} = await loadOrt();
  setStatus(`Encoding ${label} in the browser…`);
  const image = await imageTensor(item.file);
  const out = await encoder.run({image: image.tensor});
  item.browser = {features: out.features, mean: out.mean.data, std: out.std.data,
                  height: image.height, width: image.width};
  return item.browser;
}

// Eq. 15: AdaIN with the weighted average of the styles' statistics.
function mixedStats(styles) {
  const total = styles.reduce((sum, s) => sum + s.weight, 0);
  if (!(total > 0)) throw new Error("give at least one style a weight above 0");
  const channels = styles[0].browser.mean.length;
  const mean = new Float32Array(channels);
  const std = new Float32Array(channels);
  for (const s of styles) {
    const w = s.weight / total;
    for (let c = 0; c < channels; c++) {
      mean[c] += w * s.browser.mean[c];
      std[c] += w * s.browser.std[c];
    }
  }
  return {mean, std};
}

async function renderInBrowser(wanted) {
  const content = await encodeInBrowser(state.content, "the content");
  for (const [i, style] of state.styles.entries()) {
    await encodeInBrowser(style, `style ${i + 1}`);
  }
  const {decoder} = state.ort;
  const {mean, std} = mixedStats(state.styles);
  setStatus("Stylising in the browser…");
  const out = await decoder.run({
    features: content.features,
    style_mean: new ort.Tensor("float32", mean, [1, mean.length]),
    style_std: new ort.Tensor("float32", std, [1, std.length]),
    alpha: new ort.Tensor("float32", new Float32Array([Number(wanted.alpha)]), []),
  });
  return pngFromChw(out.image, content.height, content.width);
}

// The decoder's (1, 3, 8h, 8w) output, top-left height x width, as a PNG blob; values
// are rounded to 8 bits as the server does (images.to_uint8).
function pngFromChw(tensor, height, width) {
  const [, , rows, cols] = tensor.dims;
  const data = tensor.data;
  const pixels = new ImageData(width, height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = 4 * (y * width + x);
      for (let c = 0; c < 3; c++) {
        const v = Math.floor(data[(c * rows + y) * cols + x] * 255 + 0.5);
        pixels.data[i + c] = Math.min(255, Math.max(0, v));
      }
      pixels.data[i + 3] = 255;
    }
  }
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  canvas.getContext("2d").putImageData(pixels, 0, 0);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

// ---- Inputs -------------------------------------------------------------------------

function setContent(file) {
  if (state.content) URL.revokeObjectURL(state.content.url);
  state.content = {file, url: URL.createObjectURL(file), id: null, browser: null};
  const preview = $("content-preview");
  preview.src = state.content.url;
  preview.hidden = false;
  requestRender();
}

function addStyles(files) {
  for (const file of files) {
    if (state.styles.length >= state.config.max_styles) {
      showError(`at most ${state.config.max_styles} styles`);
      break;
    }
    state.styles.push({file, url: URL.createObjectURL(file), id: null, weight: 1,
                       browser: null});
  }
  drawStyles();
  requestRender();
}

function drawStyles() {
  const list = $("styles");
  list.replaceChildren();
  state.styles.forEach((style, i) => {
    const item = document.createElement("li");
    const thumb = document.createElement("img");
    thumb.src = style.url;
    thumb.alt = "";
    const info = document.createElement("div");
    const name = document.createElement("div");
    name.className = "name";
    name.textContent = style.file.name;
    const weight = document.createElement("div");
    weight.className = "weight";
    const slider = document.createElement("input");
    Object.assign(slider, {type: "range", min: 0, max: 1, step: 0.01, value: style.weight});
    const number = document.createElement("input");
    Object.assign(number, {type: "number", min: 0, step: 0.01, value: style.weight});
    number.className = "style-weight";
    number.setAttribute("aria-label", `weight of style ${i + 1}`);
    slider.setAttribute("aria-label", `weight of style ${i + 1}`);
    const set = (value, source) => {
      const w = Number(value);
      if (!(w >= 0) || !Number.isFinite(w)) return;
      style.weight = w;
      if (source !== slider) slider.value = Math.min(1, w);
      if (source !== number) number.value = w;
      requestRender();
    };
    slider.addEventListener("input", () => set(slider.value, slider));
    number.addEventListener("input", () => set(number.value, number));
    weight.append(slider, number);
    info.append(name, weight);
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "×";
    remove.setAttribute("aria-label", `remove style ${i + 1}`);
    remove.addEventListener("click", () => {
      URL.revokeObjectURL(style.url);
      state.styles.splice(i, 1);
      drawStyles();
      requestRender();
    });
    item.append(thumb, info, remove);
    list.append(item);
  });
}

function setMask(file) {
  state.mask = file ? {file, id: null} : null;
  $("mask-clear").hidden = !file;
  if (!file) $("mask-input").value = "";
  requestRender();
}

function dropZone(id, onFiles) {
  const zone = $(id);
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const files = [...e.dataTransfer.files].filter((f) => f.type.startsWith("image/"));
    if (files.length) onFiles(files);
  });
}

function setMode(mode) {
  state.mode = mode;
  document.body.classList.toggle("browser", mode === "browser");
  document.body.classList.toggle("server", mode === "server");
  requestRender();
}

async function start() {
  setBusy(false);
  document.body.dataset.renders = "0";
  const response = await fetch("/api/config");
  state.config = await response.json();
  $("mode-browser").disabled = !state.config.in_browser;
  $("mode-note").textContent = state.config.in_browser ? "" : state.config.in_browser_problem;

  $("content-input").addEventListener("change", (e) => {
    if (e.target.files.length) setContent(e.target.files[0]);
  });
  $("style-input").addEventListener("change", (e) => {
    addStyles([...e.target.files]);
    e.target.value = "";
  });
  $("mask-input").addEventListener("change", (e) => setMask(e.target.files[0] || null));
  $("mask-clear").addEventListener("click", () => setMask(null));
  dropZone("content-drop", (files) => setContent(files[0]));
  dropZone("style-drop", addStyles);
  dropZone("mask-drop", (files) => setMask(files[0]));

  $("alpha").addEventListener("input", () => {
    $("alpha-value").textContent = Number($("alpha").value).toFixed(2);
    requestRender();
  });
  $("preserve-color").addEventListener("change", requestRender);
  for (const radio of document.querySelectorAll("input[name=mode]")) {
    radio.addEventListener("change", () => setMode(radio.value));
  }
  document.body.dataset.started = "1";
}

start().catch((err) => showError(`cannot start: ${err.message}`));
