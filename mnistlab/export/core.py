"""``export_run``: a run's checkpoint → ``weights.txt`` / ``.npz`` / ``.safetensors`` / ``model.onnx``, checked.

Each export is built in memory, read back with the reader a consumer would use (``numpy_infer`` for the
three weight files, onnxruntime for ONNX) and compared with PyTorch on real test images of the run's
data set; only then is the file written, atomically. A failed check writes nothing.

>>> path = export_run("runs/mnist-mlp", "txt")                              # doctest: +SKIP
parity (NumPy from weights.txt vs PyTorch) on 1000 mnist test images: same class 1000/1000, max |Δprob| 5.96e-08 - OK
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mnistlab import fileio
from mnistlab.checkpoint import LoadedModel
from mnistlab.errors import ConfigError, ExportError
from mnistlab.export import numpy_infer
from mnistlab.export.arrays import npz_bytes, safetensors_bytes
from mnistlab.export.formats import FORMATS
from mnistlab.export.graph import Graph, describe
from mnistlab.export.txt import format_weights_txt
from mnistlab.runfolder import RUN_FILES, RunFolder
from mnistlab.tensors import images_to_tensor

# Parity targets of the exports: the same predicted class everywhere and probabilities within this.
PROB_TOLERANCE = 1e-5


def default_name(format: str, layout: str = "pytorch") -> str:
    if format == "onnx":
        return "model.onnx"
    return f"weights{'-keras' if layout == 'keras' else ''}.{format}"


def build_meta(loaded: LoadedModel, graph: Graph) -> dict:
    """The metadata every format carries: layout, architecture, input, preprocessing, classes, source."""
    c, h, w = graph.in_shape
    std = next((layer for layer in graph.architecture if layer["op"] == "standardize"), None)
    arrays = graph.arrays()
    standardize = None
    if std:
        p = std["params"]
        standardize = {"mean": float(arrays[p["mean"]]), "std": float(arrays[p["std"]]), "layer": std["name"]}
    return {
        "format": numpy_infer.FORMAT,
        "version": numpy_infer.VERSION,
        "layout": graph.layout,
        "model": loaded.spec.get("name"),
        "model_spec": loaded.spec,
        "architecture": graph.architecture,
        "input": {
            "chw": [c, h, w],
            "layout": "NCHW" if graph.layout == "pytorch" else "NHWC",
            "shape": [c, h, w] if graph.layout == "pytorch" else [h, w, c],
            "dtype": "float32",
            "range": [0.0, 1.0],
        },
        "preprocessing": {
            "pixels": f"uint8 {'gray' if c == 1 else 'RGB'} images ({h}, {w}{'' if c == 1 else f', {c}'}), 0..255",
            "scale": "x / 255",
            "standardize": standardize,
        },
        "output": {
            "kind": "logits",
            "probabilities": "softmax over the class axis",
            "classes": len(loaded.class_names),
        },
        "class_names": list(loaded.class_names),
        "tensors": [{"name": t.name, "shape": list(t.array.shape), "trainable": t.trainable} for t in graph.tensors],
        "source": {
            "checkpoint": str(loaded.path),
            "checkpoint_sha256": hashlib.sha256(Path(loaded.path).read_bytes()).hexdigest(),
            "epoch": loaded.meta.get("epoch"),
            "dataset": (loaded.meta.get("dataset") or {}).get("name"),
            "mnistlab_version": loaded.meta.get("mnistlab_version"),
        },
    }


@dataclass
class Parity:
    """How an exported file's predictions compare with PyTorch's on the same images."""

    backend: str
    images: int
    dataset: str
    same_class: int
    max_abs_prob_diff: float

    @property
    def ok(self) -> bool:
        return self.same_class == self.images and self.max_abs_prob_diff <= PROB_TOLERANCE

    def __str__(self) -> str:
        return (
            f"parity ({self.backend} vs PyTorch) on {self.images} {self.dataset} test images: same class "
            f"{self.same_class}/{self.images}, max |Δprob| {self.max_abs_prob_diff:.3g} - {'OK' if self.ok else 'FAILED'}"
        )


def compare(backend: str, dataset: str, ref: np.ndarray, probs: np.ndarray) -> Parity:
    same = int((ref.argmax(1) == probs.argmax(1)).sum())
    return Parity(backend, len(ref), dataset, same, float(np.abs(ref - probs).max()) if len(ref) else 0.0)


def torch_probabilities(model: torch.nn.Module, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """PyTorch's probabilities for uint8 images, the reference every export is checked against."""
    model.eval()
    with torch.no_grad():
        # np.array copies each slice: data sets are read-only memory maps, which torch warns about.
        out = [
            torch.softmax(model(images_to_tensor(np.array(x[i : i + batch_size]))), 1)
            for i in range(0, len(x), batch_size)
        ]
    return torch.cat(out).numpy()


def _test_images(
    run: RunFolder, loaded: LoadedModel, which: str, n: int, dataset: str | None = None
) -> tuple[np.ndarray, str] | str:
    """The first ``n`` test images of the run's data set (or ``dataset``), or why they cannot be had."""
    got = run.test_images(which, n, name=dataset)
    if isinstance(got, str):
        return got
    x, name = got
    if tuple(numpy_infer.images_to_array(x[:1]).shape[1:]) != tuple(loaded.in_shape):
        return f"data set {name!r} images do not fit the model's input {loaded.in_shape}"
    return x, name


def _check(
    format: str, data: bytes | str, run: RunFolder, which: str, n: int, dataset: str | None = None
) -> Parity | str:
    loaded = run.load(which)
    got = _test_images(run, loaded, which, n, dataset)
    if isinstance(got, str):
        return got
    x, dataset = got
    ref = torch_probabilities(loaded.model, x)
    if format == "onnx":
        from mnistlab.export.onnx import onnx_probabilities

        return compare("onnxruntime", dataset, ref, onnx_probabilities(data, numpy_infer.images_to_array(x)))  # type: ignore[arg-type]
    parse = {
        "txt": numpy_infer.parse_weights_txt,
        "npz": numpy_infer.parse_weights_npz,
        "safetensors": numpy_infer.parse_weights_safetensors,
    }[format]
    net = numpy_infer.NumpyModel(parse(data, f"<{format}>"))  # type: ignore[arg-type]
    return compare(f"NumPy from {format}", dataset, ref, net.predict(x))


def export_run(
    run: str | os.PathLike[str],
    format: str,
    output: str | os.PathLike[str] | None = None,
    layout: str = "pytorch",
    *,
    which: str = "best",
    check: bool = True,
    check_images: int = 1000,
    verbose: int = 1,
    force: bool = False,
    dataset: str | None = None,
) -> Path:
    """Export a run's checkpoint as ``txt``, ``npz``, ``safetensors`` or ``onnx``; return the written path.

    ``output`` defaults to ``RUN/weights.<format>`` (``weights-keras.<format>`` for ``layout="keras"``,
    ``model.onnx`` for ONNX); an existing folder receives that name. With ``check`` the file is first run
    by its consumer (NumPy or onnxruntime) on ``check_images`` test images of the run's data set and
    compared with PyTorch; the result is printed when ``verbose``, and a mismatch raises ``ExportError``
    without writing anything. If the data set is not on this machine the check is skipped, and says so.
    ``dataset`` names the data set to check on when the run does not (a ``Trainer`` used without a run config).

    >>> export_run("runs/mnist-mlp", "onnx")                                  # doctest: +SKIP
    PosixPath('runs/mnist-mlp/model.onnx')
    """
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r} (choose from {', '.join(FORMATS)})")
    if layout not in numpy_infer.LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r} (choose from {', '.join(numpy_infer.LAYOUTS)})")
    if format == "onnx" and layout != "pytorch":
        raise ConfigError("--layout keras applies to txt, npz and safetensors; an ONNX graph always takes NCHW input")
    if check and check_images < 1:
        raise ConfigError(f"check_images must be ≥ 1, got {check_images}")
    if which not in ("best", "last"):
        raise ConfigError(f"which must be 'best' or 'last', got {which!r}")
    folder = RunFolder(run)
    loaded = folder.load(which)
    graph = describe(loaded.model, loaded.in_shape, layout)
    meta = build_meta(loaded, graph)
    path = _output_path(run, loaded, format, layout, output, force)
    if format == "txt":
        data: bytes | str = format_weights_txt(graph, meta)
    elif format == "npz":
        data = npz_bytes(graph, meta)
    elif format == "safetensors":
        data = safetensors_bytes(graph, meta)
    else:
        from mnistlab.export.onnx import onnx_bytes

        data = onnx_bytes(loaded.model, loaded.in_shape, meta)
    if check:
        result = _check(format, data, folder, which, check_images, dataset)
        if isinstance(result, str):
            if verbose:
                print(f"parity check skipped: {result}")
        else:
            if verbose:
                print(result)
            if not result.ok:
                raise ExportError(f"{path.name} not written: {result}")
    try:
        if isinstance(data, str):
            fileio.write_text(path, data)
        else:
            fileio.write_bytes(path, data)
    except OSError as e:
        raise ExportError(f"{path}: cannot write the export ({e.strerror or e})") from None
    return path


def _output_path(
    run: str | os.PathLike[str],
    loaded: LoadedModel,
    format: str,
    layout: str,
    output: str | os.PathLike[str] | None,
    force: bool = False,
) -> Path:
    name = default_name(format, layout)
    if output is None:
        folder = Path(run) if Path(run).is_dir() else Path(loaded.path).parent
        return folder / name
    out = Path(output)
    out = out / name if out.is_dir() else out
    if out.is_file() and (out.name in RUN_FILES or fileio.is_checkpoint(out)):
        raise ExportError(f"{out}: refusing to overwrite a run's own file with an export; choose another -o")
    return fileio.check_new_output(out, (Path(name).suffix,), force=force)


__all__ = ["FORMATS", "PROB_TOLERANCE", "Parity", "build_meta", "default_name", "export_run", "torch_probabilities"]
