"""adain_jax.export: ONNX graphs run by ONNX Runtime and the StableHLO program, against
`adain_jax.apply` (itself held to the PyTorch port in test_transfer.py) and the port.

Tolerances: ONNX outputs (clipped to [0, 1]) within 1e-3 absolute of apply's, clipped;
StableHLO within 1e-6 relative L2 of jax.jit(apply) with the same (direct) convolutions,
and within 1e-5 of apply as it runs on CPU, with Winograd's for wide layers (2e-6 apart). One export per module: the command
line writes every file once (about 25 s), and each test reads what it needs.
"""
import hashlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from jax import export as jax_export

import adain_jax
from adain_jax import architectures, densenet, export, models, transfer
from tests.stylize_helpers import he_scaled_params, torch_stylize
from tests.torch_reference import rel_l2

ONNX_TOL = 1e-3
STABLEHLO_TOL = 1e-6
SIZES = [(64, 64), (96, 128), (75, 101)]
ALPHAS = [0.0, 0.5, 1.0]


@pytest.fixture(scope="module")
def params():
    return he_scaled_params()


@pytest.fixture(scope="module")
def exported(params, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    weights = adain_jax.save_params(params, tmp / "w.safetensors")
    out = tmp / "out"
    assert export.main(["--format", "onnx", "stablehlo", "--weights", str(weights),
                        "--out", str(out), "-q"]) == 0
    return out, weights


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def image(rng, h, w):
    """Smooth structure plus noise: not constant, not pure noise."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(7 * x + 3 * c) * np.cos(5 * y - c) for c in range(3)], -1)
    return np.clip(0.5 + 0.35 * base + 0.1 * rng.standard_normal((h, w, 3)), 0, 1
                   ).astype(np.float32)


def nchw(x):
    return np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2))


def scalar(alpha):
    return np.array(alpha, np.float32)


def test_onnx_graphs_are_standard_and_size_free(exported):
    out, _ = exported
    for name in export.ONNX_FILES:
        model = onnx.load(out / name)
        onnx.checker.check_model(model, full_check=True)
        read = {name for node in model.graph.node for name in node.input}
        assert all(t.name in read for t in model.graph.initializer)  # ORT-web warns
        assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}
        assert {o.domain: o.version for o in model.opset_import}[""] == export.OPSET
        for value in model.graph.input:
            dims = value.type.tensor_type.shape.dim
            if len(dims) == 4:  # images and feature maps: H and W named, not fixed
                assert all(d.dim_param for d in dims[2:]), (name, value.name, dims)
    names = lambda path, kind: [v.name for v in getattr(onnx.load(path).graph, kind)]
    assert names(out / "adain.onnx", "input") == ["content", "style", "alpha"]
    assert names(out / "adain.onnx", "output") == ["image"]
    assert names(out / "encoder.onnx", "output") == ["features", "mean", "std"]
    assert names(out / "decoder.onnx", "input") == ["features", "style_mean", "style_std",
                                                     "alpha"]


@pytest.mark.parametrize("h, w", SIZES)
def test_onnx_runtime_matches_apply(exported, params, h, w):
    out, _ = exported
    full, encoder, decoder = (session(out / n) for n in
                              ("adain.onnx", "encoder.onnx", "decoder.onnx"))
    rng = np.random.default_rng(h * w)
    content, style = image(rng, h, w)[None], image(rng, 57, 70)[None]
    features, _, _ = encoder.run(None, {"image": nchw(content)})
    _, style_mean, style_std = encoder.run(None, {"image": nchw(style)})
    previous = None
    for alpha in ALPHAS:
        expected = nchw(np.clip(adain_jax.apply(params, content, style, alpha), 0, 1))
        got = full.run(None, {"content": nchw(content), "style": nchw(style),
                              "alpha": scalar(alpha)})[0]
        assert got.shape == (1, 3, h, w)
        assert np.abs(got - expected).max() <= ONNX_TOL, (alpha, np.abs(got - expected).max())
        decoded = decoder.run(None, {"features": features, "style_mean": style_mean,
                                     "style_std": style_std, "alpha": scalar(alpha)})[0]
        assert decoded.shape == (1, 3, 8 * -(-h // 8), 8 * -(-w // 8))
        assert np.abs(decoded[:, :, :h, :w] - expected).max() <= ONNX_TOL
        if previous is not None:  # alpha is an input that matters, not a constant
            assert np.abs(got - previous).max() > 20 * ONNX_TOL
        previous = got


def test_onnx_matches_the_pytorch_port(exported, params):
    """The drop-in graph against the port itself (tests/torch_reference.py), clipped."""
    out, _ = exported
    rng = np.random.default_rng(7)
    content, style = image(rng, 75, 101), image(rng, 64, 64)
    got = session(out / "adain.onnx").run(None, {"content": nchw(content[None]),
                                                  "style": nchw(style[None]),
                                                  "alpha": scalar(0.8)})[0]
    expected = np.clip(torch_stylize(params, content, style, 0.8), 0, 1)
    assert np.abs(got[0].transpose(1, 2, 0) - expected).max() <= ONNX_TOL


def test_decoder_alone_interpolates_styles(exported, params):
    """Eq. 15 in the browser's way: weighted style statistics into decoder.onnx."""
    out, _ = exported
    encoder, decoder = session(out / "encoder.onnx"), session(out / "decoder.onnx")
    rng = np.random.default_rng(3)
    content, styles = image(rng, 48, 40), [image(rng, 40, 48), image(rng, 33, 45)]
    weights = np.array([0.25, 0.75], np.float32)
    features = encoder.run(None, {"image": nchw(content[None])})[0]
    stats = [encoder.run(None, {"image": nchw(s[None])})[1:] for s in styles]
    style_mean = sum(w * m for w, (m, _) in zip(weights, stats))
    style_std = sum(w * s for w, (_, s) in zip(weights, stats))
    got = decoder.run(None, {"features": features, "style_mean": style_mean,
                             "style_std": style_std, "alpha": scalar(0.7)})[0][:, :, :48, :40]
    expected = np.clip(adain_jax.apply(params, content, styles, 0.7, style_weights=weights),
                       0, 1)
    assert np.abs(got - nchw(expected[None])).max() <= ONNX_TOL


def test_stablehlo_round_trip_matches_jit(exported, params, monkeypatch):
    """Within 1e-6 of jax.jit(apply) computing the same way (direct convolutions), and
    within the house's 1e-5 of apply as it runs on this CPU (Winograd for wide layers,
    the taps product for the last)."""
    out, _ = exported
    program = jax_export.deserialize((out / export.STABLEHLO_FILE).read_bytes())
    rng = np.random.default_rng(11)
    for (n, h, w), (hs, ws) in [((1, 64, 80), (48, 48)), ((2, 75, 101), (57, 70))]:
        content = np.stack([image(rng, h, w) for _ in range(n)])
        style = image(rng, hs, ws)[None]
        got = np.asarray(program.call(content, style, np.float32(0.6)))
        assert got.shape == content.shape
        winograd = np.asarray(adain_jax.apply(params, content, style, 0.6))
        with monkeypatch.context() as patch:  # a new function: traced again, not cached
            patch.setattr(models, "WINOGRAD_MIN_CHANNELS", 1 << 30)
            patch.setattr(models, "TAPS_MAX_OUT_CHANNELS", 0)
            direct = np.asarray(jax.jit(lambda *args: transfer._apply(*args, None, None, None))(
                params, content, style, 0.6))
        assert rel_l2(got, direct) <= STABLEHLO_TOL, rel_l2(got, direct)
        assert rel_l2(got, winograd) <= 1e-5, rel_l2(got, winograd)


def test_stablehlo_refuses_a_too_small_image(exported):
    out, _ = exported
    program = jax_export.deserialize((out / export.STABLEHLO_FILE).read_bytes())
    small = np.zeros((1, 8, 64, 3), np.float32)
    with pytest.raises(Exception, match="shape"):
        program.call(small, np.zeros((1, 32, 32, 3), np.float32), np.float32(1.0))


def test_export_json_records_what_made_the_files(exported):
    out, weights = exported
    record = json.loads((out / "export.json").read_text())
    assert record["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert record["architecture"] == "vgg19" and record["min_side"] == 9
    assert record["files"] == sorted([*export.ONNX_FILES, export.STABLEHLO_FILE])
    assert record["adain_jax"] == adain_jax.__version__


def test_missing_weights_is_one_line(tmp_path, capsys):
    status = export.main(["--weights", str(tmp_path / "nope.safetensors"),
                          "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert status == 1 and len(err.splitlines()) == 1 and "nope.safetensors" in err


def test_densenet_weights_export_to_stablehlo(tmp_path):
    params = architectures.DENSENET121.init_params(jax.random.key(1))
    program = jax_export.deserialize(export.export_stablehlo(params, tmp_path).read_bytes())
    rng = np.random.default_rng(5)
    content, style = image(rng, 37, 50)[None], image(rng, 40, 40)[None]
    got = np.asarray(program.call(content, style, np.float32(1.0)))
    expected = np.asarray(jax.jit(adain_jax.apply)(params, content, style, 1.0))
    assert got.shape == content.shape
    assert rel_l2(got, expected) <= STABLEHLO_TOL


# --- the shape-polymorphic forms of the model's ops, against their concrete forms --------

def _symbolic_call(fn, x):
    """fn exported with symbolic H and W, then called on x."""
    h, w = jax_export.symbolic_shape("h, w", constraints=("h >= 2", "w >= 2"))
    spec = jax.ShapeDtypeStruct((x.shape[0], h, w, x.shape[3]), x.dtype)
    return np.asarray(jax_export.export(jax.jit(fn))(spec).call(x))


@pytest.mark.parametrize("fn", [models.reflect_pad, models.max_pool_ceil,
                                densenet.pad_to_stride, densenet.max_pool_3x3_s2],
                         ids=lambda f: f.__name__)
def test_symbolic_forms_equal_concrete_ones(fn):
    rng = np.random.default_rng(0)
    for h, w in [(7, 10), (16, 9), (2, 3)]:
        x = rng.standard_normal((2, h, w, 3)).astype(np.float32)
        np.testing.assert_array_equal(_symbolic_call(fn, x), np.asarray(jax.jit(fn)(x)))


def test_symbolic_pool_exports_to_a_runnable_onnx_graph():
    """densenet's 3x3/2 pool as ONNX (reduce_window's lowering is refused by ORT)."""
    from jax2onnx import to_onnx

    h, w = jax_export.symbolic_shape("h, w", constraints=("h >= 2", "w >= 2"))
    model = to_onnx(densenet.max_pool_3x3_s2,
                    [jax.ShapeDtypeStruct((1, h, w, 4), jnp.float32)])
    x = np.random.default_rng(1).standard_normal((1, 11, 6, 4)).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_array_equal(got, np.asarray(densenet.max_pool_3x3_s2(x)))
