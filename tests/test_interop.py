"""Keras ↔ mnistlab: real Keras 3.15 files (``tests/fixtures/keras``, written by ``scripts/make_keras_fixtures.py``
with TensorFlow 2.21; the tests need no TensorFlow), imported and compared with Keras's own probabilities;
the round trip mnistlab → Keras → mnistlab; ``train --init-from`` from every format."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from mnistlab.checkpoint import load_checkpoint
from mnistlab.cli import main
from mnistlab.datasets import mnist
from mnistlab.errors import CheckpointError
from mnistlab.export import FORMATS, NumpyModel, export_run, read_weights_txt
from mnistlab.export.numpy_infer import images_to_array, read_weights_safetensors
from mnistlab.export.onnx import onnx_probabilities
from mnistlab.interop import import_keras, load_init_state, sniff
from mnistlab.models import from_spec, mlp
from tests.conftest import ROOT, run_cli

FIX = ROOT / "tests" / "fixtures" / "keras"
# fixture → (architecture file, key in probabilities.npz, the mnistlab model it becomes)
CASES = {
    "mlp.keras": (None, "mlp", "mlp"),
    "mlp.weights.h5": (None, "mlp", "mlp"),
    "mlp_weights.txt": (None, "mlp", "mlp"),
    "cnn.keras": (None, "cnn", "sequential"),
    "cnn.weights.h5": ("cnn.json", "cnn", "sequential"),
    "zoo.keras": (None, "zoo", "sequential"),
    "shapes.keras": (None, "shapes", "sequential"),
    "roundtrip_mlp.keras": (None, "roundtrip_mlp", "mlp"),
    "roundtrip_cnn.keras": (None, "roundtrip_cnn", "sequential"),
}


@pytest.fixture(scope="module")
def test_images() -> tuple[np.ndarray, np.ndarray]:
    (_, _), (x, y) = mnist.load_data()
    return x[:1000], y[:1000]


@pytest.fixture(scope="module")
def keras_probs() -> dict[str, np.ndarray]:
    with np.load(FIX / "probabilities.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every fixture imported once into its own run folder."""
    root = tmp_path_factory.mktemp("imported")
    runs = {}
    for name, (arch, _, _) in CASES.items():
        runs[name] = import_keras(FIX / name, root / name, model=FIX / arch if arch else None, verbose=0)
    return runs


def test_fixtures_are_small_and_made_by_the_script() -> None:
    total = sum(p.stat().st_size for p in FIX.iterdir())
    assert total < 2_000_000, total
    script = (ROOT / "scripts" / "make_keras_fixtures.py").read_text()
    assert all(name.split(".")[0].replace("_weights", "") in script for name in CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_imported_model_predicts_what_keras_predicts(name, imported, test_images, keras_probs) -> None:
    _, key, kind = CASES[name]
    loaded = load_checkpoint(imported[name])
    assert loaded.spec["name"] == kind
    probs = loaded.predict(test_images[0])
    ref = keras_probs[key]
    assert (probs.argmax(1) == ref.argmax(1)).all()
    assert np.abs(probs - ref).max() <= 1e-5
    assert (ref.argmax(1) == test_images[1]).mean() > 0.6  # the models did learn something (a short training)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_round_trip_through_keras_is_bit_identical(name, imported) -> None:
    # mnistlab run → `export --layout keras` (npz) → Keras layers (Normalization, Conv2D, BatchNormalization,
    # Dense) → model.save → import-keras: every tensor comes back bit for bit, under the same names.
    original = read_weights_safetensors(FIX / f"roundtrip_{name}-torch.safetensors").tensors
    state = load_checkpoint(imported[f"roundtrip_{name}.keras"]).model.state_dict()
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert set(state) == set(original)
    for k, v in original.items():
        assert np.array_equal(state[k].numpy(), v), k
        assert state[k].numpy().tobytes() == v.astype(np.float32).tobytes(), k


def test_lesson_mlp_becomes_the_mlp_preset(imported) -> None:
    spec = load_checkpoint(imported["mlp.keras"]).spec
    assert spec == {"name": "mlp", "in_shape": [1, 28, 28], "num_classes": 10, "hidden": 32, "normalize": None}
    fast = load_checkpoint(imported["roundtrip_mlp.keras"]).spec
    assert fast["normalize"] is not None  # Keras's Normalization became the fast preset's Standardize


def test_cli_imports_each_fixture_then_evaluates_and_predicts(tmp_path, capsys, test_images, keras_probs) -> None:
    x, y = test_images
    digit = tmp_path / "digit.png"
    Image.fromarray(255 - x[0]).save(digit)  # dark ink on white paper, as a photo would be
    for name, (arch, key, _) in CASES.items():
        out = tmp_path / name
        args = ["import-keras", str(FIX / name), "-o", str(out)] + (["--model", str(FIX / arch)] if arch else [])
        assert main(args) == 0
        assert f"into {out}" in capsys.readouterr().out
        assert main(["evaluate", str(out), "--json"]) == 0
        ev = json.loads(capsys.readouterr().out)
        assert ev["n"] == 10000 and ev["sparse_categorical_accuracy"] > 0.6, (name, ev)
        assert main(["predict", str(out), str(digit), "--json"]) == 0
        answer = json.loads(capsys.readouterr().out)
        got = answer[0] if isinstance(answer, list) else answer
        assert str(got["class"]) == str(y[0]) == str(keras_probs[key][0].argmax()), (name, got)


def test_imported_run_works_with_export_report_plot_and_serve(imported, tmp_path, capsys) -> None:
    run = imported["cnn.keras"]
    assert main(["export", str(run), "--layout", "keras", "-o", str(tmp_path / "w.txt")]) == 0
    assert "same class 1000/1000" in capsys.readouterr().out
    assert main(["report", str(run), "-o", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "Imported from" in page and "cnn.keras" in page
    assert main(["plot", str(run), "-o", str(tmp_path / "c.png"), "--confusion"]) == 0
    assert (tmp_path / "c.png").stat().st_size > 1000
    from mnistlab.plots import plot_history

    assert "no training history" in plot_history(run).axes[0].texts[0].get_text()
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnistlab", "serve", str(run), "--port", str(port), "--quiet"],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        (_, _), (x, y) = mnist.load_data()
        Image.fromarray(x[1]).save(tmp_path / "d.png")
        with open(tmp_path / "d.png", "rb") as f:
            answer = httpx.post(url + "/api/predict", files={"file": ("d.png", f, "image/png")}, timeout=60).json()
        assert answer["class"] == str(y[1]) or int(answer["class"]) == int(y[1])
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.parametrize("name", ["zoo.keras", "shapes.keras"])
def test_imported_models_export_to_every_format_and_answer_as_keras(name, imported, test_images, keras_probs,
                                                                    tmp_path) -> None:  # fmt: skip
    # AveragePooling2D, BatchNormalization after a Dense layer, a per-channel Normalization and Reshapes that
    # move values between channels-first and channels-last: each export's own runner against Keras itself.
    x, ref = test_images[0], keras_probs[CASES[name][1]]
    for fmt in FORMATS:
        for layout in ("pytorch", "keras") if fmt != "onnx" else ("pytorch",):
            path = export_run(imported[name], fmt, tmp_path / f"{layout}.{fmt}", layout, verbose=0)  # checked
            if fmt == "onnx":
                probs = onnx_probabilities(path.read_bytes(), images_to_array(x))
            else:
                probs = NumpyModel.from_file(path).predict(x)
            assert (probs.argmax(1) == ref.argmax(1)).all(), (fmt, layout)
            assert np.abs(probs - ref).max() <= 1e-5, (fmt, layout)
    # the runner copied alone, without torch or mnistlab, on the Keras-layout text file
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    shutil.copy(ROOT / "mnistlab" / "export" / "numpy_infer.py", alone)
    np.save(alone / "x.npy", x[:50])
    runner = (
        "import runpy, sys; sys.modules['torch'] = None; sys.modules['mnistlab'] = None; "
        f"sys.argv = ['numpy_infer.py', {str(tmp_path / 'keras.txt')!r}, '--npy', 'x.npy']; "
        "runpy.run_path('numpy_infer.py', run_name='__main__')"
    )
    proc = subprocess.run([sys.executable, "-c", runner], cwd=alone, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    answers = [line.split(": ")[1].split()[0] for line in proc.stdout.strip().splitlines()]
    assert answers == [str(k) for k in ref[:50].argmax(1)]


def test_imported_shapes_model_keeps_keras_channel_order(imported) -> None:
    layers = load_checkpoint(imported["shapes.keras"]).spec["layers"]
    reshapes = [d for d in layers if d["op"] == "reshape"]
    assert reshapes == [
        {"op": "reshape", "shape": [2, 28, 14], "channels_last": True},  # (28, 28) -> (28, 14, 2)
        {"op": "reshape", "shape": [6, 13, 6], "channels_last": True, "source": [6, 13, 6]},  # a Flatten's output
        {"op": "reshape", "shape": [144], "channels_last": True, "source": [8, 6, 3]},  # images -> a vector
    ]
    ops = [d["op"] for d in layers]
    assert "channel_standardize" in ops and "batchnorm1d" in ops and ops.count("avgpool2d") == 3


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- refusals: one line, naming the layer, the format, or the keys ------------------------------------


def _cli_error(*args: str) -> str:
    r = run_cli(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    return r.stderr


def test_unsupported_layer_is_named_with_the_supported_list(tmp_path) -> None:
    config = json.loads((FIX / "cnn.json").read_text())
    for layer in config["config"]["layers"]:
        if layer["class_name"] == "Flatten":
            layer["class_name"] = "GlobalAveragePooling2D"
    (tmp_path / "gap.json").write_text(json.dumps(config))
    err = _cli_error("import-keras", str(FIX / "cnn.weights.h5"), "--model", str(tmp_path / "gap.json"), "-o",
                     str(tmp_path / "x"))  # fmt: skip
    assert "is a GlobalAveragePooling2D, which mnistlab cannot import" in err
    assert "supported: Input/InputLayer, Flatten, Reshape, Dense" in err and "Rescaling" in err


def test_weights_only_files_say_what_they_lack(tmp_path) -> None:
    err = _cli_error("import-keras", str(FIX / "cnn.weights.h5"), "-o", str(tmp_path / "x"))
    assert "cannot infer the architecture" in err and "--model" in err
    err = _cli_error("import-keras", str(FIX / "cnn_weights.txt"), "--model", str(FIX / "cnn.json"), "-o",
                     str(tmp_path / "x"))  # fmt: skip
    assert "moving_mean and moving_variance are missing" in err and "only trainable variables" in err
    assert not (tmp_path / "x").exists()


def test_missing_h5py_is_one_line_naming_the_extra(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setitem(sys.modules, "h5py", None)  # as on a machine without it: `import h5py` fails
    assert main(["import-keras", str(FIX / "mlp.keras"), "-o", str(tmp_path / "x")]) == 2
    assert "pip install 'mnistlab[keras]'" in capsys.readouterr().err


# -- train --init-from: every format in, refusals that say what was found ----------------------------


@pytest.mark.parametrize("layout", ["pytorch", "keras"])
@pytest.mark.parametrize("fmt", ["txt", "npz", "safetensors"])
def test_init_from_reads_mnistlab_exports(imported, tmp_path, fmt, layout) -> None:
    run = imported["roundtrip_cnn.keras"]
    path = export_run(run, fmt, tmp_path / f"w.{fmt}", layout, verbose=0)
    loaded = load_checkpoint(run)
    model = from_spec(loaded.spec)
    state = load_init_state(path, model)
    for k, v in loaded.model.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(state[k], v), k
    assert sniff(path) == f"export-{fmt}"


def test_init_from_reads_a_keras_layout_export_of_reshapes_and_per_channel_numbers(imported, tmp_path) -> None:
    run = imported["shapes.keras"]
    path = export_run(run, "npz", tmp_path / "w.npz", "keras", verbose=0)
    loaded = load_checkpoint(run)
    state = load_init_state(path, from_spec(loaded.spec))
    for k, v in loaded.model.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(state[k], v), k


@pytest.mark.parametrize("name", ["mlp.keras", "mlp.weights.h5", "mlp_weights.txt"])
def test_init_from_reads_keras_files(imported, name) -> None:
    state = load_init_state(FIX / name, mlp(hidden=32))
    reference = load_checkpoint(imported["mlp.keras"]).model.state_dict()
    for k, v in reference.items():
        # the lesson's text keeps ~8 significant digits; the binary files are exact
        assert torch.allclose(state[k], v, rtol=0, atol=1e-8 if name.endswith(".txt") else 0), k


def test_init_from_refusals_name_format_and_keys(tmp_path) -> None:
    with pytest.raises(CheckpointError, match=r"\(plain npz state dict\): weights do not fit the mlp model: missing"):
        load_init_state(FIX / "probabilities.npz", mlp())
    with pytest.raises(CheckpointError, match=r"other shapes: 1.weight \(32, 784\) \(model: \(128, 784\)\)"):
        load_init_state(FIX / "mlp.keras", mlp())
    with pytest.raises(CheckpointError, match=r"a text file of no format .* \(it takes a run folder .* a Keras file"):
        load_init_state(FIX / "cnn.json", mlp())
    (tmp_path / "x.bin").write_bytes(bytes(range(256)))
    with pytest.raises(CheckpointError, match=r"a binary file of no format mnistlab reads"):
        load_init_state(tmp_path / "x.bin", mlp())


def test_train_init_from_keras_continues_from_its_weights(imported, tmp_path) -> None:
    # A learning rate of 1e-7 barely moves the weights: the test accuracy after one epoch is the Keras model's.
    out = tmp_path / "warm"
    r = run_cli("train", "--preset", "lesson", "--width", "32", "--epochs", "1", "--lr", "1e-7", "--limit-train",
                "2000", "--init-from", str(FIX / "mlp.keras"), "--out", str(out), "--quiet")  # fmt: skip
    assert r.returncode == 0, r.stderr
    warm = json.loads((out / "result.json").read_text())["test"]["sparse_categorical_accuracy"]
    ev = run_cli("evaluate", str(imported["mlp.keras"]), "--json")
    assert warm == pytest.approx(json.loads(ev.stdout)["sparse_categorical_accuracy"], abs=2e-3)
    r = run_cli("train", "--preset", "lesson", "--epochs", "1", "--init-from", str(FIX / "mlp.keras"), "--out",
                str(tmp_path / "bad"))  # fmt: skip
    assert r.returncode == 2 and "1.weight (32, 784) (model: (128, 784))" in r.stderr
    # and from the imported run folder itself, which brings its architecture (32 hidden units): no --width
    r = run_cli("train", "--preset", "lesson", "--epochs", "1", "--limit-train", "2000",
                "--init-from", str(imported["mlp.keras"]), "--out", str(tmp_path / "again"), "--quiet")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert load_checkpoint(tmp_path / "again").spec["hidden"] == 32


def _accuracy(run: Path, x: np.ndarray, y: np.ndarray, which: str = "best") -> float:
    return float((load_checkpoint(run, which).predict(x).argmax(1) == y).mean())


def test_train_init_from_an_imported_cnn_fine_tunes_it_and_resumes_exactly(imported, test_images, tmp_path) -> None:
    # A Keras user's own CNN, no preset: the run trains the imported architecture, from the imported weights.
    run, (x, y) = imported["cnn.keras"], test_images
    common = ["--limit-train", "1500", "--val-split", "1000", "--limit-test", "1000", "--schedule", "constant",
              "--lr", "1e-3", "--batch-size", "64", "--quiet"]  # fmt: skip
    one, two = tmp_path / "one", tmp_path / "two"
    r = run_cli("train", "--init-from", str(run), "--out", str(one), "--epochs", "1", *common)
    assert r.returncode == 0, r.stderr
    assert load_checkpoint(one).spec == load_checkpoint(run).spec
    config = json.loads((one / "config.json").read_text())
    assert config["model"] == "sequential" and config["normalize"] is False  # the fast preset's, not the model's
    before, after = _accuracy(run, x, y), _accuracy(one, x, y, "last")
    assert after >= before - 0.01, (before, after)  # 1,500 images at 1e-3 refine the model, they do not wreck it
    trained = load_checkpoint(one, "last").model.state_dict()
    assert not torch.equal(trained["0.weight"], load_checkpoint(run).model.state_dict()["0.weight"])
    # --resume rebuilds the model from the run's own checkpoint: 1 epoch + 1 resumed == 2 straight, bit for bit
    r = run_cli("train", "--resume", str(one), "--epochs", "2", "--quiet")
    assert r.returncode == 0, r.stderr
    r = run_cli("train", "--init-from", str(run), "--out", str(two), "--epochs", "2", *common)
    assert r.returncode == 0, r.stderr
    a, b = (load_checkpoint(p, "last").model.state_dict() for p in (one, two))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (
        json.loads((one / "result.json").read_text())["test"] == json.loads((two / "result.json").read_text())["test"]
    )


def test_imported_architecture_and_conflicting_settings(imported, tmp_path) -> None:
    run = str(imported["cnn.keras"])
    err = _cli_error("train", "--init-from", run, "--model", "mlp", "--out", str(tmp_path / "x"))
    assert f"--init-from {run} holds an imported sequential model; --model mlp asks for another" in err
    err = _cli_error("train", "--init-from", run, "--normalize", "--out", str(tmp_path / "x"))
    assert "--normalize asks for another (leave --normalize out to train the imported architecture)" in err
    err = _cli_error("train", "--model", "sequential", "--out", str(tmp_path / "x"))
    assert "model 'sequential' is a model brought in by import-keras, no preset: train it with --init-from" in err
    mlp_run = str(imported["mlp.keras"])
    err = _cli_error("train", "--init-from", mlp_run, "--width", "64", "--out", str(tmp_path / "x"))
    assert "holds an imported mlp model of width 32; --width 64 asks for another" in err
    assert not (tmp_path / "x").exists()


def test_lesson_txt_reads_numpy_printing(tmp_path) -> None:
    from mnistlab.interop.keras_files import read_lesson_txt

    v = read_lesson_txt(FIX / "cnn_weights.txt")
    assert [x.role for x in v] == ["kernel", "bias", "gamma", "beta", "kernel", "bias", "kernel", "bias"]
    assert v[0].array.shape == (5, 5, 1, 6)
    (tmp_path / "elided.txt").write_text("dense/kernel:0\n(3, 2)\n[[1. 2.]\n ...\n [5. 6.]]\n")
    with pytest.raises(CheckpointError, match="threshold=np.inf"):
        read_lesson_txt(tmp_path / "elided.txt")
    assert read_weights_txt  # the mnistlab text format is another reader (export), told apart by its first line


def test_imported_run_is_not_resumed_but_can_start_a_run(imported, tmp_path, capsys) -> None:
    run = imported["mlp.keras"]
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 2
    assert f"an imported model, not a training run; train from it with --init-from {run}" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("hello\nworld\n")
    assert main(["import-keras", str(tmp_path / "notes.txt"), "-o", str(tmp_path / "x")]) == 2
    assert "not a Keras file" in capsys.readouterr().err


def test_dropout_between_flatten_and_dense_keeps_the_channel_order() -> None:
    # The Dense after a Flatten of (H, W, C) images lists its inputs in Keras's order; a Dropout in between
    # (common in the lesson's CNNs) must not make the importer forget to reorder them.
    from mnistlab.interop.keras import convert
    from mnistlab.interop.keras_files import KerasLayer, read_keras

    model = read_keras(FIX / "zoo.keras")
    ref = convert(model, (1, 28, 28), 10)
    at = next(i for i, layer in enumerate(model.layers) if layer.kind == "Flatten")
    model.layers.insert(at + 1, KerasLayer("Dropout", {"name": "dropout", "rate": 0.5}))
    got = convert(model, (1, 28, 28), 10)
    assert got.spec == ref.spec and set(got.state) == set(ref.state)
    assert all(torch.equal(got.state[k], ref.state[k]) for k in ref.state)
