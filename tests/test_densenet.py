"""The DenseNet-121 encoder and decoder against an independent PyTorch reference.

The reference (tests/densenet_reference.py) restates torchvision's DenseNet-121 module
tree (_DenseLayer, _DenseBlock, _Transition, `features` + `classifier`) in its own terms,
so its state-dict keys are torchvision's; it is not derived from adain_jax.densenet. Its
parameter count is checked against torchvision's published figure for DenseNet121_Weights
(7,978,856).
Weights are random, batch-norm affine and running statistics included, saved with
torch.save and read back through weights.torch_load_state_dict + densenet_from_torchvision.

Tolerances: relative L2 error <= 1e-4 for the encoder taps (42 float32 convs and 60 batch
norms; a correct implementation lands near 1e-6) and for AdaIN + decoder end to end; 1e-4
relative for the training loss against the torch objective, 1e-3 for its decoder gradient.
Everything runs jitted: eager DenseNet dispatch compiles each op and is slower here.
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import adain_jax
from adain_jax import architectures, densenet, losses, weights
from adain_jax.models import UP
from tests import torch_reference as ref
from tests.densenet_reference import randomized_densenet, torch_taps
from tests.torch_reference import nchw, nhwc, rel_l2

TOL = 1e-4
TORCHVISION_DENSENET121_PARAMS = 7_978_856  # torchvision DenseNet121_Weights.IMAGENET1K_V1 meta
# Each function here runs once or twice on tiny inputs, so compiling dominates: LLVM's
# optimisation level 0 halves the DenseNet compile time on CPU (same ops, same tolerances).
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def compile_fast(fn, *args):
    """jax.jit(fn) compiled for `args` with FAST_COMPILE."""
    return jax.jit(fn).lower(*args).compile(compiler_options=FAST_COMPILE)


def torch_decoder() -> nn.Sequential:
    """A torch nn.Sequential following densenet.DECODER_LAYERS (the layer list is the spec)."""
    layers = []
    convs = [layer for layer in densenet.DECODER_LAYERS if layer != UP]
    for layer in densenet.DECODER_LAYERS:
        if layer == UP:
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            continue
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(layer.in_channels, layer.out_channels, 3)]
        if layer is not convs[-1]:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def decoder_params(decoder: nn.Sequential) -> dict:
    convs = [m for m in decoder if isinstance(m, nn.Conv2d)]
    names = [layer.name for layer in densenet.DECODER_LAYERS if layer != UP]
    assert len(convs) == len(names)
    return {name: {"kernel": jnp.asarray(m.weight.detach().numpy().transpose(2, 3, 1, 0)),
                   "bias": jnp.asarray(m.bias.detach().numpy())}
            for name, m in zip(names, convs)}


def images(n, h, w, seed):
    return np.random.default_rng(seed).random((n, h, w, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Torch reference net + decoder, and our params ported from the saved .pth file."""
    tmp = tmp_path_factory.mktemp("densenet")
    net = randomized_densenet(seed=0)
    torch.save(net.state_dict(), tmp / "densenet121.pth")
    encoder = densenet.densenet_from_torchvision(
        weights.torch_load_state_dict(tmp / "densenet121.pth"))
    torch.manual_seed(1)
    decoder = torch_decoder().eval()
    params = jax.tree.map(jnp.asarray, {"encoder": encoder, "decoder": decoder_params(decoder)})
    return net, decoder, params


# ---- Tests -------------------------------------------------------------------------------

def test_reference_has_torchvision_layout(models):
    net = models[0]
    assert sum(p.numel() for p in net.parameters()) == TORCHVISION_DENSENET121_PARAMS
    keys = set(net.state_dict())
    for key in ("features.conv0.weight", "features.norm0.running_var",
                "features.denseblock1.denselayer1.norm1.weight",
                "features.denseblock1.denselayer6.conv2.weight",
                "features.transition2.conv.weight", "features.denseblock3.denselayer24.norm2.bias",
                "features.norm5.num_batches_tracked", "classifier.bias"):
        assert key in keys, key
    # Our encoder holds exactly the tensors of features up to dense block 3, statistics included.
    kept = [k for k, v in net.state_dict().items() if k.startswith("features.")
            and not k.endswith("num_batches_tracked")
            and not k.startswith(("features.transition3", "features.denseblock4",
                                  "features.norm5"))]
    shapes = densenet.encoder_shapes()
    assert sorted(densenet.torchvision_key(path) for path in shapes) == sorted(kept)
    assert sum(int(np.prod(s)) for s in shapes.values()) == sum(
        net.state_dict()[k].numel() for k in kept)


def test_encoder_taps_match_torch_at_odd_sizes(models):
    """The Linen Encoder alone (no padding) is torchvision's network: 37x45 gives odd maps."""
    net, _, params = models
    x = images(2, 37, 45, seed=3)
    encode = lambda p, x: densenet.Encoder(taps=densenet.TAPS).apply({"params": p}, x)
    ours = compile_fast(encode, params["encoder"], x)(params["encoder"], x)
    with torch.no_grad():
        theirs = torch_taps(net, nchw(x))
    assert set(ours) == set(theirs) == set(densenet.TAPS)
    assert theirs["denseblock3"].shape[-2:] == (densenet.torchvision_feature_size(37),
                                                densenet.torchvision_feature_size(45)) == (2, 3)
    for name in densenet.TAPS:
        assert ours[name].shape == nhwc(theirs[name]).shape, name
        assert rel_l2(ours[name], nhwc(theirs[name])) < TOL, name
    # the random statistics keep the activations O(1), so the comparison means something
    assert 0.1 < float(np.std(theirs["denseblock3"].numpy())) < 100


def test_port_accepts_legacy_and_features_only_keys(models):
    net, _, params = models
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    # the names of densenet121-a639ec97.pth: "norm.1", "conv.1", "norm.2", "conv.2"
    legacy = {(re.sub(r"\.(norm|conv)([12])\.", r".\1.\2.", k) if "denselayer" in k else k): v
              for k, v in state.items()}
    assert "features.denseblock2.denselayer3.norm.1.running_mean" in legacy
    assert "features.denseblock2.denselayer3.conv.2.weight" in legacy
    features_only = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    for variant in (legacy, features_only):
        ported = densenet.densenet_from_torchvision(variant)
        jax.tree.map(np.testing.assert_array_equal, ported, params["encoder"])


def test_port_refuses_wrong_files(models):
    net, _, _ = models
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    missing = dict(state)
    del missing["features.denseblock2.denselayer5.norm2.running_var"]
    with pytest.raises(weights.WeightsError, match="x.pth: missing tensor 'features.denseblock2"):
        densenet.densenet_from_torchvision(missing, source="x.pth")
    deeper = dict(state)
    deeper["features.denseblock3.denselayer25.conv1.weight"] = np.zeros((128, 1024, 1, 1))
    with pytest.raises(weights.WeightsError, match="24 layers"):
        densenet.densenet_from_torchvision(deeper, source="x.pth")
    wrong = dict(state, **{"features.conv0.weight": np.zeros((96, 3, 7, 7), np.float32)})
    with pytest.raises(weights.WeightsError,
                       match=r"shape \(96, 3, 7, 7\), expected \(64, 3, 7, 7\)"):
        densenet.densenet_from_torchvision(wrong, source="x.pth")
    vgg = {k: v.numpy() for k, v in ref.make_torchvision_vgg19_features().state_dict().items()}
    with pytest.raises(weights.WeightsError, match="DenseNet-121 state dict"):
        densenet.densenet_from_torchvision({f"features.{k}": v for k, v in vgg.items()})


def test_apply_matches_torch_on_the_padded_image_and_crops(models):
    """adain_jax.apply = torch AdaIN + decoder on the content edge-padded to 48x48, cropped.

    It goes through spatial control, so that one compiled function serves two checks:
    two identical styles and uniform 0.5 masks are plain AdaIN (the weighted unbiased
    variance of a constant weight is the unbiased variance); two styles and binary masks
    are the Lua procedure (torch_reference.masked_style_transfer) with this encoder, the
    masks resized to the 3x3 map of the padded image (ceil(37 / 16), not 37 // 16 or 37 // 8).
    """
    net, decoder, params = models
    h, w = 37, 45
    content, style = images(1, h, w, seed=5), images(1, 32, 32, seed=6)
    other = images(1, 32, 32, seed=7) * np.array([1.0, 0.4, 0.7], np.float32)
    padded = F.pad(nchw(content), (0, 48 - w, 0, 48 - h), mode="replicate")
    with torch.no_grad():
        content_f = torch_taps(net, padded)["denseblock3"]
        style_f = torch_taps(net, nchw(style))["denseblock3"]
        t = ref.adaptive_instance_normalization(content_f, style_f)
        expected = decoder(0.7 * t + 0.3 * content_f)
    assert content_f.shape[-2:] == (densenet.feature_size(h), densenet.feature_size(w)) == (3, 3)
    assert expected.shape[-2:] == (48, 48)
    uniform = np.full((2, h, w), 0.5, np.float32)
    apply = lambda p, c, s1, s2, m: adain_jax.apply(p, c, [s1, s2], 0.7, masks=m)
    compiled = compile_fast(apply, params, content, style, style, uniform)
    out = compiled(params, content, style, style, uniform)
    assert out.shape == (1, h, w, 3)
    assert rel_l2(out, nhwc(expected)[:, :h, :w]) < TOL

    fg = np.zeros((h, w), np.float32)
    fg[10:, 14:] = 1  # the nearest resize samples rows 0, 12, 24 and columns 0, 15, 30
    masks = np.stack([fg, 1 - fg])
    encode = lambda x: torch_taps(net, F.pad(x, (0, -x.shape[-1] % 16, 0, -x.shape[-2] % 16),
                                             mode="replicate"))["denseblock3"]
    with torch.no_grad():
        expected = ref.masked_style_transfer(encode, decoder, nchw(content),
                                             [nchw(style), nchw(other)], masks, alpha=0.7)
    out = compiled(params, content, style, other, masks)
    assert rel_l2(out, nhwc(expected)[:, :h, :w]) < TOL


def test_architecture_is_detected_and_recorded(models, tmp_path):
    _, _, params = models
    assert architectures.detect(params) is architectures.DENSENET121
    assert architectures.detect(ref.reference_models()[2]) is architectures.VGG19
    path = weights.save_params(params, tmp_path / "d.safetensors")
    assert weights.read_metadata(path)["encoder"] == "densenet121"
    loaded = weights.load_params(path)
    assert architectures.detect(loaded) is architectures.DENSENET121
    np.testing.assert_array_equal(loaded["encoder"]["denseblock3"]["denselayer24"]["norm2"]["var"],
                                  params["encoder"]["denseblock3"]["denselayer24"]["norm2"]["var"])


def torch_training_loss(net, decoder, content, style, style_weight):
    """Eq. 11-13 with the DenseNet taps, in torch: the port's Net.forward with other layers."""
    layers = densenet.STYLE_LAYERS
    style_feats = torch_taps(net, style)
    t = ref.adaptive_instance_normalization(torch_taps(net, content)["denseblock3"],
                                            style_feats["denseblock3"])
    g_feats = torch_taps(net, decoder(t))
    loss_c = F.mse_loss(g_feats["denseblock3"], t)
    loss_s = sum(ref.Net.style_loss(g_feats[k], style_feats[k]) for k in layers)
    return loss_c + style_weight * loss_s


def test_training_loss_gradient_and_a_few_adam_steps(models):
    """losses.loss on DenseNet params equals the torch objective; Adam steps lower it."""
    net, decoder, params = models
    content, style = images(2, 32, 32, seed=8), images(2, 32, 32, seed=9)
    objective = compile_fast(jax.value_and_grad(
        lambda dec: losses.loss({"encoder": params["encoder"], "decoder": dec},
                                content, style)[0]), params["decoder"])
    value, grads = objective(params["decoder"])

    decoder.zero_grad()
    expected = torch_training_loss(net, decoder, nchw(content), nchw(style), losses.STYLE_WEIGHT)
    expected.backward()
    expected = expected.item()
    assert abs(float(value) - expected) <= TOL * abs(expected)
    torch_grads = decoder_params(decoder)  # shapes/names only; fill with the torch grads
    convs = [m for m in decoder if isinstance(m, nn.Conv2d)]
    for (name, _), m in zip(torch_grads.items(), convs):
        assert rel_l2(grads[name]["kernel"], m.weight.grad.numpy().transpose(2, 3, 1, 0)) < 1e-3
        assert rel_l2(grads[name]["bias"], m.bias.grad.numpy()) < 1e-3

    optimizer = optax.adam(1e-4)

    @jax.jit  # eager, each of the decoder's tensor shapes compiles its own small programs
    def adam_step(dec, opt, grads):
        updates, opt = optimizer.update(grads, opt, dec)
        return optax.apply_updates(dec, updates), opt

    dec, opt = params["decoder"], jax.jit(optimizer.init)(params["decoder"])
    history = [float(value)]
    for _ in range(3):
        dec, opt = adam_step(dec, opt, grads)
        value, grads = objective(dec)
        history.append(float(value))
    assert all(np.isfinite(history))
    assert all(b < a for a, b in zip(history, history[1:])), history


def test_train_cli_with_densenet_encoder_and_the_export_stylises(tmp_path, capsys):
    """train.py --encoder densenet121: a few real steps, then stylize.py reads the export."""
    from PIL import Image

    from adain_jax import densenet, weights
    from tests.test_train import cli_module, make_images

    encoder = densenet.init_encoder(jax.random.key(0))
    encoder_file = weights.save_params({"encoder": encoder}, tmp_path / "dn.safetensors")
    contents = make_images(tmp_path / "content", 2, size=(40, 40), seed=1)
    styles = make_images(tmp_path / "styles", 2, size=(40, 40), seed=2)
    workdir = tmp_path / "run"
    argv = ["--workdir", str(workdir), "--encoder", "densenet121", "--encoder-weights",
            str(encoder_file), "--content-dir", str(contents), "--styles", str(styles),
            "--resize", "32", "--crop-size", "32", "--batch-size", "2", "--steps", "2",
            "--save-every", "2", "--log-every", "1"]
    assert cli_module("train").main(argv) == 0, capsys.readouterr().err
    exported = weights.load_params(workdir / "adain.safetensors")
    assert weights.read_metadata(workdir / "adain.safetensors")["encoder"] == "densenet121"
    init = densenet.init_decoder(jax.random.key(0))
    assert sorted(exported["decoder"]) == sorted(init)
    for name in encoder:  # the encoder is frozen: exported unchanged
        for leaf_a, leaf_b in zip(jax.tree.leaves(exported["encoder"][name]),
                                  jax.tree.leaves(encoder[name])):
            np.testing.assert_array_equal(leaf_a, leaf_b)

    # the wrong --encoder for the weights is one clear line
    capsys.readouterr()
    assert cli_module("train").main(argv[:2] + ["--encoder", "vgg19"] + argv[4:]) == 1
    err = capsys.readouterr().err
    assert "densenet121" in err and "Traceback" not in err

    output = tmp_path / "out.png"
    code = cli_module("stylize").main([
        "--content", str(contents / "img00.png"), "--style", str(styles / "img01.png"),
        "--weights", str(workdir / "adain.safetensors"), "--output", str(output),
        "--content-size", "0", "--style-size", "0", "-q"])
    assert code == 0, capsys.readouterr().err
    assert Image.open(output).size == (40, 40)
