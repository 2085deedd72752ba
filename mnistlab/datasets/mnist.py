"""MNIST handwritten digits, as ``keras.datasets.mnist``: change the import, keep the lesson's code.

>>> from mnistlab.datasets import mnist
>>> (x_train, y_train), (x_test, y_test) = mnist.load_data()
>>> x_train.shape, x_train.dtype
((60000, 28, 28), dtype('uint8'))
"""

from __future__ import annotations

import os

import numpy as np

from mnistlab.datasets.specs import MNIST
from mnistlab.datasets.store import load

class_names: tuple[str, ...] = MNIST.class_names


def load_data(
    path: str | os.PathLike[str] | None = None,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``(x_train, y_train), (x_test, y_test)`` as uint8 arrays; ``path`` is a folder of IDX files or a ``.npz``."""
    return load(MNIST.name, path=path).as_keras()
