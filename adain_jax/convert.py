"""Porting PyTorch state dicts into one adain-jax safetensors file (convert_weights.py).

The name maps and the torchvision mean/std fold live in weights.py (densenet.py for
DenseNet-121); this module picks the sources, records where the weights came from, and
writes the file.
"""
from __future__ import annotations

import logging
from pathlib import Path

import jax

from adain_jax import download
from adain_jax.densenet import densenet_from_torchvision
from adain_jax.weights import (WeightsError, decoder_from_port, encoder_from_port,
                               encoder_from_torchvision, save_params, torch_load_state_dict)

log = logging.getLogger(__name__)


def _describe(path: Path, digest: str, kind: str) -> str:
    """A human-readable source: the release name when the file is the published one."""
    published = {"torchvision": download.TORCHVISION_FILE,
                 "torchvision-densenet": download.TORCHVISION_DENSENET_FILE}.get(kind)
    if published is not None:
        if path.name == published and digest.startswith(download.hash_prefix(published)):
            return f"torchvision {Path(published).stem}"
        return f"{kind} layout {path.name}"
    release = {digest: name for name, digest in download.PORT_SHA256.items()}
    if digest in release:
        return f"{download.PORT_RELEASE} {release[digest]}"
    return f"pytorch-AdaIN layout {path.name}"


def convert(out, *, vgg=None, torchvision=None, densenet=None, decoder=None) -> Path:
    """Write the encoder (from `vgg`, `torchvision` or `densenet`) and optional `decoder` to `out`.

    `vgg`, `decoder`: the PyTorch port's vgg_normalised.pth / decoder.pth (or files with
    their layout); `torchvision`: a torchvision VGG-19 state dict (`features.N.*`);
    `densenet`: a torchvision DenseNet-121 state dict, which has no published decoder.
    Without a decoder the file holds an encoder only, the starting point for training.
    """
    assert sum(s is not None for s in (vgg, torchvision, densenet)) == 1, "one encoder source"
    assert densenet is None or decoder is None, "decoder.pth is a VGG decoder"
    if Path(out).is_dir():
        raise WeightsError(f"{out}: is a directory; give --out a file name such as "
                           "adain.safetensors")
    if vgg is not None:
        vgg = Path(vgg)
        encoder = encoder_from_port(torch_load_state_dict(vgg), source=str(vgg))
        sources = [("encoder", vgg, "port")]
    elif torchvision is not None:
        torchvision = Path(torchvision)
        encoder = encoder_from_torchvision(torch_load_state_dict(torchvision),
                                           source=str(torchvision))
        sources = [("encoder", torchvision, "torchvision")]
    else:
        densenet = Path(densenet)
        encoder = densenet_from_torchvision(torch_load_state_dict(densenet), source=str(densenet))
        sources = [("encoder", densenet, "torchvision-densenet")]
    params = {"encoder": encoder}
    if decoder is not None:
        decoder = Path(decoder)
        params["decoder"] = decoder_from_port(torch_load_state_dict(decoder), source=str(decoder))
        sources.append(("decoder", decoder, "port"))

    metadata, described = {}, []
    for part, path, kind in sources:
        digest = download.sha256_file(path)
        metadata[f"{part}_sha256"] = digest
        metadata[f"{part}_file"] = path.name
        described.append(_describe(path, digest, kind))
    metadata["source"] = " + ".join(described)

    out = save_params(params, out, metadata)
    tensors = len(jax.tree.leaves(params))
    log.info("wrote %s (%d tensors, %.1f MB)", out, tensors, out.stat().st_size / 1e6)
    return out


def encoder_only_path() -> Path:
    """Default output of `convert_weights.py --encoder-only`, beside default_weights_path()."""
    return download.cache_dir() / "vgg19_encoder.safetensors"


def densenet_encoder_path() -> Path:
    """Default output of `convert_weights.py --torchvision-densenet`."""
    return download.cache_dir() / "densenet121_encoder.safetensors"


def run(*, vgg=None, decoder=None, torchvision=None, densenet=None, download_missing=False,
        encoder_only=False, out=None, base_url=None, torchvision_base_url=None,
        timeout=download.DEFAULT_TIMEOUT, progress=True) -> Path:
    """convert_weights.py: fetch what is asked for, then `convert`.

    `torchvision=""` / `densenet=""` mean download torchvision's VGG-19 / DenseNet-121;
    `download_missing` fetches the port's vgg_normalised.pth / decoder.pth where no path
    is given (and one is needed). A DenseNet encoder is always written alone.
    """
    if torchvision == "":
        torchvision = download.fetch_torchvision_vgg19(
            base_url=torchvision_base_url, timeout=timeout, progress=progress)
    if densenet == "":
        densenet = download.fetch_torchvision_densenet121(
            base_url=torchvision_base_url, timeout=timeout, progress=progress)
    if densenet is not None:
        assert vgg is None and torchvision is None and decoder is None
        return convert(densenet_encoder_path() if out is None else out, densenet=densenet)
    wanted = []
    if vgg is None and torchvision is None:
        wanted.append("vgg_normalised.pth")
    if decoder is None and not encoder_only:
        wanted.append("decoder.pth")
    if wanted:
        assert download_missing, wanted  # the CLI asks for a source before getting here
        fetched = download.fetch_port_files(wanted, base_url=base_url, timeout=timeout,
                                            progress=progress)
        vgg = fetched.get("vgg_normalised.pth", vgg)
        decoder = fetched.get("decoder.pth", decoder)
    if out is None:
        out = encoder_only_path() if encoder_only else download.default_weights_path()
    return convert(out, vgg=vgg, torchvision=torchvision,
                   decoder=None if encoder_only else decoder)


def user_error(err: BaseException) -> str | None:
    """The one-line message for an error a user can cause, or None for a bug."""
    if isinstance(err, (WeightsError, download.DownloadError)):
        message = str(err)
    elif isinstance(err, ModuleNotFoundError) and err.name in ("torch", "safetensors"):
        message = (f"reading PyTorch .pth files needs {err.name}: "
                   "pip install 'adain-jax[convert]'")
    elif isinstance(err, OSError) and err.strerror:
        message = f"{err.filename or ''}: {err.strerror}".lstrip(": ")
    else:
        return None
    return " ".join(message.split())
