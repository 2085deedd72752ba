"""A trained PyTorch model → a framework-neutral description: the layer list and the named tensors.

Every export format carries the same two things: the ``architecture`` (one dict per layer, with the
constructor arguments that matter to the forward pass) and the tensors it names, in the ``pytorch``
layout (state-dict names and shapes) or the ``keras`` layout (``dense/kernel`` ``(784, 128)``, …).
``numpy_infer`` runs exactly this description, so a layer it cannot run is refused here, at export.

>>> from mnistlab.models import mlp
>>> g = describe(mlp(), layout="keras")
>>> [(t.name, t.array.shape) for t in g.tensors]
[('dense/kernel', (784, 128)), ('dense/bias', (128,)), ('dense_1/kernel', (128, 10)), ('dense_1/bias', (10,))]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from mnistlab.errors import ExportError
from mnistlab.export.numpy_infer import LAYOUTS, ROLES, layer_output_shape, to_keras
from mnistlab.models import ChannelStandardize, Reshape, Standardize

# Keras's automatic layer names (snake case of the layer class), numbered dense, dense_1, dense_2, …
KERAS_NAMES = {
    "standardize": "standardize",
    "flatten": "flatten",
    "linear": "dense",
    "relu": "re_lu",
    "conv2d": "conv2d",
    "batchnorm2d": "batch_normalization",
    "batchnorm1d": "batch_normalization",
    "channel_standardize": "normalization",
    "reshape": "reshape",
    "maxpool2d": "max_pooling2d",
    "avgpool2d": "average_pooling2d",
    "adaptive_maxpool2d": "global_max_pooling2d",
}


SUPPORTED = (
    "Standardize, ChannelStandardize, Flatten, Reshape, ReLU, Linear, Conv2d, BatchNorm2d, BatchNorm1d, MaxPool2d, "
    "AvgPool2d, AdaptiveMaxPool2d"
)


@dataclass
class Tensor:
    name: str
    array: np.ndarray
    trainable: bool


@dataclass
class Graph:
    layout: str
    architecture: list[dict]
    tensors: list[Tensor]
    in_shape: tuple[int, int, int]

    def arrays(self) -> dict[str, np.ndarray]:
        return {t.name: t.array for t in self.tensors}


def _layer_spec(mod: nn.Module) -> dict:
    """The operation and constructor arguments of one leaf module; refuses what numpy_infer cannot run."""
    kind = type(mod).__name__
    if isinstance(mod, Standardize):
        return {"op": "standardize"}
    if isinstance(mod, ChannelStandardize):
        return {"op": "channel_standardize", "channels": int(mod.mean.numel())}
    if isinstance(mod, Reshape):
        if not mod.channels_last:
            return {"op": "reshape", "shape": list(mod.shape)}
        extra = {"source": list(mod.source)} if mod.source else {}
        return {"op": "reshape", "shape": list(mod.shape), "channels_last": True, **extra}
    if isinstance(mod, nn.Flatten):
        if mod.start_dim != 1 or mod.end_dim != -1:
            raise ExportError(f"cannot export Flatten(start_dim={mod.start_dim}, end_dim={mod.end_dim})")
        return {"op": "flatten"}
    if isinstance(mod, nn.ReLU):
        return {"op": "relu"}
    if isinstance(mod, nn.Linear):
        return {"op": "linear", "in_features": mod.in_features, "out_features": mod.out_features}
    if isinstance(mod, nn.Conv2d):
        if (
            mod.groups != 1
            or tuple(mod.dilation) != (1, 1)
            or mod.padding_mode != "zeros"
            or isinstance(mod.padding, str)
        ):
            raise ExportError(f"cannot export {mod} (only groups=1, dilation=1, numeric zero padding)")
        return {
            "op": "conv2d", "in_channels": mod.in_channels, "out_channels": mod.out_channels,
            "kernel_size": list(mod.kernel_size), "stride": list(mod.stride), "padding": list(mod.padding),
        }  # fmt: skip
    if isinstance(mod, nn.BatchNorm2d | nn.BatchNorm1d):
        if not mod.track_running_stats or not mod.affine:
            raise ExportError(f"cannot export {mod} (needs running statistics and affine weights)")
        op = "batchnorm2d" if isinstance(mod, nn.BatchNorm2d) else "batchnorm1d"
        return {"op": op, "num_features": mod.num_features, "eps": mod.eps}
    if isinstance(mod, nn.MaxPool2d):
        if mod.ceil_mode or mod.dilation not in (1, (1, 1)):
            raise ExportError(f"cannot export {mod} (only floor mode, dilation 1)")
        return {"op": "maxpool2d", "kernel_size": _pair(mod.kernel_size), "stride": _pair(mod.stride),
                "padding": _pair(mod.padding)}  # fmt: skip
    if isinstance(mod, nn.AvgPool2d):
        if mod.ceil_mode or mod.divisor_override is not None:
            raise ExportError(f"cannot export {mod} (only floor mode, no divisor_override)")
        return {"op": "avgpool2d", "kernel_size": _pair(mod.kernel_size), "stride": _pair(mod.stride),
                "padding": _pair(mod.padding), "count_include_pad": bool(mod.count_include_pad)}  # fmt: skip
    if isinstance(mod, nn.AdaptiveMaxPool2d):
        if mod.return_indices or None in _pair(mod.output_size):
            raise ExportError(f"cannot export {mod}")
        return {"op": "adaptive_maxpool2d", "output_size": _pair(mod.output_size)}
    raise ExportError(f"cannot export a {kind} layer (supported: {SUPPORTED})")


def _pair(v: object) -> list:
    return [v, v] if not isinstance(v, tuple | list) else list(v)


def describe(model: nn.Module, in_shape: tuple[int, int, int] | None = None, layout: str = "pytorch") -> Graph:
    """The layer list and tensors of a ``Sequential`` preset model, in the given tensor layout."""
    if layout not in LAYOUTS:
        raise ExportError(f"unknown layout {layout!r} (choose from {', '.join(LAYOUTS)})")
    if not isinstance(model, nn.Sequential):
        raise ExportError(f"can export only Sequential models (the mnistlab presets), not {type(model).__name__}")
    spec = getattr(model, "spec", {})
    shape: tuple[int, ...] = tuple(in_shape or spec.get("in_shape") or (1, 28, 28))
    chw = tuple(int(d) for d in shape)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    state = model.state_dict()
    arch: list[dict] = []
    tensors: list[Tensor] = []
    counts: dict[str, int] = {}
    flat_from: tuple[int, ...] | None = None
    for idx, mod in model.named_children():
        if len(list(mod.children())):
            raise ExportError(f"cannot export the nested module {idx!r} ({type(mod).__name__})")
        layer = _layer_spec(mod)
        op = layer["op"]
        # Tensors in state-dict order; BatchNorm's ``num_batches_tracked`` is a training counter the forward
        # pass never reads, so it is left out.
        torch_arrays = {role: state[f"{idx}.{role}"].detach().cpu().numpy().astype(np.float32)
                        for role in ROLES["pytorch"].get(op, ()) if f"{idx}.{role}" in state}  # fmt: skip
        if layout == "pytorch":
            name, arrays, roles = idx, torch_arrays, {r: r for r in torch_arrays}
        else:
            base = KERAS_NAMES[op]
            n = counts.get(base, 0)
            counts[base] = n + 1
            name = base if n == 0 else f"{base}_{n}"
            arrays = to_keras(op, torch_arrays, flat_from if op == "linear" else None)
            roles = dict(zip(ROLES["pytorch"].get(op, ()), ROLES["keras"].get(op, ()), strict=True))
        params = {}
        for t_role in torch_arrays:
            role = roles[t_role]
            tname = f"{idx}.{t_role}" if layout == "pytorch" else f"{name}/{role}"
            params[role] = tname
            tensors.append(Tensor(tname, np.array(arrays[role], order="C"), f"{idx}.{t_role}" in trainable))
        entry = {"name": name, **layer, "in_shape": list(shape)}
        if params:
            entry["params"] = params
        arch.append(entry)
        flat_from = shape if op == "flatten" else None
        shape = layer_output_shape(op, layer, shape)
    # Guard: every tensor the forward pass reads was described, so a new kind of layer fails loudly here.
    needed = [k for k in state if not k.endswith("num_batches_tracked")]
    if len(needed) != len(tensors):
        raise ExportError(f"exported {len(tensors)} tensors, but the model has {len(needed)}: {', '.join(needed)}")
    return Graph(layout, arch, tensors, chw)  # type: ignore[arg-type]
