"""Training checkpoints: the train state, the data iterator and the run's config, via Orbax.

Each step directory holds three items: "state" ({"params", "opt", "step"}, sharded arrays
through StandardSave), "data" (the grain iterator position, one JSON file per process) and
"config" (JSON, to warn when a resumed run changed its settings). Orbax writes into a
temporary directory and renames it when complete, so a run killed mid-save leaves the
previous checkpoint as the latest one.
"""
from __future__ import annotations

import logging
from pathlib import Path

import grain
import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be resumed from; the message names it."""


class Checkpointer:
    """Saves and restores {state, data iterator, config} under `directory`, keeping a few."""

    def __init__(self, directory, max_to_keep: int = 3):
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory,
            # cleanup_tmp_directories: a run killed mid-save leaves a tmp directory behind.
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                 cleanup_tmp_directories=True),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state, iterator, config: dict) -> None:
        """Start an asynchronous save; arrays are copied off the devices before it returns."""
        self.manager.save(step, force=True, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(iterator),
            config=ocp.args.JsonSave(config),
        ))

    def restore(self, step: int, abstract_state, iterator, config: dict):
        """The state saved at `step` (laid out like `abstract_state`); moves `iterator` there.

        Settings that differ from the saved `config` are logged as warnings.
        """
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=grain.checkpoint.CheckpointRestore(iterator),
                config=ocp.args.JsonRestore(),
            ))
        except Exception as err:  # orbax/tensorstore raise many types for a foreign tree
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise CheckpointError(
                f"{self.directory}: cannot resume from step {step} ({type(err).__name__}: "
                f"{first[:300]}); use another --workdir to start afresh") from None
        saved = restored.config or {}
        for key in sorted(set(saved) | set(config)):
            if saved.get(key) != config.get(key):
                log.warning("resuming with %s=%r (the checkpoint was written with %r)",
                            key, config.get(key), saved.get(key))
        return restored.state

    def wait(self) -> None:
        """Block until pending saves are committed."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(tree, sharding):
    """ShapeDtypeStructs of `tree` (arrays or eval_shape output) placed with `sharding`."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
