"""Run an exported mnistlab network with NumPy alone: the proof that the weights run "on any platform".

This file imports nothing but NumPy and the standard library (Pillow only when you hand it image
files), so it can be copied on its own to a machine without PyTorch or mnistlab::

    python numpy_infer.py weights.txt digit.png            # or weights.npz / weights.safetensors
    python -m mnistlab.export.numpy_infer weights.npz --npy images.npy

It reads the three weight formats mnistlab writes (``txt``, ``npz``, ``safetensors``; the ONNX file is
for onnxruntime), in either tensor layout (``pytorch`` or ``keras``), and runs the ``mlp``, ``lenet5``
and ``cnn`` presets: Standardize, Flatten, Linear, ReLU, Conv2d, BatchNorm2d (running statistics),
MaxPool2d and AdaptiveMaxPool2d, as described by the file's ``architecture`` list.

>>> net = NumpyModel.from_file("runs/mnist-mlp/weights.txt")        # doctest: +SKIP
>>> net.predict(x_test[:5]).argmax(1)                                # doctest: +SKIP
array([7, 2, 1, 0, 4])

The text format (written by ``mnistlab.export.txt``; every header line starts with ``#``)::

    # mnistlab weights, format 1
    # ... a human-readable description of layout, architecture and preprocessing ...
    # meta: {"format": "mnistlab-weights", "version": 1, "architecture": [...], ...}   <- one JSON line

    name: 2.weight
    shape: (128, 784)
    trainable: true
    <128 lines of 784 numbers: the values in C order, one line per row of the last axis>

``trainable: false`` marks a buffer the forward pass needs but gradient descent does not change
(BatchNorm running statistics, the Standardize layer's mean and std). Values are written with
``%.9g``, which reads back to exactly the same float32. Blank lines and ``#`` lines are ignored.
"""

from __future__ import annotations

import ast
import io
import json
import math
import os
import stat
import struct
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

try:  # inside mnistlab, errors are the package's typed errors (the CLI prints them as one line)
    from mnistlab.errors import ExportError as _ErrorBase
except ImportError:  # copied alone to a machine without mnistlab
    _ErrorBase = ValueError  # type: ignore[assignment,misc]

MAGIC = "# mnistlab weights, format 1"
META_PREFIX = "# meta: "
FORMAT = "mnistlab-weights"
VERSION = 1
LAYOUTS = ("pytorch", "keras")
# Tensor roles per layer type, in each layout (the Keras names are those of its layers' variables).
ROLES = {
    "pytorch": {
        "standardize": ("mean", "std"),
        "linear": ("weight", "bias"),
        "conv2d": ("weight", "bias"),
        "batchnorm2d": ("weight", "bias", "running_mean", "running_var"),
    },
    "keras": {
        "standardize": ("mean", "std"),
        "linear": ("kernel", "bias"),
        "conv2d": ("kernel", "bias"),
        "batchnorm2d": ("gamma", "beta", "moving_mean", "moving_variance"),
    },
}


class WeightsError(_ErrorBase):
    """A weights file is unreadable, hand-edited into inconsistency, or describes an unknown layer."""


@dataclass
class Weights:
    """What a weights file holds: tensors in file order, their trainable flags, and the metadata."""

    tensors: dict[str, np.ndarray]
    trainable: dict[str, bool]
    meta: dict
    source: str = "<weights>"
    lines: dict[str, int] = field(default_factory=dict)  # txt only: where each tensor's block starts

    def where(self, name: str) -> str:
        line = self.lines.get(name)
        return f"{self.source}, line {line}" if line else self.source


# -- reading the three file formats -------------------------------------------------------------


def read_weights_txt(path: str | os.PathLike[str]) -> Weights:
    """Read a ``weights.txt`` written by ``mnistlab export --format txt`` back into exact float32 arrays.

    A hand-edited file with a wrong number of values, a bad shape or a stray word raises
    ``WeightsError`` naming the tensor and the line.

    >>> w = read_weights_txt("runs/mnist-mlp/weights.txt")    # doctest: +SKIP
    >>> w.tensors["2.weight"].shape, w.meta["layout"]          # doctest: +SKIP
    ((128, 784), 'pytorch')
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such weights file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise WeightsError(f"{path}: cannot read it as text ({e})") from None
    return parse_weights_txt(text, str(path))


def parse_weights_txt(text: str, source: str = "<text>") -> Weights:
    """``read_weights_txt`` on a string (``source`` names it in error messages)."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != MAGIC:
        raise WeightsError(f"{source}, line 1: not a mnistlab weights file (expected {MAGIC!r})")
    meta: dict | None = None
    tensors: dict[str, np.ndarray] = {}
    trainable: dict[str, bool] = {}
    starts: dict[str, int] = {}
    i, n = 0, len(lines)

    def next_line() -> tuple[int, str] | None:
        # The next line that is neither blank nor a comment, as (1-based number, stripped text).
        nonlocal i, meta
        while i < n:
            s = lines[i].strip()
            i += 1
            if s.startswith(META_PREFIX.strip()):
                try:
                    meta = json.loads(s[len(META_PREFIX.strip()) :])
                except ValueError as e:
                    raise WeightsError(f"{source}, line {i}: the '# meta:' line is not valid JSON ({e})") from None
            if s and not s.startswith("#"):
                return i, s
        return None

    def field_line(key: str, name: str | None) -> tuple[int, str]:
        got = next_line()
        what = f"tensor {name!r}: " if name else ""
        if got is None:
            raise WeightsError(f"{source}: {what}file ends where '{key}:' was expected")
        lineno, s = got
        if not s.startswith(key + ":"):
            raise WeightsError(f"{source}, line {lineno}: {what}expected '{key}: ...', got {_clip(s)!r}")
        return lineno, s[len(key) + 1 :].strip()

    while True:
        got = next_line()
        if got is None:
            break
        if not got[1].startswith("name:") and tensors:
            last = list(tensors)[-1]
            raise WeightsError(
                f"{source}, line {got[0]}: tensor {last!r} (line {starts[last]}) has more rows than its shape "
                f"{shape_str(tensors[last].shape)} holds, or a 'name:' line is missing"
            )
        i -= 1  # let field_line read it again
        start, name = field_line("name", None)
        if not name:
            raise WeightsError(f"{source}, line {start}: empty tensor name")
        if name in tensors:
            raise WeightsError(f"{source}, line {start}: tensor {name!r} appears twice (first at line {starts[name]})")
        lineno, shape_s = field_line("shape", name)
        shape = _parse_shape(shape_s, f"{source}, line {lineno}: tensor {name!r}")
        lineno, flag = field_line("trainable", name)
        if flag not in ("true", "false"):
            raise WeightsError(
                f"{source}, line {lineno}: tensor {name!r}: trainable must be true or false, got {flag!r}"
            )
        size = math.prod(shape)
        row_len = shape[-1] if shape else 1
        n_rows = size // row_len if row_len else 0
        values = np.empty(size, dtype=np.float32)
        for r in range(n_rows):
            got = next_line()
            if got is None:
                raise WeightsError(
                    f"{source}: tensor {name!r} (line {start}) shape {shape_s} needs {n_rows} rows of {row_len} "
                    f"values, but the file ends after {r} rows"
                )
            lineno, s = got
            if s.startswith(("name:", "shape:", "trainable:")):
                raise WeightsError(
                    f"{source}, line {lineno}: tensor {name!r} (line {start}) shape {shape_s} needs {n_rows} rows of "
                    f"{row_len} values, found only {r} before {_clip(s)!r}"
                )
            words = s.split()
            if len(words) != row_len:
                raise WeightsError(
                    f"{source}, line {lineno}: tensor {name!r} shape {shape_s}: row {r + 1} of {n_rows} has "
                    f"{len(words)} values, expected {row_len}"
                )
            try:
                values[r * row_len : (r + 1) * row_len] = np.array(words, dtype=np.float32)
            except ValueError:
                bad = next(w for w in words if not _is_number(w))
                raise WeightsError(f"{source}, line {lineno}: tensor {name!r}: {bad!r} is not a number") from None
        tensors[name] = values.reshape(shape)
        trainable[name] = flag == "true"
        starts[name] = start
    if meta is None:
        raise WeightsError(f"{source}: no '# meta: {{...}}' header line (the architecture is unknown)")
    _check_meta(meta, source)
    return Weights(tensors, trainable, meta, source, starts)


def _parse_shape(s: str, where: str) -> tuple[int, ...]:
    try:
        shape = ast.literal_eval(s)
    except (ValueError, SyntaxError):
        shape = None
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise WeightsError(f"{where}: shape must look like (784, 128), (128,) or (), got {_clip(s)!r}")
    return shape


def shape_str(shape: tuple[int, ...] | list[int]) -> str:
    """A shape as Python writes a tuple: (784, 128), (128,), ()."""
    return f"({shape[0]},)" if len(shape) == 1 else str(tuple(shape))


def _is_number(word: str) -> bool:
    try:
        np.array([word], dtype=np.float32)  # the same parser as the rows, so the culprit is always found
    except ValueError:
        return False
    return True


def _clip(s: str, n: int = 40) -> str:
    return s if len(s) <= n else s[:n] + "…"


def read_weights_npz(path: str | os.PathLike[str]) -> Weights:
    """Read ``weights.npz`` (one array per tensor, plus the metadata as a JSON string; never unpickles)."""
    return parse_weights_npz(_read_bytes(path), str(path))


def parse_weights_npz(data: bytes, source: str = "<npz>") -> Weights:
    """``read_weights_npz`` on the file's bytes."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise WeightsError(f"{source}: not a readable .npz file ({e})") from None
    meta_a = arrays.pop("__mnistlab__", None)
    if meta_a is None:
        raise WeightsError(f"{source}: an .npz file, but not mnistlab weights (no '__mnistlab__' entry)")
    return _from_arrays(arrays, _json(str(meta_a), source), source)


def read_weights_safetensors(path: str | os.PathLike[str]) -> Weights:
    """Read ``weights.safetensors`` with NumPy alone (8-byte header length, JSON header, raw little-endian data)."""
    return parse_weights_safetensors(_read_bytes(path), str(path))


def parse_weights_safetensors(data: bytes, source: str = "<safetensors>") -> Weights:
    """``read_weights_safetensors`` on the file's bytes."""
    dtypes = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "I64": "<i8", "I32": "<i4"}
    try:
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
        body = memoryview(data)[8 + n :]
        arrays = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            a, b = info["data_offsets"]
            arr = np.frombuffer(body[a:b], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
            arrays[name] = arr.astype(np.float32)
        meta_s = (header.get("__metadata__") or {})["mnistlab"]
    except (struct.error, ValueError, KeyError, TypeError) as e:
        raise WeightsError(
            f"{source}: not a readable mnistlab safetensors weights file ({type(e).__name__}: {e})"
        ) from None
    return _from_arrays(arrays, _json(meta_s, source), source)


def _read_bytes(path: str | os.PathLike[str]) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such weights file") from None
    except OSError as e:
        raise WeightsError(f"{path}: cannot read it ({e.strerror or e})") from None


def _json(s: str, source: str) -> dict:
    try:
        meta = json.loads(s)
    except ValueError as e:
        raise WeightsError(f"{source}: metadata is not valid JSON ({e})") from None
    _check_meta(meta, source)
    return meta


def _from_arrays(arrays: dict[str, np.ndarray], meta: dict, source: str) -> Weights:
    order = [t["name"] for t in meta.get("tensors", [])] or list(arrays)
    flags = {t["name"]: bool(t.get("trainable", True)) for t in meta.get("tensors", [])}
    missing = [n for n in order if n not in arrays]
    if missing:
        raise WeightsError(f"{source}: tensor {missing[0]!r} is listed in the metadata but missing from the file")
    tensors = {n: np.asarray(arrays[n], dtype=np.float32) for n in order}
    return Weights(tensors, {n: flags.get(n, True) for n in order}, meta, source)


def _check_meta(meta: object, source: str) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise WeightsError(f"{source}: metadata is not mnistlab weights metadata (format {FORMAT!r})")
    if meta.get("version", 0) > VERSION:
        raise WeightsError(f"{source}: weights format version {meta['version']} is newer than this reader ({VERSION})")
    if meta.get("layout") not in LAYOUTS:
        raise WeightsError(f"{source}: unknown tensor layout {meta.get('layout')!r} (expected pytorch or keras)")
    if not isinstance(meta.get("architecture"), list):
        raise WeightsError(f"{source}: metadata has no 'architecture' list")


def load_weights(path: str | os.PathLike[str]) -> Weights:
    """Read any of the three formats, chosen by the file's suffix (``.txt``, ``.npz``, ``.safetensors``)."""
    suffix = Path(path).suffix.lower()
    readers = {".txt": read_weights_txt, ".npz": read_weights_npz, ".safetensors": read_weights_safetensors}
    if suffix not in readers:
        raise WeightsError(f"{path}: unknown weights file type {suffix!r} (expected .txt, .npz or .safetensors)")
    return readers[suffix](path)


# -- layouts: Keras stores kernels transposed and flattens channels-last ------------------------


def to_keras(
    op: str, arrays: dict[str, np.ndarray], flatten_from: Sequence[int] | None = None
) -> dict[str, np.ndarray]:
    """PyTorch-layout tensors of one layer → Keras layout (role names and axis order).

    ``flatten_from`` is the ``(C, H, W)`` shape a Flatten turned into this Linear layer's input: Keras
    flattens channels-last images, so such a Dense kernel lists its inputs in ``(H, W, C)`` order.
    """
    out: dict[str, np.ndarray] = {}
    torch_roles, keras_roles = ROLES["pytorch"].get(op, ()), ROLES["keras"].get(op, ())
    for t_role, k_role in zip(torch_roles, keras_roles, strict=True):
        if t_role not in arrays:
            continue
        a = arrays[t_role]
        if op == "linear" and t_role == "weight":
            if flatten_from is not None and len(flatten_from) == 3:
                c, h, w = flatten_from
                a = a.reshape(a.shape[0], c, h, w).transpose(0, 2, 3, 1).reshape(a.shape[0], -1)
            a = a.T
        elif op == "conv2d" and t_role == "weight":
            a = a.transpose(2, 3, 1, 0)
        out[k_role] = np.array(a, dtype=np.float32, order="C")
    return out


def from_keras(
    op: str, arrays: dict[str, np.ndarray], flatten_from: Sequence[int] | None = None
) -> dict[str, np.ndarray]:
    """The inverse of ``to_keras``: Keras-layout tensors of one layer → PyTorch layout."""
    out: dict[str, np.ndarray] = {}
    torch_roles, keras_roles = ROLES["pytorch"].get(op, ()), ROLES["keras"].get(op, ())
    for t_role, k_role in zip(torch_roles, keras_roles, strict=True):
        if k_role not in arrays:
            continue
        a = arrays[k_role]
        if op == "linear" and k_role == "kernel":
            a = a.T
            if flatten_from is not None and len(flatten_from) == 3:
                c, h, w = flatten_from
                a = a.reshape(a.shape[0], h, w, c).transpose(0, 3, 1, 2).reshape(a.shape[0], -1)
        elif op == "conv2d" and k_role == "kernel":
            a = a.transpose(3, 2, 0, 1)
        out[t_role] = np.array(a, dtype=np.float32, order="C")
    return out


# -- the forward pass -----------------------------------------------------------------------------


def _pair(v: object) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))  # type: ignore[index]


def _pad_hw(x: np.ndarray, ph: int, pw: int, value: float = 0.0) -> np.ndarray:
    return np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=value) if ph or pw else x


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: object, padding: object) -> np.ndarray:
    """2-D cross-correlation like ``torch.nn.functional.conv2d`` (groups=1, dilation=1) on channels-last
    ``(N, H, W, C)`` input, with a PyTorch-layout weight ``(out, in, kh, kw)``; returns ``(N, Ho, Wo, out)``."""
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    o, c, kh, kw = weight.shape
    x = _pad_hw(x, ph, pw)
    n = x.shape[0]
    # im2col: every window as one row of a (N*Ho*Wo, kh*kw*C) matrix, then a single BLAS product.
    # Channels-last makes each copied run C floats long; per-offset or per-row products measured 2-5x slower.
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]  # (N, Ho, Wo, C, kh, kw)
    ho, wo = win.shape[1], win.shape[2]
    cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(n * ho * wo, kh * kw * c)
    out = cols @ weight.transpose(2, 3, 1, 0).reshape(kh * kw * c, o)
    if bias is not None:
        out += bias
    return out.reshape(n, ho, wo, o)


def max_pool2d(x: np.ndarray, kernel: object, stride: object, padding: object) -> np.ndarray:
    """Max pooling like ``torch.nn.MaxPool2d`` (floor mode, dilation 1) on ``(N, H, W, C)``; padding is -inf."""
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel), _pair(stride), _pair(padding)
    x = _pad_hw(x, ph, pw, -np.inf)
    ho, wo = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    # The maximum over the kh*kw strided views, one per kernel offset: no window copies.
    out = None
    for i in range(kh):
        for j in range(kw):
            v = x[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]
            out = v.copy() if out is None else np.maximum(out, v, out=out)
    return out  # type: ignore[return-value]


def adaptive_max_pool2d(x: np.ndarray, output_size: object) -> np.ndarray:
    """``torch.nn.AdaptiveMaxPool2d`` on ``(N, H, W, C)``: bin i covers floor(i*H/out) .. ceil((i+1)*H/out)."""
    oh, ow = _pair(output_size)
    n, h, w, c = x.shape
    if (oh, ow) == (1, 1):
        return x.max(axis=(1, 2), keepdims=True)
    out = np.empty((n, oh, ow, c), dtype=x.dtype)
    for i in range(oh):
        h0, h1 = (i * h) // oh, -((-(i + 1) * h) // oh)
        for j in range(ow):
            w0, w1 = (j * w) // ow, -((-(j + 1) * w) // ow)
            out[:, i, j] = x[:, h0:h1, w0:w1].max(axis=(1, 2))
    return out


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def images_to_array(images: np.ndarray) -> np.ndarray:
    """uint8 images ``(N, H, W)`` or ``(N, H, W, C)`` → float32 ``(N, C, H, W)`` in 0..1.

    The NumPy twin of ``mnistlab.tensors.images_to_tensor`` (which needs torch): the same rule,
    ``x / 255``, checked against it by the tests. Float input is taken as already scaled to 0..1.
    """
    x = np.asarray(images)
    if x.ndim == 2:
        x = x[None]
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 4:
        raise WeightsError(f"expected images of shape (N, H, W) or (N, H, W, C), got {x.shape}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x, dtype=np.float32) / np.float32(255.0)
    return np.ascontiguousarray(x, dtype=np.float32)


def layer_output_shape(op: str, spec: dict, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The per-image output shape of one layer of the ``architecture`` list, given its input shape."""
    if op == "flatten":
        return (math.prod(shape),)
    if op == "linear":
        return (int(spec["out_features"]),)
    if op in ("conv2d", "maxpool2d"):
        (kh, kw), (sh, sw), (ph, pw) = (_pair(spec[k]) for k in ("kernel_size", "stride", "padding"))
        c = int(spec["out_channels"]) if op == "conv2d" else shape[0]
        return (c, (shape[1] + 2 * ph - kh) // sh + 1, (shape[2] + 2 * pw - kw) // sw + 1)
    if op == "adaptive_maxpool2d":
        return (shape[0], *_pair(spec["output_size"]))
    return shape


@dataclass
class _Layer:
    name: str
    op: str
    spec: dict
    arrays: dict[str, np.ndarray]


class NumpyModel:
    """An exported network, ready to run forward with NumPy.

    >>> net = NumpyModel.from_file("runs/mnist-cnn/weights.npz")   # doctest: +SKIP
    >>> probs = net.predict(x_test)                                 # doctest: +SKIP
    """

    def __init__(self, weights: Weights) -> None:
        meta = weights.meta
        self.weights = weights
        self.layout: str = meta["layout"]
        self.class_names: list[str] = list(meta.get("class_names") or [])
        shape = meta.get("input", {}).get("chw") or meta.get("model_spec", {}).get("in_shape")
        if not shape or len(shape) != 3:
            raise WeightsError(f"{weights.source}: metadata does not give the input shape (C, H, W)")
        self.in_shape: tuple[int, int, int] = (int(shape[0]), int(shape[1]), int(shape[2]))
        self.layers = self._build(meta["architecture"])

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> NumpyModel:
        return cls(load_weights(path))

    def _build(self, arch: list[dict]) -> list[_Layer]:
        # Walk the layers once with the input shape, checking every tensor's shape against what the
        # layer needs, so a hand-edited file fails here with names instead of deep inside a matmul.
        w = self.weights
        shape: tuple[int, ...] = self.in_shape
        flat_from: tuple[int, ...] | None = None
        layers: list[_Layer] = []
        for k, spec in enumerate(arch):
            op, name = spec.get("op"), str(spec.get("name", k))
            params = spec.get("params", {})
            required = [r for r in ROLES[self.layout].get(op, ()) if r != "bias"]
            if any(r not in params for r in required):
                raise WeightsError(f"{w.source}: layer {name!r} ({op}) must name tensors for {', '.join(required)}")
            arrays = {}
            for role, tname in params.items():
                if tname not in w.tensors:
                    raise WeightsError(
                        f"{w.source}: layer {name!r} ({op}) needs tensor {tname!r}, which the file lacks"
                    )
                arrays[role] = w.tensors[tname]
            expected = self._expected_shapes(op, spec, shape, name)
            for role, need in expected.items():
                if role in params and tuple(arrays[role].shape) != need:
                    raise WeightsError(
                        f"{w.where(params[role])}: tensor {params[role]!r} has shape {tuple(arrays[role].shape)}, "
                        f"but layer {name!r} ({op}) needs {need}"
                    )
            if self.layout == "keras":
                arrays = {**arrays, **from_keras(op, arrays, flat_from if op == "linear" else None)}
            layers.append(_Layer(name, op, spec, arrays))
            flat_from = shape if op == "flatten" else None
            shape = layer_output_shape(op, spec, shape)
        return layers

    def _expected_shapes(self, op: str, spec: dict, shape: tuple[int, ...], name: str) -> dict[str, tuple]:
        keras = self.layout == "keras"
        if op == "standardize":
            return {"mean": (), "std": ()}
        if op == "linear":
            fin, fout = int(spec["in_features"]), int(spec["out_features"])
            if math.prod(shape) != fin or len(shape) != 1:
                raise WeightsError(f"{self.weights.source}: layer {name!r} (linear) takes {fin} inputs, gets {shape}")
            return {"kernel": (fin, fout), "bias": (fout,)} if keras else {"weight": (fout, fin), "bias": (fout,)}
        if op == "conv2d":
            cin, cout = int(spec["in_channels"]), int(spec["out_channels"])
            kh, kw = _pair(spec["kernel_size"])
            if len(shape) != 3 or shape[0] != cin:
                raise WeightsError(f"{self.weights.source}: layer {name!r} (conv2d) takes {cin} channels, gets {shape}")
            if keras:
                return {"kernel": (kh, kw, cin, cout), "bias": (cout,)}
            return {"weight": (cout, cin, kh, kw), "bias": (cout,)}
        if op == "batchnorm2d":
            c = (int(spec["num_features"]),)
            return dict.fromkeys(ROLES[self.layout]["batchnorm2d"], c)
        if op in ("flatten", "relu", "maxpool2d", "adaptive_maxpool2d"):
            return {}
        raise WeightsError(f"{self.weights.source}: layer {name!r}: unknown operation {op!r}")

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits for float32 inputs ``(N, C, H, W)`` already scaled to 0..1."""
        # Images run channels-last inside (see conv2d); Flatten restores PyTorch's (C, H, W) order.
        x = np.asarray(x, dtype=np.float32).transpose(0, 2, 3, 1)
        for layer in self.layers:
            a, s = layer.arrays, layer.spec
            if layer.op == "standardize":
                x = (x - a["mean"]) / a["std"]
            elif layer.op == "flatten":
                x = (x.transpose(0, 3, 1, 2) if x.ndim == 4 else x).reshape(len(x), -1)
            elif layer.op == "linear":
                x = x @ a["weight"].T
                if "bias" in a:
                    x = x + a["bias"]
            elif layer.op == "relu":
                x = np.maximum(x, np.float32(0))
            elif layer.op == "conv2d":
                x = conv2d(x, a["weight"], a.get("bias"), s["stride"], s["padding"])
            elif layer.op == "batchnorm2d":
                # Eval-mode batch norm folded into one scale and shift per channel, as PyTorch's CPU kernel does.
                scale = a["weight"] / np.sqrt(a["running_var"] + np.float32(s["eps"]))
                x = x * scale + (a["bias"] - a["running_mean"] * scale)
            elif layer.op == "maxpool2d":
                x = max_pool2d(x, s["kernel_size"], s["stride"], s["padding"])
            elif layer.op == "adaptive_maxpool2d":
                x = adaptive_max_pool2d(x, s["output_size"])
        return x

    def predict(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class probabilities ``(N, classes)`` for uint8 images ``(N, H, W)`` / ``(N, H, W, C)`` (or floats in 0..1)."""
        x = images_to_array(images)
        if tuple(x.shape[1:]) != self.in_shape:
            raise WeightsError(
                f"images of shape {tuple(x.shape[1:])} (C, H, W) do not fit this network's {self.in_shape}"
            )
        return np.concatenate([softmax(self.forward(x[i : i + batch_size])) for i in range(0, len(x), batch_size)])


# -- reading image files: a copy of mnistlab.imaging's rules (tests/test_imaging.py keeps them equal) --

try:
    from mnistlab.errors import ImageError as _ImageErrorBase
except ImportError:  # copied alone to a machine without mnistlab
    _ImageErrorBase = ValueError  # type: ignore[assignment,misc]


class ImageFileError(_ImageErrorBase):
    """An image file that cannot be used: not a regular file, not an image, or too large."""


MAX_PIXELS = 40_000_000  # refused before decoding: a 100 KB PNG can claim 50,000 x 50,000 pixels


def read_image_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a regular file (FIFOs, devices and folders are refused before they are opened)."""
    where = str(path)
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise ImageFileError(f"{where}: no such file") from None
    except OSError as e:
        raise ImageFileError(f"{where}: cannot read ({e.strerror or e})") from None
    _check_file_type(st.st_mode, where)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise ImageFileError(f"{where}: cannot read ({e.strerror or e})") from None
    try:
        _check_file_type(os.fstat(fd).st_mode, where)
        parts = []
        while chunk := os.read(fd, 1 << 20):
            parts.append(chunk)
    except OSError as e:
        raise ImageFileError(f"{where}: cannot read ({e.strerror or e})") from None
    finally:
        os.close(fd)
    if not parts:
        raise ImageFileError(f"{where}: empty file (0 bytes)")
    return b"".join(parts)


def _check_file_type(mode: int, where: str) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise ImageFileError(f"{where}: is a folder, not an image")
    what = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        raise ImageFileError(f"{where}: not a regular file ({what}); only image files are read")
    raise ImageFileError(f"{where}: not a regular file (a special file); only image files are read")


def decode_image(
    path: str | os.PathLike[str], color: str = "gray", size: Sequence[int] | None = None, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """An image file → uint8 ``(H, W)`` (gray) or ``(H, W, 3)``, upright (EXIF), not resized (needs Pillow).

    Transparency is flattened onto white, palettes and CMYK become RGB, 16-bit values are scaled to
    0..255, gray is Pillow's ``L`` of that RGB. ``size`` (width, height) lets a big JPEG be decoded at
    1/2, 1/4 or 1/8 scale, never below it. Pictures over ``max_pixels`` are refused from their header.
    """
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    where = str(path)
    data = read_image_file(path)
    unreadable = "unreadable image ({}; truncated or corrupt?)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            msg = "not an image, or a corrupt one (PNG, JPEG, GIF, BMP, WebP, TIFF are read)"
            raise ImageFileError(f"{where}: {msg}") from None
        except Image.DecompressionBombError as e:
            raise ImageFileError(f"{where}: image too large: {e}") from None
        except (OSError, ValueError, SyntaxError, EOFError) as e:
            raise ImageFileError(f"{where}: " + unreadable.format(str(e) or type(e).__name__)) from None
    w, h = im.size
    if w * h > max_pixels:
        raise ImageFileError(
            f"{where}: image too large: {w}×{h} pixels ({w * h / 1e6:.1f} megapixels; the limit is "
            f"{max_pixels / 1e6:.1f}, against decompression bombs)"
        )
    if w < 1 or h < 1:
        raise ImageFileError(f"{where}: image has no pixels ({w}×{h})")

    def orientation(im: Image.Image) -> int:
        try:
            o = int(im.getexif().get(0x0112, 1))
        except Exception:  # a corrupt EXIF block is ignored
            return 1
        return o if 1 <= o <= 8 else 1

    try:
        if size is not None and im.format == "JPEG":
            turned = orientation(im) in (5, 6, 7, 8)
            im.draft(im.mode, tuple(size[::-1]) if turned else tuple(size))
        im.load()
        if orientation(im) != 1:
            im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
            a = np.asarray(im).astype(np.int64)
            im = Image.fromarray(((np.clip(a, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8), "L")
        if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
            rgba = im.convert("RGBA")
            im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        mode = "L" if color == "gray" else "RGB"
        return np.asarray(im if im.mode == mode else im.convert(mode))
    except Image.DecompressionBombError as e:
        raise ImageFileError(f"{where}: image too large: {e}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ImageFileError(f"{where}: " + unreadable.format(str(e) or type(e).__name__)) from None


def load_image(path: str | os.PathLike[str], in_shape: Sequence[int], invert: bool = False) -> np.ndarray:
    """An image file → uint8 ``(H, W)`` (gray) or ``(H, W, 3)``, resized to the network's input (needs Pillow).

    MNIST digits are white on black; pass ``invert=True`` for a dark digit on white paper.
    """
    from PIL import Image

    c, h, w = in_shape
    x = decode_image(path, "gray" if c == 1 else "rgb", size=(w, h))
    if x.shape[:2] != (h, w):
        x = np.asarray(Image.fromarray(x).resize((w, h), Image.Resampling.BILINEAR), dtype=np.uint8)
    return 255 - x if invert else x


def main(argv: list[str] | None = None) -> int:
    """``python numpy_infer.py WEIGHTS [IMAGE ...] [--npy FILE] [--invert]``: print the class of each image."""
    import argparse

    p = argparse.ArgumentParser(prog="numpy_infer", description="Run an exported mnistlab network with NumPy only.")
    p.add_argument("weights", help="weights.txt, weights.npz or weights.safetensors")
    p.add_argument("images", nargs="*", help="image files (PNG, JPEG, ...; needs Pillow)")
    p.add_argument("--npy", help="a .npy file of uint8 images (N, H, W) or (N, H, W, C)")
    p.add_argument("--invert", action="store_true", help="invert image files (dark digit on white) (default: off)")
    args = p.parse_args(argv)
    try:
        net = NumpyModel.from_file(args.weights)
        names, batches = [], []
        if args.npy:
            arr = np.load(args.npy, allow_pickle=False)
            names += [f"{args.npy}[{i}]" for i in range(len(arr))]
            batches.append(images_to_array(arr))
        if args.images:
            names += args.images
            batches.append(images_to_array(np.stack([load_image(f, net.in_shape, args.invert) for f in args.images])))
        if not batches:
            p.error("give image files or --npy")
        probs = net.predict(np.concatenate(batches))
    except (WeightsError, ImageFileError, OSError, ValueError) as e:
        print(f"numpy_infer: error: {e}", file=sys.stderr)
        return 2
    classes = net.class_names or [str(i) for i in range(probs.shape[1])]
    for name, pr in zip(names, probs, strict=True):
        k = int(pr.argmax())
        print(f"{name}: {classes[k]} ({pr[k]:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
