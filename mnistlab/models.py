"""Model presets and a Keras-like ``summary()``.

Every model takes images as ``(N, C, H, W)`` float tensors scaled to 0..1 (see ``preprocess``) and
returns logits; the softmax is folded into the loss, and ``Trainer.predict`` returns probabilities.

>>> model = mlp()
>>> print(summary(model, (1, 28, 28)))  # doctest: +ELLIPSIS
Model: "mlp"...
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from mnistlab.errors import ConfigError


class Named(nn.Sequential):
    """A ``Sequential`` that remembers which preset built it, so a checkpoint can rebuild it."""

    def __init__(self, name: str, *layers: nn.Module, **spec: object) -> None:
        super().__init__(*layers)
        self.preset = name
        self.spec = {"name": name, **spec}


class Standardize(nn.Module):
    """``(x - mean) / std`` with fixed numbers (buffers, not parameters): input scaling that travels with
    the model, so predict and export apply exactly what training used."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        if not std > 0:
            raise ConfigError(f"Standardize: std must be > 0, got {std}")
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _norm_layers(normalize: list[float] | tuple[float, float] | None) -> list[nn.Module]:
    return [Standardize(*normalize)] if normalize else []


def mlp(
    in_shape: tuple[int, int, int] = (1, 28, 28),
    num_classes: int = 10,
    hidden: int = 128,
    normalize: list[float] | None = None,
) -> Named:
    """The lesson's model: Flatten → Dense 128 relu → Dense 10 (softmax in the loss); 101,770 parameters.

    ``normalize=[mean, std]`` puts a parameter-free ``Standardize`` layer in front (used by the fast preset).
    """
    c, h, w = in_shape
    return Named(
        "mlp",
        *_norm_layers(normalize),
        nn.Flatten(),
        nn.Linear(c * h * w, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
        in_shape=list(in_shape),
        num_classes=num_classes,
        hidden=hidden,
        normalize=list(normalize) if normalize else None,
    )


def lenet5(
    in_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10, normalize: list[float] | None = None
) -> Named:
    """LeNet-5 (LeCun 1998) with ReLU and max-pooling: conv 6@5x5 → pool → conv 16@5x5 → pool → 120 → 84."""
    c, h, w = in_shape
    fh, fw = (h // 2 - 4) // 2, (w // 2 - 4) // 2
    return Named(
        "lenet5",
        *_norm_layers(normalize),
        nn.Conv2d(c, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * fh * fw, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
        in_shape=list(in_shape),
        num_classes=num_classes,
        normalize=list(normalize) if normalize else None,
    )


def _conv_bn(cin: int, cout: int, pool: bool = False) -> list[nn.Module]:
    # With ``pool``, the 2x2 max-pool comes straight after the convolution, so batch norm and ReLU run on
    # a quarter of the values. Max-pooling commutes with increasing maps, so this equals conv → BN → ReLU
    # → pool wherever BN's scale is positive; BN's statistics are then those of the pooled values.
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    return [conv, *([nn.MaxPool2d(2)] if pool else []), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def cnn(
    in_shape: tuple[int, int, int] = (1, 28, 28),
    num_classes: int = 10,
    width: int = 24,
    normalize: list[float] | None = None,
) -> Named:
    """A fast 4-conv network with batch norm: w → pool → [2w, 2w] → pool → 4w → flatten → linear.

    Chosen for the ``best`` preset by measuring on 2 CPU cores: one convolution at full resolution (the
    costly place), pooling before batch norm, and a flatten head that keeps where things are (it beat a
    global max pool on Fashion-MNIST by 0.8 points); width 24 has 120,274 parameters.
    """
    c, h, wd = in_shape
    w = width
    return Named(
        "cnn",
        *_norm_layers(normalize),
        *_conv_bn(c, w, pool=True),
        *_conv_bn(w, 2 * w),
        *_conv_bn(2 * w, 2 * w),
        nn.MaxPool2d(2),
        *_conv_bn(2 * w, 4 * w),
        nn.Flatten(),
        nn.Linear(4 * w * (h // 4) * (wd // 4), num_classes),
        in_shape=list(in_shape),
        num_classes=num_classes,
        width=width,
        normalize=list(normalize) if normalize else None,
    )


class ChannelStandardize(nn.Module):
    """``(x - mean[c]) / std[c]`` per channel, with fixed numbers (Keras's per-channel ``Normalization``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels, 1, 1))
        self.register_buffer("std", torch.ones(channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Reshape(nn.Module):
    """Reshape each sample to ``shape`` (the batch axis stays).

    ``channels_last=True`` reshapes as Keras does with its channels-last data: a 3-D ``shape`` ``(C, H, W)``
    is filled in ``(H, W, C)`` order, then turned channels-first; ``source=[C, H, W]`` says the input holds
    such images (or a Flatten of them), which are then read in ``(H, W, C)`` order. Without them the
    values keep their order.
    """

    def __init__(self, shape: list[int], channels_last: bool = False, source: list[int] | None = None) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.channels_last = channels_last
        self.source = tuple(source) if source else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if not self.channels_last:
            return x.reshape(n, *self.shape)
        if self.source is not None:
            c, h, w = self.source
            x = x.reshape(n, c, h, w).permute(0, 2, 3, 1)
        if len(self.shape) == 3:
            c, h, w = self.shape
            return x.reshape(n, h, w, c).permute(0, 3, 1, 2)
        return x.reshape(n, *self.shape)


def _layer(d: dict) -> nn.Module:
    op = d.get("op")
    if op == "standardize":
        return Standardize(d["mean"], d["std"])
    if op == "channel_standardize":
        return ChannelStandardize(d["channels"])
    if op == "reshape":
        return Reshape(d["shape"], d.get("channels_last", False), d.get("source"))
    if op == "flatten":
        return nn.Flatten()
    if op == "relu":
        return nn.ReLU()
    if op == "linear":
        return nn.Linear(d["in_features"], d["out_features"], bias=d.get("bias", True))
    if op == "conv2d":
        return nn.Conv2d(d["in_channels"], d["out_channels"], d["kernel_size"], d["stride"], d["padding"],
                         bias=d.get("bias", True))  # fmt: skip
    if op in ("batchnorm2d", "batchnorm1d"):
        kind = nn.BatchNorm2d if op == "batchnorm2d" else nn.BatchNorm1d
        return kind(d["num_features"], eps=d["eps"], momentum=d.get("momentum", 0.1))
    if op == "maxpool2d":
        return nn.MaxPool2d(d["kernel_size"], d["stride"], d.get("padding", 0))
    if op == "avgpool2d":
        return nn.AvgPool2d(d["kernel_size"], d["stride"], d.get("padding", 0), count_include_pad=False)
    raise ConfigError(f"unknown layer {op!r} in a sequential model spec")


def sequential(layers: list[dict], in_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10) -> Named:
    """A model described by a list of layers, e.g. ``[{"op": "flatten"}, {"op": "linear", "in_features": 784,
    "out_features": 10}]``: how ``mnistlab import-keras`` stores a Keras model that is none of the presets."""
    if not isinstance(layers, list) or not all(isinstance(d, dict) for d in layers):
        raise ConfigError(f"a sequential model needs a list of layer dicts, got {layers!r}")
    try:
        modules = [_layer(d) for d in layers]
    except (KeyError, TypeError) as e:
        raise ConfigError(f"sequential model spec: bad layer ({e})") from None
    return Named("sequential", *modules, layers=layers, in_shape=list(in_shape), num_classes=num_classes)


MODELS: dict[str, Callable[..., Named]] = {"mlp": mlp, "lenet5": lenet5, "cnn": cnn}


def build_model(name: str, **kwargs: object) -> Named:
    """Build a preset by name; ``kwargs`` as in the preset's function (``in_shape``, ``num_classes``, …)."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r} (choose from {', '.join(MODELS)})")
    try:
        return MODELS[name](**kwargs)
    except TypeError as e:
        raise ConfigError(f"model {name!r}: {e}") from None


def from_spec(spec: dict) -> Named:
    """Rebuild a preset from the ``spec`` it recorded (as stored in a checkpoint)."""
    spec = dict(spec)
    name = spec.pop("name", None)
    if not isinstance(name, str):
        raise ConfigError(f"model spec has no preset name: {spec}")
    _check_spec(name, spec)
    if "in_shape" in spec:
        spec["in_shape"] = tuple(spec["in_shape"])
    if name == "sequential":  # an imported model: its layers are in the spec, it is no preset
        try:
            return sequential(**spec)
        except TypeError as e:
            raise ConfigError(f"model 'sequential': {e}") from None
    return build_model(name, **spec)


# What a spec read from a file may ask for: sizes a model of this toolkit can have (a spec is data, and
# hidden=2e9 would try to allocate 6 TB before anything could say no).
_SIZES = {"hidden": (1, 1 << 16), "width": (1, 1 << 12), "num_classes": (1, 1 << 16)}


def _check_spec(name: str, spec: dict) -> None:
    def count(v: object, lo: int, hi: int) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi

    for key, (lo, hi) in _SIZES.items():
        if key in spec and not count(spec[key], lo, hi):
            raise ConfigError(f"model {name!r}: {key} must be an integer in [{lo}, {hi}], got {spec[key]!r:.40}")
    shape = spec.get("in_shape", [1, 28, 28])
    if not (isinstance(shape, list | tuple) and len(shape) == 3 and all(count(v, 1, 4096) for v in shape)):
        raise ConfigError(
            f"model {name!r}: in_shape must be [channels, height, width] of sizes 1..4096, got {shape!r:.60}"
        )
    if shape[0] * shape[1] * shape[2] > 1 << 24:
        raise ConfigError(f"model {name!r}: in_shape {list(shape)} is too large")
    norm = spec.get("normalize")
    if norm is not None and not (
        isinstance(norm, list | tuple)
        and len(norm) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in norm)
        and norm[1] > 0
    ):
        raise ConfigError(f"model {name!r}: normalize must be [mean, std > 0], got {norm!r:.60}")


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def summary(model: nn.Module, in_shape: tuple[int, int, int] = (1, 28, 28), name: str | None = None) -> str:
    """A Keras-like table of layers, output shapes and parameter counts (returned, not printed)."""
    rows: list[tuple[str, str, int]] = []
    hooks = []

    def hook(mod: nn.Module, _inp: object, out: object, label: str) -> None:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else "?"
        shape_s = "(None, " + ", ".join(map(str, shape[1:])) + ")" if shape != "?" else "?"
        rows.append((label, shape_s, sum(p.numel() for p in mod.parameters(recurse=False))))

    for mod_name, mod in model.named_modules():
        if len(list(mod.children())) == 0:
            label = f"{mod_name or 'model'} ({type(mod).__name__})"
            hooks.append(mod.register_forward_hook(lambda m, i, o, label=label: hook(m, i, o, label)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            param = next(model.parameters(), None)
            device = param.device if param is not None else "cpu"
            model(torch.zeros((1, *in_shape), device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    total = count_params(model)
    trainable = count_params(model, trainable_only=True)
    w1 = max([len("Layer (type)")] + [len(r[0]) for r in rows]) + 2
    w2 = max([len("Output Shape")] + [len(r[1]) for r in rows]) + 2
    w3 = 14
    line = lambda ch: ch * (w1 + w2 + w3 + 4)  # noqa: E731
    out = [f'Model: "{name or getattr(model, "preset", type(model).__name__)}"', line("━")]
    out.append(f" {'Layer (type)':<{w1}}{'Output Shape':<{w2}}{'Param #':>{w3}}")
    out.append(line("━"))
    for label, shape, n in rows:
        out.append(f" {label:<{w1}}{shape:<{w2}}{n:>{w3},}")
    out.append(line("━"))
    out.append(f" Total params: {total:,}")
    out.append(f" Trainable params: {trainable:,}")
    out.append(f" Non-trainable params: {total - trainable:,}")
    return "\n".join(out)


def forward_flops(model: nn.Module, in_shape: tuple[int, int, int] = (1, 28, 28)) -> int:
    """Floating-point operations of one image's forward pass through ``model``'s convolutions and dense layers.

    A multiply-add counts two. Batch norm, activations and pooling are left out (a few % of a CNN's work);
    training an image costs about three forwards (the backward pass computes the gradients of the inputs
    and of the weights, each about one forward), which is how ``training_flops`` counts it. A figure of the
    model alone, the same on every machine, to put accuracy against compute.

    >>> from mnistlab.models import mlp
    >>> forward_flops(mlp())  # 2 * (784 * 128 + 128 * 10)
    203264
    """
    total = 0

    def count(mod: nn.Module, _inp: object, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            per_output = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
            total += 2 * out[0].numel() * per_output
        elif isinstance(mod, nn.Linear):
            total += 2 * out[0].numel() * mod.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            param = next(model.parameters(), None)
            model(torch.zeros((1, *in_shape), device=param.device if param is not None else "cpu"))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return total


def training_flops(model: nn.Module, images: int, in_shape: tuple[int, int, int] = (1, 28, 28)) -> int:
    """Training compute of ``images`` images seen (forward + backward, 3x ``forward_flops``).

    >>> from mnistlab.models import mlp
    >>> training_flops(mlp(), 60000) / 1e12  # TFLOP of one epoch of the lesson's MLP
    0.03658752
    """
    return 3 * forward_flops(model, in_shape) * images
