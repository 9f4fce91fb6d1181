"""An independent PyTorch (NCHW) re-implementation of the reference AdaIN port, for tests.

It restates the public PyTorch port's `net.py`, `function.py` and `test.py` in their own
terms (nn.Sequential module lists, flat indices), deliberately NOT derived from
adain_jax.models, so a mistake in our layer lists or name maps shows up as a mismatch.
The Lua original's mask procedure (gather pixels per region, AdaIN, scatter) and Gatys et
al.'s luminance-only transfer are written here too, for the controls the port lacks.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

# Module indices of the convolutions in the port's Sequentials (counted by hand from net.py).
PORT_VGG_CONVS = {"conv0": 0, "conv1_1": 2, "conv1_2": 5, "conv2_1": 9, "conv2_2": 12,
                  "conv3_1": 16, "conv3_2": 19, "conv3_3": 22, "conv3_4": 25, "conv4_1": 29}
PORT_DECODER_CONVS = {"conv4_1": 1, "conv3_4": 5, "conv3_3": 8, "conv3_2": 11, "conv3_1": 14,
                      "conv2_2": 18, "conv2_1": 21, "conv1_2": 25, "conv1_1": 28}
TORCHVISION_CONVS = {"conv1_1": 0, "conv1_2": 2, "conv2_1": 5, "conv2_2": 7, "conv3_1": 10,
                     "conv3_2": 12, "conv3_3": 14, "conv3_4": 16, "conv4_1": 19}


def _block(cin, cout):
    return [nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(cin, cout, (3, 3)), nn.ReLU()]


def _pool():
    return nn.MaxPool2d((2, 2), (2, 2), (0, 0), ceil_mode=True)


def make_port_vgg() -> nn.Sequential:
    """The port's full 53-module normalised VGG-19 (to relu5_4), as in its net.py."""
    layers = [nn.Conv2d(3, 3, (1, 1))]
    layers += _block(3, 64) + _block(64, 64) + [_pool()]
    layers += _block(64, 128) + _block(128, 128) + [_pool()]
    layers += _block(128, 256) + _block(256, 256) + _block(256, 256) + _block(256, 256) + [_pool()]
    layers += _block(256, 512) + _block(512, 512) + _block(512, 512) + _block(512, 512) + [_pool()]
    layers += _block(512, 512) + _block(512, 512) + _block(512, 512) + _block(512, 512)
    vgg = nn.Sequential(*layers)
    assert len(vgg) == 53
    return vgg


def make_port_decoder() -> nn.Sequential:
    up = lambda: nn.Upsample(scale_factor=2, mode="nearest")
    layers = _block(512, 256) + [up()]
    layers += _block(256, 256) + _block(256, 256) + _block(256, 256) + _block(256, 128) + [up()]
    layers += _block(128, 128) + _block(128, 64) + [up()]
    layers += _block(64, 64) + [nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(64, 3, (3, 3))]
    return nn.Sequential(*layers)


def make_torchvision_vgg19_features() -> nn.Sequential:
    """torchvision's vgg19().features (config 'E'): zero-padded convs, floor pooling."""
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
           512, 512, 512, 512, "M"]
    layers, cin = [], 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(cin, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            cin = v
    return nn.Sequential(*layers)


def randomize_(module: nn.Module, seed: int, scale: float = 1.0) -> nn.Module:
    """Deterministic random weights (PyTorch default init, optionally rescaled)."""
    torch.manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            m.reset_parameters()
            with torch.no_grad():
                m.weight.mul_(scale)
    return module


def port_vgg_to_relu4_1(vgg: nn.Sequential) -> nn.Sequential:
    return nn.Sequential(*list(vgg.children())[:31])  # as the port's test.py / train.py


# ---- function.py ---------------------------------------------------------------------

def calc_mean_std(feat, eps=1e-5):
    n, c = feat.shape[:2]
    var = feat.reshape(n, c, -1).var(dim=2) + eps
    return feat.reshape(n, c, -1).mean(dim=2).view(n, c, 1, 1), var.sqrt().view(n, c, 1, 1)


def adaptive_instance_normalization(content_feat, style_feat):
    style_mean, style_std = calc_mean_std(style_feat)
    content_mean, content_std = calc_mean_std(content_feat)
    normalized = (content_feat - content_mean) / content_std
    return normalized * style_std + style_mean


def _flat_mean_std(feat):
    f = feat.reshape(3, -1)
    return f, f.mean(dim=-1, keepdim=True), f.std(dim=-1, keepdim=True)


def _mat_sqrt(x):
    u, d, v = torch.svd(x)
    return u @ torch.diag(d.pow(0.5)) @ v.t()


def coral(source, target):
    """The port's CORAL on (3, H, W) tensors: source gets target's colour statistics."""
    s, s_mean, s_std = _flat_mean_std(source)
    s_norm = (s - s_mean) / s_std
    s_cov = s_norm @ s_norm.t() + torch.eye(3, dtype=source.dtype)
    t, t_mean, t_std = _flat_mean_std(target)
    t_norm = (t - t_mean) / t_std
    t_cov = t_norm @ t_norm.t() + torch.eye(3, dtype=source.dtype)
    transfer = _mat_sqrt(t_cov) @ (torch.inverse(_mat_sqrt(s_cov)) @ s_norm)
    return (transfer * t_std + t_mean).view(source.shape)


# ---- net.py: the encoder split into enc_1..enc_4 and the training losses ---------------

class Net(nn.Module):
    def __init__(self, vgg: nn.Sequential, decoder: nn.Sequential):
        super().__init__()
        layers = list(vgg.children())
        self.enc = nn.ModuleList([nn.Sequential(*layers[:4]), nn.Sequential(*layers[4:11]),
                                  nn.Sequential(*layers[11:18]), nn.Sequential(*layers[18:31])])
        self.decoder = decoder
        for p in self.enc.parameters():
            p.requires_grad = False

    def encode_with_intermediate(self, x):
        feats = []
        for enc in self.enc:
            x = enc(x)
            feats.append(x)
        return feats  # relu1_1, relu2_1, relu3_1, relu4_1

    def encode(self, x):
        return self.encode_with_intermediate(x)[-1]

    @staticmethod
    def style_loss(x, y):
        xm, xs = calc_mean_std(x)
        ym, ys = calc_mean_std(y)
        return nn.functional.mse_loss(xm, ym) + nn.functional.mse_loss(xs, ys)

    def forward(self, content, style, alpha=1.0):
        style_feats = self.encode_with_intermediate(style)
        content_feat = self.encode(content)
        t = adaptive_instance_normalization(content_feat, style_feats[-1])
        t = alpha * t + (1 - alpha) * content_feat
        g_t = self.decoder(t)
        g_t_feats = self.encode_with_intermediate(g_t)
        loss_c = nn.functional.mse_loss(g_t_feats[-1], t)
        loss_s = sum(self.style_loss(g, s) for g, s in zip(g_t_feats, style_feats))
        return loss_c, loss_s


# ---- test.py: style_transfer, and the Lua original's spatial control -------------------

def style_transfer(vgg, decoder, content, style, alpha=1.0, interpolation_weights=None):
    """The port's test.py: `content` (1, 3, H, W); `style` (K, 3, H, W)."""
    content_f = vgg(content)
    style_f = vgg(style)
    if interpolation_weights is not None:
        base = adaptive_instance_normalization(content_f.expand(len(style_f), -1, -1, -1), style_f)
        feat = sum(w * base[i:i + 1] for i, w in enumerate(interpolation_weights))
        content_f = content_f[:1]
    else:
        feat = adaptive_instance_normalization(content_f, style_f)
    feat = feat * alpha + content_f * (1 - alpha)
    return decoder(feat)


def masked_style_transfer(vgg, decoder, content, styles, masks, alpha=1.0):
    """Lua test.lua's -mask: each region's content pixels take their own AdaIN.

    `masks` (K, H, W) binary in content space, resized (nearest) to the feature map; the
    content statistics are those of the region's pixels, the style statistics the whole
    style image's. Pixels no mask covers keep their content features (alpha = 0 there; the
    Lua scripts' masks always cover the whole image).
    """
    content_f = vgg(content)[0]  # (C, h, w)
    c, h, w = content_f.shape
    small = nn.functional.interpolate(torch.as_tensor(masks)[None].float(), size=(h, w),
                                      mode="nearest")[0].reshape(len(styles), -1)
    flat = content_f.reshape(c, -1)
    target = flat.clone()
    for k, style in enumerate(styles):
        idx = torch.nonzero(small[k] > 0.5).flatten()
        if len(idx) == 0:
            continue
        region = flat[:, idx].reshape(1, c, -1, 1)
        target[:, idx] = adaptive_instance_normalization(region, vgg(style)).reshape(c, -1)
    feat = target.reshape(1, c, h, w) * alpha + content_f[None] * (1 - alpha)
    return decoder(feat)


# ---- helpers mapping our Flax params <-> these torch modules ----------------------------

def load_into(module: nn.Sequential, flax_convs: dict, index: dict, prefix: str = ""):
    """Copy Flax conv params {name: {kernel HWIO, bias}} into `module` at `index`."""
    state = module.state_dict()
    for name, i in index.items():
        kernel = np.asarray(flax_convs[name]["kernel"])
        state[f"{prefix}{i}.weight"] = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
        state[f"{prefix}{i}.bias"] = torch.from_numpy(np.asarray(flax_convs[name]["bias"]).copy())
    module.load_state_dict(state)
    return module


def convs_from(module: nn.Sequential, index: dict, prefix: str = "") -> dict:
    """Flax conv params from `module`'s state dict at `index` (for building params)."""
    state = module.state_dict()
    return {name: {"kernel": state[f"{prefix}{i}.weight"].numpy().transpose(2, 3, 1, 0).copy(),
                   "bias": state[f"{prefix}{i}.bias"].numpy().copy()}
            for name, i in index.items()}


def reference_models(seed: int = 0):
    """Random port-layout (vgg to relu4_1, decoder) and the same weights as our params."""
    vgg = port_vgg_to_relu4_1(randomize_(make_port_vgg(), seed)).eval()
    decoder = randomize_(make_port_decoder(), seed + 1).eval()
    params = {"encoder": convs_from(vgg, PORT_VGG_CONVS),
              "decoder": convs_from(decoder, PORT_DECODER_CONVS)}
    return vgg, decoder, params


def params_to_torch(params) -> tuple[nn.Sequential, nn.Sequential]:
    """Port-layout torch modules holding our `params` (encoder to relu4_1, decoder)."""
    vgg = port_vgg_to_relu4_1(make_port_vgg())
    load_into(vgg, params["encoder"], PORT_VGG_CONVS)
    decoder = load_into(make_port_decoder(), params["decoder"], PORT_DECODER_CONVS)
    return vgg.eval(), decoder.eval()


def nchw(x) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2)))


def nhwc(x: torch.Tensor) -> np.ndarray:
    return x.detach().numpy().transpose(0, 2, 3, 1)


def rel_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))
