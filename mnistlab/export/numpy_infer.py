"""Run an exported mnistlab network with NumPy alone: the proof that the weights run "on any platform".

This file imports nothing but NumPy and the standard library (Pillow only when you hand it image
files), so it can be copied on its own to a machine without PyTorch or mnistlab::

    python numpy_infer.py weights.txt photo.jpg drawn.png   # or weights.npz / weights.safetensors
    python -m mnistlab.export.numpy_infer weights.npz --npy images.npy

Image files get the same preparation as ``mnistlab predict`` gives them (``--prepare auto``: for a digit
model, the photo recipe of ``mnistlab.preprocess``: ink polarity, uneven light, dust, crop, thin strokes,
20×20 box, centre of mass), here in NumPy and Pillow; a test keeps its 28×28 inputs equal to mnistlab's
within a small tolerance. Options may stand anywhere among the file names.

It reads the three weight formats mnistlab writes (``txt``, ``npz``, ``safetensors``; the ONNX file is
for onnxruntime), in either tensor layout (``pytorch`` or ``keras``), and runs the ``mlp``, ``lenet5``
and ``cnn`` presets and the models ``mnistlab import-keras`` brings in: Standardize (one number or one per
channel), Flatten, Reshape (also Keras's channels-last kind), Linear, ReLU, Conv2d, BatchNorm2d and
BatchNorm1d (running statistics), MaxPool2d, AvgPool2d and AdaptiveMaxPool2d, as described by the
file's ``architecture`` list.

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
        "channel_standardize": ("mean", "std"),
        "linear": ("weight", "bias"),
        "conv2d": ("weight", "bias"),
        "batchnorm2d": ("weight", "bias", "running_mean", "running_var"),
        "batchnorm1d": ("weight", "bias", "running_mean", "running_var"),
    },
    "keras": {
        "standardize": ("mean", "std"),
        "channel_standardize": ("mean", "std"),
        "linear": ("kernel", "bias"),
        "conv2d": ("kernel", "bias"),
        "batchnorm2d": ("gamma", "beta", "moving_mean", "moving_variance"),
        "batchnorm1d": ("gamma", "beta", "moving_mean", "moving_variance"),
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
        elif op == "channel_standardize":  # one number per channel, broadcast over (H, W, C) in Keras
            a = a.reshape(-1)
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
        elif op == "channel_standardize":
            a = a.reshape(-1, 1, 1)
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


def avg_pool2d(
    x: np.ndarray, kernel: object, stride: object, padding: object, count_include_pad: bool = True
) -> np.ndarray:
    """Average pooling like ``torch.nn.AvgPool2d`` (floor mode) on ``(N, H, W, C)``; with ``count_include_pad``
    false, the zero padding is left out of each window's count (as Keras's ``'same'`` pooling does)."""
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel), _pair(stride), _pair(padding)

    def window_sums(a: np.ndarray) -> np.ndarray:
        a = _pad_hw(a, ph, pw)
        ho, wo = (a.shape[1] - kh) // sh + 1, (a.shape[2] - kw) // sw + 1
        total = np.zeros((a.shape[0], ho, wo, a.shape[3]), dtype=np.float32)
        for i in range(kh):
            for j in range(kw):
                total += a[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]
        return total

    if count_include_pad or not (ph or pw):
        return window_sums(x) / np.float32(kh * kw)
    return window_sums(x) / window_sums(np.ones((1, x.shape[1], x.shape[2], 1), dtype=np.float32))


def reshape(x: np.ndarray, spec: dict) -> np.ndarray:
    """The ``reshape`` layer on this runner's arrays (images ``(N, H, W, C)``, anything else in PyTorch's order);
    ``channels_last`` and ``source`` as in ``mnistlab.models.Reshape``."""
    n, shape = len(x), tuple(int(d) for d in spec["shape"])
    keras_order = spec.get("channels_last") and spec.get("source")
    if x.ndim == 4:  # images (N, H, W, C): read (H, W, C) for Keras's order, else PyTorch's (C, H, W)
        x = x if keras_order else x.transpose(0, 3, 1, 2)
    elif keras_order:  # a Flatten of (C, H, W) images
        c, h, w = (int(d) for d in spec["source"])
        x = x.reshape(n, c, h, w).transpose(0, 2, 3, 1)
    x = x.reshape(n, -1)
    if len(shape) != 3:
        return x.reshape(n, *shape)
    c, h, w = shape
    return x.reshape(n, h, w, c) if spec.get("channels_last") else x.reshape(n, c, h, w).transpose(0, 2, 3, 1)


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
    if op == "reshape":
        return tuple(int(d) for d in spec["shape"])
    if op in ("conv2d", "maxpool2d", "avgpool2d"):
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
        if op in ("batchnorm2d", "batchnorm1d", "channel_standardize"):
            c = int(spec["channels" if op == "channel_standardize" else "num_features"])
            if (len(shape) == 1) != (op == "batchnorm1d") or shape[0] != c:
                raise WeightsError(f"{self.weights.source}: layer {name!r} ({op}) takes {c} channels, gets {shape}")
            per_channel = (c, 1, 1) if op == "channel_standardize" and not keras else (c,)
            return dict.fromkeys(ROLES[self.layout][op], per_channel)
        if op == "reshape":
            source = spec.get("source")
            want = [d for d in spec.get("shape", ()) if isinstance(d, int) and d > 0]
            if (
                len(want) != len(spec.get("shape", ()))
                or not 1 <= len(want) <= 3
                or math.prod(want) != math.prod(shape)
            ):
                raise WeightsError(
                    f"{self.weights.source}: layer {name!r} (reshape) cannot make {spec.get('shape')} of {shape}"
                )
            if source is not None and (len(source) != 3 or math.prod(source) != math.prod(shape)
                                       or (len(shape) == 3 and tuple(source) != shape)):  # fmt: skip
                raise WeightsError(
                    f"{self.weights.source}: layer {name!r} (reshape) has a source {source} for inputs {shape}"
                )
            return {}
        if op in ("flatten", "relu", "maxpool2d", "avgpool2d", "adaptive_maxpool2d"):
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
            elif layer.op == "channel_standardize":  # (C, 1, 1) numbers, here over (N, H, W, C)
                x = (x - a["mean"].reshape(-1)) / a["std"].reshape(-1)
            elif layer.op == "reshape":
                x = reshape(x, s)
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
            elif layer.op in ("batchnorm2d", "batchnorm1d"):
                # Eval-mode batch norm folded into one scale and shift per channel, as PyTorch's CPU kernel does.
                scale = a["weight"] / np.sqrt(a["running_var"] + np.float32(s["eps"]))
                x = x * scale + (a["bias"] - a["running_mean"] * scale)
            elif layer.op == "maxpool2d":
                x = max_pool2d(x, s["kernel_size"], s["stride"], s["padding"])
            elif layer.op == "avgpool2d":
                x = avg_pool2d(x, s["kernel_size"], s["stride"], s["padding"], s.get("count_include_pad", True))
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


# -- the photo recipe: the same preparation as ``mnistlab.preprocess.prepare_image`` -------------------
#
# ``mnistlab predict`` prepares each picture like the data set's images before the model sees it; so
# does this runner, with NumPy and Pillow alone (mnistlab's own pipeline uses OpenCV for speed). A test
# keeps the two within a small tolerance on a fixed set of photos, drawings and scans.

# Pictures are analysed at most this large; a phone photo holds far more detail than 28×28 needs.
WORK_SIDE = 384
LOW_SIDE = 128  # smaller pictures are enlarged to this (see _work_scale)
FLAT_SIDE = 200  # a clean picture (flat border: a canvas, a scan) is worked at most this large
DRAFT_SIDE = 256  # JPEGs are decoded at 1/2, 1/4 or 1/8 scale when still this large (as preprocess does)
# MNIST's recipe: the digit fills a 20×20 box, its centre of mass at pixel (14, 14) of 28×28.
BOX = 20
SIDE = 28
# Stroke width relative to the digit's size: MNIST's median is 0.126, its 5th percentile 0.083.
THIN_STROKE = 0.07
TARGET_STROKE = 0.11
# Ink must stand out from the paper around it by this many noise sigmas (at its 90th percentile).
STRONG_INK = 11.5
# A border whose values spread less than this (5th to 90th percentile) is a flat background.
FLAT_BORDER = 0.025
PREPARATIONS = ("auto", "digit", "fashion", "none")


def prepare_digit(gray: np.ndarray, thicken: bool | None = None) -> np.ndarray:
    """MNIST's recipe on a picture's luma (float 0..1, 1 = white): ink made bright on dark, uneven
    light and paper shade removed, specks dropped, cropped to the ink, thin strokes thickened, fitted
    into 20×20 and centred by mass in 28×28 → uint8 ``(28, 28)``. Raises ``NoDigitError`` when there
    is no digit."""
    h0, w0 = gray.shape
    scale = _work_scale(w0, h0)
    if max(w0, h0) * scale > FLAT_SIDE:
        lo, hi = np.percentile(_border(gray), [5, 95])
        if hi - lo < FLAT_BORDER:  # a clean picture: worked at most FLAT_SIDE, as preprocess does
            scale = FLAT_SIDE / max(w0, h0)
    g = _resize(gray, (round(w0 * scale), round(h0 * scale))) if scale != 1 else gray
    border = _border(g)
    lo, hi = np.percentile(border, [5, 95])
    # A flat border (a canvas, a scan) is the paper: the ink is whichever side of it holds more.
    flat = hi - lo < FLAT_BORDER
    dark = _flat_ink_is_dark(g, float(np.median(border))) if flat else _ink_is_dark(g)
    x = 1.0 - g if dark else g
    x = np.clip(x - _background(x), 0, None)
    x = _blur3(x)
    soft, keep, reason = _find_ink(x)
    if keep is None:
        raise NoDigitError(f"no digit found ({reason})")
    soft = soft * _dilate(keep)  # keep the anti-aliased rim of the strokes, drop the specks
    rows, cols = np.nonzero(soft.any(1))[0], np.nonzero(soft.any(0))[0]
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    big = max(bottom - top, right - left)
    if big < max(4, 0.03 * max(soft.shape)):
        raise NoDigitError(f"no digit found (only a speck of ink, {right - left}×{bottom - top} pixels)")
    crop = soft[top:bottom, left:right]
    width = _stroke_width(keep[top:bottom, left:right]) / big
    if thicken or (thicken is None and width < THIN_STROKE):
        crop = _thicken(crop, width)
    return _fit_and_centre(crop)


def prepare_fashion(gray: np.ndarray) -> np.ndarray:
    """Fashion-MNIST's recipe (trimmed to the object, longest side 28, centred, negated) → uint8 (28, 28)."""
    image, reason = _prepare_fashion(gray)
    if image is None:
        raise NoDigitError(reason)
    return image


def _work_scale(w: int, h: int) -> float:
    """The working copy's scale: large pictures to WORK_SIDE (a digit may fill only a fifth of a photo,
    and still needs twice the 20-pixel box), tiny ones enlarged to LOW_SIDE so the filters have room.
    (Working pictures of up to WORK_SIDE at half size too cost 1-4 of 600 photo-like digits.)"""
    side = max(w, h)
    if side > WORK_SIDE:
        return WORK_SIDE / side
    if side < LOW_SIDE:
        return float(-(-LOW_SIDE // side))
    return 1.0


def _resize(a: np.ndarray, size: tuple[int, int], resample: int | None = None) -> np.ndarray:
    from PIL import Image

    w, h = max(1, size[0]), max(1, size[1])
    if resample is None:
        # Area averaging when shrinking (anti-aliasing, like MNIST's), smooth interpolation when enlarging.
        resample = Image.BOX if w <= a.shape[1] and h <= a.shape[0] else Image.BICUBIC
    return np.asarray(Image.fromarray(a.astype(np.float32), "F").resize((w, h), resample), dtype=np.float32)


def _border(g: np.ndarray) -> np.ndarray:
    """The band 4% wide around the picture."""
    h, w = g.shape
    m = max(2, round(0.04 * min(h, w)))
    return np.concatenate([g[:m].ravel(), g[-m:].ravel(), g[:, :m].ravel(), g[:, -m:].ravel()])


def _flat_ink_is_dark(g: np.ndarray, paper: float) -> bool:
    """True for dark ink on a flat paper of level ``paper``: more lies below it than above."""
    return float(np.maximum(paper - g, 0).sum()) >= float(np.maximum(g - paper, 0).sum())


def _ink_is_dark(g: np.ndarray) -> bool:
    """True for dark ink on light paper. The ink is the minority: measured against the local median
    (over a third of the picture, where even a bold digit covers less than half), whichever tail of
    the pixel values stands out further is the ink, whatever the paper's shade or lighting."""
    local = _thumb_filter(g, 0.15, "median")
    resid = (g - local)[::2, ::2]  # every other pixel: the same statistics, a quarter of the work
    sigma = 1.4826 * float(np.median(np.abs(resid))) + 1e-3
    dark = float(np.clip(-resid - 3 * sigma, 0, None).sum())
    bright = float(np.clip(resid - 3 * sigma, 0, None).sum())
    if abs(dark - bright) <= 0.2 * max(dark, bright):  # undecided: the border is usually paper
        border = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
        return bool(np.median(border) >= np.median(g))
    return dark > bright


def _thumb_filter(x: np.ndarray, radius: float, how: str) -> np.ndarray:
    """A rank filter with a window of ``radius`` × the picture's longest side, run on a thumbnail (so
    it costs the same for any picture), smoothed and enlarged back to ``x``'s size. ``how`` is
    ``median`` or ``opening`` (min then max filter: removes bright things narrower than the window
    and keeps broad ones)."""
    h, w = x.shape
    side = 32 if how == "median" else 64  # a 2-D median costs k² per pixel; min and max only 2k
    s = side / max(h, w)
    small = _resize(x, (max(1, round(w * s)), max(1, round(h * s))))
    m = round(radius * side)
    k, pad = 2 * m + 1, m if how == "median" else 2 * m  # an opening is two filters: twice the margin
    # Continue the picture past its edges as a mirrored slope: with plain edge copies, light that
    # brightens towards an edge would be under-estimated there and leave a band that looks like ink.
    if min(small.shape) > pad:
        padded = np.pad(small, pad, mode="reflect", reflect_type="odd")
    else:
        padded = np.pad(small, pad, mode="edge")
    win = np.lib.stride_tricks.sliding_window_view
    if how == "median":
        out = np.median(win(padded, (k, k)), axis=(-2, -1))
    else:
        eroded = win(win(padded, k, axis=0).min(-1), k, axis=1).min(-1)
        out = win(win(eroded, k, axis=0).max(-1), k, axis=1).max(-1)
    return _upsample(_blur3(_blur3(out.astype(np.float32))), x.shape)


def _background(x: np.ndarray) -> np.ndarray | float:
    """The (dark) background under bright ink.

    A picture whose border is evenly lit (a canvas, a scan, an MNIST image) has a flat background:
    its level, taken from the border. Otherwise (a photo) a smooth estimate: a grey opening with a
    window wider than a stroke (a fifth of the picture) but narrower than the soft shadows and light
    gradients, which it keeps. The opening is not used on flat pictures because a bold digit filling
    the frame has blobs of ink wider than its window, which it would take for background.
    """
    lo, hi = np.percentile(_border(x), [5, 90])
    if hi - lo < FLAT_BORDER:
        return float(lo)  # a lower envelope, like the opening: the paper's noise stays above it
    return _thumb_filter(x, 0.1, "opening")


def _upsample(grid: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    from PIL import Image

    return _resize(grid, (shape[1], shape[0]), Image.BILINEAR)


def _blur3(x: np.ndarray) -> np.ndarray:
    """3×3 mean: quiets sensor noise and JPEG speckle (a median filter costs 10× more here)."""
    p = np.pad(x, 1, mode="edge")
    rows = p[:-2] + p[1:-1] + p[2:]
    return (rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]) / 9.0


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    top = float(values.max()) + 1e-6
    idx = np.minimum((values.ravel() * (bins / top)).astype(np.int32), bins - 1)
    hist = np.bincount(idx, minlength=bins).astype(np.float64)  # np.histogram is several times slower
    edges = np.linspace(0.0, top, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def label_runs(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected component labels (0 = background, 1..n) of a boolean image, without SciPy.

    Works on horizontal runs of pixels, so the Python loop is over a few runs per row, not pixels.

    >>> label_runs(np.array([[1, 0, 1], [0, 0, 1]], bool))[1]
    2
    """
    h, w = mask.shape
    padded = np.zeros((h, w + 2), np.int8)
    padded[:, 1:-1] = mask
    d = np.diff(padded, axis=1)
    starts_r, starts_c = np.nonzero(d == 1)
    ends_c = np.nonzero(d == -1)[1]
    parent = list(range(len(starts_r)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    row_first = np.searchsorted(starts_r, np.arange(h + 1))
    for r in range(1, h):
        a0, a1 = row_first[r - 1], row_first[r]  # runs of the row above
        b0, b1 = row_first[r], row_first[r + 1]
        i, j = a0, b0
        while i < a1 and j < b1:
            # Runs [s, e) touch diagonally when they overlap after widening by one pixel.
            if starts_c[i] <= ends_c[j] and starts_c[j] <= ends_c[i]:
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
            if ends_c[i] < ends_c[j]:
                i += 1
            else:
                j += 1
    labels = np.zeros((h, w), np.int32)
    roots: dict[int, int] = {}
    for k in range(len(starts_r)):
        lab = roots.setdefault(find(k), len(roots) + 1)
        labels[starts_r[k], starts_c[k] : ends_c[k]] = lab
    return labels, len(roots)


def _find_ink(x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, str]:
    """The digit's ink as a soft 0..1 map (anti-aliased edges kept) and a mask of the pieces kept.

    A piece counts as ink when it stands out from the paper right around it by far more than the
    paper's noise: shading left over from the lighting makes large blobs that rise slowly out of their
    surroundings, ink rises at once. Kept: the heaviest such piece, others nearly as heavy close by,
    and smaller pieces near it (a stroke broken by the pen); specks and dirt elsewhere go. The mask is
    None (with a reason) when there is nothing.
    """
    sample = x[::2, ::2]  # every other pixel: the same statistics, a quarter of the work
    base = float(np.median(sample))
    sigma = 1.4826 * float(np.median(np.abs(sample - base))) + 1e-4
    if float(x.max()) - base < 0.03:
        return x, None, "the picture is blank"
    t = max(_otsu(x), base + 4 * sigma)
    labels, n = label_runs(x > t)
    if n == 0:
        return x, None, "the picture is blank"
    comp = _component_stats(labels, n, x - base)
    local = np.zeros(n)
    for k in np.argsort(-comp["mass"])[:8]:  # the heaviest candidates are enough
        local[k] = comp["contrast"][k] + base - _ring_level(x, labels, k + 1, comp["bbox"][k])
    strong = local >= STRONG_INK * sigma
    if not strong.any():
        return x, None, f"nothing stands out from the paper (best contrast {local.max() / sigma:.1f}× the noise)"
    main = int(np.argmax(np.where(strong, comp["mass"], -1)))
    top, bottom, left, right = comp["bbox"][main]
    margin = 0.3 * max(bottom - top, right - left)
    near = (comp["bbox"][:, 0] >= top - margin) & (comp["bbox"][:, 1] <= bottom + margin)
    near &= (comp["bbox"][:, 2] >= left - margin) & (comp["bbox"][:, 3] <= right + margin)
    size = max(bottom - top, right - left)
    close = (comp["bbox"][:, 0] >= top - size) & (comp["bbox"][:, 1] <= bottom + size)
    close &= (comp["bbox"][:, 2] >= left - size) & (comp["bbox"][:, 3] <= right + size)
    heavy = close & (comp["mass"] >= 0.25 * comp["mass"][main])
    keep = (comp["contrast"] >= 0.7 * STRONG_INK * sigma) & (
        heavy | (near & (comp["mass"] >= 0.01 * comp["mass"][main]))
    )
    keep[main] = True
    mask = np.concatenate([[False], keep])[labels]
    level = float(np.percentile(x[labels == main + 1], 90))
    lo = min(base + 3 * sigma, 0.5 * t)
    soft = np.clip((x - lo) / max(level - lo, 1e-6), 0, 1).astype(np.float32)
    return soft, mask, ""


def _ring_level(x: np.ndarray, labels: np.ndarray, label: int, bbox: np.ndarray) -> float:
    """Median of ``x`` in a ring 3 to 6 pixels outside one labelled piece: the paper right around it."""
    h, w = x.shape
    top, bottom, left, right = (int(v) for v in bbox)
    rows = slice(max(0, top - 7), min(h, bottom + 8))
    cols = slice(max(0, left - 7), min(w, right + 8))
    piece = labels[rows, cols] == label
    grown = piece
    for _ in range(3):
        grown = _dilate(grown) > 0
    inner = grown
    for _ in range(3):
        grown = _dilate(grown) > 0
    ring = grown & ~inner
    return float(np.median(x[rows, cols][ring])) if ring.any() else float(np.median(x))


def _component_stats(labels: np.ndarray, n: int, x: np.ndarray) -> dict[str, np.ndarray]:
    """Per labelled piece: ``mass`` (sum of ``x``), ``contrast`` (90th percentile of ``x``) and ``bbox``
    (top, bottom, left, right; inclusive), computed in one pass over the pixels, not one per piece."""
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs] - 1
    vals = x[ys, xs]
    mass = np.bincount(lab, weights=vals, minlength=n)
    order = np.lexsort((vals, lab))
    starts = np.searchsorted(lab[order], np.arange(n))
    counts = np.bincount(lab, minlength=n)
    contrast = vals[order][starts + (0.9 * (counts - 1)).astype(int)]
    bbox = np.empty((n, 4), np.int64)
    bbox[:, 0], bbox[:, 2] = ys.max() + 1, xs.max() + 1
    bbox[:, 1], bbox[:, 3] = -1, -1
    np.minimum.at(bbox[:, 0], lab, ys)
    np.maximum.at(bbox[:, 1], lab, ys)
    np.minimum.at(bbox[:, 2], lab, xs)
    np.maximum.at(bbox[:, 3], lab, xs)
    return {"mass": mass, "contrast": contrast, "bbox": bbox}


def _dilate(mask: np.ndarray) -> np.ndarray:
    """Grow a mask by one pixel (8-neighbourhood), as 0/1 floats."""
    p = np.pad(mask, 1)
    rows = p[:-2] | p[1:-1] | p[2:]
    return (rows[:, :-2] | rows[:, 1:-1] | rows[:, 2:]).astype(np.float32)


def _stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width in pixels: twice the area over the boundary (a stroke has two edges)."""
    m = np.pad(mask, 1)
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    boundary = int((mask & ~inner).sum())
    return 2.0 * int(mask.sum()) / max(boundary, 1)


def _thicken(crop: np.ndarray, width: float) -> np.ndarray:
    """Widen strokes to about MNIST's relative width, at a resolution where that is a few pixels."""
    from PIL import Image, ImageFilter

    h, w = crop.shape
    s = min(1.0, 80 / max(h, w))
    small = _resize(crop, (round(w * s), round(h * s))) if s < 1 else crop
    big = max(small.shape)
    r = max(1, round((TARGET_STROKE - width) * big / 2))
    padded = np.pad(small, r)  # the wider strokes must not be cut at the crop's edge
    grown = Image.fromarray(padded.astype(np.float32), "F").filter(ImageFilter.MaxFilter(2 * r + 1))
    return np.asarray(grown, np.float32)


def _fit_and_centre(crop: np.ndarray) -> np.ndarray:
    """MNIST's last steps: fit into 20×20 keeping the aspect ratio, centre of mass to pixel (14, 14)."""
    h, w = crop.shape
    s = BOX / max(h, w)
    small = np.clip(_resize(crop, (max(1, round(w * s)), max(1, round(h * s)))), 0, 1)
    sh, sw = small.shape
    total = float(small.sum()) or 1.0
    cy = float((small.sum(1) * np.arange(sh)).sum()) / total
    cx = float((small.sum(0) * np.arange(sw)).sum()) / total
    oy = int(np.clip(round(SIDE // 2 - cy), 0, SIDE - sh))
    ox = int(np.clip(round(SIDE // 2 - cx), 0, SIDE - sw))
    out = np.zeros((SIDE, SIDE), np.float32)
    out[oy : oy + sh, ox : ox + sw] = small
    return (out * 255).round().astype(np.uint8)


def _prepare_fashion(gray: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Fashion-MNIST's recipe: trim what looks like the corners' colour (5% tolerance), scale the
    longest side to 28, centre, negate; the background then maps to black, as in the data set."""
    h0, w0 = gray.shape
    scale = _work_scale(w0, h0) if max(w0, h0) > WORK_SIDE else 1.0
    g = _resize(gray, (round(w0 * scale), round(h0 * scale))) if scale != 1 else gray
    corners = np.array([g[0, 0], g[0, -1], g[-1, 0], g[-1, -1]])
    bg = float(np.median(corners))
    diff = _blur3(np.abs(g - bg)) > 0.05
    rows, cols = np.nonzero(diff.any(1))[0], np.nonzero(diff.any(0))[0]
    if len(rows) == 0 or max(rows[-1] - rows[0], cols[-1] - cols[0]) < 2:
        return None, "no object found (everything has the corners' colour)"
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    x = 1.0 - g if bg > 0.5 else g
    ground = 1.0 - bg if bg > 0.5 else bg
    x = np.clip((x - ground) / max(1.0 - ground, 1e-6), 0, 1)[top:bottom, left:right]
    h, w = x.shape
    s = SIDE / max(h, w)
    small = np.clip(_resize(x, (max(1, round(w * s)), max(1, round(h * s)))), 0, 1)
    out = np.zeros((SIDE, SIDE), np.float32)
    sh, sw = small.shape
    oy, ox = (SIDE - sh) // 2, (SIDE - sw) // 2
    out[oy : oy + sh, ox : ox + sw] = small
    return (out * 255).round().astype(np.uint8), ""


def load_gray(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file → its luma, float32 ``(H, W)`` in 0..1 (1 = white), by :func:`decode_image`'s rules
    (upright, transparent parts on white paper; a big JPEG decoded at 1/2, 1/4 or 1/8 scale, still
    larger than the recipe's working size) (needs Pillow)."""
    return decode_image(path, "gray", size=(DRAFT_SIDE, DRAFT_SIDE)).astype(np.float32) / np.float32(255.0)


def preparation_for(meta: dict) -> str:
    """Which recipe a model's pictures need, from its metadata (as ``mnistlab predict`` decides):
    ``digit`` for MNIST-like digit models, ``fashion`` for Fashion-MNIST, ``none`` otherwise."""
    chw = tuple((meta.get("input") or {}).get("chw") or ())
    if chw != (1, SIDE, SIDE):
        return "none"
    name = str((meta.get("source") or {}).get("dataset") or "").lower()
    names = [str(c) for c in meta.get("class_names") or []]
    if "fashion" in name or names == list(FASHION_CLASSES):
        return "fashion"
    if (
        name in ("mnist", "emnist", "kmnist", "qmnist")
        or "digit" in name
        or (names and all(c.isdigit() for c in names))
    ):
        return "digit"
    return "none" if names or name else "digit"


FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def prepare_file(
    path: str | os.PathLike[str], in_shape: Sequence[int], how: str = "digit", invert: bool = False
) -> np.ndarray:
    """An image file → the network's uint8 input: ``how`` is ``digit`` or ``fashion`` (the photo
    recipes, as ``mnistlab predict``) or ``none`` (resized as it is; ``invert`` for a dark digit on white)."""
    if how == "none":
        return load_image(path, in_shape, invert)
    gray = load_gray(path)
    return prepare_digit(gray) if how == "digit" else prepare_fashion(gray)


# -- reading image files: a copy of mnistlab.imaging's rules (tests/test_imaging.py keeps them equal) --

try:
    from mnistlab.errors import ImageError as _ImageErrorBase
except ImportError:  # copied alone to a machine without mnistlab
    _ImageErrorBase = ValueError  # type: ignore[assignment,misc]


class ImageFileError(_ImageErrorBase):
    """An image file that cannot be used: not a regular file, not an image, or too large."""


class NoDigitError(ImageFileError):
    """A picture with nothing to recognise on it (a blank page, a speck)."""


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
    """``python numpy_infer.py WEIGHTS [IMAGE ...] [--npy FILE] [--prepare HOW] [--invert]``: print the
    class of each image. Options may stand anywhere among the file names."""
    import argparse

    p = argparse.ArgumentParser(prog="numpy_infer", description="Run an exported mnistlab network with NumPy only.")
    p.add_argument("weights", help="weights.txt, weights.npz or weights.safetensors")
    p.add_argument("images", nargs="*", help="image files (PNG, JPEG, ...; needs Pillow)")
    p.add_argument("--npy", help="a .npy file of uint8 images (N, H, W) or (N, H, W, C), used as they are")
    p.add_argument("--prepare", choices=PREPARATIONS, default="auto",
                   help="how image files are prepared: digit (photos and drawings of digits, as mnistlab predict), "
                        "fashion, none (only resized), auto (from the model's data set) (default: auto)")  # fmt: skip
    p.add_argument("--invert", action="store_true",
                   help="with --prepare none: invert image files (a dark digit on white); the digit recipe "
                        "finds the ink's polarity itself (default: off)")  # fmt: skip
    args = p.parse_intermixed_args(argv)  # "a.png --invert b.png" as well as "--invert a.png b.png"
    try:
        net = NumpyModel.from_file(args.weights)
        how = preparation_for(net.weights.meta) if args.prepare == "auto" else args.prepare
        names, batches, failed = [], [], 0
        if args.npy:
            arr = np.load(args.npy, allow_pickle=False)
            names += [f"{args.npy}[{i}]" for i in range(len(arr))]
            batches.append(images_to_array(arr))
        if args.images:
            good = []
            for f in args.images:
                try:
                    good.append(prepare_file(f, net.in_shape, how, args.invert))
                    names.append(f)
                except ImageFileError as e:  # one picture that cannot be used: say so, go on with the others
                    print(f"numpy_infer: error: {e if str(e).startswith(f'{f}: ') else f'{f}: {e}'}", file=sys.stderr)
                    failed += 1
            if good:
                batches.append(images_to_array(np.stack(good)))
        if not args.images and not args.npy:
            p.error("give image files or --npy")
        probs = net.predict(np.concatenate(batches)) if batches else np.zeros((0, 0))
    except (WeightsError, ImageFileError, OSError, ValueError) as e:
        print(f"numpy_infer: error: {e}", file=sys.stderr)
        return 2
    classes = net.class_names or [str(i) for i in range(probs.shape[1])]
    for name, pr in zip(names, probs, strict=True):
        k = int(pr.argmax())
        print(f"{name}: {classes[k]} ({pr[k]:.4f})")
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
