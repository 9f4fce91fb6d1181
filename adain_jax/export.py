"""Exported graphs, for running adain-jax without Python or JAX: ONNX and StableHLO.

    python -m adain_jax.export --format onnx --out exported/
    python -m adain_jax.export --format stablehlo --out exported/

ONNX (through jax2onnx), every graph for any image size (symbolic H and W), weights baked
in, standard operators only:
- `encoder.onnx`: `image` (1, 3, H, W) in [0, 1] -> `features` (1, C, h, w), the AdaIN
  layer's activations, and their channel `mean` and `std` (1, C) (ops.mean_std).
- `decoder.onnx`: `features`, `style_mean`, `style_std`, `alpha` (a float32 scalar) ->
  `image` (1, 3, 8h, 8w) for VGG (16h, 16w for DenseNet) in [0, 1]: AdaIN (Eq. 8) from the
  features' own statistics and the given style's, the blend of Eq. 14, and g. Crop its
  top-left H x W to get the content's size (as `transfer.decode` does). Moving alpha, or
  the weights of Eq. 15 (a weighted mean of styles' mean and std: `ops.interpolate_stats`),
  reruns only this graph.
- `adain.onnx`: shaped like the PyTorch ports' exports, `content` (1, 3, H, W), `style`
  (1, 3, Hs, Ws), `alpha` -> `image` (1, 3, H, W) in [0, 1].

StableHLO (`jax.export`): `adain.stablehlo`, `transfer.apply(params, content, style, alpha)`
with the weights baked in, for NHWC `content` (N, H, W, 3), `style` (1, Hs, Ws, 3) in
[0, 1] and a float32 scalar `alpha`; N, H, W, Hs, Ws symbolic. Load it with
`jax.export.deserialize(data).call(content, style, alpha)`. Its output is `apply`'s,
not clipped.

Every side must be at least `stylize_files.min_side(arch)` pixels (9 for VGG-19, 17 for
DenseNet-121): reflection padding needs two rows at the AdaIN layer, and so does its
unbiased std. The exported shape constraints say so; ONNX Runtime fails on smaller inputs.

`export.json` beside the graphs records what made them: the weights file's sha256, the
architecture, the minimum side and the versions of adain-jax, JAX and jax2onnx.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from adain_jax import __version__
from adain_jax.cli import Parser, run_main, setup_logging

log = logging.getLogger(__name__)

PROG = "python -m adain_jax.export"
FORMATS = ("onnx", "stablehlo")
ONNX_FILES = ("encoder.onnx", "decoder.onnx", "adain.onnx")
STABLEHLO_FILE = "adain.stablehlo"
OPSET = 23  # jax2onnx's default; onnxruntime >= 1.23 and onnxruntime-web 1.30 run it


def _nhwc(x):
    import jax.numpy as jnp

    return jnp.transpose(x, (0, 2, 3, 1))


def _nchw(x):
    import jax.numpy as jnp

    return jnp.transpose(x, (0, 3, 1, 2))


def encoder_graph(params):
    """image (1, 3, H, W) -> features (1, C, h, w), mean (1, C), std (1, C)."""
    from adain_jax import ops, transfer

    def encoder(image):
        features = transfer.encode(params, _nhwc(image))
        mean, std = ops.mean_std(features)
        return _nchw(features), mean, std

    return encoder


def decoder_graph(params):
    """features, style_mean, style_std, alpha -> image (1, 3, sh, sw) in [0, 1]."""
    import jax.numpy as jnp

    from adain_jax import ops, transfer

    def decoder(features, style_mean, style_std, alpha):
        content_feat = _nhwc(features)
        t = ops.adain_from_stats(content_feat, *ops.mean_std(content_feat), style_mean,
                                 style_std)
        image = transfer.decode(params, ops.blend_alpha(t, content_feat, alpha))
        return _nchw(jnp.clip(image, 0.0, 1.0))

    return decoder


def adain_graph(params):
    """content (1, 3, H, W), style (1, 3, Hs, Ws), alpha -> image (1, 3, H, W) in [0, 1]."""
    import jax.numpy as jnp

    from adain_jax import transfer

    def adain(content, style, alpha):
        image = transfer._apply(params, _nhwc(content), _nhwc(style), alpha, None, None, None)
        return _nchw(jnp.clip(image, 0.0, 1.0))

    return adain


def _symbolic(names: str, low: int, batch: str | None = None):
    """Symbolic dimensions in one scope, each but `batch` at least `low`."""
    from jax import export

    dims = [d.strip() for d in names.split(",")]
    return export.symbolic_shape(names, constraints=[f"{d} >= {low}" for d in dims
                                                     if d != batch])


def export_onnx(params, out_dir, *, opset: int = OPSET,
                names: Sequence[str] = ONNX_FILES) -> dict[str, Path]:
    """Write the graphs `names` (of encoder.onnx, decoder.onnx, adain.onnx) to `out_dir`;
    returns {name: path}."""
    import jax
    import jax.numpy as jnp
    import onnx
    from jax2onnx import to_onnx

    from adain_jax import architectures, outputs
    from adain_jax.stylize_files import min_side

    # onnx_ir warns for each shape tensor whose type jax2onnx leaves unset (harmless).
    logging.getLogger("onnx_ir").setLevel(logging.ERROR)
    arch = architectures.detect(params)
    channels = jax.eval_shape(lambda x: encoder_graph(params)(x)[1],
                              jax.ShapeDtypeStruct((1, 3, 32, 32), jnp.float32)).shape[1]
    f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
    h, w, hs, ws = _symbolic("H, W, Hs, Ws", min_side(arch))
    fh, fw = _symbolic("h, w", 2)  # the decoder's input: the AdaIN layer's map
    graphs = {
        "encoder.onnx": (encoder_graph(params), [f32(1, 3, h, w)], ["image"],
                         ["features", "mean", "std"]),
        "decoder.onnx": (decoder_graph(params),
                         [f32(1, channels, fh, fw), f32(1, channels), f32(1, channels), f32()],
                         ["features", "style_mean", "style_std", "alpha"], ["image"]),
        "adain.onnx": (adain_graph(params), [f32(1, 3, h, w), f32(1, 3, hs, ws), f32()],
                       ["content", "style", "alpha"], ["image"]),
    }
    written = {}
    for name in names:
        fn, inputs, input_names, output_names = graphs[name]
        began = time.perf_counter()
        model = to_onnx(fn, inputs, model_name=name.removesuffix(".onnx"), opset=opset,
                        input_names=input_names, output_names=output_names)
        _drop_unused_initializers(model)
        onnx.checker.check_model(model, full_check=True)
        custom = {node.domain for node in model.graph.node} - {"", "ai.onnx"}
        assert not custom, f"{name}: operators outside the standard domain: {custom}"
        written[name] = outputs.write_atomic(Path(out_dir) / name, model.SerializeToString())
        log.info("%s: %.1f MB in %.1f s", written[name], written[name].stat().st_size / 1e6,
                 time.perf_counter() - began)
    return written


def _drop_unused_initializers(model) -> None:
    """jax2onnx 0.17 leaves a constant or two that no node reads (ONNX Runtime warns,
    onnxruntime-web at its error level)."""
    used = {name for node in model.graph.node for name in node.input}
    used |= {o.name for o in model.graph.output}
    unused = [t for t in model.graph.initializer if t.name not in used]
    for tensor in unused:
        model.graph.initializer.remove(tensor)


def export_stablehlo(params, out_dir, *, platforms: Sequence[str] | None = None) -> Path:
    """Write adain.stablehlo (`jax.export.serialize` of `apply`) to `out_dir`."""
    import jax
    import jax.numpy as jnp
    from jax import export

    from adain_jax import architectures, outputs, transfer
    from adain_jax.stylize_files import min_side

    arch = architectures.detect(params)
    n, h, w, hs, ws = _symbolic("n, h, w, hs, ws", min_side(arch), batch="n")

    def adain(content, style, alpha):
        return transfer._apply(params, content, style, alpha, None, None, None)

    f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
    exported = export.export(jax.jit(adain), platforms=platforms)(
        f32(n, h, w, 3), f32(1, hs, ws, 3), f32())
    return outputs.write_atomic(Path(out_dir) / STABLEHLO_FILE, exported.serialize())


def _versions() -> dict[str, str]:
    from importlib import metadata

    found = {}
    for name in ("jax", "jax2onnx", "onnx"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


EPILOG = f"""\
what is written to --out:
  onnx        encoder.onnx (image -> AdaIN-layer features, their mean and std),
              decoder.onnx (features, a style's mean and std, alpha -> image: moving alpha
              or interpolation weights reruns only this one) and adain.onnx (content,
              style, alpha -> image, NCHW like the PyTorch ports' exports); any H x W,
              float32 images in [0, 1], opset {OPSET}, standard operators only
  stablehlo   {STABLEHLO_FILE}: apply(params, content, style, alpha) on NHWC images,
              any N, H, W; load it with jax.export.deserialize(data).call(content, style,
              alpha)
  export.json what made them (weights sha256, architecture, minimum side, versions)

every image side must be at least 9 px for VGG-19 weights (17 for DenseNet-121).
ONNX needs the [export] extra (pip install "adain-jax[export]": jax2onnx, onnx).

examples:
  python -m adain_jax.export --format onnx --out exported/
  python -m adain_jax.export --format onnx stablehlo --weights adain.safetensors --out exported/
  python -c "import onnxruntime as ort; print(ort.InferenceSession('exported/adain.onnx'))"
"""


def build_parser() -> argparse.ArgumentParser:
    from adain_jax.download import default_weights_path

    parser = Parser(prog=PROG, epilog=EPILOG,
                    description="Export style transfer with baked-in weights as ONNX graphs "
                                "or a StableHLO program, for any image size.")
    parser.add_argument("--format", nargs="+", choices=FORMATS, default=["onnx"],
                        help="what to export (default: onnx)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write to")
    parser.add_argument("--weights", metavar="FILE",
                        help=f"adain-jax weights file (default: {default_weights_path()})")
    parser.add_argument("--platforms", nargs="+", metavar="NAME",
                        help="StableHLO only: platforms to lower for, e.g. cpu cuda "
                             "(default: this machine's JAX backend)")
    parser.add_argument("-q", "--quiet", action="store_true", help="log only problems")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.quiet)
    out = Path(args.out)
    if "onnx" in args.format:
        import importlib.util

        missing = [m for m in ("jax2onnx", "onnx") if importlib.util.find_spec(m) is None]
        if missing:
            print(f"{PROG}: error: --format onnx needs {' and '.join(missing)}: "
                  'pip install "adain-jax[export]"', file=sys.stderr)
            return 1
    from adain_jax import outputs

    problem = outputs.folder_problem(out)
    if problem:
        print(f"{PROG}: error: --out {out}: {problem}", file=sys.stderr)
        return 1
    from adain_jax.download import default_weights_path, sha256_file
    from adain_jax.weights import WeightsError, load_params

    weights_path = Path(args.weights) if args.weights else default_weights_path()
    try:
        params = load_params(weights_path)
    except WeightsError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    from adain_jax import architectures
    from adain_jax.stylize_files import min_side

    arch = architectures.detect(params)
    written = []
    if "onnx" in args.format:
        written += export_onnx(params, out).values()
    if "stablehlo" in args.format:
        began = time.perf_counter()
        written.append(export_stablehlo(params, out, platforms=args.platforms))
        log.info("%s: %.1f MB in %.1f s", written[-1], written[-1].stat().st_size / 1e6,
                 time.perf_counter() - began)
    record = {"adain_jax": __version__, **_versions(), "weights": str(weights_path),
              "weights_sha256": sha256_file(weights_path), "architecture": arch.name,
              "min_side": min_side(arch), "files": sorted(p.name for p in written)}
    outputs.write_atomic(out / "export.json", (json.dumps(record, indent=1) + "\n").encode())
    for path in written:
        print(path)
    return 0


def run() -> int:
    return run_main(main, PROG)


if __name__ == "__main__":
    sys.exit(run())
