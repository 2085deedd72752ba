"""Data sets with Keras's shapes and dtypes, found offline first and verified by content, or built from your images."""

from mnistlab.datasets.build import build_dataset, load_data
from mnistlab.datasets.specs import FASHION_MNIST, MNIST, SPECS, DatasetSpec, get_spec
from mnistlab.datasets.store import Dataset, data_home, describe_locations, import_dataset, load, load_for

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
    "load_for",
    "load",
    "load_data",
]
