"""adain_jax.tiling: tiled stylisation equals the whole-image result.

References: the PyTorch port (tests/torch_reference.py) on the whole image, and our own
untiled `adain_jax.apply`. Tolerance: relative L2 <= 1e-5 for both (measured ~2e-6: the
halos make every kept relu4_1 cell and output pixel exact in exact arithmetic; what is
left is float32 rounding, Winograd tiles falling at other offsets inside a window, and
the content statistics taken in float64 instead of float32). A halo one cell short of
the receptive field misses by ~3e-3, so the tolerance would catch it.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import adain_jax
from adain_jax import models, tiling
from tests import torch_reference as ref
from tests.torch_reference import nchw, nhwc, rel_l2

TOL = 1e-5
SCALE = 2.5  # keeps activations O(1) through the random layers, as test_transfer.py
TILE = 64  # 8 relu4_1 cells: several windows per axis on a small image
CONTENT = np.random.default_rng(0).random((197, 250, 3), dtype=np.float32)  # not /8
STYLE = np.random.default_rng(1).random((1, 64, 56, 3), dtype=np.float32)
apply = jax.jit(adain_jax.apply)  # eager mode would compile every op on its own: slow


@pytest.fixture(scope="module")
def models_():
    vgg = ref.port_vgg_to_relu4_1(ref.randomize_(ref.make_port_vgg(), 1, SCALE)).eval()
    decoder = ref.randomize_(ref.make_port_decoder(), 2, SCALE).eval()
    params = {"encoder": ref.convs_from(vgg, ref.PORT_VGG_CONVS),
              "decoder": ref.convs_from(decoder, ref.PORT_DECODER_CONVS)}
    return vgg, decoder, jax.tree.map(jnp.asarray, params)


@pytest.fixture(scope="module")
def untiled(models_):
    return np.asarray(apply(models_[2], CONTENT, STYLE, 0.8))


def test_halos_cover_the_receptive_fields():
    """Counted by hand from the layer lists: 2+4+16+8 px of 3x3 convs at strides 1, 2, 4, 8
    through the encoder (the same in the mirrored decoder) = 30 px = 3.75 cells."""
    assert tiling.receptive_reach(models.ENCODER_LAYERS, encoder=True) == 30
    assert tiling.receptive_reach(models.DECODER_LAYERS, encoder=False) == 30
    assert tiling.ENCODER_HALO == tiling.DECODER_HALO == 4


@pytest.mark.parametrize("cells", [1, 7, 8, 9, 16, 17, 25, 40, 131])
@pytest.mark.parametrize("tile,halo", [(8, 4), (3, 1), (16, 4)])
def test_windows_partition_and_cover_halos(cells, tile, halo):
    covered = np.zeros(cells, int)
    lengths = set()
    for a, b, s, e in tiling.windows(cells, tile, halo):
        covered[a:b] += 1
        assert 0 <= s <= a < b <= e <= cells
        assert a - s >= halo or s == 0, (a, b, s, e)
        assert e - b >= halo or e == cells, (a, b, s, e)
        lengths.add(e - s)
    assert (covered == 1).all()
    assert len(lengths) == 1  # one window shape per axis: one compilation


def test_tiled_features_equal_whole_image_encoding(models_):
    params = models_[2]
    whole = np.asarray(jax.jit(adain_jax.encode)(params, CONTENT[None]))[0]
    tiled = tiling.encode_tiled(params, CONTENT, TILE)
    assert tiled.shape == whole.shape
    assert rel_l2(tiled, whole) < TOL


def test_float64_statistics():
    feat = (np.random.default_rng(2).standard_normal((33, 21, 5)) * 3 + 100).astype(np.float32)
    mean, std = tiling.mean_std_float64(feat)
    x = feat.astype(np.float64).reshape(-1, 5)
    assert np.allclose(mean, x.mean(0), rtol=1e-12)
    assert np.allclose(std, np.sqrt(x.var(0, ddof=1) + 1e-5), rtol=1e-12)


def test_tiled_matches_torch_port_and_untiled(models_, untiled):
    vgg, decoder, params = models_
    tiled = tiling.apply_tiled(params, CONTENT, STYLE, 0.8, tile=TILE)
    with torch.no_grad():
        theirs = nhwc(ref.style_transfer(vgg, decoder, nchw(CONTENT[None]), nchw(STYLE),
                                         alpha=0.8))[0]
    theirs = theirs[: CONTENT.shape[0], : CONTENT.shape[1]]  # the port decodes 8*ceil(H/8)
    assert tiled.shape == CONTENT.shape and tiled.dtype == np.float32
    assert rel_l2(tiled, theirs) < TOL
    assert rel_l2(tiled, untiled) < TOL


def test_short_halo_would_be_caught(models_, untiled, monkeypatch):
    monkeypatch.setattr(tiling, "DECODER_HALO", tiling.DECODER_HALO - 1)
    tiled = tiling.apply_tiled(models_[2], CONTENT, STYLE, 0.8, tile=TILE)
    assert rel_l2(tiled, untiled) > 10 * TOL


def test_batch_and_cached_style(models_, untiled):
    params = models_[2]
    stats = adain_jax.encode_style(params, STYLE)
    out = adain_jax.apply_tiled(params, np.stack([CONTENT, CONTENT[::-1]]), stats, 0.8,
                                tile=TILE)
    assert out.shape == (2,) + CONTENT.shape
    assert rel_l2(out[0], untiled) < TOL
    flipped = np.asarray(apply(params, CONTENT[::-1].copy(), STYLE, 0.8))
    assert rel_l2(out[1], flipped) < TOL


@pytest.mark.parametrize("kwargs,message", [({"tile": 60}, "multiple of 8"),
                                            ({"alpha": 1.5}, "alpha")])
def test_bad_arguments(models_, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiling.apply_tiled(models_[2], CONTENT, STYLE, **kwargs)
