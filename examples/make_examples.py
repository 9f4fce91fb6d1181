"""Regenerate the example images procedurally (numpy + PIL, seeded): `python examples/make_examples.py`.

They are stand-ins to try stylize.py on without downloading anything, not photographs or
paintings; real styles give far more striking results.
"""
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent
rng = np.random.default_rng(2017)


def grid(h, w):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return y / h, x / w


def to_image(rgb):
    return Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")


def harbour(h=288, w=384):
    """Sky gradient, sea, a sun and a few boats: large flat regions and edges."""
    y, x = grid(h, w)
    sky = np.stack([0.55 + 0.4 * y, 0.7 + 0.2 * y, 0.95 - 0.1 * y], -1)
    sea = np.stack([0.1 + 0.1 * y, 0.3 + 0.1 * y, 0.5 + 0.2 * np.sin(40 * x + 8 * y) * 0.2], -1)
    img = to_image(np.where((y > 0.6)[..., None], sea, sky))
    draw = ImageDraw.Draw(img)
    draw.ellipse((280, 30, 340, 90), fill=(250, 210, 90))
    for i, cx in enumerate((70, 170, 250)):
        top = 165 + 12 * i
        draw.polygon([(cx - 40, top + 25), (cx + 40, top + 25), (cx + 28, top + 42),
                      (cx - 28, top + 42)], fill=(120, 60, 40))
        draw.polygon([(cx, top - 40), (cx, top + 22), (cx + 30, top + 22)], fill=(245, 245, 235))
    return img


def shapes(h=320, w=320):
    """Overlapping coloured shapes on a radial gradient."""
    y, x = grid(h, w)
    r = np.hypot(y - 0.5, x - 0.5)
    img = to_image(np.stack([0.9 - r, 0.85 - 0.5 * r, 0.6 + 0.3 * r], -1))
    draw = ImageDraw.Draw(img)
    draw.rectangle((40, 60, 170, 250), fill=(200, 40, 50))
    draw.ellipse((130, 90, 290, 250), fill=(40, 110, 200))
    draw.polygon([(60, 290), (160, 150), (260, 290)], fill=(250, 200, 40))
    return img


def portrait(h=384, w=256):
    """A tall image: a head-and-shoulders silhouette on a soft background."""
    y, x = grid(h, w)
    img = to_image(np.stack([0.3 + 0.5 * x, 0.6 - 0.2 * y, 0.5 + 0.3 * y], -1))
    draw = ImageDraw.Draw(img)
    draw.ellipse((40, 300, 216, 470), fill=(70, 50, 90))
    draw.ellipse((78, 110, 178, 240), fill=(225, 180, 150))
    draw.ellipse((103, 160, 115, 172), fill=(40, 30, 30))
    draw.ellipse((141, 160, 153, 172), fill=(40, 30, 30))
    return img.filter(ImageFilter.GaussianBlur(1))


def stripes(h=256, w=256):
    """Diagonal bands in three saturated colours, slightly wavy."""
    y, x = grid(h, w)
    phase = 10 * (x + y) + 0.6 * np.sin(12 * y)
    band = np.floor(phase) % 3
    palette = np.array([[0.95, 0.3, 0.1], [0.1, 0.2, 0.5], [0.95, 0.85, 0.7]], np.float32)
    return to_image(palette[band.astype(int)])


def waves(h=256, w=256):
    """Interfering sine waves: smooth, curly colour texture."""
    y, x = grid(h, w)
    a = np.sin(25 * x + 6 * np.sin(9 * y))
    b = np.sin(21 * y + 5 * np.cos(7 * x))
    return to_image(np.stack([0.5 + 0.4 * a, 0.45 + 0.3 * a * b, 0.55 + 0.4 * b], -1))


def mosaic(h=256, w=256):
    """Random coloured tiles with dark grout and a little grain."""
    img = Image.new("RGB", (w, h), (30, 25, 20))
    draw = ImageDraw.Draw(img)
    for _ in range(180):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        s = rng.uniform(8, 22)
        colour = tuple(int(c) for c in rng.integers(40, 255, 3))
        draw.regular_polygon((cx, cy, s), int(rng.integers(4, 7)),
                             rotation=float(rng.uniform(0, 90)), fill=colour)
    grain = rng.normal(0, 0.04, (h, w, 1)).astype(np.float32)
    return to_image(np.asarray(img, np.float32) / 255 + grain)


def main():
    for folder, makers in (("content", (harbour, shapes, portrait)),
                           ("style", (stripes, waves, mosaic))):
        (ROOT / folder).mkdir(exist_ok=True)
        for make in makers:
            make().save(ROOT / folder / f"{make.__name__}.jpg", quality=88)


if __name__ == "__main__":
    main()
