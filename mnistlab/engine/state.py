"""The state of a training run between two steps, and its exact round trip through a checkpoint.

``TrainState`` holds the loop's counters, its running metric sums and the generators it draws from
(shuffling, augmentation); ``capture_rng`` / ``restore_rng`` add the process-wide ones (torch, CUDA,
NumPy, Python). What differs between ranks of a data-parallel run (the augmentation stream, the global
RNGs, the metric sums) is each rank's own; the rest is shared.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

import numpy as np
import torch

# Shared by all ranks: the shuffle stream, and where it stood when this epoch began (to redraw the
# epoch's permutation after a mid-epoch resume).
SHARED = ("rng/shuffle", "rng/shuffle_epoch_start")


def _zeros() -> torch.Tensor:
    return torch.zeros(3, dtype=torch.float64)


@dataclass
class TrainState:
    """Epoch (0-based, epochs done), step within it, global step, and what the next step draws from."""

    shuffle: torch.Generator
    augment: torch.Generator
    epoch: int = 0
    step: int = 0
    global_step: int = 0
    train_time: float = 0.0
    lr_factor: float = 1.0
    sums: torch.Tensor = field(default_factory=_zeros)  # loss sum, correct count, samples seen this epoch
    shuffle_epoch_start: torch.Tensor | None = None

    @classmethod
    def fresh(cls, seed: int, rank: int, device: torch.device) -> TrainState:
        g_shuffle = torch.Generator().manual_seed(seed)
        # Each rank augments its own images with its own stream; rank 0's is a single process's.
        g_aug = torch.Generator(device=device).manual_seed(seed + 1 + (rank << 32))
        return cls(g_shuffle, g_aug, shuffle_epoch_start=g_shuffle.get_state())

    def next_epoch(self) -> None:
        self.epoch, self.step, self.sums = self.epoch + 1, 0, _zeros()

    def permutation(self, n: int) -> torch.Tensor:
        """This epoch's order of the ``n`` training images (the same after a mid-epoch resume)."""
        if self.step == 0:
            self.shuffle_epoch_start = self.shuffle.get_state()
            return torch.randperm(n, generator=self.shuffle)
        g = torch.Generator().manual_seed(0)  # resumed mid-epoch: redraw this epoch's permutation
        g.set_state(self.shuffle_epoch_start)
        return torch.randperm(n, generator=g)

    # -- checkpoint round trip -------------------------------------------------------------------

    def to_tensors(self, device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
        """``(shared tensors, this rank's tensors, this rank's RNG JSON)``."""
        shared = {"rng/shuffle": self.shuffle.get_state(), "rng/shuffle_epoch_start": self.shuffle_epoch_start}
        own, rng = capture_rng(device)
        own = {"rng/augment": self.augment.get_state(), **own, "train/sums": self.sums.cpu()}
        return shared, own, rng

    def counters(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "global_step": self.global_step,
                "train_time": self.train_time, "lr_factor": self.lr_factor}  # fmt: skip

    def from_tensors(self, shared: dict[str, torch.Tensor], own: dict[str, torch.Tensor], rng: dict,
                     counters: dict, device: torch.device) -> None:  # fmt: skip
        """Restore what ``to_tensors`` and ``counters`` saved (``own``/``rng``: this rank's)."""
        self.shuffle.set_state(shared["rng/shuffle"])
        self.shuffle_epoch_start = shared["rng/shuffle_epoch_start"]
        self.augment.set_state(own["rng/augment"])
        restore_rng(own, rng, device)
        self.sums = own["train/sums"]
        self.epoch, self.step, self.global_step = counters["epoch"], counters["step"], counters["global_step"]
        self.train_time, self.lr_factor = counters["train_time"], float(counters.get("lr_factor", 1.0))


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def capture_rng(device: torch.device) -> tuple[dict[str, torch.Tensor], dict]:
    """The process-wide generators: torch's (and CUDA's) as tensors, NumPy's and Python's as JSON."""
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available() and device.type == "cuda":
        tensors["rng/cuda"] = torch.cuda.get_rng_state(device)
    np_state = np.random.get_state(legacy=False)
    py_state = random.getstate()
    return tensors, {"numpy": _jsonable(np_state), "python": [py_state[0], list(py_state[1]), py_state[2]]}


def restore_rng(tensors: dict[str, torch.Tensor], rng: dict, device: torch.device) -> None:
    torch.set_rng_state(tensors["rng/torch"])
    if "rng/cuda" in tensors and device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng/cuda"], device)
    np_state = rng["numpy"]
    np_state["state"]["key"] = np.asarray(np_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(np_state)
    py = rng["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def match_param_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give restored optimizer state the memory layout of its parameter (e.g. channels_last).

    Checkpoints store tensors contiguous; kernels pick different code paths (and summation orders) for
    other layouts, so without this a resumed channels_last run drifts from the uninterrupted one.
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p, {})
            for k, v in st.items():
                if isinstance(v, torch.Tensor) and v.shape == p.shape and v.stride() != p.stride():
                    st[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)


def _jsonable(state: dict) -> dict:
    return json.loads(json.dumps(state, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
