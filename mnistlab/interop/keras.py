"""Keras models → mnistlab models: the layers translated to PyTorch, the weights moved across exactly.

Keras works channels-last (``(N, H, W, C)``, a Dense kernel ``(in, out)``, a Conv2D kernel
``(kh, kw, in, out)``) and mnistlab channels-first, so kernels are transposed and a Dense layer right
after a Flatten of an image has its input rows reordered from ``(H, W, C)`` to ``(C, H, W)``. A final
softmax is folded into the model's output (mnistlab models return logits; ``predict`` applies the
softmax), so probabilities match Keras's. Dropout does nothing at inference and is left out.

A Keras MLP shaped like the lesson's (optionally with a one-number Normalization in front) becomes the
``mlp`` preset itself, so it trains with the fast hand-written step; anything else becomes a
``sequential`` model whose layers are listed in the checkpoint.

>>> import_keras("model.keras", "runs/from-keras")       # doctest: +SKIP
imported model.keras (Keras Sequential, 7 layers) as mlp into runs/from-keras: ...
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mnistlab.errors import CheckpointError, ConfigError
from mnistlab.export.numpy_infer import from_keras
from mnistlab.interop import keras_files as kf
from mnistlab.interop.keras_files import PIXELS, SUPPORTED

KERAS_EPSILON = 1e-7  # keras.backend.epsilon(): Normalization divides by max(sqrt(variance), this)


@dataclass
class Converted:
    """A Keras model in mnistlab terms: the model spec and its state dict."""

    spec: dict
    state: dict[str, torch.Tensor]
    notes: list[str] = field(default_factory=list)


class _Builder:
    """The mnistlab layer list and state dict under construction, and where the walk through Keras's layers is:
    the per-sample ``shape`` in Keras's order, the input scale still to fold in, the image shape a Flatten
    turned into a vector (for the Dense after it), and the layer whose softmax was folded."""

    def __init__(self, model: kf.KerasModel, shape: tuple[int, ...], scale_in: float) -> None:
        self.source = model.source
        self.trainable_only = model.trainable_only
        self.layers: list[dict] = []
        self.state: dict[str, torch.Tensor] = {}
        self.notes: list[str] = []
        self.shape = shape
        self.scale_in = scale_in
        self.flat_from: tuple[int, ...] | None = None
        self.softmax_at: str | None = None

    def add(self, layer: dict, **tensors: np.ndarray) -> None:
        i = len(self.layers)
        self.layers.append(layer)
        for role, a in tensors.items():
            self.state[f"{i}.{role}"] = torch.from_numpy(np.array(a, dtype=np.float32, order="C"))

    def fail(self, layer: kf.KerasLayer, why: str) -> CheckpointError:
        return CheckpointError(f"{self.source}: layer {layer.name!r} ({layer.kind}): {why}")

    def activation(self, layer: kf.KerasLayer, act: str) -> None:
        if act == "relu":
            self.add({"op": "relu"})
        elif act == "softmax":
            self.softmax_at = layer.name
        elif act != "linear":
            raise self.fail(layer, f"activation {act!r} is not supported (relu, softmax or linear)")


def _torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A Keras per-sample shape as mnistlab's tensors hold it: (H, W, C) → (C, H, W); (H, W) → (1, H, W)."""
    if len(shape) == 3:
        return (shape[2], shape[0], shape[1])
    if len(shape) == 2:
        return (1, *shape)
    return shape


def _activation(value: object) -> str:
    if isinstance(value, dict):  # {"class_name": "function", "config": "relu"} or similar
        cfg = value.get("config")
        value = cfg if isinstance(cfg, str) else (cfg or {}).get("name", value.get("class_name"))
    return str(value or "linear").lower()


def _pair(v: object) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))  # type: ignore[index]


def _same_padding(size: int, k: int, s: int) -> int | None:
    """TensorFlow's 'same' padding of one axis as a symmetric pad, or None when it pads unevenly."""
    total = max((math.ceil(size / s) - 1) * s + k - size, 0)
    return total // 2 if total % 2 == 0 else None


def _window(b: _Builder, layer: kf.KerasLayer, k: tuple[int, int], s: tuple[int, int]) -> tuple[list[int], tuple]:
    """Padding and output (height, width) of a sliding window (convolution or pooling) in Keras's terms."""
    h, w = b.shape[0], b.shape[1]
    if layer.config.get("padding", "valid") == "same":
        pads = (_same_padding(h, k[0], s[0]), _same_padding(w, k[1], s[1]))
        if None in pads:
            raise b.fail(layer, "'same' padding that pads one side more than the other is not supported")
        return list(pads), (math.ceil(h / s[0]), math.ceil(w / s[1]))
    return [0, 0], ((h - k[0]) // s[0] + 1, (w - k[1]) // s[1] + 1)


# -- one function per Keras layer: translate it, update the walk's shape ----------------------------


def _rescaling(b: _Builder, layer: kf.KerasLayer) -> None:
    s, o = layer.config.get("scale", 1.0), layer.config.get("offset", 0.0)
    if not all(isinstance(v, int | float) for v in (s, o)):
        raise b.fail(layer, "only one scale and offset for all channels are supported")
    s, o = float(s) * b.scale_in, float(o)  # a raw-pixel model: x_raw * s == (x / 255 * 255) * s
    b.scale_in = 1.0
    if s == 0:
        raise b.fail(layer, "scale 0 makes every input the same")
    if (s, o) != (1.0, 0.0):  # x * s + o == (x - (-o / s)) / (1 / s)
        mean, std = np.float32(-o / s), np.float32(1 / s)
        b.add({"op": "standardize", "mean": float(mean), "std": float(std)}, mean=mean, std=std)


def _normalization(b: _Builder, layer: kf.KerasLayer) -> None:
    cfg, wts = layer.config, layer.weights
    if cfg.get("invert"):
        raise b.fail(layer, "invert=True (de-normalisation) is not supported")
    mean, var = (wts[0], wts[1]) if len(wts) >= 2 else (cfg.get("mean"), cfg.get("variance"))
    if mean is None or var is None:
        raise b.fail(layer, "has no mean and variance (neither adapted nor given)")
    mean, var = np.asarray(mean, np.float32).reshape(-1), np.asarray(var, np.float32).reshape(-1)
    std = np.maximum(np.sqrt(var), np.float32(KERAS_EPSILON))  # as Keras computes it, in float32
    if b.scale_in != 1.0:  # a raw-pixel model normalises 0..255 values: fold the factor in
        mean, std = mean / np.float32(b.scale_in), std / np.float32(b.scale_in)
        b.scale_in = 1.0
    if mean.size == 1:
        b.add({"op": "standardize", "mean": float(mean[0]), "std": float(std[0])}, mean=mean[0], std=std[0])
    elif len(b.shape) == 3 and mean.size == b.shape[2]:
        b.add({"op": "channel_standardize", "channels": int(mean.size)},
              mean=mean.reshape(-1, 1, 1), std=std.reshape(-1, 1, 1))  # fmt: skip
    else:
        raise b.fail(layer, f"{mean.size} means for inputs of shape {b.shape}: only one, or one per channel")


def _flatten(b: _Builder, layer: kf.KerasLayer) -> None:
    if len(b.shape) > 1:
        b.add({"op": "flatten"})
    b.flat_from = _torch_shape(b.shape) if len(b.shape) == 3 else None
    b.shape = (math.prod(b.shape),)


def _reshape(b: _Builder, layer: kf.KerasLayer) -> None:
    target = tuple(int(d) for d in layer.config.get("target_shape", ()))
    if -1 in target:
        known = math.prod(d for d in target if d != -1)
        target = tuple(math.prod(b.shape) // known if d == -1 else d for d in target)
    if not 1 <= len(target) <= 3:
        raise b.fail(layer, f"a target shape of {len(target)} axes is not supported (1 to 3: a vector or images)")
    if math.prod(target) != math.prod(b.shape):
        raise b.fail(layer, f"cannot reshape {b.shape} to {target}")
    # mnistlab holds images channels-first, so with several channels the values sit in another order than
    # Keras's: in images of the input, in a Flatten of them, or in the images the target asks for.
    source = None
    if len(b.shape) == 3 and b.shape[2] > 1:
        source = _torch_shape(b.shape)
    elif b.flat_from is not None and b.flat_from[0] > 1:
        source = b.flat_from
    if source is not None or (len(target) == 3 and target[2] > 1):
        op = {"op": "reshape", "shape": list(_torch_shape(target)), "channels_last": True}
        b.add({**op, "source": list(source)} if source else op)
    elif _torch_shape(target) != _torch_shape(b.shape):
        b.add({"op": "reshape", "shape": list(_torch_shape(target))})
    b.shape = target


def _dense(b: _Builder, layer: kf.KerasLayer) -> None:
    wts = layer.weights
    if len(b.shape) != 1:
        raise b.fail(layer, f"Dense on inputs of shape {b.shape} (each row separately) is not supported; "
                            "put a Flatten before it")  # fmt: skip
    if not wts or wts[0].ndim != 2 or wts[0].shape[0] != b.shape[0]:
        raise b.fail(layer, f"kernel {wts[0].shape if wts else None} does not fit inputs of size {b.shape[0]}")
    kernel = wts[0]
    t = from_keras("linear", {"kernel": kernel, **({"bias": wts[1]} if len(wts) > 1 else {})}, b.flat_from)
    b.add({"op": "linear", "in_features": int(kernel.shape[0]), "out_features": int(kernel.shape[1]),
           "bias": "bias" in t}, **t)  # fmt: skip
    b.shape = (int(kernel.shape[1]),)
    b.activation(layer, _activation(layer.config.get("activation")))


def _conv2d(b: _Builder, layer: kf.KerasLayer) -> None:
    cfg, wts = layer.config, layer.weights
    if len(b.shape) != 3:
        raise b.fail(layer, f"Conv2D needs (height, width, channels) inputs, got {b.shape}; add a Reshape")
    plain = cfg.get("groups", 1) == 1 and _pair(cfg.get("dilation_rate", 1)) == (1, 1)
    if cfg.get("data_format", "channels_last") != "channels_last" or not plain:
        raise b.fail(layer, "only channels_last, dilation 1 and groups 1 are supported")
    kernel = wts[0] if wts else None
    if kernel is None or kernel.ndim != 4 or kernel.shape[2] != b.shape[2]:
        raise b.fail(layer, f"kernel {None if kernel is None else kernel.shape} does not fit inputs {b.shape}")
    k, s = (int(kernel.shape[0]), int(kernel.shape[1])), _pair(cfg.get("strides", 1))
    pads, out_hw = _window(b, layer, k, s)
    t = from_keras("conv2d", {"kernel": kernel, **({"bias": wts[1]} if len(wts) > 1 else {})})
    b.add({"op": "conv2d", "in_channels": int(kernel.shape[2]), "out_channels": int(kernel.shape[3]),
           "kernel_size": list(k), "stride": list(s), "padding": pads, "bias": "bias" in t}, **t)  # fmt: skip
    b.shape = (*out_hw, int(kernel.shape[3]))
    b.activation(layer, _activation(cfg.get("activation")))


def _pooling(b: _Builder, layer: kf.KerasLayer) -> None:
    if len(b.shape) != 3 or layer.config.get("data_format", "channels_last") != "channels_last":
        raise b.fail(layer, f"needs channels_last (height, width, channels) inputs, got {b.shape}")
    k = _pair(layer.config.get("pool_size", 2))
    s = _pair(layer.config.get("strides") or k)
    pads, out_hw = _window(b, layer, k, s)
    if pads[0] > k[0] // 2 or pads[1] > k[1] // 2:
        raise b.fail(layer, "'same' padding wider than half the window is not supported")
    op = "maxpool2d" if layer.kind == "MaxPooling2D" else "avgpool2d"  # avg: padding not counted, as in Keras
    b.add({"op": op, "kernel_size": list(k), "stride": list(s), "padding": pads})
    b.shape = (*out_hw, b.shape[2])


def _batchnorm(b: _Builder, layer: kf.KerasLayer) -> None:
    cfg = layer.config
    axis = cfg.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    if axis not in (-1, len(b.shape)) or len(b.shape) not in (1, 3):
        raise b.fail(layer, f"only the last (channel) axis of 1-D or image inputs is supported, got axis {axis}")
    n = b.shape[-1]
    wts = list(layer.weights)
    gamma = wts.pop(0) if cfg.get("scale", True) and wts else np.ones(n, np.float32)
    beta = wts.pop(0) if cfg.get("center", True) and wts else np.zeros(n, np.float32)
    if len(wts) < 2:
        hint = ("the lesson's text file holds only trainable variables; import the .keras or .weights.h5 file"
                if b.trainable_only else "the weights file lacks them")  # fmt: skip
        raise b.fail(layer, f"its moving_mean and moving_variance are missing ({hint})")
    b.add({"op": "batchnorm2d" if len(b.shape) == 3 else "batchnorm1d", "num_features": int(n),
           "eps": float(cfg.get("epsilon", 1e-3)), "momentum": round(1 - float(cfg.get("momentum", 0.99)), 6)},
          weight=gamma, bias=beta, running_mean=wts[0], running_var=wts[1])  # fmt: skip


def _dropout(b: _Builder, layer: kf.KerasLayer) -> None:
    b.notes.append(f"Dropout {layer.name!r} left out (it does nothing at inference)")


def _activation_layer(b: _Builder, layer: kf.KerasLayer) -> None:
    b.activation(layer, _activation(layer.config.get("activation")))


def _relu(b: _Builder, layer: kf.KerasLayer) -> None:
    cfg = layer.config
    if cfg.get("max_value") is not None or cfg.get("negative_slope", 0) or cfg.get("threshold", 0):
        raise b.fail(layer, "only the plain ReLU (no max_value, negative_slope or threshold) is supported")
    b.activation(layer, "relu")


def _softmax(b: _Builder, layer: kf.KerasLayer) -> None:
    b.activation(layer, "softmax")


LAYERS = {
    "Rescaling": _rescaling, "Normalization": _normalization, "Flatten": _flatten, "Reshape": _reshape,
    "Dense": _dense, "Conv2D": _conv2d, "MaxPooling2D": _pooling, "AveragePooling2D": _pooling,
    "BatchNormalization": _batchnorm, "Dropout": _dropout, "Activation": _activation_layer, "ReLU": _relu,
    "Softmax": _softmax,
}  # fmt: skip
# Layers that leave a Flatten's output as it is, so the Dense after them still reorders its inputs.
_KEEP_FLAT = ("Flatten", "Dropout")


def convert(
    model: kf.KerasModel,
    in_chw: tuple[int, int, int],
    num_classes: int,
    pixels: str = "auto",
) -> Converted:
    """Translate a Keras ``Sequential`` (layers + weights) into a mnistlab model spec and state dict.

    ``in_chw`` is the data set's image shape; ``pixels`` says what the Keras model was fed: ``0-1``
    (``x / 255``, as the lesson does), ``0-255`` (raw pixels), or ``auto`` (``0-255`` when the first layer is
    a Rescaling that shrinks, else ``0-1``).
    """
    if pixels not in PIXELS:
        raise ConfigError(f"pixels must be one of {', '.join(PIXELS)}, got {pixels!r}")
    c, h, w = in_chw
    shape: tuple[int, ...] = model.input_shape or ((h, w) if c == 1 else (h, w, c))
    if math.prod(shape) != c * h * w:
        raise CheckpointError(
            f"{model.source}: the Keras model takes inputs of shape {shape}, the data set's images are {(h, w, c)}"
        )
    first = model.layers[0] if model.layers else None
    if pixels == "auto":
        shrinks = first is not None and first.kind == "Rescaling" and abs(float(first.config.get("scale", 1))) < 0.1
        pixels = "0-255" if shrinks else "0-1"
    # mnistlab feeds x / 255; a raw-pixel model gets the factor 255 folded into its first scaling layer
    b = _Builder(model, shape, 255.0 if pixels == "0-255" else 1.0)
    if len(shape) == 1:
        b.add({"op": "flatten"})
    for layer in model.layers:
        if b.softmax_at and layer.kind != "Dropout":
            raise b.fail(layer, f"comes after the softmax of {b.softmax_at!r}; only a final softmax can be folded")
        handler = LAYERS.get(layer.kind)
        if handler is None:
            raise CheckpointError(
                f"{model.source}: layer {layer.name!r} is a {layer.kind}, which mnistlab cannot import "
                f"(supported: {SUPPORTED})"
            )
        handler(b, layer)
        if layer.kind not in _KEEP_FLAT:
            b.flat_from = None
    if b.scale_in != 1.0:  # a raw-pixel model with nothing in front to fold the factor into
        b.layers.insert(0, {"op": "standardize", "mean": 0.0, "std": float(np.float32(1 / b.scale_in))})
        b.state = {_shift(k): v for k, v in b.state.items()}
        b.state["0.mean"], b.state["0.std"] = torch.tensor(0.0), torch.tensor(np.float32(1 / b.scale_in))
    if b.shape != (num_classes,):
        raise CheckpointError(
            f"{model.source}: the model's output has shape {b.shape}, the data set has {num_classes} classes"
        )
    if not b.softmax_at:
        b.notes.append("no final softmax: the model's outputs were taken as logits")
    spec = _as_preset(b.layers, in_chw, num_classes) or {
        "name": "sequential", "layers": b.layers, "in_shape": list(in_chw), "num_classes": num_classes,
    }  # fmt: skip
    return Converted(spec, b.state, b.notes)


def _shift(key: str) -> str:
    i, role = key.split(".", 1)
    return f"{int(i) + 1}.{role}"


def _as_preset(layers: list[dict], in_chw: tuple[int, int, int], num_classes: int) -> dict | None:
    """The ``mlp`` preset's spec when the layers are exactly it (same module order, so the same state dict)."""
    ops = [d["op"] for d in layers]
    norm = None
    if ops[:1] == ["standardize"]:
        norm = [layers[0]["mean"], layers[0]["std"]]
        ops, layers = ops[1:], layers[1:]
    if ops != ["flatten", "linear", "relu", "linear"] or not (layers[1]["bias"] and layers[3]["bias"]):
        return None
    if layers[1]["in_features"] != math.prod(in_chw):
        return None
    return {"name": "mlp", "in_shape": list(in_chw), "num_classes": num_classes, "hidden": layers[1]["out_features"],
            "normalize": norm}  # fmt: skip


# -- reading any Keras file into a KerasModel -------------------------------------------------------


def keras_kind(path: Path) -> str | None:
    """``keras``, ``h5`` or ``txt`` (the lesson's), judged from the file's first bytes; None otherwise."""
    try:
        with path.open("rb") as f:
            head = f.read(64)
    except OSError:
        return None
    if head.startswith(b"PK"):
        return "keras" if path.suffix == ".keras" or _zip_has(path, "config.json") else None
    if head.startswith(kf.HDF5_MAGIC):
        return "h5"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:  # 64 bytes may end inside a character; anything earlier is binary
        if e.start < len(head) - 3:
            return None
        text = head[: e.start].decode("utf-8")
    lines = text.strip().splitlines()
    # the lesson's text starts with a variable's name and its shape: "kernel" then "(784, 128)"
    named = len(lines) > 1 and kf._NAME.match(lines[0].strip()) and kf._SHAPE.match(lines[1].strip())
    return "txt" if named else None


def _zip_has(path: Path, name: str) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return name in z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def read_model(path: str | os.PathLike[str], model: str | os.PathLike[str] | None = None) -> kf.KerasModel:
    """Any Keras file as a ``KerasModel``. ``.weights.h5`` and the lesson's text take the architecture from
    ``model`` (a ``.keras`` file or ``model.to_json()`` output); without it, only the lesson's kind of MLP
    (Dense layers, relu between them, softmax at the end) can be inferred from the weight shapes."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such file")
    kind = keras_kind(p)
    if kind == "keras":
        if model is not None:
            raise ConfigError(
                f"{p}: a .keras file holds its own architecture; --model is for .weights.h5 and text files"
            )
        return kf.read_keras(p)
    arch = kf.read_architecture(model) if model is not None else None
    if kind == "h5":
        weights = kf.read_weights_h5(p)
        if arch is None:
            return _infer_mlp_h5(weights, str(p))
        kf.attach_h5(arch[0], weights, str(p))
        return kf.KerasModel(arch[0], arch[1], str(p))
    if kind == "txt":
        variables = kf.read_lesson_txt(p)
        if arch is None:
            return _infer_mlp_txt(variables, str(p))
        return _attach_txt(arch[0], arch[1], variables, str(p))
    raise CheckpointError(f"{p}: not a Keras file (expected .keras, .weights.h5, or the lesson's weights text)")


def _dense(kernel: np.ndarray, bias: np.ndarray | None, activation: str) -> kf.KerasLayer:
    weights = [kernel] + ([bias] if bias is not None else [])
    return kf.KerasLayer("Dense", {"units": int(kernel.shape[1]), "activation": activation}, weights)


def _mlp(
    denses: list[tuple[np.ndarray, np.ndarray | None]], source: str, norm: list[np.ndarray] | None
) -> kf.KerasModel:
    layers = [kf.KerasLayer("Normalization", {"name": "normalization"}, norm)] if norm else []
    layers.append(kf.KerasLayer("Flatten", {"name": "flatten"}))
    for i, (k, bias) in enumerate(denses):
        layer = _dense(k, bias, "softmax" if i == len(denses) - 1 else "relu")
        layer.config["name"] = "dense" if i == 0 else f"dense_{i}"
        layers.append(layer)
    return kf.KerasModel(layers, None, source)


def _infer_mlp_h5(weights: dict[str, list[np.ndarray]], source: str) -> kf.KerasModel:
    others = sorted(k for k, v in weights.items() if v and not k.startswith(("dense", "normalization")))
    if others or "normalization_1" in weights:
        raise CheckpointError(
            f"{source}: cannot infer the architecture from the weights alone (layers {', '.join(others) or 'normalization_1'}); "
            "give --model FILE (the .keras file or the JSON of model.to_json())"
        )
    keys = sorted((k for k in weights if k.startswith("dense") and weights[k]), key=lambda k: int(k[6:] or 0))
    denses = [(weights[k][0], weights[k][1] if len(weights[k]) > 1 else None) for k in keys]
    return _checked_mlp(denses, source, weights.get("normalization"))


def _infer_mlp_txt(variables: list[kf.TxtVariable], source: str) -> kf.KerasModel:
    denses: list[tuple[np.ndarray, np.ndarray | None]] = []
    for v in variables:
        if v.role == "kernel" and v.array.ndim == 2:
            denses.append((v.array, None))
        elif v.role == "bias" and denses and denses[-1][1] is None and v.array.shape == denses[-1][0].shape[1:]:
            denses[-1] = (denses[-1][0], v.array)
        else:
            raise CheckpointError(
                f"{source}, line {v.line}: {v.name} {v.array.shape} is not part of a Dense-only model; give --model "
                "FILE (the .keras file or the JSON of model.to_json()) to say the architecture"
            )
    model = _checked_mlp(denses, source, None)
    model.trainable_only = True
    return model


def _checked_mlp(denses: list, source: str, norm: list[np.ndarray] | None) -> kf.KerasModel:
    if not denses:
        raise CheckpointError(f"{source}: no Dense kernels found")
    for (a, _), (b, _) in zip(denses, denses[1:], strict=False):
        if a.shape[1] != b.shape[0]:
            raise CheckpointError(f"{source}: Dense kernels {a.shape} and {b.shape} do not chain; give --model FILE")
    return _mlp(denses, source, norm)


def _attach_txt(layers: list[kf.KerasLayer], input_shape: tuple[int, ...] | None, variables: list[kf.TxtVariable],
                source: str) -> kf.KerasModel:  # fmt: skip
    """Hand the text file's trainable variables to the layers in order (kernel, bias; gamma, beta)."""
    queue = list(variables)
    trainable = {"Dense": ("kernel", "bias"), "Conv2D": ("kernel", "bias"), "BatchNormalization": ("gamma", "beta")}
    for layer in layers:
        roles = trainable.get(layer.kind, ())
        if layer.kind in ("Dense", "Conv2D") and not layer.config.get("use_bias", True):
            roles = ("kernel",)
        if layer.kind == "BatchNormalization":
            roles = tuple(r for r, on in (("gamma", layer.config.get("scale", True)),
                                          ("beta", layer.config.get("center", True))) if on)  # fmt: skip
        for role in roles:
            if not queue:
                raise CheckpointError(f"{source}: ends before {layer.name!r} gets its {role}")
            v = queue.pop(0)
            if v.role != role:
                raise CheckpointError(f"{source}, line {v.line}: expected {layer.name!r}'s {role}, found {v.name}")
            layer.weights.append(v.array)
    if queue:
        raise CheckpointError(f"{source}, line {queue[0].line}: {queue[0].name} is left over after the last layer")
    return kf.KerasModel(layers, input_shape, source, trainable_only=True)


__all__ = ["PIXELS", "SUPPORTED", "Converted", "convert", "keras_kind", "read_model"]
