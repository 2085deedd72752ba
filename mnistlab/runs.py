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

from mnistlab import checkpoint as ckpt
from mnistlab import distributed, fileio
from mnistlab.config import TrainConfig
from mnistlab.datasets import Dataset
from mnistlab.datasets import load_for as load_dataset
from mnistlab.devices import pick_device
from mnistlab.engine import Trainer, TrainingInterrupted
from mnistlab.errors import CheckpointError, ConfigError
from mnistlab.inference import predict_logits
from mnistlab.metrics import ACC
from mnistlab.models import build_model, summary
from mnistlab.tensors import images_to_tensor, labels_to_tensor


def build_for(config: TrainConfig, ds: Dataset) -> torch.nn.Module:
    """The model a config asks for, shaped for the data set."""
    kwargs: dict[str, Any] = {"in_shape": ds.input_shape, "num_classes": ds.num_classes}
    if config.width:
        kwargs["width" if config.model == "cnn" else "hidden"] = config.width
    if config.normalize:
        x = np.asarray(ds.x_train, dtype=np.float32) / 255.0
        kwargs["normalize"] = [round(float(x.mean()), 6), round(float(x.std()), 6)]
    return build_model(config.model, **kwargs)


def make_augment(spec: str) -> Any:
    """The augmentation callable for a ``--augment`` string, or None when empty."""
    if not spec:
        return None
    try:
        from mnistlab.augment import Augment
    except ImportError:
        raise ConfigError("augmentation is not available in this build of mnistlab") from None
    return Augment.parse(spec)


RESUMABLE_OVERRIDES = ("epochs", "device", "threads", "save_every")


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
    ``epochs`` (the new total), ``device``, ``threads`` and ``save_every``. ``force`` replaces a finished
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
        done = ckpt.read_meta(out / ckpt.LAST)
        # The checkpoint is the source of truth for the config (config.json is a copy for people).
        try:
            saved = TrainConfig.from_dict(done["config"])
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"{out / ckpt.LAST}: no usable config inside ({e})") from None
        config = _merge_resume(saved, overrides or {})
        if done.get("epoch", 0) >= config.epochs and done.get("step", 0) == 0:
            msg = f"{out}: already trained to {done['epoch']} of {config.epochs} epochs; nothing to do"
            if verbose and main:
                print(msg)
            return {"summary": msg, "nothing_to_do": True, "epochs": done["epoch"]}
        distributed.check_same_world(out, done.get("fingerprint", {}).get("world_size", 1), world)
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
        ds = load_dataset(config, progress=verbose > 0)
    torch.manual_seed(config.seed)
    model = build_for(config, ds)
    if init_from:
        _init_weights(model, init_from)
    trainer = Trainer(
        model, config.optimizer, config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
        schedule=config.schedule, warmup=config.warmup, label_smoothing=config.label_smoothing,
        seed=config.seed, device=device, augment=make_augment(config.augment), augment_spec=config.augment,
        precision=config.precision, channels_last=config.channels_last, verbose=verbose,
    )  # fmt: skip
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
    t0 = time.perf_counter()
    try:
        history = trainer.fit(
            ds.x_train, ds.y_train, batch_size=config.batch_size, epochs=config.epochs,
            validation_data=(ds.x_test, ds.y_test), validation_freq=config.validation_freq,
            run_dir=out, resume=resume, save_every=config.save_every, monitor=config.monitor, mode=config.mode,
            eval_batch_size=config.eval_batch_size, data_identity=ds.identity(),
            resume_command=f"mnistlab train --resume {out}",
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
        "fit_wall_s": wall, "best": history.best, "dataset": ds.identity(), "device": str(device),
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


def _merge_resume(saved: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """On resume the saved config wins, except ``epochs`` (the new total) and where-to-run settings."""
    merged = saved.to_dict()
    for k, v in overrides.items():
        if v is None:
            continue
        if k not in RESUMABLE_OVERRIDES:
            if merged.get(k) != v:
                raise ConfigError(
                    f"cannot change {k} when resuming (saved {merged.get(k)!r}, given {v!r}); "
                    f"only {', '.join(RESUMABLE_OVERRIDES)} may change"
                )
            continue
        merged[k] = v
    return TrainConfig.from_dict(merged)


def _init_weights(model: torch.nn.Module, source: str) -> None:
    """Warm start: copy weights only from a run folder, checkpoint, or a plain state-dict file."""
    p = Path(source)
    if p.suffix in (".pt", ".pth"):
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for bad files
            raise CheckpointError(f"{p}: not a loadable weights file ({str(e).splitlines()[0]})") from None
        state = state.get("model", state) if isinstance(state, dict) else state
    else:
        tensors, _ = ckpt.read(ckpt.resolve(p, "best"))
        state = ckpt.prefixed(tensors, "model/")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{p}: weights do not fit this model ({str(e).strip().splitlines()[0]})") from None


def evaluate_run(run: str | Path, which: str = "best", dataset: str | None = None) -> dict:
    """Loss, accuracy and per-class accuracy of a run's checkpoint on its data set's test split."""
    loaded = ckpt.load_checkpoint(run, which)
    cfg = TrainConfig.from_dict(loaded.config) if loaded.config else TrainConfig()
    if dataset:
        cfg.dataset, cfg.data_dir = dataset, None
    ds = load_dataset(cfg, progress=False)
    x, y = images_to_tensor(ds.x_test), labels_to_tensor(ds.y_test)
    logits = predict_logits(loaded.model, x)
    pred = logits.argmax(1)
    per_class = {}
    for c, name in enumerate(loaded.class_names):
        mask = y == c
        per_class[name] = float((pred[mask] == c).float().mean()) if mask.any() else float("nan")
    return {
        "checkpoint": str(loaded.path),
        "loss": float(torch.nn.functional.cross_entropy(logits, y)),
        ACC: float((pred == y).float().mean()),
        "per_class": per_class,
        "n": len(y),
    }


def _version() -> str:
    from mnistlab import __version__

    return __version__
