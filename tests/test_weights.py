"""adain_jax.weights: the safetensors format and the torch->Flax name maps."""
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
