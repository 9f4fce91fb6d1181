"""A torchvision-layout DenseNet-121 in PyTorch: the independent reference for the DenseNet tests.

It restates torchvision's DenseNet-121 module tree (_DenseLayer, _DenseBlock, _Transition,
`features` + `classifier`) in its own terms, so its state-dict keys are torchvision's; it is
not derived from adain_jax.densenet. tests/test_densenet.py checks its parameter count
against torchvision's published figure. Shared by test_densenet, test_evaluate and
test_convert_weights / test_download (which save it in torchvision's file layout).
"""
import functools
import re
from collections import OrderedDict

import torch
import torch.nn as nn


class _DenseLayer(nn.Module):
    def __init__(self, cin, growth=32, bn_size=4):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, x):
        y = self.conv1(self.relu1(self.norm1(x)))
        return self.conv2(self.relu2(self.norm2(y)))


class _DenseBlock(nn.ModuleDict):
    def __init__(self, num_layers, cin, growth=32):
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", _DenseLayer(cin + i * growth, growth))

    def forward(self, x):
        for layer in self.values():
            x = torch.cat([x, layer(x)], 1)
        return x


class _Transition(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(cin))
        self.add_module("relu", nn.ReLU())
        self.add_module("conv", nn.Conv2d(cin, cout, 1, bias=False))
        self.add_module("pool", nn.AvgPool2d(2, 2))


class TorchDenseNet121(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv0", nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)),
            ("norm0", nn.BatchNorm2d(64)),
            ("relu0", nn.ReLU()),
            ("pool0", nn.MaxPool2d(3, stride=2, padding=1)),
        ]))
        c = 64
        for i, n in enumerate((6, 12, 24, 16), start=1):
            self.features.add_module(f"denseblock{i}", _DenseBlock(n, c))
            c += 32 * n
            if i != 4:
                self.features.add_module(f"transition{i}", _Transition(c, c // 2))
                c //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(c))
        self.classifier = nn.Linear(c, 1000)


def torch_taps(net: TorchDenseNet121, x: torch.Tensor) -> dict:
    """Every stage output up to dense block 3; transition taps before and after the pool."""
    f, out = net.features, {}
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / \
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = out["relu0"] = f.relu0(f.norm0(f.conv0(x)))
    x = out["pool0"] = f.pool0(x)
    for i in (1, 2, 3):
        x = out[f"denseblock{i}"] = getattr(f, f"denseblock{i}")(x)
        if i == 3:
            return out
        t = getattr(f, f"transition{i}")
        x = out[f"transition{i}_conv"] = t.conv(t.relu(t.norm(x)))
        x = out[f"transition{i}"] = t.pool(x)


@functools.lru_cache(maxsize=2)
def randomized_densenet(seed: int) -> TorchDenseNet121:
    """Random convs (torchvision's kaiming init) and random BN affine and running stats.

    Cached: test_evaluate builds on the same one. Do not modify the returned module.
    """
    torch.manual_seed(seed)
    net = TorchDenseNet121()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
                m.running_mean.normal_(0.0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(1000)
    return net.eval()


# The modules of `features` that the encoder (to dense block 3) uses, and torchvision's
# batch-norm tensor names with adain-jax's for them; restated here, not imported.
ENCODER_MODULES = ("conv0", "norm0", "denseblock1", "transition1", "denseblock2",
                   "transition2", "denseblock3")
BN_NAMES = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}


def encoder_tensors(state) -> dict:
    """{adain-jax parameter path: array} expected from a torchvision DenseNet-121 state dict.

    Conv weights (4-d) become HWIO "kernel"s; batch-norm tensors keep their values under
    BN_NAMES; num_batches_tracked and everything after dense block 3 are dropped.
    """
    out = {}
    for key, value in state.items():
        top, module, *rest = key.split(".")
        if top != "features" or module not in ENCODER_MODULES or rest[-1] == "num_batches_tracked":
            continue
        value = value.detach().numpy() if isinstance(value, torch.Tensor) else value
        if value.ndim == 4:
            out[(module, *rest[:-1], "kernel")] = value.transpose(2, 3, 1, 0)
        else:
            out[(module, *rest[:-1], BN_NAMES[rest[-1]])] = value
    return out


def legacy_keys(state) -> dict:
    """The state dict under the names of torchvision's published densenet121-a639ec97.pth,
    whose dense layers call their modules "norm.1", "conv.1", "norm.2", "conv.2"."""
    rename = lambda key: re.sub(r"(denselayer\d+)\.(norm|relu|conv)([12])\.", r"\1.\2.\3.", key)
    return {rename(key): value for key, value in state.items()}
