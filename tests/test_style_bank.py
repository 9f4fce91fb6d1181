"""Style banks (adain_jax/style_bank.py): building, resuming, updating, loading, the Gaussian.

The reference for the banked statistics is the PyTorch port (tests/torch_reference.py):
its VGG up to relu4_1 on the same prepared style image, then its calc_mean_std (unbiased
variance + 1e-5), compared within 1e-5 relative L2 per style. Names and sha256 are checked
against hashlib on the files themselves.
"""
import hashlib
import json

import numpy as np
import pytest
import torch

import adain_jax
from adain_jax import images, style_bank
from adain_jax.stylize_files import fit_min_side, prepare
from tests import torch_reference as ref
from tests.stylize_helpers import _torch_models, params, random_image, write_image  # noqa: F401

SIZE = 24  # --style-size: small, so each of the few shapes compiles fast


@pytest.fixture(scope="module")
def weights_file(params, tmp_path_factory):
    return adain_jax.save_params(params, tmp_path_factory.mktemp("w") / "w.safetensors")


def make_styles(folder, rng):
    paths = [write_image(folder / "a.png", random_image(rng, 30, 40)),
             write_image(folder / "b.jpg", random_image(rng, 24, 24)),
             write_image(folder / "sub" / "c.png", random_image(rng, 48, 30))]
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return paths


def torch_stats(params, path):
    rgb, _ = prepare(images.load_image(path), SIZE, False)
    rgb = fit_min_side(rgb)
    vgg, _ = _torch_models(params)
    with torch.no_grad():
        mean, std = ref.calc_mean_std(vgg(ref.nchw(rgb[None])))
    return mean.numpy().reshape(-1), std.numpy().reshape(-1)


def assert_same_bank(a, b):
    """Every field equal, arrays bit for bit (not the file's bytes: safetensors writes its
    metadata in hash-map order, which changes from process to process)."""
    for field in ("names", "sha256", "weights_sha256", "encoder", "style_size", "crop",
                  "complete"):
        assert getattr(a, field) == getattr(b, field), field
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.std, b.std)


def build(weights_file, styles, out):
    return style_bank.main(["--styles", str(styles), "--out", str(out), "--weights",
                            str(weights_file), "--style-size", str(SIZE), "-q",
                            "--no-compile-cache"])


def test_cli_builds_a_bank_equal_to_the_port_and_lists_the_bad_file(params, weights_file,
                                                                       tmp_path, capsys):
    paths = make_styles(tmp_path / "styles", np.random.default_rng(0))
    out = tmp_path / "bank.safetensors"
    assert build(weights_file, tmp_path / "styles", out) == 2  # one file could not be read
    err = capsys.readouterr().err
    failed = [line for line in err.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1 and "broken.png" in failed[0], err
    assert "Traceback" not in err

    bank = style_bank.load_bank(out)
    assert bank.names == ("a.png", "b.jpg", "sub/c.png")
    assert bank.sha256 == tuple(hashlib.sha256(p.read_bytes()).hexdigest() for p in paths)
    assert bank.weights_sha256 == hashlib.sha256(weights_file.read_bytes()).hexdigest()
    assert (bank.encoder, bank.style_size, bank.crop, bank.complete) == ("vgg19", SIZE, False,
                                                                          True)
    assert bank.mean.shape == bank.std.shape == (3, 512) and bank.mean.dtype == np.float32
    for i, path in enumerate(paths):
        mean, std = torch_stats(params, path)
        assert ref.rel_l2(bank.mean[i], mean) <= 1e-5
        assert ref.rel_l2(bank.std[i], std) <= 1e-5
    # indexing: rows as StyleStats, by position or name
    row = bank[bank.index("b.jpg")]
    np.testing.assert_array_equal(row.mean, bank.mean[1])
    with pytest.raises(KeyError):
        bank.index("nope.png")


def test_interrupted_build_resumes_to_the_same_file_and_updates_later(
        params, weights_file, tmp_path, monkeypatch):
    styles = tmp_path / "styles"
    paths = make_styles(styles, np.random.default_rng(1))
    (styles / "broken.png").unlink()
    whole = tmp_path / "whole.safetensors"
    assert build(weights_file, styles, whole) == 0

    # Interrupt after two encodings (as Ctrl-C would), saving after every image.
    monkeypatch.setattr(style_bank, "SAVE_EVERY_SECONDS", 0.0)
    encode = adain_jax.transfer.encode_style
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return encode(*args, **kwargs)

    monkeypatch.setattr(adain_jax.transfer, "encode_style", interrupted)
    out = tmp_path / "bank.safetensors"
    sha = hashlib.sha256(weights_file.read_bytes()).hexdigest()
    with pytest.raises(KeyboardInterrupt):
        style_bank.build_bank(params, sha, styles, out, style_size=SIZE)
    with pytest.raises(style_bank.BankError, match="unfinished style bank"):
        style_bank.load_bank(out)
    assert len(style_bank.load_bank(out, allow_incomplete=True)) == 2
    monkeypatch.setattr(adain_jax.transfer, "encode_style", encode)

    result = style_bank.build_bank(params, sha, styles, out, style_size=SIZE)
    assert result.encoded == 1 and not result.failures
    assert_same_bank(style_bank.load_bank(out), style_bank.load_bank(whole))

    # Later: one file changed, one added, one removed: only the changed and new are encoded.
    write_image(paths[0], random_image(np.random.default_rng(9), 30, 40))
    added = write_image(styles / "d.png", random_image(np.random.default_rng(10), 26, 26))
    paths[1].unlink()
    result = style_bank.build_bank(params, sha, styles, out, style_size=SIZE)
    assert result.encoded == 2
    bank = style_bank.load_bank(out)
    assert bank.names == ("a.png", "d.png", "sub/c.png")
    for name, path in (("a.png", paths[0]), ("d.png", added)):
        assert ref.rel_l2(bank[bank.index(name)].mean, torch_stats(params, path)[0]) <= 1e-5


def test_other_settings_and_bad_files_are_refused_in_one_line(weights_file, tmp_path, capsys):
    styles = tmp_path / "styles"
    write_image(styles / "a.png", random_image(np.random.default_rng(2), 24, 24))
    out = tmp_path / "bank.safetensors"
    assert build(weights_file, styles, out) == 0
    rc = style_bank.main(["--styles", str(styles), "--out", str(out), "--weights",
                          str(weights_file), "--style-size", "32", "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "made with other settings" in err and len(err.splitlines()) == 1, err

    with pytest.raises(style_bank.BankError, match="not an adain-jax style bank"):
        style_bank.load_bank(weights_file)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"garbage")
    with pytest.raises(style_bank.BankError, match="not a readable safetensors"):
        style_bank.load_bank(junk)
    with pytest.raises(style_bank.BankError, match="no such style bank"):
        style_bank.load_bank(tmp_path / "missing.safetensors")
    with pytest.raises(SystemExit) as exit_:
        style_bank.main(["--styles", str(tmp_path / "nowhere"), "--out", str(out)])
    assert exit_.value.code == 1 and "not a folder" in capsys.readouterr().err


def test_gaussian_fit_and_samples_match_numpy():
    """fit_gaussian against float64 NumPy; samples' moments against the fit (4 sigma)."""
    import jax

    rng = np.random.default_rng(3)
    n, c = 40, 6
    mean = rng.normal(0.5, 0.2, (n, c)).astype(np.float32)
    std = (0.3 + 0.5 * mean + rng.uniform(0.0, 0.2, (n, c))).astype(np.float32)  # correlated
    bank = style_bank.StyleBank(mean, std, tuple(f"{i}.png" for i in range(n)), ("0",) * n,
                                "w", "vgg19", 0)
    g = style_bank.fit_gaussian(bank)
    x = np.concatenate([mean, std], 1).astype(np.float64)
    np.testing.assert_allclose(g.mean, x.mean(0), rtol=1e-6, atol=1e-7)
    cov = np.asarray(g.scale_tril, np.float64) @ np.asarray(g.scale_tril, np.float64).T
    expected = np.cov(x, rowvar=False, bias=True)
    assert np.abs(cov - expected).max() <= 1e-5 * np.abs(expected).max() + 1e-7

    samples = style_bank.sample_stats(jax.random.key(0), g, 20000)
    drawn = np.concatenate([np.asarray(samples.mean), np.asarray(samples.std)], 1)
    sd = np.sqrt(np.diag(expected))
    assert np.all(np.abs(drawn.mean(0) - x.mean(0)) <= 4 * sd / np.sqrt(20000))
    # the covariance as correlations (the std floor clips no sample here: floor << mean)
    corr = lambda m: m / np.sqrt(np.outer(np.diag(m), np.diag(m)))
    assert np.abs(corr(np.cov(drawn, rowvar=False)) - corr(expected)).max() <= 0.04
    assert float(np.asarray(samples.std).min()) >= g.std_floor
    # the floor holds where the normal would go below it
    wide = g._replace(mean=np.zeros_like(g.mean))
    assert float(np.asarray(style_bank.sample_stats(jax.random.key(1), wide, 100).std).min()) \
        == pytest.approx(g.std_floor)


def test_save_and_load_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    bank = style_bank.StyleBank(rng.random((3, 4), np.float32), rng.random((3, 4), np.float32),
                                ("x.png", "y/z.jpg", "é.png"), ("a", "b", "c"), "w" * 64,
                                "vgg19", 256, crop=True)
    path = style_bank.save_bank(bank, tmp_path / "b.safetensors")
    loaded = style_bank.load_bank(path)
    assert_same_bank(loaded, bank)
    sub = loaded.subset([2, 0])
    assert sub.names == ("é.png", "x.png") and json.loads(json.dumps(sub.sha256)) == ["c", "a"]
