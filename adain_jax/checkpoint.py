"""Training checkpoints: the train state, the data iterator and the run's config, via Orbax.

Each step directory holds three items: "state" ({"params", "opt", "step"}, sharded arrays
through StandardSave), "data" (the grain iterator position, one JSON file per process) and
"config" (JSON, to name the settings a resumed run changed). Orbax writes into a
temporary directory and renames it when complete, so a run killed mid-save leaves the
previous checkpoint as the latest one.
"""
from __future__ import annotations

import contextlib
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
        with self._writing("cannot create the checkpoint folder"):
            self.manager = ocp.CheckpointManager(
                self.directory,
                # cleanup_tmp_directories: a run killed mid-save leaves a tmp directory.
                options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                     cleanup_tmp_directories=True),
            )

    @contextlib.contextmanager
    def _writing(self, what: str):
        """OSError (a full disk, a folder made read-only meanwhile) -> one-line CheckpointError.

        Orbax saves in the background and raises a failed save's error from the next
        save or wait, so every call that can finish a save goes through here.
        """
        try:
            yield
        except OSError as err:
            raise CheckpointError(f"{err.filename or self.directory}: {what} "
                                  f"({err.strerror or err})") from None

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state, iterator, config: dict) -> None:
        """Start an asynchronous save; arrays are copied off the devices before it returns."""
        with self._writing(f"cannot write the checkpoint of step {step}"):
            self.manager.save(step, force=True, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=grain.checkpoint.CheckpointSave(iterator),
                config=ocp.args.JsonSave(config),
            ))

    def restore(self, step: int, abstract_state, iterator, config: dict):
        """The state saved at `step` (laid out like `abstract_state`); moves `iterator` there.

        Each setting that differs from the saved `config` is logged as a warning.
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
        for name, now, then in changed_settings(restored.config or {}, config):
            log.warning("resuming with %s=%r (%s)", name, now,
                        "not recorded in the checkpoint" if then is _MISSING
                        else f"the checkpoint was written with {then!r}")
        return restored.state

    def wait(self) -> None:
        """Block until pending saves are committed."""
        with self._writing("cannot write a checkpoint"):
            self.manager.wait_until_finished()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.manager.close()


_MISSING = object()  # a setting the checkpoint's record lacks (written by an older version)


def changed_settings(saved: dict, current: dict, prefix: str = "") -> list[tuple]:
    """(name, current value, saved value) of each setting that differs, nested dicts
    walked so that one changed data setting names only itself ("data.resize").

    Names the saved record has and `current` lacks are left out: they are settings this
    version no longer records, not changes the user made.
    """
    changed = []
    for key, value in current.items():
        name, then = f"{prefix}{key}", saved.get(key, _MISSING)
        if isinstance(value, dict) and isinstance(then, dict):
            changed += changed_settings(then, value, prefix=f"{name}.")
        elif value != then:
            changed.append((name, value, then))
    return changed


def abstract_like(tree, sharding):
    """ShapeDtypeStructs of `tree` (arrays or eval_shape output) placed with `sharding`."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
