"""Data sets with Keras's shapes and dtypes, found offline first and verified by content, or built from your images.

The names below load their module on first use, so ``mnistlab.datasets.specs`` (plain facts) costs nothing more.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mnistlab.datasets.build import build_dataset, load_data
    from mnistlab.datasets.specs import FASHION_MNIST, MNIST, SPECS, DatasetSpec, get_spec
    from mnistlab.datasets.store import Dataset, data_home, describe_locations, import_dataset, load, load_for

_LAZY = {
    "build_dataset": "build", "load_data": "build", "FASHION_MNIST": "specs", "MNIST": "specs", "SPECS": "specs",
    "DatasetSpec": "specs", "get_spec": "specs", "Dataset": "store", "data_home": "store",
    "describe_locations": "store", "import_dataset": "store", "load": "store", "load_for": "store",
}  # fmt: skip
_SUBMODULES = ("mnist", "fashion_mnist")

__all__ = [
    "FASHION_MNIST",
    "MNIST",
    "SPECS",
    "Dataset",
    "DatasetSpec",
    "build_dataset",
    "data_home",
    "describe_locations",
    "get_spec",
    "import_dataset",
    "load",
    "load_data",
    "load_for",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"mnistlab.datasets.{_LAZY[name]}"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"mnistlab.datasets.{name}")
    raise AttributeError(f"module 'mnistlab.datasets' has no attribute {name!r}")
