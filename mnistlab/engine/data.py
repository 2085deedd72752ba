"""What ``fit`` accepts, turned into what the loop trains on.

Arrays and tensors (NumPy or torch, uint8 or floats in 0..1, images or flattened ``(N, H*W)`` rows,
class indices or one-hot labels) and a ``torch.utils.data.Dataset`` become one in-memory tensor pair, so
a batch is an ``index_select`` of a permutation. A ``DataLoader`` is iterated as it is, each epoch.
``validation_split`` holds out the last fraction of the arrays before anything is shuffled, as in Keras.

Exact resume: arrays and Datasets resume bit for bit from any step. A DataLoader shuffles with torch's
global generator (unless given a ``generator=`` of its own), which a checkpoint restores, so it resumes
exactly from an epoch's end; resumed mid-epoch, its first batches are skipped, which is exact only for a
loader that draws the same order again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from mnistlab.config import split_count
from mnistlab.errors import ConfigError
from mnistlab.tensors import PIXEL_MAX, images_to_tensor, labels_to_tensor

if TYPE_CHECKING:
    from mnistlab.engine.state import TrainState


@dataclass
class TrainData:
    """The training set (tensors, or a loader), its batching, and the validation set if any."""

    x: torch.Tensor | None
    y: torch.Tensor | None
    loader: DataLoader | None
    n: int
    batch_size: int
    val: tuple[torch.Tensor, torch.Tensor] | None
    n_val_split: int = 0  # images held out of the training arrays by ``validation_split``
    model: nn.Module | None = None  # what flattened loader batches are reshaped for

    @property
    def steps_per_epoch(self) -> int:
        return len(self.loader) if self.loader is not None else math.ceil(self.n / self.batch_size)

    def batches(
        self, state: TrainState, device: torch.device, shard: Callable[[torch.Tensor], torch.Tensor] | None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This epoch's batches from ``state.step`` on (``shard``: this rank's slice of each global batch)."""
        if self.loader is not None:
            for i, (xb, yb) in enumerate(self.loader):
                if i >= state.step:
                    yield as_images(xb, self.model, device), as_labels(yb, device)
            return
        assert self.x is not None and self.y is not None
        perm = state.permutation(self.n).to(device)
        bs = self.batch_size
        for step in range(state.step, self.steps_per_epoch):
            idx = perm[step * bs : (step + 1) * bs]
            if shard is not None:
                idx = shard(idx)
            yield self.x.index_select(0, idx), self.y.index_select(0, idx)

    def batch_indices(self, state: TrainState) -> list[torch.Tensor]:
        """The training-array indices of every batch of the coming epoch (for tests and inspection)."""
        perm = state.permutation(self.n)
        return [perm[i : i + self.batch_size] for i in range(0, self.n, self.batch_size)]


def prepare(
    x: Any, y: Any, batch_size: int, validation_data: tuple[Any, Any] | None, validation_split: float,
    model: nn.Module, device: torch.device,
) -> TrainData:  # fmt: skip
    """Check and convert ``fit``'s data arguments; ``ConfigError`` in one line for what does not fit."""
    if isinstance(x, DataLoader):
        if y is not None or validation_split:
            raise ConfigError("a DataLoader brings its own labels and cannot be split; pass y=None, validation_data=")
        n = len(x.dataset) if hasattr(x.dataset, "__len__") else 0  # type: ignore[arg-type]
        val = _val(validation_data, model, device)
        return TrainData(None, None, x, n, x.batch_size or 1, val, model=model)
    if isinstance(x, TorchDataset):
        if y is not None:
            raise ConfigError("a Dataset brings its own labels; pass y=None")
        x, y = materialize(x)
    elif y is None:
        raise ConfigError("y (the labels) is missing; only a Dataset or DataLoader may come without it")
    X, Y = as_images(x, model, device), as_labels(y, device)
    if len(X) != len(Y) or len(X) == 0:
        raise ConfigError(f"x and y must be non-empty and of equal length, got {len(X)} and {len(Y)}")
    n_val = split_count(len(X), validation_split)
    val = None
    if n_val:
        X, Y, val = X[: len(X) - n_val], Y[: len(Y) - n_val], (X[len(X) - n_val :], Y[len(Y) - n_val :])
    if validation_data is not None:  # as in Keras, explicit validation data wins over the split
        val = _val(validation_data, model, device)
    return TrainData(X, Y, None, len(X), batch_size, val, n_val, model)


def _val(
    data: tuple[Any, Any] | None, model: nn.Module, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor] | None:
    if data is None:
        return None
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ConfigError(f"validation_data must be a pair (x, y), got {type(data).__name__}")
    return as_images(data[0], model, device), as_labels(data[1], device)


def materialize(ds: TorchDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """A map-style Dataset's ``(image, label)`` items, in index order, as two tensors."""
    try:
        n = len(ds)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigError("an iterable-style Dataset has no length; wrap it in a DataLoader") from None
    xs, ys = [], []
    for i in range(n):
        item = ds[i]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ConfigError(f"Dataset item {i} must be a pair (image, label), got {type(item).__name__}")
        xs.append(torch.as_tensor(np.asarray(item[0])) if not isinstance(item[0], torch.Tensor) else item[0])
        ys.append(torch.as_tensor(item[1]))
    return torch.stack(xs), torch.stack(ys)


def first_leaf(model: nn.Module | None, last: bool = False) -> nn.Module | None:
    leaves = [m for m in model.modules() if not list(m.children())] if model is not None else []
    return (leaves[-1] if last else leaves[0]) if leaves else None


def as_images(x: Any, model: nn.Module | None, device: torch.device) -> torch.Tensor:
    """Images as float32 ``(N, C, H, W)`` in 0..1; flattened rows are reshaped to the model's input.

    A model that starts with a ``Linear`` (no ``Flatten``) takes the rows as they are.
    """
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.ndim != 2:
        return images_to_tensor(t, device)
    if isinstance(first_leaf(model), nn.Linear):
        return (t.float() / PIXEL_MAX if t.dtype == torch.uint8 else t.float()).to(device)
    shape = tuple((getattr(model, "spec", None) or {}).get("in_shape", ()))
    if len(shape) != 3 or math.prod(shape) != t.shape[1]:
        side = math.isqrt(t.shape[1])
        if side * side != t.shape[1]:
            raise ConfigError(f"flattened images of {t.shape[1]} values are not square; reshape x to (N, H, W) first")
        shape = (1, side, side)
    return images_to_tensor(t.reshape(len(t), *shape), device)


def as_labels(y: Any, device: torch.device) -> torch.Tensor:
    """Class indices ``(N,)``; one-hot rows ``(N, C)`` become their argmax, anything else is refused."""
    t = y if isinstance(y, torch.Tensor) else torch.as_tensor(np.asarray(y))
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    elif t.ndim == 2:
        ones = (t == 1).sum(1)
        zeros = (t == 0).sum(1)
        bad = ((ones != 1) | (ones + zeros != t.shape[1])).nonzero()
        if len(bad):
            i = int(bad[0])
            raise ConfigError(
                f"labels of shape {tuple(t.shape)} must be one-hot (a single 1 per row) or class indices (N,); "
                f"row {i} is {t[i].tolist()}"
            )
        t = t.argmax(1)
    elif t.ndim != 1:
        raise ConfigError(f"labels must be class indices (N,) or one-hot (N, C), got shape {tuple(t.shape)}")
    return labels_to_tensor(t, device)
