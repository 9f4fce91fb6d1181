"""The public, pure style-transfer API: encode, decode, encode_style and apply.

`params` is {"encoder": ..., "decoder": ...}, each a Linen parameter tree of models.py (VGG-19)
or densenet.py (DenseNet-121), told apart by `architectures.detect` (what
`weights.load_params` returns). Every function is pure and works under jax.jit, jax.vmap
and jax.grad.
"""
from __future__ import annotations

import functools
import warnings
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from adain_jax import architectures, models, ops
from adain_jax.configs import DTYPES

COLOR_MODES = ("coral", "luminance")


class StyleStats(NamedTuple):
    """Encoded style: channel mean and std of f(s) at the AdaIN layer, each (S, C).

    Made by `encode_style`; pass it to `apply` as `style` to reuse one style for many
    contents without encoding it again.
    """

    mean: jax.Array
    std: jax.Array


def compute_dtype(dtype) -> str | None:
    """The name of a compute dtype ("bfloat16", "float16"), or None for float32 (default).

    Accepts None, a NumPy/JAX dtype or its name, and the short names bf16, fp16, fp32.
    """
    if dtype is None:
        return None
    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of float32, bfloat16, float16 (or bf16, fp16), "
                         f"got {dtype!r}")
    return None if DTYPES[name] == "float32" else DTYPES[name]


def _cast(tree, dtype: str | None):
    """Mixed precision: floating leaves of `tree` cast to `dtype` for the computation.
    The parameters stay float32 where they are kept (and get float32 gradients)."""
    if dtype is None:
        return tree
    return jax.tree.map(lambda x: x.astype(dtype)
                        if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x, tree)


def encode(params, images, taps: str | Sequence[str] | None = None, *, dtype=None):
    """f(images): encoder activations. A single tap name gives an array, a sequence a dict.

    taps=None is the AdaIN layer (relu4_1 for VGG-19, denseblock3 for DenseNet-121).
    dtype: compute in bfloat16 or float16 (see `compute_dtype`); activations come back
    in that dtype.
    """
    arch = architectures.detect(params)
    dtype = compute_dtype(dtype)
    taps = arch.content_layer if taps is None else taps
    names = (taps,) if isinstance(taps, str) else tuple(taps)
    feats = arch.encode(_cast(params["encoder"], dtype), _cast(jnp.asarray(images), dtype),
                        names)
    return feats[taps] if isinstance(taps, str) else feats


def decode(params, t, size: tuple[int, int] | None = None, *, dtype=None):
    """g(t): AdaIN-layer features to an RGB image; `size` crops to an exact (H, W).

    The VGG decoder doubles three times, so an H x W content gives 8*ceil(H/8) rows; the
    top-left H x W block is aligned with the content (ceil-mode pooling pads at the end).
    The DenseNet one doubles four times from the map of the image padded at the bottom and
    right to a multiple of 16, so the same top-left crop applies.
    dtype: compute in bfloat16 or float16; the image comes back in that dtype.
    """
    dtype = compute_dtype(dtype)
    image = architectures.detect(params).decode(_cast(params["decoder"], dtype),
                                                _cast(t, dtype))
    if size is not None:  # lax.slice, not indexing: a gather when the sizes are symbolic
        n, _, _, c = image.shape
        image = jax.lax.slice(image, (0, 0, 0, 0), (n, size[0], size[1], c))
    return image


def as_float_images(images, what: str):
    """Images as a float array in [0, 1]: uint8 is divided by 255; NumPy floats outside
    [0, 1] (a 0-255 or normalised image given by mistake) get a warning.

    Tracers are passed through untouched: inside jit their values cannot be checked.
    """
    if isinstance(images, jax.core.Tracer):
        return images
    if isinstance(images, (list, tuple)):  # e.g. S images of one size, as a list
        traced = any(isinstance(x, jax.core.Tracer) for x in images)
        images = jnp.stack(images) if traced else np.asarray(images)
        if traced:
            return images
    dtype = np.dtype(images.dtype)
    if dtype == np.uint8:
        return jnp.asarray(images, jnp.float32) / 255.0
    if not np.issubdtype(dtype, np.floating) and dtype != jnp.bfloat16:
        raise TypeError(f"{what} images must be float in [0, 1] or uint8, got {dtype}")
    if isinstance(images, np.ndarray) and images.size:
        low, high = float(images.min()), float(images.max())
        if low < -_RANGE_SLACK or high > 1 + _RANGE_SLACK:
            warnings.warn(f"{what} values span [{low:.3g}, {high:.3g}]; adain_jax expects "
                          "[0, 1] (divide 8-bit images by 255, or pass them as uint8)",
                          stacklevel=3)
    return images


_RANGE_SLACK = 1 / 64  # resampling overshoot is fine; 0-255 or mean/std inputs are not


def _batched(images):
    images = jnp.asarray(images)
    if images.ndim == 3:
        return images[None], True
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected NHWC or HWC RGB images, got shape {images.shape}")
    return images, False


def _color_mode(preserve_color):
    if preserve_color in (False, None):
        return None
    if preserve_color is True:
        return "coral"
    if preserve_color not in COLOR_MODES:
        raise ValueError(f"preserve_color must be False, True, 'coral' or 'luminance', "
                         f"got {preserve_color!r}")
    return preserve_color


def _check_feature_size(feat, what: str):
    """The unbiased std needs two positions at the AdaIN layer; one gives NaN silently."""
    if models.is_static(*feat.shape[1:3]) and feat.shape[1] * feat.shape[2] < 2:
        raise ValueError(f"{what} image too small: {feat.shape[1]}x{feat.shape[2]} at the "
                         "AdaIN layer needs at least 2 positions (e.g. 9 px on a side for VGG)")


def encode_style(params, style, *, dtype=None) -> StyleStats:
    """Encode style image(s) (S, H, W, 3) once: AdaIN-layer mean and std, each (S, C),
    float32 (with `dtype` bfloat16 the encoder runs in it, the statistics do not).

    Like `apply`, a plain call runs one compiled program per input shape.
    """
    return _encode_style_jit(params, as_float_images(style, "style"), compute_dtype(dtype))


@functools.partial(jax.jit, static_argnames=("dtype",))
def _encode_style_jit(params, style, dtype=None) -> StyleStats:
    style, _ = _batched(style)
    feat = ops.upcast(encode(params, style, dtype=dtype))
    _check_feature_size(feat, "style")
    return StyleStats(*ops.mean_std(feat))


def _style_items(style, multi: bool):
    """Normalise `style` to a list of (B, H, W, 3) arrays: one per style when `multi`."""
    if isinstance(style, (list, tuple)) and not isinstance(style, StyleStats):
        items = [_batched(s)[0] for s in style]
    else:
        items = [_batched(style)[0]]
    if multi:
        items = [s[i : i + 1] for s in items for i in range(s.shape[0])]
    return items


def _style_stats(params, style, content, color_mode, multi: bool, dtype=None):
    """Style statistics: (S, C) pairwise, or (N or 1, K, C) for K styles."""
    if isinstance(style, StyleStats):
        if color_mode is not None:
            raise ValueError("preserve_color needs style images, not pre-encoded StyleStats")
        mean, std = jnp.asarray(style.mean), jnp.asarray(style.std)
        return (mean[None], std[None]) if multi else (mean, std)

    prepare = {"coral": ops.coral, "luminance": ops.match_luminance}.get(color_mode)
    stats = []
    for s in _style_items(style, multi):
        if prepare is not None:
            if s.shape[0] == 1:
                s = jax.vmap(lambda c, s0=s[0]: prepare(s0, c))(content)
            elif s.shape[0] == content.shape[0]:
                s = jax.vmap(prepare)(s, content)
            else:
                raise ValueError(f"{s.shape[0]} styles for {content.shape[0]} contents")
        feat = ops.upcast(encode(params, s, dtype=dtype))
        _check_feature_size(feat, "style")
        stats.append(ops.mean_std(feat))
    if not multi:
        return tuple(jnp.concatenate(parts) for parts in zip(*stats))
    # Each style's stats are (1 or N, C); stack the K styles on axis 1.
    n = max(m.shape[0] for m, _ in stats)
    stack = lambda xs: jnp.stack([jnp.broadcast_to(x, (n,) + x.shape[1:]) for x in xs], axis=1)
    return stack([m for m, _ in stats]), stack([s for _, s in stats])


def _check_alpha(alpha):
    try:
        value = float(alpha)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return  # traced under jit/grad: the caller owns the range
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {value}")


def apply(params, content, style, alpha=1.0, *, style_weights=None, masks=None,
          preserve_color=False, dtype=None, content_stats=None):
    """Stylise `content` with `style`: T(c, s, alpha) = g((1 - alpha) f(c) + alpha AdaIN(f(c), f(s))).

    content: (N, H, W, 3) or (H, W, 3), float in [0, 1] or uint8 (divided by 255). The
        output has the same shape, float32 in [0, 1] up to the decoder's overshoot.
    style: images (S, Hs, Ws, 3) with S = 1 (shared) or N (paired), a list of such arrays
        (sizes may differ), or a `StyleStats` from `encode_style`.
    alpha: content-style trade-off, Eq. 14.
    style_weights: K weights over K styles: interpolation, Eq. 15 (normalised to sum 1).
    masks: (K, H, W) or (N, K, H, W) in content-image space, one per style: spatial
        control (Fig. 10), values in [0, 1], soft allowed; where they sum below 1 the
        content fills the rest (alpha 0 where no mask covers).
    preserve_color: False; True or "coral" (CORAL on the style image, as the reference
        port); "luminance" (stylise luminance only, keep the content's chroma).
    dtype: None or float32 (default); bfloat16 (or float16) runs the encoder and decoder
        convolutions in it, for accelerators. The parameters are cast for the computation,
        not changed; AdaIN's statistics, the blend and the output stay float32.
    content_stats: a `StyleStats`-shaped (mean, std), each (N or 1, C), used in Eq. 8 in
        place of each content image's own mu(f(c)) and sigma(f(c)): e.g. a whole video's
        (`encode_content_stats`, temporal.py). Not with masks (they take region statistics).

    Called outside jit, it runs one compiled program per input shape (compiled on the
    first call with that shape, then reused); inside jit, vmap or grad it traces inline.
    """
    _check_alpha(alpha)
    content = as_float_images(content, "content")
    if not isinstance(style, StyleStats):
        if isinstance(style, (list, tuple)):
            style = [as_float_images(s, "style") for s in style]
        else:
            style = as_float_images(style, "style")
    if style_weights is not None and not isinstance(style_weights, jax.core.Tracer):
        style_weights = jnp.asarray(style_weights, jnp.float32)
    if content_stats is not None and masks is not None:
        raise ValueError("give content_stats or masks, not both: masks take each region's "
                         "own statistics")
    return _apply_jit(params, content, style, alpha, style_weights, masks,
                      _color_mode(preserve_color), compute_dtype(dtype), content_stats)


def encode_content_stats(params, content, *, preserve_color=False, dtype=None) -> StyleStats:
    """AdaIN-layer mean and std of each content image, (N, C) each, float32: the mu(f(c))
    and sigma(f(c)) of Eq. 8 as `apply` computes them (of the luminance image with
    preserve_color="luminance"). Pool or average them and pass them back to `apply` as
    `content_stats` (temporal.py does, for video)."""
    content = as_float_images(content, "content")
    return _content_stats_jit(params, content, _color_mode(preserve_color),
                              compute_dtype(dtype))


def _content_feat(params, content, color_mode, dtype):
    content_in = ops.luminance_image(content) if color_mode == "luminance" else content
    content_feat = ops.upcast(encode(params, content_in, dtype=dtype))
    _check_feature_size(content_feat, "content")
    return content_feat


@functools.partial(jax.jit, static_argnames=("color_mode", "dtype"))
def _content_stats_jit(params, content, color_mode=None, dtype=None) -> StyleStats:
    return StyleStats(*ops.mean_std(_content_feat(params, _batched(content)[0], color_mode,
                                                  dtype)))


def _apply(params, content, style, alpha, style_weights, masks, color_mode, dtype=None,
           content_stats=None):
    content, unbatched = _batched(content)
    n, h, w, _ = content.shape
    if style_weights is not None and masks is not None:
        raise ValueError("give style_weights or masks, not both")
    multi = style_weights is not None or masks is not None

    content_feat = _content_feat(params, content, color_mode, dtype)
    style_mean, style_std = _style_stats(params, style, content, color_mode, multi, dtype)

    if masks is not None:
        masks = jnp.asarray(masks, content_feat.dtype)
        masks = masks[None] if masks.ndim == 3 else masks
        if masks.shape[1] != style_mean.shape[1] or masks.shape[-2:] != (h, w):
            raise ValueError(f"masks must be (K, {h}, {w}) with K = {style_mean.shape[1]} "
                             f"styles, got {masks.shape}")
        feature_size = architectures.detect(params).feature_size
        masks = ops.resize_nearest(masks, feature_size(h), feature_size(w))
        t = ops.masked_adain(content_feat, style_mean, style_std, masks)
    else:
        if style_weights is not None:
            if len(style_weights) != style_mean.shape[1]:
                raise ValueError(f"{len(style_weights)} style weights for "
                                 f"{style_mean.shape[1]} styles")
            style_mean, style_std = ops.interpolate_stats(style_mean, style_std, style_weights)
        if style_mean.shape[0] not in (1, n):
            raise ValueError(f"{style_mean.shape[0]} styles for {n} content images")
        style_mean = jnp.broadcast_to(style_mean, (n,) + style_mean.shape[1:])
        style_std = jnp.broadcast_to(style_std, (n,) + style_std.shape[1:])
        if content_stats is None:
            content_mean, content_std = ops.mean_std(content_feat)
        else:
            content_mean, content_std = (
                jnp.broadcast_to(jnp.asarray(x, content_feat.dtype), (n, content_feat.shape[-1]))
                for x in content_stats)
        t = ops.adain_from_stats(content_feat, content_mean, content_std, style_mean, style_std)

    t = ops.blend_alpha(t, content_feat, alpha)
    out = ops.upcast(decode(params, t, size=(h, w), dtype=dtype))
    if color_mode == "luminance":
        out = ops.recombine_luminance(out, content)
    return out[0] if unbatched else out


# Eager, apply dispatched some 300 ops one by one (13 s for a first 512^2 call, against 2 s
# to compile the whole graph); jitted here, plain calls need no jax.jit of their own.
_apply_jit = jax.jit(_apply, static_argnames=("color_mode", "dtype"))
