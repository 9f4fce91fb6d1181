"""A small CNN classifier trained with AdaIN style augmentation inside its jitted step.

    # once: the adain-jax weights, and a style bank from a folder of paintings
    python convert_weights.py --download
    python -m adain_jax.style_bank --styles paintings/ --out paintings.safetensors
    python examples/style_augmented_classifier.py --bank paintings.safetensors
    # no bank: each image takes the style of another image of its batch
    python examples/style_augmented_classifier.py --styles batch --p 0.3 --alpha 0.5 1.0

Each step stylises a share `p` of the batch (adain_jax.augment.augment) before the
classifier sees it; decisions come from (step key, dataset index), so an image's coin flip,
style and alpha do not depend on which batch it landed in. It prints the loss (about
ln 10 = 2.30 at the start for 10 classes), the share of images stylised (about p), and at
the end the accuracy on the test split. The dataset (default cifar10) is downloaded and
prepared by TFDS on first use; any TFDS dataset with "image" and "label" features works.
"""
from __future__ import annotations

import argparse
import functools
import time

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tensorflow_datasets as tfds
from PIL import Image

import adain_jax
from adain_jax import augment
from adain_jax.download import default_weights_path
from adain_jax.style_bank import BankError, load_bank
from adain_jax.weights import WeightsError


class Classifier(nn.Module):
    """Three conv-relu-pool blocks, global average pooling, one dense layer."""

    num_classes: int

    @nn.compact
    def __call__(self, x):
        x = x - 0.5
        for features in (32, 64, 128):
            x = nn.relu(nn.Conv(features, (3, 3))(x))
            x = nn.avg_pool(x, (2, 2), strides=(2, 2), padding="SAME")
        return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))


# ---- Input ----------------------------------------------------------------------------------

class Load(grain.transforms.Map):
    """Dataset index -> {"id", "image" uint8 (S, S, 3), "label"}."""

    def __init__(self, source, size: int):
        self.source, self.size = source, size

    def map(self, index):
        record = self.source[int(index)]
        image = np.asarray(record["image"])
        if image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        if self.size and image.shape[:2] != (self.size, self.size):
            image = np.asarray(Image.fromarray(image).resize((self.size, self.size),
                                                             Image.BILINEAR))
        return {"id": np.uint32(index), "image": image, "label": np.int32(record["label"])}


def batches(source, size: int, batch_size: int, *, seed: int | None = None,
            count: int | None = None):
    """Shuffled, endless batches for training (a seed); else one pass over `count`."""
    ds = grain.MapDataset.range(count or len(source))
    if seed is not None:
        ds = ds.shuffle(seed=seed).repeat()
    ds = ds.map(Load(source, size)).batch(batch_size, drop_remainder=seed is not None)
    return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=8)))


# ---- Steps ----------------------------------------------------------------------------------

def make_steps(model, tx, size: int, p: float, alpha):
    """Jitted init(key) -> state, train_step and correct (test hits in a batch)."""

    @jax.jit  # one program, rather than one per initialiser op
    def init(key):
        params = model.init(key, jnp.zeros((1, size, size, 3)))["params"]
        return {"params": params, "opt": tx.init(params), "step": jnp.zeros((), jnp.int32)}

    def loss_fn(params, images, labels):
        logits = model.apply({"params": params}, images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @functools.partial(jax.jit, donate_argnums=0)
    def train_step(state, adain_params, styles, batch, rng):
        # styles: the bank's StyleStats, or None for "batch" (a string is no jit argument)
        raw = batch["image"].astype(jnp.float32) / 255.0
        images, info = augment.augment(
            adain_params, jax.random.fold_in(rng, state["step"]), raw,
            augment.BATCH if styles is None else styles, p=p, alpha=alpha,
            example_ids=batch["id"])
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], images, batch["label"])
        updates, opt = tx.update(grads, state["opt"], state["params"])
        state = {"params": optax.apply_updates(state["params"], updates), "opt": opt,
                 "step": state["step"] + 1}
        return state, {"loss": loss, "applied": info.applied.mean(),
                       "input_change": jnp.abs(images - raw).max()}

    @jax.jit
    def correct(params, batch):
        logits = model.apply({"params": params}, batch["image"].astype(jnp.float32) / 255.0)
        return (logits.argmax(-1) == batch["label"]).sum()

    return init, train_step, correct


# ---- Main -----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    styles = parser.add_mutually_exclusive_group(required=True)
    styles.add_argument("--bank", metavar="FILE", help="style bank (python -m adain_jax.style_bank)")
    styles.add_argument("--styles", choices=[augment.BATCH],
                        help="'batch': the style of another image of the same batch")
    parser.add_argument("--weights", metavar="FILE", help="adain-jax weights (default: "
                        f"{default_weights_path()})")
    parser.add_argument("--p", type=float, default=0.5, help="share stylised (default 0.5)")
    parser.add_argument("--alpha", type=float, nargs="+", default=[1.0], metavar="A",
                        help="alpha, or a low and high to draw it from (default 1)")
    parser.add_argument("--dataset", default="cifar10", help="TFDS name (default cifar10)")
    parser.add_argument("--data-dir", help="TFDS data folder (default: TFDS's)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=32, help="resize to this square")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-examples", type=int, default=10000)
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv=None) -> dict:
    """Train and evaluate; returns the per-step metrics and the test accuracy."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if len(args.alpha) > 2:
        parser.error("--alpha takes one number or a low and a high")
    alpha = args.alpha[0] if len(args.alpha) == 1 else tuple(args.alpha)
    if not 0 <= args.p <= 1 or not 0 <= args.alpha[0] <= args.alpha[-1] <= 1:
        parser.error("--p must be in [0, 1], and --alpha a number or a low <= high in it")
    if args.image_size < 16:
        parser.error("--image-size must be at least 16 (VGG's relu4_1 needs 2x2 positions)")
    try:
        adain_params = adain_jax.load_params(args.weights or default_weights_path())
        styles = None if args.bank is None else load_bank(args.bank).stats
    except (WeightsError, BankError) as err:
        parser.error(str(err))

    sources = tfds.data_source(args.dataset, split=["train", "test"], data_dir=args.data_dir,
                               builder_kwargs={"file_format": "array_record"})
    num_classes = sources[0].dataset_info.features["label"].num_classes

    model, tx, size = Classifier(num_classes), optax.adam(args.lr), args.image_size
    init, train_step, correct = make_steps(model, tx, size, args.p, alpha)
    # rbg (XLA's own generator) for the initial weights: on CPU their program compiles in
    # 2 s, against 8 s with the default threefry. Augmentation keeps threefry.
    state = init(jax.random.key(args.seed, impl="rbg"))
    augment_rng = jax.random.key(args.seed)  # folded with the step inside train_step

    history, start = [], time.perf_counter()
    for step, batch in zip(range(args.steps), batches(sources[0], size, args.batch_size,
                                                      seed=args.seed)):
        state, metrics = train_step(state, adain_params, styles, batch, augment_rng)
        metrics = jax.device_get(metrics)
        if not np.isfinite(metrics["loss"]):
            raise FloatingPointError(f"loss is {metrics['loss']} at step {step}")
        history.append(metrics)
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            recent = history[-args.log_every:]
            print(f"step {step + 1}: loss {np.mean([m['loss'] for m in recent]):.3f}, "
                  f"stylised {np.mean([m['applied'] for m in recent]):.2f}, "
                  f"{(step + 1) / (time.perf_counter() - start):.1f} steps/s")

    n = min(args.eval_examples, len(sources[1]))
    hits = sum(int(correct(state["params"], b))
               for b in batches(sources[1], size, args.batch_size, count=n))
    print(f"test accuracy: {hits / n:.4f} ({n} images)")
    return {"history": history, "accuracy": hits / n}


if __name__ == "__main__":
    main()
