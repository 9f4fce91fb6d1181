"""`python -m adain_jax.evaluate` end to end on a tiny set: 2 contents x 2 styles at 32 px.

Random VGG-19 (port layout) and DenseNet-121 weights are saved with save_params; the run
covers adain-vgg, adain-densenet and gatys (2 Adam steps). The adain-vgg row for the first
pair is recomputed with the PyTorch reference port (tests/torch_reference.py): its output,
clamped to [0, 1], then mse(f(o), f(c)) at relu4_1 and Eq. 13 with the port's calc_mean_std;
tolerance 1e-4 relative (float32 through ~30 convs). The contact sheet's size is computed
here from the stated layout, and its cells are checked against the input pixels (exact) and
the reference output (within one 8-bit level).
"""
import contextlib
import csv
import io
import os

import jax
import numpy as np
import pytest
import torch
from PIL import Image

from adain_jax import densenet, evaluation, weights
from adain_jax.cli import evaluate
from tests import torch_reference as ref
from tests.densenet_reference import randomized_densenet
from tests.test_densenet import decoder_params, torch_decoder
from tests.torch_reference import nchw, nhwc

SIZE = 32
SCALE = 2.5  # O(1) activations through the random VGG, as in test_transfer
TOL = 1e-4


def write_images(folder, seeds):
    folder.mkdir()
    names = []
    for i, seed in enumerate(seeds):
        rng = np.random.default_rng(seed)
        # smooth colour fields plus noise: some structure for the losses to see
        yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
        base = np.stack([np.sin(6 * xx + seed), np.cos(5 * yy - seed), xx * yy], -1)
        pixels = np.clip(127 + 90 * base + rng.integers(-30, 30, (SIZE, SIZE, 3)), 0, 255)
        name = f"{chr(ord('a') + i)}_{seed}.png"
        Image.fromarray(pixels.astype(np.uint8)).save(folder / name)
        names.append(name)
    return names


def load_rgb(path):
    return np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluate")
    vgg = ref.port_vgg_to_relu4_1(ref.randomize_(ref.make_port_vgg(), seed=1, scale=SCALE)).eval()
    decoder = ref.randomize_(ref.make_port_decoder(), seed=2, scale=SCALE).eval()
    vgg_params = {"encoder": ref.convs_from(vgg, ref.PORT_VGG_CONVS),
                  "decoder": ref.convs_from(decoder, ref.PORT_DECODER_CONVS)}
    weights.save_params(vgg_params, tmp / "vgg.safetensors")

    net = randomized_densenet(seed=0)  # the one test_densenet uses
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    torch.manual_seed(4)
    dense_params = {"encoder": densenet.densenet_from_torchvision(state),
                    "decoder": jax.tree.map(np.asarray, decoder_params(torch_decoder()))}
    weights.save_params(dense_params, tmp / "dense.safetensors")

    contents = write_images(tmp / "content", seeds=[10, 11, 12])  # 3 files, 2 used
    styles = write_images(tmp / "style", seeds=[20, 21])
    out = tmp / "out"
    return dict(tmp=tmp, vgg=vgg, decoder=decoder, contents=contents[:2], styles=styles, out=out,
                argv=["--content", str(tmp / "content"), "--style", str(tmp / "style"),
                      "--methods", "adain-vgg", f"adain-densenet:{tmp / 'dense.safetensors'}",
                      "gatys", "--vgg", str(tmp / "vgg.safetensors"), "--num-contents", "2",
                      "--num-styles", "5", "--size", str(SIZE), "--thumb", str(SIZE),
                      "--gatys-steps", "2", "--gatys-optimizer", "adam", "--out", str(out),
                      "-q"])


@pytest.fixture(scope="module")
def result(run):
    """(printed stdout, CSV rows) of one evaluate.main run."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert evaluate.main(run["argv"]) == 0
    with open(run["out"] / "results.csv", newline="") as f:
        return stdout.getvalue(), list(csv.reader(f))


METHODS = ["adain-vgg", "adain-densenet_dense", "gatys-meanstd"]


def test_table_of_means_and_spreads_is_printed(result):
    printed, (_, *body) = result
    table = printed.strip().splitlines()
    assert table[0].split() == ["method", "n", "content", "loss", "style", "loss",
                                "seconds/image"]
    assert [line.split()[0] for line in table[1:]] == METHODS
    for line, method in zip(table[1:], METHODS):
        cells = line.split()
        assert cells[1] == "4"
        for column, (mean_at, std_at) in zip((3, 4, 5), ((2, 4), (5, 7), (8, 10))):
            values = [float(r[column]) for r in body if r[0] == method]
            assert float(cells[mean_at]) == pytest.approx(np.mean(values), rel=1e-3)
            assert float(cells[std_at]) == pytest.approx(np.std(values, ddof=1), rel=0.06)


def test_csv_has_one_row_per_method_content_style(run, result):
    header, *body = result[1]
    assert tuple(header) == evaluation.CSV_COLUMNS
    assert len(body) == len(METHODS) * 2 * 2
    assert [(r[0], r[1], r[2]) for r in body] == [
        (m, c, s) for m in METHODS for c in run["contents"] for s in run["styles"]]
    for r in body:
        assert all(np.isfinite(float(v)) and float(v) >= 0 for v in r[3:]), r
        assert float(r[3]) > 0 and float(r[4]) > 0, r


@pytest.fixture(scope="module")
def reference(run):
    """The torch port's clamped output and losses for (second content, first style)."""
    content = load_rgb(run["tmp"] / "content" / run["contents"][1])[None]
    style = load_rgb(run["tmp"] / "style" / run["styles"][0])[None]
    net = ref.Net(run["vgg"], run["decoder"])
    with torch.no_grad():
        out = ref.style_transfer(run["vgg"], run["decoder"], nchw(content), nchw(style)).clamp(0, 1)
        f_out = net.encode_with_intermediate(out)
        f_style = net.encode_with_intermediate(nchw(style))
        loss_c = torch.nn.functional.mse_loss(f_out[-1], net.encode(nchw(content))).item()
        loss_s = sum(ref.Net.style_loss(a, b).item() for a, b in zip(f_out, f_style))
    return nhwc(out)[0], loss_c, loss_s


def test_losses_equal_the_reference_for_one_row(run, result, reference):
    _, *body = result[1]
    row = next(r for r in body if r[:3] == ["adain-vgg", run["contents"][1], run["styles"][0]])
    _, loss_c, loss_s = reference
    assert abs(float(row[3]) - loss_c) <= TOL * loss_c
    assert abs(float(row[4]) - loss_s) <= TOL * loss_s


def test_contact_sheets_have_the_stated_layout(run, result, reference):
    gap, n_c, n_s = evaluation.SHEET_GAP, 2, 2
    height = (n_c + 1) * SIZE + (n_c + 2) * gap
    width = (n_s + 1) * SIZE + (n_s + 2) * gap
    cell = lambda r, c: (slice(gap + r * (SIZE + gap), gap + r * (SIZE + gap) + SIZE),
                         slice(gap + c * (SIZE + gap), gap + c * (SIZE + gap) + SIZE))
    for method in METHODS:
        sheet = np.asarray(Image.open(run["out"] / f"sheet_{method}.png").convert("RGB"))
        assert sheet.shape == (height, width, 3), method
        assert np.all(sheet[cell(0, 0)] == 255) and np.all(sheet[:gap] == 255)
        for j, name in enumerate(run["styles"]):
            expected = np.asarray(Image.open(run["tmp"] / "style" / name).convert("RGB"))
            np.testing.assert_array_equal(sheet[cell(0, 1 + j)], expected)
        for i, name in enumerate(run["contents"]):
            expected = np.asarray(Image.open(run["tmp"] / "content" / name).convert("RGB"))
            np.testing.assert_array_equal(sheet[cell(1 + i, 0)], expected)
    sheet = np.asarray(Image.open(run["out"] / "sheet_adain-vgg.png").convert("RGB"))
    out, _, _ = reference
    expected = np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8)
    diff = np.abs(sheet[cell(2, 1)].astype(int) - expected.astype(int))
    assert diff.max() <= 1


def test_user_errors_are_one_line(run, tmp_path, capsys):
    argv = list(run["argv"])
    argv[argv.index("--content") + 1] = str(tmp_path / "missing")
    assert evaluate.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing: not a folder" in err
    argv = list(run["argv"])
    argv[argv.index("--methods") + 1 : argv.index("--vgg")] = ["adain-densenet"]
    assert evaluate.main(argv) == 1
    assert "adain-densenet:FILE" in capsys.readouterr().err
    argv[argv.index("--methods") + 1] = f"adain-vgg:{run['tmp'] / 'dense.safetensors'}"
    assert evaluate.main(argv) == 1
    assert "holds a densenet121 encoder" in capsys.readouterr().err
    argv[argv.index("--vgg") + 1] = str(tmp_path / "none.safetensors")
    assert evaluate.main(argv) == 1
    assert "none.safetensors: no weights file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--content", "x", "--style", "y", "--size", "8"])
    assert exit_info.value.code == 1
    assert "--size must be at least" in capsys.readouterr().err


def with_args(argv, **changes):
    """A copy of `argv` with each --flag's values replaced (flag=value or flag=[values])."""
    argv = list(argv)
    for flag, values in changes.items():
        flag = "--" + flag.replace("_", "-")
        start = argv.index(flag) + 1
        end = next((i for i in range(start, len(argv)) if argv[i].startswith("-")), len(argv))
        argv[start:end] = values if isinstance(values, list) else [values]
    return argv


def test_labels_tell_apart_two_runs_with_the_same_file_name(run, result, tmp_path, capsys):
    """Two runs' weights, both saved as adain.safetensors, labelled a and b (NAME=FILE):
    the labels name the CSV rows, the table and the contact sheets. Run a holds the
    adain-vgg weights, so its rows and sheet equal adain-vgg's from the same inputs
    (whose losses test_losses_equal_the_reference_for_one_row checks); b's decoder is
    halved, so its losses differ: a label bound to the wrong file shows."""
    params = weights.load_params(run["tmp"] / "vgg.safetensors")
    files = {}
    for name, scale in (("a", 1.0), ("b", 0.5)):
        decoder = jax.tree.map(lambda x: x * scale, params["decoder"])
        files[name] = weights.save_params({"encoder": params["encoder"], "decoder": decoder},
                                          tmp_path / name / "adain.safetensors")
    out = tmp_path / "out"
    argv = with_args(run["argv"], methods=[f"adain-vgg:{k}={v}" for k, v in files.items()],
                     out=str(out), num_contents="1", num_styles="1")  # one pair is enough
    capsys.readouterr()
    assert evaluate.main(argv) == 0, capsys.readouterr().err
    table = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in table[1:]] == ["a", "b"]
    with open(out / "results.csv", newline="") as f:
        _, *body = list(csv.reader(f))
    pair = [run["contents"][0], run["styles"][0]]
    assert [r[:3] for r in body] == [["a", *pair], ["b", *pair]]
    vgg_row = next(r for r in result[1] if r[:3] == ["adain-vgg", *pair])
    for r in body:
        for column in (3, 4):  # same weights, inputs and compiled function: equal
            same = float(r[column]) == pytest.approx(float(vgg_row[column]), rel=1e-6)
            assert same == (r[0] == "a"), (r, vgg_row)
    assert sorted(p.name for p in out.glob("sheet_*")) == ["sheet_a.png", "sheet_b.png"]
    cell = (slice(evaluation.SHEET_GAP + SIZE + evaluation.SHEET_GAP, None),) * 2  # row 1, col 1
    output = np.asarray(Image.open(out / "sheet_a.png"))[cell][:SIZE, :SIZE]
    vgg_sheet = np.asarray(Image.open(run["out"] / "sheet_adain-vgg.png"))
    np.testing.assert_array_equal(output, vgg_sheet[cell][:SIZE, :SIZE])

    # one line for labels that clash: two unlabelled adain.safetensors, or a label twice
    for methods, label in (([f"adain-vgg:{v}" for v in files.values()], "adain-vgg_adain"),
                           ([f"adain-vgg:x={v}" for v in files.values()], "x")):
        assert evaluate.main(with_args(argv, methods=methods)) == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"two methods are labelled {label};" in err, err


def test_unwritable_out_is_one_line_before_and_after_the_work(run, tmp_path, capsys):
    """--out below a file fails before the weights are read (the --vgg file is missing
    too, and that is not what is reported); results.csv made a folder fails at the end,
    after the table is printed."""
    (tmp_path / "notes.txt").write_text("not a folder")
    argv = with_args(run["argv"], out=str(tmp_path / "notes.txt" / "eval"),
                     vgg=str(tmp_path / "missing.safetensors"))
    assert evaluate.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"{evaluate.PROG}: error: {tmp_path / 'notes.txt' / 'eval'}: "
                   f"{tmp_path / 'notes.txt'} is a file, not a folder (--out)")

    (tmp_path / "out" / "results.csv").mkdir(parents=True)
    argv = with_args(run["argv"], out=str(tmp_path / "out"), methods="adain-vgg",
                     num_contents="1", num_styles="1")
    assert evaluate.main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines()[1].split()[0] == "adain-vgg"  # the table came first
    assert captured.err.strip() == (f"{evaluate.PROG}: error: {tmp_path / 'out' / 'results.csv'}"
                                    ": cannot write (Is a directory)")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_is_one_line(run, tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        for out in (folder, folder / "eval"):
            assert evaluate.main(with_args(run["argv"], out=str(out))) == 1
            err = capsys.readouterr().err.strip()
            assert err.count("\n") == 0 and f"{out}: " in err and "Permission denied" in err
    finally:
        folder.chmod(0o755)
