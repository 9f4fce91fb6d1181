"""adain-jax: Arbitrary Style Transfer in Real-time with Adaptive Instance Normalization
(Huang & Belongie, ICCV 2017) in JAX/Flax.

    params = adain_jax.load_params("adain.safetensors")
    out = adain_jax.apply(params, content, style, alpha=0.8)

The public names below are imported on first use (PEP 562), so that `import adain_jax`,
and the command lines' --help and --version, do not wait for JAX to load.
"""
from adain_jax import _xla

__version__ = "0.2.0"  # the one place; pyproject.toml reads it

_xla.configure()  # must run before JAX initialises its backends

# public name -> the module that defines it
_PUBLIC = {
    "loss": "losses",
    "CONTENT_LAYER": "models", "DECODER_LAYERS": "models", "ENCODER_LAYERS": "models",
    "STYLE_LAYERS": "models", "init_params": "models",
    "adain": "ops", "coral": "ops",
    "apply_tiled": "tiling",
    "StyleStats": "transfer", "apply": "transfer", "decode": "transfer", "encode": "transfer",
    "encode_style": "transfer",
    "load_params": "weights", "save_params": "weights",
    "load_bank": "style_bank", "save_bank": "style_bank",
}

__all__ = [
    "apply", "apply_tiled", "encode", "decode", "encode_style", "adain", "coral", "loss",
    "StyleStats",
    "load_params", "save_params", "init_params", "load_bank", "save_bank",
    "ENCODER_LAYERS", "DECODER_LAYERS", "STYLE_LAYERS", "CONTENT_LAYER",
    "__version__",
]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'adain_jax' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"adain_jax.{_PUBLIC[name]}"), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
