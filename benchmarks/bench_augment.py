"""Augmentation cost: seconds added per MNIST epoch (60,000 images) by ``Augment``, at batch 32 and 256.

Medians of 3, in the same run:

- the batch loop alone (a permutation, ``index_select`` per batch, as the engine does) without and with
  the lesson's augmentation ``rotation=45,shift=0.15,zoom=0.5``: the difference is what augmentation adds;
- a plain-PyTorch baseline: the same warp one image at a time (``affine_grid`` + ``grid_sample`` per
  image), timed on 6,000 images and scaled to the epoch;
- one real training epoch of the lesson's MLP (``Trainer.fit``) without and with augmentation.

It takes a few minutes on an idle 2-core machine, far longer on a busy one.

Run at torch's default thread count and at 1 thread: on a shared machine, two OpenMP threads fighting
other work for two cores can be far slower than one. Run: ``python -m benchmarks.bench_augment``.
"""

from __future__ import annotations

import math
import os
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from mnistlab.augment import Augment
from mnistlab.datasets import load
from mnistlab.engine import Trainer
from mnistlab.models import build_model
from mnistlab.tensors import images_to_tensor

SPEC = "rotation=45,shift=0.15,zoom=0.5"
REPEATS = 3


def batch_loop(x: torch.Tensor, batch: int, aug: Augment | None, seed: int = 0) -> tuple[float, float]:
    """Wall and CPU seconds of one epoch of batches. CPU time counts only the work done: on a shared
    machine, where this process gets a fraction of a core, it is the better guess at an idle machine."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=g)
    t, c = time.perf_counter(), time.process_time()
    total = 0.0
    for s in range(0, len(x), batch):
        xb = x.index_select(0, perm[s : s + batch])
        if aug is not None:
            xb = aug(xb, g)
        total += float(xb[0, 0, 0, 0])  # use the result, as training would
    return time.perf_counter() - t, time.process_time() - c


def per_image_baseline(x: torch.Tensor, n: int = 6000) -> float:
    """The same augmentation one image at a time, in plain PyTorch; seconds scaled to ``len(x)``."""
    g = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    for i in range(n):
        u = torch.rand(5, generator=g) * 2 - 1
        a, zx, zy = u[0].item() * math.radians(45), 1 + 0.5 * u[3].item(), 1 + 0.5 * u[4].item()
        c, s = math.cos(a), math.sin(a)
        theta = torch.tensor([[[c * zx, -s * zy, u[1].item() * 0.3], [s * zx, c * zy, u[2].item() * 0.3]]])
        grid = F.affine_grid(theta, [1, 1, 28, 28], align_corners=False)
        F.grid_sample(x[i : i + 1], grid, padding_mode="border", align_corners=False)
    return (time.perf_counter() - t) * len(x) / n


def train_epoch(x: np.ndarray, y: np.ndarray, batch: int, aug: Augment | None) -> float:
    torch.manual_seed(0)
    model = build_model("mlp", in_shape=(1, 28, 28), num_classes=10)
    trainer = Trainer(model, "adam", 1e-3, augment=aug, augment_spec=str(aug) if aug else "", verbose=0, device="cpu")
    t = time.perf_counter()
    trainer.fit(x, y, batch_size=batch, epochs=1)
    return time.perf_counter() - t


def med(fn, n: int = REPEATS) -> tuple[float, list[float]]:
    ts = [fn() for _ in range(n)]
    return statistics.median(ts), ts


def med2(fn, n: int = REPEATS) -> tuple[float, float, list[float]]:
    """Medians of wall and CPU seconds, and the wall times."""
    runs = [fn() for _ in range(n)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs), [r[0] for r in runs]


def main() -> None:
    ds = load("mnist")
    x = images_to_tensor(ds.x_train)
    aug = Augment.parse(SPEC)
    default_threads = torch.get_num_threads()
    print(f"== augmentation ({SPEC}) on 60,000 MNIST images; load {os.getloadavg()[0]:.1f} ==")
    for threads in dict.fromkeys((default_threads, 1)):
        torch.set_num_threads(threads)
        print(f"-- torch threads: {threads}")
        added_256 = float("nan")
        for batch in (32, 256):
            plain, plain_cpu, _ = med2(lambda b=batch: batch_loop(x, b, None))
            with_aug, aug_cpu, ts = med2(lambda b=batch: batch_loop(x, b, aug))
            print(f"batch {batch:>3}: batch loop {plain:.2f}s, with augmentation {with_aug:.2f}s "
                  f"(runs {', '.join(f'{t:.2f}' for t in ts)}) → adds {with_aug - plain:.2f}s per epoch "
                  f"(CPU time: adds {aug_cpu - plain_cpu:.2f}s)")  # fmt: skip
            if batch == 256:
                added_256 = with_aug - plain
        base, _ = med(lambda: per_image_baseline(x))
        print(
            f"plain PyTorch, one image at a time: {base:.2f}s per epoch → batched (256) is {base / max(added_256, 1e-9):.0f}x faster"
        )
        print(f"one training epoch of the lesson's MLP (Trainer.fit), {threads} thread(s):")
        for batch in (32, 256):
            plain, _ = med(lambda b=batch: train_epoch(ds.x_train, ds.y_train, b, None))
            with_aug, _ = med(lambda b=batch: train_epoch(ds.x_train, ds.y_train, b, aug))
            print(f"  batch {batch:>3}: {plain:.2f}s plain, {with_aug:.2f}s augmented → adds {with_aug - plain:.2f}s")
    torch.set_num_threads(default_threads)


if __name__ == "__main__":
    main()
