"""AdaIN and the paper's test-time controls as pure array functions (NHWC).

Statistics follow the public PyTorch port so its published decoder works unchanged:
std = sqrt(unbiased variance + 1e-5). The Lua original (`AdaptiveInstanceNormalization.lua`)
uses the biased variance with eps 1e-5 inside the sqrt; the two differ by a factor
sqrt(n / (n - 1)) on sigma, about 1e-4 relative at 512x512 inputs (n = 64*64).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

EPS = 1e-5
SPATIAL = (1, 2)


def upcast(x: jax.Array) -> jax.Array:
    """`x` in float32 unless already float32 or float64: AdaIN's statistics and the
    losses stay float32 when the convolutions run in bfloat16 (mixed precision)."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def mean_std(x: jax.Array, eps: float = EPS):
    """Channel-wise mean and std over space of NHWC `x`, shapes (N, C)."""
    mean = jnp.mean(x, axis=SPATIAL)
    var = jnp.var(x, axis=SPATIAL, ddof=1)
    return mean, jnp.sqrt(var + eps)


def adain_from_stats(content_feat, content_mean, content_std, style_mean, style_std):
    """sigma(y) * (x - mu(x)) / sigma(x) + mu(y), statistics given as (N, C)."""
    expand = lambda s: s[:, None, None, :]
    normalized = (content_feat - expand(content_mean)) / expand(content_std)
    return normalized * expand(style_std) + expand(style_mean)


def adain(content_feat: jax.Array, style_feat: jax.Array, eps: float = EPS) -> jax.Array:
    """Adaptive instance normalisation, Eq. 8: AdaIN(x, y) = sigma(y)(x - mu(x))/sigma(x) + mu(y)."""
    return adain_from_stats(content_feat, *mean_std(content_feat, eps), *mean_std(style_feat, eps))


def blend_alpha(t: jax.Array, content_feat: jax.Array, alpha) -> jax.Array:
    """Content-style trade-off, Eq. 14: (1 - alpha) f(c) + alpha t."""
    return t * alpha + content_feat * (1 - alpha)


def interpolate_stats(style_mean, style_std, weights):
    """Style interpolation, Eq. 15, as a convex combination of style statistics.

    sum_k w_k AdaIN(x, s_k) = sum_k w_k (sigma_k z + mu_k) = z sum_k w_k sigma_k + sum_k w_k mu_k,
    so interpolating AdaIN outputs equals AdaIN with interpolated statistics.
    `style_mean`/`style_std` are (..., K, C); weights (K,) are normalised to sum to 1.
    """
    weights = jnp.asarray(weights, style_mean.dtype)
    weights = weights / jnp.sum(weights)
    return (jnp.einsum("...kc,k->...c", style_mean, weights),
            jnp.einsum("...kc,k->...c", style_std, weights))


def resize_nearest(masks: jax.Array, height: int, width: int) -> jax.Array:
    """Nearest resize of (..., H, W) masks, source index floor(i * in / out) like torch."""
    h_in, w_in = masks.shape[-2:]
    rows = (jnp.arange(height) * h_in) // height
    cols = (jnp.arange(width) * w_in) // width
    return masks[..., rows, :][..., cols]


def masked_adain(content_feat, style_mean, style_std, masks, eps: float = EPS):
    """Spatial control (Fig. 10): region k of the content takes style k.

    content_feat (N, H, W, C); style statistics (N or 1, K, C); masks (N or 1, K, H, W) at
    feature resolution, soft values allowed. Content statistics of region k are weighted by
    m_k with the unbiased ("reliability weights") variance, sum m (x - mu)^2 / (V1 - V2/V1),
    V1 = sum m, V2 = sum m^2: for a binary mask it is exactly the region's unbiased variance,
    as the Lua original computes it on the gathered pixels. The output at each position is
    (sum_k m_k AdaIN_k(x) + r x) / max(1, sum_k m_k), r = max(0, 1 - sum_k m_k): where the
    masks cover less than the whole pixel the content features fill the rest (alpha = 0 at
    uncovered positions), instead of zero features that decode to flat colour.
    """
    m = jnp.moveaxis(masks, 1, -1)[..., None]  # (N, H, W, K, 1)
    x = content_feat[..., None, :]  # (N, H, W, 1, C)
    v1 = jnp.sum(m, axis=SPATIAL)  # (N, K, 1)
    v2 = jnp.sum(m * m, axis=SPATIAL)
    # A region empty (or a single pixel) at feature resolution has no statistics; guard the
    # divisions so it contributes nothing instead of NaN everywhere (0 * NaN is NaN).
    safe = lambda d: jnp.where(d > 0, d, 1.0)
    mean = jnp.sum(m * x, axis=SPATIAL) / safe(v1)  # (N, K, C)
    dof = v1 - v2 / safe(v1)
    var = jnp.sum(m * (x - mean[:, None, None]) ** 2, axis=SPATIAL) / safe(dof)
    std = jnp.sqrt(var + eps)
    expand = lambda s: s[:, None, None]  # (N, 1, 1, K, C)
    t = (x - expand(mean)) / expand(std) * expand(style_std) + expand(style_mean)
    weight_sum = jnp.sum(m, axis=-2)  # (N, H, W, 1)
    uncovered = jnp.maximum(1.0 - weight_sum, 0.0)
    return (jnp.sum(m * t, axis=-2) + uncovered * content_feat) / jnp.maximum(weight_sum, 1.0)


def _sym_sqrt(matrix):
    eigvals, eigvecs = jnp.linalg.eigh(matrix)
    return (eigvecs * jnp.sqrt(jnp.clip(eigvals, 0.0))) @ eigvecs.T


def coral(source: jax.Array, target: jax.Array) -> jax.Array:
    """Colour preservation by CORAL: give `source` (H, W, 3) the colour statistics of `target`.

    As the PyTorch port's `coral`: per-channel standardise (unbiased std), match the
    covariance sum(z z^T) + I of the standardised pixels with a symmetric matrix square root,
    then restore the target's channel means and stds. The sum is not divided by the pixel
    count, as in the reference.
    """
    def flat_stats(img):
        f = img.reshape(-1, 3).T  # (3, P)
        mean = f.mean(axis=1, keepdims=True)
        std = f.std(axis=1, ddof=1, keepdims=True)
        z = (f - mean) / std
        return z, mean, std, z @ z.T + jnp.eye(3, dtype=img.dtype)

    z_s, _, _, cov_s = flat_stats(source)
    _, mean_t, std_t, cov_t = flat_stats(target)
    hi = jax.lax.Precision.HIGHEST
    transfer = jnp.matmul(_sym_sqrt(cov_t), jnp.linalg.inv(_sym_sqrt(cov_s)), precision=hi)
    z = jnp.matmul(transfer, z_s, precision=hi)
    return (z * std_t + mean_t).T.reshape(source.shape)


# YIQ (NTSC) luminance, as Gatys et al., "Preserving color in neural artistic style transfer".
# NumPy, not jnp: a module-level jnp constant would start JAX's backends at import.
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114],
                         [0.595716, -0.274453, -0.321263],
                         [0.211456, -0.522591, 0.311135]], np.float32)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)


def rgb_to_yiq(img):
    return img @ _RGB_TO_YIQ.T


def yiq_to_rgb(img):
    return img @ _YIQ_TO_RGB.T


def luminance_image(img):
    """Luminance Y of an RGB image, repeated to three channels."""
    y = rgb_to_yiq(img)[..., :1]
    return jnp.broadcast_to(y, img.shape)


def match_luminance(style_img, content_img):
    """Style luminance image with the content luminance's mean and std (Gatys et al. 2016)."""
    ys, yc = rgb_to_yiq(style_img)[..., 0], rgb_to_yiq(content_img)[..., 0]
    ys = (ys - ys.mean()) * (yc.std() / jnp.maximum(ys.std(), 1e-8)) + yc.mean()  # flat style: no NaN
    return jnp.broadcast_to(ys[..., None], style_img.shape)


def recombine_luminance(stylized, content_img):
    """Keep the stylised luminance, take the chroma (I, Q) of the content image."""
    y = rgb_to_yiq(stylized)[..., :1]
    iq = rgb_to_yiq(content_img)[..., 1:]
    return yiq_to_rgb(jnp.concatenate([y, iq], axis=-1))
