"""The ``best`` preset (CNN) on MNIST and Fashion-MNIST, three seeds each; medians reported.

Targets: MNIST ≥ 99.6% test accuracy in ≤ 120 s of training, first reaching 99.5% in ≤ 60 s;
Fashion-MNIST ≥ 93.5% in ≤ 180 s. Fashion-MNIST runs with the preset's own settings for it (no
augmentation, 7 epochs: ``mnistlab.config.DATASET_PRESETS``). Heavy (about 13 minutes on 2 cores): run
with ``python -m benchmarks best`` or ``make bench-best``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.common import table
from mnistlab.config import from_preset
from mnistlab.runs import train_run

SEEDS = (0, 1, 2)


def one(dataset: str, seed: int, out: Path) -> tuple[float, float, float | None]:
    result = train_run(from_preset("best", dataset=dataset, seed=seed), out, verbose=0)
    import json

    h = json.loads((out / "history.json").read_text())
    val = h["history"]["val_sparse_categorical_accuracy"]
    first = next((t for t, v in zip(h["times"], val, strict=True) if v >= 0.995), None)
    print(f"  {dataset} seed {seed}: {result['test']['sparse_categorical_accuracy']:.4f} in {result['train_time_s']:.1f}s"
          f" (per epoch: {', '.join(f'{v:.4f}' for v in val)})", flush=True)  # fmt: skip
    return result["train_time_s"], result["test"]["sparse_categorical_accuracy"], first


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset, acc_target, time_target in (("mnist", 0.996, 120), ("fashion_mnist", 0.935, 180)):
            runs = [one(dataset, s, Path(tmp) / f"{dataset}-{s}") for s in SEEDS]
            t = statistics.median(r[0] for r in runs)
            a = statistics.median(r[1] for r in runs)
            firsts = [r[2] for r in runs if r[2] is not None]
            first = f"{statistics.median(firsts):.1f}s ({len(firsts)}/3 seeds)" if firsts else "never"
            verdict = f"{'met' if a >= acc_target and t <= time_target else 'MISSED'} (≥ {acc_target:.1%} in ≤ {time_target}s)"
            rows.append([dataset, t, a, first if dataset == "mnist" else "-", verdict])
    print(table(rows, ["best preset, median of 3 seeds", "train s", "test acc", "first ≥ 99.5%", "target"]))
    sys.stdout.flush()
