"""Parameter files: porting PyTorch state dicts, and our safetensors format.

The torch->Flax name map is derived here, once, from the layer lists in models.py:
- the PyTorch port's `vgg_normalised.pth` is its 53-module VGG `nn.Sequential`
  (1x1 conv; then [ReflectionPad2d, Conv2d, ReLU] per 3x3 conv; MaxPool2d), keys `0.weight`,
  `2.weight`, `5.weight`, ...; we keep the layers up to relu4_1;
- its `decoder.pth` is the decoder `nn.Sequential` ([ReflectionPad2d, Conv2d, ReLU] per
  conv, Upsample), keys `1.weight`, `5.weight`, ...;
- torchvision's VGG-19 is `features.N` ([Conv2d, ReLU] per conv, MaxPool2d), with ImageNet
  mean/std normalisation outside the network, folded here into the 1x1 `conv0`.
Conv kernels go from torch's (O, I, kh, kw) to Flax's (kh, kw, I, O).
"""
from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Mapping

import numpy as np

from adain_jax.architectures import detect
from adain_jax.errors import WeightsError  # defined below this module; importable here too
from adain_jax.models import DECODER_LAYERS, ENCODER_LAYERS, Conv
from adain_jax.outputs import write_atomic

FORMAT = "adain-jax/1"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _sequential_index(layers, pad_before_3x3: bool) -> dict[str, int]:
    """Module index of each conv in an nn.Sequential laid out like `layers`."""
    index, names = 0, {}
    for layer in layers:
        if not isinstance(layer, Conv):
            index += 1  # MaxPool2d or Upsample
            continue
        if layer.kernel == 3 and pad_before_3x3:
            index += 1  # ReflectionPad2d
        names[layer.name] = index
        index += 1 if layer.kernel == 1 else 2  # Conv2d (+ ReLU)
    return names


PORT_VGG_INDEX = _sequential_index(ENCODER_LAYERS, pad_before_3x3=True)
PORT_DECODER_INDEX = _sequential_index(DECODER_LAYERS, pad_before_3x3=True)
TORCHVISION_VGG_INDEX = _sequential_index(
    [layer for layer in ENCODER_LAYERS if not (isinstance(layer, Conv) and layer.kernel == 1)],
    pad_before_3x3=False)


def _conv_from_torch(state, prefix: str, layer: Conv, source: str) -> dict:
    expected = {
        "weight": (layer.out_channels, layer.in_channels, layer.kernel, layer.kernel),
        "bias": (layer.out_channels,),
    }
    arrays = {}
    for kind, shape in expected.items():
        key = f"{prefix}.{kind}"
        if key not in state:
            raise WeightsError(f"{source}: missing tensor {key!r} for {layer.name}; "
                               "is this the right file?")
        value = np.asarray(state[key], dtype=np.float32)
        if value.shape != shape:
            raise WeightsError(f"{source}: {key} has shape {value.shape}, expected {shape} "
                               f"for {layer.name}")
        arrays[kind] = value
    return {"kernel": np.ascontiguousarray(arrays["weight"].transpose(2, 3, 1, 0)),
            "bias": arrays["bias"]}


def _convs(layers, state, index, prefix: str, source: str) -> dict:
    convs = [layer for layer in layers if isinstance(layer, Conv) and layer.name in index]
    return {layer.name: _conv_from_torch(state, f"{prefix}{index[layer.name]}", layer, source)
            for layer in convs}


def encoder_from_port(state: Mapping, source: str = "vgg_normalised.pth") -> dict:
    """Encoder params from the PyTorch port's `vgg_normalised.pth` state dict."""
    return _convs(ENCODER_LAYERS, state, PORT_VGG_INDEX, "", source)


def decoder_from_port(state: Mapping, source: str = "decoder.pth") -> dict:
    """Decoder params from the PyTorch port's `decoder.pth` state dict."""
    expected = 2 * len(PORT_DECODER_INDEX)
    if len(state) != expected:
        raise WeightsError(f"{source}: {len(state)} tensors, a decoder has {expected}; "
                           "is this the right file?")
    return _convs(DECODER_LAYERS, state, PORT_DECODER_INDEX, "", source)


def encoder_from_torchvision(state: Mapping, source: str = "vgg19.pth") -> dict:
    """Encoder params from torchvision's ImageNet VGG-19 (`features.N.*` keys).

    torchvision feeds (x - mean) / std of an RGB image in [0, 1]; that affine map becomes
    `conv0` (a diagonal 1x1 conv), so one encoder graph serves both sources.
    """
    params = _convs(ENCODER_LAYERS, state, TORCHVISION_VGG_INDEX, "features.", source)
    kernel = np.diag(1.0 / IMAGENET_STD).astype(np.float32)  # (in, out)
    params["conv0"] = {"kernel": kernel[None, None], "bias": -IMAGENET_MEAN / IMAGENET_STD}
    return params


def torch_load_state_dict(path) -> dict:
    """Load a .pth state dict safely (weights_only=True) as {name: float32 ndarray}."""
    import torch  # the [convert] extra

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        why = f"it would call {found.group(1)}" if found else "objects other than tensors"
        raise WeightsError(f"{path}: refused, the pickle holds code to run ({why}); "
                           "only state dicts of tensors are loaded") from None
    except Exception as err:  # zip/format errors from a corrupt or non-torch file
        raise WeightsError(f"{path}: not a PyTorch state-dict file, or a corrupt one "
                           f"({type(err).__name__})") from None
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: expected a state dict of tensors")
    return {k: v.detach().to(torch.float32).numpy() for k, v in state.items()}


def _flatten(params: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    flat = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "/"))
        else:
            flat[name] = np.ascontiguousarray(np.asarray(value, dtype=np.float32))
    return flat


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def save_params(params: Mapping, path, metadata: Mapping[str, str] | None = None) -> Path:
    """Write params ({"encoder", ["decoder"]}) to one safetensors file, atomically.

    The metadata records the encoder architecture ("vgg19", "densenet121") detected from
    the parameter names.
    """
    from safetensors.numpy import save

    path = Path(path)
    meta = {"format": FORMAT, "encoder": detect(params).name}
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    data = save(_flatten(params), metadata=meta)
    # not safetensors' save_file: it makes the file 0600, unreadable to the rest of a shared
    # cache or workdir
    write_atomic(path, data)
    return path


def read_metadata(path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return dict(f.metadata() or {})


def load_params(path, *, require_decoder: bool = True) -> dict:
    """Read a file written by `save_params` / convert_weights.py into a params dict."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        open(path, "rb").close()  # safetensors reports "permission denied" as "no such file"
    except PermissionError:
        raise WeightsError(f"{path}: permission denied (mode {path.stat().st_mode & 0o777:o}, "
                           f"owner uid {path.stat().st_uid}); ask its owner to make it "
                           "readable (chmod a+r), or copy it") from None
    try:
        meta = read_metadata(path)
        flat = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"{path}: not a readable safetensors file ({err})") from None
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{path}: not an adain-jax weights file (metadata format "
                           f"{meta.get('format')!r}); convert it with convert_weights.py")
    params = _unflatten(flat)
    if "encoder" not in params:
        raise WeightsError(f"{path}: has no encoder weights")
    if require_decoder and "decoder" not in params:
        raise WeightsError(f"{path}: holds an encoder only (no trained decoder); train one "
                           "with train.py or convert decoder.pth with convert_weights.py")
    return params


def describe(path) -> str:
    return json.dumps(read_metadata(path), sort_keys=True)
