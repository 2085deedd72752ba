"""mnistlab: the MNIST-style image-classification workflow on PyTorch, offline-first, fast and exact.

>>> from mnistlab.datasets import mnist
>>> (x_train, y_train), (x_test, y_test) = mnist.load_data()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["History", "Trainer", "load_checkpoint", "models", "summary"]

if TYPE_CHECKING:
    from mnistlab import models
    from mnistlab.checkpoint import load_checkpoint
    from mnistlab.engine import History, Trainer
    from mnistlab.models import summary


def __getattr__(name: str) -> Any:
    # Lazy, so `import mnistlab` (and the CLI's start-up) does not import torch until needed.
    if name in ("Trainer", "History"):
        from mnistlab import engine

        return getattr(engine, name)
    if name == "load_checkpoint":
        from mnistlab.checkpoint import load_checkpoint

        return load_checkpoint
    if name == "summary":
        from mnistlab.models import summary

        return summary
    if name == "models":
        import importlib

        return importlib.import_module("mnistlab.models")
    raise AttributeError(f"module 'mnistlab' has no attribute {name!r}")
