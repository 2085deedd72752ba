"""A training run as a folder: what ``mnistlab train`` and ``mnistlab evaluate`` do, as library calls.

A run folder holds ``config.json``, ``summary.txt``, ``metrics.csv``, ``history.json``, the
``last``/``best`` checkpoints and, when training finished, ``result.json``.

>>> result = train_run(from_preset("fast"), "runs/fast")   # doctest: +SKIP
>>> result["test"]["sparse_categorical_accuracy"]            # doctest: +SKIP
0.98...
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnistlab import callbacks as cb
from mnistlab import checkpoint as ckpt
from mnistlab import distributed, fileio
from mnistlab.config import TrainConfig, merge_resume
from mnistlab.datasets import Dataset
from mnistlab.datasets import load_for as load_dataset
from mnistlab.devices import pick_device
from mnistlab.engine import Trainer, TrainingInterrupted
from mnistlab.errors import CheckpointError, ConfigError
from mnistlab.metrics import ACC
from mnistlab.models import build_model, summary
from mnistlab.runfolder import RunFolder


def build_for(config: TrainConfig, ds: Dataset, held_out: int = 0) -> torch.nn.Module:
    """The model a config asks for, shaped for the data set (standardized on its training images only)."""
    kwargs: dict[str, Any] = {"in_shape": ds.input_shape, "num_classes": ds.num_classes}
    if config.width:
        kwargs["width" if config.model == "cnn" else "hidden"] = config.width
    if config.normalize:
        x = np.asarray(ds.x_train[: len(ds.x_train) - held_out], dtype=np.float32) / 255.0
        kwargs["normalize"] = [round(float(x.mean()), 6), round(float(x.std()), 6)]
    return build_model(config.model, **kwargs)


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
    the run runs). ``force`` replaces a finished
    or abandoned run in ``out``.

    ``nproc`` > 1 trains data-parallel in that many processes on this machine (``mnistlab train --nproc``),
    meeting on ``master_port`` (default: a free one). Under torchrun each process calls this with the
    defaults and joins the run by itself; rank 0 alone prints and writes the run folder.
    """
    out = Path(out)
    main = distributed.is_main()
    launching = nproc != 1
    world = distributed.check_nproc(nproc) if launching else distributed.world_size()
    if resume:
        if not (out / ckpt.LAST).is_file():
            raise CheckpointError(f"{out}: not a run folder, or nothing to resume (no {ckpt.LAST})")
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
        if done.finished(config.epochs):
            how = "stopped early after" if done.stopped else "already trained to"
            msg = f"{out}: {how} {done.epoch} of {config.epochs} epochs; nothing to do"
            if verbose and main:
                print(msg)
            return {"summary": msg, "nothing_to_do": True, "epochs": done.epoch}
        distributed.check_same_world(out, done.fingerprint.get("world_size", 1), world)
    elif config is None:
        raise ConfigError("a config is needed unless resuming")
    elif (out / ckpt.LAST).is_file() and not force:
        raise ConfigError(
            f"{out} already holds a run; use --resume {out} to continue it, --force to replace it, or another --out"
        )
    elif force and main and not launching:
        for name in (ckpt.LAST, ckpt.BEST, "metrics.csv", "history.json", "result.json"):
            (out / name).unlink(missing_ok=True)
    config.validate()
    distributed.per_rank_batch(config.batch_size, world)
    if launching:
        distributed.device_for(config.device, 0, nproc)  # enough GPUs? say so before starting anything
        return _launch(nproc, master_port, config, out, resume, overrides, init_from, force, verbose)
    if config.threads:
        torch.set_num_threads(config.threads)
    owned = distributed.current() is None
    ctx = distributed.setup(config.device)
    try:
        with distributed.peer_errors():
            return _train_here(config, out, ctx, resume=resume, init_from=init_from, verbose=verbose)
    finally:
        if owned:
            distributed.teardown()


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
                init_from: str | None, verbose: int) -> dict:  # fmt: skip
    main = ctx is None or ctx.is_main
    verbose = verbose if main else 0
    device = ctx.device if ctx is not None else pick_device(config.device)
    with distributed.main_first():  # rank 0 downloads or decodes into the cache; the others then read it
        ds = load_dataset(config.replace(limit_train=0) if config.val_split else config, progress=verbose > 0)
    split = hold_out(config, ds)
    torch.manual_seed(config.seed)
    model = build_for(config, ds, split)
    if init_from:
        _init_weights(model, init_from)
    trainer = Trainer(model, **{**config.trainer_kwargs(), "device": device}, verbose=verbose, dist=ctx)
    config = config.replace(precision=trainer.precision)  # what "auto" chose is what the run records
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
        print(f"device {device}, precision {trainer.precision} ({trainer.precision_reason})")
    t0 = time.perf_counter()
    try:
        history = trainer.fit(
            ds.x_train, ds.y_train, batch_size=config.batch_size, epochs=config.epochs,
            validation_data=None if split else (ds.x_test, ds.y_test), validation_split=split,
            validation_freq=config.validation_freq, callbacks=run_callbacks(config, out, ctx),
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
