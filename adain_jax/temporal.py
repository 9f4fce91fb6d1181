"""Temporal consistency for video (stylize.py --temporal) and its measure, the warping error.

Per-frame AdaIN normalises each frame by its own content statistics, mu(f(c)) and
sigma(f(c)) in Eq. 8. When a bright object enters, the light changes or the camera pans
onto other colours, those move, and the whole frame's colour and texture jump with them:
flicker. The encoder pools by 8, so even a pan by a number of pixels that is not a
multiple of 8 changes the output's texture, not only its position. Two remedies:

- `stats`: one set of content statistics for every frame, taken over the whole video (a
  first pass over up to STATS_FRAMES evenly spaced frames, pooled as if they were one
  image: `pool_stats`), or, for streams, a running average (`running_stats`,
  s_t = m s_{t-1} + (1 - m) s(frame t)).
- `flow`: each output is blended with the previous output warped along the optical flow
  of the content frames (OpenCV's DIS), b_t = w warp(o_{t-1}) + (1 - w) s_t, except where
  the flow is not consistent forward and backward (occluded or newly visible pixels),
  where o_t = s_t (`FlowBlender`). Averaging two textures that do not line up (the
  decoder's texture moves with the 8-pixel pooling grid, not with the scene) lowers
  their contrast: the blend alone made outputs 25% less sharp at w = 0.5 (test clips).
  So the blend's local contrast is brought back up to the frame's own, as in
  variance-preserving texture blending (Yu et al., "Lagrangian texture advection", 2011;
  Heitz and Neyret, HPG 2018): o_t = mu + g (b_t - mu), mu the blend's local mean
  (Gaussian, CONTRAST_SIGMA px), g the ratio of local standard deviations of s_t and b_t,
  between 1 and the gain that independent textures need, 1 / sqrt(w^2 + (1 - w)^2).

`warping_error` is the measure of Lai et al., "Learning Blind Video Temporal Consistency"
(ECCV 2018): flow computed on the input frames, the later output warped back, squared
error over the non-occluded pixels, averaged over frame pairs.

Flow needs OpenCV: pip install 'adain-jax[video]' (opencv-python-headless).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from adain_jax import ops
from adain_jax.configs import STATS_FRAMES, TEMPORAL_MODES as MODES, TEMPORAL_WEIGHT

# Forward-backward consistency (Sundaram et al., ECCV 2010, as Ruder et al. 2016 use it):
# |F_b(x) + F_f(x + F_b(x))|^2 <= A (|F_b|^2 + |F_f|^2) + B, in pixels^2.
CONSISTENCY_A, CONSISTENCY_B = 0.01, 0.5
CONTRAST_SIGMA = 2.0  # px: the window of local mean and contrast in FlowBlender


def uses_stats(mode: str) -> bool:
    return mode in ("stats", "stats+flow")


def uses_flow(mode: str) -> bool:
    return mode in ("flow", "stats+flow")


# ---- content statistics shared over frames -------------------------------------------------

def sample_indices(frames: int, count: int = STATS_FRAMES) -> list[int]:
    """Up to `count` frame indices spread evenly over `frames` frames, first and last included."""
    if frames <= count:
        return list(range(frames))
    return sorted({round(i * (frames - 1) / (count - 1)) for i in range(count)})


def pool_stats(means, stds, counts, eps: float = ops.EPS):
    """Channel mean and std of several frames' features taken together as one sample.

    means, stds: (F, C) per-frame statistics as `ops.mean_std` gives them (std =
    sqrt(unbiased variance + eps)); counts: positions per frame. Exact, in float64: the
    pooled unbiased variance is (sum (n_i - 1) var_i + sum n_i (mu_i - mu)^2) / (n - 1).
    Returns (1, C) float32 mean and std, with the same eps.
    """
    means, stds = np.asarray(means, np.float64), np.asarray(stds, np.float64)
    counts = np.asarray(counts, np.float64)[:, None]
    total = counts.sum()
    mean = (counts * means).sum(axis=0) / total
    var = np.maximum(stds**2 - eps, 0.0)
    pooled = (((counts - 1) * var).sum(axis=0)
              + (counts * (means - mean) ** 2).sum(axis=0)) / (total - 1)
    return (mean[None].astype(np.float32), np.sqrt(pooled + eps)[None].astype(np.float32))


def running_stats(own_mean, own_std, state_mean, state_std, momentum, started):
    """Running averages of content statistics over a batch of consecutive frames.

    own_*: (N, C) each frame's own statistics; state_*: (C,) the average after the frame
    before this batch, used only if `started` (else the first frame starts it). Frame i
    uses s_i = m s_{i-1} + (1 - m) own_i, for mean and std alike. Returns the (N, C) mean
    and std the frames use; the last row is the state for the next batch. Pure jnp: works
    inside jit.
    """
    def step(carry, own):
        mean, std, go = carry
        m = jnp.where(go, momentum, 0.0)
        mean = m * mean + (1 - m) * own[0]
        std = m * std + (1 - m) * own[1]
        return (mean, std, True), (mean, std)

    carry = (state_mean, state_std, jnp.asarray(started, bool))
    _, (mean, std) = jax.lax.scan(step, carry, (own_mean, own_std))
    return mean, std


# ---- optical flow ----------------------------------------------------------------------------

def _cv2():
    try:
        import cv2
    except ImportError:
        raise ImportError("optical flow needs OpenCV: pip install 'adain-jax[video]' "
                          "(or pip install opencv-python-headless)") from None
    return cv2


def gray(rgb: np.ndarray) -> np.ndarray:
    """(H, W) uint8 luma (ITU-R 601) of an (H, W, 3) float image in [0, 1]."""
    luma = np.asarray(rgb, np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(np.rint(luma * 255.0), 0, 255).astype(np.uint8)


class Flow:
    """An optical flow estimator on (H, W) uint8 frames: `flow(a, b)` is (H, W, 2) float32,
    (dx, dy) such that a(x) matches b(x + flow(x)).

    method: "dis" (DIS, Kroeger et al. 2016, OpenCV's medium preset: what `flow` mode uses)
    or "farneback" (Farneback 2003: what the metric uses, a different estimator).
    """

    def __init__(self, method: str = "dis"):
        cv2 = _cv2()
        self.method = method
        if method == "dis":
            self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        elif method != "farneback":
            raise ValueError(f"flow method must be 'dis' or 'farneback', got {method!r}")

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if self.method == "dis":
            return self._dis.calc(a, b, None)
        return _cv2().calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=4,
                                               winsize=15, iterations=3, poly_n=5,
                                               poly_sigma=1.2, flags=0)


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """image sampled at x + flow(x) (bilinear; positions outside are clamped to the edge).

    With `flow` from frame t to frame t-1 this brings frame t-1's `image` onto frame t.
    """
    cv2 = _cv2()
    h, w = flow.shape[:2]
    grid_y, grid_x = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(np.asarray(image, np.float32), grid_x + flow[..., 0],
                     grid_y + flow[..., 1], interpolation=cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def consistent(flow_back: np.ndarray, flow_fwd: np.ndarray) -> np.ndarray:
    """(H, W) bool: where frame t's pixel x is visible in frame t-1 too.

    flow_back: from t to t-1; flow_fwd: from t-1 to t. Occluded (False) where x + F_b(x)
    leaves the frame or the round trip misses by more than CONSISTENCY_A/B allow.
    """
    h, w = flow_back.shape[:2]
    fwd_at = warp(flow_fwd, flow_back)  # F_f at x + F_b(x)
    miss = np.sum((flow_back + fwd_at) ** 2, axis=-1)
    bound = CONSISTENCY_A * (np.sum(flow_back**2, axis=-1) + np.sum(fwd_at**2, axis=-1))
    grid_y, grid_x = np.mgrid[0:h, 0:w]
    x, y = grid_x + flow_back[..., 0], grid_y + flow_back[..., 1]
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    return (miss <= bound + CONSISTENCY_B) & inside


def restore_contrast(blend: np.ndarray, frame: np.ndarray, max_gain: float,
                     sigma: float = CONTRAST_SIGMA) -> np.ndarray:
    """`blend` with its local contrast raised towards `frame`'s (module docstring):
    mu + g (blend - mu), g = clip(local std of frame / local std of blend, 1, max_gain)."""
    cv2 = _cv2()
    smooth = lambda x: cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    mean_b, mean_f = smooth(blend), smooth(frame)
    var_b = smooth(np.mean((blend - mean_b) ** 2, axis=-1))
    var_f = smooth(np.mean((frame - mean_f) ** 2, axis=-1))
    gain = np.clip(np.sqrt(var_f / np.maximum(var_b, 1e-12)), 1.0, max_gain)
    return mean_b + gain[..., None] * (blend - mean_b)


class FlowBlender:
    """`flow` mode: o_t = restore_contrast(w warp(o_{t-1}) + (1 - w) s_t) where frame t
    is consistent with frame t-1, s_t elsewhere (s_t: this frame's stylised output; see
    the module docstring). Call it once per frame, in order, with the content frame and
    its stylisation, both (H, W, 3) in [0, 1]; outputs are clipped to [0, 1].
    """

    def __init__(self, weight: float = TEMPORAL_WEIGHT, method: str = "dis"):
        if not 0.0 <= weight < 1.0:
            raise ValueError(f"temporal weight must be in [0, 1), got {weight}")
        self.weight = weight
        self.flow = Flow(method)
        self._previous = None  # (gray content, output) of the frame before

    def __call__(self, content: np.ndarray, stylized: np.ndarray) -> np.ndarray:
        current = gray(content)
        out = np.asarray(stylized, np.float32)
        if self._previous is not None and self._previous[0].shape == current.shape:
            before, previous_out = self._previous
            flow_back = self.flow(current, before)
            mask = consistent(flow_back, self.flow(before, current))[..., None]
            w = self.weight
            blended = restore_contrast(w * warp(previous_out, flow_back) + (1 - w) * out,
                                       out, 1.0 / np.sqrt(w**2 + (1 - w) ** 2))
            out = np.clip(np.where(mask, blended, out), 0.0, 1.0).astype(np.float32)
        self._previous = (current, out)
        return out


# ---- the metric ------------------------------------------------------------------------------

def warping_error(contents, outputs, interval: int = 1, method="farneback") -> float:
    """Lai et al.'s warping error of `outputs` (a stylised video) over its `contents`.

    For each pair (t - interval, t): flow from content t to content t - interval, output
    t - interval warped onto frame t, and the squared difference with output t summed over
    RGB and averaged over the non-occluded pixels (`consistent`); then the mean over
    pairs. Frames are (H, W, 3) in [0, 1]. Pairs with no pixel visible in both are left
    out; NaN when no pair is left.
    method: a `Flow` method name, or any function (gray a, gray b) -> flow as `Flow`'s.
    """
    contents, outputs = list(contents), list(outputs)
    if len(contents) != len(outputs):
        raise ValueError(f"{len(contents)} content frames for {len(outputs)} outputs")
    flow = method if callable(method) else Flow(method)
    grays = [gray(c) for c in contents]
    errors = []
    for t in range(interval, len(contents)):
        back = flow(grays[t], grays[t - interval])
        mask = consistent(back, flow(grays[t - interval], grays[t]))
        if not mask.any():  # nothing visible in both frames: no error to count
            continue
        diff = np.asarray(outputs[t], np.float64) - warp(outputs[t - interval], back)
        errors.append(float(np.sum(np.sum(diff**2, axis=-1) * mask) / mask.sum()))
    return float(np.mean(errors)) if errors else float("nan")


# ---- a video's state between frames -----------------------------------------------------------

class VideoState:
    """What a video's frame loop carries from frame to frame for `mode` (see MODES).

    `content_stats`: the whole video's (1, C) statistics once `first_pass` has run (stats
    without momentum); `running()`: the arguments of `running_stats` for the next batch
    (stats with momentum), `advance(mean, std)` to keep a batch's last row; `blend`:
    the flow step for each output frame, in order.
    """

    def __init__(self, mode: str = "none", weight: float = TEMPORAL_WEIGHT,
                 momentum: float | None = None):
        if mode not in MODES:
            raise ValueError(f"temporal mode must be one of {MODES}, got {mode!r}")
        self.mode, self.momentum = mode, momentum
        self.needs_first_pass = uses_stats(mode) and momentum is None
        self.content_stats = None
        self._blender = FlowBlender(weight) if uses_flow(mode) else None
        self._state = None  # (mean (C,), std (C,)) after the last frame, running mode

    def first_pass(self, stats) -> None:
        """Pool per-frame (mean, std, positions) triples (see `pool_stats`)."""
        stats = list(stats)
        if not stats:
            raise ValueError("no frames for the content statistics")
        means, stds, counts = zip(*stats)
        self.content_stats = pool_stats(np.concatenate(means), np.concatenate(stds), counts)

    @property
    def is_running(self) -> bool:
        """Whether frames use a running average of content statistics (`running`)."""
        return uses_stats(self.mode) and self.momentum is not None

    def running(self, channels):
        """(state mean, state std, momentum, started) for `running_stats`, or None;
        `channels()`: C at the AdaIN layer (the state's size before the first frame)."""
        if not self.is_running:
            return None
        if self._state is None:
            zeros = np.zeros(channels(), np.float32)
            return zeros, zeros, np.float32(self.momentum), np.bool_(False)
        return (*self._state, np.float32(self.momentum), np.bool_(True))

    def advance(self, mean, std) -> None:
        self._state = (np.asarray(mean, np.float32), np.asarray(std, np.float32))

    def blend(self, content: np.ndarray, out: np.ndarray) -> np.ndarray:
        return out if self._blender is None else self._blender(content, out)
