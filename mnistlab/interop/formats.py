"""Weights from anywhere into mnistlab: ``import_keras`` (a Keras file → a run folder) and ``load_init_state``
(any weights file → a state dict for ``train --init-from``).

Files are recognised by their content, not only their name, and every refusal names the format found
and the formats accepted.

>>> import_keras("mnist.keras", "runs/keras")                   # doctest: +SKIP
>>> state = load_init_state("runs/keras", models.mlp())         # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Collection
from pathlib import Path

import numpy as np
import torch

from mnistlab import checkpoint as ckpt
from mnistlab import fileio
from mnistlab.config import TrainConfig, flag
from mnistlab.errors import CheckpointError, ConfigError, MnistlabError
from mnistlab.interop.keras import Converted, convert, keras_kind, read_model

ACCEPTED = (
    "a run folder or mnistlab checkpoint (.safetensors), a mnistlab export (weights .txt, .npz or .safetensors), "
    "a Keras file (.keras, .weights.h5, or the lesson's weights .txt), or a PyTorch state dict (.pt/.pth)"
)
KIND_NAMES = {
    "run": "run folder", "checkpoint": "mnistlab checkpoint", "export-txt": "mnistlab weights text",
    "export-npz": "mnistlab weights npz", "export-safetensors": "mnistlab weights safetensors",
    "safetensors": "plain safetensors state dict", "npz": "plain npz state dict", "keras": "Keras .keras model",
    "h5": "Keras HDF5 weights", "txt": "the lesson's Keras weights text", "pt": "PyTorch state dict",
}  # fmt: skip


def sniff(path: str | os.PathLike[str]) -> str:
    """What a weights source is (a key of ``KIND_NAMES``), from its content; a refusal names what it found."""
    p = Path(path)
    if p.is_dir():
        return "run"
    if not p.is_file():
        raise CheckpointError(f"{p}: no such file or run folder")
    with p.open("rb") as f:
        head = f.read(1 << 16)
    if p.suffix in (".pt", ".pth"):
        return "pt"
    if len(head) > 8 and head[8:9] == b"{":  # safetensors: 8-byte header length, then JSON
        n = int.from_bytes(head[:8], "little")
        try:
            with p.open("rb") as f:
                f.seek(8)
                header = json.loads(f.read(n)) if n < 1 << 28 else {}
        except (ValueError, OSError):
            header = {}
        meta = (header.get("__metadata__") or {}).get("mnistlab", "") if isinstance(header, dict) else ""
        if ckpt.FORMAT in meta:
            return "checkpoint"
        return "export-safetensors" if '"mnistlab-weights"' in meta else "safetensors"
    if head.startswith(b"PK"):
        kind = keras_kind(p)
        if kind:
            return kind
        return "export-npz" if b"__mnistlab__" in _npz_names(p) else "npz"
    if head.startswith(b"# mnistlab weights"):
        return "export-txt"
    kind = keras_kind(p)
    if kind:
        return kind
    found = "an HDF5 file" if head.startswith(b"\x89HDF") else "a text file" if _is_text(head) else "a binary file"
    raise CheckpointError(f"{p}: {found} of no format mnistlab reads weights from (it takes {ACCEPTED})")


def _npz_names(p: Path) -> bytes:
    import zipfile

    try:
        with zipfile.ZipFile(p) as z:
            return " ".join(z.namelist()).encode()
    except (zipfile.BadZipFile, OSError):
        raise CheckpointError(
            f"{p}: a damaged zip file (neither .keras nor .npz can be read; it takes {ACCEPTED})"
        ) from None


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _model_shape(model: torch.nn.Module) -> tuple[tuple[int, int, int], int]:
    spec = getattr(model, "spec", {}) or {}
    return tuple(spec.get("in_shape") or (1, 28, 28)), int(spec.get("num_classes", 10))  # type: ignore[return-value]


def load_init_state(source: str | os.PathLike[str], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A state dict for ``model`` read from ``source`` (any of ``ACCEPTED``); checked to fit, key by key."""
    p = Path(source)
    kind = sniff(p)
    found = KIND_NAMES[kind]
    try:
        if kind in ("run", "checkpoint"):
            tensors, _ = ckpt.read(ckpt.resolve(p, "best"))
            state = ckpt.prefixed(tensors, "model/")
        elif kind == "pt":
            try:
                state = torch.load(p, map_location="cpu", weights_only=True)
            except Exception as e:  # torch raises many types for bad files
                raise CheckpointError(f"{p}: not a loadable PyTorch weights file ({str(e).splitlines()[0]})") from None
            state = state.get("model", state) if isinstance(state, dict) else state
            if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
                raise CheckpointError(f"{p}: a PyTorch file, but not a state dict of tensors")
        elif kind in ("export-txt", "export-npz", "export-safetensors"):
            state = _export_state(p)
        elif kind == "safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        elif kind == "npz":
            with np.load(p, allow_pickle=False) as z:
                state = {k: torch.from_numpy(np.array(z[k])) for k in z.files}
        else:  # keras, h5, txt
            in_chw, classes = _model_shape(model)
            state = convert(read_model(p), in_chw, classes).state
    except CheckpointError:
        raise
    except MnistlabError as e:
        raise CheckpointError(f"{e} (read as a {found})") from None
    fit_state(state, model, f"{p} ({found})")
    return state


def _export_state(p: Path) -> dict[str, torch.Tensor]:
    """A mnistlab export (either layout) back into PyTorch state-dict names and shapes."""
    from mnistlab.export.numpy_infer import from_keras, load_weights

    suffix = {".txt", ".npz", ".safetensors"}
    if p.suffix not in suffix:  # load_weights picks the reader by suffix
        raise CheckpointError(f"{p}: a mnistlab export must end in .txt, .npz or .safetensors")
    w = load_weights(p)
    state: dict[str, torch.Tensor] = {}
    prev: dict | None = None
    for i, layer in enumerate(w.meta["architecture"]):
        params = layer.get("params", {})
        if w.meta["layout"] == "pytorch":
            arrays = {role: w.tensors[name] for role, name in params.items()}
        else:
            flat = tuple(prev["in_shape"]) if prev and prev["op"] == "flatten" else None
            arrays = from_keras(layer["op"], {role: w.tensors[name] for role, name in params.items()}, flat)
        for role, a in arrays.items():
            state[f"{i}.{role}"] = torch.from_numpy(np.array(a, dtype=np.float32))
        prev = layer
    return state


def fit_state(state: dict[str, torch.Tensor], model: torch.nn.Module, source: str) -> None:
    """Refuse weights that do not fit ``model``, naming the keys (missing, unexpected, or of another shape)."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    have = {k: tuple(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")}
    problems = []
    missing = [k for k in want if k not in have]
    extra = [k for k in have if k not in want]
    shapes = [f"{k} {have[k]} (model: {want[k]})" for k in want if k in have and have[k] != want[k]]
    if missing:
        problems.append("missing " + ", ".join(missing))
    if extra:
        problems.append("unexpected " + ", ".join(extra))
    if shapes:
        problems.append("other shapes: " + ", ".join(shapes))
    if problems:
        name = getattr(model, "preset", type(model).__name__)
        raise CheckpointError(f"{source}: weights do not fit the {name} model: {'; '.join(problems)}")


def init_architecture(source: str | os.PathLike[str]) -> dict | None:
    """The model spec that an ``--init-from`` source brings with it: that of a run folder or mnistlab checkpoint
    holding an imported model (``import-keras``), or a ``sequential`` one (an imported model trained further).
    A run started from such a source trains that architecture; for any other source (a preset's run, an
    export, a Keras file) it is None, and the config's preset is built (the weights must fit it).
    """
    from mnistlab.config import IMPORTED_MODEL

    p = Path(source)
    if not (p.is_dir() or (p.is_file() and sniff(p) == "checkpoint")):
        return None
    meta = ckpt.read_meta(ckpt.resolve(p, "best"))
    spec = meta.get("model_spec")
    if isinstance(spec, dict) and (meta.get("imported") or spec.get("name") == IMPORTED_MODEL):
        return spec
    return None


def config_for_init(config: TrainConfig, source: str | os.PathLike[str], explicit: Collection[str] = ()) -> TrainConfig:
    """``config`` for a run that starts from ``source``: when the source brings its architecture
    (``init_architecture``), the model, width and input standardisation are the source's, whatever the
    preset said; a setting in ``explicit`` (given on the command line) that asks for another is refused.

    >>> config_for_init(from_preset("fast"), "runs/keras-cnn").model           # doctest: +SKIP
    'sequential'
    """
    spec = init_architecture(source)
    if spec is None:
        return config
    want = {"model": spec["name"], "width": spec.get("hidden", spec.get("width")),
            "normalize": bool(spec.get("normalize"))}  # fmt: skip
    what = f"{spec['name']} model" + (f" of width {want['width']}" if want["width"] else "")
    what += ", with input standardisation" if want["normalize"] else ""
    for key, value in want.items():
        given = getattr(config, key)
        if key in explicit and given != value:
            shown = (flag(key) if given else f"--no-{key}") if key == "normalize" else f"{flag(key)} {given}"
            raise ConfigError(
                f"--init-from {source} holds an imported {what}; {shown} asks for another "
                f"(leave {flag(key)} out to train the imported architecture)"
            )
    return dataclasses.replace(config, **want).validate()


def import_keras(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] | None = None,
    dataset: str = "mnist",
    data_dir: str | None = None,
    pixels: str = "auto",
    force: bool = False,
    verbose: int = 1,
) -> Path:
    """Import a Keras ``Sequential`` (``.keras``, ``.weights.h5`` or the lesson's weights text) as a run folder.

    The folder holds what a trained run holds (``best``/``last`` checkpoints with the same metadata,
    ``config.json``, ``summary.txt``, an empty ``history.json``), so ``evaluate``, ``predict``, ``serve``,
    ``export``, ``report``, ``plot`` and ``train --init-from`` take it. ``model`` gives the architecture
    for weights-only files (a ``.keras`` file or ``model.to_json()`` output); ``dataset`` is the data set
    the model was trained on (its image shape and class names); ``pixels`` what the Keras model was fed
    (``0-1``: ``x / 255`` as in the lesson, ``0-255``, or ``auto``).
    """
    from mnistlab import __version__
    from mnistlab.datasets import load
    from mnistlab.models import from_spec, summary

    src, out = Path(path), Path(out)
    if (out / ckpt.LAST).is_file() or (out / ckpt.BEST).is_file():
        if not force:
            raise ConfigError(f"{out} already holds a run; use --force to replace it, or another -o")
    elif out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder")
    keras_model = read_model(src, model)
    ds = load(dataset, path=data_dir, progress=False)
    conv: Converted = convert(keras_model, tuple(ds.input_shape), ds.num_classes, pixels)  # type: ignore[arg-type]
    net = from_spec(conv.spec)
    fit_state(conv.state, net, str(src))
    net.load_state_dict(conv.state, strict=False)  # BatchNorm's num_batches_tracked keeps its 0
    net.eval()
    spec = conv.spec
    config = TrainConfig(
        # epochs: the least a config allows; the history (no epoch) says that none was trained here
        dataset=dataset, data_dir=data_dir, model=spec["name"], epochs=1,
        normalize=bool(spec.get("normalize")), width=spec.get("hidden"),
    )  # fmt: skip
    imported = {
        "from": str(src), "format": keras_model_kind(src), "sha256": hashlib.sha256(src.read_bytes()).hexdigest(),
        "architecture_from": str(model) if model else None, "pixels": pixels, "notes": conv.notes,
    }  # fmt: skip
    history = {"history": {}, "epoch": [], "val_epoch": [], "times": [], "resumed_at": [], "best": {}}
    meta = {
        "config": config.to_dict(), "dataset": ds.identity(), "class_names": list(ds.class_names),
        "mnistlab_version": __version__, "epoch": 0, "step": 0, "global_step": 0, "epoch_done": True,
        "train_time": 0.0, "history": history, "model_spec": spec, "imported": imported,
    }  # fmt: skip
    tensors = {f"model/{k}": v for k, v in net.state_dict().items()}
    table = summary(net, tuple(ds.input_shape), name=f"{spec['name']} (imported from {src.name})")
    if force and out.is_dir():
        for name in (ckpt.LAST, ckpt.BEST, "metrics.csv", "history.json", "result.json"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    ckpt.save(out / ckpt.BEST, tensors, meta)
    shutil.copyfile(out / ckpt.BEST, out / ckpt.LAST)
    fileio.write_json(out / "config.json", config.to_dict())
    fileio.write_text(out / "summary.txt", table + "\n")
    fileio.write_json(out / "history.json", {**history, "imported_from": str(src)})
    if verbose:
        kinds = ", ".join(layer.kind for layer in keras_model.layers)
        print(f"imported {src} (Keras Sequential: {kinds}) as a {spec['name']} model into {out}")
        for note in conv.notes:
            print(f"  note: {note}")
    return out


def keras_model_kind(path: Path) -> str:
    return {"keras": ".keras", "h5": ".weights.h5", "txt": "lesson weights text"}.get(keras_kind(path) or "", "?")


__all__ = ["ACCEPTED", "config_for_init", "fit_state", "import_keras", "init_architecture", "load_init_state", "sniff"]
