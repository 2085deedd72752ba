"""Reading what Keras writes, without TensorFlow: ``.keras``, ``.weights.h5`` and the lesson's weights text.

- ``x.keras`` (``model.save``) is a zip of ``config.json`` (the architecture) and ``model.weights.h5``;
- ``x.weights.h5`` (``model.save_weights``) holds each layer's variables as ``layers/<key>/vars/<i>``,
  where ``<key>`` is the snake-case class name numbered in model order (``dense``, ``dense_1``, …);
- the lesson's ``weights.txt`` holds each *trainable* variable's name, shape and values as NumPy prints
  them (``np.set_printoptions(threshold=np.inf)``): about 8 significant digits, and no BatchNormalization
  moving statistics.

HDF5 is read with ``h5py`` (``pip install 'mnistlab[keras]'``).

>>> layers = read_keras("model.keras")        # doctest: +SKIP
>>> layers[1].kind, layers[1].weights[0].shape  # doctest: +SKIP
('Dense', (784, 128))
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnistlab.errors import CheckpointError

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
SUPPORTED = (
    "Input/InputLayer, Flatten, Reshape, Dense (relu, softmax, linear), Activation/ReLU/Softmax, Conv2D, "
    "MaxPooling2D, AveragePooling2D, BatchNormalization, Dropout, Normalization, Rescaling"
)
PIXELS = ("auto", "0-1", "0-255")  # what the Keras model was fed: auto, x / 255, raw pixels


@dataclass
class KerasLayer:
    """One layer of a Keras ``Sequential``: its class, config and variables (in Keras's order)."""

    kind: str
    config: dict
    weights: list[np.ndarray] = field(default_factory=list)
    build_shape: tuple | None = None

    @property
    def name(self) -> str:
        return str(self.config.get("name", self.kind))


@dataclass
class KerasModel:
    """A Keras ``Sequential`` as read from files: the layers and the per-sample input shape, if known."""

    layers: list[KerasLayer]
    input_shape: tuple[int, ...] | None
    source: str
    trainable_only: bool = False  # the lesson's text file: moving statistics are missing


def snake_case(name: str) -> str:
    """Keras's ``to_snake_case``: ``MaxPooling2D`` → ``max_pooling2d``, ``ReLU`` → ``re_lu``."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise CheckpointError(
            "reading Keras HDF5 weights needs h5py: pip install 'mnistlab[keras]' (TensorFlow is not needed)"
        ) from None
    return h5py


def h5_layer_weights(data: bytes, source: str) -> dict[str, list[np.ndarray]]:
    """``{key: [vars/0, vars/1, …]}`` for every layer group of a Keras 3 weights file."""
    h5py = _h5py()
    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            if "layers" not in f:
                raise CheckpointError(
                    f"{source}: an HDF5 file, but not Keras 3 weights (no 'layers' group; a Keras 2 .h5 model "
                    "can be re-saved in Keras 3 with model.save('x.keras'))"
                )
            out: dict[str, list[np.ndarray]] = {}
            for key, group in f["layers"].items():
                vars_ = group.get("vars")
                if vars_ is None:
                    continue
                out[key] = [np.array(vars_[i], dtype=np.float32) for i in sorted(vars_, key=int)]
            return out
    except OSError as e:
        raise CheckpointError(f"{source}: not a readable HDF5 file ({e})") from None


def layers_from_config(config: dict, source: str) -> tuple[list[KerasLayer], tuple[int, ...] | None]:
    """The layer list and input shape of a ``Sequential`` config (``config.json`` or ``model.to_json()``)."""
    if config.get("class_name") != "Sequential":
        raise CheckpointError(
            f"{source}: a Keras {config.get('class_name')!r} model; only Sequential models can be imported"
        )
    body = config.get("config") or {}
    layers: list[KerasLayer] = []
    input_shape = _shape((config.get("build_config") or {}).get("input_shape"))
    for entry in body.get("layers", []):
        kind = entry.get("class_name", "?")
        cfg = entry.get("config") or {}
        if kind == "InputLayer":
            input_shape = _shape(cfg.get("batch_shape") or cfg.get("batch_input_shape")) or input_shape
            continue
        build = _shape((entry.get("build_config") or {}).get("input_shape"))
        if input_shape is None and not layers:
            input_shape = build
        layers.append(KerasLayer(kind, cfg, build_shape=build))
    return layers, input_shape


def _shape(batch_shape: Any) -> tuple[int, ...] | None:
    if not isinstance(batch_shape, list | tuple) or len(batch_shape) < 2:
        return None
    dims = batch_shape[1:]
    return tuple(int(d) for d in dims) if all(isinstance(d, int) for d in dims) else None


def attach_h5(layers: list[KerasLayer], weights: dict[str, list[np.ndarray]], source: str) -> None:
    """Give each layer its variables from the weights file (keys numbered per class, in model order)."""
    counts: dict[str, int] = {}
    used = set()
    for layer in layers:
        base = snake_case(layer.kind)
        n = counts.get(base, 0)
        counts[base] = n + 1
        key = base if n == 0 else f"{base}_{n}"
        layer.weights = weights.get(key, [])
        used.add(key)
    extra = sorted(k for k, v in weights.items() if v and k not in used)
    if extra:
        raise CheckpointError(f"{source}: weights for layers the architecture does not have: {', '.join(extra)}")


def read_keras(path: str | os.PathLike[str]) -> KerasModel:
    """A ``.keras`` file: its architecture and weights."""
    source = str(path)
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if "config.json" not in names or "model.weights.h5" not in names:
                raise CheckpointError(
                    f"{source}: a zip file, but not a .keras model (no config.json and model.weights.h5)"
                )
            config = json.loads(z.read("config.json"))
            weights = z.read("model.weights.h5")
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{source}: not a readable .keras file ({e})") from None
    except ValueError as e:
        raise CheckpointError(f"{source}: config.json is not valid JSON ({e})") from None
    layers, input_shape = layers_from_config(config, source)
    attach_h5(layers, h5_layer_weights(weights, source), source)
    return KerasModel(layers, input_shape, source)


def read_architecture(path: str | os.PathLike[str]) -> tuple[list[KerasLayer], tuple[int, ...] | None]:
    """The architecture alone, from a ``.keras`` file or a JSON file (``model.to_json()`` / ``config.json``)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such model file (give a .keras file or the JSON of model.to_json())")
    if zipfile.is_zipfile(p):
        model = read_keras(p)
        for layer in model.layers:
            layer.weights = []
        return model.layers, model.input_shape
    try:
        config = json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{p}: not a .keras file or a Keras model JSON ({e})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{p}: not a Keras model JSON (expected an object)")
    return layers_from_config(config, str(p))


def read_weights_h5(path: str | os.PathLike[str]) -> dict[str, list[np.ndarray]]:
    return h5_layer_weights(Path(path).read_bytes(), str(path))


# -- the lesson's text file ---------------------------------------------------------------------

_NAME = re.compile(r"^[A-Za-z_][\w./:-]*$")
_SHAPE = re.compile(r"^(?:TensorShape\()?\(([\d,\s]*)\)\)?$|^TensorShape\(\[([\d,\s]*)\]\)$")


@dataclass
class TxtVariable:
    name: str
    array: np.ndarray
    line: int

    @property
    def role(self) -> str:
        """``kernel`` from ``kernel``, ``dense/kernel:0`` or ``sequential/dense/kernel``."""
        return self.name.split("/")[-1].split(":")[0]


def read_lesson_txt(path: str | os.PathLike[str]) -> list[TxtVariable]:
    """The variables of the lesson's ``weights.txt``, in file order (values as printed: ~8 digits)."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read it as text ({e})") from None
    out: list[TxtVariable] = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if not line:
            i += 1
            continue
        if not _NAME.match(line) or i + 1 >= len(lines):
            raise CheckpointError(f"{path}, line {i + 1}: expected a variable name, got {line[:40]!r}")
        m = _SHAPE.match(lines[i + 1].strip())
        if not m:
            raise CheckpointError(
                f"{path}, line {i + 2}: expected a shape such as (784, 128), got {lines[i + 1][:40]!r}"
            )
        dims = m.group(1) if m.group(1) is not None else m.group(2)
        shape = tuple(int(d) for d in dims.replace(",", " ").split())
        start, j, words = i, i + 2, []
        need = int(np.prod(shape)) if shape else 1
        while j < len(lines) and len(words) < need:
            words += lines[j].replace("[", " ").replace("]", " ").split()
            j += 1
        try:
            values = np.array([float(w) for w in words], dtype=np.float32)
        except ValueError:
            bad = next(w for w in words if not _is_float(w))
            raise CheckpointError(
                f"{path}, variable {line!r} (line {start + 1}): {bad!r} is not a number "
                "(an elided '...' means it was printed without np.set_printoptions(threshold=np.inf))"
            ) from None
        if values.size != need:
            raise CheckpointError(
                f"{path}, variable {line!r} (line {start + 1}): {values.size} values for shape {shape}"
            )
        out.append(TxtVariable(line, values.reshape(shape), start + 1))
        i = j
    if not out:
        raise CheckpointError(f"{path}: no variables found")
    return out


def _is_float(w: str) -> bool:
    try:
        float(w)
    except ValueError:
        return False
    return True


__all__ = [
    "HDF5_MAGIC",
    "PIXELS",
    "SUPPORTED", "KerasLayer", "KerasModel", "TxtVariable", "attach_h5", "layers_from_config",
    "read_architecture", "read_keras", "read_lesson_txt", "read_weights_h5", "snake_case",
]  # fmt: skip
