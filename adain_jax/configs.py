"""Settings of stylisation and training and their defaults, in one place and without JAX,
so that the command lines show them in --help (and refuse bad flags) before JAX loads.

`Settings` is how `adain_jax.stylize_files` stylises each job; `TrainConfig` is what
`adain_jax.train.train` runs, its `data` the `DataConfig` of the input pipeline
(`adain_jax.data`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

# ---- stylize.py

DEFAULT_OUTPUT = Path("output")
DEFAULT_SIZE = 512  # shorter side of content and style, as the reference test script
DEFAULT_VIDEO_EXT = "mp4"
DEFAULT_VIDEO_BATCH = 1  # frames per call; see benchmarks/ (batch 4 gains little on a CPU)
METHODS = ("adain", "gatys")
# --temporal (adain_jax/temporal.py): per-frame, shared content statistics, flow blending
TEMPORAL_MODES = ("none", "stats", "flow", "stats+flow")
TEMPORAL_WEIGHT = 0.5  # flow: the warped previous output's share where the flow holds
STATS_FRAMES = 32  # stats: frames encoded by the first pass, evenly spaced
# --method gatys (adain_jax.gatys)
GATYS_STEPS = 500  # Gatys et al. as timed in the AdaIN paper (Table 1)
GATYS_OPTIMIZERS = ("lbfgs", "adam")
GATYS_STYLE_LOSSES = ("gram", "meanstd")

# ---- python -m adain_jax.evaluate (the paper's protocol, Sec. 7.1)

EVAL_NUM_CONTENTS, EVAL_NUM_STYLES, EVAL_SIZE = 50, 10, 512
EVAL_THUMB = 128  # contact sheet cell side
EVAL_MIN_SIZE = 32  # DenseNet's stride-16 map needs 2 x 2 positions for a std


def alpha_range(alpha) -> tuple[float, float]:
    """Augmentation's alpha (Eq. 14), a number or a (low, high) range in [0, 1], as a range."""
    low, high = (alpha, alpha) if not isinstance(alpha, (tuple, list)) else tuple(alpha)
    if not 0.0 <= float(low) <= float(high) <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1] or a (low, high) range in it, "
                         f"got {alpha!r}")
    return float(low), float(high)


@dataclasses.dataclass(frozen=True)
class Settings:
    """How each job is stylised; the defaults are stylize.py's."""

    alpha: float = 1.0
    style_weights: tuple[float, ...] | None = None
    masks: tuple[Path, ...] | None = None
    preserve_color: str | None = None  # None, "coral" or "luminance"
    content_size: int = DEFAULT_SIZE
    style_size: int = DEFAULT_SIZE
    crop: bool = False
    method: str = "adain"  # or "gatys": optimise each output image (no decoder)
    # gatys only, its defaults; adain ignores them
    steps: int = GATYS_STEPS
    optimizer: str = "lbfgs"
    style_loss: str = "gram"
    video_batch: int = DEFAULT_VIDEO_BATCH  # content videos: frames per stylisation call
    dtype: str = "float32"  # or "bfloat16": the convolutions' compute dtype (accelerators)
    temporal: str = "none"  # content videos: one of TEMPORAL_MODES
    temporal_weight: float = TEMPORAL_WEIGHT
    stats_momentum: float | None = None  # stats: a running average instead of a first pass


# ---- train.py

CONTENT_WEIGHT = 1.0  # the port's --content_weight
STYLE_WEIGHT = 10.0  # lambda in Eq. 11, the port's --style_weight
RESIZE_MODES = ("shorter", "square")
# Compute dtypes (mixed precision) by every name we accept -> the dtype's name
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16",
          "bf16": "bfloat16", "float16": "float16", "fp16": "float16"}
DTYPE_CHOICES = ("float32", "bf16", "bfloat16")  # stylize.py and train.py --dtype


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The input pipeline's settings (`adain_jax.data`)."""

    tfds: str | None = None  # "coco/2017" or "coco/2017:train" (NAME[:VERSION][:SPLIT])
    data_dir: str | None = None  # TFDS data directory
    content_dir: str | None = None
    styles: str | None = None
    resize: int = 512
    crop_size: int = 256
    resize_mode: str = "shorter"  # or "square"
    batch_size: int = 8  # per process
    seed: int = 0
    workers: int = 0  # decoding processes; 0 decodes in this process
    process_index: int = 0
    process_count: int = 1
    threads: int = 16  # decoding threads per process (grain.ReadOptions.num_threads)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every training default, in one place (the port's train.py values where it has one)."""

    encoder_weights: str | None = None  # None: the cached adain.safetensors (download.py)
    encoder: str | None = None  # "vgg19" or "densenet121": checked against the weights
    steps: int = 160_000  # the port's --max_iter
    batch_size: int = 8  # GLOBAL batch, split over all devices of all processes
    lr: float = 1e-4
    lr_decay: float = 5e-5
    content_weight: float = CONTENT_WEIGHT
    style_weight: float = STYLE_WEIGHT
    dtype: str = "float32"  # or "bfloat16": mixed precision (parameters stay float32)
    save_every: int = 1000  # Orbax checkpoint (state + data position)
    export_every: int = 10_000  # workdir/adain.safetensors; the port's --save_model_interval
    sample_every: int = 1000  # content | style | output grid in TensorBoard
    log_every: int = 10  # TensorBoard scalars
    max_to_keep: int = 3
    # Content/style input; its batch_size is overridden by the per-process share of
    # `batch_size`, its seed also seeds the decoder init.
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
