"""``weights.txt``: the lesson's "参数提取" file (name, shape, values per tensor), made exact and readable back.

The lesson prints ``model.trainable_variables`` with NumPy's default print options: about 8 significant
digits and a "…" in the middle of every large tensor, so the file cannot be read back. Here every value
is written with ``%.9g`` (enough digits that each float32 reads back bit for bit), the tensors the forward
pass needs but training does not change (BatchNorm running statistics, Standardize) are included and
marked ``trainable: false``, and a header states the layout, the architecture and the preprocessing in
words and, on its ``# meta:`` line, as JSON. The layout itself is documented in ``numpy_infer``, which
also holds the reader, so that one file can be copied to a machine without mnistlab.

>>> from mnistlab.models import mlp
>>> from mnistlab.export.graph import describe
>>> g = describe(mlp(), layout="keras")
>>> text = format_weights_txt(g, {"format": "mnistlab-weights", "version": 1, "layout": "keras",
...                                "architecture": g.architecture, "input": {"chw": [1, 28, 28]}})
>>> parse_weights_txt(text).tensors["dense/kernel"].shape
(784, 128)
"""

from __future__ import annotations

import json
import textwrap

import numpy as np

from mnistlab.export.graph import Graph
from mnistlab.export.numpy_infer import MAGIC, META_PREFIX, parse_weights_txt, read_weights_txt, shape_str

RESHAPE = (
    "each image to shape, given as (C, H, W); channels_last: values taken and placed in (H, W, C) order, "
    "as Keras's Reshape does (source: the (C, H, W) images the input holds, maybe flattened)"
)
AVGPOOL = "mean over kernel_size windows moved by stride (count_include_pad=False: padding not counted)"
# One line of words per operation, in each layout: what the layer computes with the tensors it names.
FORMULAS = {
    "pytorch": {
        "standardize": "y = (x - mean) / std",
        "channel_standardize": "y = (x - mean[c]) / std[c] per channel c; mean, std are (C, 1, 1)",
        "flatten": "y = x.reshape(N, -1)  (C, H, W order)",
        "reshape": RESHAPE,
        "linear": "y = x @ weight.T + bias",
        "relu": "y = max(x, 0)",
        "conv2d": "cross-correlation with zero padding, weight (out, in, kh, kw), + bias if named",
        "batchnorm2d": "y = (x - running_mean) / sqrt(running_var + eps) * weight + bias",
        "batchnorm1d": "y = (x - running_mean) / sqrt(running_var + eps) * weight + bias, per feature",
        "maxpool2d": "max over kernel_size windows moved by stride",
        "avgpool2d": AVGPOOL,
        "adaptive_maxpool2d": "max over output_size bins (output_size=[1, 1]: the global max)",
    },
    "keras": {
        "standardize": "y = (x - mean) / std",
        "channel_standardize": "y = (x - mean[c]) / std[c] per channel c (the last axis); mean, std are (C,)",
        "flatten": "y = x.reshape(N, -1)  (H, W, C order)",
        "reshape": RESHAPE,
        "linear": "y = x @ kernel + bias",
        "relu": "y = max(x, 0)",
        "conv2d": "cross-correlation with zero padding, kernel (kh, kw, in, out), + bias if named",
        "batchnorm2d": "y = (x - moving_mean) / sqrt(moving_variance + eps) * gamma + beta",
        "batchnorm1d": "y = (x - moving_mean) / sqrt(moving_variance + eps) * gamma + beta, per feature",
        "maxpool2d": "max over kernel_size windows moved by stride",
        "avgpool2d": AVGPOOL,
        "adaptive_maxpool2d": "max over output_size bins (output_size=[1, 1]: the global max)",
    },
}
LAYOUT_NOTES = {
    "pytorch": [
        "layout: pytorch - tensor names and shapes as in the PyTorch state dict: Linear weight is (out, in),",
        "        Conv2d weight is (out, in, kh, kw); images enter as (N, C, H, W).",
    ],
    "keras": [
        "layout: keras - names and shapes as the lesson's Keras model shows them: Dense kernel is (in, out),",
        "        Conv2D kernel is (kh, kw, in, out); images enter as (N, H, W, C), so a Dense layer right after",
        "        Flatten lists its inputs in (H, W, C) order. BatchNormalization epsilon is PyTorch's (see eps).",
    ],
}
_SKIP = {"name", "op", "params", "in_shape"}


def header_lines(graph: Graph, meta: dict) -> list[str]:
    """The human-readable header (without ``#`` marks): model, layout, input, output, architecture, format."""
    tensors = {t.name: t for t in graph.tensors}
    n_train = sum(t.array.size for t in graph.tensors if t.trainable)
    n_fixed = sum(t.array.size for t in graph.tensors if not t.trainable)
    c, h, w = graph.in_shape
    src = meta.get("source", {})
    classes = meta.get("class_names") or []
    out = ["Every tensor the network needs to run forward, at full float32 precision: %.9g reads back exactly."]
    out.append(
        "Read it with mnistlab.export.read_weights_txt; run it with mnistlab/export/numpy_infer.py (NumPy only)."
    )
    out.append("")
    model = meta.get("model", "?")
    trained = f"; trained on {src['dataset']}" if src.get("dataset") else ""
    epoch = f", epoch {src['epoch']}" if src.get("epoch") is not None else ""
    kind = "model" if model == "sequential" else "preset"
    out.append(f"model:  {model} {kind}; {n_train:,} trainable values, {n_fixed:,} non-trainable{trained}{epoch}")
    out += LAYOUT_NOTES[graph.layout]
    color = "gray" if c == 1 else "RGB"
    pix = f"(N, {h}, {w})" if c == 1 else f"(N, {h}, {w}, {c})"
    into = f"(N, {c}, {h}, {w})" if graph.layout == "pytorch" else f"(N, {h}, {w}, {c})"
    out.append(f"input:  uint8 {color} pixels {pix}, 0..255 -> float32 x / 255 in 0..1 -> {into}")
    std = meta.get("preprocessing", {}).get("standardize")
    if std:
        out.append(f"        then the first layer standardizes: (x - {std['mean']!r}) / {std['std']!r}")
    out.append(f"output: {len(classes) or '?'} logits; softmax over them gives the probabilities of the classes")
    if classes:
        out.append("        " + " ".join(classes))
    out.append("")
    out.append("architecture (the forward pass, in order; tensors named below each layer):")
    width = max(len(layer["name"]) for layer in graph.architecture)
    indent = " " * (width + 6)
    for layer in graph.architecture:
        attrs = ", ".join(f"{k}={v}" for k, v in layer.items() if k not in _SKIP)
        out.append(f"  {layer['name']:<{width}}  {layer['op']}({attrs})")
        names = [
            f"{n} {shape_str(tensors[n].array.shape)}" + ("" if tensors[n].trainable else " non-trainable")
            for n in layer.get("params", {}).values()
        ]
        if names:
            out += textwrap.wrap(", ".join(names), 110, initial_indent=indent, subsequent_indent=indent)
    out.append("operations:")
    ops = list(dict.fromkeys(layer["op"] for layer in graph.architecture))
    width = max(len(op) for op in ops)
    out += [f"  {op:<{width}}  {FORMULAS[graph.layout][op]}" for op in ops]
    out.append("")
    out.append("After this header, one block per tensor:")
    out.append("  name: NAME")
    out.append("  shape: (d0, d1, ...)")
    out.append("  trainable: true | false      (false: a buffer the forward pass needs, not learned by gradients)")
    out.append("  then the values in C order, one line per row of the last axis: a (784, 128) tensor is")
    out.append("  784 lines of 128 numbers, a (128,) tensor one line, a () scalar one number.")
    out.append("Blank lines and lines starting with '#' are ignored; the '# meta:' line holds all of this as JSON.")
    return out


def _rows(a: np.ndarray) -> list[str]:
    row = a.shape[-1] if a.ndim else 1
    flat = a.reshape(-1).astype(np.float32)
    # float() of a float32 is exact, and %.9g of it is the shortest width that always round-trips float32.
    values = [f"{v:.9g}" for v in flat.tolist()]
    return [" ".join(values[i : i + row]) for i in range(0, len(values), row)] if row else []


def format_weights_txt(graph: Graph, meta: dict) -> str:
    """The whole ``weights.txt`` as a string (see the module docstring of ``numpy_infer`` for the layout)."""
    lines = [MAGIC]
    lines += [f"# {s}".rstrip() for s in header_lines(graph, meta)]
    lines.append(META_PREFIX + json.dumps(meta, sort_keys=True, separators=(",", ":")))
    for t in graph.tensors:
        lines += ["", f"name: {t.name}", f"shape: {shape_str(t.array.shape)}", f"trainable: {str(t.trainable).lower()}"]
        lines += _rows(t.array)
    return "\n".join(lines) + "\n"


__all__ = ["format_weights_txt", "header_lines", "parse_weights_txt", "read_weights_txt"]
