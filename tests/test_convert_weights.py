"""convert_weights.py against the PyTorch port's and torchvision's own module layouts.

The .pth files are written here by torch.save from nn.Sequentials built in
tests/torch_reference.py (counted by hand from the port's net.py and torchvision's cfg
'E', not from adain_jax) and from the torchvision-layout DenseNet-121 of
tests/densenet_reference.py, so a wrong name map or transpose shows up as a mismatch.
Converted tensors are copies: compared for exact equality.
"""
import hashlib
import io
import os
import pickletools
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import convert_weights
from adain_jax import architectures, load_params
from adain_jax.weights import WeightsError, read_metadata
from tests.densenet_reference import encoder_tensors, randomized_densenet
from tests.torch_reference import (PORT_DECODER_CONVS, PORT_VGG_CONVS, TORCHVISION_CONVS,
                                   make_port_decoder, make_port_vgg,
                                   make_torchvision_vgg19_features, randomize_)

REPO = Path(__file__).resolve().parents[1]
# ImageNet statistics as torchvision documents them, restated here on purpose.
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory):
    """The port's vgg (all 53 modules) and decoder, and a torchvision vgg19 state dict."""
    root = tmp_path_factory.mktemp("pth")
    vgg = randomize_(make_port_vgg(), seed=1)
    assert len(vgg) == 53
    decoder = randomize_(make_port_decoder(), seed=2)
    features = randomize_(make_torchvision_vgg19_features(), seed=3)
    tv_state = {f"features.{k}": v for k, v in features.state_dict().items()}
    # torchvision's file also holds the classifier; the converter must ignore it
    tv_state.update({"classifier.0.weight": torch.randn(8, 16), "classifier.0.bias": torch.randn(8),
                     "classifier.6.weight": torch.randn(10, 8), "classifier.6.bias": torch.randn(10)})
    files = {"vgg": root / "vgg_normalised.pth", "decoder": root / "decoder.pth",
             "torchvision": root / "vgg19.pth"}
    torch.save(vgg.state_dict(), files["vgg"])
    torch.save(decoder.state_dict(), files["decoder"])
    torch.save(tv_state, files["torchvision"])
    states = {"vgg": vgg.state_dict(), "decoder": decoder.state_dict(), "torchvision": tv_state}
    return files, states


def assert_convs_equal(convs, state, index, prefix=""):
    """Every conv equals the torch tensor moved (O, I, kh, kw) -> (kh, kw, I, O), exactly."""
    assert set(convs) == set(index)
    for name, i in index.items():
        weight = state[f"{prefix}{i}.weight"].numpy()
        np.testing.assert_array_equal(convs[name]["kernel"], weight.transpose(2, 3, 1, 0),
                                      err_msg=name)
        np.testing.assert_array_equal(convs[name]["bias"], state[f"{prefix}{i}.bias"].numpy(),
                                      err_msg=name)


def tensor_names(path):
    with safe_open(str(path), framework="numpy") as f:
        return set(f.keys())


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_main(argv, capsys):
    """convert_weights.main in-process; returns (exit status, stderr lines)."""
    try:
        code = convert_weights.main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse errors
        code = exit_.code
    return code, capsys.readouterr().err.strip().splitlines()


def test_port_files_convert_exactly(torch_files, tmp_path, capsys):
    files, states = torch_files
    out = tmp_path / "adain.safetensors"
    code, err = run_main(["--vgg", files["vgg"], "--decoder", files["decoder"], "--out", out,
                          "--quiet"], capsys)
    assert code == 0, err
    params = load_params(out)
    # layers of the 53-module vgg after relu4_1 (conv4_2 .. conv5_4) are dropped
    assert_convs_equal(params["encoder"], states["vgg"], PORT_VGG_CONVS)
    assert_convs_equal(params["decoder"], states["decoder"], PORT_DECODER_CONVS)
    assert len(tensor_names(out)) == 2 * (len(PORT_VGG_CONVS) + len(PORT_DECODER_CONVS))
    meta = read_metadata(out)
    assert meta["encoder_sha256"] == sha256(files["vgg"])
    assert meta["decoder_sha256"] == sha256(files["decoder"])
    assert "pytorch-AdaIN" in meta["source"]


def test_subprocess_converts_and_logs(torch_files, tmp_path):
    files, states = torch_files
    out = tmp_path / "sub" / "adain.safetensors"
    proc = subprocess.run(
        [sys.executable, "convert_weights.py", "--vgg", str(files["vgg"]),
         "--decoder", str(files["decoder"]), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr
    n = 2 * (len(PORT_VGG_CONVS) + len(PORT_DECODER_CONVS))
    size_mb = out.stat().st_size / 1e6
    assert f"wrote {out} ({n} tensors, {size_mb:.1f} MB)" in proc.stderr
    params = load_params(out)
    assert_convs_equal(params["decoder"], states["decoder"], PORT_DECODER_CONVS)


def test_torchvision_with_port_decoder(torch_files, tmp_path, capsys):
    files, states = torch_files
    out = tmp_path / "tv.safetensors"
    code, err = run_main(["--torchvision", files["torchvision"], "--decoder", files["decoder"],
                          "--out", out, "--quiet"], capsys)
    assert code == 0, err
    params = load_params(out)
    encoder = dict(params["encoder"])
    conv0 = encoder.pop("conv0")
    assert_convs_equal(encoder, states["torchvision"], TORCHVISION_CONVS, prefix="features.")
    assert_convs_equal(params["decoder"], states["decoder"], PORT_DECODER_CONVS)
    # conv0 (1x1) on an image in [0, 1] must be torchvision's (x - mean) / std, float64, 1e-6
    x = np.random.default_rng(0).random((5, 7, 3))
    y = x @ conv0["kernel"][0, 0].astype(np.float64) + conv0["bias"].astype(np.float64)
    np.testing.assert_allclose(y, (x - MEAN) / STD, rtol=0, atol=1e-6)
    assert read_metadata(out)["encoder_sha256"] == sha256(files["torchvision"])


def test_encoder_only_has_no_decoder(torch_files, tmp_path, capsys):
    files, states = torch_files
    out = tmp_path / "enc.safetensors"
    code, err = run_main(["--vgg", files["vgg"], "--encoder-only", "--out", out, "--quiet"],
                         capsys)
    assert code == 0, err
    assert not any(name.startswith("decoder") for name in tensor_names(out))
    params = load_params(out, require_decoder=False)
    assert "decoder" not in params
    assert_convs_equal(params["encoder"], states["vgg"], PORT_VGG_CONVS)
    with pytest.raises(WeightsError):
        load_params(out)


def assert_one_line_error(code, err, *needles):
    assert code == 1
    assert len(err) == 1, err
    assert err[0].startswith("convert_weights.py: error:"), err
    for needle in needles:
        assert str(needle) in err[0], err


@pytest.mark.parametrize("swap", ["decoder as --vgg", "vgg as --decoder", "port as --torchvision"])
def test_wrong_file_is_named(torch_files, tmp_path, capsys, swap):
    files, _ = torch_files
    argv, culprit = {
        "decoder as --vgg": (["--vgg", files["decoder"], "--decoder", files["decoder"]],
                             files["decoder"]),
        "vgg as --decoder": (["--vgg", files["vgg"], "--decoder", files["vgg"]], files["vgg"]),
        "port as --torchvision": (["--torchvision", files["vgg"], "--encoder-only"],
                                  files["vgg"]),
    }[swap]
    out = tmp_path / "x.safetensors"
    code, err = run_main(argv + ["--out", out, "--quiet"], capsys)
    assert_one_line_error(code, err, culprit)
    assert not out.exists()


def test_missing_file(tmp_path, capsys):
    missing = tmp_path / "nope" / "vgg_normalised.pth"
    code, err = run_main(["--vgg", missing, "--encoder-only", "--out", tmp_path / "x"], capsys)
    assert_one_line_error(code, err, missing, "no such file")


@pytest.mark.parametrize("argv", [
    ["--vgg", "a.pth", "--torchvision", "b.pth", "--encoder-only"],
    ["--vgg", "a.pth", "--decoder", "d.pth", "--encoder-only"],
    ["--vgg", "a.pth"],
    [],
    ["--torchvision-densenet", "a.pth", "--vgg", "b.pth"],
    ["--torchvision-densenet", "--torchvision", "b.pth"],
    ["--torchvision-densenet", "a.pth", "--download"],
])
def test_bad_flags_are_one_line(argv, capsys):
    code, err = run_main(argv, capsys)
    assert_one_line_error(code, err)


class _Payload:
    """Unpickling this calls open(marker, "w"): code a weights file must not run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.parametrize("zipfile", [True, False], ids=["zip", "legacy"])
def test_malicious_pickle_is_refused(tmp_path, capsys, zipfile):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"0.weight": _Payload(marker)}, path, _use_new_zipfile_serialization=zipfile)
    code, err = run_main(["--vgg", path, "--encoder-only", "--out", tmp_path / "x"], capsys)
    assert not marker.exists(), "the pickle's code ran"
    assert_one_line_error(code, err, path)
    # the payload is live, so the check above can fail: the file calls open(marker) when
    # unpickled (read statically here; nothing in the tests unpickles it)
    names = pickle_names(path)
    assert names & {"io open", "builtins open"} and str(marker) in names, names


def pickle_names(path) -> set[str]:
    """GLOBAL names and strings in a torch.save file's pickles, read without unpickling."""
    data = Path(path).read_bytes()
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    stream, names = io.BytesIO(data), set()
    while stream.tell() < len(data):  # the legacy format is several pickles, then raw data
        try:
            for opcode, arg, _ in pickletools.genops(stream):
                if opcode.name == "GLOBAL" or isinstance(arg, str):
                    names.add(arg)
        except ValueError:  # past the pickles
            break
    return names


def test_subprocess_error_has_no_traceback(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"0.weight": _Payload(marker)}, path)
    proc = subprocess.run(
        [sys.executable, "convert_weights.py", "--vgg", str(path), "--decoder", str(path),
         "--out", str(tmp_path / "x.safetensors")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert str(path) in proc.stderr
    assert not marker.exists()


# --- DenseNet-121 --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def densenet_file(tmp_path_factory):
    """A random torchvision DenseNet-121 (classifier and dense block 4 included), saved
    under the published file's name although its hash is not the published one."""
    state = randomized_densenet(seed=0).state_dict()  # the one test_densenet uses
    path = tmp_path_factory.mktemp("densenet") / "densenet121-a639ec97.pth"
    torch.save(state, path)
    return path, state


def flat_params(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from flat_params(value, prefix + (key,))
        else:
            yield prefix + (key,), value


def test_torchvision_densenet_converts_exactly(densenet_file, tmp_path, monkeypatch, capsys):
    path, state = densenet_file
    monkeypatch.setenv("ADAIN_JAX_CACHE", str(tmp_path / "cache"))
    code, err = run_main(["--torchvision-densenet", path, "--quiet"], capsys)
    assert code == 0, err
    out = tmp_path / "cache" / "densenet121_encoder.safetensors"  # the default --out
    params = load_params(out, require_decoder=False)
    assert set(params) == {"encoder"}
    with pytest.raises(WeightsError, match="encoder only"):
        load_params(out)
    assert architectures.detect(params) is architectures.DENSENET121
    # every tensor up to dense block 3, nothing else: kernels transposed, BN tensors exact
    expected = encoder_tensors(state)
    got = dict(flat_params(params["encoder"]))
    assert set(got) == set(expected)
    # conv0 + norm0 (4), 42 dense layers of 2 convs + 2 norms, 2 transitions of conv + norm
    assert len(got) == 1 + 4 + 42 * (2 + 2 * 4) + 2 * (1 + 4) == 435
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg="/".join(key))
    meta = read_metadata(out)
    assert meta["encoder"] == "densenet121"
    assert meta["encoder_sha256"] == sha256(path)
    # the published name, but not the published hash: not claimed to be the release
    assert meta["source"] == "torchvision-densenet layout densenet121-a639ec97.pth"


def test_torchvision_densenet_refuses_decoder_and_wrong_files(torch_files, densenet_file,
                                                             tmp_path, capsys):
    files, _ = torch_files
    path, _ = densenet_file
    out = tmp_path / "d.safetensors"
    code, err = run_main(["--torchvision-densenet", path, "--decoder", files["decoder"],
                          "--out", out], capsys)
    assert_one_line_error(code, err, "--decoder", "decoder.pth is the VGG decoder")
    assert not out.exists()
    code, err = run_main(["--torchvision-densenet", files["torchvision"], "--out", out,
                          "--quiet"], capsys)
    assert_one_line_error(code, err, files["torchvision"], "DenseNet-121")
    assert not out.exists()
