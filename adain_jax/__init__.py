"""adain-jax: Arbitrary Style Transfer in Real-time with Adaptive Instance Normalization
(Huang & Belongie, ICCV 2017) in JAX/Flax.

    params = adain_jax.load_params("adain.safetensors")
    out = adain_jax.apply(params, content, style, alpha=0.8)
"""
from adain_jax import _xla

_xla.configure()  # must run before JAX initialises its backends

from adain_jax.losses import loss  # noqa: E402
from adain_jax.models import (CONTENT_LAYER, DECODER_LAYERS, ENCODER_LAYERS,  # noqa: E402
                              STYLE_LAYERS, init_params)
from adain_jax.ops import adain, coral  # noqa: E402
from adain_jax.tiling import apply_tiled  # noqa: E402
from adain_jax.transfer import StyleStats, apply, decode, encode, encode_style  # noqa: E402
from adain_jax.weights import load_params, save_params  # noqa: E402

__all__ = [
    "apply", "apply_tiled", "encode", "decode", "encode_style", "adain", "coral", "loss",
    "StyleStats",
    "load_params", "save_params", "init_params",
    "ENCODER_LAYERS", "DECODER_LAYERS", "STYLE_LAYERS", "CONTENT_LAYER",
]
