"""A run folder as one object: its file names, config, history, result, checkpoints, data set and scores.

Every command that reads a run (``evaluate``, ``plot``, ``report``, ``export``, ``predict``, ``serve``,
``runs``) goes through :class:`RunFolder`, so a run is read one way and a missing piece is the same
one-line error everywhere.

>>> run = RunFolder("runs/mnist-mlp")                              # doctest: +SKIP
>>> run.config().model, run.history().history["val_loss"][-1]     # doctest: +SKIP
('mlp', 0.08...)
>>> run.evaluate()["sparse_categorical_accuracy"]                 # doctest: +SKIP
0.978...
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from mnistlab import checkpoint as ckpt
from mnistlab.config import CONFIG_JSON, TrainConfig
from mnistlab.errors import CheckpointError, ConfigError, MnistlabError
from mnistlab.metrics import (
    ACC,
    HISTORY_JSON,
    METRICS_CSV,
    History,
    read_history_json,
    read_json_object,
    read_metrics_csv,
)

SUMMARY_TXT = "summary.txt"
RESULT_JSON = "result.json"
# Everything a run writes (an export never overwrites one of these).
RUN_FILES = (CONFIG_JSON, SUMMARY_TXT, METRICS_CSV, HISTORY_JSON, RESULT_JSON, ckpt.LAST, ckpt.BEST)
# Any of these makes a folder a run (one that has not finished an epoch yet included).
MARKERS = (CONFIG_JSON, HISTORY_JSON, METRICS_CSV, ckpt.LAST, ckpt.BEST)
WHICH = ("best", "last")


class RunFolder:
    """A run folder, or one checkpoint file (in a run folder or on its own).

    Reading is lazy and cached: a checkpoint is loaded once, whatever asks for it.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        p = Path(path)
        if p.is_dir():
            self.folder, self.file = p, None
        elif p.is_file():
            self.folder, self.file = p.parent, p
        else:
            raise CheckpointError(f"{p}: no such run folder or checkpoint file")
        self.path = p
        self._loaded: dict[tuple[str, str], ckpt.LoadedModel] = {}

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.folder.resolve().name

    def file_path(self, name: str) -> Path:
        """``RUN/name``: one of :data:`RUN_FILES` (or an export) in the run folder."""
        return self.folder / name

    def is_run(self) -> bool:
        """Whether the folder holds any file a run writes."""
        return any((self.folder / name).exists() for name in MARKERS)

    # -- checkpoints ---------------------------------------------------------------------------------

    def checkpoint(self, which: str = "best") -> Path:
        """The checkpoint file: the one given, else the folder's ``best`` (or ``last``) one."""
        if which not in WHICH:
            raise ConfigError(f"which must be 'best' or 'last', got {which!r}")
        return self.file if self.file is not None else ckpt.resolve(self.folder, which)

    def load(self, which: str = "best", device: str = "cpu") -> ckpt.LoadedModel:
        """The model of the checkpoint, rebuilt from it alone, in eval mode (loaded once)."""
        key = (which, device)
        if key not in self._loaded:
            self._loaded[key] = ckpt.load_checkpoint(self.checkpoint(which), which, device)
        return self._loaded[key]

    # -- what the run was -------------------------------------------------------------------------------

    def config(self, which: str = "best") -> TrainConfig:
        """The run's config: the checkpoint's (the one in force: a resume may have raised ``epochs``), else
        ``config.json``. A run with neither gets the one error every command gives for it."""
        saved = self.load(which).config if self._has_checkpoint() else {}
        if saved:
            try:
                return TrainConfig.from_dict(saved)
            except (ConfigError, TypeError) as e:
                raise CheckpointError(f"{self.checkpoint(which)}: run config unreadable ({e})") from None
        if self.is_run() and self.file_path(CONFIG_JSON).is_file():
            return TrainConfig.read(self.file_path(CONFIG_JSON))
        raise CheckpointError(
            f"{self.path}: no run config (in the checkpoint or {CONFIG_JSON}), so its data set is unknown"
        )

    def saved_config(self) -> TrainConfig | None:
        """``config.json`` alone, without touching a checkpoint (None when absent); what ``mnistlab runs`` reads."""
        file = self.file_path(CONFIG_JSON)
        return TrainConfig.read(file) if file.is_file() else None

    def history(self) -> History:
        """The training history: a checkpoint file's own (up to when it was saved), else the folder's
        ``history.json``, else its ``metrics.csv``."""
        if self.file is not None:
            return History.from_dict(ckpt.read_meta(self.file).get("history", {}))
        if not self.is_run():
            raise CheckpointError(f"{self.path}: not a run folder (no {', '.join(MARKERS[:3])} or checkpoint inside)")
        if self.file_path(HISTORY_JSON).is_file():
            return read_history_json(self.file_path(HISTORY_JSON))
        if self.file_path(METRICS_CSV).is_file():
            return read_metrics_csv(self.file_path(METRICS_CSV))
        raise CheckpointError(f"{self.path}: run has no finished epoch yet (no {HISTORY_JSON}); train it first")

    def result(self) -> dict | None:
        """``result.json`` (written when training finished), or None."""
        file = self.file_path(RESULT_JSON)
        if not file.is_file():
            return None
        try:
            return read_json_object(file)
        except OSError as e:
            raise CheckpointError(f"{file}: not valid JSON ({e})") from None

    def summary_text(self) -> str | None:
        """The model summary written when the run started, or None."""
        file = self.file_path(SUMMARY_TXT)
        return file.read_text() if file.is_file() else None

    def chosen_by(self, which: str = "best") -> str:
        """In words, what chose the checkpoint: ``best`` by the monitored metric on its split, ``last`` by time."""
        if which == "last":
            return "the last saved state"
        best = self.load(which).history.get("best") or {}
        try:
            on = self.config(which).validated_on
        except CheckpointError:
            on = "an unknown split"
        monitor = best.get("monitor", "the validation metric")
        epoch = f" (epoch {best['epoch']})" if best.get("epoch") else ""
        return f"best {monitor} on {on}{epoch}"

    # -- the data set and scores on it ------------------------------------------------------------

    def dataset(
        self, which: str = "best", *, name: str | None = None, download: bool = True, limit: bool = True
    ) -> Any:
        """The run's data set as its config names it (``name`` loads another one), cut to its ``limit_test``
        (and ``limit_train``) unless ``limit=False``."""
        from mnistlab.datasets import load_for

        if name is None:
            config = self.config(which)
        else:
            try:
                config = dataclasses.replace(self.config(which), dataset=name, data_dir=None)
            except CheckpointError:  # another data set than the run's needs no run config
                config = TrainConfig(dataset=name)
        if not limit:
            config = dataclasses.replace(config, limit_train=0, limit_test=0)
        return load_for(config, progress=False, download=download)

    def test_images(self, which: str = "best", n: int | None = None, name: str | None = None) -> tuple[Any, str] | str:
        """The first ``n`` test images of the run's data set (or ``name``; whatever its ``limit_test``) and its
        name, or why they cannot be had here (never downloads)."""
        try:
            ds = self.dataset(which, name=name, download=False, limit=False)
        except (MnistlabError, OSError) as e:
            return str(e)
        return ds.x_test[:n], ds.name

    def test_logits(self, which: str = "best", dataset: str | None = None) -> tuple[Any, Any]:
        """``(data set, logits)``: the checkpoint's logits on the test split of its data set (or ``dataset``)."""
        from mnistlab.inference import predict_logits
        from mnistlab.tensors import images_to_tensor

        loaded = self.load(which)
        ds = self.dataset(which, name=dataset)
        try:
            return ds, predict_logits(loaded.model, images_to_tensor(ds.x_test))
        except RuntimeError as e:  # the data set's images do not have the shape the model was built for
            first = str(e).splitlines()[0]
            raise CheckpointError(f"{loaded.path}: model does not fit {ds.name}'s images ({first})") from None

    def evaluate(self, which: str = "best", dataset: str | None = None) -> dict:
        """Loss, accuracy and per-class accuracy of the checkpoint on its data set's test split, and what
        chose the checkpoint."""
        import torch

        from mnistlab.tensors import labels_to_tensor

        loaded = self.load(which)
        ds, logits = self.test_logits(which, dataset)
        y = labels_to_tensor(ds.y_test)
        pred = logits.argmax(1)
        per_class = {}
        for c, class_name in enumerate(loaded.class_names):
            mask = y == c
            per_class[class_name] = float((pred[mask] == c).float().mean()) if mask.any() else float("nan")
        return {
            "checkpoint": str(loaded.path),
            "chosen_by": self.chosen_by(which),
            "dataset": ds.name,
            "loss": float(torch.nn.functional.cross_entropy(logits, y)),
            ACC: float((pred == y).float().mean()),
            "per_class": per_class,
            "n": len(y),
        }

    def test_accuracy(self, which: str = "best") -> float | None:
        """The test accuracy to show beside the model: ``result.json``'s when training finished, else the best
        validation accuracy when the run validated on the test set, else None."""
        result = self.result() if self.file is None or self.is_run() else None
        try:
            return float(result["test"][ACC])  # type: ignore[index]
        except (KeyError, TypeError, ValueError):
            pass
        loaded = self.load(which)
        best = loaded.history.get("best") or {}
        on_test = not (loaded.config or {}).get("val_split")
        value = best.get("value") if "accuracy" in str(best.get("monitor", "")) and on_test else None
        return float(value) if value is not None else None

    # -- one line of `mnistlab runs` -------------------------------------------------------------------

    def row(self) -> dict[str, Any]:
        """What ``mnistlab runs`` shows of the run, read from its small files only (no checkpoint)."""
        config = self.saved_config()
        try:
            history: History | None = self.history()
        except CheckpointError:
            history = None
        try:
            result = self.result() or {}
        except CheckpointError:
            result = {}
        best = (history.best if history else {}) or {}
        stamp = max((self.file_path(n).stat().st_mtime for n in RUN_FILES if self.file_path(n).is_file()), default=0)
        test = (result.get("test") or {}).get(ACC)
        return {
            "run": str(self.path),
            "model": config.model if config else "?",
            "dataset": Path(config.dataset).name if config else "?",
            "epochs": len(history.epoch) if history else 0,
            "of_epochs": config.epochs if config else None,
            "best_val": best.get("value"),
            "best_epoch": best.get("epoch"),
            "monitor": best.get("monitor"),
            "validated_on": config.validated_on if config else "?",
            "test_accuracy": float(test) if test is not None else None,
            "train_time_s": result.get("train_time_s"),
            "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else "",
        }

    def _has_checkpoint(self) -> bool:
        return self.file is not None or any((self.folder / n).is_file() for n in (ckpt.BEST, ckpt.LAST))


def find_runs(root: str | os.PathLike[str] = "runs") -> list[RunFolder]:
    """The run folders in ``root`` (``root`` itself when it is one, else every folder below holding a run),
    sorted by path."""
    top = Path(root)
    if not top.is_dir():
        raise CheckpointError(f"{top}: no such folder")
    found = {p.parent for name in MARKERS for p in top.rglob(name)}
    # hidden folders are mnistlab's own: an old run set aside by --force, a data build in progress
    found = {p for p in found if not any(part.startswith(".") for part in p.relative_to(top).parts)}
    return [RunFolder(p) for p in sorted(found)]


def runs_table(root: str | os.PathLike[str] = "runs") -> str:
    """The runs in ``root`` as a text table: model, data set, epochs, best validation, test accuracy, time, date."""
    rows = [r.row() for r in find_runs(root)]
    if not rows:
        return f"no runs in {root}"
    head = ("run", "model", "data set", "epochs", "best val (epoch)", "validated on", "test acc", "train time", "date")
    lines = [head]
    for r in rows:
        epochs = f"{r['epochs']}/{r['of_epochs']}" if r["of_epochs"] else str(r["epochs"])
        best = f"{r['best_val']:.4f} ({r['best_epoch']})" if r["best_val"] is not None else "-"
        test = f"{r['test_accuracy']:.4f}" if r["test_accuracy"] is not None else "-"
        took = f"{r['train_time_s']:.1f}s" if r["train_time_s"] is not None else "-"
        lines.append((r["run"], r["model"], r["dataset"], epochs, best, r["validated_on"], test, took, r["date"]))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)
