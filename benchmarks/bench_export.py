"""Inference speed of the exports: PyTorch vs onnxruntime vs NumPy-only, batch throughput and one-image latency.

Trains a throwaway run per preset (``mlp`` as in the fast preset, ``cnn`` at its full width 32; speed does
not depend on how good the weights are), exports ``model.onnx`` and ``weights.npz``, then times each
backend on the same real MNIST test images. Prints medians of ``REPEATS`` runs and ratios to PyTorch, the
baseline measured in the same run.

Each thread count is measured in a fresh child process whose ``OMP/OPENBLAS/MKL_NUM_THREADS`` are set
before NumPy loads: NumPy's BLAS reads them only at import, and on a busy machine two spinning BLAS
threads can make a one-image call 10x slower than one thread, so both counts are shown.

    python -m benchmarks.bench_export
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPEATS = 3
N_IMAGES = 1000  # NumPy's CNN is the slow one; 1,000 images keep the whole benchmark to a minute or two
BATCH = 500
LATENCY_CALLS = 30
THREADS = (2, 1)
ROOT = Path(__file__).resolve().parents[1]


def _median_time(fn: Callable[[], object]) -> float:
    fn()  # warm-up: first calls allocate and pick kernels
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _latency(fn: Callable[[object], object], x1: object) -> float:
    """Median seconds of one single-image call, over ``REPEATS`` runs of ``LATENCY_CALLS`` calls."""
    fn(x1)
    runs = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for _ in range(LATENCY_CALLS):
            fn(x1)
        runs.append((time.perf_counter() - t0) / LATENCY_CALLS)
    return statistics.median(runs)


def measure(run: str, threads: int) -> list[dict]:
    """In this process: images/s and one-image latency of PyTorch, onnxruntime and NumPy for one run."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from mnistlab.checkpoint import load_checkpoint
    from mnistlab.datasets import load
    from mnistlab.export.numpy_infer import NumpyModel, images_to_array

    torch.set_num_threads(threads)
    model = load_checkpoint(run).model.eval()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(Path(run) / "model.onnx"), sess_options=opts, providers=["CPUExecutionProvider"])
    net = NumpyModel.from_file(Path(run) / "weights.npz")
    # Every backend gets the same float32 NCHW input; preprocessing is not timed.
    x = images_to_array(np.array(load("mnist", progress=False).x_test[:N_IMAGES]))

    def torch_run(xb: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(model(torch.from_numpy(xb)), 1).numpy()

    def ort_run(xb: np.ndarray) -> np.ndarray:
        return sess.run(["probabilities"], {"images": xb})[0]

    def numpy_run(xb: np.ndarray) -> np.ndarray:
        z = net.forward(xb)
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    rows = []
    for name, fn in [("pytorch", torch_run), ("onnxruntime", ort_run), ("numpy", numpy_run)]:
        batch_s = _median_time(lambda fn=fn: [fn(x[i : i + BATCH]) for i in range(0, len(x), BATCH)])
        rows.append({"backend": name, "ips": len(x) / batch_s, "latency": _latency(fn, x[:1])})
    return rows


def _in_child(run: Path, threads: int) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads), "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}  # fmt: skip
    code = (
        f"import json; from benchmarks.bench_export import measure; print(json.dumps(measure({str(run)!r}, {threads})))"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"benchmark child failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _prepare(preset: str, folder: Path) -> Path:
    from mnistlab.config import from_preset
    from mnistlab.export import export_run
    from mnistlab.runs import train_run

    cfg = (
        from_preset("fast", epochs=1, limit_train=2000, limit_test=256)
        if preset == "mlp"
        else from_preset("best", augment="", epochs=1, limit_train=512, limit_test=256)
    )
    run = folder / preset
    train_run(cfg, run, verbose=0)
    export_run(run, "onnx", check=False, verbose=0)
    export_run(run, "npz", check=False, verbose=0)
    return run


def main() -> None:
    print(
        f"export inference: {N_IMAGES:,} MNIST test images in batches of {BATCH}; one-image latency over "
        f"{LATENCY_CALLS} calls; medians of {REPEATS} runs; ratios against PyTorch"
    )
    print(f"{'model':<6} {'threads':>7} {'backend':<12} {'images/s':>10} {'ratio':>6} {'1-image ms':>11} {'ratio':>6}")
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        for preset in ("mlp", "cnn"):
            run = _prepare(preset, Path(tmp))
            for threads in THREADS:
                rows = _in_child(run, threads)
                base = rows[0]
                for r in rows:
                    print(
                        f"{preset:<6} {threads:>7} {r['backend']:<12} {r['ips']:>10,.0f} {r['ips'] / base['ips']:>5.2f}x "
                        f"{r['latency'] * 1e3:>11.3f} {r['latency'] / base['latency']:>5.2f}x"
                    )


if __name__ == "__main__":
    main()
