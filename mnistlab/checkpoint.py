"""Checkpoints: one safetensors file holding every tensor, with the rest as JSON in its header.

Nothing here unpickles: loading a checkpoint can never run code. Each file carries a SHA-256 of its
tensors and of its JSON header (version 2; version-1 files, whose digest covers the tensors only, are
still read), so a truncated, damaged or hand-edited file raises ``CheckpointError`` naming it, instead of
a crash deep inside torch or a silently different model. (The digest is no signature: whoever can write
the file can recompute it.) Files are written atomically (temp file + fsync + ``os.replace``): a ``kill -9`` at any
moment leaves the previous checkpoint loadable.

>>> loaded = load_checkpoint("runs/mnist")          # doctest: +SKIP
>>> probs = loaded.predict(x_test[:5])              # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save

from mnistlab import faults, fileio
from mnistlab.errors import CheckpointError, ConfigError

FORMAT = "mnistlab-checkpoint"
VERSION = 2  # 2: the digest covers the JSON header (meta) too; 1: tensors only
LAST = "last.safetensors"
BEST = "best.safetensors"


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def file_digest(tensors_sha: str, meta: dict, version: int = VERSION) -> str:
    """The digest stored in a checkpoint: its tensors' digest and, from version 2, its canonical JSON meta."""
    if version < 2:
        return tensors_sha
    text = json.dumps({"format": FORMAT, "version": version, "tensors": tensors_sha, "meta": meta}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def save(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write ``tensors`` and ``meta`` (JSON-able) atomically as one safetensors file."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = json.loads(json.dumps(meta))  # as it will read back (tuples → lists, keys → strings), so digests agree
    header = {"format": FORMAT, "version": VERSION, "sha256": file_digest(tensors_digest(tensors), meta), "meta": meta}
    data = st_save(tensors, metadata={"mnistlab": json.dumps(header, sort_keys=True)})
    try:
        with fileio.atomic_open(path, "wb") as f:
            if faults.hit("save"):  # crash tests: die with half a file written
                f.write(data[: len(data) // 2])
                f.flush()
                faults.fire()
            f.write(data)
    except OSError as e:  # disk full, read-only, permission: the previous file is still whole
        raise CheckpointError(f"{path}: cannot write the checkpoint ({e.strerror or e})") from None


def read(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict]:
    """Read and verify a checkpoint file: ``(tensors, meta)``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as f:
            header_s = (f.metadata() or {}).get("mnistlab")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated, corrupt, or not safetensors: {e})"
        ) from None
    if header_s is None:
        raise CheckpointError(f"{path}: a safetensors file, but not a mnistlab checkpoint (no 'mnistlab' metadata)")
    try:
        header = json.loads(header_s)
    except (ValueError, RecursionError):
        raise CheckpointError(f"{path}: checkpoint metadata is not valid JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT or not isinstance(header.get("meta"), dict):
        raise CheckpointError(f"{path}: unknown checkpoint format {_get(header, 'format')!r}")
    version = header.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path}: bad checkpoint version {version!r}")
    if version > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {version} is newer than this mnistlab reads ({VERSION})")
    if file_digest(tensors_digest(tensors), header["meta"], version) != header.get("sha256"):
        what = "tensor" if version < 2 else "tensor and metadata"
        raise CheckpointError(f"{path}: {what} checksum mismatch (the file was modified or damaged)")
    return tensors, header["meta"]


def _get(d: object, key: str) -> object:
    return d.get(key) if isinstance(d, dict) else None


def read_meta(path: str | os.PathLike[str]) -> dict:
    return read(path)[1]


@dataclass
class CheckpointMeta:
    """The JSON half of a checkpoint, with named fields instead of string keys.

    ``to_dict`` gives the flat dict stored in the file (unknown keys, e.g. a run's ``config``,
    ``dataset`` and ``class_names``, travel in ``extra``); ``from_dict`` reads it back.

    >>> CheckpointMeta(epoch=2, extra={"config": {}}).to_dict()["epoch"]
    2
    """

    epoch: int = 0
    step: int = 0
    global_step: int = 0
    epoch_done: bool = True
    train_time: float = 0.0
    lr_factor: float = 1.0  # ReduceLROnPlateau's multiplier on the scheduled learning rate
    stopped: bool = False  # a callback (EarlyStopping) ended the run: it is finished
    fingerprint: dict = field(default_factory=dict)
    optimizer: dict = field(default_factory=dict)
    history: dict = field(default_factory=dict)
    model_spec: dict | None = None
    rng: dict = field(default_factory=dict)
    ranks: list[dict] | None = None
    callbacks: dict = field(default_factory=dict)  # each stateful callback's state, by its key
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {**self.extra}
        for f in fields(self):
            if f.name != "extra" and not (f.name == "ranks" and self.ranks is None):
                d[f.name] = getattr(self, f.name)
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str | os.PathLike[str] = "checkpoint") -> CheckpointMeta:
        """Read the flat dict back; a field of the wrong type raises ``CheckpointError`` naming ``source``.

        >>> CheckpointMeta.from_dict({"epoch": "zero"}, "run/last.safetensors")
        Traceback (most recent call last):
        ...
        mnistlab.errors.CheckpointError: run/last.safetensors: field 'epoch' must be a non-negative int, not 'zero'
        """
        known = {f.name for f in fields(cls)} - {"extra"}
        for k, v in d.items():
            if k in known and not _fits(v, _TYPES[k]):
                kind = "a non-negative int" if _TYPES[k] == (int,) else _TYPES[k][0].__name__
                raise CheckpointError(f"{source}: field {k!r} must be {kind}, not {str(repr(v))[:60]}")
        return cls(**{k: v for k, v in d.items() if k in known}, extra={k: v for k, v in d.items() if k not in known})

    def finished(self, epochs: int) -> bool:
        """Whether a run saved with this meta has nothing left to do for a total of ``epochs``."""
        return self.step == 0 and (self.epoch >= epochs or self.stopped)


# What each CheckpointMeta field may hold in the file (JSON types; None only where the field allows it).
_TYPES: dict[str, tuple[type, ...]] = {
    "epoch": (int,), "step": (int,), "global_step": (int,), "epoch_done": (bool,), "train_time": (float, int),
    "lr_factor": (float, int), "stopped": (bool,), "fingerprint": (dict,), "optimizer": (dict,),
    "history": (dict,), "model_spec": (dict, type(None)), "rng": (dict,), "ranks": (list, type(None)),
    "callbacks": (dict,),
}  # fmt: skip


def _fits(value: object, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:  # JSON true is no count
        return False
    if isinstance(value, int) and int in types and not isinstance(value, bool) and value < 0:
        return False  # epochs and steps count up from 0
    return isinstance(value, types)


# -- optimizer state, flattened into named tensors + JSON ---------------------------------------


def flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{pid}/{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, t in tensors.items():
        if name.startswith("optim/"):
            _, pid, key = name.split("/", 2)
            state.setdefault(int(pid), {})[key] = t
    for pid, values in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(values)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


# -- a trained model, rebuilt from the checkpoint alone -----------------------------------------


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint, in eval mode, with what describes it."""

    model: torch.nn.Module
    meta: dict
    path: Path
    class_names: tuple[str, ...] = field(default_factory=tuple)

    @property
    def config(self) -> dict:
        return self.meta.get("config", {})

    @property
    def history(self) -> dict:
        return self.meta.get("history", {})

    @property
    def checkpoint_meta(self) -> CheckpointMeta:
        return CheckpointMeta.from_dict(self.meta)

    @property
    def spec(self) -> dict:
        return self.meta["model_spec"]

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return tuple(self.spec.get("in_shape", (1, 28, 28)))  # type: ignore[return-value]

    def predict(self, x: np.ndarray | torch.Tensor, batch_size: int = 4096) -> np.ndarray:
        """Class probabilities for uint8 images (or floats already scaled to 0..1)."""
        from mnistlab.inference import predict_proba

        return predict_proba(self.model, x, batch_size=batch_size)


def resolve(path: str | os.PathLike[str], which: str = "best") -> Path:
    """A run folder → its ``best`` (or ``last``) checkpoint file; a file → itself."""
    p = Path(path)
    if p.is_dir():
        for name in (BEST, LAST) if which == "best" else (LAST, BEST):
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"{p}: not a run folder (no {BEST} or {LAST} inside)")
    if not p.exists():
        raise CheckpointError(f"{p}: no such run folder or checkpoint file")
    return p


def load_checkpoint(path: str | os.PathLike[str], which: str = "best", device: str = "cpu") -> LoadedModel:
    """Rebuild the model of a run folder or checkpoint file, for predict, export and serving."""
    from mnistlab.models import from_spec

    file = resolve(path, which)
    tensors, meta = read(file)
    spec = meta.get("model_spec")
    if not isinstance(spec, dict):
        raise CheckpointError(f"{file}: no model spec inside (was it trained with a custom module?)")
    try:
        model = from_spec(spec)
    except ConfigError as e:
        raise CheckpointError(f"{file}: {e}") from None
    try:
        model.load_state_dict(prefixed(tensors, "model/"))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{file}: weights do not fit the model spec ({first})") from None
    model.to(device).eval()
    names = tuple(meta.get("class_names") or [str(i) for i in range(spec.get("num_classes", 10))])
    return LoadedModel(model=model, meta=meta, path=file, class_names=names)
