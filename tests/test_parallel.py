"""Data parallelism: one device vs four vs jax.pmap, and two processes in lockstep.

JAX fixes its device count and distributed setup when it starts, so each scenario runs in
a fresh Python (XLA_FLAGS=--xla_force_host_platform_device_count=N) executing a worker
function of this file; the workers print one JSON line that the tests check.

Three float32 steps on one device, on four (batch sharded, jit) and under pmap, from the
same weights and batches. Each step is compared from the same starting state (the
one-device trajectory's), so that float32 differences do not compound through Adam: lr
and step identical, pmap's four replicas identical; losses; the gradients Adam saw (from
its first moment); the parameter update. Gradients are compared, not only parameters,
because Adam is scale-invariant: a sum instead of a mean over devices would give the same
parameters but 4x the gradient.

Tolerances, and what was measured over batch seeds 0-2 (and with lr 1e-6):
- losses <= 1e-5 for both (four devices 2.6e-7, pmap 1.6e-6).
- gradients <= 1e-2 relative L2 per tensor, updates <= 5e-2, for both. Most steps agree to
  4e-6 (four devices) and 1e-5 to 1e-3 (pmap), but a float32 step is not a smooth function
  of its rounding: where a ReLU's input lies within rounding of zero, the order of a sum
  decides its sign, and the gradient behind it changes. Measured against float64 under the
  tests' XLA optimisation level 0: at seed 0 step 0, one of the 65,536 pre-activations of
  the decoder's relu1_2 is 4.8e-7 from zero, the four-device program (each device sums
  over its own example) rounds it to the other side, and every layer's gradient behind it moves
  4.3e-4 (one device: 2.2e-5 from float64); at seed 1 step 1 a flip in relu1_1 of f(g(t))
  moves them 2.2e-4, and along the trajectory 1.5e-3 at its third step. pmap compiles the
  per-device function for a batch of 1, which rounds differently again. Updates differ by
  more because Adam moves weights by ~lr * sign(g): the few elements whose gradient is
  near zero come out differently from rounding alone (3.7e-2 with the flip; see
  test_train.py).
A wrong reduction is far outside these: a missing pmean leaves each device its own
example's gradient (O(1) apart), a sum gives 4x.
"""
import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from adain_jax import parallel, train, weights

ROOT = Path(__file__).resolve().parents[1]
CONFIG = train.TrainConfig(batch_size=4, lr=1e-4, lr_decay=0.5, content_weight=100.0,
                           style_weight=1.0)


def random_params():
    """test_train.py's weights (well-conditioned float32 gradients), as float32 arrays."""
    import torch

    from tests import torch_reference as ref
    from tests.test_train import torch_models

    vgg, decoder = torch_models(torch.float32)
    params = {"encoder": ref.convs_from(vgg, ref.PORT_VGG_CONVS),
              "decoder": ref.convs_from(decoder, ref.PORT_DECODER_CONVS)}
    return jax.tree.map(lambda x: np.asarray(x, np.float32), params)


def global_batches(n_steps, batch=4, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return [{k: rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
             for k in ("content", "style")} for _ in range(n_steps)]


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def worst(fn, a, b):
    return max(jax.tree.leaves(jax.tree.map(fn, a, b)))


def run_worker(call: str, devices: int, env=None, timeout=240, wait=True):
    """Start `python -c "import tests.test_parallel as t; t.<call>"` with N host devices."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
    full_env = dict(os.environ, XLA_FLAGS=flags.strip(),
                    PYTHONPATH=str(ROOT), **(env or {}))
    proc = subprocess.Popen([sys.executable, "-c", f"import tests.test_parallel as t; t.{call}"],
                            cwd=ROOT, env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return finish(proc, timeout) if wait else proc


def finish(proc, timeout=240) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert lines, (out[-2000:], err[-3000:])
    return json.loads(lines[-1][len("RESULT "):])


def report(result: dict) -> None:
    print("RESULT " + json.dumps(result), flush=True)


# ---- one device vs four devices vs pmap -------------------------------------------------

def devices_worker(seed=0):
    assert jax.device_count() == 4, jax.devices()
    params = random_params()
    optimizer = train.make_optimizer(CONFIG)
    # jitted: eager, each distinct leaf shape compiles a program of its own
    state0 = {"params": params["decoder"], "opt": jax.jit(optimizer.init)(params["decoder"]),
              "step": np.int32(0)}
    batches = global_batches(3, seed=seed)

    def jit_runner(devices):
        mesh = parallel.make_mesh(devices)
        step = train.make_train_step(CONFIG, mesh)
        encoder = parallel.replicate(params["encoder"], mesh)
        return lambda state, batch: parallel.local_copy(step(
            parallel.replicate(state, mesh), encoder, parallel.shard_batch(batch, mesh)))

    pmap_step = train.make_pmap_train_step(CONFIG)
    replicas_identical = []

    def pmap_runner(state, batch):
        stacked = jax.tree.map(lambda x: np.stack([np.asarray(x)] * 4), state)
        split = jax.tree.map(lambda x: x.reshape(4, -1, *x.shape[1:]), batch)
        out = jax.device_get(pmap_step(stacked, params["encoder"], split))
        replicas_identical.append(all(bool(np.all(x == x[:1])) for x in jax.tree.leaves(out)))
        return jax.tree.map(lambda x: x[0], out)

    runners = {"one": jit_runner(jax.devices()[:1]), "four": jit_runner(jax.devices()),
               "pmap": pmap_runner}
    # Three steps along the one-device trajectory; at each, the four-device and pmap steps
    # start from the same state, so float32 differences do not compound through Adam.
    errors = {name: {"loss": 0.0, "grad": 0.0, "update": 0.0, "lr_step_equal": True}
              for name in ("four", "pmap")}
    state, losses = state0, []
    for batch in batches:
        # Adam's first moment mu' = 0.9 mu + 0.1 g gives the gradient the step saw.
        # (in NumPy: as JAX ops, each leaf shape would compile three small programs)
        grad = lambda new: jax.tree.map(
            lambda m, m0: (np.asarray(m) - 0.9 * np.asarray(m0)) / 0.1,
            new["opt"][0].mu, state["opt"][0].mu)
        update = lambda new: jax.tree.map(np.subtract, new["params"], state["params"])
        ref_state, ref = runners["one"](state, batch)
        for name in ("four", "pmap"):
            new, metrics = runners[name](state, batch)
            e = errors[name]
            e["loss"] = max([e["loss"]] + [rel_l2(metrics[k], ref[k])
                                           for k in ("loss", "loss_c", "loss_s")])
            e["grad"] = max(e["grad"], worst(rel_l2, grad(new), grad(ref_state)))
            e["update"] = max(e["update"], worst(rel_l2, update(new), update(ref_state)))
            e["lr_step_equal"] &= bool(metrics["lr"] == ref["lr"]
                                       and new["step"] == ref_state["step"])
        state = ref_state
        losses.append(float(ref["loss"]))
    result = {"errors": errors, "losses": losses,
              "pmap_replicas_identical": all(replicas_identical)}
    try:
        parallel.local_batch_size(6)
        result["indivisible_error"] = None
    except ValueError as err:
        result["indivisible_error"] = str(err)
    report(result)


def test_four_devices_and_pmap_equal_one_device():
    result = run_worker("devices_worker()", devices=4)
    assert result["pmap_replicas_identical"]
    tolerances = {"loss": 1e-5, "grad": 1e-2, "update": 5e-2}
    for name, errors in result["errors"].items():
        assert errors["lr_step_equal"], name
        for what, tol in tolerances.items():
            assert errors[what] <= tol, (name, what, errors)
    # The steps did train: the loss moved (a frozen state would also "agree").
    assert len(set(result["losses"])) == 3
    assert result["indivisible_error"] == ("batch size 6 does not divide evenly over 4 "
                                           "devices; use a multiple of 4")


# ---- two processes ----------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_worker(process_id: int, port: int, workdir: str, encoder: str, content: str,
                   styles: str):
    """One of two processes with 2 local devices each: the real loop (sharded data,
    multi-process Orbax checkpoints, export and events by process 0)."""
    parallel.initialize_distributed(f"127.0.0.1:{port}", 2, process_id)
    assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 4, 2)
    final = train.train(two_process_config(encoder, content, styles), workdir, progress=False)
    report({"final": final, "local_batch": parallel.local_batch_size(CONFIG.batch_size)})


def two_process_config(encoder, content, styles) -> train.TrainConfig:
    from adain_jax.data import DataConfig

    return dataclasses.replace(
        CONFIG, encoder_weights=encoder, steps=2, save_every=1, log_every=1,
        data=DataConfig(content_dir=content, styles=styles, resize=20, crop_size=16, threads=2))


@pytest.mark.slow
def test_two_processes_train_in_lockstep(tmp_path):
    from adain_jax import data, losses
    from tests.test_train import make_images, read_events

    params = random_params()
    encoder = weights.save_params({"encoder": params["encoder"]}, tmp_path / "enc.safetensors")
    content = make_images(tmp_path / "content", 6, seed=1)
    styles = make_images(tmp_path / "styles", 3, seed=2)
    port = free_port()
    procs = [run_worker(f"process_worker({i}, {port}, {str(tmp_path / 'run')!r}, "
                        f"{str(encoder)!r}, {str(content)!r}, {str(styles)!r})",
                        devices=2, wait=False) for i in range(2)]
    try:
        first, second = [finish(p) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert first["local_batch"] == second["local_batch"] == 2
    assert first["final"] == second["final"]  # the same replicated metrics, bit for bit
    assert np.isfinite(first["final"]["loss"])

    # Step 1 against one device on the global batch: process p's data shard, in order.
    config = two_process_config(str(encoder), str(content), str(styles))
    shards = [next(data.make_iterator(dataclasses.replace(
        config.data, batch_size=2, process_index=p, process_count=2))) for p in range(2)]
    batch = {k: np.concatenate([s[k] for s in shards]).astype(np.float32) / 255
             for k in ("content", "style")}
    # jitted: only the decoder is kept, and eager Adam init compiles a program per shape
    decoder = jax.jit(lambda key: train.init_state(key, train.make_optimizer(config))["params"])(
        jax.random.key(config.data.seed))
    total, parts = jax.jit(losses.loss)({"encoder": params["encoder"], "decoder": decoder},
                                        batch["content"], batch["style"],
                                        content_weight=config.content_weight,
                                        style_weight=config.style_weight)
    scalars, _ = read_events(tmp_path / "run" / "tensorboard")
    assert scalars["loss"][1] == pytest.approx(float(total), rel=1e-5)
    assert scalars["loss_c"][1] == pytest.approx(float(parts["content"]), rel=1e-5)

    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == ["1", "2"]
    data_files = sorted(p.name for p in (run / "checkpoints" / "2" / "data").glob("*.json"))
    assert data_files == ["process_0-of-2.json", "process_1-of-2.json"]
    assert weights.load_params(run / "adain.safetensors")["decoder"]
