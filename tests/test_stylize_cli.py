"""stylize.py and adain_jax.stylize_files: planning, outputs and errors of the command line.

Expected pixels come from `adain_jax.apply` called here, eagerly, on the input pixels as
PIL reads them (not through images.py), then quantised like torchvision's save_image.
The CLI runs a jitted apply, so float32 results differ by ~1e-6 and a value can round to
the neighbouring 8-bit step: tolerance 1 step (1/255), and at least 99% of values equal.
Images are tiny and share a few sizes so that jit compiles only a handful of times.

--method gatys is compared with `adain_jax.gatys.gatys` called here with the same
arguments (same tolerance: the same float32 computation, quantised). The DenseNet-121
test uses random densenet.py weights written with save_params, and its reference is
adain_jax.apply jitted at XLA optimisation level 0 (DenseNet compiles slowly on CPU).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

import adain_jax
import stylize
from adain_jax import architectures, densenet, gatys, stylize_files
from adain_jax.stylize_files import Settings, UsageError, plan_jobs

from tests.stylize_helpers import (H, W, as_float, assert_matches, pixels, quantise,
                                   random_image, reference_apply, write_image)
from tests.stylize_helpers import params, weights  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--content-size", "0", "--style-size", "0", "-q"]


@pytest.fixture
def files(tmp_path):
    """Two contents and two styles of the shared sizes."""
    rng = np.random.default_rng(1)
    return {
        "c1": write_image(tmp_path / "content" / "cat.png", random_image(rng, H, W)),
        "c2": write_image(tmp_path / "content" / "dog.png", random_image(rng, H, W)),
        "s1": write_image(tmp_path / "style" / "ink.png", random_image(rng, 20, 20)),
        "s2": write_image(tmp_path / "style" / "oil.png",
                          (255 - random_image(rng, 20, 20)) // 2),
    }


def run_cli(*argv):
    return stylize.main([str(a) for a in argv])


# --- single outputs and their values -------------------------------------------------------

def test_single_file_equals_apply(params, weights, files, tmp_path):
    out = tmp_path / "out.png"
    assert run_cli("--content", files["c1"], "--style", files["s1"], "--alpha", 0.7,
                   "--weights", weights, "--output", out, *SMALL) == 0
    content, style = pixels(files["c1"]), pixels(files["s1"])
    expected = reference_apply(params, as_float(content), as_float(style), 0.7)
    result = pixels(out)
    assert result.shape == (H, W, 3)
    assert_matches(result, quantise(expected))
    # the test weights give a varied output, few values clipped: the comparison is tight
    assert ((result > 0) & (result < 255)).mean() > 0.9
    assert result.std(axis=(0, 1)).min() > 10


def test_style_interpolation_equals_apply(params, weights, files, tmp_path):
    assert run_cli("--content", files["c1"], "--style", files["s1"], files["s2"],
                   "--style-weights", 3, 1, "--weights", weights, "--output", tmp_path / "o",
                   *SMALL) == 0
    out = tmp_path / "o" / "cat_stylized_ink_oil.png"
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [out.name]
    styles = [as_float(pixels(files["s1"])), as_float(pixels(files["s2"]))]
    expected = reference_apply(params, as_float(pixels(files["c1"])), styles, 1.0,
                               style_weights=[3.0, 1.0])
    assert_matches(pixels(out), quantise(expected))
    # and it is not simply one of the two styles
    only_first = quantise(reference_apply(params, as_float(pixels(files["c1"])), styles[0],
                                          1.0))
    assert np.abs(pixels(out).astype(int) - only_first).mean() > 5


def test_masks_equal_apply(params, weights, files, tmp_path):
    # a soft horizontal ramp and its complement, as 8-bit grayscale images
    ramp = np.tile(np.linspace(0, 255, W).round().astype(np.uint8), (H, 1))
    m1 = write_image(tmp_path / "m1.png", ramp)
    m2 = write_image(tmp_path / "m2.png", 255 - ramp)
    out = tmp_path / "masked.png"
    assert run_cli("--content", files["c1"], "--style", files["s1"], files["s2"],
                   "--mask", m1, m2, "--weights", weights, "--output", out, *SMALL) == 0
    styles = [as_float(pixels(files["s1"])), as_float(pixels(files["s2"]))]
    masks = np.stack([ramp, 255 - ramp]).astype(np.float32) / 255
    expected = reference_apply(params, as_float(pixels(files["c1"])), styles, 1.0, masks=masks)
    assert_matches(pixels(out), quantise(expected))


def test_preserve_color_flag_values():
    base = ["--content", "c.png", "--style", "s.png"]
    assert stylize.parse_args(base).preserve_color is None
    assert stylize.parse_args(base + ["--preserve-color"]).preserve_color == "coral"
    assert stylize.parse_args(base + ["--preserve-color", "luminance"]).preserve_color == "luminance"


def test_tiny_content_upscaled_and_back(params, weights, files, tmp_path):
    # 1x1 is below the smallest side the encoder supports (MIN_SIDE = 9: relu4_1 must keep
    # at least 2x2 positions); it is processed as a constant 9x9 image and resized back.
    assert stylize_files.MIN_SIDE == 9
    dot = np.array([[[200, 40, 90]]], np.uint8)
    content = write_image(tmp_path / "dot.png", dot)
    out = tmp_path / "dot_out.png"
    assert run_cli("--content", content, "--style", files["s1"], "--weights", weights,
                   "--output", out, *SMALL) == 0
    big = reference_apply(params, np.broadcast_to(as_float(dot), (9, 9, 3)),
                          as_float(pixels(files["s1"])), 1.0)
    assert np.isfinite(np.asarray(big)).all()
    # back to 1x1 with PIL's bilinear (antialiased) filter, channel by channel
    big = np.clip(np.asarray(big), 0, 1)
    small = [np.asarray(Image.fromarray(big[..., c], "F").resize((1, 1), Image.BILINEAR))
             for c in range(3)]
    result = pixels(out)
    assert result.shape == (1, 1, 3)
    assert np.abs(result.astype(int) - quantise(np.stack(small, -1))).max() <= 1


# --- folders, naming, failures ---------------------------------------------------------------

def test_folder_by_folder_names_and_style_encoded_once(params, weights, files, tmp_path,
                                                       monkeypatch):
    calls = []
    encode = stylize_files._encode_style
    monkeypatch.setattr(stylize_files, "_encode_style",
                        lambda p, s: calls.append(s.shape) or encode(p, s))
    out = tmp_path / "out"
    assert run_cli("--content", tmp_path / "content", "--style", tmp_path / "style",
                   "--weights", weights, "--output", out, *SMALL) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "cat_stylized_ink.png", "cat_stylized_oil.png",
        "dog_stylized_ink.png", "dog_stylized_oil.png"]
    assert len(calls) == 2  # each style once, not once per content
    expected = reference_apply(params, as_float(pixels(files["c2"])),
                               as_float(pixels(files["s2"])), 1.0)
    assert_matches(pixels(out / "dog_stylized_oil.png"), quantise(expected))


def test_folder_goes_on_past_bad_file(weights, files, tmp_path, capsys):
    (tmp_path / "content" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tmp_path / "content" / "notes.txt").write_text("not an image, skipped")
    out = tmp_path / "out"
    code = run_cli("--content", tmp_path / "content", "--style", files["s1"],
                   "--weights", weights, "--output", out, *SMALL)
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["cat_stylized_ink.png",
                                                     "dog_stylized_ink.png"]
    err = capsys.readouterr().err
    failure_lines = [line for line in err.splitlines() if "broken.png" in line]
    assert len(failure_lines) == 1 and "1 of 3 outputs failed" in err
    assert "Traceback" not in err


def test_bad_style_fails_its_outputs_only(weights, files, tmp_path, capsys):
    (tmp_path / "style" / "zz_bad.jpg").write_bytes(b"")
    out = tmp_path / "out"
    code = run_cli("--content", files["c1"], "--style", tmp_path / "style",
                   "--weights", weights, "--output", out, *SMALL)
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["cat_stylized_ink.png",
                                                     "cat_stylized_oil.png"]
    assert "zz_bad.jpg" in capsys.readouterr().err


def test_output_name_and_ext(files, tmp_path):
    jobs = plan_jobs(files["c1"], [files["s1"], files["s2"]], output=tmp_path / "x", ext="jpg")
    assert [j.output for j in jobs] == [tmp_path / "x" / "cat_stylized_ink_oil.jpg"]
    jobs = plan_jobs(tmp_path / "content", [tmp_path / "style"], output=tmp_path / "x")
    assert len(jobs) == 4 and {j.styles for j in jobs} == {(files["s1"],), (files["s2"],)}
    assert plan_jobs(files["c1"], [files["s1"]])[0].output == Path("output/cat_stylized_ink.png")


@pytest.mark.parametrize("kwargs, message", [
    ({"output": "one.png"}, "names one file, but this run makes 4 outputs"),
    ({"ext": "gif"}, "cannot write that format"),
    ({"output": "one.gif"}, "names one file"),
    ({"settings": Settings(alpha=1.5)}, "--alpha must be in [0, 1]"),
    ({"settings": Settings(style_weights=(1.0, 2.0))}, "not a style folder"),
])
def test_plan_errors_folder(files, tmp_path, kwargs, message):
    with pytest.raises(UsageError) as info:
        plan_jobs(tmp_path / "content", [tmp_path / "style"], **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_plan_errors_files(files, tmp_path):
    two = [files["s1"], files["s2"]]
    with pytest.raises(UsageError, match="got 1 values for 2 styles"):
        plan_jobs(files["c1"], two, settings=Settings(style_weights=(1.0,)))
    with pytest.raises(UsageError, match="got 3 values for 2 styles"):
        plan_jobs(files["c1"], two, settings=Settings(masks=(files["s1"],) * 3))
    with pytest.raises(UsageError, match="not both"):
        plan_jobs(files["c1"], two, settings=Settings(style_weights=(1, 1), masks=tuple(two)))
    with pytest.raises(UsageError, match="cannot write .gif"):
        plan_jobs(files["c1"], [files["s1"]], output=tmp_path / "one.gif")
    with pytest.raises(UsageError, match="cannot be combined"):
        plan_jobs(files["c1"], [files["s1"], tmp_path / "style"])
    with pytest.raises(UsageError, match="no such content"):
        plan_jobs(tmp_path / "missing.png", [files["s1"]])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no content images"):
        plan_jobs(tmp_path / "empty", [files["s1"]])
    # cat.png and cat.jpg would both write cat_stylized_ink.png
    write_image(tmp_path / "content" / "cat.jpg", pixels(files["c1"]))
    with pytest.raises(UsageError, match="rename one"):
        plan_jobs(tmp_path / "content", [files["s1"]], output=tmp_path / "o")


def test_output_file_with_several_outputs_refused(weights, files, tmp_path, capsys):
    code = run_cli("--content", tmp_path / "content", "--style", files["s1"],
                   "--weights", weights, "--output", tmp_path / "single.png", *SMALL)
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "names one file, but this run makes 2 outputs" in err
    assert not (tmp_path / "single.png").exists()


def test_output_equal_to_input_refused(weights, files, capsys):
    before = files["c1"].read_bytes()
    code = run_cli("--content", files["c1"], "--style", files["s1"], "--weights", weights,
                   "--output", files["s1"], *SMALL)
    assert code == 1
    assert "would overwrite this input file" in capsys.readouterr().err
    # also through a different spelling of the same path
    other = files["c1"].parent / ".." / "content" / files["c1"].name
    with pytest.raises(UsageError, match="overwrite"):
        plan_jobs(files["c1"], [files["s1"]], output=other)
    assert files["c1"].read_bytes() == before


def test_missing_default_weights_names_command(files, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ADAIN_JAX_CACHE", str(tmp_path / "empty_cache"))
    code = run_cli("--content", files["c1"], "--style", files["s1"], "--output",
                   tmp_path / "o", *SMALL)
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert "python convert_weights.py --download" in err
    assert str(tmp_path / "empty_cache" / "adain.safetensors") in err
    assert "\n" not in err


def test_alpha_out_of_range(files, capsys):
    with pytest.raises(SystemExit) as info:
        run_cli("--content", files["c1"], "--style", files["s1"], "--alpha", 1.5)
    assert info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert "--alpha" in err and "[0, 1]" in err and "1.5" in err and "\n" not in err


# --- --method gatys --------------------------------------------------------------------------

def test_gatys_equals_gatys_function(params, weights, files, tmp_path, capsys):
    # a style folder: two outputs, so the job bar and each job's step bar both show
    out = tmp_path / "g"
    assert run_cli("--content", files["c1"], "--style", tmp_path / "style", "--method", "gatys",
                   "--steps", 2, "--optimizer", "adam", "--weights", weights, "--output", out,
                   "--content-size", 0, "--style-size", 0) == 0
    assert sorted(p.name for p in out.iterdir()) == ["cat_stylized_ink.png",
                                                     "cat_stylized_oil.png"]
    err = capsys.readouterr().err
    assert "output/s" in err, err  # the job bar, and under it (ESC [A: one line up) each step bar
    for name in ("cat_stylized_ink.png", "cat_stylized_oil.png"):
        assert re.search(rf"{name}: +0%\|[^|]*\| 0/2 \[[^\]]*step/s\]\x1b\[A", err), err
    content = pixels(files["c1"])
    for name, style in (("ink", files["s1"]), ("oil", files["s2"])):
        expected = gatys.gatys(params, as_float(content), as_float(pixels(style)), steps=2,
                               optimizer="adam", style_loss="gram")
        result = pixels(out / f"cat_stylized_{name}.png")
        assert_matches(result, quantise(expected))
        # two Adam steps of 0.01 moved the image off the content: the check can fail
        assert np.abs(result.astype(int) - content).mean() > 1


def test_gatys_needs_no_decoder(params, files, tmp_path, monkeypatch, capsys):
    # an encoder-only file at the default weights path: enough for gatys, not for adain
    cache = tmp_path / "cache"
    monkeypatch.setenv("ADAIN_JAX_CACHE", str(cache))
    adain_jax.save_params({"encoder": params["encoder"]}, cache / "adain.safetensors")
    out = tmp_path / "g.png"
    # (the step compiled for the test above serves: same sizes, optimiser and loss)
    assert run_cli("--content", files["c1"], "--style", files["s1"], "--method", "gatys",
                   "--steps", 1, "--optimizer", "adam", "--style-loss", "gram",
                   "--output", out, *SMALL) == 0
    expected = gatys.gatys(params, as_float(pixels(files["c1"])), as_float(pixels(files["s1"])),
                           steps=1, optimizer="adam", style_loss="gram")
    assert_matches(pixels(out), quantise(expected))
    capsys.readouterr()
    assert run_cli("--content", files["c1"], "--style", files["s1"], "--output",
                   tmp_path / "a.png", *SMALL) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "encoder only" in err and "adain.safetensors" in err


def stand_in_gatys(calls):
    """A gatys.gatys that records its call, runs the callback, and returns the content."""
    def fake(params, content, style, **kwargs):
        calls.append((content.shape, style.shape, kwargs))
        for step in range(1, kwargs["steps"] + 1):
            kwargs["callback"](step, np.float32(0.0))
        return content
    return fake


@pytest.mark.parametrize("flags, expected", [
    ([], {"steps": gatys.STEPS, "optimizer": "lbfgs", "style_loss": "gram"}),
    (["--steps", "7", "--style-loss", "meanstd"],
     {"steps": 7, "optimizer": "lbfgs", "style_loss": "meanstd"}),
])
def test_gatys_flags_reach_gatys(weights, files, tmp_path, monkeypatch, flags, expected):
    """The defaults and each flag arrive in gatys.gatys (a stand-in that returns the content)."""
    calls = []
    monkeypatch.setattr(gatys, "gatys", stand_in_gatys(calls))
    out = tmp_path / "x.png"
    assert run_cli("--content", files["c1"], "--style", files["s1"], "--method", "gatys",
                   "--weights", weights, "--output", out, *flags, *SMALL) == 0
    [(content_shape, style_shape, kwargs)] = calls
    assert (content_shape, style_shape) == ((H, W, 3), (20, 20, 3))
    assert {k: kwargs[k] for k in expected} == expected
    assert_matches(pixels(out), pixels(files["c1"]))  # what the stand-in returned, written


def test_gatys_folder_goes_on_past_bad_files(weights, files, tmp_path, monkeypatch, capsys):
    (tmp_path / "content" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tmp_path / "style" / "zz_bad.jpg").write_bytes(b"")
    calls = []
    monkeypatch.setattr(gatys, "gatys", stand_in_gatys(calls))
    out = tmp_path / "out"
    code = run_cli("--content", tmp_path / "content", "--style", tmp_path / "style",
                   "--method", "gatys", "--steps", 2, "--weights", weights, "--output", out,
                   *SMALL)
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == [
        "cat_stylized_ink.png", "cat_stylized_oil.png",
        "dog_stylized_ink.png", "dog_stylized_oil.png"]
    assert len(calls) == 4
    err = capsys.readouterr().err
    assert "5 of 9 outputs failed" in err and "Traceback" not in err
    # broken.png fails its 3 outputs; zz_bad.jpg the 2 others (the content is read first)
    assert sum("broken.png" in line for line in err.splitlines()) == 3
    assert sum("zz_bad.jpg" in line for line in err.splitlines()) == 2


@pytest.mark.parametrize("extra, needle", [
    (["--alpha", "0.5"], "--alpha"),
    (["--style-weights", "1"], "--style-weights"),
    (["--mask", "MASK"], "--mask"),
    (["--preserve-color"], "--preserve-color"),
    (["--preserve-color", "luminance"], "--preserve-color"),
    (["--style", "STYLE2"], "several style files"),
])
def test_gatys_refuses_adain_only_options(weights, files, tmp_path, capsys, extra, needle):
    extra = [{"MASK": files["s2"], "STYLE2": files["s2"]}.get(a, a) for a in extra]
    styles = [files["s1"]] + (extra[1:] if extra[0] == "--style" else [])
    extra = [] if extra[0] == "--style" else extra
    out = tmp_path / "x.png"
    code = run_cli("--content", files["c1"], "--style", *styles, "--method", "gatys",
                   "--weights", weights, "--output", out, *extra, *SMALL)
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"--method gatys cannot use {needle}" in err, err
    assert not out.exists()


@pytest.mark.parametrize("flag", [["--steps", "3"], ["--optimizer", "adam"],
                                  ["--style-loss", "meanstd"]])
def test_gatys_flags_refused_with_adain(files, capsys, flag):
    with pytest.raises(SystemExit) as info:
        run_cli("--content", files["c1"], "--style", files["s1"], *flag)
    assert info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{flag[0]} applies to --method gatys only" in err


# --- DenseNet-121 weights ----------------------------------------------------------------------

FAST_COMPILE = {"xla_backend_optimization_level": 0}


def test_densenet_weights_tiny_content_equals_apply(files, tmp_path):
    """A 12x16 content through a DenseNet-121 weights file: its AdaIN map (stride 16) would
    have 1x1 positions, so the CLI must upscale it to 17 px (not VGG's 9) and back."""
    arch = architectures.DENSENET121
    assert stylize_files.min_side(arch) == 17
    assert (densenet.feature_size(16), densenet.feature_size(17)) == (1, 2)
    rng = np.random.default_rng(5)
    content_u8 = random_image(rng, 12, 16)
    content = write_image(tmp_path / "tiny.png", content_u8)
    style = as_float(pixels(files["s1"]))
    # the CLI's resize, restated: shorter side to 17, longer int(17 * 16 / 12) = 22
    # (torchvision Resize), PIL bilinear on float channels
    up = np.stack([np.asarray(Image.fromarray(as_float(content_u8)[..., c], "F")
                              .resize((22, 17), Image.BILINEAR)) for c in range(3)], -1)

    # He-uniform decoder (zero biases) over densenet's own encoder init; the last conv is
    # rescaled as in `params` above, using the same compiled reference as the check.
    key = jax.random.key(3)
    decoder = jax.tree.map(
        lambda leaf: (np.zeros(leaf.shape, np.float32) if leaf.ndim == 1 else
                      rng.uniform(-1, 1, leaf.shape).astype(np.float32)
                      * np.sqrt(6.0 / np.prod(leaf.shape[:3]))),
        jax.eval_shape(arch.init_decoder, key))
    params = {"encoder": densenet.init_encoder(key), "decoder": decoder}
    reference = jax.jit(adain_jax.apply).lower(params, up, style).compile(
        compiler_options=FAST_COMPILE)
    probe = np.asarray(reference(params, up, style))
    last = params["decoder"]["stem_2"]
    scale = 0.15 / probe.std(axis=(0, 1))
    last["kernel"] = (last["kernel"] * scale).astype(np.float32)
    last["bias"] = (0.5 - scale * probe.mean(axis=(0, 1))).astype(np.float32)
    weights = adain_jax.save_params(params, tmp_path / "densenet.safetensors")

    # A real process, so that XLA's optimisation level 0 can be set before JAX starts: it
    # halves the two DenseNet compiles (same ops; the values agree to float32 rounding).
    out = tmp_path / "tiny_out.png"
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
    proc = _subprocess("--content", content, "--style", files["s1"], "--weights", weights,
                       "--output", out, *SMALL, cwd=tmp_path,
                       env={"XLA_FLAGS": flags})
    assert proc.returncode == 0, proc.stderr
    big = np.clip(np.asarray(reference(params, up, style)), 0, 1)
    assert big.std(axis=(0, 1)).min() > 0.05  # a varied output: the comparison is tight
    small = np.stack([np.asarray(Image.fromarray(big[..., c], "F").resize((16, 12),
                                                                          Image.BILINEAR))
                      for c in range(3)], -1)
    result = pixels(out)
    assert result.shape == (12, 16, 3)
    assert np.abs(result.astype(int) - quantise(small)).max() <= 1


# --- real processes ------------------------------------------------------------------------

def _subprocess(*argv, cwd, env=None):
    return subprocess.run([sys.executable, str(ROOT / "stylize.py"), *map(str, argv)],
                          cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_subprocess_odd_size_alpha_preserve_color(params, weights, tmp_path):
    # one real run checks several conventions at once (each new process compiles again):
    # the exact odd size, the content's alpha carried over, CORAL colour preservation on
    # the content as loaded, and the default output folder.
    rng = np.random.default_rng(2)
    rgba = random_image(rng, 23, 37, channels=4)
    rgba[..., 3] = rng.integers(0, 256, (23, 37))
    content = write_image(tmp_path / "odd.png", rgba)
    style = write_image(tmp_path / "s.png", random_image(rng, 20, 20))
    proc = _subprocess("--content", content, "--style", style, "--weights", weights,
                       "--content-size", 0, "--style-size", 0, "--preserve-color",
                       cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = pixels(tmp_path / "output" / "odd_stylized_s.png")  # default output folder
    assert out.shape == (23, 37, 4)
    np.testing.assert_array_equal(out[..., 3], rgba[..., 3])  # alpha carried, exactly
    # RGB is stylised as stored (straight alpha, not composited)
    expected = reference_apply(params, as_float(rgba[..., :3]), as_float(pixels(style)),
                               1.0, preserve_color="coral")
    assert_matches(out[..., :3], quantise(expected))
    assert "wrote 1 of 1 outputs" in proc.stderr


def test_subprocess_failure_has_no_traceback(weights, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "half.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    style = write_image(tmp_path / "s.png", random_image(np.random.default_rng(3), 20, 20))
    proc = _subprocess("--content", folder, "--style", style, "--weights", weights,
                       "--output", tmp_path / "o", cwd=tmp_path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "1 of 1 outputs failed" in proc.stderr and "half.jpg" in proc.stderr
    assert not any((tmp_path / "o").glob("*.png"))


def test_help_lists_every_flag(tmp_path):
    proc = _subprocess("--help", cwd=tmp_path)
    assert proc.returncode == 0
    flags = ["--content", "--style", "--style-weights", "--alpha", "--mask",
             "--preserve-color", "--content-size", "--style-size", "--crop", "--weights",
             "--output", "--ext", "--quiet", "--method", "--steps", "--optimizer", "--style-loss"]
    for flag in flags:
        assert flag in proc.stdout, flag
    # every optional flag states its default (--content and --style are required)
    assert proc.stdout.count("default:") >= len(flags) - 2
    assert "convert_weights.py --download" in proc.stdout


def test_large_content_goes_through_tiling_with_the_same_result(params, weights, files,
                                                                tmp_path, monkeypatch):
    """Above TILE_ABOVE_PIXELS the CLI stylises via tiling.apply_tiled: same pixels."""
    calls = []
    real = stylize_files.tiling.apply_tiled
    monkeypatch.setattr(stylize_files, "TILE_ABOVE_PIXELS", H * W - 1)
    monkeypatch.setattr(stylize_files.tiling, "apply_tiled",
                        lambda *a, **k: calls.append(1) or real(*a, tile=16))
    out = tmp_path / "tiled.png"
    assert run_cli("--content", files["c1"], "--style", files["s1"], "--alpha", 0.7,
                   "--weights", weights, "--output", out, *SMALL) == 0
    assert calls == [1]
    expected = reference_apply(params, as_float(pixels(files["c1"])),
                               as_float(pixels(files["s1"])), 0.7)
    assert_matches(pixels(out), quantise(expected))
