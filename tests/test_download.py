"""`convert_weights.py --download` / `--torchvision` against a local HTTP server.

The server serves small .pth files in the port's and torchvision's state-dict layouts
(built in tests/torch_reference.py and tests/densenet_reference.py); the expected-hash
table is patched to their sha256, computed here with hashlib, and the torch-hub files are
served under names carrying their own hash prefix. Requests are counted to prove the
cache is reused.
"""
import hashlib
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from tqdm import tqdm

import convert_weights
from adain_jax import download, load_params
from adain_jax.weights import read_metadata
from tests.densenet_reference import encoder_tensors, legacy_keys, randomized_densenet
from tests.torch_reference import (PORT_DECODER_CONVS, PORT_VGG_CONVS, TORCHVISION_CONVS,
                                   make_port_decoder, make_port_vgg,
                                   make_torchvision_vgg19_features, port_vgg_to_relu4_1,
                                   randomize_)

PORT_URLS = ("/port/vgg_normalised.pth", "/port/decoder.pth")
CONVERT_HINT = ("python convert_weights.py --vgg PATH/vgg_normalised.pth "
                "--decoder PATH/decoder.pth")


def pth_bytes(state, path):
    torch.save(state, path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """{url path: bytes} for the port's two files and a hash-named torchvision file."""
    root = tmp_path_factory.mktemp("served")
    # vgg cut after relu4_1 (31 modules) keeps the file small; its keys are the port's
    vgg = port_vgg_to_relu4_1(randomize_(make_port_vgg(), seed=4)).state_dict()
    decoder = randomize_(make_port_decoder(), seed=5).state_dict()
    features = randomize_(make_torchvision_vgg19_features(), seed=6)[:21].state_dict()
    tv = {f"features.{k}": v for k, v in features.items()}
    tv_bytes = pth_bytes(tv, root / "tv.pth")
    tv_name = f"vgg19-{hashlib.sha256(tv_bytes).hexdigest()[:8]}.pth"
    # DenseNet-121 up to dense block 3 (the rest is ignored and only makes the file big),
    # under the old module names that torchvision's published file uses
    densenet = {k: v for k, v in randomized_densenet(seed=0).state_dict().items()
                if k.split(".")[1] not in ("transition3", "denseblock4", "norm5")
                and not k.startswith("classifier.")}
    legacy = legacy_keys(densenet)
    assert "features.denseblock3.denselayer24.conv.2.weight" in legacy
    dn_bytes = pth_bytes(legacy, root / "dn.pth")
    dn_name = f"densenet121-{hashlib.sha256(dn_bytes).hexdigest()[:8]}.pth"
    files = {PORT_URLS[0]: pth_bytes(vgg, root / "v.pth"),
             PORT_URLS[1]: pth_bytes(decoder, root / "d.pth"),
             f"/tv/{tv_name}": tv_bytes,
             "/tv/vgg19-deadbeef.pth": tv_bytes,  # a name whose hash prefix is wrong
             f"/tv/{dn_name}": dn_bytes,
             "/tv/densenet121-deadbeef.pth": dn_bytes}
    return files, {"vgg": vgg, "decoder": decoder, "torchvision": tv, "tv_name": tv_name,
                   "densenet": densenet, "dn_name": dn_name}


@pytest.fixture
def server(served):
    """A local server; `.hits` counts GET requests per path. /slow/ never answers in time."""
    files, _ = served
    hits = {}
    release = threading.Event()  # set at teardown, so /slow/ never outlives its test

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            hits[self.path] = hits.get(self.path, 0) + 1
            if self.path.startswith("/slow/"):
                release.wait(10)
                return  # the client gave up long ago; answer nothing
            body = files.get(self.path.replace("/short/", "/port/"))
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            # /short/ promises more bytes than it sends, then closes: a cut download
            extra = 100 if self.path.startswith("/short/") else 0
            self.send_header("Content-Length", str(len(body) + extra))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    # a client that hung up is expected here; a traceback would land in a later test's stderr
    httpd.handle_error = lambda request, client_address: None
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.hits = hits
    yield httpd
    release.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def env(served, tmp_path, monkeypatch):
    """Cache in tmp_path, hash table patched to the served files, no mirror env vars."""
    files, _ = served
    cache = tmp_path / "cache"
    monkeypatch.setenv("ADAIN_JAX_CACHE", str(cache))
    monkeypatch.delenv("ADAIN_JAX_BASE_URL", raising=False)
    monkeypatch.delenv("ADAIN_JAX_TORCHVISION_BASE_URL", raising=False)
    monkeypatch.setattr(download, "PORT_SHA256", {
        Path(url).name: hashlib.sha256(files[url]).hexdigest() for url in PORT_URLS})
    return cache


def dead_url():
    """A URL on a port where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def run_main(argv, capsys):
    try:
        code = convert_weights.main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def one_line_error(code, err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1, err
    assert len(lines) == 1, err
    assert lines[0].startswith("convert_weights.py: error:")
    return lines[0]


def assert_convs_equal(convs, state, index, prefix=""):
    for name, i in index.items():
        np.testing.assert_array_equal(
            convs[name]["kernel"], state[f"{prefix}{i}.weight"].numpy().transpose(2, 3, 1, 0))
        np.testing.assert_array_equal(convs[name]["bias"], state[f"{prefix}{i}.bias"].numpy())


def leftovers(cache):
    return [p.name for p in cache.iterdir() if p.name.startswith(".")] if cache.exists() else []


def test_download_end_to_end_then_cached(served, server, env, monkeypatch, capsys):
    files, states = served
    monkeypatch.setenv("ADAIN_JAX_BASE_URL", server.url + "/port")
    code, err = run_main(["--download"], capsys)
    assert code == 0, err
    for url in PORT_URLS:  # a tqdm bar on stderr whose total is the Content-Length
        total = tqdm.format_sizeof(len(files[url]), divisor=1024)
        assert f"{Path(url).name}:" in err and f"/{total} [" in err, err
    weights = download.default_weights_path()
    assert weights == env / "adain.safetensors"
    params = load_params(weights)
    assert_convs_equal(params["encoder"], states["vgg"], PORT_VGG_CONVS)
    assert_convs_equal(params["decoder"], states["decoder"], PORT_DECODER_CONVS)
    assert server.hits == {url: 1 for url in PORT_URLS}
    assert sorted(p.name for p in env.iterdir()) == [
        "adain.safetensors", "decoder.pth", "vgg_normalised.pth"]
    umask = os.umask(0)
    os.umask(umask)
    for path in env.iterdir():  # like any other output: not mkstemp's or safetensors' 0600
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path

    weights.unlink()
    code, err = run_main(["--download", "--quiet"], capsys)
    assert code == 0, err
    assert server.hits == {url: 1 for url in PORT_URLS}  # nothing fetched again
    load_params(weights)


def test_base_url_flag_beats_env_and_bad_cache_is_refetched(served, server, env, monkeypatch,
                                                           capsys):
    monkeypatch.setenv("ADAIN_JAX_BASE_URL", dead_url())
    env.mkdir(parents=True)
    (env / "decoder.pth").write_bytes(b"truncated")
    out = env / "elsewhere.safetensors"
    code, err = run_main(["--download", "--base-url", server.url + "/port/", "--out", out,
                          "--quiet"], capsys)
    assert code == 0, err
    assert server.hits == {url: 1 for url in PORT_URLS}
    assert (env / "decoder.pth").read_bytes() == served[0][PORT_URLS[1]]
    load_params(out)


def test_checksum_mismatch(served, server, env, monkeypatch, capsys):
    wrong = "0" * 64
    monkeypatch.setitem(download.PORT_SHA256, "decoder.pth", wrong)
    code, err = run_main(["--download", "--base-url", server.url + "/port", "--quiet"], capsys)
    line = one_line_error(code, err)
    actual = hashlib.sha256(served[0][PORT_URLS[1]]).hexdigest()
    assert "decoder.pth" in line and wrong in line and actual in line
    assert not (env / "decoder.pth").exists()
    assert not download.default_weights_path().exists()
    assert leftovers(env) == []


def test_truncated_download(server, env, capsys):
    code, err = run_main(["--download", "--base-url", server.url + "/short", "--quiet"], capsys)
    line = one_line_error(code, err)
    assert "vgg_normalised.pth" in line and "stopped after" in line
    assert not (env / "vgg_normalised.pth").exists()
    assert leftovers(env) == []


@pytest.mark.parametrize("where", ["refused", "404", "timeout"])
def test_offline_message(server, env, capsys, where):
    base = {"refused": dead_url(), "404": server.url + "/missing",
            "timeout": server.url + "/slow"}[where]
    code, err = run_main(["--download", "--base-url", base, "--timeout", "0.5", "--quiet"],
                         capsys)
    line = one_line_error(code, err)
    assert f"{base}/vgg_normalised.pth" in line and f"{base}/decoder.pth" in line
    assert CONVERT_HINT in line
    if where == "404":
        assert "404" in line
    assert leftovers(env) == []


def test_offline_encoder_only_names_one_file(env, capsys):
    base = dead_url()
    code, err = run_main(["--download", "--encoder-only", "--base-url", base], capsys)
    line = one_line_error(code, err)
    assert f"{base}/vgg_normalised.pth" in line and "decoder.pth" not in line
    assert "python convert_weights.py --vgg PATH/vgg_normalised.pth --encoder-only" in line


def test_torchvision_download_checks_hash_prefix(served, server, env, monkeypatch, capsys):
    files, states = served
    monkeypatch.setattr(download, "TORCHVISION_FILE", states["tv_name"])
    monkeypatch.setenv("ADAIN_JAX_TORCHVISION_BASE_URL", server.url + "/tv")
    out = env / "enc.safetensors"
    code, err = run_main(["--torchvision", "--encoder-only", "--out", out, "--quiet"], capsys)
    assert code == 0, err
    encoder = load_params(out, require_decoder=False)["encoder"]
    assert_convs_equal(encoder, states["torchvision"], TORCHVISION_CONVS, prefix="features.")
    assert server.hits == {f"/tv/{states['tv_name']}": 1}

    # same bytes under a name whose hash prefix does not match: refused, nothing kept
    monkeypatch.setattr(download, "TORCHVISION_FILE", "vgg19-deadbeef.pth")
    code, err = run_main(["--torchvision", "--encoder-only", "--out", env / "bad.safetensors",
                          "--torchvision-base-url", server.url + "/tv", "--quiet"], capsys)
    line = one_line_error(code, err)
    actual = hashlib.sha256(files["/tv/vgg19-deadbeef.pth"]).hexdigest()
    assert "vgg19-deadbeef.pth" in line and "deadbeef" in line and actual in line
    assert not (env / "vgg19-deadbeef.pth").exists()
    assert leftovers(env) == []


def test_torchvision_offline_message(env, capsys, monkeypatch):
    base = dead_url()
    monkeypatch.setenv("ADAIN_JAX_TORCHVISION_BASE_URL", base)
    code, err = run_main(["--torchvision", "--encoder-only"], capsys)
    line = one_line_error(code, err)
    assert f"{base}/{download.TORCHVISION_FILE}" in line
    assert f"python convert_weights.py --torchvision PATH/{download.TORCHVISION_FILE}" in line


def test_file_url_mirror(served, env, tmp_path, capsys):
    files, states = served
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for url in PORT_URLS:
        (mirror / Path(url).name).write_bytes(files[url])
    code, err = run_main(["--download", "--base-url", mirror.as_uri(), "--quiet"], capsys)
    assert code == 0, err
    assert_convs_equal(load_params(download.default_weights_path())["decoder"],
                       states["decoder"], PORT_DECODER_CONVS)


def test_base_url_that_is_not_a_url(env, monkeypatch, capsys):
    monkeypatch.setenv("ADAIN_JAX_BASE_URL", "localhost:8000")
    code, err = run_main(["--download"], capsys)
    line = one_line_error(code, err)
    assert "'localhost:8000'" in line and "ADAIN_JAX_BASE_URL" in line


def test_torchvision_densenet_download_checks_hash_prefix(served, server, env, monkeypatch,
                                                          capsys):
    files, states = served
    name = states["dn_name"]
    monkeypatch.setattr(download, "TORCHVISION_DENSENET_FILE", name)
    monkeypatch.setenv("ADAIN_JAX_TORCHVISION_BASE_URL", server.url + "/tv")
    code, err = run_main(["--torchvision-densenet", "--quiet"], capsys)
    assert code == 0, err
    out = env / "densenet121_encoder.safetensors"
    params = load_params(out, require_decoder=False)
    assert set(params) == {"encoder"}
    expected = encoder_tensors(states["densenet"])  # from the same tensors' current names
    assert len(expected) == 435
    for path, value in expected.items():
        leaf = params["encoder"]
        for part in path:
            leaf = leaf[part]
        np.testing.assert_array_equal(leaf, value, err_msg="/".join(path))
    # the published name with a matching hash prefix is recorded as the release
    assert read_metadata(out)["source"] == f"torchvision {Path(name).stem}"
    assert server.hits == {f"/tv/{name}": 1}
    assert sorted(p.name for p in env.iterdir()) == [name, out.name]

    out.unlink()
    code, err = run_main(["--torchvision-densenet", "--quiet"], capsys)
    assert code == 0, err
    assert server.hits == {f"/tv/{name}": 1}  # the cached file is reused
    assert out.is_file()

    # same bytes under a name whose hash prefix does not match: refused, nothing kept
    monkeypatch.setattr(download, "TORCHVISION_DENSENET_FILE", "densenet121-deadbeef.pth")
    code, err = run_main(["--torchvision-densenet", "--out", env / "bad.safetensors",
                          "--quiet"], capsys)
    line = one_line_error(code, err)
    actual = hashlib.sha256(files["/tv/densenet121-deadbeef.pth"]).hexdigest()
    assert "densenet121-deadbeef.pth" in line and "deadbeef..." in line and actual in line
    assert not (env / "densenet121-deadbeef.pth").exists()
    assert not (env / "bad.safetensors").exists()
    assert leftovers(env) == []


def test_torchvision_densenet_offline_message(env, capsys, monkeypatch):
    base = dead_url()
    code, err = run_main(["--torchvision-densenet", "--torchvision-base-url", base], capsys)
    line = one_line_error(code, err)
    assert f"{base}/densenet121-a639ec97.pth" in line
    assert "python convert_weights.py --torchvision-densenet PATH/densenet121-a639ec97.pth" in line
