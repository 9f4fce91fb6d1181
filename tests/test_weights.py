"""adain_jax.weights: the safetensors format and the torch->Flax name maps."""
import os
import tempfile

import jax
import numpy as np
import pytest

import adain_jax
from adain_jax import weights
from tests import torch_reference as ref


def test_name_maps_equal_hand_counted_reference_indices():
    assert weights.PORT_VGG_INDEX == ref.PORT_VGG_CONVS
    assert weights.PORT_DECODER_INDEX == ref.PORT_DECODER_CONVS
    assert weights.TORCHVISION_VGG_INDEX == ref.TORCHVISION_CONVS


def test_save_load_round_trip(tmp_path):
    params = adain_jax.init_params(jax.random.key(0))
    path = weights.save_params(params, tmp_path / "w.safetensors", {"source": "test"})
    loaded = adain_jax.load_params(path)
    flat_a = jax.tree_util.tree_leaves_with_path(params)
    flat_b = dict(jax.tree_util.tree_leaves_with_path(loaded))
    assert len(flat_a) == len(flat_b)
    for key, value in flat_a:
        np.testing.assert_array_equal(np.asarray(value), flat_b[key])
    assert weights.read_metadata(path)["source"] == "test"
    assert not list(tmp_path.glob(".*tmp*"))  # no temp file left behind


def test_encoder_only_file(tmp_path):
    params = adain_jax.init_params(jax.random.key(0))
    path = weights.save_params({"encoder": params["encoder"]}, tmp_path / "enc.safetensors")
    with pytest.raises(weights.WeightsError, match="encoder only"):
        weights.load_params(path)
    assert "decoder" not in weights.load_params(path, require_decoder=False)


@pytest.mark.parametrize("content,match", [(b"", "not a readable"), (b"\x00" * 64, "not a readable")])
def test_corrupt_or_foreign_files_are_refused(tmp_path, content, match):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(weights.WeightsError, match=match) as err:
        weights.load_params(path)
    assert "\n" not in str(err.value) and "bad.safetensors" in str(err.value)


def test_foreign_safetensors_refused(tmp_path):
    from safetensors.numpy import save_file
    save_file({"x": np.zeros(3, np.float32)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(weights.WeightsError, match="not an adain-jax weights file"):
        weights.load_params(tmp_path / "other.safetensors")


def test_missing_file():
    with pytest.raises(weights.WeightsError, match="no such"):
        weights.load_params("/nonexistent/adain.safetensors")


def test_wrong_shapes_named(tmp_path):
    import torch
    decoder = ref.make_port_decoder()
    state = {k: v.numpy() for k, v in decoder.state_dict().items()}
    with pytest.raises(weights.WeightsError, match="missing tensor"):
        weights.encoder_from_port(state, source="decoder.pth")
    state["1.weight"] = np.zeros((256, 512, 1, 1), np.float32)
    with pytest.raises(weights.WeightsError, match=r"1\.weight has shape"):
        weights.decoder_from_port(state)
    del torch


def test_saved_files_follow_the_umask(tmp_path):
    """Issue 14: safetensors' save_file made weights files 0600, unreadable to other users."""
    params = {"encoder": adain_jax.init_params(jax.random.key(0))["encoder"]}
    for umask in (0o022, 0o027):
        old = os.umask(umask)
        try:
            path = weights.save_params(params, tmp_path / f"u{umask:o}.safetensors")
        finally:
            os.umask(old)
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def _load_as_nobody(path) -> str:
    """load_params(path) in a forked child running as uid/gid 65534; its error message."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        message = "loaded"
        try:
            os.setgid(65534)
            os.setuid(65534)
            weights.load_params(path, require_decoder=False)
        except BaseException as err:  # noqa: BLE001  (reported to the parent)
            message = f"{type(err).__name__}: {err}"
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        message = f.read().decode()
    os.waitpid(pid, 0)
    return message


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="needs root to act as another user")
def test_unreadable_file_says_permission_denied():
    """safetensors says "No such file or directory" for EACCES; we say what it is."""
    params = {"encoder": adain_jax.init_params(jax.random.key(0))["encoder"]}
    folder = tempfile.mkdtemp(prefix="adain-perm-")  # pytest's tmp_path is 0700 for root
    try:
        os.chmod(folder, 0o755)
        path = weights.save_params(params, os.path.join(folder, "w.safetensors"))
        assert _load_as_nobody(path) == "loaded"
        os.chmod(path, 0o600)
        message = _load_as_nobody(path)
        assert message.startswith("WeightsError: ") and "permission denied (mode 600" in message
    finally:
        for name in os.listdir(folder):
            os.unlink(os.path.join(folder, name))
        os.rmdir(folder)
