"""The numbers behind the pictures: a run's history and its model's predictions on the test split.

``plots`` draws these and ``report`` puts them on one page; a notebook user can call them directly.

>>> history = load_history("runs/main")                  # doctest: +SKIP
>>> preds = predict_run("runs/main")                     # doctest: +SKIP
>>> preds.accuracy, preds.confusion()[7, 2]              # doctest: +SKIP
(0.978..., 11)
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnistlab import checkpoint as ckpt
from mnistlab.errors import CheckpointError, ConfigError
from mnistlab.metrics import KEYS, History
from mnistlab.runfolder import RunFolder

# What plotting and reporting accept as "a training history".
HistoryLike = History | dict | str | os.PathLike | RunFolder


def load_history(source: HistoryLike) -> History:
    """A ``History`` from a ``History``, a dict (``History.to_dict()`` or Keras's ``history.history``),
    a run folder (its ``history.json``, else ``metrics.csv``) or a checkpoint file.

    Raises ``CheckpointError`` for a folder that is not a run or a run with no finished epoch yet.

    >>> load_history({"loss": [0.5, 0.3], "val_loss": [0.4, 0.35]}).epoch
    [0, 1]
    """
    if isinstance(source, History):
        history, where = source, "history"
    elif isinstance(source, dict):
        history, where = _from_dict(source), "history"
    elif isinstance(source, RunFolder | str | os.PathLike):
        folder = source if isinstance(source, RunFolder) else RunFolder(source)
        history, where = folder.history(), str(folder.path)
        if not history.epoch and imported_from(folder.path):
            return history  # an imported model: a run without training history
    else:
        raise ConfigError(f"expected a History, a dict or a run folder, got {type(source).__name__}")
    _check(history, where)
    return history


def imported_from(run: str | os.PathLike) -> str | None:
    """Where a run's model came from when ``mnistlab import-keras`` made it (None for a trained run)."""
    p = Path(run)
    try:
        if p.is_dir():
            d = json.loads((p / "history.json").read_text()) if (p / "history.json").is_file() else {}
            return d.get("imported_from") if isinstance(d, dict) else None
        return (ckpt.read_meta(p).get("imported") or {}).get("from") if p.is_file() else None
    except (ValueError, OSError, CheckpointError):
        return None


def _from_dict(d: dict) -> History:
    if isinstance(d.get("history"), dict):
        return History.from_dict(d)
    # Keras's ``history.history``: one value per epoch for every key, validated every epoch.
    h = History({k: [float(x) for x in v] for k, v in d.items()})
    n = max((len(v) for k, v in h.history.items() if not k.startswith("val_")), default=0)
    h.epoch = list(range(n))
    h.val_epoch = list(range(max((len(v) for k, v in h.history.items() if k.startswith("val_")), default=0)))
    return h


def _check(h: History, where: str) -> None:
    if not h.epoch:
        raise CheckpointError(f"{where}: no finished epoch yet, nothing to plot")
    for k, v in h.history.items():
        want = len(h.val_epoch) if k.startswith("val_") else len(h.epoch)
        if len(v) != want:
            raise CheckpointError(f"{where}: {k!r} has {len(v)} values for {want} epochs (the history is inconsistent)")


def final_metrics(h: History) -> dict[str, float]:
    """The last value of each of the four Keras metrics that the history holds."""
    return {k: h.history[k][-1] for k in KEYS if h.history.get(k)}


# -- predictions on the test split ----------------------------------------------------------------


@dataclass
class Predictions:
    """A model's class probabilities on labelled images, with what is derived from them.

    >>> p = Predictions(np.zeros((2, 28, 28), np.uint8), np.array([0, 1]), np.array([[.9, .1], [.8, .2]]), ("0", "1"))
    >>> p.accuracy, p.mistakes(5).tolist()
    (0.5, [1])
    """

    x: np.ndarray  # images, uint8 (N, H, W) or (N, H, W, 3)
    y: np.ndarray  # true labels (N,)
    probs: np.ndarray  # (N, classes)
    class_names: tuple[str, ...]
    source: str = ""  # the checkpoint that made them
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.y = np.asarray(self.y).astype(np.int64)
        self.probs = np.asarray(self.probs)
        if self.probs.ndim != 2 or len(self.probs) != len(self.y) or len(self.x) != len(self.y):
            raise ConfigError(
                f"predictions need x (N, ...), y (N,) and probs (N, classes), got {np.shape(self.x)}, "
                f"{self.y.shape}, {self.probs.shape}"
            )
        if self.probs.shape[1] != len(self.class_names):
            raise ConfigError(f"probs has {self.probs.shape[1]} columns for {len(self.class_names)} class names")

    @property
    def pred(self) -> np.ndarray:
        return self.probs.argmax(1)

    @property
    def accuracy(self) -> float:
        return float((self.pred == self.y).mean()) if len(self.y) else math.nan

    @property
    def loss(self) -> float:
        """Cross-entropy of the true classes (what Keras reports as ``loss``)."""
        if not len(self.y):
            return math.nan
        p_true = self.probs[np.arange(len(self.y)), self.y].astype(np.float64)
        return float(-np.log(np.clip(p_true, 1e-12, None)).mean())

    def confusion(self) -> np.ndarray:
        """Counts ``(classes, classes)``: row = true class, column = predicted class."""
        k = len(self.class_names)
        return np.bincount(self.y * k + self.pred, minlength=k * k).reshape(k, k)

    def per_class_accuracy(self) -> np.ndarray:
        """Recall of each class (NaN for a class with no test image)."""
        cm = self.confusion()
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.diag(cm) / cm.sum(1)

    def mistakes(self, n: int) -> np.ndarray:
        """Indices of the ``n`` most confident wrong predictions, most confident first."""
        wrong = np.flatnonzero(self.pred != self.y)
        conf = self.probs[wrong, self.pred[wrong]]
        return wrong[np.argsort(-conf, kind="stable")[: max(n, 0)]]


# Test-time augmentation: the image as it is and moved by one pixel each way (rows, columns).
TTA_SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Images ``(N, C, H, W)`` moved ``dy`` rows down and ``dx`` columns right; what comes in is 0 (background).

    >>> shifted(torch.arange(4.0).reshape(1, 1, 2, 2), 1, 0)[0, 0].tolist()
    [[0.0, 0.0], [0.0, 1.0]]
    """
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def predict_run(run: str | os.PathLike[str] | RunFolder, which: str = "best", tta: bool = False) -> Predictions:
    """A run's ``best`` (or ``last``) checkpoint's predictions on its data set's test split.

    ``tta``: test-time augmentation, the mean of the probabilities of the image and of its four one-pixel
    shifts (``TTA_SHIFTS``).
    """
    run = run if isinstance(run, RunFolder) else RunFolder(run)
    if run.file is None:
        run.history()  # a folder that is not a run, or has no finished epoch, gets that error first
    loaded = run.load(which)
    if tta:
        from mnistlab.inference import predict_proba
        from mnistlab.tensors import images_to_tensor

        ds = run.dataset(which)
        x = images_to_tensor(ds.x_test)
        probs = np.mean([predict_proba(loaded.model, shifted(x, dy, dx)) for dy, dx in TTA_SHIFTS], axis=0)
    else:
        ds, logits = run.test_logits(which)
        probs = torch.softmax(logits, dim=1).numpy()
    trained_on = (loaded.meta.get("dataset") or {}).get("digest")
    return Predictions(
        ds.x_test, ds.y_test, probs, loaded.class_names, source=str(loaded.path),
        meta={"epoch": loaded.meta.get("epoch"), "dataset": ds.name, "which": which,
              "same_data": trained_on in (None, "", ds.digest)},
    )  # fmt: skip


def ensemble(runs: list[str | os.PathLike[str] | RunFolder], which: str = "best", tta: bool = False) -> Predictions:
    """The mean of several runs' probabilities on their (one) data set's test split, and each run's own.

    ``meta["members"]`` lists each run's checkpoint and accuracy. Runs of different data sets or classes
    are refused in one line.
    """
    if not runs:
        raise ConfigError("an ensemble needs at least one run")
    members = [predict_run(r, which, tta=tta) for r in runs]
    first = members[0]
    for m in members[1:]:
        if m.meta["dataset"] != first.meta["dataset"] or m.class_names != first.class_names:
            raise ConfigError(
                f"{m.source}: a model of {m.meta['dataset']} ({len(m.class_names)} classes) cannot join an "
                f"ensemble of {first.meta['dataset']} ({len(first.class_names)} classes, {first.source})"
            )
    probs = np.mean([m.probs for m in members], axis=0)
    return Predictions(
        first.x, first.y, probs, first.class_names, source=", ".join(m.source for m in members),
        meta={"dataset": first.meta["dataset"], "which": which, "tta": tta,
              "members": [{"checkpoint": m.source, "accuracy": m.accuracy} for m in members]},
    )  # fmt: skip
