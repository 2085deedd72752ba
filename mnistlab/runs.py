"""A training run as a folder: what ``mnistlab train`` and ``mnistlab evaluate`` do, as library calls.

A run folder holds ``config.json``, ``summary.txt``, ``metrics.csv``, ``history.json``, the
``last``/``best`` checkpoints and, when training finished, ``result.json``.

>>> result = train_run(from_preset("fast"), "runs/fast")   # doctest: +SKIP
>>> result["test"]["sparse_categorical_accuracy"]            # doctest: +SKIP
0.98...
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnistlab import callbacks as cb
from mnistlab import checkpoint as ckpt
from mnistlab import devices, distributed, fileio
from mnistlab.config import IMPORTED_MODEL, TrainConfig, merge_resume
from mnistlab.datasets import Dataset
from mnistlab.datasets import load_for as load_dataset
from mnistlab.devices import pick_device
from mnistlab.engine import Trainer, TrainingInterrupted
from mnistlab.errors import ENVIRONMENT_ERRNOS, CheckpointError, ConfigError, DatasetError
from mnistlab.metrics import ACC
from mnistlab.models import build_model, from_spec, summary
from mnistlab.runfolder import RunFolder


def build_for(config: TrainConfig, ds: Dataset, held_out: int = 0, spec: dict | None = None) -> torch.nn.Module:
    """The model a config asks for, shaped for the data set (standardized on its training images only).

    A ``sequential`` model (one brought in by ``import-keras``) is no preset: it is built from ``spec``, the
    model spec of the run it starts from or continues.
    """
    if config.model == IMPORTED_MODEL:
        return _sequential_for(spec, ds)
    kwargs: dict[str, Any] = {"in_shape": ds.input_shape, "num_classes": ds.num_classes}
    if config.width:
        kwargs["width" if config.model == "cnn" else "hidden"] = config.width
    if len(ds.x_train) <= held_out:
        raise DatasetError(f"{ds.name}: no training images to train on ({len(ds.x_train)} in all, {held_out} held out)")
    if config.normalize:
        x = np.asarray(ds.x_train[: len(ds.x_train) - held_out], dtype=np.float32) / 255.0
        mean, std = round(float(x.mean()), 6), round(float(x.std()), 6)
        if not std > 0:
            raise DatasetError(
                f"{ds.name}: every training pixel has the value {mean * 255:g}; nothing to standardize (--no-normalize)"
            )
        kwargs["normalize"] = [mean, std]
    return build_model(config.model, **kwargs)


def _sequential_for(spec: dict | None, ds: Dataset) -> torch.nn.Module:
    if not spec or spec.get("name") != IMPORTED_MODEL:
        raise ConfigError(
            f"model {IMPORTED_MODEL!r} is a model brought in by import-keras, no preset: train it with "
            "--init-from RUN (the imported run, or a run trained from it)"
        )
    shape, classes = tuple(spec.get("in_shape") or ()), spec.get("num_classes")
    if shape != tuple(ds.input_shape) or classes != ds.num_classes:
        raise ConfigError(
            f"the {IMPORTED_MODEL} model takes {shape} (C, H, W) images of {classes} classes; the data set "
            f"{ds.name} has {tuple(ds.input_shape)} images of {ds.num_classes} classes"
        )
    return from_spec(spec)


def train_run(
    config: TrainConfig | None,
    out: str | Path,
    *,
    resume: bool = False,
    overrides: dict[str, Any] | None = None,
    init_from: str | None = None,
    force: bool = False,
    verbose: int = 1,
    nproc: int = 1,
    master_port: int | None = None,
) -> dict:
    """Train ``config`` into the run folder ``out``; return the result also written to ``result.json``.

    ``resume=True`` continues the run in ``out`` with its saved config; ``overrides`` may change only
    the settings the schema marks resumable (``config.resumable()``: ``epochs``, the new total, and where
    the run runs). ``force`` replaces what ``out`` holds (a run, or a folder that is not one, which is
    otherwise refused), but only once the new run has its first checkpoint: until then the old folder
    waits as a hidden sibling and comes back on any failure. A lock file (``lock_path``) keeps a second
    writer out of ``out`` while this one runs.

    ``nproc`` > 1 trains data-parallel in that many processes on this machine (``mnistlab train --nproc``),
    meeting on ``master_port`` (default: a free one). Under torchrun each process calls this with the
    defaults and joins the run by itself; rank 0 alone prints and writes the run folder.
    """
    out = Path(out)
    main = distributed.is_main()
    launching = nproc != 1
    world = distributed.check_nproc(nproc) if launching else distributed.world_size()
    no_run = CheckpointError(f"{out}: not a run folder, or nothing to resume (no {ckpt.LAST})")
    if resume and not out.is_dir() and not _asides(out):
        raise no_run
    if not resume and config is not None:
        config.validate()  # before anything on disk changes
    with run_lock(out) if main else contextlib.nullcontext():
        if resume and not (out / ckpt.LAST).is_file():
            raise no_run
        return _train_run(config, out, resume, overrides, init_from, force, verbose, nproc, master_port, world)


def _train_run(config: TrainConfig | None, out: Path, resume: bool, overrides: dict[str, Any] | None,
               init_from: str | None, force: bool, verbose: int, nproc: int, master_port: int | None,
               world: int) -> dict:  # fmt: skip
    main = distributed.is_main()
    launching = nproc != 1
    aside: Path | None = None
    if resume:
        if main:
            for stale in out.glob(".*.tmp"):  # half-written files of a killed save (never the real ones)
                stale.unlink(missing_ok=True)
        meta = ckpt.read_meta(out / ckpt.LAST)
        if meta.get("imported"):  # made by import-keras: weights without a training state
            raise CheckpointError(f"{out}: an imported model, not a training run; train from it with --init-from {out}")
        done = ckpt.CheckpointMeta.from_dict(meta, out / ckpt.LAST)
        # The checkpoint is the source of truth for the config (config.json is a copy for people).
        try:
            saved = TrainConfig.from_dict(done.extra["config"])
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"{out / ckpt.LAST}: no usable config inside ({e})") from None
        config = merge_resume(saved, overrides or {})
        config.validate()
        if done.finished(config.epochs):
            how = "stopped early after" if done.stopped else "already trained to"
            msg = f"{out}: {how} {done.epoch} of {config.epochs} epochs; nothing to do"
            if verbose and main:
                print(msg)
            return {"summary": msg, "nothing_to_do": True, "epochs": done.epoch}
        distributed.check_same_world(out, done.fingerprint.get("world_size", 1), world)
    elif config is None:
        raise ConfigError("a config is needed unless resuming")
    else:
        check_out(out, force)
    distributed.per_rank_batch(config.batch_size, world)
    if launching:
        distributed.device_for(config.device, 0, nproc)  # enough GPUs? say so before starting anything
        return _launch(nproc, master_port, config, out, resume, overrides, init_from, force, verbose)
    watch = devices.CpuWatch()  # sees how busy the other processes keep the CPUs while the data loads
    threads_before = torch.get_num_threads()  # the run sets its own count; a notebook gets its own back after
    owned = distributed.current() is None
    if force and main and not resume and _holds_anything(out):
        aside = _set_aside(out)  # the old run stays whole until the new one has its first checkpoint
    created = main and not resume and not out.exists()
    try:
        ctx = distributed.setup(config.device)
        clean = False
        try:
            with distributed.peer_errors():
                result = _train_here(
                    config, out, ctx, resume=resume, init_from=init_from, verbose=verbose, aside=aside, watch=watch
                )
            clean = True
            return result
        finally:
            if owned:
                distributed.teardown(clean)
    except OSError as e:
        if e.errno not in ENVIRONMENT_ERRNOS:
            raise
        raise CheckpointError(f"{e.filename or out}: cannot write the run ({e.strerror})") from None
    finally:
        torch.set_num_threads(threads_before)
        if aside is not None:
            _settle_aside(out, aside)
        elif created and not (out / ckpt.LAST).is_file():  # a new run that never saved leaves nothing behind
            shutil.rmtree(out, ignore_errors=True)


def _launch(nproc: int, master_port: int | None, config: TrainConfig, out: Path, resume: bool,
            overrides: dict[str, Any] | None, init_from: str | None, force: bool, verbose: int) -> dict:  # fmt: skip
    """``train_run`` in ``nproc`` processes, each finding its place from what the launcher sets."""
    again = f"mnistlab train --resume {out} --nproc {nproc}"
    try:
        return distributed.launch(
            nproc, train_run, None if resume else config, str(out), resume=resume, overrides=overrides,
            init_from=init_from, force=force, verbose=verbose, master_port=master_port,
        )  # fmt: skip
    except distributed.LaunchInterrupted as e:
        raise TrainingInterrupted(f"{e}; {out} keeps its last saved state. Resume with: {again}") from None
    except distributed.RankFailed as e:
        if e.signal and (out / ckpt.LAST).is_file():  # killed: say how to carry on
            e.args = (f"{e}; {out} keeps its last saved state. Resume with: {again}",)
        raise


def _train_here(config: TrainConfig, out: Path, ctx: distributed.Context | None, *, resume: bool,
                init_from: str | None, verbose: int, aside: Path | None = None,
                watch: devices.CpuWatch | None = None) -> dict:  # fmt: skip
    main = ctx is None or ctx.is_main
    verbose = verbose if main else 0
    device = ctx.device if ctx is not None else pick_device(config.device)
    with distributed.main_first():  # rank 0 downloads or decodes into the cache; the others then read it
        ds = load_dataset(config.replace(limit_train=0) if config.val_split else config, progress=verbose > 0)
    split = hold_out(config, ds)
    torch.manual_seed(config.seed)
    spec = None
    if config.model == IMPORTED_MODEL:  # no preset: the architecture comes from the run it continues or starts from
        from mnistlab.interop import init_architecture

        if resume:
            spec = ckpt.read_meta(out / ckpt.LAST).get("model_spec")
        elif init_from:
            spec = init_architecture(init_from)
    model = build_for(config, ds, split, spec)
    if init_from:
        _init_weights(model, init_from)
    threads, threads_why = devices.resolve_threads(config.threads, watch)
    torch.set_num_threads(threads)
    trainer = Trainer(model, **{**config.trainer_kwargs(), "device": device}, verbose=verbose, dist=ctx)
    # What "auto" chose is what the run records (and what a resumed run keeps: both change the arithmetic).
    config = config.replace(precision=trainer.precision, threads=threads)
    table = summary(model, ds.input_shape)
    trainer.extra_meta = {
        "config": config.to_dict(), "dataset": ds.identity(), "class_names": list(ds.class_names),
        "mnistlab_version": _version(),
    }  # fmt: skip
    if not resume and main:
        out.mkdir(parents=True, exist_ok=True)
        fileio.write_json(out / "config.json", config.to_dict())
        fileio.write_text(out / "summary.txt", table + "\n")
        if verbose:
            print(table)
    if verbose:
        print(f"device {device}, precision {trainer.precision} ({trainer.precision_reason}), "
              f"threads {threads} ({threads_why})")  # fmt: skip
    t0 = time.perf_counter()
    try:
        history = trainer.fit(
            ds.x_train, ds.y_train, batch_size=config.batch_size, epochs=config.epochs,
            validation_data=None if split else (ds.x_test, ds.y_test), validation_split=split,
            validation_freq=config.validation_freq,
            callbacks=run_callbacks(config, out, ctx) + ([_DropAside(out, aside)] if aside else []),
            resume_from=out / ckpt.LAST if resume else None, eval_batch_size=config.eval_batch_size,
            data_identity=ds.identity(),
        )  # fmt: skip
    except TrainingInterrupted:
        if resume:
            fileio.write_json(out / "config.json", config.to_dict())
        raise
    if resume:  # only once the checkpoint accepted the settings: the new total of epochs
        fileio.write_json(out / "config.json", config.to_dict())
    wall = time.perf_counter() - t0
    if not main:  # rank 0 scores the test set and writes the result
        return {"summary": "", "rank": ctx.rank if ctx else 0, "epochs": len(history.epoch)}
    test = trainer.evaluate(ds.x_test, ds.y_test, config.eval_batch_size)
    result = {
        "test": test, "epochs": len(history.epoch), "train_time_s": getattr(trainer, "train_time", wall),
        "fit_wall_s": wall, "best": history.best, "validated_on": config.validated_on, "dataset": ds.identity(),
        "device": str(device),
        "threads": torch.get_num_threads(), "processes": ctx.world_size if ctx else 1,
    }  # fmt: skip
    fileio.write_json(out / "result.json", result)
    result["summary"] = (
        f"test accuracy {test[ACC]:.4f} (loss {test['loss']:.4f}) after {result['epochs']} epochs; "
        f"training time {result['train_time_s']:.2f}s; run folder {out}"
    )
    if verbose:
        print(result["summary"])
    return result


def hold_out(config: TrainConfig, ds: Dataset) -> int:
    """Put the validation images at the end of ``ds``'s training arrays; return how many there are.

    They are the last ``val_split`` images of the whole training set (as Keras's ``validation_split``),
    whatever ``limit_train`` keeps of the rest, so a quick run on a subset validates on the same images
    as a full one and ``--limit-train`` below the held-out count still works.
    """
    if not config.val_split:
        return 0
    n_val = config.validation_count(len(ds.x_train))
    keep = len(ds.x_train) - n_val
    if config.limit_train and config.limit_train < keep:
        ds.x_train = np.concatenate([ds.x_train[: config.limit_train], ds.x_train[keep:]])
        ds.y_train = np.concatenate([ds.y_train[: config.limit_train], ds.y_train[keep:]])
    return n_val


def run_callbacks(config: TrainConfig, out: Path, ctx: distributed.Context | None) -> list[cb.Callback]:
    """What a run folder does, as callbacks: stop and plateau first (their state is saved), then the
    ``best``/``last`` checkpoints, ``metrics.csv``/``history.json``, TensorBoard, and Ctrl-C → save + exit 130.
    """
    monitor, mode = config.monitor, config.monitor_mode
    callbacks: list[cb.Callback] = []
    if config.early_stopping:
        callbacks.append(cb.EarlyStopping(monitor=monitor, mode=mode, patience=config.early_stopping))
    if config.reduce_lr_on_plateau:
        callbacks.append(cb.ReduceLROnPlateau(monitor=monitor, mode=mode, patience=config.reduce_lr_on_plateau))
    callbacks += [
        cb.ModelCheckpoint(out / ckpt.BEST, monitor=monitor, mode=mode, save_best_only=True),
        cb.ModelCheckpoint(out / ckpt.LAST, save_every=config.save_every),
        cb.CSVLogger(out),
    ]
    if config.tensorboard:
        callbacks.append(cb.TensorBoard(config.tensorboard))
    if ctx is None:  # under torchrun a Ctrl-C stops every rank at once; the run resumes from its last save
        callbacks.append(cb.GracefulInterrupt(out / ckpt.LAST, f"mnistlab train --resume {out}"))
    return callbacks


# -- the output folder: whose files it holds, who writes it, what --force keeps until the new run stands --

RUN_FILES = frozenset(
    {"config.json", "summary.txt", "metrics.csv", "history.json", "result.json", ckpt.LAST, ckpt.BEST}
)


def check_out(out: Path, force: bool) -> None:
    """Refuse ``out`` for a new run unless it is new, empty, or a run of ours that ``force`` may replace.

    A folder holding anything else (a user's own ``config.json`` or ``metrics.csv`` among them) is
    replaced only with ``force``; a run is never replaced without it.
    """
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder; choose another --out")
    if force:
        here = Path.cwd().resolve()
        if out.resolve() in (here, *here.parents):
            raise ConfigError(f"{out} holds the current folder; --force cannot replace it (choose another --out)")
        return
    if (out / ckpt.LAST).is_file():
        raise ConfigError(
            f"{out} already holds a run; use --resume {out} to continue it, --force to replace it, or another --out"
        )
    if _holds_anything(out) and not _abandoned_run(out):
        raise ConfigError(
            f"{out} is a folder that is not a mnistlab run and is not empty; choose another --out, "
            "or --force to replace it"
        )


def _holds_anything(out: Path) -> bool:
    try:
        return out.is_dir() and any(out.iterdir())
    except OSError as e:
        raise ConfigError(f"{out}: cannot read the folder ({e.strerror})") from None


def _abandoned_run(out: Path) -> bool:
    """A run stopped before its first checkpoint: only our files, and a ``config.json`` that is a config."""
    names = {p.name for p in out.iterdir() if not (p.name.startswith(".") and p.name.endswith(".tmp"))}
    if not names <= RUN_FILES or "config.json" not in names:
        return False
    try:
        TrainConfig.read(out)
    except ConfigError:
        return False
    return True


def _aside_name(out: Path, pid: int) -> Path:
    out = out.absolute()
    return out.parent / f".{out.name}.replaced-{pid}"


def _set_aside(out: Path) -> Path:
    """Rename ``out`` to a hidden sibling (one atomic rename) until the new run has its first checkpoint."""
    aside = _aside_name(out, os.getpid())
    try:
        os.rename(out, aside)
    except OSError as e:
        raise ConfigError(f"{out}: cannot set the old run aside for --force ({e.strerror})") from None
    return aside


def _settle_aside(out: Path, aside: Path) -> None:
    """The new run wrote its first checkpoint: drop the old one. It did not: put the old one back."""
    if not aside.exists():
        return
    if (out / ckpt.LAST).is_file():
        shutil.rmtree(aside, ignore_errors=True)
        return
    shutil.rmtree(out, ignore_errors=True)
    os.rename(aside, out)


class _DropAside(cb.Callback):
    """Once the new run's first ``last`` checkpoint is on disk, the old run set aside by --force goes."""

    def __init__(self, out: Path, aside: Path) -> None:
        self.out, self.aside = out, aside

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.aside.exists() and (self.out / ckpt.LAST).is_file():
            shutil.rmtree(self.aside, ignore_errors=True)


LOCK_ENV = "MNISTLAB_RUN_LOCK"  # set by a launcher holding the lock for the processes it starts


def lock_path(out: Path) -> Path:
    out = out.absolute()
    return out.parent / f".{out.name}.lock"


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold ``out``'s lock (a hidden sibling file naming this process) while training writes into ``out``.

    A second writer fails at once with a line naming the holder; a lock left by a dead process of this
    host is taken over. Two takers of the same stale lock at the same instant may both win (rare; the
    lock is there against a second command by mistake, not against a race on purpose).
    """
    lock = lock_path(out)
    if os.environ.get(LOCK_ENV) == str(lock):  # our launcher holds it for us
        yield
        return
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{out}: cannot create the folder ({e.strerror})") from None
    me = f"{os.getpid()} {socket.gethostname()}\n"
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _holder(lock)
            if holder is None or not _stale(*holder):
                who = f"process {holder[0]} on {holder[1]}" if holder else "another process"
                raise ConfigError(
                    f"{out} is in use by {who} (lock file {lock}); wait for it to finish, or remove the lock "
                    "file if that process is gone"
                ) from None
            lock.unlink(missing_ok=True)  # its holder died without letting go
            continue
        except OSError as e:
            raise ConfigError(f"{out}: cannot create the lock file {lock} ({e.strerror})") from None
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    else:
        raise ConfigError(f"{out}: cannot take the lock file {lock}")
    saved = os.environ.get(LOCK_ENV)
    os.environ[LOCK_ENV] = str(lock)  # processes started by --nproc write under this lock
    try:
        _recover_aside(out)
        yield
    finally:
        if saved is None:
            os.environ.pop(LOCK_ENV, None)
        else:
            os.environ[LOCK_ENV] = saved
        with contextlib.suppress(OSError):
            if lock.read_text() == me:
                lock.unlink()


def _holder(lock: Path) -> tuple[int, str] | None:
    try:
        pid, host = lock.read_text().split()
        return int(pid), host
    except (OSError, ValueError):
        return None


def _stale(pid: int, host: str) -> bool:
    if host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _recover_aside(out: Path) -> None:
    """An old run set aside by a --force run that was killed (kill -9) before its first checkpoint: put it back."""
    for aside in _asides(out):
        _settle_aside(out, aside)


def _asides(out: Path) -> list[Path]:
    out = out.absolute()
    return sorted(out.parent.glob(f".{glob.escape(out.name)}.replaced-*"))


def _init_weights(model: torch.nn.Module, source: str) -> None:
    """Warm start: weights only, from a run, a checkpoint, a mnistlab export, a Keras file or a state dict."""
    from mnistlab.interop import load_init_state

    model.load_state_dict(load_init_state(source, model), strict=False)  # checked key by key; BN counters may lack


def evaluate_run(run: str | Path, which: str = "best", dataset: str | None = None) -> dict:
    """Loss, accuracy and per-class accuracy of a run's checkpoint on its data set's test split
    (``RunFolder.evaluate``; a run without a config is refused unless ``dataset`` names the data set)."""
    return RunFolder(run).evaluate(which, dataset)


def _version() -> str:
    from mnistlab import __version__

    return __version__
