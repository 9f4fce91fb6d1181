"""Training output for people: a progress bar and TensorBoard events (process 0 only)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm


def image_grid(content, style, output, max_rows: int = 4) -> np.ndarray:
    """An (H, 3W, 3) uint8 image: rows of content | style | output, values in [0, 1]."""
    n = min(max_rows, len(content))
    rows = [np.concatenate([content[i], style[i], output[i]], axis=1) for i in range(n)]
    grid = np.concatenate(rows, axis=0)
    return np.round(np.clip(grid, 0.0, 1.0) * 255).astype(np.uint8)


class Progress:
    """tqdm bar showing step, losses, lr and images/s; tqdm adds the ETA."""

    def __init__(self, total: int, initial: int, images_per_step: int, enabled: bool = True):
        self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                        disable=not enabled)
        self.images_per_step = images_per_step
        self.last_time, self.last_step = time.perf_counter(), initial
        self.images_per_second = 0.0

    def update(self, step: int, metrics: dict) -> None:
        """`step` steps are done; `metrics` are host floats."""
        now = time.perf_counter()
        if step > self.last_step and now > self.last_time:
            self.images_per_second = (
                (step - self.last_step) * self.images_per_step / (now - self.last_time))
        self.last_time, self.last_step = now, step
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix(loss_c=f"{metrics['loss_c']:.4g}", loss_s=f"{metrics['loss_s']:.4g}",
                             lr=f"{metrics['lr']:.3g}", img_s=f"{self.images_per_second:.1f}",
                             refresh=False)

    def close(self) -> None:
        self.bar.close()


class EventWriter:
    """TensorBoard scalars and images under `logdir`; a no-op when not `enabled`."""

    def __init__(self, logdir, enabled: bool = True, purge_step: int | None = None):
        self.writer = None
        if enabled:
            from tensorboardX import SummaryWriter  # the [train] extra

            # purge_step hides events a crashed run wrote after its last checkpoint.
            self.writer = SummaryWriter(str(Path(logdir)), purge_step=purge_step)

    def scalars(self, step: int, values: dict) -> None:
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(name, float(value), step)

    def image(self, step: int, name: str, image: np.ndarray) -> None:
        if self.writer is not None:
            self.writer.add_image(name, image, step, dataformats="HWC")

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
