"""Training the AdaIN decoder (Sec. 5.1 and 6.1 of the paper), as the public PyTorch port does.

The encoder (VGG-19 to relu4_1) is loaded and frozen; it is neither in the optimiser state
nor in the checkpoints. The decoder starts from PyTorch's default conv init, as in the port,
and trains with Adam at lr / (1 + lr_decay * step) on L_c + lambda L_s (losses.py).

`train(config, workdir)` is the whole loop; the root train.py only parses flags into a
TrainConfig. Sections: config, optimiser and state, update step, loop.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import signal
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from adain_jax import (architectures, checkpoint, data, losses, models, outputs, parallel,
                       transfer, weights)
from adain_jax.configs import TrainConfig  # noqa: F401  (defined there, without JAX)
from adain_jax.download import default_weights_path
from adain_jax.logging_utils import EventWriter, Progress, image_grid

log = logging.getLogger(__name__)

EXPORT_NAME = "adain.safetensors"


# ---- Config ----------------------------------------------------------------------------

class ConfigError(ValueError):
    """Settings that cannot work together; the message says which and why."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the last checkpoint."""


class OutputError(RuntimeError):
    """The workdir, or a file in it, cannot be written; the message names it and why."""


def _check(config: TrainConfig) -> None:
    for name in ("steps", "batch_size", "save_every", "export_every", "sample_every",
                 "log_every", "max_to_keep"):
        if getattr(config, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, "
                              f"got {getattr(config, name)}")
    if not config.lr > 0 or config.lr_decay < 0:
        raise ConfigError(f"need --lr > 0 and --lr-decay >= 0, got {config.lr}, {config.lr_decay}")
    try:
        parallel.local_batch_size(config.batch_size)
    except ValueError as err:
        raise ConfigError(f"--batch-size: {err}") from None


# ---- Optimiser and state ---------------------------------------------------------------

def lr_schedule(config: TrainConfig):
    """The port's adjust_learning_rate: step i (from 0) trains with lr / (1 + lr_decay * i)."""
    return lambda step: config.lr / (1.0 + config.lr_decay * step)


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    # optax evaluates the schedule at its update count before incrementing it, so the
    # first update uses lr / (1 + 0), as the port's iteration 0. Adam's defaults
    # (b1 0.9, b2 0.999, eps 1e-8 outside the sqrt) are torch.optim.Adam's.
    return optax.adam(lr_schedule(config))


def init_state(key, optimizer, init_decoder=None) -> dict:
    """{"params": decoder params (PyTorch default init), "opt": Adam state, "step": 0}.

    `init_decoder` is the encoder architecture's (architectures.detect); VGG-19 by default.
    """
    if init_decoder is None:
        params = models.torch_default_conv_init(key, models.DECODER_LAYERS)
    else:
        params = init_decoder(key)
    return {"params": params, "opt": optimizer.init(params), "step": jnp.zeros((), jnp.int32)}


# ---- Update step -----------------------------------------------------------------------

def grads_and_metrics(decoder_params, encoder_params, batch, *, content_weight: float,
                      style_weight: float, axis_name: str | None = None,
                      compute_dtype: str = "float32"):
    """Gradient of the mean loss over this batch w.r.t. the decoder, and loss metrics.

    `batch` holds uint8 NHWC "content" and "style". Under jax.pmap pass `axis_name` to
    average gradients and metrics over devices; under jit with a sharded batch the mean
    over the global batch already does it.
    """
    dtype = jnp.result_type(*jax.tree.leaves(decoder_params))  # float32 unless testing x64
    content = batch["content"].astype(dtype) / 255.0
    style = batch["style"].astype(dtype) / 255.0

    def objective(decoder):
        return losses.loss({"encoder": encoder_params, "decoder": decoder}, content, style,
                           content_weight=content_weight, style_weight=style_weight,
                           dtype=compute_dtype)

    (total, parts), grads = jax.value_and_grad(objective, has_aux=True)(decoder_params)
    metrics = {"loss": total, "loss_c": parts["content"], "loss_s": parts["style"]}
    if axis_name is not None:
        grads, metrics = jax.lax.pmean((grads, metrics), axis_name)
    metrics["grad_norm"] = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
    return grads, metrics


def apply_update(state: dict, grads, optimizer: optax.GradientTransformation) -> dict:
    updates, opt = optimizer.update(grads, state["opt"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates), "opt": opt,
            "step": state["step"] + 1}


def train_step(state: dict, encoder_params, batch, *, config: TrainConfig,
               axis_name: str | None = None):
    """One Adam step on the decoder; returns (new state, metrics). Deterministic: no RNG."""
    optimizer = make_optimizer(config)
    grads, metrics = grads_and_metrics(
        state["params"], encoder_params, batch, content_weight=config.content_weight,
        style_weight=config.style_weight, axis_name=axis_name, compute_dtype=config.dtype)
    metrics["lr"] = lr_schedule(config)(state["step"])
    return apply_update(state, grads, optimizer), metrics


def make_train_step(config: TrainConfig, mesh):
    """train_step jitted for `mesh`: batch split over "data", the rest replicated.

    The state is donated. One device, all local devices and many hosts use this same
    compiled step; only the mesh differs.
    """
    repl, split = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    return jax.jit(functools.partial(train_step, config=config),
                   in_shardings=(repl, repl, split), out_shardings=(repl, repl),
                   donate_argnums=(0,))


def make_pmap_train_step(config: TrainConfig):
    """The same step under jax.pmap: state and batch carry a leading device axis."""
    return jax.pmap(functools.partial(train_step, config=config, axis_name=parallel.AXIS),
                    axis_name=parallel.AXIS, in_axes=(0, None, 0), donate_argnums=(0,))


@jax.jit
def _stylize(params, content, style):
    return transfer.apply(params, content, style)


# ---- Loop ------------------------------------------------------------------------------

class _StopFlag:
    """SIGTERM/SIGINT set a flag the loop reads between steps; a second one acts as usual."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum = None
        self.previous = {}

    def _handler(self, signum, frame):
        self.signum = signum
        signal.signal(signum, self.previous.get(signum, signal.SIG_DFL))

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def requested(self) -> bool:
        """True on every process once any process got a signal."""
        flag = self.signum is not None
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            flag = bool(np.any(multihost_utils.process_allgather(np.int32(flag))))
        return flag


def _load_encoder(config: TrainConfig):
    path = Path(config.encoder_weights) if config.encoder_weights else default_weights_path()
    params = weights.load_params(path, require_decoder=False)
    if "decoder" in params:
        log.info("%s: using its encoder; its decoder is ignored (training starts from the "
                 "PyTorch default init)", path)
    return params["encoder"]


def _decoder_stride(arch) -> int:
    """The image pixels per content-layer pixel: the largest side that maps to one."""
    stride = 1
    while arch.feature_size(stride + 1) == 1:
        stride += 1
    return stride


def _config_record(config: TrainConfig, data_config: data.DataConfig) -> dict:
    """The settings saved with each checkpoint, as JSON: `config` with the data settings
    this run uses (data.batch_size is the process's share of batch_size, not the unused
    default); without the process index, which differs between the processes of one run."""
    record = dataclasses.asdict(dataclasses.replace(config, data=data_config))
    del record["data"]["process_index"]
    return json.loads(json.dumps(record))


def _check_workdir(workdir: Path, main: bool) -> None:
    """Create the workdir and its folders, and write into them, before any real work."""
    folders = [workdir, workdir / "checkpoints"] + ([workdir / "tensorboard"] if main else [])
    for folder in folders:
        problem = outputs.folder_problem(folder)
        if problem:
            raise OutputError(f"{folder}: {problem}; pass another --workdir")


def train(config: TrainConfig, workdir, *, progress: bool = True) -> dict:
    """Train (or resume training) the decoder in `workdir`; returns the final metrics.

    workdir/checkpoints: Orbax checkpoints (state and data position), resumed automatically.
    workdir/tensorboard: events. workdir/adain.safetensors: encoder + decoder for stylize.py.
    Only process 0 logs and writes files besides the checkpoints.
    """
    _check(config)
    workdir = Path(workdir)
    main = jax.process_index() == 0
    _check_workdir(workdir, main)
    mesh = parallel.make_mesh()
    local_batch = parallel.local_batch_size(config.batch_size)
    data_config = dataclasses.replace(
        config.data, batch_size=local_batch, process_index=jax.process_index(),
        process_count=jax.process_count())

    encoder_host = _load_encoder(config)
    arch = architectures.detect({"encoder": encoder_host})
    if config.encoder is not None and config.encoder != arch.name:
        raise ConfigError(f"--encoder {config.encoder}, but the encoder weights are "
                          f"{arch.name}; pass the matching --encoder-weights file")
    stride = _decoder_stride(arch)
    if config.data.crop_size % stride:
        raise ConfigError(f"--crop-size {config.data.crop_size} must be a multiple of {stride} "
                          f"for {arch.name}: the decoder's output must match the crop")
    encoder = parallel.replicate(encoder_host, mesh)
    iterator = data.make_iterator(data_config)

    optimizer = make_optimizer(config)
    key = jax.random.key(config.data.seed)
    # Initialised on one local device and then replicated: compiling the random init for
    # the whole mesh costs more than the copies (14 s against 1 s with two CPU processes).
    init = jax.jit(functools.partial(init_state, optimizer=optimizer,
                                     init_decoder=arch.init_decoder))
    ckpt = checkpoint.Checkpointer(workdir / "checkpoints", max_to_keep=config.max_to_keep)
    record = _config_record(config, data_config)
    start = ckpt.latest_step()
    if start is not None and start >= config.steps:
        log.info("%s: already at step %d of %d; nothing to do but the export", ckpt.directory,
                 start, config.steps)
    if start is None:
        state = parallel.replicate(init(key), mesh)
        start = 0
    else:
        abstract = checkpoint.abstract_like(jax.eval_shape(init, key),
                                            parallel.replicated(mesh))
        state = ckpt.restore(start, abstract, iterator, record)
        assert int(parallel.local_copy(state["step"])) == start
        log.info("resumed from step %d", start)
    last_saved = start if start else None

    def export(done: int) -> None:
        """Write workdir/adain.safetensors from the current state (process 0)."""
        if main:
            from safetensors import SafetensorError

            params = {"encoder": encoder_host, "decoder": parallel.local_copy(state["params"])}
            path = workdir / EXPORT_NAME
            try:
                weights.save_params(params, path, metadata={"step": done,
                                                            "trained_by": "adain_jax.train"})
            except (OSError, SafetensorError) as err:
                kept = (f"; rerun the same command to continue from the checkpoint of step "
                        f"{last_saved}" if last_saved is not None else "")
                raise OutputError(f"{path}: cannot write the trained model "
                                  f"({outputs.reason(err)}){kept}") from None
            log.info("step %d: wrote %s", done, path)

    if start >= config.steps:  # a finished run: its export may be missing or stale
        try:
            export(start)
        finally:
            ckpt.close()
        return {}

    step_fn = make_train_step(config, mesh)
    try:
        writer = EventWriter(workdir / "tensorboard", enabled=main,
                             purge_step=start + 1 if start else None)
    except OSError as err:
        ckpt.close()
        raise OutputError(f"{workdir / 'tensorboard'}: cannot write TensorBoard events "
                          f"({outputs.reason(err)})") from None
    bar = Progress(config.steps, start, config.batch_size, enabled=main and progress)
    last = {}

    def check_and_log(step: int, metrics) -> dict:
        """Host values of the metrics of update `step` (from 0); stops on NaN/inf."""
        values = {k: float(v) for k, v in parallel.local_copy(metrics).items()}
        if not all(math.isfinite(v) for v in values.values()):
            kept = (f"the last checkpoint, step {last_saved}, is kept"
                    if last_saved is not None else "no checkpoint was written")
            raise TrainingDiverged(
                f"loss is not finite at step {step + 1} (loss_c={values['loss_c']:.4g}, "
                f"loss_s={values['loss_s']:.4g}, grad_norm={values['grad_norm']:.4g}); "
                f"stopped without saving, {kept} in {ckpt.directory}; try a lower --lr")
        bar.update(step + 1, values)
        if (step + 1) % config.log_every == 0 or step == start:
            writer.scalars(step + 1, {**values, "images_per_second": bar.images_per_second})
        return values

    pending = None  # (step, metrics) not yet read back: keeps one step in flight
    stop = _StopFlag()
    try:
        with stop:
            for step in range(start, config.steps):
                host_batch = next(iterator)
                batch = parallel.shard_batch(
                    {"content": host_batch["content"], "style": host_batch["style"]}, mesh)
                state, metrics = step_fn(state, encoder, batch)
                if pending is not None:
                    last = check_and_log(*pending)
                pending = (step, metrics)

                done = step + 1
                stopping = stop.requested()
                save = done % config.save_every == 0 or done == config.steps or stopping
                # every stop exports, so the file matches the checkpoint it resumes from
                exporting = done % config.export_every == 0 or done == config.steps or stopping
                sample = done % config.sample_every == 0
                if not (save or exporting or sample):
                    continue
                last = check_and_log(*pending)  # never save or export an unchecked state
                pending = None
                if sample and main:
                    content = host_batch["content"][:4].astype(np.float32) / 255
                    style = host_batch["style"][:4].astype(np.float32) / 255
                    params = {"encoder": encoder_host,
                              "decoder": parallel.local_copy(state["params"])}
                    output = np.asarray(_stylize(params, content, style))
                    writer.image(done, "content_style_output", image_grid(content, style, output))
                if save:
                    ckpt.save(done, state, iterator, record)
                    last_saved = done
                if exporting:
                    export(done)
                if stopping:
                    ckpt.wait()
                    log.info("stopped by %s at step %d; checkpoint saved, rerun the same "
                             "command to resume", signal.Signals(stop.signum).name
                             if stop.signum else "another process", done)
                    break
            if pending is not None:
                last = check_and_log(*pending)
    finally:
        ckpt.close()  # waits for async saves: the last good checkpoint is complete
        writer.close()
        bar.close()
    skipped = data.skipped_files()
    if skipped:
        log.warning("%d unreadable image files were skipped", skipped)
    return last
