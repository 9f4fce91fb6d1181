"""adain_jax/temporal.py and stylize.py --temporal, on generated clips of known motion.

References: float64 NumPy re-statements of the pooled statistics, the running average and
Lai et al.'s warping error (with the clips' true flow, integer shifts, instead of an
estimate). The weights are tests/stylize_helpers' random He-scaled ones: their decoder
re-draws its texture whenever the scene moves by a number of pixels that is not a
multiple of 8 (the encoder pools by 8), which is exactly the flicker the modes are for.

Measured on these clips (64 x 96, 12 frames; ratios to per-frame AdaIN):
- pan with a brighter, higher-contrast part entering and per-frame noise: warping error
  stats 0.92, flow 0.24, stats+flow 0.22 (0.92, 0.81, 0.73 at interval 5); sharpness
  0.97 / 0.99 / 0.94; frame-to-frame change 0.96 / 0.76 / 0.72; content loss 1.00 / 0.86 /
  0.89; style loss 1.04 / 0.82 / 0.95.
- a bright object entering a still scene and staying: warping error stats 0.79; style
  loss 1.05, content loss 0.99. Over other seeds: 0.76 and 0.81, style loss 1.02 and 1.05;
  a larger object (24 px) gives 0.74 to 0.80 but a style loss up to 1.14: frames without
  the object no longer get their own statistics, the price of not flickering when it
  enters.
"""
from __future__ import annotations

import contextlib
import csv
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import adain_jax
import stylize
from adain_jax import evaluation, ops, stylize_files, temporal, transfer, video
from adain_jax.cli import evaluate
from adain_jax.configs import Settings
from tests.stylize_helpers import pixels, random_image, write_image
from tests.stylize_helpers import params, weights  # noqa: F401  (fixtures)
from tests.test_video import audio_packets, read_video, write_video

H, W, N = 64, 96, 12
SHIFT = 3  # pan speed, px per frame: not a multiple of the encoder's 8


def texture(rng, h, w, sigma=2.0):
    """Zero-mean, unit-std smooth colour noise (a box-blurred white noise)."""
    x = rng.normal(size=(h + 8, w + 8, 3))
    k = int(2 * sigma) + 1
    for axis in (0, 1):
        x = sum(np.roll(x, i, axis) for i in range(k)) / k
    x = x[4: 4 + h, 4: 4 + w]
    return (x - x.mean()) / x.std()


def u8(frames):
    return [np.clip(np.rint(f * 255), 0, 255).astype(np.uint8) for f in frames]


def pan_clip(seed=1):
    """Frames of a camera panning right by SHIFT px, the scene's right part brighter and
    of more contrast, with per-frame noise. True flow from frame t to t-1: (+SHIFT, 0),
    the last SHIFT columns newly visible."""
    rng = np.random.default_rng(seed)
    wide = W + SHIFT * N
    scene = 0.45 + 0.12 * texture(rng, H, wide)
    split = W + SHIFT * N // 2
    scene[:, split:] = 0.70 + 0.25 * texture(rng, H, wide - split)
    return u8([scene[:, SHIFT * t: SHIFT * t + W] + rng.normal(0, 0.01, (H, W, 3))
               for t in range(N)])


def entering_clip(seed=3, size=20, speed=8):
    """A still scene that a bright square enters from the left (speed px per frame) and
    then stays in: its statistics change while the camera stands still."""
    rng = np.random.default_rng(seed)
    background = 0.4 + 0.1 * texture(rng, H, W)
    thing = 0.95 + 0.05 * texture(rng, size, size)
    top, frames = (H - size) // 2 // 8 * 8, []
    for t in range(N):
        frame = background.copy()
        left = min(-size + speed * t, 0)
        if left + size > 0:
            frame[top: top + size, : left + size] = thing[:, -left:]
        frames.append(frame)
    return u8(frames)


def global_shift_flow(a, b, reach=24):
    """The flow of a pure horizontal pan, found by exhaustive search (a function of two
    gray frames, as temporal.Flow): the integer d with a(x) = b(x + d) most nearly."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    w = a.shape[1]
    cost = {d: np.mean((a[:, max(0, -d): w - max(0, d)] - b[:, max(0, d): w + min(0, d)]) ** 2)
            for d in range(-reach, reach + 1)}
    return shift_field(a.shape, min(cost, key=cost.get))


def shift_field(shape, dx):
    f = np.zeros(tuple(shape[:2]) + (2,), np.float32)
    f[..., 0] = dx
    return f


def warping_error_reference(outputs, shift, interval=1):
    """Lai et al.'s error in float64 with an integer horizontal shift of `shift` px per
    frame: output t-k at x + k*shift against output t at x, for x whose source is inside."""
    errors = []
    d = shift * interval
    for t in range(interval, len(outputs)):
        now = np.asarray(outputs[t], np.float64)
        before = np.asarray(outputs[t - interval], np.float64)
        diff = now[:, : W - d] - before[:, d:] if d else now - before
        errors.append(np.sum(diff**2) / (H * (W - d)))
    return float(np.mean(errors))


# ---- pieces -------------------------------------------------------------------------------

def test_pool_stats_equal_statistics_of_all_frames_together():
    rng = np.random.default_rng(0)
    feats = [rng.normal(i, 1 + i, (5, 7, 4)) for i in range(3)]  # frames of one size
    per_frame = [ops.mean_std(jnp.asarray(f[None], jnp.float32)) for f in feats]
    mean, std = temporal.pool_stats(np.concatenate([m for m, _ in per_frame]),
                                    np.concatenate([s for _, s in per_frame]), [35] * 3)
    everything = np.concatenate([f.reshape(-1, 4) for f in feats])  # float64
    np.testing.assert_allclose(mean[0], everything.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std[0], np.sqrt(everything.var(0, ddof=1) + ops.EPS), rtol=1e-5)


def test_running_stats_is_the_recursive_average_across_batches():
    rng = np.random.default_rng(0)
    own_mean, own_std = rng.normal(size=(7, 3)), rng.uniform(1, 2, (7, 3))
    m = 0.8
    expected_mean, expected_std = [own_mean[0]], [own_std[0]]
    for i in range(1, 7):
        expected_mean.append(m * expected_mean[-1] + (1 - m) * own_mean[i])
        expected_std.append(m * expected_std[-1] + (1 - m) * own_std[i])
    state = temporal.VideoState("stats", momentum=m)
    got = []
    for part in (slice(0, 3), slice(3, 4), slice(4, 7)):  # batches of 3, 1 and 3 frames
        mean, std = temporal.running_stats(own_mean[part].astype(np.float32),
                                           own_std[part].astype(np.float32),
                                           *state.running(lambda: 3))
        state.advance(mean[-1], std[-1])
        got.append(np.stack([mean, std], 1))
    got = np.concatenate(got)
    np.testing.assert_allclose(got[:, 0], expected_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[:, 1], expected_std, rtol=1e-5, atol=1e-6)


def test_warp_and_consistency_on_a_known_shift():
    rng = np.random.default_rng(0)
    before = rng.uniform(size=(20, 30, 3)).astype(np.float32)
    flow_back = shift_field((20, 30), 3)  # frame t -> t-1
    warped = temporal.warp(before, flow_back)
    np.testing.assert_allclose(warped[:, :27], before[:, 3:], atol=1e-6)
    mask = temporal.consistent(flow_back, -flow_back)
    assert mask[:, :27].all() and not mask[:, 27:].any()  # the last 3 columns are new
    assert not temporal.consistent(flow_back, flow_back)[:, :27].any()  # a round trip of 6 px


def test_apply_with_content_stats(params):  # noqa: F811
    rng = np.random.default_rng(0)
    content = random_image(rng, 32, 40).astype(np.float32) / 255
    other = random_image(rng, 32, 40).astype(np.float32) / 255
    style = random_image(rng, 24, 24).astype(np.float32) / 255
    p = params
    # Someone else's statistics: reference AdaIN (Eq. 8) in float64 NumPy on f(c).
    given = transfer.encode_content_stats(p, other)
    feat = np.asarray(jax.jit(transfer.encode)(p, content[None]), np.float64)
    s = transfer.encode_style(p, style)
    t = ((feat - np.asarray(given.mean)[:, None, None]) / np.asarray(given.std)[:, None, None]
         * np.asarray(s.std)[:, None, None] + np.asarray(s.mean)[:, None, None])
    expected = jax.jit(transfer.decode, static_argnums=2)(p, jnp.asarray(t, jnp.float32),
                                                          (32, 40))[0]
    got = adain_jax.apply(p, content, style, content_stats=given)
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 1e-5
    with pytest.raises(ValueError, match="content_stats or masks"):
        adain_jax.apply(p, content, style, content_stats=given, masks=np.ones((1, 32, 40)))


def test_warping_error_equals_the_reference_and_farneback_is_close():
    frames = [f.astype(np.float32) / 255 for f in pan_clip()]
    rng = np.random.default_rng(5)
    outputs = [np.clip(f + rng.normal(0, 0.05, f.shape), 0, 1) for f in frames]
    for interval in (1, 5):
        exact = temporal.warping_error(frames, outputs, interval, method=global_shift_flow)
        assert exact == pytest.approx(warping_error_reference(outputs, SHIFT, interval), rel=1e-5)
    # the estimated flow gives nearly the same number (measured 1-8% off on these clips)
    assert temporal.warping_error(frames, outputs, 1) == pytest.approx(
        warping_error_reference(outputs, SHIFT, 1), rel=0.15)


# ---- the modes on clips -------------------------------------------------------------------

def stylize_modes(params, path, style_path, modes):
    """{mode: outputs} through stylize_files.video_outputs, as stylize.py runs it."""
    with video.VideoReader(path) as reader:
        frames = list(reader)
    results = {}
    for mode in modes:
        settings = Settings(content_size=0, style_size=0, temporal=mode)
        styles = stylize_files._Styles(params, settings, {style_path: 2})
        job = stylize_files.Job(path, (style_path,), path.with_suffix(".out.mkv"))
        results[mode] = list(stylize_files.video_outputs(params, job, frames, settings,
                                                         styles))
    return frames, results


def sharpness(outputs):
    return np.mean([np.mean(np.abs(np.diff(o, axis=0))) + np.mean(np.abs(np.diff(o, axis=1)))
                    for o in outputs])


def change(outputs):
    return np.mean([np.mean(np.abs(b - a)) for a, b in zip(outputs, outputs[1:])])


def mean_losses(params, contents, outputs, style):
    """Content and style loss (evaluation.measure) averaged over frames: one batch, whose
    mean squared errors are the means of the frames' own (all frames have one size)."""
    losses = evaluation.measure(params["encoder"], jnp.asarray(np.stack(outputs)),
                                jnp.asarray(np.stack(contents)), style)
    return [float(x) for x in losses]


@pytest.fixture(scope="module")
def style_path(tmp_path_factory):
    return write_image(tmp_path_factory.mktemp("s") / "style.png",
                       random_image(np.random.default_rng(1), 48, 48))


def style_batch(path):
    return jnp.asarray(pixels(path).astype(np.float32) / 255)[None]


def test_modes_on_a_pan(params, style_path, tmp_path):
    clip = write_video(tmp_path / "pan.mkv", pan_clip())
    frames, out = stylize_modes(params, clip, style_path, temporal.MODES)
    errors = {m: warping_error_reference(o, SHIFT) for m, o in out.items()}
    base = errors["none"]
    assert errors["flow"] <= 0.6 * base  # measured 0.24
    assert errors["stats+flow"] <= 1.05 * errors["flow"]  # measured 0.93 of flow's
    assert errors["stats"] <= base  # measured 0.92
    style = style_batch(style_path)
    content_loss, style_loss = mean_losses(params, frames, out["none"], style)
    for mode in ("stats", "flow", "stats+flow"):
        # no trivial wins: still moving (a frozen video has no change), still sharp (a
        # blurred one has less detail), losses at most 10% up
        assert change(out[mode]) >= 0.5 * change(out["none"]), mode
        assert sharpness(out[mode]) >= 0.9 * sharpness(out["none"]), mode
        c, s = mean_losses(params, frames, out[mode], style)
        assert c <= 1.1 * content_loss and s <= 1.1 * style_loss, (mode, c, s)


def test_stats_on_a_still_camera_with_an_object_entering(params, style_path, tmp_path):
    clip = write_video(tmp_path / "enter.mkv", entering_clip())
    frames, out = stylize_modes(params, clip, style_path, ("none", "stats"))
    still = lambda a, b: shift_field(a.shape, 0)  # noqa: E731
    errors = {m: temporal.warping_error(frames, o, method=still) for m, o in out.items()}
    assert errors["stats"] <= 0.85 * errors["none"]  # measured 0.79
    style = style_batch(style_path)
    content_loss, style_loss = mean_losses(params, frames, out["none"], style)
    c, s = mean_losses(params, frames, out["stats"], style)
    assert c <= 1.1 * content_loss and s <= 1.1 * style_loss  # measured 0.99 and 1.05


def test_running_stats_in_batches_equal_a_frame_by_frame_reference(params, style_path,
                                                                   tmp_path):
    """--stats-momentum with --video-batch 2 (a padded last batch): each frame uses the
    running average of the frames' own statistics, carried across batches."""
    clip = write_video(tmp_path / "enter.mkv", entering_clip()[2:7])
    with video.VideoReader(clip) as reader:
        frames = list(reader)
    m = 0.7
    settings = Settings(content_size=0, style_size=0, temporal="stats", stats_momentum=m,
                        video_batch=2)
    styles = stylize_files._Styles(params, settings, {style_path: 2})
    job = stylize_files.Job(clip, (style_path,), tmp_path / "out.mkv")
    got = list(stylize_files.video_outputs(params, job, frames, settings, styles))
    style = transfer.encode_style(params, style_batch(style_path))
    mean = std = None
    for frame, out in zip(frames, got):
        own = transfer.encode_content_stats(params, frame)
        own_mean, own_std = (np.asarray(x[0], np.float64) for x in own)
        mean = own_mean if mean is None else m * mean + (1 - m) * own_mean
        std = own_std if std is None else m * std + (1 - m) * own_std
        expected = np.clip(adain_jax.apply(params, frame, style, content_stats=(
            mean[None].astype(np.float32), std[None].astype(np.float32))), 0, 1)
        np.testing.assert_allclose(out, expected, atol=2e-5)
    assert len(got) == 5


# ---- stylize.py ---------------------------------------------------------------------------

def test_cli_stats_flow_keeps_audio(weights, params, style_path, tmp_path):  # noqa: F811
    frames = entering_clip()[:4]
    clip = write_video(tmp_path / "clip.mkv", frames, audio="pcm_s16le")
    out = tmp_path / "out.mkv"
    assert stylize.main(["--content", str(clip), "--style", str(style_path), "--output",
                         str(out), "--weights", weights, "--temporal", "stats+flow",
                         "--content-size", "0", "--style-size", "0", "-q"]) == 0
    written, _, codec, kinds = read_video(out)
    assert codec == "ffv1" and kinds == ["audio", "video"] and len(written) == 4
    assert audio_packets(out) == audio_packets(clip)
    with video.VideoReader(clip) as reader:
        decoded = list(reader)
    _, modes = stylize_modes(params, clip, style_path, ("stats+flow",))
    expected = [np.clip(np.rint(o * 255), 0, 255) for o in modes["stats+flow"]]
    diff = np.abs(np.stack(written).astype(int) - np.stack(expected).astype(int))
    assert diff.max() <= 1 and np.mean(diff == 0) >= 0.99
    assert len(decoded) == 4


@pytest.mark.parametrize("flags, message", [
    (["--stats-momentum", "0.5"], "--stats-momentum needs --temporal stats"),
    (["--temporal", "stats", "--mask", "m.png"], "cannot be used with --mask"),
    (["--temporal", "flow", "--temporal-weight", "1"], "--temporal-weight must be in"),
])
def test_cli_refuses_temporal_flags_that_cannot_work(flags, message, tmp_path):
    content = write_image(tmp_path / "c.png", random_image(np.random.default_rng(0), 16, 16))
    write_image(tmp_path / "m.png", random_image(np.random.default_rng(0), 16, 16))
    argv = ["--content", str(content), "--style", str(content), "--output",
            str(tmp_path / "o"), "-q"] + [str(tmp_path / f) if f == "m.png" else f
                                          for f in flags]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert stylize.main(argv) == 1
    assert message in err.getvalue() and "Traceback" not in err.getvalue()


def test_evaluate_video_writes_a_row_per_mode(weights, tmp_path, style_path):  # noqa: F811
    clip = write_video(tmp_path / "pan.mkv", pan_clip()[:5])
    assert evaluate.main(["--video", str(clip), "--style", str(style_path), "--vgg", weights,
                          "--size", "0", "--temporal", "none", "flow",
                          "--out", str(tmp_path / "eval"), "-q"]) == 0
    with open(tmp_path / "eval" / "video_results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["temporal"] for r in rows] == ["none", "flow"]
    assert all(int(r["frames"]) == 5 for r in rows)
    errors = [float(r["warping_error_1"]) for r in rows]
    assert errors[1] < 0.6 * errors[0]
    assert all(float(r["seconds_per_frame"]) > 0 and float(r["style_loss"]) > 0 for r in rows)
