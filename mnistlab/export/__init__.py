"""Parameter export ("参数提取"): a run's weights as exact text, npz, safetensors or ONNX, and NumPy-only inference.

>>> from mnistlab.export import export_run, read_weights_txt        # doctest: +SKIP
>>> path = export_run("runs/mnist-mlp", "txt", layout="keras")       # doctest: +SKIP
>>> read_weights_txt(path).tensors["dense/kernel"].shape             # doctest: +SKIP
(784, 128)

``export_run`` needs PyTorch; ``mnistlab.export.numpy_infer`` (and ``read_weights_txt``) need NumPy alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mnistlab.export.core import FORMATS, export_run
    from mnistlab.export.numpy_infer import NumpyModel, Weights, WeightsError, load_weights, read_weights_txt

# Imported on first use: ``python -m mnistlab.export.numpy_infer`` then runs the module only once, and
# nothing here pulls in torch for a NumPy-only user.
_LAZY = {
    "export_run": "core", "FORMATS": "core", "NumpyModel": "numpy_infer", "Weights": "numpy_infer",
    "WeightsError": "numpy_infer", "load_weights": "numpy_infer", "read_weights_txt": "numpy_infer",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"mnistlab.export.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FORMATS", "NumpyModel", "Weights", "WeightsError", "export_run", "load_weights", "read_weights_txt"]
