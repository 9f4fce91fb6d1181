"""The update step against a PyTorch training step of the port (tests/torch_reference.py).

Reference: the port's train.py loop on the same weights and uint8 batches: Net.forward,
loss = content_weight * loss_c + style_weight * loss_s, torch.optim.Adam with the lr set to
lr / (1 + lr_decay * i) before step i.

Weights: random, the encoder's scaled by 2 and the decoder's by 3 from PyTorch's default
init, so that the decoded image is not nearly flat (its feature statistics would cancel).

Exactness is tested in float64 on both sides (jax x64; the CPU's Winograd and taps
convolutions are float32-only, so this runs the direct form): two steps' losses, gradients
and parameter updates (new - old, whose relative L2 is not dominated by the unchanged
weights) agree to 1e-10 or better (measured 1e-14 for gradients, 6e-12 for updates).

The float32 step is then held to float32's conditioning, not to luck. Max-pool near-ties
and ReLU signs flip under rounding, so even at these scales float32 gradients of this
16x16 problem are only good to ~4e-4: torch's own float32 step is 3.5e-4 relative L2 from
its float64 one, ours 2.9e-4 under XLA optimisation level 0 on an AVX-512 CPU and 1e-6
at the default level (the rounding differs, not the maths). So: gradients <= 2e-3 relative
L2 per tensor against the float64 port evaluated at our own parameters (a wrong gradient is
O(1)); losses <= 1e-5 relative. A float32 trajectory is not compared end to end: Adam's
first steps move each weight by about lr * g / (|g| + 1e-8), i.e. lr * sign(g), so
elements with tiny gradients land anywhere in [-lr, lr] (torch float32 against torch
float64: 3e-2 to 0.17). Instead the update our step applied is checked against
torch.optim.Adam (float64) fed our own gradients, <= 1e-4 relative L2 (measured 1.7e-5
and 4.3e-5: the new float32 weights, ~0.05, are rounded to ~4e-9, against updates of
~1e-4).
"""
import os
import struct
from collections import defaultdict
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from adain_jax import parallel, train
from tests import torch_reference as ref

ENCODER_SCALE, DECODER_SCALE = 2.0, 3.0  # a decoded image that is not flat, see above
CONFIG = train.TrainConfig(batch_size=2, lr=1e-4, lr_decay=0.5,  # decay visible in 2 steps
                           content_weight=100.0, style_weight=1.0)


def torch_models(dtype):
    vgg = ref.randomize_(ref.make_port_vgg(), 0, ENCODER_SCALE)
    decoder = ref.randomize_(ref.make_port_decoder(), 1, DECODER_SCALE)
    return ref.port_vgg_to_relu4_1(vgg).eval().to(dtype), decoder.to(dtype)


def uint8_batches(n_steps, batch=2, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return [{k: rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
             for k in ("content", "style")} for _ in range(n_steps)]


def flax_decoder(tensors) -> dict:
    """{conv: {kernel, bias}} as float64 copies of a torch decoder's named tensors."""
    copy = lambda t: t.detach().to(torch.float64).numpy().copy()
    return {name: {"kernel": copy(tensors[f"{i}.weight"]).transpose(2, 3, 1, 0),
                   "bias": copy(tensors[f"{i}.bias"])}
            for name, i in ref.PORT_DECODER_CONVS.items()}


def torch_training(dtype, batches, config=CONFIG):
    """The port's loop; returns decoder params before/after each step and the gradients."""
    vgg, decoder = torch_models(dtype)
    net = ref.Net(vgg, decoder)
    opt = torch.optim.Adam(decoder.parameters(), lr=config.lr)
    params = [flax_decoder(dict(decoder.named_parameters()))]
    grads, losses = [], []
    for i, batch in enumerate(batches):
        for group in opt.param_groups:  # the port's adjust_learning_rate(optimizer, i)
            group["lr"] = config.lr / (1.0 + config.lr_decay * i)
        loss, (loss_c, loss_s) = torch_loss(net, batch, dtype, config)
        opt.zero_grad()
        loss.backward()
        opt.step()
        grads.append(flax_decoder({n: p.grad for n, p in decoder.named_parameters()}))
        params.append(flax_decoder(dict(decoder.named_parameters())))
        losses.append((loss_c.item(), loss_s.item()))
    return params, grads, losses


def torch_loss(net, batch, dtype, config=CONFIG):
    """The port's weighted loss and its (loss_c, loss_s) of Net.forward on a uint8 batch."""
    to = lambda x: torch.from_numpy(x.transpose(0, 3, 1, 2) / 255.0).to(dtype)  # not via
    # ref.nchw, which rounds to float32
    loss_c, loss_s = net(to(batch["content"]), to(batch["style"]))
    return config.content_weight * loss_c + config.style_weight * loss_s, (loss_c, loss_s)


def torch_gradients_at(params, batch, config=CONFIG):
    """The port's float64 losses and decoder gradients at our decoder `params`."""
    vgg, decoder = torch_models(torch.float64)
    ref.load_into(decoder, params, ref.PORT_DECODER_CONVS)  # cast to float64: exact
    loss, (loss_c, loss_s) = torch_loss(ref.Net(vgg, decoder), batch, torch.float64, config)
    loss.backward()
    grads = flax_decoder({n: p.grad for n, p in decoder.named_parameters()})
    return grads, (loss_c.item(), loss_s.item())


def adam_gradients(opt_states) -> list:
    """The gradients Adam saw, from its first moments: mu_i = b1 mu_{i-1} + (1 - b1) g_i.

    Read back from the state the jitted step returns, so the step under test is the
    production one (make_train_step) and nothing is compiled twice.
    """
    b1 = 0.9  # optax.adam's default, as torch.optim.Adam's
    mus = [jax.tree.map(np.zeros_like, opt_states[0][0].mu)] + [s[0].mu for s in opt_states]
    return [jax.tree.map(lambda new, old: (new - b1 * old) / (1 - b1), mus[i + 1], mus[i])
            for i in range(len(mus) - 1)]


def our_training(dtype, batches, config=CONFIG):
    """Our jitted step on a 1-device mesh, from the same weights (cast to `dtype`)."""
    vgg, decoder = torch_models(torch.float64)
    cast = lambda tree: jax.tree.map(lambda x: np.asarray(x, dtype), tree)
    encoder = cast(ref.convs_from(vgg, ref.PORT_VGG_CONVS))
    decoder_params = cast(ref.convs_from(decoder, ref.PORT_DECODER_CONVS))
    optimizer = train.make_optimizer(config)
    mesh = parallel.make_mesh()
    state = parallel.replicate({"params": decoder_params, "opt": optimizer.init(decoder_params),
                                "step": np.int32(0)}, mesh)
    encoder = parallel.replicate(encoder, mesh)
    step = train.make_train_step(config, mesh)
    params, opt_states, metrics = [parallel.local_copy(state["params"])], [], []
    for batch in batches:
        state, m = step(state, encoder, parallel.shard_batch(batch, mesh))
        params.append(parallel.local_copy(state["params"]))
        opt_states.append(parallel.local_copy(state["opt"]))
        metrics.append(parallel.local_copy(m))
    assert int(parallel.local_copy(state["step"])) == len(batches)
    return params, adam_gradients(opt_states), metrics


def per_tensor(fn, a, b):
    return {(name, kind): fn(a[name][kind], b[name][kind]) for name in a for kind in a[name]}


def updates(params):
    return [jax.tree.map(np.subtract, new, old) for new, old in zip(params[1:], params[:-1])]


def torch_adam(start, grads, config=CONFIG):
    """torch.optim.Adam (float64) from `start` fed the given gradients, with the port's lr."""
    tensors = {key: torch.tensor(np.asarray(start[key[0]][key[1]], np.float64),
                                 requires_grad=True)
               for key in per_tensor(lambda a, b: None, start, start)}
    opt = torch.optim.Adam(tensors.values(), lr=config.lr)
    params = [start]
    for i, grad in enumerate(grads):
        for group in opt.param_groups:
            group["lr"] = config.lr / (1.0 + config.lr_decay * i)
        for (name, kind), tensor in tensors.items():
            tensor.grad = torch.tensor(np.asarray(grad[name][kind], np.float64))
        opt.step()
        tree = {}
        for (name, kind), tensor in tensors.items():
            tree.setdefault(name, {})[kind] = tensor.detach().numpy().copy()
        params.append(tree)
    return params


def test_two_steps_match_the_ports_training_step():
    """In float64 on both sides (jax x64) our step is the port's to rounding: everything."""
    batches = uint8_batches(2)
    ref_params, ref_grads, ref_losses = torch_training(torch.float64, batches)
    with jax.enable_x64():
        params, grads, metrics = our_training(np.float64, batches)
    assert jax.tree.leaves(params[-1])[0].dtype == np.float64
    for i in range(2):
        assert metrics[i]["loss_c"] == pytest.approx(ref_losses[i][0], rel=1e-12)
        assert metrics[i]["loss_s"] == pytest.approx(ref_losses[i][1], rel=1e-12)
        assert float(metrics[i]["lr"]) == pytest.approx(CONFIG.lr / (1 + CONFIG.lr_decay * i))
        grad_err = per_tensor(ref.rel_l2, grads[i], ref_grads[i])
        assert max(grad_err.values()) <= 1e-10, grad_err
        update_err = per_tensor(ref.rel_l2, updates(params)[i], updates(ref_params)[i])
        assert max(update_err.values()) <= 1e-9, update_err


def test_float32_step_is_the_float64_step_to_rounding():
    """The float32 program (Winograd and taps convolutions) at float32's conditioning.

    Step 0's gradients are float64's to 2e-6 (relative L2, per tensor). Step 1's point is
    a knife edge on AVX2 CPUs: there every decoder gradient is 2.8e-3 from float64 (and
    from the direct convolutions' float32 program, 2e-6), while the same parameters scaled
    by 1 +- 1e-4 give 4e-6 to 5e-6 (measured 2026-12-03, 2-core EPYC): one rounding on
    the other side of a ReLU or max-pool edge, not a wrong gradient. Hence 2e-5 at step 0
    and 5e-3 at step 1; a device sum instead of a mean, or a gradient missing a term, is
    orders of magnitude further away.
    """
    batches = uint8_batches(2)
    params, grads, metrics = our_training(np.float32, batches)
    adam_on_our_grads = torch_adam(params[0], grads)
    for i in range(2):
        ref_grads, ref_losses = torch_gradients_at(params[i], batches[i])
        assert metrics[i]["loss_c"] == pytest.approx(ref_losses[0], rel=1e-5)
        assert metrics[i]["loss_s"] == pytest.approx(ref_losses[1], rel=1e-5)
        grad_err = per_tensor(ref.rel_l2, grads[i], ref_grads)
        assert max(grad_err.values()) <= (2e-5 if i == 0 else 5e-3), grad_err
        adam_err = per_tensor(ref.rel_l2, updates(params)[i], updates(adam_on_our_grads)[i])
        assert max(adam_err.values()) <= 1e-4, adam_err


def test_lr_schedule_is_the_ports():
    schedule = train.lr_schedule(train.TrainConfig())
    for i in (0, 1, 1000, 159_999):
        assert float(schedule(jnp.int32(i))) == pytest.approx(1e-4 / (1 + 5e-5 * i), rel=1e-6)


# ---- helpers for the tests that run the whole loop ---------------------------------------

def make_images(folder: Path, count: int, size=(28, 20), seed=0, corrupt=0) -> Path:
    """`count` random PNGs (and `corrupt` truncated JPEGs) in `folder`."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:02d}.png")
    for i in range(corrupt):
        (folder / f"broken{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def events(logdir):
    """Every Event of the TensorBoard files in `logdir`, in order.

    Reads the TFRecord framing (u64 length, u32 crc, payload, u32 crc) and parses each
    payload with tensorboardX's Event proto, so no TensorFlow/TensorBoard is needed.
    """
    from tensorboardX.proto import event_pb2

    for path in sorted(Path(logdir).glob("events.out.tfevents.*")):
        raw, pos = path.read_bytes(), 0
        while pos < len(raw):
            (length,) = struct.unpack("<Q", raw[pos:pos + 8])
            yield event_pb2.Event.FromString(raw[pos + 12:pos + 12 + length])
            pos += 12 + length + 4


def read_events(logdir):
    """({tag: {step: value}} scalars, {tag: [steps]} images) from TensorBoard event files."""
    scalars, images = defaultdict(dict), defaultdict(list)
    for event in events(logdir):
        for value in event.summary.value:
            if value.HasField("image"):
                images[value.tag].append(event.step)
            else:
                scalars[value.tag][event.step] = value.simple_value
    return scalars, images


def logged_images(logdir, tag) -> list[np.ndarray]:
    """The images logged under `tag`, decoded (PNG in the event), in step order."""
    import io

    from PIL import Image

    return [np.asarray(Image.open(io.BytesIO(value.image.encoded_image_string)))
            for event in events(logdir) for value in event.summary.value
            if value.tag == tag and value.HasField("image")]


def is_crop_of(cell, sources) -> bool:
    """Whether `cell` equals a window of one of the `sources` images exactly."""
    from numpy.lib.stride_tricks import sliding_window_view

    return any((sliding_window_view(src, cell.shape)[..., 0, :, :, :] == cell)
               .all(axis=(-3, -2, -1)).any() for src in sources)


# ---- the CLI end to end -------------------------------------------------------------------

def cli_module(name):
    import importlib
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    return importlib.import_module(name)


def test_cli_trains_on_mock_coco_and_stylize_reads_the_export(tmp_path, capsys):
    """train.py's main on TFDS coco/2017 (tfds.testing.mock_data), styles with two corrupt
    files; then the exported file drives stylize.py."""
    import orbax.checkpoint as ocp
    import tensorflow_datasets as tfds
    from PIL import Image

    from adain_jax import data, weights
    from tests.test_parallel import random_params

    encoder = random_params()["encoder"]
    encoder_file = weights.save_params({"encoder": encoder}, tmp_path / "vgg.safetensors")
    styles = make_images(tmp_path / "styles", 3, seed=3, corrupt=2)
    workdir = tmp_path / "run"
    skipped_before = data.skipped_files()
    argv = ["--workdir", str(workdir), "--encoder-weights", str(encoder_file),
            "--tfds", "coco/2017", "--styles", str(styles), "--resize", "24", "--crop-size",
            "16", "--batch-size", "2", "--steps", "4", "--save-every", "2", "--sample-every",
            "2", "--log-every", "1"]
    with tfds.testing.mock_data(num_examples=6):
        assert cli_module("train").main(argv) == 0
    assert data.skipped_files() > skipped_before  # the corrupt styles were met and skipped

    # The export: our encoder unchanged, the decoder of the final checkpoint.
    exported = weights.load_params(workdir / "adain.safetensors")
    final = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / "4" / "state")
    for name in encoder:
        for kind in ("kernel", "bias"):
            np.testing.assert_array_equal(exported["encoder"][name][kind], encoder[name][kind])
    for name in exported["decoder"]:
        for kind in ("kernel", "bias"):
            np.testing.assert_array_equal(exported["decoder"][name][kind],
                                          final["params"][name][kind])
    assert sorted(exported) == ["decoder", "encoder"]

    # TensorBoard: every scalar at every step (log_every 1), the port's lr, sample images.
    scalars, images = read_events(workdir / "tensorboard")
    for tag in ("loss", "loss_c", "loss_s", "lr", "grad_norm", "images_per_second"):
        assert sorted(scalars[tag]) == [1, 2, 3, 4], tag
    for step in (1, 2, 3, 4):
        assert scalars["lr"][step] == pytest.approx(1e-4 / (1 + 5e-5 * (step - 1)), rel=1e-6)
        assert scalars["loss"][step] == pytest.approx(
            scalars["loss_c"][step] + 10 * scalars["loss_s"][step], rel=1e-5)
    assert images["content_style_output"] == [2, 4]
    # Its columns are content | style | output: each row's middle cell is a crop of a
    # style image as the data pipeline resizes it (20x28 -> 24x33, PIL bilinear), the
    # left one is a content crop, not a style's.
    resized = [np.asarray(Image.open(p).convert("RGB").resize((33, 24), Image.BILINEAR))
               for p in sorted(styles.glob("img*.png"))]
    grid = logged_images(workdir / "tensorboard", "content_style_output")[-1]
    assert grid.shape == (2 * 16, 3 * 16, 3)
    for row in range(2):
        cells = grid[16 * row:16 * (row + 1)].reshape(16, 3, 16, 3).transpose(1, 0, 2, 3)
        assert is_crop_of(cells[1], resized) and not is_crop_of(cells[0], resized), row

    # The settings saved with the checkpoint hold the batch size used: --batch-size 2 on
    # one process, so 2 per step and 2 from this process's data iterator.
    record = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(
        workdir / "checkpoints" / "4" / "config")
    assert (record["batch_size"], record["data"]["batch_size"]) == (2, 2 // jax.process_count())

    # Rerun when finished, with one data setting changed and the export deleted: nothing
    # to train; only the changed setting is named; the export is written again from the
    # final checkpoint.
    (workdir / "adain.safetensors").unlink()
    capsys.readouterr()
    with tfds.testing.mock_data(num_examples=6):
        assert cli_module("train").main(argv + ["--resize", "32"]) == 0
    err = capsys.readouterr().err
    assert "already at step 4 of 4" in err
    assert [line for line in err.splitlines() if "resuming with" in line] == [
        "resuming with data.resize=32 (the checkpoint was written with 24)"], err
    assert_decoder_is(workdir / "adain.safetensors", final["params"])

    content = make_images(tmp_path / "content", 1, size=(24, 16), seed=4) / "img00.png"
    output = tmp_path / "stylized.png"
    capsys.readouterr()
    code = cli_module("stylize").main([
        "--content", str(content), "--style", str(styles / "img00.png"), "--weights",
        str(workdir / "adain.safetensors"), "--output", str(output), "--content-size", "0",
        "--style-size", "0", "-q"])
    assert code == 0, capsys.readouterr().err
    assert Image.open(output).size == (24, 16)

    # An export that cannot be written (a folder in its place) stops with one line.
    (workdir / "adain.safetensors").unlink()
    (workdir / "adain.safetensors").mkdir()
    with tfds.testing.mock_data(num_examples=6):
        assert cli_module("train").main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"train.py: error: {workdir / 'adain.safetensors'}: cannot write the "
                       "trained model (Is a directory); rerun the same command to continue from "
                       "the checkpoint of step 4"), err
    assert "Traceback" not in "\n".join(err)


def assert_decoder_is(export, params):
    """The decoder in the exported file equals `params` (a checkpoint's), bit for bit."""
    from adain_jax import weights

    exported = weights.load_params(export)["decoder"]
    assert sorted(exported) == sorted(params)
    for name in exported:
        for kind in ("kernel", "bias"):
            np.testing.assert_array_equal(exported[name][kind], params[name][kind],
                                          err_msg=f"{name}/{kind}")


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    train_cli = cli_module("train")
    styles = make_images(tmp_path / "styles", 1)
    base = ["--workdir", str(tmp_path / "run"), "--content-dir", str(styles),
            "--styles", str(styles)]
    from adain_jax import weights
    from tests.test_parallel import random_params

    encoder = weights.save_params({"encoder": random_params()["encoder"]},
                                  tmp_path / "vgg.safetensors")
    cases = [
        (["--encoder-weights", str(tmp_path / "missing.safetensors")],
         f"{tmp_path / 'missing.safetensors'}: no such weights file"),
        (["--encoder-weights", str(encoder), "--steps", "0"], "--steps must be at least 1"),
        (["--encoder-weights", str(encoder), "--crop-size", "12", "--resize", "20"],
         "--crop-size 12 must be a multiple of 8 for vgg19"),
    ]
    # A workdir that cannot be a folder is refused before the weights are read (the
    # missing weights file is not what the last case reports).
    notes = tmp_path / "notes.txt"
    notes.write_text("not a folder")
    cases += [
        (["--encoder-weights", str(encoder), "--workdir", str(notes)],
         f"{notes}: is a file, not a folder; pass another --workdir"),
        (["--encoder-weights", str(tmp_path / "missing.safetensors"), "--workdir",
          str(notes / "run")], f"{notes / 'run'}: {notes} is a file, not a folder"),
    ]
    for extra, expected in cases:
        assert train_cli.main(base + extra) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("train.py: error: ") and expected in err[-1], err
        assert "Traceback" not in "\n".join(err)
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(base + ["--batch-size", "two"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_cli_read_only_workdir_is_one_line(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        for workdir in (folder, folder / "run"):
            code = cli_module("train").main(["--workdir", str(workdir), "--content-dir",
                                             str(tmp_path), "--styles", str(tmp_path)])
            assert code == 1
            err = capsys.readouterr().err.strip()
            assert err.count("\n") == 0 and f"{workdir}: " in err, err
            assert "Permission denied" in err, err
    finally:
        folder.chmod(0o755)


def test_cli_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_module("train").main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--workdir", "--encoder-weights", "--steps", "--batch-size", "--lr",
                 "--lr-decay", "--content-weight", "--style-weight", "--tfds", "--data-dir",
                 "--content-dir", "--styles", "--resize", "--crop-size", "--resize-mode",
                 "--seed", "--workers", "--save-every", "--export-every", "--sample-every",
                 "--distributed", "--coordinator-address", "--num-processes", "--process-id"):
        assert flag in text, flag


def test_sample_grid_rows_are_content_style_output():
    """The TensorBoard sample: one row per example (at most 4), columns content | style |
    output, values x 255 rounded and clipped. Constant colours make each block one value."""
    from adain_jax.logging_utils import image_grid

    h, w, n = 3, 5, 6
    colour = lambda k: np.array([k, 100 + k, 200 - k]) / 255.0  # exact at 8 bits
    block = lambda k: np.broadcast_to(colour(k), (h, w, 3)).astype(np.float32)
    content = np.stack([block(i) for i in range(n)])
    style = np.stack([block(20 + i) for i in range(n)])
    output = np.stack([block(40 + i) for i in range(n)])
    output[1] += 2.0  # above 1: clipped to 255
    output[2] -= 2.0  # below 0: clipped to 0
    grid = image_grid(content, style, output)
    assert grid.shape == (4 * h, 3 * w, 3) and grid.dtype == np.uint8
    for row in range(4):
        cells = grid[row * h:(row + 1) * h].reshape(h, 3, w, 3)
        wanted = [colour(row), colour(20 + row),
                  {1: np.ones(3), 2: np.zeros(3)}.get(row, colour(40 + row))]
        for col, value in enumerate(wanted):
            assert (cells[:, col] == np.round(value * 255)).all(), (row, col)
