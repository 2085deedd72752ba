"""Metric names and the training history: what ``fit`` returns and what a run folder keeps of it.

A leaf module (no torch): plots, reports and analysis read histories without importing the engine.

>>> h = History({"loss": [0.5, 0.3]}, [0, 1])
>>> h.history["loss"][-1]
0.3
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from mnistlab import fileio
from mnistlab.errors import CheckpointError

ACC = "sparse_categorical_accuracy"
KEYS = ("loss", ACC, "val_loss", f"val_{ACC}")
METRICS_CSV = "metrics.csv"
HISTORY_JSON = "history.json"


class History:
    """What ``fit`` returns, as in Keras: ``history.history["loss"]``, one value per epoch."""

    def __init__(self, history: dict[str, list[float]] | None = None, epoch: list[int] | None = None) -> None:
        self.history: dict[str, list[float]] = history if history is not None else {}
        self.epoch: list[int] = epoch if epoch is not None else []
        self.val_epoch: list[int] = []  # the epochs (0-based) that have validation values
        self.times: list[float] = []  # cumulative training seconds at the end of each epoch
        self.resumed_at: list[float] = []  # epochs done (fractional mid-epoch) when a run was resumed
        self.best: dict[str, Any] = {}

    def to_dict(self) -> dict:
        return {
            "history": self.history, "epoch": self.epoch, "val_epoch": self.val_epoch, "times": self.times,
            "resumed_at": self.resumed_at, "best": self.best,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> History:
        h = cls({k: list(v) for k, v in d.get("history", {}).items()}, list(d.get("epoch", [])))
        h.val_epoch = list(d.get("val_epoch", []))
        h.times = list(d.get("times", []))
        h.resumed_at = list(d.get("resumed_at", []))
        h.best = dict(d.get("best", {}))
        return h

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"


def write_history(run: str | os.PathLike[str], history: History) -> None:
    """Write ``metrics.csv`` (one row per epoch, 1-based) and ``history.json`` into ``run``, atomically."""
    run = Path(run)
    h = history.history
    cols = ["epoch"] + [k for k in KEYS if k in h] + [k for k in h if k not in KEYS]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    val_epochs = history.val_epoch
    for i, ep in enumerate(history.epoch):
        row: list[Any] = [ep + 1]
        for k in cols[1:]:
            if k.startswith("val_"):
                j = val_epochs.index(ep) if ep in val_epochs else None
                row.append("" if j is None or j >= len(h[k]) else f"{h[k][j]:.6g}")
            else:
                row.append(f"{h[k][i]:.6g}" if i < len(h[k]) else "")
        w.writerow(row)
    fileio.write_text(run / METRICS_CSV, buf.getvalue())
    fileio.write_text(run / HISTORY_JSON, json.dumps(history.to_dict(), indent=1) + "\n")


def read_json_object(path: Path) -> dict:
    """A run file holding one JSON object (``history.json``, ``result.json``); a malformed one is a one-line
    ``CheckpointError`` naming it."""
    try:
        d = json.loads(path.read_text())
    except ValueError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(d).__name__}")
    return d


def read_history_json(path: Path) -> History:
    """A run's ``history.json``; a malformed file is a one-line ``CheckpointError`` naming it."""
    return History.from_dict(read_json_object(path))


def read_metrics_csv(path: Path) -> History:
    """``metrics.csv`` as a History (it has no resume points or best epoch: those live in history.json)."""
    h = History()
    with path.open(newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            try:
                epoch = int(row["epoch"]) - 1
                values = {k: (float(v) if v not in ("", None) else None) for k, v in row.items() if k != "epoch"}
            except (KeyError, TypeError, ValueError) as e:
                raise CheckpointError(f"{path}, line {line}: not a metrics row ({e})") from None
            h.epoch.append(epoch)
            for k, v in values.items():
                if v is not None:
                    h.history.setdefault(k, []).append(v)
            if values.get("val_loss") is not None:
                h.val_epoch.append(epoch)
    return h
