"""The training engine: a Keras-like ``fit`` over in-memory tensors, with exact checkpoint/resume.

Speed comes from the design, not tricks: the whole data set is one float tensor in memory, a batch is
an ``index_select`` of a permutation (no per-sample Python), evaluation runs in large batches, and the
learning rate is a pure function of the step (so the schedule needs no state to resume).

Exactness: a checkpoint holds the model, optimizer, epoch and step, the running metric sums, the
history, and every generator that affects training (shuffling, augmentation, torch's global RNG,
NumPy's and Python's). ``N`` epochs straight and ``k`` epochs + kill + resume give bit-identical weights.

Under torchrun (see ``mnistlab.distributed``) the same ``fit`` trains data-parallel: each rank takes its
slice of every global batch, and the checkpoint also holds every rank's own generators.

>>> from mnistlab.datasets import mnist
>>> from mnistlab.models import mlp
>>> (x, y), (xt, yt) = mnist.load_data()
>>> trainer = Trainer(mlp(), optimizer="adam", lr=1e-3)
>>> history = trainer.fit(x, y, batch_size=32, epochs=5, validation_data=(xt, yt))  # doctest: +SKIP
>>> history.history["val_sparse_categorical_accuracy"][-1]                        # doctest: +SKIP
0.976...
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mnistlab import checkpoint as ckpt
from mnistlab import distributed, faults
from mnistlab.config import OPTIMIZERS, SCHEDULES
from mnistlab.devices import accumulator_dtype, pick_device
from mnistlab.errors import CheckpointError, ConfigError, DistributedError, MnistlabError
from mnistlab.inference import autocast, predict_logits, predict_proba
from mnistlab.lean import LeanMLP
from mnistlab.metrics import ACC, History, write_history
from mnistlab.progress import Progbar
from mnistlab.tensors import images_to_tensor, labels_to_tensor

# Settings that must match to resume a run (epochs may grow when the schedule allows it).
RESUME_KEYS = ("model", "optimizer", "lr", "momentum", "weight_decay", "schedule", "warmup",
               "label_smoothing", "batch_size", "seed", "augment", "data", "n_train", "validation_freq",
               "precision")  # fmt: skip
# In a multi-process run, a TTY's progress line shows metrics summed over ranks every this many steps.
LIVE_EVERY = 16


class TrainingInterrupted(MnistlabError):
    """Training stopped on SIGINT after saving ``last``; the message holds the resume command."""

    exit_code = 130


def lr_at(step: int, total: int, base: float, schedule: str, warmup: float = 0.25) -> float:
    """The learning rate at ``step`` of ``total``: a pure function, so resuming needs no scheduler state."""
    if schedule == "constant" or total <= 1:
        return base
    t = step / max(total - 1, 1)
    if schedule == "onecycle":  # linear warm-up from base/25, cosine down to base/1e4
        if t < warmup:
            return base / 25 + (base - base / 25) * (t / warmup)
        u = (t - warmup) / max(1 - warmup, 1e-12)
        return base / 1e4 + (base - base / 1e4) * 0.5 * (1 + math.cos(math.pi * u))
    if schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * t))
    if schedule == "step":  # ÷10 at 50% and 75% of training
        return base * (0.1 ** ((t >= 0.5) + (t >= 0.75)))
    raise ConfigError(f"unknown schedule {schedule!r} (choose from {', '.join(SCHEDULES)})")


def make_optimizer(
    name: str, params: Iterator[nn.Parameter], lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
    device: torch.device | None = None,
) -> torch.optim.Optimizer:  # fmt: skip
    fused = {"fused": True} if device is None or device.type in ("cpu", "cuda") else {}
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **fused)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **fused)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "nadam":
        return torch.optim.NAdam(params, lr=lr, weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer {name!r} (choose from {', '.join(OPTIMIZERS)})")


class _SigintFlag:
    """Turns the first Ctrl-C into a request to stop after the current step (main thread only)."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None

    def __enter__(self) -> _SigintFlag:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, _sig: int, _frame: object) -> None:
        if self.requested:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


class Trainer:
    """Compile-and-fit for any ``nn.Module`` that maps ``(N, C, H, W)`` images to logits.

    ``augment`` is a callable ``(batch, generator) -> batch`` applied to training batches only.
    The lesson's MLP trains with a hand-written step (``mnistlab.lean``) unless ``lean=False``.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: str | torch.optim.Optimizer = "adam",
        lr: float = 1e-3,
        *,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        schedule: str = "constant",
        warmup: float = 0.25,
        label_smoothing: float = 0.0,
        seed: int = 0,
        device: str | torch.device = "auto",
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
        augment_spec: str = "",
        precision: str = "fp32",
        channels_last: bool = False,
        verbose: int = 1,
        lean: bool = True,
    ) -> None:
        if schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {schedule!r} (choose from {', '.join(SCHEDULES)})")
        if not 0 <= label_smoothing < 1:
            raise ConfigError(f"label smoothing must lie in [0, 1), got {label_smoothing!r}")
        if not lr > 0:
            raise ConfigError(f"learning rate must be > 0, got {lr!r}")
        if precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision must be fp32 or bf16, got {precision!r}")
        self.device = device if isinstance(device, torch.device) else pick_device(device)
        self.precision, self.channels_last = precision, channels_last
        self.model = (
            model.to(self.device, memory_format=torch.channels_last) if channels_last else model.to(self.device)
        )
        if isinstance(optimizer, torch.optim.Optimizer):
            # The optimizer's own learning rates are the base; ``lr`` is ignored, as in Keras.
            self.optimizer, self.optimizer_name = optimizer, type(optimizer).__name__.lower()
            lr = float(optimizer.param_groups[0]["lr"])
        else:
            self.optimizer = make_optimizer(optimizer, self.model.parameters(), lr, momentum, weight_decay, self.device)
            self.optimizer_name = optimizer
        self.base_lrs = [float(g["lr"]) for g in self.optimizer.param_groups]
        self.settings = {
            "optimizer": self.optimizer_name, "lr": lr, "momentum": momentum, "weight_decay": weight_decay,
            "schedule": schedule, "warmup": warmup, "label_smoothing": label_smoothing, "seed": seed,
            "augment": augment_spec, "precision": precision,
        }  # fmt: skip
        self.schedule, self.warmup = schedule, warmup
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.seed = seed
        self.augment = augment
        self.verbose = verbose
        self.lean = lean  # False: always train through autograd (for comparison)
        self.stream = sys.stdout
        # Extra JSON saved in every checkpoint (the CLI puts the run config and data set identity here).
        self.extra_meta: dict[str, Any] = {}
        self.history = History()

    # -- evaluation ------------------------------------------------------------------------------

    def evaluate(self, x: Any, y: Any, batch_size: int = 4096) -> dict[str, float]:
        """``{"loss", "sparse_categorical_accuracy"}`` on ``(x, y)``, in eval mode, never augmented."""
        xt = x if isinstance(x, torch.Tensor) and x.dtype == torch.float32 else images_to_tensor(x, self.device)
        yt = labels_to_tensor(y, self.device)
        return self._evaluate(xt.to(self.device), yt, batch_size)

    def _evaluate(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shard: bool = False) -> dict[str, float]:
        if shard:  # each rank scores its slice; the sums are added up across ranks
            ctx = distributed.current()
            assert ctx is not None
            xs, ys = x.tensor_split(ctx.world_size)[ctx.rank], y.tensor_split(ctx.world_size)[ctx.rank]
            logits = predict_logits(self.model, xs, batch_size, self.precision, self.channels_last)
            s = distributed.all_reduce_sum(
                torch.stack((
                    nn.functional.cross_entropy(logits, ys, reduction="sum").double(),
                    (logits.argmax(1) == ys).sum().double(),
                    torch.tensor(float(len(ys)), dtype=torch.float64, device=logits.device),
                ))
            ).tolist()  # fmt: skip
            return {"loss": s[0] / s[2], ACC: s[1] / s[2]}
        logits = predict_logits(self.model, x, batch_size, self.precision, self.channels_last)
        loss = nn.functional.cross_entropy(logits, y).item()  # plain CE, as Keras reports val_loss
        acc = (logits.argmax(1) == y).float().mean().item()
        return {"loss": loss, ACC: acc}

    def predict(self, x: Any, batch_size: int = 4096) -> np.ndarray:
        """Class probabilities, as Keras's ``model.predict`` with a softmax output."""
        return predict_proba(self.model, x, batch_size)

    # -- training --------------------------------------------------------------------------------

    def fit(
        self,
        x: Any,
        y: Any,
        batch_size: int = 32,
        epochs: int = 5,
        validation_data: tuple[Any, Any] | None = None,
        validation_freq: int = 1,
        *,
        run_dir: str | Path | None = None,
        resume: bool = False,
        save_every: int = 0,
        monitor: str = f"val_{ACC}",
        mode: str = "max",
        eval_batch_size: int = 4096,
        data_identity: dict | None = None,
        resume_command: str | None = None,
    ) -> History:
        """Train to ``epochs`` in total; with ``run_dir``, keep ``last``/``best`` checkpoints and ``metrics.csv``.

        ``resume=True`` continues from ``run_dir/last.safetensors`` where it stopped.
        """
        if epochs < 1 or batch_size < 1 or validation_freq < 1:
            raise ConfigError(
                f"epochs, batch_size and validation_freq must be ≥ 1, got {epochs}, {batch_size}, {validation_freq}"
            )
        if mode not in ("max", "min"):
            raise ConfigError(f"mode must be 'max' or 'min', got {mode!r}")
        ddp = distributed.current()  # None when training alone
        world, rank = (ddp.world_size, ddp.rank) if ddp else (1, 0)
        distributed.per_rank_batch(batch_size, world)
        verbose = self.verbose if rank == 0 else 0  # rank 0 alone prints and writes files
        X = images_to_tensor(x, self.device)
        Y = labels_to_tensor(y, self.device)
        if len(X) != len(Y) or len(X) == 0:
            raise ConfigError(f"x and y must be non-empty and of equal length, got {len(X)} and {len(Y)}")
        val = None
        if validation_data is not None:
            val = (images_to_tensor(validation_data[0], self.device), labels_to_tensor(validation_data[1], self.device))
        run = Path(run_dir) if run_dir is not None else None
        n = len(X)
        if 0 < n % batch_size < world:
            raise ConfigError(
                f"the last batch of each epoch would hold {n % batch_size} images, fewer than the {world} "
                "processes; change the batch size or the number of training images"
            )
        steps_per_epoch = math.ceil(n / batch_size)
        total_steps = steps_per_epoch * epochs
        fingerprint = {
            **self.settings, "batch_size": batch_size, "validation_freq": validation_freq, "n_train": n,
            "model": getattr(self.model, "spec", type(self.model).__name__),
            "data": (data_identity or {}).get("digest", ""), "total_steps": total_steps,
        }  # fmt: skip
        if world > 1:
            fingerprint["world_size"] = world

        g_shuffle = torch.Generator().manual_seed(self.seed)
        acc = accumulator_dtype(self.device)  # float64 sums, but MPS has no float64
        # Each rank augments its own images with its own stream; rank 0's is a single process's.
        g_aug = torch.Generator(device=self.device).manual_seed(self.seed + 1 + (rank << 32))
        state = {
            "epoch": 0,
            "step": 0,
            "global_step": 0,
            "train_time": 0.0,
            "sums": torch.zeros(3, dtype=torch.float64),
        }
        shuffle_epoch_start = g_shuffle.get_state()
        if resume:
            if run is None:
                raise ConfigError("resume needs a run folder")
            shuffle_epoch_start = self._restore(run, fingerprint, epochs, steps_per_epoch, state, g_shuffle, g_aug)
            if state["epoch"] >= epochs:
                if verbose:
                    print(
                        f"{run}: already trained to {state['epoch']} of {epochs} epochs; nothing to do",
                        file=self.stream,
                    )
                return self.history
            self.history.resumed_at.append(state["epoch"] + state["step"] / steps_per_epoch)
        else:
            torch.manual_seed(self.seed)
            np.random.seed(self.seed % 2**32)
            random.seed(self.seed)
            self.history = History()
            if run is not None and rank == 0:
                run.mkdir(parents=True, exist_ok=True)
        best_key, best_better = monitor, (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)

        def save(path: Path, epoch_done: bool) -> None:
            self._save(path, state, fingerprint, g_shuffle, g_aug, shuffle_epoch_start, epoch_done)

        net: nn.Module = self.model  # self.model stays the one handle on the unwrapped model
        live = False
        if ddp is not None:
            dev_ids = [self.device.index] if self.device.type == "cuda" else None
            net = DistributedDataParallel(self.model, device_ids=dev_ids)  # makes every rank start from rank 0's
            live = distributed.broadcast_flag(bool(verbose) and hasattr(self.stream, "isatty") and self.stream.isatty())
        self.model.train()
        # The lesson's MLP in one process trains with a hand-written step (see ``mnistlab.lean``).
        lean = None
        if self.lean and ddp is None and LeanMLP.supports(self.model):
            lean = LeanMLP(self.model, self.loss_fn.label_smoothing, self.precision)
        # Ctrl-C under torchrun reaches every rank at a different step; a graceful stop would need the
        # ranks to agree each step, so a multi-process run stops at once and resumes from its last save.
        graceful = run is not None and ddp is None
        with _SigintFlag() if graceful else contextlib.nullcontext() as sigint:
            while state["epoch"] < epochs:
                epoch = state["epoch"]
                if state["step"] == 0:
                    shuffle_epoch_start = g_shuffle.get_state()
                    perm = torch.randperm(n, generator=g_shuffle)
                else:  # resumed mid-epoch: regenerate this epoch's permutation
                    g_tmp = torch.Generator().manual_seed(0)
                    g_tmp.set_state(shuffle_epoch_start)
                    perm = torch.randperm(n, generator=g_tmp)
                perm = perm.to(self.device)
                if verbose:
                    print(f"Epoch {epoch + 1}/{epochs}", file=self.stream, flush=True)
                bar = Progbar(steps_per_epoch, stream=self.stream, enabled=bool(verbose))
                t0 = time.perf_counter()
                sums = state["sums"].to(self.device, acc)  # loss sum, correct count, samples seen
                for step in range(state["step"], steps_per_epoch):
                    idx = perm[step * batch_size : (step + 1) * batch_size]
                    if ddp is not None:  # this rank's slice of the global batch
                        global_n = len(idx)
                        idx = idx.tensor_split(world)[rank]
                    xb, yb = X.index_select(0, idx), Y.index_select(0, idx)
                    if self.augment is not None:
                        xb = self.augment(xb, g_aug)
                    factor = lr_at(state["global_step"], total_steps, 1.0, self.schedule, self.warmup)
                    for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
                        group["lr"] = base * factor
                    if self.channels_last:
                        xb = xb.contiguous(memory_format=torch.channels_last)
                    if lean is not None:
                        logits, loss = lean.step(xb, yb)
                        loss_sum = loss.to(acc) * len(yb)
                        self.optimizer.step()
                    else:
                        with autocast(self.device, self.precision):
                            logits = net(xb).float()
                            if ddp is None:
                                loss = self.loss_fn(logits, yb)
                                loss_sum = loss.detach().to(acc) * len(yb)
                            else:
                                # DDP averages gradients over ranks; scaled so, the average is the gradient of the
                                # global batch's mean loss, as one process computes it, even for an uneven last batch.
                                loss_sum = nn.functional.cross_entropy(
                                    logits, yb, reduction="sum", label_smoothing=self.loss_fn.label_smoothing
                                )
                                loss = loss_sum * (world / global_n)
                                loss_sum = loss_sum.detach().double()
                        self.optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        self.optimizer.step()
                    with torch.no_grad():
                        sums += torch.stack(
                            (loss_sum, (logits.argmax(1) == yb).sum().to(acc), torch.tensor(float(len(yb)), dtype=acc, device=sums.device))
                        )  # fmt: skip
                    state["global_step"] += 1
                    state["step"] = step + 1
                    if faults.hit("step", state["global_step"]):
                        faults.fire()
                    if bar.dynamic and ddp is None:
                        bar.update(step + 1, self._running(sums) if step + 1 < steps_per_epoch else None)
                    elif live and (step + 1) % LIVE_EVERY == 0 and step + 1 < steps_per_epoch:
                        bar.update(step + 1, self._running(distributed.all_reduce_sum(sums)))
                    stop = sigint is not None and sigint.requested
                    if (
                        run is not None
                        and (stop or (save_every and state["global_step"] % save_every == 0))
                        and step + 1 < steps_per_epoch
                    ):
                        state["sums"] = sums.cpu()
                        state["train_time"] += time.perf_counter() - t0
                        t0 = time.perf_counter()
                        save(run / ckpt.LAST, epoch_done=False)
                        if stop:
                            self._interrupted(run, state, steps_per_epoch, resume_command)
                state["train_time"] += time.perf_counter() - t0
                if ddp is not None:
                    sums = distributed.all_reduce_sum(sums)
                    distributed.sync_buffers(self.model)  # the same model on every rank for validation and saving
                logs = self._running(sums)
                if val is not None and (epoch + 1) % validation_freq == 0:
                    v = self._evaluate(val[0], val[1], eval_batch_size, shard=ddp is not None)
                    logs.update({f"val_{k}": val_v for k, val_v in v.items()})
                bar.update(steps_per_epoch, logs, finalize=True)
                for k, v in logs.items():
                    self.history.history.setdefault(k, []).append(v)
                self.history.epoch.append(epoch)
                self.history.times.append(round(state["train_time"], 4))
                if "val_loss" in logs:
                    self.history.val_epoch.append(epoch)
                state.update(epoch=epoch + 1, step=0, sums=torch.zeros(3, dtype=torch.float64))
                if run is not None:
                    key = best_key if best_key in logs else best_key.removeprefix("val_")
                    improved = key in logs and (
                        "value" not in self.history.best or best_better(logs[key], self.history.best["value"])
                    )
                    if improved:
                        self.history.best = {"monitor": key, "mode": mode, "value": logs[key], "epoch": epoch + 1}
                        save(run / ckpt.BEST, epoch_done=True)
                    save(run / ckpt.LAST, epoch_done=True)
                    if rank == 0:
                        write_history(run, self.history)
                    if faults.hit("epoch", state["epoch"]):
                        faults.fire()
                    if sigint is not None and sigint.requested and state["epoch"] < epochs:
                        self._interrupted(run, state, steps_per_epoch, resume_command)
        self.train_time = state["train_time"]
        return self.history

    @staticmethod
    def _running(sums: torch.Tensor) -> dict[str, float]:
        s = sums.tolist()
        return {"loss": s[0] / max(s[2], 1), ACC: s[1] / max(s[2], 1)}

    def _interrupted(self, run: Path, state: dict, steps_per_epoch: int, command: str | None) -> None:
        where = (
            f"epoch {state['epoch'] + 1} step {state['step']}/{steps_per_epoch}"
            if state["step"]
            else f"the end of epoch {state['epoch']}"
        )
        cmd = command or f"mnistlab train --resume {run}"
        raise TrainingInterrupted(f"interrupted at {where}; saved {run / ckpt.LAST}. Resume with: {cmd}")

    # -- checkpoint state ------------------------------------------------------------------------

    def _save(self, path: Path, state: dict, fingerprint: dict, g_shuffle: torch.Generator, g_aug: torch.Generator,
              shuffle_epoch_start: torch.Tensor, epoch_done: bool) -> None:  # fmt: skip
        if distributed.current() is not None:
            # Mid-epoch, each rank's batch-norm statistics moved with its own last batch; DDP overwrites
            # them with rank 0's at the next forward anyway, so rank 0's are the ones to save and compare.
            distributed.sync_buffers(self.model)
        opt_tensors, opt_meta = ckpt.flatten_optimizer(self.optimizer.state_dict())
        tensors = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        tensors.update(opt_tensors)
        own, rng_meta = self._rank_state(g_aug, state["sums"])
        ranks = None
        if distributed.current() is not None:  # a collective: every rank gets here at the same step
            ranks = self._gather_ranks(own, rng_meta, ckpt.tensors_digest(tensors))
            if not distributed.is_main():
                return
        tensors["rng/shuffle"] = g_shuffle.get_state()
        tensors["rng/shuffle_epoch_start"] = shuffle_epoch_start
        tensors.update(own)
        meta = {
            **self.extra_meta,
            "epoch": state["epoch"], "step": state["step"], "global_step": state["global_step"],
            "epoch_done": epoch_done, "train_time": state["train_time"],
            "fingerprint": fingerprint, "optimizer": opt_meta, "history": self.history.to_dict(),
            "model_spec": getattr(self.model, "spec", None), "rng": rng_meta,
        }  # fmt: skip
        if ranks is not None:
            meta["ranks"] = []
            for r, (r_tensors, r_meta) in enumerate(ranks):
                if r > 0:  # rank 0's own state is stored as a single process stores it
                    tensors.update({f"rank{r}/{k}": v for k, v in r_tensors.items()})
                meta["ranks"].append(r_meta)
        ckpt.save(path, tensors, meta)

    def _rank_state(self, g_aug: torch.Generator, sums: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict]:
        """What differs between ranks: generators and running metric sums, as tensors + JSON."""
        tensors = {"rng/augment": g_aug.get_state(), "rng/torch": torch.get_rng_state(), "train/sums": sums.cpu()}
        if torch.cuda.is_available() and self.device.type == "cuda":
            tensors["rng/cuda"] = torch.cuda.get_rng_state(self.device)
        np_state = np.random.get_state(legacy=False)
        py_state = random.getstate()
        return tensors, {"numpy": _jsonable(np_state), "python": [py_state[0], list(py_state[1]), py_state[2]]}

    def _set_rank_state(self, tensors: dict[str, torch.Tensor], rng_meta: dict, g_aug: torch.Generator) -> None:
        g_aug.set_state(tensors["rng/augment"])
        torch.set_rng_state(tensors["rng/torch"])
        if "rng/cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng/cuda"], self.device)
        np_state = rng_meta["numpy"]
        np_state["state"]["key"] = np.asarray(np_state["state"]["key"], dtype=np.uint32)
        np.random.set_state(np_state)
        py = rng_meta["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))

    @staticmethod
    def _gather_ranks(own: dict[str, torch.Tensor], rng_meta: dict, digest: str) -> list[tuple[dict, dict]]:
        """Every rank's own state (on rank 0), checking on the way that all hold the same weights."""
        note = json.dumps({"rng": rng_meta, "digest": digest}).encode()
        blob = st_save({**own, "meta": torch.frombuffer(bytearray(note), dtype=torch.uint8)})
        ranks = []
        for r, b in enumerate(distributed.all_gather_bytes(blob)):
            tensors = st_load(b)
            ranks.append((tensors, json.loads(bytes(tensors.pop("meta").numpy()))))
            if ranks[-1][1]["digest"] != digest and distributed.is_main():
                raise DistributedError(
                    f"rank {r} holds other weights or optimizer state than rank 0 (digest {ranks[-1][1]['digest'][:12]} "
                    f"≠ {digest[:12]}); the ranks drifted apart, which is a bug"
                )
        return ranks

    def _restore(self, run: Path, fingerprint: dict, epochs: int, steps_per_epoch: int, state: dict,
                 g_shuffle: torch.Generator, g_aug: torch.Generator) -> torch.Tensor:  # fmt: skip
        tensors, meta = ckpt.read(run / ckpt.LAST)
        old = meta.get("fingerprint", {})
        if old.get("data") != fingerprint.get("data"):
            raise CheckpointError(
                f"{run}: cannot resume: the data set changed since the run started "
                f"(content digest {old.get('data')} → {fingerprint.get('data')})"
            )
        was, now = old.get("world_size", 1), fingerprint.get("world_size", 1)
        distributed.check_same_world(run, was, now)
        diffs = [
            f"{k} ({old.get(k)!r} → {fingerprint.get(k)!r})" for k in RESUME_KEYS if old.get(k) != fingerprint.get(k)
        ]
        if diffs:
            raise CheckpointError(f"{run}: cannot resume with different settings: {', '.join(diffs)}")
        if self.settings["schedule"] != "constant" and old.get("total_steps") != steps_per_epoch * epochs:
            planned = old.get("total_steps", 0) // max(steps_per_epoch, 1)
            raise CheckpointError(
                f"{run}: its {self.settings['schedule']} schedule was planned for {planned} epochs; resume with epochs={planned}"
            )
        try:
            self.model.load_state_dict(ckpt.prefixed(tensors, "model/"))
            self.optimizer.load_state_dict(ckpt.unflatten_optimizer(tensors, meta["optimizer"]))
            _match_param_layout(self.optimizer)
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(
                f"{run / ckpt.LAST}: state does not fit this model/optimizer ({str(e).splitlines()[0]})"
            ) from None
        g_shuffle.set_state(tensors["rng/shuffle"])
        rank = distributed.rank() if now > 1 else 0
        own = tensors if rank == 0 else ckpt.prefixed(tensors, f"rank{rank}/")
        try:
            self._set_rank_state(own, meta["rng"] if rank == 0 else meta["ranks"][rank]["rng"], g_aug)
        except (KeyError, IndexError, TypeError):
            raise CheckpointError(f"{run / ckpt.LAST}: holds no saved state for rank {rank}") from None
        self.history = History.from_dict(meta["history"])
        best_file = run / ckpt.BEST
        if best_file.is_file():  # the best value survives restarts, whichever file was written last
            with contextlib.suppress(CheckpointError):
                b = ckpt.read_meta(best_file)["history"].get("best", {})
                if b and (not self.history.best or b.get("value") != self.history.best.get("value")):
                    if b.get("epoch", 0) > self.history.best.get("epoch", 0):
                        self.history.best = b
        state.update(epoch=meta["epoch"], step=meta["step"], global_step=meta["global_step"],
                     train_time=meta["train_time"], sums=own["train/sums"])  # fmt: skip
        return tensors["rng/shuffle_epoch_start"]


def _match_param_layout(optimizer: torch.optim.Optimizer) -> None:
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
