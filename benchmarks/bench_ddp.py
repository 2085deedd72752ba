"""Data-parallel throughput: training images/s with 1 and 2 processes on this machine.

Medians of 3, in the same run, for the ``fast`` preset's MLP (global batch 256) on 20,000 MNIST images:

- ``mnistlab``: ``train_run(config, out, nproc=N)`` (``mnistlab train --nproc N``), images/s over the
  training loop alone (``result.json``'s ``train_time_s``); starting the processes, loading the data and
  scoring the test set are reported apart, as seconds per run;
- the baseline: a plain PyTorch loop of the same model, batch and optimizer (one process), and the same
  loop under ``DistributedDataParallel`` (two processes, each taking half of every batch).

What to expect: two processes get half the cores each, so the speed-up is bounded by how much one process
left idle. On a 2-core machine that is little or nothing, and gradient all-reduce over loopback costs extra;
the point of DDP here is correctness and the path to many machines, not speed on one small one.
Run: ``python -m benchmarks.bench_ddp``.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from mnistlab import distributed
from mnistlab.config import from_preset
from mnistlab.datasets import mnist
from mnistlab.models import build_model
from mnistlab.preprocess import images_to_tensor, labels_to_tensor
from mnistlab.runs import train_run

N_TRAIN, EPOCHS, BATCH, REPEATS = 20_000, 2, 256, 3


def plain_loop(world: int = 1, rank: int = 0) -> float:
    """Images/s of a plain PyTorch training loop; under a process group, DDP with this rank's share of each batch."""
    (x, y), _ = mnist.load_data()
    X, Y = images_to_tensor(x[:N_TRAIN]), labels_to_tensor(y[:N_TRAIN])
    torch.manual_seed(0)
    model: torch.nn.Module = build_model("mlp", normalize=[0.1307, 0.3081])
    opt = torch.optim.Adam(model.parameters(), lr=8e-3)
    if world > 1:
        model = DistributedDataParallel(model)
    g = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    for _ in range(EPOCHS):
        perm = torch.randperm(N_TRAIN, generator=g)
        for s in range(0, N_TRAIN, BATCH):
            idx = perm[s : s + BATCH].tensor_split(world)[rank]
            loss = F.cross_entropy(model(X[idx]), Y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return N_TRAIN * EPOCHS / (time.perf_counter() - t)


def plain_ddp_worker() -> float:
    """One rank of the plain DDP baseline, started by the same launcher as ``--nproc``."""
    dist.init_process_group("gloo")
    try:
        return plain_loop(dist.get_world_size(), dist.get_rank())
    finally:
        dist.destroy_process_group()


def mnistlab_run(nproc: int, folder: Path) -> tuple[float, float]:
    """Images/s of the training loop and the seconds spent around it (start-up, data, test set)."""
    config = from_preset("fast", limit_train=N_TRAIN, epochs=EPOCHS, batch_size=BATCH)
    t = time.perf_counter()
    result = train_run(config, folder, nproc=nproc, verbose=0, force=True)
    wall = time.perf_counter() - t
    return N_TRAIN * EPOCHS / result["train_time_s"], wall - result["train_time_s"]


def main() -> None:
    cores = len(os.sched_getaffinity(0))
    print(f"DDP throughput: fast-preset MLP, {N_TRAIN:,} images × {EPOCHS} epochs, global batch {BATCH}, "
          f"{cores} cores, torch {torch.__version__}; medians of {REPEATS}")  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for nproc in (1, 2):
            ours, around = zip(*(mnistlab_run(nproc, Path(tmp) / f"n{nproc}") for _ in range(REPEATS)), strict=True)
            if nproc == 1:
                base = [plain_loop() for _ in range(REPEATS)]
            else:
                base = [distributed.launch(2, plain_ddp_worker) for _ in range(REPEATS)]
            rows.append((nproc, statistics.median(ours), statistics.median(base), statistics.median(around)))
    print(
        f"{'processes':>9}  {'mnistlab img/s':>14}  {'plain PyTorch img/s':>19}  {'ratio':>5}  {'start+data+test s':>17}"
    )
    for nproc, ours_, base_, around_ in rows:
        print(f"{nproc:>9}  {ours_:>14,.0f}  {base_:>19,.0f}  {ours_ / base_:>5.2f}  {around_:>17.1f}")
    one, two = rows[0][1], rows[1][1]
    print(f"speed-up of 2 processes over 1: {two / one:.2f}× (mnistlab), {rows[1][2] / rows[0][2]:.2f}× (plain)")


if __name__ == "__main__":
    main()
