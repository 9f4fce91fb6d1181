"""adain_jax/video.py and video content in stylize.py.

Test videos are made here with PyAV directly (not through video.py) and read back with
PyAV directly. Expected frames are the PyTorch port (tests/torch_reference.py) on each
input frame, quantised as the image outputs: the lossless FFV1 (.mkv) output must match
within 1 step of 255 with >= 99% of values equal (see test_stylize_cli.py for why 1
step); H.264 (.mp4, yuv420p, CRF 17) is lossy: its reference goes through PyAV's own
RGB -> yuv420p -> RGB conversion (half-resolution chroma alone moves these noisy frames
by ~9 steps of 255 on average), and the bound for what H.264 adds is a mean absolute
error below 5 steps and PSNR above 32 dB (measured 1.5 to 3.3 steps, 35.6 to 40.8 dB; the
next frame's reference is 14 steps off).
Audio must come through packet for packet (equal bytes), or be left out with a warning.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import stylize
from adain_jax import stylize_files, video
from adain_jax.stylize_files import Settings, UsageError, plan_jobs
from tests.stylize_helpers import (as_float, assert_matches, quantise, random_image,
                                   torch_stylize, write_image)
from tests.stylize_helpers import params, weights  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[1]
RATE = Fraction(30000, 1001)  # NTSC: a rate that is not a whole number
SMALL = ["--content-size", "0", "--style-size", "0", "-q"]


def moving_frames(n, h, w, seed=0):
    """uint8 frames of a pattern that shifts by 2 px per frame, so frames differ."""
    base = random_image(np.random.default_rng(seed), h, w + 2 * n)
    return [base[:, 2 * i: 2 * i + w] for i in range(n)]


def write_video(path, frames, rate=RATE, codec="ffv1", pix_fmt="bgr0", audio=None):
    """With PyAV directly: lossless FFV1 in Matroska unless told otherwise; `audio`: the
    codec of a mono 8 kHz noise track as long as the video ("aac" or "pcm_s16le")."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = pix_fmt
        if audio:
            sound = container.add_stream(audio, rate=8000)
        for i, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if audio:
            fmt = "fltp" if audio == "aac" else "s16"
            rng = np.random.default_rng(0)
            for start in range(0, int(8000 * len(frames) / rate), 1024):
                noise = rng.uniform(-0.3, 0.3, (1, 1024))
                samples = (noise if fmt == "fltp" else noise * 32767).astype(
                    np.float32 if fmt == "fltp" else np.int16)
                chunk = av.AudioFrame.from_ndarray(samples, format=fmt, layout="mono")
                chunk.sample_rate, chunk.pts = 8000, start
                container.mux(sound.encode(chunk))
            container.mux(sound.encode(None))
    return path


def audio_packets(path) -> list[bytes]:
    """The first audio stream's packets, as bytes, with PyAV directly."""
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(container.streams.audio[0])
                if p.dts is not None]


def read_video(path):
    """(frames as uint8 arrays, average rate, codec name, stream types), with PyAV directly."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return (frames, stream.average_rate, stream.codec_context.name,
                sorted(s.type for s in container.streams))


def yuv420p_round_trip(rgb_u8):
    """What H.264's yuv420p alone does to a frame (chroma at half resolution), by PyAV."""
    frame = av.VideoFrame.from_ndarray(rgb_u8, format="rgb24")
    return frame.reformat(format="yuv420p").to_ndarray(format="rgb24")


def expected_frames(params, frames, style_u8, alpha=1.0):
    """Each frame stylised by the PyTorch port (stylize_helpers.torch_stylize), quantised."""
    style = as_float(style_u8)
    return [quantise(np.clip(torch_stylize(params, as_float(f), style, alpha), 0, 1))
            for f in frames]


# ---- video.py alone ----------------------------------------------------------------------

def test_writer_and_reader_round_trip_lossless_mkv(tmp_path):
    frames = moving_frames(5, 18, 22)
    with video.VideoWriter(tmp_path / "out.mkv", RATE) as writer:
        for f in frames:
            writer.write(as_float(f))
    assert not video.partial_path(tmp_path / "out.mkv").exists()
    got, rate, codec, _ = read_video(tmp_path / "out.mkv")
    assert codec == "ffv1" and rate == RATE
    assert len(got) == 5 and all(np.array_equal(a, b) for a, b in zip(got, frames))

    with video.VideoReader(tmp_path / "out.mkv") as reader:
        ours = list(reader)
        assert reader.rate == RATE and reader.shape == (18, 22)
    assert all(np.array_equal(quantise(a), b) for a, b in zip(ours, frames))


def test_h264_needs_even_sides_and_odd_is_refused(tmp_path):
    assert video.needs_even_sides("a.mp4") and not video.needs_even_sides("a.mkv")
    assert video.even_shape(31, 41) == (30, 40) and video.even_shape(1, 3) == (2, 2)
    writer = video.VideoWriter(tmp_path / "odd.mp4")
    with pytest.raises(video.VideoError, match="even frame sides, got 41x31"):
        writer.write(np.zeros((31, 41, 3), np.float32))


@pytest.mark.parametrize("name, content, reason", [
    ("noise.mp4", b"\x00\x01garbage" * 100, "cannot open as a video"),
    ("empty.mkv", b"", "cannot open as a video"),
])
def test_unreadable_files_are_one_line_errors(tmp_path, name, content, reason):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(video.VideoError, match=reason) as err:
        video.VideoReader(tmp_path / name)
    assert "\n" not in str(err.value) and str(err.value).startswith(str(tmp_path / name))


def test_a_video_without_a_video_stream_is_refused(tmp_path):
    path = tmp_path / "sound.mkv"
    with av.open(str(path), "w") as container:
        sound = container.add_stream("flac", rate=8000)
        chunk = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16",
                                           layout="mono")
        chunk.sample_rate, chunk.pts = 8000, 0
        container.mux(sound.encode(chunk))
        container.mux(sound.encode(None))
    with pytest.raises(video.VideoError, match="has no video stream"):
        video.VideoReader(path)


# ---- stylising videos --------------------------------------------------------------------

def test_mkv_video_frames_equal_stylised_images(params, tmp_path):
    """7 frames in batches of 3: the short last batch is padded, not recompiled or lost."""
    frames = moving_frames(7, 24, 32, seed=1)
    style = random_image(np.random.default_rng(2), 20, 20)
    content = write_video(tmp_path / "clip.mkv", frames)
    style_path = write_image(tmp_path / "style.png", style)
    settings = Settings(alpha=0.7, content_size=0, style_size=0, video_batch=3)
    jobs = plan_jobs(content, [style_path], output=tmp_path / "out", settings=settings,
                     video_ext="mkv")
    assert [j.output.name for j in jobs] == ["clip_stylized_style.mkv"]
    assert stylize_files.run(params, jobs, settings, progress=False) == []

    got, rate, codec, _ = read_video(jobs[0].output)
    assert codec == "ffv1" and rate == RATE and len(got) == 7
    for ours, want in zip(got, expected_frames(params, frames, style, alpha=0.7)):
        assert_matches(ours, want)
    # frames differ from one another, so a repeated or reordered frame would be caught
    assert np.abs(got[0].astype(int) - got[3].astype(int)).mean() > 5


def test_cli_mp4_odd_frames_lose_a_row_and_column_and_audio_is_copied(weights, params,
                                                                      tmp_path, capsys):
    frames = moving_frames(4, 25, 33, seed=3)
    style = random_image(np.random.default_rng(4), 20, 20)
    content = write_video(tmp_path / "clip.mkv", frames, rate=12, audio="aac")
    style_path = write_image(tmp_path / "style.png", style)
    out = tmp_path / "styled.mp4"
    code = stylize.main(["--content", str(content), "--style", str(style_path),
                         "--weights", weights, "--output", str(out), *SMALL])
    assert code == 0, capsys.readouterr().err
    got, rate, codec, types = read_video(out)
    assert codec == "h264" and rate == 12 and types == ["audio", "video"] and len(got) == 4
    packets = audio_packets(content)
    assert len(packets) >= 3 and audio_packets(out) == packets  # copied, not re-encoded
    want = [yuv420p_round_trip(f)
            for f in expected_frames(params, [f[:24, :32] for f in frames], style)]
    for ours, ref in zip(got, want):
        assert ours.shape == (24, 32, 3)
        err = np.abs(ours.astype(np.float64) - ref)
        psnr = 10 * np.log10(255.0**2 / np.mean(err**2))
        assert err.mean() < 5.0 and psnr > 32, (err.mean(), psnr)
    # the bound can fail: the next frame (shifted 2 px) is far from this one's reference
    assert np.abs(got[1].astype(np.float64) - want[0]).mean() > 10  # measured 14


def test_pcm_audio_is_left_out_of_mp4_with_a_warning_and_kept_in_mkv(params, tmp_path,
                                                                      caplog):
    content = write_video(tmp_path / "clip.mkv", moving_frames(3, 24, 32), audio="pcm_s16le")
    style = write_image(tmp_path / "s.png", random_image(np.random.default_rng(0), 20, 20))
    settings = Settings(content_size=0, style_size=0)
    for name in ("out.mp4", "out.mkv"):
        jobs = plan_jobs(content, [style], output=tmp_path / name, settings=settings)
        assert stylize_files.run(params, jobs, settings, progress=False) == []
    assert read_video(tmp_path / "out.mp4")[3] == ["video"]
    assert "its pcm_s16le audio cannot go into .mp4 as it is and is not copied" in caplog.text
    assert read_video(tmp_path / "out.mkv")[3] == ["audio", "video"]
    assert audio_packets(tmp_path / "out.mkv") == audio_packets(content)


def test_folder_with_images_videos_and_a_broken_video_goes_on(weights, tmp_path, capsys):
    folder = tmp_path / "content"
    folder.mkdir()
    write_video(folder / "a.mkv", moving_frames(2, 24, 32))
    write_image(folder / "b.png", random_image(np.random.default_rng(5), 24, 32))
    (folder / "c.mp4").write_bytes(b"not a video at all" * 50)
    style = write_image(tmp_path / "s.png", random_image(np.random.default_rng(6), 20, 20))
    code = stylize.main(["--content", str(folder), "--style", str(style), "--weights",
                         weights, "--output", str(tmp_path / "out"), *SMALL])
    err = capsys.readouterr().err
    assert code == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a_stylized_s.mp4", "b_stylized_s.png"]
    assert "1 of 3 outputs failed" in err
    assert "c_stylized_s.mp4: " in err and "cannot open as a video" in err
    assert "Traceback" not in err


def test_failure_mid_video_keeps_the_frames_done_in_the_partial_file(params, tmp_path,
                                                                      monkeypatch):
    frames = moving_frames(5, 24, 32, seed=7)
    content = write_video(tmp_path / "clip.mkv", frames)
    style = write_image(tmp_path / "s.png", random_image(np.random.default_rng(8), 20, 20))

    real_iter = video.VideoReader.__iter__

    def damaged(self):  # the file is damaged at frame 4
        for i, frame in enumerate(real_iter(self)):
            if i == 3:
                raise video.VideoError(self.path, "cannot decode frame 4: invalid data")
            yield frame

    monkeypatch.setattr(video.VideoReader, "__iter__", damaged)
    settings = Settings(content_size=0, style_size=0)
    jobs = plan_jobs(content, [style], output=tmp_path / "out.mkv", settings=settings)
    failures = stylize_files.run(params, jobs, settings, progress=False)
    partial = video.partial_path(tmp_path / "out.mkv")
    assert len(failures) == 1 and not (tmp_path / "out.mkv").exists()
    assert failures[0].message == (f"{content}: cannot decode frame 4: invalid data; the 3 "
                                   f"frames before it are in {partial}")
    got, _, _, _ = read_video(partial)
    want = expected_frames(params, frames[:3], random_image(np.random.default_rng(8), 20, 20))
    assert len(got) == 3
    for ours, ref in zip(got, want):
        assert_matches(ours, ref)


@pytest.mark.parametrize("argv, message", [
    (["--method", "gatys"], "--method gatys cannot stylise videos"),
    (["--output", "x.png"], "is a video; name a .mp4, .mov, .m4v, .mkv file or a folder"),
])
def test_usage_errors_for_video_content(tmp_path, argv, message):
    content = write_video(tmp_path / "clip.mkv", moving_frames(1, 24, 32))
    style = write_image(tmp_path / "s.png", random_image(np.random.default_rng(0), 20, 20))
    settings = Settings(method=argv[1]) if argv[0] == "--method" else Settings()
    output = argv[1] if argv[0] == "--output" else None
    with pytest.raises(UsageError, match=message.replace(".", r"\.")):
        plan_jobs(content, [style], output=output and tmp_path / output, settings=settings)


def test_an_image_cannot_be_written_as_a_video(tmp_path):
    content = write_image(tmp_path / "c.png", random_image(np.random.default_rng(0), 24, 32))
    with pytest.raises(UsageError, match="names a video, but .* is an image"):
        plan_jobs(content, [content], output=tmp_path / "x.mp4")


def test_without_pyav_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    content = write_video(tmp_path / "clip.mkv", moving_frames(1, 24, 32))
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    with pytest.raises(video.VideoError, match=r"clip.mkv: videos need PyAV: pip install "
                                               r"'adain-jax\[video\]'"):
        video.VideoReader(content)


# ---- Ctrl-C and concurrent writers -------------------------------------------------------

# Runs stylize.py's main with SIGINT sent to itself at a chosen moment (argv[1]):
# "compile": 0.2 s into an XLA compilation of the video job that lasts that long (a
# KeyboardInterrupt there returns while the compilation goes on in a JAX thread; exiting
# under it crashed); "compile twice": a second SIGINT 0.2 s later, which must stop at
# once; "none": no hook.
INTERRUPT_DRIVER = """
import os, signal, sys, threading
moment, argv = sys.argv[1], sys.argv[2:]
import stylize
from adain_jax import stylize_files
from jax._src import compiler  # private, but the one place to be inside a compilation

real_compile, real_job = compiler.backend_compile_and_load, stylize_files.stylize_video_job
left = [{"compile": 1, "compile twice": 2}.get(moment, 0)]  # SIGINTs still to send

def compile_hooked(*args, **kwargs):
    done = threading.Event()

    def send():  # every 0.2 s while this compilation runs
        while left[0] and not done.wait(0.2):
            left[0] -= 1
            os.kill(os.getpid(), signal.SIGINT)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        return real_compile(*args, **kwargs)
    finally:
        done.set()
        sender.join()
        if not left[0]:
            compiler.backend_compile_and_load = real_compile

def job(*args, **kwargs):  # from the job's start, not the compilations before it
    if left[0]:
        compiler.backend_compile_and_load = compile_hooked
    return real_job(*args, **kwargs)

stylize_files.stylize_video_job = job
sys.exit(stylize.main(argv))
"""


def test_ctrl_c_during_a_video_exits_130_at_every_moment(weights, params, tmp_path):
    """Three runs at once, each interrupted at another moment: 0.2 s into an XLA
    compilation (exit 139, a segfault, before the fix), twice there, and from outside
    once the partial file has frames (between frames, decoding, encoding or muxing).
    Each must exit 130 with one line and keep a playable partial file of the first
    frames (none when stopped at once before the first), and no lock file."""
    frames = moving_frames(200, 24, 32, seed=9)
    content = write_video(tmp_path / "long.mkv", frames)
    style_u8 = random_image(np.random.default_rng(10), 20, 20)
    style = write_image(tmp_path / "s.png", style_u8)
    runs = {}
    for moment in ("compile", "compile twice", "none"):
        out = tmp_path / moment.replace(" ", "_") / "out.mkv"
        argv = ["--content", str(content), "--style", str(style), "--weights", weights,
                "--output", str(out), *SMALL]
        proc = subprocess.Popen([sys.executable, "-c", INTERRUPT_DRIVER, moment, *argv],
                                cwd=ROOT, stderr=subprocess.PIPE, text=True)
        runs[moment] = proc, out
    proc, out = runs["none"]
    partial = video.partial_path(out, proc.pid)
    deadline = time.monotonic() + 120
    while not partial.exists() and proc.poll() is None:  # made as the first frame is written
        assert time.monotonic() < deadline, "no partial file after 120 s"
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)

    for moment, (proc, out) in runs.items():
        err = proc.communicate(timeout=120)[1]
        assert proc.returncode == 130, (moment, err)
        partial = video.partial_path(out, proc.pid)
        lines = err.strip().splitlines()
        assert not out.exists() and not video.lock_path(out).exists(), moment
        if moment == "compile twice":  # stopped at once, before the first frame
            assert lines == ["stylize.py: interrupted; finished outputs are kept"], err
            assert not partial.exists()
            continue
        assert partial.exists(), (moment, err)
        got, _, codec, _ = read_video(partial)
        assert codec == "ffv1" and 1 <= len(got) < 200, (moment, len(got))
        if moment == "compile":  # the first Ctrl-C waits for the frame being stylised
            assert len(got) == 1
        done = "frame" if len(got) == 1 else f"{len(got)} frames"
        assert lines == [f"stylize.py: interrupted; finished outputs are kept, and {partial} "
                         f"holds the first {done} of out.mkv"], err
        # the frames kept are the first ones, in order: compare the last kept with its source
        want = expected_frames(params, [frames[len(got) - 1]], style_u8)
        assert_matches(got[-1], want[0])


def test_first_ctrl_c_is_a_request_and_the_second_interrupts():
    """The first SIGINT only sets `requested`; the second raises KeyboardInterrupt at once;
    the usual handler is back afterwards, and an ignored SIGINT stays ignored."""
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # else no test
    kill = lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(0.01))
    with video.interrupts_between_frames() as interrupt:
        assert not interrupt.requested
        try:
            kill()
        except KeyboardInterrupt:  # caught, or it would stop the whole test session
            pytest.fail("the first SIGINT raised KeyboardInterrupt")
        assert interrupt.requested
        with pytest.raises(KeyboardInterrupt):
            kill()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with video.interrupts_between_frames() as interrupt:
            kill()  # ignored
            assert not interrupt.requested
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_second_writer_of_a_video_being_written_is_refused(tmp_path):
    """flock locks are per open file, so two writers in one process conflict as two
    processes' do; once the first is done, no lock or partial file is left."""
    frames = moving_frames(3, 16, 16)
    out = tmp_path / "out.mkv"
    with video.VideoWriter(out, RATE) as first:
        first.write(as_float(frames[0]))
        assert ".partial." in first.partial.name and first.partial.exists()
        with pytest.raises(video.VideoError, match=rf"^{out}: another run is writing this "
                                                   rf"video now \(process {os.getpid()}\)"):
            with video.VideoWriter(out, RATE) as second:
                second.write(as_float(frames[2]))
        for f in frames[1:]:
            first.write(as_float(f))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mkv"]
    got = read_video(out)[0]
    assert len(got) == 3 and all(np.array_equal(a, b) for a, b in zip(got, frames))
    with video.VideoWriter(out, RATE) as third:  # free again
        third.write(as_float(frames[1]))
    assert len(read_video(out)[0]) == 1


# Copies a clip's frames (inverted if argv[5] == "1") to argv[2] with VideoWriter, slowly,
# starting when the other copy is ready too (argv[3]: my ready file, argv[4]: the other's).
WRITER_DRIVER = """
import sys, time
from pathlib import Path
from adain_jax import video
clip, out, me, other, invert = sys.argv[1:]
with video.VideoReader(clip) as reader:
    frames = [1 - f if invert == "1" else f for f in reader]
Path(me).touch()
deadline = time.monotonic() + 60
while not Path(other).exists():
    assert time.monotonic() < deadline, "the other writer never came"
    time.sleep(0.001)
try:
    with video.VideoWriter(out, reader.rate) as writer:
        for frame in frames:
            writer.write(frame)
            time.sleep(0.02)
except video.VideoError as err:
    sys.exit(str(err))
"""


def test_two_processes_writing_one_video_at_once_never_mix(tmp_path):
    """Two processes write different frames to one output at the same moment: one is
    refused in one line, and the output is the other's whole video (lossless, so equal),
    with no partial or lock file left. Before the fix they shared one partial file."""
    frames = moving_frames(8, 16, 16, seed=13)
    clip = write_video(tmp_path / "clip.mkv", frames)
    out = tmp_path / "out" / "v.mkv"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER_DRIVER, str(clip), str(out),
                               str(tmp_path / f"ready{i}"), str(tmp_path / f"ready{1 - i}"),
                               str(i)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
             for i in (0, 1)]
    results = [(p.communicate(timeout=120)[1], p.returncode)[::-1] for p in procs]
    assert sorted(code for code, _ in results) == [0, 1], results
    won = [code for code, _ in results].index(0)
    # the process id is left out when the holder had not written it yet
    assert re.fullmatch(rf"{re.escape(str(out))}: another run is writing this video now"
                        rf"( \(process {procs[won].pid}\))?; wait for it to finish or write "
                        r"elsewhere \(lock: \.v\.mkv\.lock\)\n", results[1 - won][1]), results
    assert sorted(p.name for p in out.parent.iterdir()) == ["v.mkv"]
    got = read_video(out)[0]
    winner = [255 - f if won else f for f in frames]
    assert len(got) == 8 and all(np.array_equal(a, b) for a, b in zip(got, winner))


def test_a_video_output_another_run_is_writing_fails_before_any_work(params, tmp_path,
                                                                     monkeypatch):
    content = write_video(tmp_path / "clip.mkv", moving_frames(2, 24, 32))
    style = write_image(tmp_path / "s.png", random_image(np.random.default_rng(0), 20, 20))
    out = tmp_path / "out.mkv"
    settings = Settings(content_size=0, style_size=0)
    jobs = plan_jobs(content, [style], output=out, settings=settings)
    monkeypatch.setattr(stylize_files, "_stylize_frames", lambda *a: pytest.fail("stylised"))
    with video.VideoWriter(out, RATE) as other:  # as another run would hold it
        other.write(np.zeros((16, 16, 3), np.float32))
        failures = stylize_files.run(params, jobs, settings, progress=False)
    assert [f.message for f in failures] == [
        f"{out}: another run is writing this video now (process {os.getpid()}); wait for it "
        "to finish or write elsewhere (lock: .out.mkv.lock)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mkv", "out.mkv", "s.png"]
    assert read_video(out)[0][0].shape == (16, 16, 3)  # the other run's video, untouched


@pytest.mark.parametrize("degrees", [90, -90])
def test_display_rotation_is_applied_like_ffmpeg(params, tmp_path, degrees):
    """A phone's portrait video: landscape frames plus a display rotation. FFmpeg's command
    line shows a frame stored with set_display_rotation(d) as np.rot90(frame, d / 90)
    (checked by hand with ffmpeg 7's autorotation); the output must be upright like that."""
    frames = moving_frames(2, 24, 32, seed=11)
    path = tmp_path / "portrait.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=10)
        stream.height, stream.width, stream.pix_fmt = 24, 32, "bgr0"
        stream.set_display_rotation(degrees)
        for i, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    style_u8 = random_image(np.random.default_rng(12), 20, 20)
    style = write_image(tmp_path / "s.png", style_u8)
    settings = Settings(content_size=0, style_size=0)
    jobs = plan_jobs(path, [style], output=tmp_path / "out.mkv", settings=settings)
    assert stylize_files.run(params, jobs, settings, progress=False) == []
    got = read_video(tmp_path / "out.mkv")[0]
    upright = [np.ascontiguousarray(np.rot90(f, degrees // 90)) for f in frames]
    for ours, want in zip(got, expected_frames(params, upright, style_u8), strict=True):
        assert ours.shape == (32, 24, 3)
        assert_matches(ours, want)


def test_audio_is_shifted_as_the_video_when_streams_start_late(tmp_path):
    """A source whose video starts at 1 s and audio at 1.25 s: the output's video starts
    at 0, so its audio must start at 0.25 s, in sync (tolerance 1 ms)."""
    frames = moving_frames(4, 16, 16)
    source = tmp_path / "late.mkv"
    with av.open(str(source), "w") as container:  # PCM: no encoder delay to account for
        stream = container.add_stream("ffv1", rate=10)
        stream.height, stream.width, stream.pix_fmt = 16, 16, "bgr0"
        sound = container.add_stream("pcm_s16le", rate=8000)
        for i, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = 10 + i  # 1 s at 10 frames/s
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        rng = np.random.default_rng(0)
        for start in range(0, 3200, 800):
            chunk = av.AudioFrame.from_ndarray(rng.integers(-3000, 3000, (1, 800), np.int16),
                                               format="s16", layout="mono")
            chunk.sample_rate, chunk.pts = 8000, 10_000 + start  # 1.25 s
            container.mux(sound.encode(chunk))
        container.mux(sound.encode(None))

    def first_times(path):
        with av.open(str(path)) as container:
            return {s.type: float(next(p for p in container.demux(s) if p.dts is not None).pts
                                  * s.time_base) for s in container.streams}

    assert first_times(source) == {"video": 1.0, "audio": 1.25}
    out = tmp_path / "out.mkv"
    with video.VideoReader(source) as reader, \
            video.VideoWriter(out, reader.rate, audio_from=reader) as writer:
        for frame in reader:
            writer.write(frame)
    starts = first_times(out)
    assert starts["video"] == 0.0
    assert abs(starts["audio"] - 0.25) < 1e-3, starts
    assert audio_packets(out) == audio_packets(source)
