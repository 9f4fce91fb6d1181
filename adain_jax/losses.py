"""The training objective of Sec. 5.1 (Eq. 11-13), as the public PyTorch port computes it.

The encoder f is fixed; only the decoder g is trained. With t = AdaIN(f(c), f(s)) at relu4_1
(alpha = 1) and T(c, s) = g(t):
    L   = L_c + lambda L_s                                                   (Eq. 11)
    L_c = || f(g(t)) - t ||_2                                                 (Eq. 12)
    L_s = sum_i || mu(phi_i(g(t))) - mu(phi_i(s)) ||_2
               + || sigma(phi_i(g(t))) - sigma(phi_i(s)) ||_2                 (Eq. 13)
where phi_i are relu1_1, relu2_1, relu3_1, relu4_1. Like the port, each norm is a mean
squared error (torch's MSELoss) and sigma is ops.mean_std's sqrt(unbiased var + 1e-5).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from adain_jax import architectures, ops
from adain_jax.configs import CONTENT_WEIGHT, STYLE_WEIGHT  # noqa: F401  (the defaults)
from adain_jax.models import STYLE_LAYERS
from adain_jax.transfer import decode, encode



def mse(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.mean(jnp.square(a - b))


def content_loss(g_t_feat: jax.Array, t: jax.Array) -> jax.Array:
    """Eq. 12: distance of f(g(t)) at relu4_1 to the AdaIN target t (a constant)."""
    return mse(g_t_feat, jax.lax.stop_gradient(t))


def style_loss(g_t_feats: dict, style_feats: dict, layers=STYLE_LAYERS) -> jax.Array:
    """Eq. 13: matched channel means and stds of f(g(t)) and f(s), summed over `layers`."""
    total = 0.0
    for name in layers:
        mean_g, std_g = ops.mean_std(g_t_feats[name])
        mean_s, std_s = ops.mean_std(jax.lax.stop_gradient(style_feats[name]))
        total = total + mse(mean_g, mean_s) + mse(std_g, std_s)
    return total


def _upcast(feats: dict) -> dict:
    return {name: ops.upcast(x) for name, x in feats.items()}


def loss(params, content, style, *, content_weight: float = CONTENT_WEIGHT,
         style_weight: float = STYLE_WEIGHT, dtype=None):
    """Eq. 11 on a batch of (content, style) pairs, NHWC float32 in [0, 1].

    Returns (total, {"content": L_c, "style": L_s}) with the unweighted L_c and L_s.
    Differentiate with respect to params["decoder"]: the targets t and f(s) depend on the
    encoder only, as in the port, where the encoder's parameters are frozen. The decoded
    image is not cropped (training crops are multiples of 8).
    dtype: bfloat16 (or float16) runs the encoder and decoder convolutions in it (mixed
    precision); AdaIN, the feature statistics and the losses stay float32, and so do
    the parameters and their gradients.
    """
    arch = architectures.detect(params)
    style_feats = _upcast(encode(params, style, taps=arch.style_layers, dtype=dtype))
    content_feat = _upcast(encode(params, content, taps=(arch.content_layer,),
                               dtype=dtype))[arch.content_layer]
    t = ops.adain(content_feat, style_feats[arch.content_layer])
    g_t = decode(params, t, dtype=dtype)
    g_t_feats = _upcast(encode(params, g_t, taps=arch.style_layers, dtype=dtype))
    loss_c = content_loss(g_t_feats[arch.content_layer], t)
    loss_s = style_loss(g_t_feats, style_feats, arch.style_layers)
    return content_weight * loss_c + style_weight * loss_s, {"content": loss_c, "style": loss_s}
