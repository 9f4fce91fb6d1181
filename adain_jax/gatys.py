"""The optimisation baseline of Gatys et al. (2016), with the same encoder as AdaIN.

The output image x starts as the content image c and is optimised directly for
    L(x) = content_weight * L_c(x) + style_weight * L_s(x),
    L_c(x) = mse(f(x), f(c)) at the AdaIN layer (relu4_1 for VGG-19),
with one of two style losses over the style layers (relu1_1 .. relu4_1 for VGG-19):
- "gram" (Gatys et al.): L_s = sum_l E_l, E_l = 1/(4 N_l^2 M_l^2) sum_ij (G_ij - A_ij)^2
  with G = F^T F the Gram matrix of the N_l channels over the M_l = H_l W_l positions; that
  is E_l = mse(G / M_l, A / M_l) / 4 (`gram`, `gram_style_loss`), where A, from the style
  image, is divided by the style's own M. The layers are summed with weight 1 each, like
  Eq. 13 (Gatys et al. weight their five layers 1/5).
- "meanstd": Eq. 13, the AdaIN paper's loss (losses.style_loss); its Sec. 7.1 uses it for
  Gatys et al. in the quantitative comparison.
Optimisers: L-BFGS (Optax's, with its zoom line search; the usual choice) or Adam. The
result is clipped to [0, 1] once, at the end.

Each step is one jitted function, compiled once per image size, optimiser and style loss
(weights and learning rate are traced) and reused across calls, so timing a second call
measures the optimisation alone.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from adain_jax import architectures, losses, ops
from adain_jax.configs import (GATYS_OPTIMIZERS as OPTIMIZERS,  # noqa: F401
                               GATYS_STEPS as STEPS, GATYS_STYLE_LOSSES as STYLE_LOSSES)
from adain_jax.transfer import encode

CONTENT_WEIGHT = 1.0
# lambda of Eq. 11 for the mean/std loss. With the normalised VGG (channel means near 1)
# E_l is of the same order as Eq. 13's terms, so the Gram loss starts from the same weight;
# it is not tuned on the published weights.
STYLE_WEIGHT = {"gram": 10.0, "meanstd": losses.STYLE_WEIGHT}
LEARNING_RATE = {"lbfgs": 1.0, "adam": 0.01}  # L-BFGS: initial step of its line search


def gram(feat: jax.Array) -> jax.Array:
    """G / M: the (N, C, C) Gram matrices of NHWC `feat` divided by the M = H W positions."""
    n, h, w, c = feat.shape
    flat = feat.reshape(n, h * w, c)
    return jnp.einsum("npc,npd->ncd", flat, flat, precision=jax.lax.Precision.HIGHEST) / (h * w)


def gram_style_loss(x_grams: dict, style_grams: dict) -> jax.Array:
    """sum_l E_l = sum_l mse(G_l / M_l, A_l / M_l) / 4, given the normalised Gram matrices."""
    return sum(losses.mse(x_grams[k], style_grams[k]) / 4 for k in style_grams)


def _targets(params, content, style, style_loss: str):
    """f(c) at the content layer, and the style's Gram matrices or (mean, std) per layer."""
    arch = architectures.detect(params)
    style_feats = encode(params, style, taps=arch.style_layers)
    if style_loss == "gram":
        style_t = {k: gram(v) for k, v in style_feats.items()}
    else:
        style_t = {k: ops.mean_std(v) for k, v in style_feats.items()}
    return encode(params, content), style_t


def objective(x, params, targets, *, style_loss: str, content_weight: float,
              style_weight: float):
    """(total, (L_c, L_s)) of image(s) x for precomputed `targets` (see `_targets`)."""
    arch = architectures.detect(params)
    content_t, style_t = targets
    feats = encode(params, x, taps=tuple(dict.fromkeys((*arch.style_layers, arch.content_layer))))
    loss_c = losses.mse(feats[arch.content_layer], content_t)
    if style_loss == "gram":
        loss_s = gram_style_loss({k: gram(feats[k]) for k in style_t}, style_t)
    else:
        loss_s = sum(losses.mse(m, mt) + losses.mse(s, st)
                     for k, (mt, st) in style_t.items() for m, s in [ops.mean_std(feats[k])])
    return content_weight * loss_c + style_weight * loss_s, (loss_c, loss_s)


def make_optimizer(optimizer: str, lr: float) -> optax.GradientTransformation:
    if optimizer == "lbfgs":
        return optax.lbfgs(learning_rate=lr)
    if optimizer == "adam":
        return optax.adam(lr)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")


@functools.partial(jax.jit, static_argnames=("style_loss",))
def _jit_targets(params, content, style, style_loss):
    return _targets(params, content, style, style_loss)


@functools.partial(jax.jit, static_argnames=("optimizer",))
def _init(x, lr, *, optimizer):
    state = make_optimizer(optimizer, lr).init(x)
    # L-BFGS's initial line-search info is weakly typed, its updated one is not: make the
    # types agree so that `_step` compiles once, not again at the second step.
    return jax.tree.map(lambda a: jnp.asarray(a, dtype=a.dtype), state)


@functools.partial(jax.jit, static_argnames=("optimizer", "style_loss"), donate_argnums=(0, 1))
def _step(x, opt_state, params, targets, weights, *, optimizer, style_loss):
    """One optimiser step; returns (x, opt_state, total loss at the x it started from).

    weights = (content_weight, style_weight, lr) are traced: changing them does not compile.
    """
    content_weight, style_weight, lr = weights
    value_fn = lambda y: objective(y, params, targets, style_loss=style_loss,
                                   content_weight=content_weight, style_weight=style_weight)[0]
    if optimizer == "lbfgs":
        # The line search already evaluated the loss and gradient at the accepted point.
        value, grad = optax.value_and_grad_from_state(value_fn)(x, state=opt_state)
    else:
        value, grad = jax.value_and_grad(value_fn)(x)
    updates, opt_state = make_optimizer(optimizer, lr).update(
        grad, opt_state, x, value=value, grad=grad, value_fn=value_fn)
    return optax.apply_updates(x, updates), opt_state, value


def gatys(params, content, style, *, steps: int = STEPS, optimizer: str = "lbfgs",
          style_loss: str = "gram", content_weight: float = CONTENT_WEIGHT,
          style_weight: float | None = None, lr: float | None = None,
          callback: Callable[[int, jax.Array], None] | None = None):
    """Stylise `content` by optimising the image itself (Gatys et al. 2016).

    content: (N, H, W, 3) or (H, W, 3) in [0, 1]; style: (1 or N, Hs, Ws, 3) or (Hs, Ws, 3).
    A batch is optimised as one problem whose loss is the mean over its images (each
    image's gradient is its own; L-BFGS's line search is shared). `params` needs only
    "encoder". style_weight, lr: None takes STYLE_WEIGHT[style_loss], LEARNING_RATE[optimizer].
    callback(step, loss) runs after each step (1-based) with the total loss of the image the
    step started from, a device scalar (reading it syncs): use it for a progress bar.
    Returns the image(s), clipped to [0, 1], shaped like `content`.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if style_loss not in STYLE_LOSSES:
        raise ValueError(f"style_loss must be one of {STYLE_LOSSES}, got {style_loss!r}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    content = jnp.asarray(content, jnp.float32)
    unbatched = content.ndim == 3
    content = content[None] if unbatched else content
    style = jnp.asarray(style, jnp.float32)
    style = style[None] if style.ndim == 3 else style
    if style.shape[0] not in (1, content.shape[0]):
        raise ValueError(f"{style.shape[0]} styles for {content.shape[0]} content images")
    params = {"encoder": params["encoder"]}
    style_weight = STYLE_WEIGHT[style_loss] if style_weight is None else style_weight
    lr = jnp.float32(LEARNING_RATE[optimizer] if lr is None else lr)
    weights = (jnp.float32(content_weight), jnp.float32(style_weight), lr)

    targets = _jit_targets(params, content, style, style_loss)
    # Broadcast a shared style's targets over the batch so the losses are per image.
    n = content.shape[0]
    targets = jax.tree.map(lambda a: jnp.broadcast_to(a, (n,) + a.shape[1:]), targets)
    x = jnp.array(content)  # a copy: the steps donate their input
    opt_state = _init(x, lr, optimizer=optimizer)
    for step in range(1, steps + 1):
        x, opt_state, value = _step(x, opt_state, params, targets, weights,
                                    optimizer=optimizer, style_loss=style_loss)
        if callback is not None:
            callback(step, value)
    out = jnp.clip(x, 0.0, 1.0)
    return out[0] if unbatched else out
