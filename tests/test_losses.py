"""adain_jax.loss (Eq. 11-13) against the PyTorch port's Net.forward (tests/torch_reference.py).

Same random weights, same batch. Tolerance: relative error <= 1e-5 on L_c, L_s and the
total (float32 with HIGHEST-precision convs lands near 1e-6; the tiny relu4_1 maps here,
4x4, make a biased variance or a missing eps differ by percents).
"""
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import adain_jax
from adain_jax import losses
from tests import torch_reference as ref
from tests.torch_reference import nchw

TOL = 1e-5
SCALE = 2.5  # keeps activations O(1) through the random layers, as in test_transfer


def reference_net_and_params(seed=0):
    vgg = ref.port_vgg_to_relu4_1(ref.randomize_(ref.make_port_vgg(), seed, SCALE)).eval()
    decoder = ref.randomize_(ref.make_port_decoder(), seed + 1, SCALE)
    params = {"encoder": ref.convs_from(vgg, ref.PORT_VGG_CONVS),
              "decoder": ref.convs_from(decoder, ref.PORT_DECODER_CONVS)}
    return ref.Net(vgg, decoder), jax.tree.map(jnp.asarray, params)


def batch(n=2, content_hw=(32, 32), style_hw=(40, 24), seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, *content_hw, 3)).astype(np.float32),
            rng.random((n, *style_hw, 3)).astype(np.float32))


def rel(a, b):
    return abs(float(a) - float(b)) / abs(float(b))


@pytest.fixture(scope="module")
def net_and_params():
    return reference_net_and_params()


@pytest.mark.parametrize("content_weight,style_weight", [(1.0, 10.0), (0.5, 3.0)])
def test_loss_matches_port(net_and_params, content_weight, style_weight):
    net, params = net_and_params
    content, style = batch()
    total, parts = jax.jit(adain_jax.loss)(params, content, style,
                                           content_weight=content_weight,
                                           style_weight=style_weight)
    with torch.no_grad():
        loss_c, loss_s = net(nchw(content), nchw(style))
    assert rel(parts["content"], loss_c) <= TOL
    assert rel(parts["style"], loss_s) <= TOL
    assert rel(total, content_weight * loss_c + style_weight * loss_s) <= TOL


def test_loss_defaults_are_the_ports():
    """The port trains with content weight 1 and style weight 10 (lambda in Eq. 11)."""
    defaults = inspect.signature(adain_jax.loss).parameters
    assert (defaults["content_weight"].default, defaults["style_weight"].default) == (1.0, 10.0)
    assert (losses.CONTENT_WEIGHT, losses.STYLE_WEIGHT) == (1.0, 10.0)
