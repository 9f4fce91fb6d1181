"""The PyTorch port's test.py steps, as a process to time against `stylize.py`.

    python benchmarks/port_test.py --vgg vgg_normalised.pth --decoder decoder.pth \
        --content c.jpg [more ...] --style s.jpg [more ...] --output-dir out/

What the port's test.py does for each (content, style) pair, in its order: build net.vgg
and net.decoder, load both .pth files, keep the VGG to relu4_1, Resize(512) + ToTensor on
both images, encode the content and the style (again for every pair), AdaIN, decode, and
save the clamped image as PNG. The networks are tests/torch_reference.py (the port's
net.py); torchvision, which the port uses only for Resize, ToTensor and save_image, is not
installed here, so those are done with PIL and NumPy the same way (bilinear with
antialiasing for Resize; round(255 x) for save_image). That leaves torchvision's import
time out of the port's total, in its favour.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests import torch_reference as ref  # noqa: E402


def load(path: Path, size: int) -> torch.Tensor:
    """transforms.Resize(size) then ToTensor, on an RGB image: (1, 3, H, W) in [0, 1]."""
    image = Image.open(path).convert("RGB")
    w, h = image.size
    if size:
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(size * long / short)
        image = image.resize((size, new_long) if w <= h else (new_long, size),
                             Image.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)[None]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vgg", type=Path, required=True)
    parser.add_argument("--decoder", type=Path, required=True)
    parser.add_argument("--content", type=Path, nargs="+", required=True)
    parser.add_argument("--style", type=Path, nargs="+", required=True)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--alpha", type=float, default=1.0)
    args = parser.parse_args(argv)

    decoder, vgg = ref.make_port_decoder(), ref.make_port_vgg()
    decoder.eval()
    vgg.eval()
    decoder.load_state_dict(torch.load(args.decoder, weights_only=True))
    vgg.load_state_dict(torch.load(args.vgg, weights_only=True))
    vgg = ref.port_vgg_to_relu4_1(vgg)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for content_path in args.content:
        for style_path in args.style:
            content, style = load(content_path, args.size), load(style_path, args.size)
            with torch.no_grad():
                out = ref.style_transfer(vgg, decoder, content, style, args.alpha)
            array = out[0].clamp(0, 1).permute(1, 2, 0).numpy()
            name = f"{content_path.stem}_stylized_{style_path.stem}.png"
            Image.fromarray((array * 255 + 0.5).astype(np.uint8)).save(args.output_dir / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
