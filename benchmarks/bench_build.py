"""Own data set build: ``build_dataset`` vs the course's single-threaded loop, on 70,000 real MNIST JPGs.

The benchmark writes MNIST (60,000 train + 10,000 test) as JPG files in the course layout
(``mnist_train_jpg_60000/`` + ``mnist_train_jpg_60000.txt``, same for test) into a temp folder, then
times, in the same run, medians of 3:

- the course's ``generateds`` loop: PIL open, convert L, ``np.array``, ``/ 255.`` (float64), append
  (without its ``print`` per line, which would only make it slower);
- ``build_dataset`` in one process (``workers=1``) and with one worker per core (the default).

It checks both give the same pixels, and prints the memory the arrays take. Run: ``python -m benchmarks.bench_build``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import timed
from mnistlab.datasets import load, load_data
from mnistlab.datasets.build import build_dataset

REPEATS = 3


def write_course_layout(root: Path) -> list[tuple[Path, Path]]:
    ds = load("mnist")
    pairs = []
    for split, x, y in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
        stem = f"mnist_{split}_jpg_{len(x)}"
        (root / stem).mkdir()
        lines = []
        for i in range(len(x)):
            name = f"{i}_{y[i]}.jpg"
            Image.fromarray(np.asarray(x[i])).save(root / stem / name)
            lines.append(f"{name} {y[i]}\n")
        (root / f"{stem}.txt").write_text("".join(lines))
        pairs.append((root / stem, root / f"{stem}.txt"))
    return pairs


def generateds(path: str, txt: str) -> tuple[np.ndarray, np.ndarray]:
    """The course's loader, line for line (minus the print)."""
    f = open(txt)  # as the course writes it
    contents = f.readlines()
    f.close()
    x, y_ = [], []
    for content in contents:
        value = content.split()
        img_path = path + value[0]
        img = Image.open(img_path)
        img = np.array(img.convert("L"))
        img = img / 255.0
        x.append(img)
        y_.append(value[1])
    x = np.array(x)
    y_ = np.array(y_).astype(np.int64)
    return x, y_


def main() -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"== own data set build: 70,000 MNIST JPGs in the course layout ({cores} cores, load {os.getloadavg()[0]:.1f}) =="
    )
    root = Path(tempfile.mkdtemp(prefix="mnistlab-bench-build-"))
    try:
        t, pairs = timed(lambda: write_course_layout(root))
        print(f"wrote 70,000 JPGs in {t:.1f}s")
        course_times, course = [], None
        for _ in range(REPEATS):
            t, course = timed(lambda: [generateds(f"{d}/", str(txt)) for d, txt in pairs])
            course_times.append(t)
        runs: dict[str, list[float]] = {"workers=1": [], f"workers={cores} (default)": []}
        for label, workers in (("workers=1", 1), (f"workers={cores} (default)", None)):
            for _ in range(REPEATS):
                t, _ = timed(
                    lambda w=workers: build_dataset(root, root / "built", workers=w, force=True, progress=False)
                )
                runs[label].append(t)
        (x_tr, y_tr), (x_te, y_te) = load_data(root / "built")
        same = np.array_equal(np.round(course[0][0] * 255).astype(np.uint8), x_tr) and np.array_equal(
            course[0][1], y_tr
        )
        same = same and np.array_equal(np.round(course[1][0] * 255).astype(np.uint8), x_te)
        base = statistics.median(course_times)
        print(
            f"course loop (single-threaded, float64): median {base:.2f}s  runs {', '.join(f'{t:.2f}' for t in course_times)}"
        )
        for label, ts in runs.items():
            med = statistics.median(ts)
            print(f"build_dataset {label:<22} median {med:.2f}s  runs {', '.join(f'{t:.2f}' for t in ts)}  "
                  f"→ {base / med:.1f}x faster")  # fmt: skip
        course_bytes = course[0][0].nbytes + course[1][0].nbytes
        ours = x_tr.nbytes + x_te.nbytes
        print(f"image arrays: course {course_bytes / 2**20:.0f} MiB (float64), ours {ours / 2**20:.0f} MiB (uint8): "
              f"{course_bytes / ours:.0f}x less memory; same pixels: {same}")  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
