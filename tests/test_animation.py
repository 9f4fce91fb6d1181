"""adain_jax/animation.py and animated GIF, WebP and PNG contents in stylize.py.

Test animations are written and read back with PIL directly (not through animation.py),
frames as PIL displays them (its compositing of GIF disposal and APNG blend operations).
Expected frames are what a still-image run gives for each displayed frame: the library's
apply (stylize_helpers.reference_apply) on it, clipped and quantised. Lossless WebP and
APNG must match that as the still outputs do (1 step of 255, >= 99% of values equal, see
test_stylize_cli.py); GIF quantises each frame to a 256-colour palette of its own, and
its bound is a mean absolute error below 5 steps of 255 and a maximum below 48 (measured
on these noisy 24x32 frames, 6 seeds: stylised, means 3.1 to 3.8 and maxima 17 to 23;
written unstylised, 3.7 to 4.0 and 18 to 30; a frame against the next frame's reference
is 15 to 28 off on average).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

import stylize
from adain_jax import animation, images, transfer
from adain_jax.stylize_files import Settings, UsageError, plan_jobs
from tests.stylize_helpers import (H, W, as_float, assert_matches, quantise, random_image,
                                   reference_apply, write_image)
from tests import stylize_helpers

params, weights = stylize_helpers.params, stylize_helpers.weights  # fixtures

SMALL = ["--content-size", "0", "--style-size", "0", "-q"]
DURATIONS = [70, 120, 200]  # ms; GIF keeps hundredths of a second, so these exactly
GIF_MEAN, GIF_MAX = 5.0, 48  # steps of 255, see the module docstring


def moving_frames(n=3, h=H, w=W, seed=0):
    """uint8 RGB frames of a pattern that shifts by 2 px per frame, so frames differ."""
    base = random_image(np.random.default_rng(seed), h, w + 2 * n)
    return [np.ascontiguousarray(base[:, 2 * i: 2 * i + w]) for i in range(n)]


def write_animation(path, frames, durations=DURATIONS, **options):
    """With PIL directly; `options` as PIL's save takes them (loop, lossless, ...)."""
    pictures = [f if isinstance(f, Image.Image) else Image.fromarray(f) for f in frames]
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=durations,
                     **options)
    return path


def read_animation(path):
    """(frames as displayed, uint8 RGB or RGBA; durations in ms; PIL's loop or None), with
    PIL directly."""
    with Image.open(path) as img:
        loop = img.info.get("loop")
        frames, durations = [], []
        for i in range(img.n_frames):
            img.seek(i)
            img.load()
            mode = "RGBA" if "A" in img.mode or "transparency" in img.info else "RGB"
            frames.append(np.asarray(img.convert(mode)))
            durations.append(img.info.get("duration"))
    return frames, durations, loop


_EXPECTED: dict = {}  # frames recur (a GIF read twice, WebP and APNG of the same frames)


def expected(params, frame_u8, style_u8, alpha=1.0):
    """What a still-image run writes for this frame (RGB only)."""
    frame_u8 = np.ascontiguousarray(frame_u8[..., :3])
    key = (id(params), frame_u8.tobytes(), style_u8.tobytes(), alpha)
    if key not in _EXPECTED:
        out = reference_apply(params, as_float(frame_u8), as_float(style_u8), alpha)
        _EXPECTED[key] = quantise(np.clip(np.asarray(out), 0.0, 1.0))
    return _EXPECTED[key]


def assert_gif_close(actual, want):
    err = np.abs(actual.astype(np.int16) - want.astype(np.int16))
    assert err.mean() < GIF_MEAN and err.max() < GIF_MAX, (err.mean(), err.max())
    return err


def transparent_gif(path, frames, holes):
    """An animated GIF whose pixels under `holes` (bool (H, W) per frame) are transparent;
    each frame cleared before the next (disposal 2), as PIL writes them."""
    pictures = []
    for rgb, hole in zip(frames, holes):
        quantised = Image.fromarray(rgb).quantize(255)
        index = np.asarray(quantised).copy()
        index[hole] = 255
        picture = Image.fromarray(index, "P")
        colours = quantised.getpalette()
        picture.putpalette(colours + [0] * (768 - len(colours)))
        pictures.append(picture)
    return write_animation(path, pictures, transparency=255, disposal=2, loop=0)


# ---- animation.py alone --------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".gif", ".webp", ".png"])
def test_save_then_read_keeps_frames_durations_loop_and_alpha(tmp_path, suffix):
    frames = [as_float(f) for f in moving_frames(3, seed=1)]
    holes = [np.random.default_rng(i).uniform(size=(H, W)) < 0.2 for i in range(3)]
    alphas = [np.where(h, 0.0, 1.0).astype(np.float32) for h in holes]
    for loop, alpha in ((2, None), (None, alphas), (0, None)):
        path = animation.save_animation(tmp_path / f"a{suffix}", frames, DURATIONS, loop, alpha)
        got, durations, got_loop = read_animation(path)
        assert len(got) == 3 and durations == DURATIONS
        # None: GIF writes no NETSCAPE extension (plays once); WebP and APNG say 1 play
        assert got_loop == (loop if loop is not None or suffix == ".gif" else 1)
        if alpha is not None:
            assert all(np.array_equal(g[..., 3] == 0, h) for g, h in zip(got, holes))
        else:
            assert all(g.shape == (H, W, 3) for g in got)
        for ours, frame, hole in zip(got, frames, holes):
            shown = ~hole if alpha is not None else np.ones((H, W), bool)
            ours, want = ours[..., :3][shown], quantise(frame)[shown]
            if suffix == ".gif":
                assert_gif_close(ours, want)
            else:
                assert np.array_equal(ours, want)
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left
    # and read back through animation.py, the same
    back = animation.load_animation(path)
    assert back.durations == DURATIONS and back.loop == 0 and back.alphas is None
    if suffix != ".gif":
        assert all(np.array_equal(quantise(a), quantise(b)) for a, b in zip(back.frames, frames))


@pytest.mark.parametrize("suffix", [".gif", ".png"])
def test_frames_stored_as_partial_rectangles_are_read_whole(tmp_path, suffix):
    """PIL's GIF and APNG writers store a frame as the rectangle that changed; the frames
    read are the whole displayed ones (disposal and blending applied)."""
    rng = np.random.default_rng(3)
    first = random_image(rng, H, W) // 32 * 32  # few colours: GIF keeps them exactly
    second = first.copy()
    second[4:12, 6:20] = 255 - second[4:12, 6:20]
    path = write_animation(tmp_path / f"p{suffix}", [first, second], [100, 100], loop=0)
    with Image.open(path) as img:
        img.seek(1)
        extent = img.tile[0][1] if img.tile else None
    assert extent is not None and extent != (0, 0, W, H), extent  # really a part
    loaded = animation.load_animation(path)
    assert [quantise(f).tolist() for f in loaded.frames] == [first.tolist(), second.tolist()]
    assert animation.is_animated(path) and not animation.is_animated(
        write_image(tmp_path / f"still{suffix}", first))


def test_truncated_corrupt_and_oversized_animations_are_one_line_errors(tmp_path,
                                                                         monkeypatch):
    path = write_animation(tmp_path / "a.gif", moving_frames(3), loop=0)
    data = path.read_bytes()
    cut = tmp_path / "cut.gif"
    cut.write_bytes(data[: len(data) * 2 // 3])  # inside the second or third frame
    assert animation.is_animated(cut)
    with pytest.raises(images.ImageError, match="the file is truncated") as err:
        animation.load_animation(cut)
    assert "\n" not in str(err.value) and str(err.value).startswith(str(cut))

    for suffix, options in ((".png", {"loop": 0}), (".webp", {"lossless": True})):
        data = write_animation(tmp_path / f"a{suffix}", moving_frames(3), **options).read_bytes()
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(data[: len(data) * 2 // 3])
        with pytest.raises(images.ImageError) as err:
            animation.load_animation(cut)
        assert "\n" not in str(err.value) and str(err.value).startswith(str(cut)), err.value
        # libwebp refuses to open it: not animated, and load_image says what is wrong
        assert animation.is_animated(cut) == (suffix == ".png")

    monkeypatch.setattr(images, "MAX_PIXELS", 2 * H * W)  # each frame fits, all 3 do not
    with pytest.raises(images.ImageError, match="animation is 3 frames of 32x24, over the "
                                                "limit of 1536 pixels in all"):
        animation.load_animation(path)
    with pytest.raises(images.ImageError, match="cannot write an animation as .jpg"):
        animation.save_animation(tmp_path / "x.jpg", [np.zeros((2, 2, 3))], [10])


# ---- planning ------------------------------------------------------------------------------

def test_planning_names_refusals_and_ext(tmp_path):
    (tmp_path / "in").mkdir()
    gif = write_animation(tmp_path / "in" / "clip.gif", moving_frames(), loop=0)
    still = write_image(tmp_path / "in" / "still.gif", moving_frames(1)[0])
    style = write_image(tmp_path / "s.png", random_image(np.random.default_rng(0), 20, 20))
    names = sorted(j.output.name for j in plan_jobs(tmp_path / "in", [style], ext="jpg",
                                                    output=tmp_path / "o"))
    assert names == ["clip_stylized_s.gif", "still_stylized_s.jpg"]  # --ext: stills only
    for name in ("x.webp", "x.png", "x.GIF"):  # any animated format, --ext not applying
        [job] = plan_jobs(gif, [style], output=tmp_path / name, ext="jpg")
        assert job.output.name == name
    for name in ("x.jpg", "x.bmp", "x.mp4"):
        with pytest.raises(UsageError, match=rf"--output .*{name}: .*clip.gif is an "
                                             r"animation; name a \.gif, \.webp, \.png file"):
            plan_jobs(gif, [style], output=tmp_path / name)
    with pytest.raises(UsageError, match="--method gatys cannot stylise animations"):
        plan_jobs(tmp_path / "in", [style], settings=Settings(method="gatys"))
    plan_jobs(still, [style], settings=Settings(method="gatys"))  # a still GIF is an image
    with pytest.raises(UsageError, match="cannot write .gif"):  # and written as one
        plan_jobs(still, [style], output=tmp_path / "x.gif")


# ---- stylising -----------------------------------------------------------------------------

def test_folder_of_animations_stills_and_bad_files(params, weights, tmp_path, capsys, caplog,
                                                   monkeypatch):
    """GIF, WebP and APNG come back as stylised animations of their kind with the same
    durations and loop count; a still GIF as a still PNG; a truncated animated GIF fails
    in one line and the run goes on; every file not processed is named with its reason."""
    folder = tmp_path / "content"
    folder.mkdir()
    frames = moving_frames(3, seed=2)
    style = random_image(np.random.default_rng(3), 20, 20)
    style_path = write_image(tmp_path / "s.png", style)
    write_animation(folder / "loop2.gif", frames, loop=2)
    write_animation(folder / "once.gif", frames[::-1])  # no loop: plays once
    write_animation(folder / "lossless.webp", frames, loop=2, lossless=True)
    write_animation(folder / "apng.png", frames, loop=2)
    write_image(folder / "still.gif", frames[1])
    data = write_animation(tmp_path / "whole.gif", frames, loop=0).read_bytes()
    (folder / "truncated.gif").write_bytes(data[: len(data) * 2 // 3])
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.gif").write_bytes(data)  # hidden names are ignored by design
    (folder / "locked").mkdir()
    write_image(folder / "locked" / "x.png", frames[0])
    real_scandir = os.scandir

    def scandir(path="."):  # a folder this run may not read (root reads through chmod)
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    out = tmp_path / "out"
    code = stylize.main(["--content", str(folder), "--style", str(style_path), "--weights",
                         weights, "--output", str(out), *SMALL])
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert code == 1 and "1 of 6 outputs failed" in err and "Traceback" not in err
    [failure] = [line for line in err.splitlines() if "truncated" in line]
    assert failure.strip().startswith("truncated_stylized_s.gif: ") and "truncated (" in failure
    assert sorted(p.name for p in out.iterdir()) == [
        "apng_stylized_s.png", "loop2_stylized_s.gif", "lossless_stylized_s.webp",
        "once_stylized_s.gif", "still_stylized_s.png"]
    # nothing left out silently: each file is an output, a failure, or named with a reason
    said = err + caplog.text
    assert "notes.txt" in said and "locked: cannot read this folder (Permission denied)" in said

    for name in ("loop2.gif", "once.gif", "lossless.webp", "apng.png"):
        written = out / name.replace(".", "_stylized_s.")
        shown, durations, loop = read_animation(folder / name)
        got, got_durations, got_loop = read_animation(written)
        assert Image.open(written).format == Image.open(folder / name).format
        assert (got_durations, got_loop) == (durations, loop) == (
            DURATIONS, None if name == "once.gif" else 2)
        assert len(got) == 3
        for ours, frame in zip(got, shown):
            if name.endswith(".gif"):
                assert_gif_close(ours, expected(params, frame, style))
            else:
                assert_matches(ours, expected(params, frame, style))
        # the bound can fail: the next frame (shifted 2 px) is far from this one's reference
        assert np.abs(got[0].astype(int) - expected(params, shown[1], style)).mean() > 10
    still = np.asarray(Image.open(out / "still_stylized_s.png"))
    [frame], _, _ = read_animation(folder / "still.gif")
    assert still.shape == (H, W, 3)
    assert_matches(still, expected(params, frame, style))


def test_single_animation_with_alpha_to_webp_encodes_the_style_once(params, weights, tmp_path,
                                                                    monkeypatch):
    """A transparent GIF written as lossless WebP (--output names the format): frames equal
    the still runs', alpha kept, durations and loop kept; the style encoded once for all
    frames (it serves one job only, where a still image would take it as an image)."""
    frames = moving_frames(3, seed=4)
    holes = [np.random.default_rng(10 + i).uniform(size=(H, W)) < 0.15 for i in range(3)]
    content = transparent_gif(tmp_path / "t.gif", frames, holes)
    style = random_image(np.random.default_rng(5), 20, 20)
    style_path = write_image(tmp_path / "s.png", style)
    calls = []
    encode = transfer.encode_style
    monkeypatch.setattr(transfer, "encode_style",
                        lambda p, s, **kw: calls.append(s.shape) or encode(p, s, **kw))
    out = tmp_path / "t.webp"
    assert stylize.main(["--content", str(content), "--style", str(style_path), "--alpha",
                         "0.6", "--weights", weights, "--output", str(out), *SMALL]) == 0
    assert calls == [(20, 20, 3)]
    shown, durations, loop = read_animation(content)
    got, got_durations, got_loop = read_animation(out)
    assert Image.open(out).format == "WEBP" and len(got) == 3
    assert (got_durations, got_loop) == (durations, loop) == (DURATIONS, 0)
    for ours, frame, hole in zip(got, shown, holes):
        assert ours.shape == (H, W, 4)
        assert np.array_equal(ours[..., 3] == 0, hole) and np.array_equal(frame[..., 3] == 0,
                                                                          hole)
        # where it is transparent libwebp keeps no colour
        shown_rgb = ours[..., :3][~hole][:, None]
        assert_matches(shown_rgb, expected(params, frame, style, alpha=0.6)[~hole][:, None])
