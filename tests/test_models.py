"""adain_jax.models: parameter shapes and counts against the PyTorch reference modules."""
import jax
import numpy as np

from adain_jax import models
from tests import torch_reference as ref


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_parameter_counts_match_reference_modules():
    params = models.init_params(jax.random.key(0))
    vgg = ref.port_vgg_to_relu4_1(ref.make_port_vgg())
    decoder = ref.make_port_decoder()
    assert _count(params["encoder"]) == sum(p.numel() for p in vgg.parameters())
    assert _count(params["decoder"]) == sum(p.numel() for p in decoder.parameters())


def test_init_matches_module_shapes():
    """init_params builds exactly the tree the Linen modules create."""
    params = models.init_params(jax.random.key(0))
    x = np.zeros((1, 16, 16, 3), np.float32)
    enc = models.Encoder().init(jax.random.key(1), x)["params"]
    dec = models.Decoder().init(jax.random.key(1), np.zeros((1, 2, 2, 512), np.float32))["params"]
    shapes = lambda t: jax.tree.map(lambda a: a.shape, t)
    assert shapes(enc) == shapes(params["encoder"])
    assert shapes(dec) == shapes(params["decoder"])


def test_torch_default_init_bounds():
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for kernel and bias, as torch.nn.Conv2d."""
    params = models.init_params(jax.random.key(3))["decoder"]["conv3_4"]
    bound = 1 / np.sqrt(256 * 9)
    k = np.asarray(params["kernel"])
    assert np.abs(k).max() <= bound and np.abs(k).max() > 0.99 * bound
    assert abs(k.std() - bound / np.sqrt(3)) < 0.01 * bound  # std of U(-b, b)


def test_feature_size_is_ceil_div_8():
    for size in [1, 2, 7, 8, 9, 37, 91, 512, 513]:
        assert models.feature_size(size) == -(-size // 8)


def test_unknown_tap_is_an_error():
    import pytest
    with pytest.raises(ValueError, match="unknown VGG taps"):
        models.Encoder(taps=("relu4_2",)).init(jax.random.key(0), np.zeros((1, 16, 16, 3)))
