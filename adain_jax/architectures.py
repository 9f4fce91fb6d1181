"""The encoder/decoder pairs adain-jax knows, so the rest of the library stays generic.

An `Architecture` bundles an encoder (Linen module per set of taps), its decoder, the
style-loss taps, the AdaIN ("content") layer and the feature-map geometry. `detect(params)`
tells them apart by the encoder's parameter names, so a weights file needs no other tag.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import flax.linen as nn
import jax

from adain_jax import densenet, models


@dataclasses.dataclass(frozen=True)
class Architecture:
    name: str
    encoder_module: Callable[[tuple[str, ...]], nn.Module]  # taps -> Linen encoder
    decoder_module: Callable[[], nn.Module]
    decoder_layers: tuple
    style_layers: tuple[str, ...]  # Eq. 13's phi_i; the last one is the AdaIN layer
    content_layer: str  # where AdaIN acts, and the content loss (Eq. 12)
    feature_size: Callable[[int], int]  # image side -> side at content_layer
    init_decoder: Callable[[jax.Array], dict]
    init_params: Callable[[jax.Array], dict]  # random {"encoder", "decoder"}, for tests
    prepare: Callable[[jax.Array], jax.Array] = lambda images: images  # before the encoder

    def encode(self, encoder_params, images, taps: Sequence[str]) -> dict:
        """{tap: activation} of the encoder on NHWC `images` in [0, 1]."""
        module = self.encoder_module(tuple(taps))
        return module.apply({"params": encoder_params}, self.prepare(images))

    def decode(self, decoder_params, t) -> jax.Array:
        return self.decoder_module().apply({"params": decoder_params}, t)


VGG19 = Architecture(
    name="vgg19",
    encoder_module=lambda taps: models.Encoder(taps=taps),
    decoder_module=models.Decoder,
    decoder_layers=models.DECODER_LAYERS,
    style_layers=models.STYLE_LAYERS,
    content_layer=models.CONTENT_LAYER,
    feature_size=models.feature_size,
    init_decoder=lambda key: models.torch_default_conv_init(key, models.DECODER_LAYERS),
    init_params=models.init_params,
)

DENSENET121 = Architecture(
    name="densenet121",
    encoder_module=lambda taps: densenet.Encoder(taps=taps),
    decoder_module=densenet.Decoder,
    decoder_layers=densenet.DECODER_LAYERS,
    style_layers=densenet.STYLE_LAYERS,
    content_layer=densenet.CONTENT_LAYER,
    feature_size=densenet.feature_size,
    init_decoder=densenet.init_decoder,
    init_params=densenet.init_params,
    prepare=densenet.pad_to_stride,
)

ARCHITECTURES = {arch.name: arch for arch in (VGG19, DENSENET121)}
NAMES = tuple(ARCHITECTURES)


def get(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown encoder {name!r}; expected one of {', '.join(NAMES)}")
    return ARCHITECTURES[name]


def detect(params: Mapping) -> Architecture:
    """The architecture of `params` ({"encoder": ..., ...}) from its encoder's layer names."""
    encoder = params["encoder"]
    if "denseblock1" in encoder:
        return DENSENET121
    if "conv1_1" in encoder:
        return VGG19
    raise ValueError(f"unrecognised encoder parameters (layers {sorted(encoder)[:4]}...); "
                     f"expected one of {', '.join(NAMES)}")
