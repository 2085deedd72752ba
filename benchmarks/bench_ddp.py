"""Data-parallel throughput: training images/s with 1 and 2 processes on this machine.

Medians of 3, in the same run, for the ``fast`` preset's MLP (global batch 256) on 20,000 MNIST images:

- ``mnistlab``: ``train_run(config, out, nproc=N)`` (``mnistlab train --nproc N``), images/s over the
  training loop alone (``result.json``'s ``train_time_s``); starting the processes, loading the data and
  scoring the test set are reported apart, as seconds per run;
- the baseline: a plain PyTorch loop of the same model, batch and optimizer (one process), and the same
  loop under ``DistributedDataParallel`` (two processes, each taking half of every batch);
- one process trains the MLP with the engine's hand-written step (``mnistlab.lean``), several processes
  through autograd, as DDP needs; the plain baseline uses autograd in both;
- three settings: 1 process × 1 thread, 1 process × all cores, 2 processes × half the cores each. On a
  shared machine, a process's threads fighting other work can make "all cores" the slowest of the three.

What to expect: two processes get half the cores each, so the speed-up is bounded by how much one process
left idle. On a 2-core machine that is little or nothing, and gradient all-reduce over loopback costs extra;
the point of DDP here is correctness and the path to many machines, not speed on one small one.
Run: ``python -m benchmarks.bench_ddp``.
"""

from __future__ import annotations

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
from mnistlab.runs import train_run
from mnistlab.tensors import images_to_tensor, labels_to_tensor

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
    # fp32 as the plain loop: the preset's auto takes bf16 where the CPU has bf16 units, which would compare
    # bf16 against float32 instead of mnistlab's loop (and DDP's) against the plain one
    config = from_preset("fast", limit_train=N_TRAIN, epochs=EPOCHS, batch_size=BATCH, precision="fp32")
    t = time.perf_counter()
    result = train_run(config, folder, nproc=nproc, verbose=0, force=True)
    wall = time.perf_counter() - t
    return N_TRAIN * EPOCHS / result["train_time_s"], wall - result["train_time_s"]


def measure(nproc: int, threads: int, folder: Path) -> tuple[float, float, float]:
    """Medians of (mnistlab images/s, plain PyTorch images/s, seconds around the loop) for one setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # for nproc > 1 the launcher shares the cores out (OMP_NUM_THREADS)
    try:
        ours, around = zip(*(mnistlab_run(nproc, folder) for _ in range(REPEATS)), strict=True)
        if nproc == 1:
            base = [plain_loop() for _ in range(REPEATS)]
        else:
            base = [distributed.launch(nproc, plain_ddp_worker) for _ in range(REPEATS)]
    finally:
        torch.set_num_threads(before)
    return statistics.median(ours), statistics.median(base), statistics.median(around)


def main() -> None:
    cores = distributed.cpu_count()
    print(f"DDP throughput: fast-preset MLP, {N_TRAIN:,} images × {EPOCHS} epochs, global batch {BATCH}, "
          f"{cores} cores, torch {torch.__version__}; medians of {REPEATS}")  # fmt: skip
    # One process with one thread, one with every core, and two sharing the cores: the fair comparison
    # for 2 processes is 1 process × all cores (the same hardware), not 1 × 1.
    settings = [(1, 1), (1, cores), (2, max(1, cores // 2))]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for nproc, threads in settings:
            rows.append((nproc, threads, *measure(nproc, threads, Path(tmp) / f"n{nproc}t{threads}")))
    head = ("processes × threads", "mnistlab img/s", "plain PyTorch img/s", "ratio", "start+data+test s")
    print("  ".join(f"{h:>{len(h)}}" for h in head))
    for nproc, threads, ours, base, around in rows:
        cells = (f"{nproc} × {threads}", f"{ours:,.0f}", f"{base:,.0f}", f"{ours / base:.2f}", f"{around:.1f}")
        print("  ".join(f"{c:>{len(h)}}" for c, h in zip(cells, head, strict=True)))
    best = max(rows[:2], key=lambda r: r[2])  # the faster single process: threads can lose on a busy machine
    two = rows[2]
    print(f"2 processes vs the faster single process ({best[0]} × {best[1]}): {two[2] / best[2]:.2f}× (mnistlab), "
          f"{two[3] / best[3]:.2f}× (plain PyTorch)")  # fmt: skip


if __name__ == "__main__":
    main()
