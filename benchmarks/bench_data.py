"""Data loading: cold (decode + verify + write cache) and warm (memory-map) ``load_data()``,
against ``np.load`` of a Keras-style ``mnist.npz`` measured in the same run. Target: warm ≤ 50 ms, ≥ 5x."""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import table, timed


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        os.environ["MNISTLAB_HOME"] = home
        from mnistlab.datasets import mnist, store

        colds, warms, touched, npzs = [], [], [], []

        def warm_and_read() -> None:
            (x, _), (xt, _) = mnist.load_data()
            int(x.sum()) + int(xt.sum())  # fault every page in: the honest cost of a memory map

        npz = Path(home) / "mnist.npz"
        for _ in range(5):
            store.clear_cache()
            colds.append(timed(mnist.load_data)[0])
            warms.append(statistics.median(timed(mnist.load_data)[0] for _ in range(5)))
            touched.append(timed(warm_and_read)[0])
        (x, y), (xt, yt) = mnist.load_data()
        np.savez(npz, x_train=x, y_train=y, x_test=xt, y_test=yt)  # what Keras's mnist.npz holds

        def keras_like() -> None:
            with np.load(npz, allow_pickle=True) as f:
                _ = (f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])

        for _ in range(5):
            npzs.append(timed(keras_like)[0])
    cold, warm, read, ref = (statistics.median(v) for v in (colds, warms, touched, npzs))
    print(
        table(
            [
                ["load_data() cold (decode, verify MD5, cache)", cold * 1000, ""],
                ["load_data() warm (memory-mapped cache)", warm * 1000, f"{ref / warm:.1f}x faster than np.load(npz)"],
                ["load_data() warm + summing every pixel", read * 1000, ""],
                ["np.load(mnist.npz) (Keras's way)", ref * 1000, ""],
            ],
            ["MNIST, median of 5", "ms", "ratio"],
        )
    )
    print(
        f"target warm ≤ 50 ms: {'met' if warm <= 0.05 else 'MISSED'}; ≥ 5x np.load: {'met' if ref / warm >= 5 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
