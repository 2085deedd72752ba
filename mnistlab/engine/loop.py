"""The training loop: a Keras-like ``Trainer.fit`` over in-memory tensors, with exact checkpoint/resume.

``fit`` reads as the loop it is: prepare the data, set up (or restore) the state, then for each epoch
``train_epoch`` → ``end_epoch`` (metrics, validation) → the callbacks' ``on_epoch_end``. Saving, the
progress line, early stopping, logs: callbacks (``mnistlab.callbacks``); the engine knows no run folder.

Speed comes from the design, not tricks: the whole data set is one float tensor in memory, a batch is an
``index_select`` of a permutation (no per-sample Python), evaluation runs in large batches, the learning
rate is a pure function of the step (no scheduler state to resume), and batch hooks are called only when
a callback implements them.

Exactness: a checkpoint holds the model, optimizer, ``TrainState`` (epoch, step, metric sums, every
generator), the history and each callback's state. ``N`` epochs straight and ``k`` epochs + kill + resume
give bit-identical weights. Given a distributed context (``Trainer(..., dist=ctx)``), the same ``fit``
trains data-parallel; the checkpoint then also holds every rank's own generators.

>>> from mnistlab.datasets import mnist
>>> from mnistlab.models import mlp
>>> (x, y), (xt, yt) = mnist.load_data()
>>> trainer = Trainer(mlp(), optimizer="adam", lr=1e-3)
>>> history = trainer.fit(x, y, batch_size=32, epochs=5, validation_data=(xt, yt))  # doctest: +SKIP
>>> history.history["val_sparse_categorical_accuracy"][-1]                        # doctest: +SKIP
0.976...
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from mnistlab import checkpoint as ckpt
from mnistlab import distributed, faults
from mnistlab.callbacks import Callback, CallbackList, ProgbarLogger, running_logs
from mnistlab.config import SCHEDULES
from mnistlab.devices import PRECISIONS, accumulator_dtype, pick_device, resolve_precision, warm_vector_math
from mnistlab.engine import steps
from mnistlab.engine.data import TrainData, as_images, as_labels, first_leaf, prepare
from mnistlab.engine.optim import lr_at, make_optimizer
from mnistlab.engine.state import TrainState, match_param_layout, seed_everything
from mnistlab.errors import CheckpointError, ConfigError, DistributedError
from mnistlab.inference import predict_logits, predict_proba
from mnistlab.metrics import ACC, History

if TYPE_CHECKING:
    from mnistlab.distributed import Context

# Settings that must match to resume a run (epochs may grow when the schedule allows it).
RESUME_KEYS = ("model", "optimizer", "lr", "momentum", "weight_decay", "schedule", "warmup",
               "label_smoothing", "batch_size", "seed", "augment", "data", "n_train", "validation_freq",
               "precision")  # fmt: skip
# What ``augment`` is when it is not a spec: a batch and the run's generator in, the augmented batch out.
Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

SOFTMAX_WARNING = (
    "the model's last layer is {name}, but the loss (cross-entropy) expects logits: training sees a double "
    "softmax and learns slowly; remove the last layer (predict() applies the softmax)"
)


class Trainer:
    """Compile-and-fit for any ``nn.Module`` that maps ``(N, C, H, W)`` images to logits.

    ``augment`` is an augmentation spec string (``"rotation=10,shift=0.1"``, also accepted as
    ``augment_spec``) or a callable ``(batch, generator) -> batch`` (then ``augment_spec`` names it in
    checkpoints), applied to training batches only. The lesson's MLP trains with a
    hand-written step (``mnistlab.lean``) unless ``lean=False``. ``dist``: the context from
    ``mnistlab.distributed.setup()`` to train data-parallel; without it a Trainer trains alone.
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
        augment: str | Augmentation | None = None,
        augment_spec: str = "",
        precision: str = "fp32",
        channels_last: bool = False,
        verbose: int = 1,
        lean: bool = True,
        dist: Context | None = None,
    ) -> None:
        _check(schedule, label_smoothing, lr, precision)
        warm_vector_math()  # the same last bits in every process (devices.warm_vector_math)
        self.dist = dist
        if dist is not None and device == "auto":
            device = dist.device
        self.device = device if isinstance(device, torch.device) else pick_device(device)
        # "auto": bf16 only where the hardware has native bf16 units (devices.resolve_precision)
        self.precision, self.precision_reason = resolve_precision(precision, self.device)
        self.channels_last = channels_last
        self.model = (
            model.to(self.device, memory_format=torch.channels_last) if channels_last else model.to(self.device)
        )
        lr = self._use_optimizer(optimizer, lr, momentum, weight_decay)
        augment, augment_spec = _augmentation(augment, augment_spec)
        self.settings = {
            "optimizer": self.optimizer_name, "lr": lr, "momentum": momentum, "weight_decay": weight_decay,
            "schedule": schedule, "warmup": warmup, "label_smoothing": label_smoothing, "seed": seed,
            "augment": augment_spec, "precision": self.precision,
        }  # fmt: skip
        self.schedule, self.warmup, self.seed = schedule, warmup, seed
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.augment, self.verbose, self.lean = augment, verbose, lean  # lean=False: always autograd
        self.stream = sys.stdout
        # Extra JSON saved in every checkpoint (a run puts its config and data set identity here).
        self.extra_meta: dict[str, Any] = {}
        self.history = History()
        self.stop_training = False  # set by a callback (EarlyStopping): stop after this epoch
        self.interrupted = False  # set on Ctrl-C (GracefulInterrupt): stop after this step
        self.state: TrainState | None = None
        last = first_leaf(model, last=True)
        if isinstance(last, (nn.Softmax, nn.LogSoftmax)):
            warnings.warn(SOFTMAX_WARNING.format(name=type(last).__name__), UserWarning, stacklevel=2)

    def _use_optimizer(
        self, optimizer: str | torch.optim.Optimizer, lr: float, momentum: float, weight_decay: float
    ) -> float:
        """Set ``self.optimizer`` and its base learning rates; return the learning rate the run reports."""
        if isinstance(optimizer, torch.optim.Optimizer):
            # The optimizer's own learning rates are the base; ``lr`` is ignored, as in Keras.
            self.optimizer, self.optimizer_name = optimizer, type(optimizer).__name__.lower()
            lr = float(optimizer.param_groups[0]["lr"])
        else:
            self.optimizer = make_optimizer(
                optimizer, self.model.parameters(), lr, momentum, weight_decay, self.device, model=self.model
            )
            self.optimizer_name = optimizer
        self.base_lrs = [float(g["lr"]) for g in self.optimizer.param_groups]
        return lr

    @property
    def is_main(self) -> bool:
        """True on the process that prints and writes files (rank 0, or a process training alone)."""
        return self.dist is None or self.dist.is_main

    # -- evaluation ------------------------------------------------------------------------------

    def evaluate(self, x: Any, y: Any, batch_size: int = 4096) -> dict[str, float]:
        """``{"loss", "sparse_categorical_accuracy"}`` on ``(x, y)``, in eval mode, never augmented."""
        return self._evaluate(as_images(x, self.model, self.device), as_labels(y, self.device), batch_size)

    def _evaluate(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shard: bool = False) -> dict[str, float]:
        if shard and self.dist is not None:  # each rank scores its slice; the sums are added up across ranks
            world, rank = self.dist.world_size, self.dist.rank
            xs, ys = x.tensor_split(world)[rank], y.tensor_split(world)[rank]
            logits = predict_logits(self.model, xs, batch_size, self.precision, self.channels_last)
            s = self.dist.all_reduce_sum(
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

    def fit(self, x: Any, y: Any = None, batch_size: int = 32, epochs: int = 5,
            validation_data: tuple[Any, Any] | None = None, validation_freq: int = 1, *,
            validation_split: float = 0.0, callbacks: list[Callback] | None = None,
            resume_from: str | Path | None = None, eval_batch_size: int = 4096,
            data_identity: dict | None = None) -> History:  # fmt: skip
        """Train to ``epochs`` in total, as Keras's ``fit``; ``resume_from`` continues from a checkpoint.

        ``x``: arrays/tensors with labels ``y``, a ``torch.utils.data.Dataset`` or a ``DataLoader``.
        ``validation_split``: the last fraction (or number) of the arrays, held out before shuffling.
        """
        data = self.prepare(x, y, batch_size, epochs, validation_data, validation_freq, validation_split)
        cbs = CallbackList(_with_progbar(callbacks), self)
        pending = self.begin(data, resume_from, (data_identity or {}).get("digest", ""))
        if pending is None:
            return self.history  # resumed a finished run: nothing to do
        step = steps.choose(self.model, self.optimizer, self.loss_fn, self.device, self.precision,
                            self.channels_last, self.dist, self.lean)  # fmt: skip
        if isinstance(step, steps.LeanStep) and self.augment is None and data.x is not None:
            t0 = time.perf_counter()
            data.x = step.stage(data.x)  # bf16: the training set converted once, not every batch
            self.state.train_time += time.perf_counter() - t0  # training time: it stands for a per-batch cast
        self.model.train()
        self.callbacks, logs = cbs, {}
        try:
            cbs.on_train_begin()
            cbs.load_state(*pending)
            while self.state.epoch < epochs and not (self.stop_training or self.interrupted):
                epoch = self.state.epoch
                cbs.on_epoch_begin(epoch)
                if not self.train_epoch(data, step, cbs):
                    break  # interrupted inside the epoch
                logs = self.end_epoch(data, epoch, validation_freq, eval_batch_size)
                cbs.on_epoch_end(epoch, logs)
                if faults.hit("epoch", self.state.epoch):
                    faults.fire()
            cbs.on_train_end(logs)
        finally:
            cbs.close()
        self.train_time = self.state.train_time
        return self.history

    def prepare(self, x: Any, y: Any, batch_size: int, epochs: int, validation_data: Any, validation_freq: int,
                validation_split: float) -> TrainData:  # fmt: skip
        """Check ``fit``'s arguments and turn the data into tensors on the device."""
        if epochs < 1 or batch_size < 1 or validation_freq < 1:
            raise ConfigError(
                f"epochs, batch_size and validation_freq must be ≥ 1, got {epochs}, {batch_size}, {validation_freq}"
            )
        world = self.dist.world_size if self.dist is not None else 1
        distributed.per_rank_batch(batch_size, world)
        data = prepare(x, y, batch_size, validation_data, validation_split, self.model, self.device)
        if data.loader is not None and world > 1:
            raise ConfigError("a DataLoader cannot be split among processes; pass arrays or a Dataset")
        if 0 < data.n % batch_size < world and data.loader is None:
            raise ConfigError(
                f"the last batch of each epoch would hold {data.n % batch_size} images, fewer than the {world} "
                "processes; change the batch size or the number of training images"
            )
        self.epochs, self.steps_per_epoch = epochs, data.steps_per_epoch
        self.total_steps = self.steps_per_epoch * epochs
        self.has_validation = data.val is not None
        self.fingerprint = {
            **self.settings, "batch_size": batch_size, "validation_freq": validation_freq, "n_train": data.n,
            "model": getattr(self.model, "spec", type(self.model).__name__), "total_steps": self.total_steps,
        }  # fmt: skip
        if data.n_val_split:
            self.fingerprint["n_val_split"] = data.n_val_split
        if world > 1:
            self.fingerprint["world_size"] = world
        return data

    def begin(self, data: TrainData, resume_from: str | Path | None, digest: str) -> tuple[dict, dict] | None:
        """A fresh state, or the one in ``resume_from``; returns the callbacks' saved state (None: nothing to do)."""
        self.fingerprint["data"] = digest
        self.stop_training = self.interrupted = False
        self.state = TrainState.fresh(self.seed, self.dist.rank if self.dist else 0, self.device)
        if resume_from is None:
            seed_everything(self.seed)
            self.history = History()
            return {}, {}
        meta, tensors = self._restore(Path(resume_from))
        if meta.finished(self.epochs):
            if self.verbose and self.is_main:
                print(f"{resume_from}: already trained to {meta.epoch} of {self.epochs} epochs; nothing to do",
                      file=self.stream)  # fmt: skip
            return None
        self.history.resumed_at.append(self.state.epoch + self.state.step / self.steps_per_epoch)
        return meta.callbacks, {k: v for k, v in tensors.items() if k.startswith("callbacks/")}

    def train_epoch(self, data: TrainData, strategy: steps.Step, cbs: CallbackList) -> bool:
        """Train on this epoch's batches from ``state.step`` on; False when interrupted inside it."""
        st = self.state
        assert st is not None
        step, shard, augment = strategy.step, getattr(strategy, "shard", None), self.augment
        groups = list(zip(self.optimizer.param_groups, self.base_lrs, strict=True))
        begin, end = cbs.batch_begin, cbs.batch_end
        sums = st.sums = st.sums.to(self.device, accumulator_dtype(self.device))  # MPS has no float64
        t0 = time.perf_counter()
        for xb, yb in data.batches(st, self.device, shard):
            if begin:
                cbs.on_train_batch_begin(st.step)
            if augment is not None:
                xb = augment(xb, st.augment)
            factor = lr_at(st.global_step, self.total_steps, 1.0, self.schedule, self.warmup) * st.lr_factor
            for group, base in groups:
                group["lr"] = base * factor
            logits, loss_sum = step(xb, yb)
            # max(1).indices is argmax(1) (the first maximum); on the lean step's transposed (classes-major)
            # logits it is ~10x faster (argmax walks the strided rows one by one)
            with torch.no_grad():
                sums += torch.stack(
                    (loss_sum.to(sums.dtype), (logits.max(1).indices == yb).sum().to(sums.dtype),
                     torch.tensor(float(len(yb)), dtype=sums.dtype, device=sums.device))
                )  # fmt: skip
            st.global_step += 1
            st.step += 1
            if faults.hit("step", st.global_step):
                faults.fire()
            if end:  # the time a callback takes (a save) is not training time
                st.train_time += time.perf_counter() - t0
                cbs.on_train_batch_end(st.step - 1, running_logs(sums))
                t0 = time.perf_counter()
            if self.interrupted and st.step < self.steps_per_epoch:
                st.train_time += time.perf_counter() - t0
                return False
        st.train_time += time.perf_counter() - t0
        return True

    def end_epoch(self, data: TrainData, epoch: int, validation_freq: int, eval_batch_size: int) -> dict[str, float]:
        """The epoch's metrics (summed over ranks) and validation, recorded in the history."""
        st = self.state
        assert st is not None
        sums = st.sums
        if self.dist is not None:
            sums = self.dist.all_reduce_sum(sums)
            self.dist.sync_buffers(self.model)  # the same model on every rank for validation and saving
        logs = running_logs(sums)
        if data.val is not None and (epoch + 1) % validation_freq == 0:
            v = self._evaluate(data.val[0], data.val[1], eval_batch_size, shard=self.dist is not None)
            logs.update({f"val_{k}": val_v for k, val_v in v.items()})
        for k, v in logs.items():
            self.history.history.setdefault(k, []).append(v)
        self.history.epoch.append(epoch)
        self.history.times.append(round(st.train_time, 4))
        if "val_loss" in logs:
            self.history.val_epoch.append(epoch)
        st.next_epoch()
        return logs

    # -- checkpoints -----------------------------------------------------------------------------

    def save_checkpoint(self, path: str | Path, epoch_done: bool = True) -> None:
        """Write the whole training state to ``path`` (a collective under DDP; rank 0 writes)."""
        assert self.state is not None
        if self.dist is not None:
            # Mid-epoch, each rank's batch-norm statistics moved with its own last batch; DDP overwrites
            # them with rank 0's at the next forward anyway, so rank 0's are the ones to save and compare.
            self.dist.sync_buffers(self.model)
        opt_tensors, opt_meta = ckpt.flatten_optimizer(self.optimizer.state_dict())
        tensors = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        tensors.update(opt_tensors)
        shared, own, rng = self.state.to_tensors(self.device)
        ranks = None
        if self.dist is not None:  # a collective: every rank gets here at the same step
            ranks = self._gather_ranks(own, rng, ckpt.tensors_digest(tensors))
            if not self.dist.is_main:
                return
        callbacks = getattr(self, "callbacks", None)
        tensors.update({**shared, **own, **(callbacks.state_tensors() if callbacks else {})})
        meta = ckpt.CheckpointMeta(
            **self.state.counters(), epoch_done=epoch_done, stopped=self.stop_training, fingerprint=self.fingerprint,
            optimizer=opt_meta, history=self.history.to_dict(), model_spec=getattr(self.model, "spec", None),
            rng=rng, callbacks=callbacks.state_dict() if callbacks else {}, extra=dict(self.extra_meta),
        )  # fmt: skip
        if ranks is not None:
            meta.ranks = [r_meta for _, r_meta in ranks]
            for r, (r_tensors, _) in enumerate(ranks[1:], start=1):  # rank 0's is stored as a single process's
                tensors.update({f"rank{r}/{k}": v for k, v in r_tensors.items()})
        ckpt.save(path, tensors, meta.to_dict())

    def _gather_ranks(self, own: dict[str, torch.Tensor], rng_meta: dict, digest: str) -> list[tuple[dict, dict]]:
        """Every rank's own state (on rank 0), checking on the way that all hold the same weights."""
        assert self.dist is not None
        note = json.dumps({"rng": rng_meta, "digest": digest}).encode()
        blob = st_save({**own, "meta": torch.frombuffer(bytearray(note), dtype=torch.uint8)})
        ranks = []
        for r, b in enumerate(self.dist.all_gather_bytes(blob)):
            tensors = st_load(b)
            ranks.append((tensors, json.loads(bytes(tensors.pop("meta").numpy()))))
            if ranks[-1][1]["digest"] != digest and self.dist.is_main:
                raise DistributedError(
                    f"rank {r} holds other weights or optimizer state than rank 0 (digest {ranks[-1][1]['digest'][:12]} "
                    f"≠ {digest[:12]}); the ranks drifted apart, which is a bug"
                )
        return ranks

    def _restore(self, path: Path) -> tuple[ckpt.CheckpointMeta, dict[str, torch.Tensor]]:
        """Load model, optimizer, state and history from ``path`` after checking it fits this run."""
        assert self.state is not None
        tensors, raw = ckpt.read(path)
        missing = [k for k in ("fingerprint", "optimizer", "history", "rng") if k not in raw]
        if missing:
            raise CheckpointError(
                f"{path}: not a training checkpoint (no saved {', '.join(missing)}); nothing to resume"
            )
        meta = ckpt.CheckpointMeta.from_dict(raw, path)
        _check_fingerprint(path, meta.fingerprint, self.fingerprint, self.settings["schedule"], self.steps_per_epoch)
        try:
            self.model.load_state_dict(ckpt.prefixed(tensors, "model/"))
            self.optimizer.load_state_dict(ckpt.unflatten_optimizer(tensors, meta.optimizer))
            match_param_layout(self.optimizer)
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(
                f"{path}: state does not fit this model/optimizer ({str(e).splitlines()[0]})"
            ) from None
        rank = self.dist.rank if self.dist is not None else 0
        own = tensors if rank == 0 else ckpt.prefixed(tensors, f"rank{rank}/")
        try:
            rng = meta.rng if rank == 0 else meta.ranks[rank]["rng"]  # type: ignore[index]
            self.state.from_tensors(tensors, own, rng, meta.to_dict(), self.device)
        except (KeyError, IndexError, TypeError):
            raise CheckpointError(f"{path}: holds no saved state for rank {rank}") from None
        try:
            self.history = History.from_dict(meta.history)
        except (TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"{path}: its saved history is unreadable ({e})") from None
        if len(self.history.epoch) != meta.epoch:
            raise CheckpointError(
                f"{path}: its history holds {len(self.history.epoch)} epochs, but it says {meta.epoch} are done"
            )
        return meta, tensors


def _check(schedule: str, label_smoothing: float, lr: float, precision: str) -> None:
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {schedule!r} (choose from {', '.join(SCHEDULES)})")
    if not 0 <= label_smoothing < 1:
        raise ConfigError(f"label smoothing must lie in [0, 1), got {label_smoothing!r}")
    if not lr > 0:
        raise ConfigError(f"learning rate must be > 0, got {lr!r}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def _check_fingerprint(path: Path, old: dict, new: dict, schedule: str, steps_per_epoch: int) -> None:
    """A checkpoint resumes only the run it came from: same data, processes and settings."""
    if old.get("data") != new.get("data"):
        raise CheckpointError(
            f"{path}: cannot resume: the data set changed since the run started "
            f"(content digest {old.get('data')} → {new.get('data')})"
        )
    distributed.check_same_world(path.parent, old.get("world_size", 1), new.get("world_size", 1))
    keys = (*RESUME_KEYS, "n_val_split")
    diffs = [f"{k} ({old.get(k)!r} → {new.get(k)!r})" for k in keys if old.get(k) != new.get(k)]
    if diffs:
        raise CheckpointError(f"{path}: cannot resume with different settings: {', '.join(diffs)}")
    if schedule != "constant" and old.get("total_steps") != new["total_steps"]:
        planned = old.get("total_steps", 0) // max(steps_per_epoch, 1)
        raise CheckpointError(
            f"{path}: its {schedule} schedule was planned for {planned} epochs; resume with epochs={planned}"
        )


def _with_progbar(callbacks: list[Callback] | None) -> list[Callback]:
    cbs = list(callbacks or [])
    return cbs if any(isinstance(cb, ProgbarLogger) for cb in cbs) else [*cbs, ProgbarLogger()]


def _augmentation(augment: str | Augmentation | None, spec: str) -> tuple[Augmentation | None, str]:
    """The augmentation and its spec from what ``Trainer`` was given: a spec string, a callable, or a spec alone."""
    if isinstance(augment, str):
        spec, augment = augment, None
    if augment is None and spec:  # a spec alone (as a config gives it) builds the augmentation
        from mnistlab.augment import Augment

        augment = Augment.parse(spec)
    return augment, spec
