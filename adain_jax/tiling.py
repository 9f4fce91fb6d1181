"""Stylising images too large for memory in one piece, tile by tile, with the same result.

T(c, s) = g(AdaIN(f(c), f(s))) has one global coupling: the channel mean and std of f(c)
over the whole image. Everything else is local, so `apply_tiled`
  1. encodes windows of the content that overlap by a halo covering the encoder's
     receptive field, keeping only each window's interior: those relu4_1 cells are the
     ones the whole-image encoder computes (windows start on the 8-pixel pooling grid,
     and reflection padding happens only at the image's true borders);
  2. takes the content statistics over the assembled relu4_1 map, in float64;
  3. decodes windows of t = AdaIN(f(c)) with a halo covering the decoder's receptive
     field and keeps each window's interior pixels.
Interiors tile the image exactly, so there are no seams to blend: the output equals
`transfer.apply` up to float32 rounding (tests/test_tiling.py). Peak memory is the relu4_1
map (32 bytes per content pixel) plus one window's activations, instead of about
1.5 KiB per pixel for the whole image at once.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from adain_jax import architectures, models, ops, transfer

STRIDE = models.FEATURE_STRIDE  # image pixels per relu4_1 cell
DEFAULT_TILE = 1024  # image pixels per tile side; about 1.5 GiB of activations per window


def receptive_reach(layers, *, encoder: bool) -> int:
    """How far, in image pixels, one relu4_1 cell's 8x8 block reaches out on either side.

    Encoder: the image pixels a cell depends on. Decoder: the output pixels a cell of t
    influences. Reflection padding at a window's edge corrupts exactly this far in, so a
    halo of this many pixels (rounded up to whole cells) makes the interior exact.
    """
    lo, hi = 0, 1  # one cell, in the coordinates of the current layer
    for layer in (reversed(layers) if encoder else layers):
        if layer in (models.POOL, models.UP):
            lo, hi = 2 * lo, 2 * hi
        else:
            lo, hi = lo - layer.kernel // 2, hi + layer.kernel // 2
    return max(-lo, hi - STRIDE)


ENCODER_HALO = math.ceil(receptive_reach(models.ENCODER_LAYERS, encoder=True) / STRIDE)
DECODER_HALO = math.ceil(receptive_reach(models.DECODER_LAYERS, encoder=False) / STRIDE)


def windows(cells: int, tile: int, halo: int):
    """Split `cells` relu4_1 rows into tiles [a, b) of `tile` cells, each with the window
    [s, e) that computes it exactly: `halo` cells beyond it or the true border.

    Windows have one length where possible (tiles near a border shift theirs inward), so
    jit compiles at most two shapes per axis.
    """
    length = tile + 2 * halo
    for a in range(0, cells, tile):
        b = min(a + tile, cells)
        if cells <= length:
            yield a, b, 0, cells
        else:
            s = min(max(a - halo, 0), cells - length)
            yield a, b, s, s + length


@jax.jit
def _encode_window(params, window):
    return transfer.encode(params, window[None])[0]


@jax.jit
def _decode_window(params, feat, content_mean, content_std, style_mean, style_std, alpha):
    t = ops.adain_from_stats(feat[None], content_mean[None], content_std[None],
                             style_mean[None], style_std[None])
    return transfer.decode(params, ops.blend_alpha(t, feat[None], alpha))[0]


def encode_tiled(params, content, tile: int = DEFAULT_TILE) -> np.ndarray:
    """f(content) at relu4_1 of one (H, W, 3) image, window by window: (H/8, W/8, C),
    sides rounded up."""
    h, w, _ = content.shape
    rows, cols = -(-h // STRIDE), -(-w // STRIDE)
    feat = None
    for a, b, s, e in windows(rows, tile // STRIDE, ENCODER_HALO):
        for a2, b2, s2, e2 in windows(cols, tile // STRIDE, ENCODER_HALO):
            window = content[STRIDE * s: STRIDE * e, STRIDE * s2: STRIDE * e2]
            out = np.asarray(_encode_window(params, jnp.asarray(window)))
            if feat is None:
                feat = np.empty((rows, cols, out.shape[-1]), np.float32)
            feat[a:b, a2:b2] = out[a - s: b - s, a2 - s2: b2 - s2]
    return feat


def mean_std_float64(feat: np.ndarray, eps: float = ops.EPS):
    """ops.mean_std of one (H, W, C) map, two passes in float64 over chunks of rows."""
    n = feat.shape[0] * feat.shape[1]
    chunk = max(1, (1 << 22) // (feat.shape[1] * feat.shape[2]))  # ~32 MiB of float64
    total = sum(np.sum(feat[i: i + chunk], axis=(0, 1), dtype=np.float64)
                for i in range(0, feat.shape[0], chunk))
    mean = total / n
    squares = sum(np.sum(np.square(feat[i: i + chunk] - mean), axis=(0, 1))
                  for i in range(0, feat.shape[0], chunk))
    return mean, np.sqrt(squares / (n - 1) + eps)


def decode_tiled(params, feat, content_stats, style_stats, alpha, size, tile=DEFAULT_TILE):
    """g((1 - alpha) f + alpha AdaIN(f)) window by window; an (H, W, 3) float32 image."""
    h, w = size
    out = np.empty((h, w, 3), np.float32)
    stats = [jnp.asarray(x, jnp.float32) for x in (*content_stats, *style_stats)]
    for a, b, s, e in windows(feat.shape[0], tile // STRIDE, DECODER_HALO):
        for a2, b2, s2, e2 in windows(feat.shape[1], tile // STRIDE, DECODER_HALO):
            image = _decode_window(params, jnp.asarray(feat[s:e, s2:e2]), *stats, alpha)
            y0, y1 = STRIDE * a, min(STRIDE * b, h)
            x0, x1 = STRIDE * a2, min(STRIDE * b2, w)
            oy, ox = STRIDE * s, STRIDE * s2
            out[y0:y1, x0:x1] = np.asarray(image[y0 - oy: y1 - oy, x0 - ox: x1 - ox])
    return out


def apply_tiled(params, content, style, alpha=1.0, *, tile: int = DEFAULT_TILE,
                content_stats=None):
    """`transfer.apply(params, content, style, alpha)` in tiles of `tile` pixels, for large
    contents: same result (float32 rounding), memory bounded by one tile's activations.

    content: (H, W, 3) or (N, H, W, 3) in [0, 1], NumPy or JAX; returns NumPy float32 of
        the same shape. style: image(s) (S, Hs, Ws, 3) with S = 1 or N, encoded whole, or
        a `transfer.StyleStats`. Only the VGG-19 encoder is supported (its geometry
        sets the halos); spatial control and colour preservation need `transfer.apply`.
    content_stats: as `transfer.apply`'s, (mean, std) each (C,) or (1, C), used for every
        image; or a function of each image's own (mean, std), (C,) float64, that returns
        the ones to use (a video's running average, temporal.py).
    """
    if tile <= 0 or tile % STRIDE:
        raise ValueError(f"tile must be a positive multiple of {STRIDE} pixels, got {tile}")
    if architectures.detect(params).name != "vgg19":
        raise ValueError("apply_tiled supports the VGG-19 encoder only")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    content = np.asarray(content, np.float32)
    single = content.ndim == 3
    batch = content[None] if single else content
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"expected NHWC or HWC RGB images, got shape {content.shape}")
    rows, cols = (models.feature_size(n) for n in batch.shape[1:3])
    if rows * cols < 2:  # the unbiased std needs two relu4_1 positions
        raise ValueError(f"content image too small: {rows}x{cols} at relu4_1")
    stats = style if isinstance(style, transfer.StyleStats) else transfer.encode_style(params, style)
    style_mean, style_std = np.asarray(stats.mean), np.asarray(stats.std)
    if style_mean.shape[0] not in (1, batch.shape[0]):
        raise ValueError(f"{style_mean.shape[0]} styles for {batch.shape[0]} content images")

    outputs = []
    for i, image in enumerate(batch):
        k = i if style_mean.shape[0] > 1 else 0
        feat = encode_tiled(params, image, tile)
        if content_stats is None:
            stats = mean_std_float64(feat)
        elif callable(content_stats):
            stats = content_stats(*mean_std_float64(feat))
        else:
            stats = tuple(np.reshape(x, -1) for x in content_stats)
        outputs.append(decode_tiled(params, feat, stats, (style_mean[k], style_std[k]),
                                    alpha, image.shape[:2], tile))
        del feat
    return outputs[0] if single else np.stack(outputs)
