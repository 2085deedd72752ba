"""mnistlab: the MNIST-style image-classification workflow on PyTorch, offline-first, fast and exact.

>>> from mnistlab.datasets import mnist
>>> (x_train, y_train), (x_test, y_test) = mnist.load_data()

Layers: a module imports only from its own layer or below, never in a cycle, and that counts imports
inside functions too (``tests/test_layers.py`` enforces it):

0. ``errors``: the typed exceptions.
1. ``fileio``, ``faults``, ``config``, ``metrics``, ``progress``, ``devices`` (and ``datasets.specs``): files,
   settings, metric names and the history, device choice; no torch at import.
2. ``tensors``, ``models``, ``lean``, ``inference``, ``augment``, ``imaging``, ``preprocess``, ``photolike``:
   arrays to tensors, networks, batch inference, augmentation, pictures.
3. ``checkpoint``, ``datasets``, ``distributed``: saving and loading, data sets, torchrun.
4. ``engine``, ``callbacks``: the training loop.
5. ``runfolder``, ``runs``, ``analysis``, ``plots``, ``report``, ``predict``, ``export``, ``interop``: what users do with a run.
6. ``cli``, ``web``: the command line and the web app (each command imports the library only when it runs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["History", "Trainer", "load_checkpoint", "models", "summary"]

if TYPE_CHECKING:
    from mnistlab import models
    from mnistlab.checkpoint import load_checkpoint
    from mnistlab.engine import Trainer
    from mnistlab.metrics import History
    from mnistlab.models import summary


def __getattr__(name: str) -> Any:
    # Lazy, so `import mnistlab` (and the CLI's start-up) does not import torch until needed.
    if name == "Trainer":
        from mnistlab.engine import Trainer

        return Trainer
    if name == "History":
        from mnistlab.metrics import History

        return History
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
