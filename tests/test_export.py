"""Export: exact text/npz/safetensors/ONNX files, NumPy-only inference, parity on the full MNIST test set."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mnistlab.checkpoint import load_checkpoint
from mnistlab.config import from_preset
from mnistlab.datasets import load
from mnistlab.errors import ConfigError, ExportError, MnistlabError
from mnistlab.export import core, export_run, read_weights_txt
from mnistlab.export.graph import describe
from mnistlab.export.numpy_infer import (
    NumpyModel,
    WeightsError,
    adaptive_max_pool2d,
    avg_pool2d,
    conv2d,
    from_keras,
    images_to_array,
    max_pool2d,
    parse_weights_txt,
    reshape,
    to_keras,
)
from mnistlab.export.onnx import onnx_bytes, onnx_probabilities
from mnistlab.export.txt import format_weights_txt
from mnistlab.models import Named, Reshape, lenet5, sequential
from mnistlab.runs import train_run
from mnistlab.tensors import images_to_tensor
from tests.helpers import ROOT, run_cli

PRESETS = ("mlp", "lenet5", "cnn")
TOL = 1e-5  # the parity target on probabilities


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory, session_home: Path, small_run: Path) -> dict[str, Path]:
    """A real run per preset: parity needs trained weights, not good ones. Tests only read these folders.

    mlp is the shared ``small_run`` (the "fast" preset, so it begins with the parameter-free Standardize
    layer); lenet5 is standardised too, so Standardize also feeds a convolution; cnn is narrow (width 8)
    to keep NumPy's share of the suite small, but has every layer type of the preset.
    """
    base = tmp_path_factory.mktemp("export-runs")
    configs = {
        "lenet5": from_preset(
            "lesson", model="lenet5", normalize=True, epochs=1, batch_size=64, limit_train=1000, limit_test=200
        ),
        "cnn": from_preset("best", width=8, augment="", epochs=1, limit_train=1000, limit_test=200),
    }
    out = {"mlp": small_run}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MNISTLAB_HOME", str(session_home))
        for name, cfg in configs.items():
            train_run(cfg, base / name, verbose=0)
            out[name] = base / name
    return out


@pytest.fixture(scope="session")
def mnist_test() -> tuple[np.ndarray, np.ndarray]:
    ds = load("mnist", progress=False)
    return np.asarray(ds.x_test), np.asarray(ds.y_test)


@pytest.fixture(scope="session")
def torch_probs(runs: dict[str, Path], mnist_test: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    x, _ = mnist_test
    return {name: core.torch_probabilities(load_checkpoint(run).model, x) for name, run in runs.items()}


def _assert_parity(ref: np.ndarray, probs: np.ndarray) -> None:
    assert probs.shape == ref.shape
    same = int((probs.argmax(1) == ref.argmax(1)).sum())
    assert same == len(ref), f"predicted class differs on {len(ref) - same} of {len(ref)} images"
    assert float(np.abs(probs - ref).max()) <= TOL


# -- the text file: exact, readable back, in the lesson's layout on request ------------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_txt_reads_back_bit_exact_pytorch_layout(runs, preset, tmp_path):
    path = export_run(runs[preset], "txt", tmp_path / "w.txt", check=False, verbose=0)
    w = read_weights_txt(path)
    state = load_checkpoint(runs[preset]).model.state_dict()
    needed = [k for k in state if not k.endswith("num_batches_tracked")]
    assert list(w.tensors) == needed  # state-dict names, in state-dict order, buffers included
    for k in needed:
        assert w.tensors[k].shape == tuple(state[k].shape)
        np.testing.assert_array_equal(_bits(w.tensors[k]), _bits(state[k].numpy()))
        is_param = not k.endswith(("running_mean", "running_var", ".mean", ".std"))
        assert w.trainable[k] is is_param


@pytest.mark.parametrize("preset", PRESETS)
def test_txt_reads_back_bit_exact_keras_layout(runs, preset, tmp_path):
    path = export_run(runs[preset], "txt", tmp_path / "k.txt", layout="keras", check=False, verbose=0)
    w = read_weights_txt(path)
    g = describe(load_checkpoint(runs[preset]).model, layout="keras")
    assert list(w.tensors) == [t.name for t in g.tensors]
    for t in g.tensors:
        np.testing.assert_array_equal(_bits(w.tensors[t.name]), _bits(t.array))
        assert w.trainable[t.name] is t.trainable


def test_keras_layout_names_and_shapes_like_the_lesson(runs, tmp_path):
    text = export_run(runs["mlp"], "txt", tmp_path / "k.txt", layout="keras", check=False, verbose=0).read_text()
    # The lesson's model.trainable_variables: dense/kernel (784, 128), dense/bias (128,), dense_1/...
    for name, shape in [("dense/kernel", "(784, 128)"), ("dense/bias", "(128,)"), ("dense_1/kernel", "(128, 10)"),
                        ("dense_1/bias", "(10,)")]:  # fmt: skip
        assert f"name: {name}\nshape: {shape}\ntrainable: true\n" in text
    assert "name: standardize/mean\nshape: ()\ntrainable: false\n" in text
    w = read_weights_txt(tmp_path / "k.txt")
    state = load_checkpoint(runs["mlp"]).model.state_dict()
    # Keras kernels are PyTorch weights transposed: checked here against the checkpoint, not the exporter.
    np.testing.assert_array_equal(w.tensors["dense/kernel"], state["2.weight"].numpy().T)
    np.testing.assert_array_equal(w.tensors["dense_1/kernel"], state["4.weight"].numpy().T)


def test_txt_header_states_layout_architecture_and_preprocessing(runs, tmp_path):
    mlp = export_run(runs["mlp"], "txt", tmp_path / "m.txt", check=False, verbose=0).read_text()
    head = [line for line in mlp.splitlines() if line.startswith("#")]
    header = "\n".join(head)
    assert head[0] == "# mnistlab weights, format 1"
    assert "layout: pytorch" in header and "Linear weight is (out, in)" in header
    assert "x / 255" in header and "(N, 1, 28, 28)" in header
    assert "standardizes: (x - " in header  # the Standardize layer's constants, spelled out
    assert "0.mean () non-trainable" in header
    assert "linear(in_features=784, out_features=128)" in header
    assert "0 1 2 3 4 5 6 7 8 9" in header
    meta = json.loads(next(line for line in head if line.startswith("# meta: "))[len("# meta: ") :])
    assert meta["preprocessing"]["scale"] == "x / 255" and meta["preprocessing"]["standardize"]["layer"] == "0"
    assert [layer["op"] for layer in meta["architecture"]] == ["standardize", "flatten", "linear", "relu", "linear"]
    cnn = export_run(runs["cnn"], "txt", tmp_path / "c.txt", layout="keras", check=False, verbose=0).read_text()
    assert "layout: keras" in cnn and "(N, 28, 28, 1)" in cnn
    assert "batchnorm2d(num_features=8, eps=1e-05)" in cnn
    assert "batch_normalization/moving_variance (8,) non-trainable" in cnn
    assert "name: batch_normalization/moving_mean\nshape: (8,)\ntrainable: false\n" in cnn


def test_values_use_full_float32_precision():
    # Every float32 written with %.9g reads back to the same bits (the lesson's print keeps ~8 digits).
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(200_000) * 10.0 ** rng.integers(-38, 38, 200_000)).astype(np.float32)
    x[:4] = [np.float32(0.1), np.nextafter(np.float32(1), np.float32(2)), np.float32(-0.0), np.float32(3.4e38)]
    text = "\n".join(f"{v:.9g}" for v in x.tolist())
    np.testing.assert_array_equal(_bits(np.array(text.split(), dtype=np.float32)), _bits(x))


# -- parity on the full MNIST test set --------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_numpy_from_txt_matches_pytorch_on_all_10000(runs, preset, mnist_test, torch_probs, tmp_path):
    x, _ = mnist_test
    assert len(x) == 10_000
    path = export_run(runs[preset], "txt", tmp_path / "w.txt", check=False, verbose=0)
    _assert_parity(torch_probs[preset], NumpyModel.from_file(path).predict(x))


@pytest.mark.parametrize("preset", PRESETS)
def test_onnxruntime_matches_pytorch_on_all_10000(runs, preset, mnist_test, torch_probs, tmp_path):
    import onnx

    x, _ = mnist_test
    path = export_run(runs[preset], "onnx", tmp_path / "m.onnx", check=False, verbose=0)
    data = path.read_bytes()
    _assert_parity(torch_probs[preset], onnx_probabilities(data, images_to_array(x)))
    # Dynamic batch: one image and an odd batch give the same numbers as the big batch (eval-mode BN).
    for n in (1, 7):
        np.testing.assert_allclose(onnx_probabilities(data, images_to_array(x[:n])), torch_probs[preset][:n], atol=TOL)
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["class_names"]) == [str(i) for i in range(10)]
    assert props["input_layout"].startswith("NCHW float32, shape (batch, 1, 28, 28)")
    assert json.loads(props["mnistlab"])["model"] == preset
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert not any(node.op_type == "Dropout" for node in proto.graph.node)


@pytest.mark.slow
def test_full_width_cnn_parity_on_all_10000(tmp_path, session_home, mnist_test, monkeypatch):
    # The "best" preset's real network (width 24), NumPy from txt and onnxruntime, full test set.
    monkeypatch.setenv("MNISTLAB_HOME", str(session_home))
    run = tmp_path / "cnn32"
    train_run(from_preset("best", augment="", epochs=1, limit_train=1000, limit_test=200), run, verbose=0)
    x, _ = mnist_test
    ref = core.torch_probabilities(load_checkpoint(run).model, x)
    _assert_parity(ref, NumpyModel.from_file(export_run(run, "txt", check=False, verbose=0)).predict(x))
    onnx_path = export_run(run, "onnx", check=False, verbose=0)
    _assert_parity(ref, onnx_probabilities(onnx_path.read_bytes(), images_to_array(x)))


@pytest.mark.parametrize(("preset", "fmt", "layout"), [
    ("mlp", "npz", "keras"), ("lenet5", "txt", "keras"), ("lenet5", "npz", "pytorch"),
    ("lenet5", "safetensors", "keras"), ("cnn", "txt", "keras"), ("cnn", "safetensors", "pytorch"),
])  # fmt: skip
def test_other_formats_and_layouts_match_pytorch(runs, preset, fmt, layout, mnist_test, torch_probs, tmp_path):
    # A subset of the test images: the full set is covered above; this checks the readers and layouts.
    x, _ = mnist_test
    path = export_run(runs[preset], fmt, tmp_path, layout=layout, check=False, verbose=0)
    assert path.name == f"weights{'-keras' if layout == 'keras' else ''}.{fmt}"
    _assert_parity(torch_probs[preset][:1000], NumpyModel.from_file(path).predict(x[:1000]))


def test_npz_and_safetensors_carry_the_same_tensors_and_metadata(runs, tmp_path):
    from safetensors.numpy import load_file

    txt = read_weights_txt(export_run(runs["cnn"], "txt", tmp_path, check=False, verbose=0))
    npz_path = export_run(runs["cnn"], "npz", tmp_path, check=False, verbose=0)
    st_path = export_run(runs["cnn"], "safetensors", tmp_path, check=False, verbose=0)
    with np.load(npz_path, allow_pickle=False) as z:
        meta = json.loads(str(z["__mnistlab__"]))
        npz = {k: z[k] for k in z.files if k != "__mnistlab__"}
    st = load_file(str(st_path))  # the official reader agrees with numpy_infer's own
    for name, value in txt.tensors.items():
        np.testing.assert_array_equal(_bits(npz[name]), _bits(value))
        np.testing.assert_array_equal(_bits(st[name]), _bits(value))
    assert meta["class_names"] == txt.meta["class_names"] and meta["architecture"] == txt.meta["architecture"]
    assert meta["preprocessing"]["scale"] == "x / 255"
    assert {t["name"]: t["trainable"] for t in meta["tensors"]} == txt.trainable


def test_export_runs_the_parity_check_and_prints_it(runs, tmp_path, capsys):
    path = export_run(runs["lenet5"], "onnx", tmp_path / "m.onnx", check_images=300)
    out = capsys.readouterr().out
    assert "parity (onnxruntime vs PyTorch) on 300 mnist test images: same class 300/300" in out and "OK" in out
    assert path.is_file()


def test_a_failing_parity_check_writes_nothing(runs, tmp_path, monkeypatch, capsys):
    # Demand bit-identical probabilities, which NumPy's different summation order cannot meet.
    monkeypatch.setattr(core, "PROB_TOLERANCE", 0.0)
    with pytest.raises(ExportError, match="not written: parity .* FAILED"):
        export_run(runs["mlp"], "txt", tmp_path / "w.txt", check_images=200)
    assert list(tmp_path.iterdir()) == []


# -- NumPy only: no torch, not even mnistlab ------------------------------------------------------


def test_numpy_infer_runs_every_preset_with_torch_blocked(runs, mnist_test, torch_probs, tmp_path):
    x, _ = mnist_test
    np.save(tmp_path / "images.npy", x[:500])
    files = {}
    for preset in PRESETS:
        files[preset] = [str(export_run(runs[preset], f, tmp_path / f"{preset}.{f}", check=False, verbose=0))
                         for f in ("txt", "npz")]  # fmt: skip
        np.save(tmp_path / f"{preset}.ref.npy", torch_probs[preset][:500])
    script = f"""
import sys
sys.modules["torch"] = None  # any import of torch now raises ImportError
import numpy as np
from mnistlab.export.numpy_infer import NumpyModel
from mnistlab.export import read_weights_txt
x = np.load({str(tmp_path / "images.npy")!r})
worst = 0.0
for preset, paths in {files!r}.items():
    ref = np.load({str(tmp_path)!r} + "/" + preset + ".ref.npy")
    for p in paths:
        probs = NumpyModel.from_file(p).predict(x)
        assert (probs.argmax(1) == ref.argmax(1)).all(), p
        worst = max(worst, float(np.abs(probs - ref).max()))
loaded = {{m.split(".")[0] for m in sys.modules if sys.modules[m] is not None and not m.startswith("__")}}
third_party = sorted(loaded - set(sys.stdlib_module_names) - {{"numpy", "mnistlab", "_distutils_hack"}})
print(worst, third_party)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    worst, third_party = proc.stdout.split(" ", 1)
    assert float(worst) <= TOL
    assert third_party.strip() == "[]", f"numpy_infer imported {third_party}"


def test_numpy_infer_copied_alone_predicts_a_png(runs, mnist_test, torch_probs, tmp_path):
    from PIL import Image

    x, _ = mnist_test
    weights = export_run(runs["cnn"], "txt", tmp_path / "weights.txt", layout="keras", check=False, verbose=0)
    for i in range(3):
        Image.fromarray(x[i]).save(tmp_path / f"digit{i}.png")
    alone = tmp_path / "elsewhere" / "numpy_infer.py"
    alone.parent.mkdir()
    shutil.copy(ROOT / "mnistlab" / "export" / "numpy_infer.py", alone)
    runner = (
        "import runpy, sys; sys.modules['torch'] = None; sys.modules['mnistlab'] = None; "
        f"sys.argv = ['numpy_infer.py', *{[str(weights)] + [str(tmp_path / f'digit{i}.png') for i in range(3)]!r}]; "
        "runpy.run_path('numpy_infer.py', run_name='__main__')"
    )
    proc = subprocess.run([sys.executable, "-c", runner], cwd=alone.parent, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [line.split(": ")[1].split()[0] for line in lines] == [str(k) for k in torch_probs["cnn"][:3].argmax(1)]
    bad = subprocess.run([sys.executable, "-c", runner.replace(str(weights), str(tmp_path / "nope.txt"))],
                         cwd=alone.parent, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert (
        bad.returncode == 2
        and bad.stderr.strip() == f"numpy_infer: error: {tmp_path / 'nope.txt'}: no such weights file"
    )


def test_numpy_preprocessing_equals_the_torch_module():
    rng = np.random.default_rng(1)
    for shape in [(5, 28, 28), (5, 32, 32, 3), (28, 28)]:
        x = rng.integers(0, 256, shape, dtype=np.uint8)
        np.testing.assert_array_equal(images_to_array(x), images_to_tensor(x).numpy())


# -- the NumPy operations, against torch.nn.functional ---------------------------------------------


@pytest.mark.parametrize(("stride", "padding", "kernel"), [(1, 0, 3), (2, 1, 3), ((1, 2), (2, 0), 5), (3, 2, 4)])
def test_conv2d_matches_torch(stride, padding, kernel):
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(4, 3, 13, 11, generator=g), torch.randn(5, 3, kernel, kernel, generator=g), torch.randn(5)
    ref = torch.nn.functional.conv2d(x, w, b, stride=stride, padding=padding).numpy()
    got = conv2d(x.numpy().transpose(0, 2, 3, 1), w.numpy(), b.numpy(), stride, padding).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("kernel", "stride", "padding"), [(2, 2, 0), (3, 2, 1), (3, 1, 0), ((2, 3), (1, 2), (1, 1))])
def test_max_pool2d_matches_torch(kernel, stride, padding):
    x = torch.randn(2, 3, 11, 9)
    ref = torch.nn.functional.max_pool2d(x, kernel, stride, padding).numpy()
    got = max_pool2d(x.numpy().transpose(0, 2, 3, 1), kernel, stride, padding).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("size", [1, 3, (2, 4)])
def test_adaptive_max_pool2d_matches_torch(size):
    x = torch.randn(2, 3, 7, 10)
    ref = torch.nn.functional.adaptive_max_pool2d(x, size).numpy()
    got = adaptive_max_pool2d(x.numpy().transpose(0, 2, 3, 1), size).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("include_pad", [False, True])
@pytest.mark.parametrize(("kernel", "stride", "padding"), [(2, 2, 0), (3, 1, 1), (3, 2, 1), ((2, 3), (1, 2), (1, 1))])
def test_avg_pool2d_matches_torch(kernel, stride, padding, include_pad):
    x = torch.randn(2, 3, 11, 9)
    ref = torch.nn.functional.avg_pool2d(x, kernel, stride, padding, count_include_pad=include_pad).numpy()
    got = avg_pool2d(x.numpy().transpose(0, 2, 3, 1), kernel, stride, padding, include_pad).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


# (input shape, spec): plain reshapes, and Keras's channels-last kind from images, from a Flatten of
# images, and into images; the NumPy runner holds images channels-last, so each case tests a conversion.
RESHAPES = [
    ((1, 28, 28), {"shape": [784]}),
    ((784,), {"shape": [1, 28, 28]}),
    ((3, 4, 5), {"shape": [5, 4, 3]}),
    ((1, 28, 28), {"shape": [2, 28, 14], "channels_last": True}),
    ((3, 4, 5), {"shape": [60], "channels_last": True, "source": [3, 4, 5]}),
    ((60,), {"shape": [3, 4, 5], "channels_last": True, "source": [3, 4, 5]}),
    ((3, 4, 5), {"shape": [2, 5, 6], "channels_last": True, "source": [3, 4, 5]}),
    ((60,), {"shape": [4, 3, 5], "channels_last": True}),
]


@pytest.mark.parametrize(("in_shape", "spec"), RESHAPES)
def test_numpy_reshape_matches_the_torch_module(in_shape, spec):
    x = torch.arange(2 * math.prod(in_shape), dtype=torch.float32).reshape(2, *in_shape)
    module = Reshape(spec["shape"], spec.get("channels_last", False), spec.get("source"))
    ref = module(x).numpy()
    inside = x.numpy().transpose(0, 2, 3, 1) if x.ndim == 4 else x.numpy()  # the runner's channels-last images
    got = reshape(inside, spec)
    np.testing.assert_array_equal(got.transpose(0, 3, 1, 2) if got.ndim == 4 else got, ref)


def test_keras_reshape_is_keras_semantics():
    # Keras: (H, W, C) images reshaped channels-last; mnistlab's module does the same on (C, H, W) tensors.
    keras_in = np.arange(2 * 4 * 5 * 3, dtype=np.float32).reshape(2, 4, 5, 3)
    keras_out = keras_in.reshape(2, 5, 6, 2)  # Keras's Reshape((5, 6, 2)) is NumPy's reshape of NHWC data
    module = Reshape([2, 5, 6], channels_last=True, source=[3, 4, 5])
    got = module(torch.from_numpy(keras_in.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_array_equal(got, keras_out.transpose(0, 3, 1, 2))


def test_every_imported_layer_exports_and_runs_in_numpy_and_onnxruntime(tmp_path):
    # A sequential model with each op the importer makes, random weights and statistics; parity both ways.
    layers = [
        {"op": "reshape", "shape": [2, 28, 14], "channels_last": True},
        {"op": "channel_standardize", "channels": 2},
        {"op": "conv2d", "in_channels": 2, "out_channels": 4, "kernel_size": [3, 3], "stride": [1, 1],
         "padding": [1, 1], "bias": False},
        {"op": "batchnorm2d", "num_features": 4, "eps": 1e-3},
        {"op": "avgpool2d", "kernel_size": [3, 3], "stride": [2, 2], "padding": [1, 1]},
        {"op": "flatten"},
        {"op": "reshape", "shape": [4, 7, 14], "channels_last": True, "source": [4, 14, 7]},
        {"op": "maxpool2d", "kernel_size": [2, 2], "stride": [2, 2]},
        {"op": "reshape", "shape": [84], "channels_last": True, "source": [4, 3, 7]},
        {"op": "linear", "in_features": 84, "out_features": 12},
        {"op": "batchnorm1d", "num_features": 12, "eps": 1e-3},
        {"op": "relu"},
        {"op": "linear", "in_features": 12, "out_features": 10},
    ]  # fmt: skip
    torch.manual_seed(0)
    model = sequential(layers)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if not name.endswith("num_batches_tracked"):
                buf.copy_(torch.rand_like(buf) + 0.5)  # positive: they include std and running_var
    model.eval()
    x = np.random.default_rng(0).integers(0, 256, (16, 28, 28), dtype=np.uint8)
    ref = core.torch_probabilities(model, x)
    meta = {"format": "mnistlab-weights", "version": 1, "input": {"chw": [1, 28, 28]}}
    for layout in ("pytorch", "keras"):
        g = describe(model, layout=layout)
        assert [a["op"] for a in g.architecture] == [d["op"] for d in layers]
        text = format_weights_txt(g, {**meta, "layout": layout, "architecture": g.architecture})
        np.testing.assert_allclose(NumpyModel(parse_weights_txt(text)).predict(x), ref, atol=TOL)
    g = describe(model)
    data = onnx_bytes(model, (1, 28, 28), {**meta, "layout": "pytorch", "architecture": g.architecture})
    np.testing.assert_allclose(onnx_probabilities(data, images_to_array(x)), ref, atol=TOL)


def test_an_unsupported_layer_is_refused_in_one_line_naming_it():
    model = Named("custom", torch.nn.Flatten(), torch.nn.Linear(784, 10), torch.nn.Sigmoid())
    with pytest.raises(ExportError) as e:
        describe(model)
    assert str(e.value).startswith("cannot export a Sigmoid layer (supported: Standardize, ")
    assert "AvgPool2d" in str(e.value) and "\n" not in str(e.value)


def test_keras_dense_after_flatten_reads_channels_last_inputs():
    # What makes the keras layout real: Keras flattens (H, W, C), so kernel rows must follow that order.
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3, 5, 6)).astype(np.float32)
    w, b = rng.standard_normal((7, 90)).astype(np.float32), rng.standard_normal(7).astype(np.float32)
    k = to_keras("linear", {"weight": w, "bias": b}, flatten_from=(3, 5, 6))
    assert k["kernel"].shape == (90, 7)
    keras_way = x.transpose(0, 2, 3, 1).reshape(4, -1) @ k["kernel"] + k["bias"]
    np.testing.assert_allclose(keras_way, x.reshape(4, -1) @ w.T + b, rtol=1e-5, atol=1e-5)
    back = from_keras("linear", k, flatten_from=(3, 5, 6))
    np.testing.assert_array_equal(back["weight"], w)
    conv = rng.standard_normal((8, 3, 5, 4)).astype(np.float32)
    assert to_keras("conv2d", {"weight": conv})["kernel"].shape == (5, 4, 3, 8)
    np.testing.assert_array_equal(from_keras("conv2d", to_keras("conv2d", {"weight": conv}))["weight"], conv)


@pytest.mark.parametrize("layout", ["pytorch", "keras"])
def test_rgb_lenet_round_trips_through_text(layout):
    # Colour input (C=3) is where the keras Flatten order differs from PyTorch's: run it both ways.
    torch.manual_seed(0)
    model = lenet5(in_shape=(3, 32, 32)).eval()
    g = describe(model, layout=layout)
    meta = {"format": "mnistlab-weights", "version": 1, "layout": layout, "architecture": g.architecture,
            "input": {"chw": [3, 32, 32]}}  # fmt: skip
    net = NumpyModel(parse_weights_txt(format_weights_txt(g, meta)))
    x = np.random.default_rng(3).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        ref = torch.softmax(model(images_to_tensor(x)), 1).numpy()
    _assert_parity(ref, net.predict(x))


# -- bad input: one clear line, nothing written ------------------------------------------------------


def test_cli_exports_and_reports(runs, tmp_path):
    proc = run_cli("export", str(runs["mlp"]), "--format", "npz", "-o", str(tmp_path), "--check-images", "200")
    assert proc.returncode == 0, proc.stderr
    assert "parity (NumPy from npz vs PyTorch) on 200 mnist test images: same class 200/200" in proc.stdout
    assert f"wrote {tmp_path / 'weights.npz'}" in proc.stdout


def test_default_output_is_inside_the_run(runs):
    path = export_run(runs["lenet5"], "txt", layout="keras", which="last", check=False, verbose=0)
    assert path == runs["lenet5"] / "weights-keras.txt" and path.is_file()
    path.unlink()
    path = export_run(runs["lenet5"] / "best.safetensors", "onnx", check=False, verbose=0)
    assert path == runs["lenet5"] / "model.onnx" and path.is_file()
    path.unlink()


def test_an_export_never_overwrites_the_run(runs, tmp_path):
    run = runs["mlp"]
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    for target in (run / "best.safetensors", run / "last.safetensors", run / "config.json"):
        with pytest.raises(ExportError, match="refusing to overwrite a run's own file"):
            export_run(run, "safetensors", target, check=False, verbose=0)
    # A checkpoint copied elsewhere under another name is recognised by its content.
    copy = tmp_path / "model.safetensors"
    shutil.copy(run / "best.safetensors", copy)
    with pytest.raises(ExportError, match="refusing"):
        export_run(run, "safetensors", copy, check=False, verbose=0)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_cli_bad_input_in_a_real_process(runs, tmp_path):
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    line = _one_error_line(run_cli("export", str(not_a_run)))
    assert line == f"mnistlab: error: {not_a_run}: not a run folder (no best.safetensors or last.safetensors inside)"
    assert list(not_a_run.iterdir()) == []


def test_cli_bad_input(runs, tmp_path, capsys):
    from mnistlab.cli import main

    def error_line(*args: str) -> str:
        code = main(["export", *args])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, err
        return err[0]

    assert "no such run folder" in error_line(str(tmp_path / "missing"))
    with pytest.raises(SystemExit) as e:
        main(["export", str(runs["mlp"]), "--format", "h5"])
    assert e.value.code == 2 and "invalid choice: 'h5'" in capsys.readouterr().err
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    line = error_line(str(runs["mlp"]), "-o", str(blocker / "w.txt"), "--no-check")
    assert line.startswith(f"mnistlab: error: {blocker / 'w.txt'}: cannot write the export")
    assert "always takes NCHW input" in error_line(str(runs["mlp"]), "--format", "onnx", "--layout", "keras")
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]


def test_library_bad_input(runs, tmp_path):
    with pytest.raises(ConfigError, match="unknown export format 'h5'"):
        export_run(runs["mlp"], "h5")
    with pytest.raises(ConfigError, match="unknown layout"):
        export_run(runs["mlp"], "txt", layout="tf")
    with pytest.raises(ConfigError, match="check_images must be ≥ 1"):
        export_run(runs["mlp"], "txt", check_images=0)
    with pytest.raises(ExportError, match="cannot write"):
        export_run(runs["mlp"], "txt", "/proc/weights.txt", check=False, verbose=0)


@pytest.fixture(scope="module")
def mlp_txt(runs, tmp_path_factory) -> list[str]:
    path = export_run(runs["mlp"], "txt", tmp_path_factory.mktemp("txt") / "w.txt", check=False, verbose=0)
    return path.read_text().splitlines()


def _edited(lines: list[str], tmp_path: Path, edit) -> Path:
    lines = list(lines)
    edit(lines)
    p = tmp_path / "edited.txt"
    p.write_text("\n".join(lines) + "\n")
    return p


def _line_of(lines: list[str], text: str) -> int:
    return lines.index(text) + 1  # 1-based, as in the messages


def test_hand_edited_txt_errors_name_tensor_and_line(mlp_txt, tmp_path):
    lines = mlp_txt
    w_start = _line_of(lines, "name: 2.weight")
    row3 = w_start + 3 + 2  # name, shape, trainable, then rows 1, 2, 3

    def drop_value(ls):
        ls[row3 - 1] = ls[row3 - 1].rsplit(" ", 1)[0]

    with pytest.raises(WeightsError) as e:
        read_weights_txt(_edited(lines, tmp_path, drop_value))
    assert str(e.value) == (
        f"{tmp_path / 'edited.txt'}, line {row3}: tensor '2.weight' shape (128, 784): row 3 of 128 has 783 values, "
        "expected 784"
    )
    assert isinstance(e.value, MnistlabError)  # so the CLI prints it as one line

    b_shape = _line_of(lines, "name: 2.bias") + 1

    def wrong_shape(ls):
        ls[b_shape - 1] = "shape: (127,)"

    with pytest.raises(WeightsError, match=rf"line {b_shape + 2}: tensor '2.bias' shape \(127,\): row 1 of 1 has 128"):
        read_weights_txt(_edited(lines, tmp_path, wrong_shape))

    def bad_shape(ls):
        ls[b_shape - 1] = "shape: 128"

    with pytest.raises(WeightsError, match=rf"line {b_shape}: tensor '2.bias': shape must look like"):
        read_weights_txt(_edited(lines, tmp_path, bad_shape))

    def not_a_number(ls):
        ls[row3 - 1] = "abc " + ls[row3 - 1].split(" ", 1)[1]

    with pytest.raises(WeightsError, match=rf"line {row3}: tensor '2.weight': 'abc' is not a number"):
        read_weights_txt(_edited(lines, tmp_path, not_a_number))

    def drop_row(ls):
        del ls[row3 - 1]

    with pytest.raises(WeightsError, match=r"tensor '2.weight' \(line \d+\) shape \(128, 784\) needs 128 rows of 784 "
                                           r"values, found only 127 before 'name: 2.bias'"):  # fmt: skip
        read_weights_txt(_edited(lines, tmp_path, drop_row))

    def truncate(ls):
        del ls[row3:]

    with pytest.raises(WeightsError, match="tensor '2.weight' .* but the file ends after 3 rows"):
        read_weights_txt(_edited(lines, tmp_path, truncate))

    def extra_row(ls):
        ls.insert(b_shape + 2, ls[b_shape + 1])  # the bias row, twice

    with pytest.raises(WeightsError, match=rf"line {b_shape + 3}: tensor '2.bias' \(line {b_shape - 1}\) has more rows "
                                           r"than its shape \(128,\) holds"):  # fmt: skip
        read_weights_txt(_edited(lines, tmp_path, extra_row))

    def duplicate(ls):
        ls[_line_of(ls, "name: 4.bias") - 1] = "name: 2.bias"

    with pytest.raises(WeightsError, match=r"tensor '2.bias' appears twice \(first at line"):
        read_weights_txt(_edited(lines, tmp_path, duplicate))

    def no_meta(ls):
        ls[:] = [s for s in ls if not s.startswith("# meta:")]

    with pytest.raises(WeightsError, match="no '# meta: {...}' header line"):
        read_weights_txt(_edited(lines, tmp_path, no_meta))

    with pytest.raises(WeightsError, match="line 1: not a mnistlab weights file"):
        read_weights_txt(_edited(lines, tmp_path, lambda ls: ls.pop(0)))


def test_consistent_but_wrong_shape_is_caught_when_building_the_network(mlp_txt, tmp_path):
    # Shape and rows edited together still read, but the network refuses it, naming tensor and line.
    lines = mlp_txt
    start = _line_of(lines, "name: 4.bias")

    def shorter(ls):
        ls[start] = "shape: (9,)"
        ls[start + 2] = ls[start + 2].rsplit(" ", 1)[0]

    p = _edited(lines, tmp_path, shorter)
    w = read_weights_txt(p)
    assert w.tensors["4.bias"].shape == (9,)
    with pytest.raises(WeightsError) as e:
        NumpyModel(w)
    assert str(e.value) == f"{p}, line {start}: tensor '4.bias' has shape (9,), but layer '4' (linear) needs (10,)"


def test_numpy_infer_cli_reports_a_bad_file_in_one_line(mlp_txt, tmp_path):
    p = _edited(mlp_txt, tmp_path, lambda ls: ls.__setitem__(_line_of(ls, "name: 2.bias") + 1, "trainable: maybe"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "mnistlab.export.numpy_infer", str(p), "--npy", str(p)],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    line = _one_error_line(proc)
    assert (
        line.startswith(f"numpy_infer: error: {p}, line ")
        and "tensor '2.bias': trainable must be true or false" in line
    )


@pytest.mark.parametrize("size", [1, 2, 3])
def test_numpy_adaptive_max_pool_matches_torch(size: int) -> None:
    # No preset uses AdaptiveMaxPool2d any more (the cnn has a flatten head), but user models may.
    from mnistlab.export.numpy_infer import adaptive_max_pool2d

    x = torch.randn(2, 5, 7, 6)
    want = torch.nn.AdaptiveMaxPool2d(size)(x).permute(0, 2, 3, 1).numpy()
    got = adaptive_max_pool2d(x.permute(0, 2, 3, 1).numpy(), size)
    np.testing.assert_array_equal(got, want)


def test_layout_names_agree_with_the_standalone_runner() -> None:
    from mnistlab.export import formats, numpy_infer

    assert formats.LAYOUTS == numpy_infer.LAYOUTS
