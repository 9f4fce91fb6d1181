"""stylize.py and adain_jax.stylize_files: planning, outputs and errors of the command line.

Expected pixels come from `adain_jax.apply` called here, eagerly, on the input pixels as
PIL reads them (not through images.py), then quantised like torchvision's save_image.
The CLI runs a jitted apply, so float32 results differ by ~1e-6 and a value can round to
the neighbouring 8-bit step: tolerance 1 step (1/255), and at least 99% of values equal.
Masks, colour preservation, interpolation and the tiny upscaled content are compared with
the PyTorch port instead (stylize_helpers.torch_stylize), with the same tolerance.
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
from adain_jax import architectures, densenet, gatys, images, stylize_files, transfer
from adain_jax.stylize_files import Settings, UsageError, plan_jobs

from tests.stylize_helpers import (H, W, as_float, assert_matches, pixels, quantise,
                                   random_image, reference_apply, torch_stylize, write_image)
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
    out = tmp_path / "o" / "cat_stylized_ink_oil_w3-1.png"
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [out.name]
    styles = [as_float(pixels(files["s1"])), as_float(pixels(files["s2"]))]
    expected = torch_stylize(params, as_float(pixels(files["c1"])), styles,
                             style_weights=[3.0, 1.0])
    assert_matches(pixels(out), quantise(expected))
    # and it is not simply one of the two styles
    only_first = quantise(torch_stylize(params, as_float(pixels(files["c1"])), styles[0]))
    assert np.abs(pixels(out).astype(int) - only_first).mean() > 5


def test_masks_match_reference_at_an_odd_size(params, weights, files, tmp_path):
    """Binary masks on a 27x37 content (relu4_1 is 4x5, not 3x4): the Lua procedure by
    the PyTorch port. Soft values reach the masks as they are (ops tests their math)."""
    h, w = 27, 37
    content = write_image(tmp_path / "odd.png", random_image(np.random.default_rng(7), h, w))
    fg = np.zeros((h, w), np.uint8)
    fg[5:, 12:] = 255  # 3x3 of the 4x5 cells after the nearest resize
    m1 = write_image(tmp_path / "m1.png", fg)
    m2 = write_image(tmp_path / "m2.png", 255 - fg)
    out = tmp_path / "masked.png"
    assert run_cli("--content", content, "--style", files["s1"], files["s2"],
                   "--mask", m1, m2, "--weights", weights, "--output", out, *SMALL) == 0
    styles = [as_float(pixels(files["s1"])), as_float(pixels(files["s2"]))]
    masks = np.stack([fg, 255 - fg]).astype(np.float32) / 255
    expected = torch_stylize(params, as_float(pixels(content)), styles, masks=masks)
    assert_matches(pixels(out), quantise(expected))
    ramp = np.tile(np.linspace(0, 255, w).round().astype(np.uint8), (h, 1))
    np.testing.assert_allclose(stylize_files.load_mask(write_image(tmp_path / "r.png", ramp),
                                                       h, w), ramp / 255, atol=1e-6)


def test_mask_leaving_pixels_uncovered_warns_and_keeps_content(params, weights, files,
                                                                tmp_path, caplog):
    """Issue 14: a mask over half the image used to turn the other half into flat colour."""
    half = np.zeros((H, W), np.uint8)
    half[:, : W // 2] = 255
    mask = write_image(tmp_path / "left.png", half)
    out = tmp_path / "half.png"
    assert run_cli("--content", files["c1"], "--style", files["s1"], "--mask", mask,
                   "--weights", weights, "--output", out, *SMALL) == 0
    assert "leave 50.0% of the pixels not fully covered" in caplog.text
    masks = (half[None] / 255).astype(np.float32)
    expected = torch_stylize(params, as_float(pixels(files["c1"])),
                             [as_float(pixels(files["s1"]))], masks=masks)
    assert_matches(pixels(out), quantise(expected))
    assert pixels(out)[:, -4:].std() > 10  # the content's structure, not one flat colour


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
    big = torch_stylize(params, np.broadcast_to(as_float(dot), (9, 9, 3)),
                        as_float(pixels(files["s1"])))
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
    encode = transfer.encode_style
    monkeypatch.setattr(transfer, "encode_style",
                        lambda p, s, **kw: calls.append(s.shape) or encode(p, s, **kw))
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


# --- output checks and names (issue 14) -------------------------------------------------------

@pytest.mark.parametrize("case", ["parent-is-a-file", "file-under-a-file", "output-is-a-folder",
                                  "read-only-folder"])
def test_unwritable_output_refused_before_anything(files, tmp_path, capsys, case):
    """Checked before the weights are even looked for: with a missing weights file the
    error must still name the output. The read-only case needs a non-root user (root
    writes through permission bits); the others fail for root too."""
    if case == "read-only-folder" and os.geteuid() == 0:
        pytest.skip("root writes into a read-only folder; the other cases cover root")
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    output, named = {
        "parent-is-a-file": (tmp_path / "notes.txt" / "out", "notes.txt is a file"),
        "file-under-a-file": (tmp_path / "notes.txt" / "x.png", "notes.txt: output folder is a file"),
        "output-is-a-folder": (tmp_path / "o", "cat_stylized_ink.png: is a folder"),
        "read-only-folder": (tmp_path / "ro", "output folder not writable"),
    }[case]
    (tmp_path / "o" / "cat_stylized_ink.png").mkdir(parents=True)
    (tmp_path / "ro").mkdir(mode=0o555)
    code = run_cli("--content", files["c1"], "--style", files["s1"], "--output", output,
                   "--weights", tmp_path / "missing.safetensors", *SMALL)
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert "\n" not in err and named in err and "choose another --output" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["content", "notes.txt", "o", "ro",
                                                          "style"]  # no probe left behind
    assert not any((tmp_path / "ro").iterdir())


def test_check_outputs_probes_nothing_into_place(files, tmp_path):
    """A folder that does not exist yet is tried in its nearest parent and not created."""
    jobs = plan_jobs(files["c1"], [files["s1"]], output=tmp_path / "a" / "b")
    stylize_files.check_outputs(jobs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["content", "style"]


def test_weights_and_masks_name_outputs_apart(files, tmp_path):
    two = [files["s1"], files["s2"]]
    m1, m2 = tmp_path / "fg.png", tmp_path / "bg.png"
    names = {}
    for label, settings in [
            ("equal", Settings()), ("1 1", Settings(style_weights=(1.0, 1.0))),
            ("3 1", Settings(style_weights=(3.0, 1.0))),
            ("1 3", Settings(style_weights=(1.0, 3.0))),
            ("0.3 0.7", Settings(style_weights=(0.3, 0.7))),
            ("1/3 1", Settings(style_weights=(1 / 3, 1.0))),
            ("0.333333 1", Settings(style_weights=(0.333333, 1.0))),
            ("fg bg", Settings(masks=(m1, m2))), ("bg fg", Settings(masks=(m2, m1)))]:
        [job] = plan_jobs(files["c1"], two, output=tmp_path / "o", settings=settings)
        names[label] = job.output.name
    assert names["equal"] == names["1 1"] == "cat_stylized_ink_oil.png"
    assert names["3 1"] == "cat_stylized_ink_oil_w3-1.png"
    assert names["0.3 0.7"] == "cat_stylized_ink_oil_w0.3-0.7.png"
    assert names["fg bg"] == "cat_stylized_ink_oil_mask-fg-bg.png"
    assert len(set(names.values())) == len(names) - 1  # only "equal" and "1 1" agree


@pytest.mark.parametrize("output", ["result.txt", "out.v2", "notes.TXT"])
def test_output_with_another_extension_refused(files, tmp_path, capsys, output):
    code = run_cli("--content", files["c1"], "--style", files["s1"],
                   "--output", tmp_path / output, "--weights", tmp_path / "missing", *SMALL)
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert "\n" not in err and "is not an image or video extension" in err, err
    assert f"{output}/" in err  # how to say it is a folder
    assert not (tmp_path / output).exists()


def test_folder_names_with_a_dot_still_work(files, tmp_path):
    # a trailing slash, or an existing folder, says "folder" whatever the name
    [job] = plan_jobs(files["c1"], [files["s1"]], output=f"{tmp_path / 'out.v2'}/")
    assert job.output == tmp_path / "out.v2" / "cat_stylized_ink.png"
    (tmp_path / "run.d").mkdir()
    [job] = plan_jobs(files["c1"], [files["s1"]], output=tmp_path / "run.d")
    assert job.output == tmp_path / "run.d" / "cat_stylized_ink.png"
    (tmp_path / "odd.png").mkdir()  # even a folder named like an image
    [job] = plan_jobs(files["c1"], [files["s1"]], output=tmp_path / "odd.png")
    assert job.output == tmp_path / "odd.png" / "cat_stylized_ink.png"


def test_ext_disagreeing_with_the_output_file_refused(files, tmp_path, capsys):
    base = ["--content", files["c1"], "--style", files["s1"], "--weights",
            tmp_path / "missing", *SMALL]
    assert run_cli(*base, "--ext", "jpg", "--output", tmp_path / "x.png") == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--ext jpg and --output" in err and "x.png disagree" in err, err
    args = stylize.parse_args(["--content", "c.png", "--style", "s.png"])
    assert (args.ext, args.video_ext) == (None, None)  # resolved in plan_jobs
    # agreeing, or not given: fine (.jpg and .jpeg are one format)
    for ext, name in ((None, "x.png"), ("png", "x.png"), ("jpg", "x.jpeg"), ("jpeg", "x.JPG")):
        [job] = plan_jobs(files["c1"], [files["s1"]], output=tmp_path / name, ext=ext)
        assert job.output.name == name
    # the same for --video-ext and a content video (planning opens no file)
    clip = tmp_path / "clip.mkv"
    clip.write_bytes(b"")
    with pytest.raises(UsageError, match="--video-ext mkv and --output .*out.mp4 disagree"):
        plan_jobs(clip, [files["s1"]], output=tmp_path / "out.mp4", video_ext="mkv")
    [job] = plan_jobs(clip, [files["s1"]], output=tmp_path / "out.mp4", video_ext="mp4")
    assert job.output.name == "out.mp4"


def test_style_folder_with_subfolders_and_gif(params, weights, files, tmp_path, caplog):
    """Subfolders and GIF styles are read (train.py's folders follow the same rule, see
    test_data); every other file is named in the warning; sub/ink.png and ink.png get
    different outputs."""
    rng = np.random.default_rng(4)
    style = tmp_path / "style"
    write_image(style / "sub" / "ink.png", random_image(rng, 20, 20))
    gif = random_image(rng, 20, 20) // 64 * 64  # few colours: GIF's palette keeps them exact
    Image.fromarray(gif).save(style / "anim.gif", save_all=True,
                              append_images=[Image.fromarray(255 - gif)])
    (style / "notes.txt").write_text("x")
    (style / "sub" / "readme.md").write_text("x")
    (style / ".hidden.png").write_bytes(b"ignored")
    out = tmp_path / "o"
    assert run_cli("--content", files["c1"], "--style", style, "--weights", weights,
                   "--output", out, *SMALL) == 0  # -q keeps warnings
    assert sorted(p.name for p in out.iterdir()) == [
        "cat_stylized_anim.png", "cat_stylized_ink.png", "cat_stylized_oil.png",
        "cat_stylized_sub-ink.png"]
    [skipped] = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert skipped.endswith("skipped 2 files, not .jpg .jpeg .png .webp .bmp .ppm .tif .tiff "
                            ".gif: notes.txt, sub/readme.md"), skipped
    expected = reference_apply(params, as_float(pixels(files["c1"])), as_float(gif), 1.0)
    assert_matches(pixels(out / "cat_stylized_anim.png"), quantise(expected))
    # the two ink.png styles really are different outputs
    assert np.abs(pixels(out / "cat_stylized_ink.png").astype(int)
                  - pixels(out / "cat_stylized_sub-ink.png")).mean() > 5
    assert " ".join(images.IMAGE_EXTENSIONS) in stylize.EPILOG  # the help states the rule


def test_content_folder_subfolders_mirrored_and_output_inside_not_read(files, tmp_path):
    content = tmp_path / "content"
    write_image(content / "more" / "cat.png", pixels(files["c1"]))
    write_image(content / "out" / "old_output.png", pixels(files["c1"]))
    jobs = plan_jobs(content, [files["s1"]], output=content / "out")
    assert [j.output.relative_to(content / "out") for j in jobs] == [
        Path("cat_stylized_ink.png"), Path("dog_stylized_ink.png"),
        Path("more/cat_stylized_ink.png")]


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
    expected = torch_stylize(params, as_float(rgba[..., :3]), as_float(pixels(style)),
                             preserve_color="coral")
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


# --- against the PyTorch port: paths the library tests do not reach ---------------------------

@pytest.mark.parametrize("mode", ["coral", "luminance"])
def test_preserve_color_above_the_tiling_threshold(params, weights, files, tmp_path,
                                                   monkeypatch, mode):
    """A content over TILE_ABOVE_PIXELS with --preserve-color: the colours are still
    preserved (the untiled reference), whichever path the CLI takes for it."""
    monkeypatch.setattr(stylize_files, "TILE_ABOVE_PIXELS", H * W - 1)
    real = stylize_files.tiling.apply_tiled
    monkeypatch.setattr(stylize_files.tiling, "apply_tiled",
                        lambda *a, **k: real(*a, **{**k, "tile": 16}))  # several tiles
    out = tmp_path / "big.png"
    assert run_cli("--content", files["c1"], "--style", files["s2"], "--alpha", 0.8,
                   "--preserve-color", mode, "--weights", weights, "--output", out,
                   *SMALL) == 0
    content, style = as_float(pixels(files["c1"])), as_float(pixels(files["s2"]))
    expected = torch_stylize(params, content, style, 0.8, preserve_color=mode)
    assert_matches(pixels(out), quantise(expected))
    # the check can fail: without colour preservation the output is far from it
    plain = quantise(torch_stylize(params, content, style, 0.8)).astype(int)
    assert np.abs(plain - quantise(expected)).mean() > 5


def test_several_styles_without_weights_interpolate_equally(params, weights, files, tmp_path):
    out = tmp_path / "both.png"
    assert run_cli("--content", files["c1"], "--style", files["s1"], files["s2"],
                   "--alpha", 0.9, "--weights", weights, "--output", out, *SMALL) == 0
    content = as_float(pixels(files["c1"]))
    styles = [as_float(pixels(files["s1"])), as_float(pixels(files["s2"]))]
    expected = torch_stylize(params, content, styles, 0.9, style_weights=[0.5, 0.5])
    assert_matches(pixels(out), quantise(expected))
    for style in styles:  # not one of the styles alone
        alone = quantise(torch_stylize(params, content, style, 0.9)).astype(int)
        assert np.abs(pixels(out).astype(int) - alone).mean() > 3


def test_partial_videos_in_a_content_folder_are_skipped(weights, files, tmp_path, capsys):
    """A video being written (NAME.partial.EXT, maybe with more parts) is not content."""
    folder = tmp_path / "mixed"
    write_image(folder / "b.png", pixels(files["c1"]))
    for name in ("a.partial.mp4", "a.partial.12345.mp4", "clip.partial.mkv"):
        (folder / name).write_bytes(b"frames of an unfinished video" * 20)
    out = tmp_path / "out"
    code = run_cli("--content", folder, "--style", files["s1"], "--weights", weights,
                   "--output", out, *SMALL)
    assert code == 0, capsys.readouterr().err
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 1 and names[0].startswith("b_stylized_"), names
