"""Keras's callbacks, with Keras's names and meanings: hooks the training loop calls, and the common ones.

``Trainer.fit(callbacks=[...])`` calls, on every callback in order, ``on_train_begin``, then for each
epoch ``on_epoch_begin``, ``on_train_batch_begin`` / ``on_train_batch_end`` around every step, and
``on_epoch_end`` with the epoch's logs (``loss``, ``sparse_categorical_accuracy`` and their ``val_``
twins); ``on_train_end`` last. ``self.trainer`` (and ``self.model``) are set by ``fit``.

Batch hooks cost nothing unless a callback overrides them. A stateful callback (``EarlyStopping``,
``ReduceLROnPlateau``, ``ModelCheckpoint``'s best value) returns its state from ``state_dict`` and it is
stored in every checkpoint the run writes, so a resumed run continues exactly where it was killed.
Put callbacks that change the run (stopping, the learning rate) before those that save it.

>>> from mnistlab.engine import Trainer                                          # doctest: +SKIP
>>> stop = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
>>> trainer.fit(x, y, epochs=20, validation_split=0.1, callbacks=[stop])        # doctest: +SKIP
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from mnistlab.errors import ConfigError, MnistlabError
from mnistlab.metrics import ACC, write_history
from mnistlab.progress import Progbar

HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_train_batch_begin",
         "on_train_batch_end")  # fmt: skip
# In a multi-process run, a TTY's progress line shows metrics summed over ranks every this many steps.
LIVE_EVERY = 16


class TrainingInterrupted(MnistlabError):
    """Training stopped on SIGINT or SIGTERM after saving its checkpoint; the message holds the resume command.

    The exit code is the shell's for death by that signal: 130 (SIGINT), 143 (SIGTERM).
    """

    exit_code = 130

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Callback:
    """The base class: every hook does nothing. ``self.trainer`` is the ``Trainer`` that runs ``fit``."""

    trainer: Any = None

    def set_trainer(self, trainer: Any) -> None:
        self.trainer = trainer

    @property
    def model(self) -> torch.nn.Module:
        return self.trainer.model

    def on_train_begin(self, logs: dict | None = None) -> None: ...
    def on_train_end(self, logs: dict | None = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None: ...
    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None: ...
    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None: ...

    def implements(self, hook: str) -> bool:
        """Whether ``hook`` does anything here (the loop skips hooks no callback implements)."""
        return getattr(type(self), hook) is not getattr(Callback, hook)

    def state_dict(self) -> dict | None:
        """JSON state saved in checkpoints (None: stateless)."""
        return None

    def load_state_dict(self, state: dict) -> None: ...

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None: ...

    def close(self) -> None:
        """Release what ``on_train_begin`` took (a signal handler, files); called even when ``fit`` fails."""


class CallbackList:
    """The callbacks of one ``fit``, called in order; batch hooks only on the callbacks that implement them."""

    def __init__(self, callbacks: Iterable[Callback], trainer: Any) -> None:
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise ConfigError(f"callbacks must be mnistlab.callbacks.Callback objects, got {type(cb).__name__}")
            cb.set_trainer(trainer)
        self.keys = _unique_keys(self.callbacks)
        self.batch_begin: list[Callback] = []
        self.batch_end: list[Callback] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        for cb in self.callbacks:
            cb.on_train_begin(logs)
        # Decided once, after on_train_begin (a progress bar knows by then whether it redraws per step).
        self.batch_begin = [cb for cb in self.callbacks if cb.implements("on_train_batch_begin")]
        self.batch_end = [cb for cb in self.callbacks if cb.implements("on_train_batch_end")]

    def on_train_end(self, logs: dict | None = None) -> None:
        for cb in self.callbacks:
            cb.on_train_end(logs)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        for cb in self.batch_begin:
            cb.on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        for cb in self.batch_end:
            cb.on_train_batch_end(batch, logs)

    def close(self) -> None:
        for cb in self.callbacks:
            cb.close()

    def state_dict(self) -> dict:
        states = {key: cb.state_dict() for key, cb in zip(self.keys, self.callbacks, strict=True)}
        return {k: s for k, s in states.items() if s is not None}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for key, cb in zip(self.keys, self.callbacks, strict=True):
            out.update({f"callbacks/{key}/{name}": t for name, t in cb.state_tensors().items()})
        return out

    def load_state(self, states: dict, tensors: dict[str, torch.Tensor]) -> None:
        for key, cb in zip(self.keys, self.callbacks, strict=True):
            if key in states:
                cb.load_state_dict(states[key])
            prefix = f"callbacks/{key}/"
            own = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            if own:
                cb.load_state_tensors(own)


def _unique_keys(callbacks: list[Callback]) -> list[str]:
    seen: dict[str, int] = {}
    keys = []
    for cb in callbacks:
        name = type(cb).__name__
        seen[name] = seen.get(name, 0) + 1
        keys.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return keys


# -- watching a metric -----------------------------------------------------------------------------


class _Monitor:
    """``monitor`` and ``mode`` as Keras reads them: ``auto`` is max for accuracies, min otherwise."""

    def __init__(self, monitor: str, mode: str, min_delta: float = 0.0) -> None:
        if mode not in ("auto", "min", "max"):
            raise ConfigError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor = monitor
        self.mode = mode if mode != "auto" else ("max" if "acc" in monitor else "min")
        self.min_delta = abs(min_delta)
        self.best: float | None = None

    def better(self, current: float, reference: float | None) -> bool:
        if reference is None:
            return True
        if self.mode == "max":
            return current - self.min_delta > reference
        return current + self.min_delta < reference

    def value(self, logs: dict | None, trainer: Any) -> float | None:
        """The monitored value in ``logs``; a run without validation data watches the training metric."""
        logs = logs or {}
        if self.monitor in logs:
            return float(logs[self.monitor])
        if not getattr(trainer, "has_validation", True) and self.monitor.removeprefix("val_") in logs:
            return float(logs[self.monitor.removeprefix("val_")])
        return None


class ModelCheckpoint(Callback):
    """Save the training state to ``filepath`` at each epoch's end, or only when ``monitor`` improved.

    ``save_best_only``: keep the best epoch (the run's ``history.best`` says which); ``save_every=N``
    also saves every N steps inside an epoch, so a kill loses at most N steps. The file is a full
    checkpoint: ``Trainer.fit(resume_from=filepath)`` continues from it exactly.
    """

    def __init__(self, filepath: str | Path, monitor: str = "val_loss", mode: str = "auto",
                 save_best_only: bool = False, save_every: int = 0) -> None:  # fmt: skip
        if save_every < 0:
            raise ConfigError(f"save_every must be ≥ 0, got {save_every}")
        self.filepath = Path(filepath)
        self.watch = _Monitor(monitor, mode)
        self.save_best_only, self.save_every = save_best_only, save_every

    def implements(self, hook: str) -> bool:
        return self.save_every > 0 if hook == "on_train_batch_end" else super().implements(hook)

    def on_train_begin(self, logs: dict | None = None) -> None:
        best = self.trainer.history.best  # resuming a checkpoint from before callbacks had state
        if self.save_best_only and self.watch.best is None and self.watch.monitor.endswith(best.get("monitor", "-")):
            self.watch.best = best.get("value")

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        st = self.trainer.state
        if st.global_step % self.save_every == 0 and st.step < self.trainer.steps_per_epoch:
            self.trainer.save_checkpoint(self.filepath, epoch_done=False)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not self.save_best_only:
            self.trainer.save_checkpoint(self.filepath)
            return
        current = self.watch.value(logs, self.trainer)
        if current is None or not self.watch.better(current, self.watch.best):
            return
        self.watch.best = current
        key = self.watch.monitor if self.watch.monitor in (logs or {}) else self.watch.monitor.removeprefix("val_")
        self.trainer.history.best = {"monitor": key, "mode": self.watch.mode, "value": current, "epoch": epoch + 1}
        self.trainer.save_checkpoint(self.filepath)

    def state_dict(self) -> dict | None:
        return {"best": self.watch.best} if self.save_best_only else None

    def load_state_dict(self, state: dict) -> None:
        self.watch.best = state.get("best")


class EarlyStopping(Callback):
    """Stop training when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    ``restore_best_weights``: when it stops, the model gets the best epoch's weights back (bit for bit).
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0, mode: str = "auto",
                 baseline: float | None = None, restore_best_weights: bool = False,
                 start_from_epoch: int = 0) -> None:  # fmt: skip
        if patience < 0:
            raise ConfigError(f"patience must be ≥ 0, got {patience}")
        self.watch = _Monitor(monitor, mode, min_delta)
        self.patience, self.baseline, self.start_from_epoch = patience, baseline, start_from_epoch
        self.restore_best_weights = restore_best_weights
        self.wait, self.stopped_epoch, self.best_epoch = 0, 0, 0
        self.best_weights: dict[str, torch.Tensor] | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.wait, self.stopped_epoch, self.best_epoch = 0, 0, 0  # a resumed run loads its saved state after this
        self.watch.best, self.best_weights = None, None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        current = self.watch.value(logs, self.trainer)
        if current is None or epoch < self.start_from_epoch:
            return  # not validated this epoch (validation_freq), or still warming up
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = _copy_weights(self.model)
        self.wait += 1
        if self.watch.better(current, self.watch.best):
            self.watch.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = _copy_weights(self.model)
            if self.baseline is None or self.watch.better(current, self.baseline):
                self.wait = 0
                return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.trainer.stop_training = True
            if self.restore_best_weights and self.best_weights is not None:
                self.model.load_state_dict(self.best_weights)

    def state_dict(self) -> dict:
        return {"wait": self.wait, "best": self.watch.best, "best_epoch": self.best_epoch,
                "stopped_epoch": self.stopped_epoch}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        self.wait, self.watch.best = state["wait"], state["best"]
        self.best_epoch, self.stopped_epoch = state["best_epoch"], state["stopped_epoch"]

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.best_weights) if self.best_weights is not None else {}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        device = next(self.model.parameters()).device
        self.best_weights = {k: v.to(device) for k, v in tensors.items()}


def _copy_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved for ``patience`` epochs.

    The rate stays a pure function of the step: the scheduled rate times the run's current factor
    (``trainer.state.lr_factor``), which is saved with the run. ``min_lr`` bounds the base rate × factor.
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, mode: str = "auto",
                 min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0) -> None:  # fmt: skip
        if not 0 < factor < 1:
            raise ConfigError(f"ReduceLROnPlateau's factor must lie in (0, 1), got {factor!r}")
        self.watch = _Monitor(monitor, mode, min_delta)
        self.factor, self.patience, self.cooldown, self.min_lr = factor, patience, cooldown, min_lr
        self.wait, self.cooldown_counter = 0, 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.wait, self.cooldown_counter, self.watch.best = 0, 0, None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        current = self.watch.value(logs, self.trainer)
        if current is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self.watch.better(current, self.watch.best):
            self.watch.best, self.wait = current, 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience:
                st = self.trainer.state
                floor = self.min_lr / max(self.trainer.base_lrs)
                if st.lr_factor > floor:
                    st.lr_factor = max(st.lr_factor * self.factor, floor)
                self.cooldown_counter, self.wait = self.cooldown, 0

    def state_dict(self) -> dict:
        return {"wait": self.wait, "cooldown_counter": self.cooldown_counter, "best": self.watch.best}

    def load_state_dict(self, state: dict) -> None:
        self.wait, self.cooldown_counter, self.watch.best = state["wait"], state["cooldown_counter"], state["best"]


class CSVLogger(Callback):
    """Rewrite ``metrics.csv`` (one row per epoch) and ``history.json`` in ``directory`` after every epoch.

    Unlike Keras's, it takes a folder and rewrites both files atomically from the history, so a run
    killed and resumed ends with the same files as one that never stopped.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.trainer.is_main:
            self.directory.mkdir(parents=True, exist_ok=True)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.trainer.is_main:
            write_history(self.directory, self.trainer.history)


class ProgbarLogger(Callback):
    """Keras's progress line per epoch (``fit`` adds one unless given); redrawn per step only on a TTY."""

    def on_train_begin(self, logs: dict | None = None) -> None:
        t = self.trainer
        self.enabled = bool(t.verbose) and t.is_main
        self.stream = t.stream
        tty = self.enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.live = t.dist.broadcast_flag(tty) if t.dist is not None else False  # every rank must join
        self.dynamic = tty and t.dist is None

    def implements(self, hook: str) -> bool:
        if hook == "on_train_batch_end":
            return self.dynamic or self.live
        return super().implements(hook)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.enabled:
            print(f"Epoch {epoch + 1}/{self.trainer.epochs}", file=self.stream, flush=True)
        self.bar = Progbar(self.trainer.steps_per_epoch, stream=self.stream, enabled=self.enabled)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step, total = batch + 1, self.trainer.steps_per_epoch
        if self.live:  # a collective: every rank reduces, rank 0 draws
            if step % LIVE_EVERY == 0 and step < total:
                self.bar.update(step, running_logs(self.trainer.dist.all_reduce_sum(self.trainer.state.sums)))
        else:
            self.bar.update(step, logs if step < total else None)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.bar.update(self.trainer.steps_per_epoch, logs, finalize=True)


def running_logs(sums: torch.Tensor) -> dict[str, float]:
    """``{"loss", ACC}`` from the running sums (loss sum, correct count, samples seen)."""
    s = sums.tolist()
    return {"loss": s[0] / max(s[2], 1), ACC: s[1] / max(s[2], 1)}


class TensorBoard(Callback):
    """Write each epoch's metrics and learning rate as TensorBoard event files under ``log_dir``.

    As Keras does: ``log_dir/train`` holds ``epoch_loss``, ``epoch_sparse_categorical_accuracy`` and
    ``epoch_learning_rate``; ``log_dir/validation`` the validation metrics under the same tags. Needs the
    ``tensorboard`` package (``pip install 'mnistlab[tensorboard]'``). View with ``tensorboard --logdir``.
    """

    def __init__(self, log_dir: str | Path = "logs") -> None:
        self.log_dir = Path(log_dir)
        self.writers: dict[str, Any] = {}

    def on_train_begin(self, logs: dict | None = None) -> None:
        if not self.trainer.is_main:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "TensorBoard logs need the tensorboard package: pip install 'mnistlab[tensorboard]'"
            ) from None
        # A resumed run drops what an earlier, killed process logged from this epoch on.
        purge = self.trainer.state.epoch if self.trainer.state.epoch else None
        self.writers = {
            part: SummaryWriter(str(self.log_dir / part), purge_step=purge) for part in ("train", "validation")
        }

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not self.writers:
            return
        for k, v in (logs or {}).items():
            part = "validation" if k.startswith("val_") else "train"
            self.writers[part].add_scalar(f"epoch_{k.removeprefix('val_')}", v, epoch)
        lr = self.trainer.optimizer.param_groups[0]["lr"]
        self.writers["train"].add_scalar("epoch_learning_rate", lr, epoch)
        for w in self.writers.values():
            w.flush()

    def close(self) -> None:
        for w in self.writers.values():
            w.close()
        self.writers = {}


class LambdaCallback(Callback):
    """A callback from plain functions: ``LambdaCallback(on_epoch_end=lambda epoch, logs: print(logs))``."""

    def __init__(self, **hooks: Callable[..., Any] | None) -> None:
        unknown = sorted(set(hooks) - set(HOOKS))
        if unknown:
            raise ConfigError(f"LambdaCallback: unknown hook {unknown[0]!r} (known: {', '.join(HOOKS)})")
        self.hooks = {k: f for k, f in hooks.items() if f is not None}

    def implements(self, hook: str) -> bool:
        return hook in self.hooks

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._call("on_train_begin", logs)

    def on_train_end(self, logs: dict | None = None) -> None:
        self._call("on_train_end", logs)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._call("on_epoch_begin", epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._call("on_epoch_end", epoch, logs)

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._call("on_train_batch_begin", batch, logs)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._call("on_train_batch_end", batch, logs)

    def _call(self, hook: str, *args: Any) -> None:
        if hook in self.hooks:
            self.hooks[hook](*args)


class GracefulInterrupt(Callback):
    """Ctrl-C (SIGINT) or SIGTERM stops after the current step, saves ``filepath`` and raises
    ``TrainingInterrupted`` (exit code 130 for SIGINT, 143 for SIGTERM, as a shell reports death by them).

    A second signal stops at once. Only in the main thread of a single process: under torchrun the ranks
    would have to agree on the step, so there a Ctrl-C stops at once and the run resumes from its last save.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, filepath: str | Path, resume_command: str | None = None) -> None:
        self.filepath = Path(filepath)
        self.resume_command = resume_command
        self.requested = False
        self.signal = signal.SIGINT
        self._old: dict[int, Any] = {}

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.requested = False
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

    def _handle(self, sig: int, _frame: object) -> None:
        if self.requested:
            if sig == signal.SIGTERM:
                raise SystemExit(128 + sig)
            raise KeyboardInterrupt
        self.signal = signal.Signals(sig)
        self.requested = self.trainer.interrupted = True

    def on_train_end(self, logs: dict | None = None) -> None:
        self.close()
        t, st = self.trainer, self.trainer.state
        if not self.requested or (st.epoch >= t.epochs and st.step == 0):
            return
        if st.step:  # stopped inside an epoch: save where it stands (an epoch's end is saved already)
            t.save_checkpoint(self.filepath, epoch_done=False)
        where = (
            f"epoch {st.epoch + 1} step {st.step}/{t.steps_per_epoch}" if st.step else f"the end of epoch {st.epoch}"
        )
        cmd = self.resume_command or f"Trainer.fit(..., resume_from={str(self.filepath)!r})"
        by = "" if self.signal == signal.SIGINT else f" by {self.signal.name}"
        raise TrainingInterrupted(
            f"interrupted{by} at {where}; saved {self.filepath}. Resume with: {cmd}", 128 + self.signal
        )

    def close(self) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}
