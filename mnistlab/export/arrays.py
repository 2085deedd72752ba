"""``weights.npz`` and ``weights.safetensors``: the same tensors as ``weights.txt``, in binary, plus metadata.

Both keep the metadata (layout, architecture, class names, preprocessing) as one JSON string: in the
``.npz`` as a 0-d string array ``__mnistlab__`` (readable with ``allow_pickle=False``), in safetensors as
the ``mnistlab`` entry of its header. ``numpy_infer`` reads both without PyTorch.

>>> from mnistlab.models import mlp
>>> from mnistlab.export.graph import describe
>>> data = npz_bytes(describe(mlp()), {"layout": "pytorch"})
>>> data[:2]
b'PK'
"""

from __future__ import annotations

import io
import json

import numpy as np
from safetensors.numpy import save as st_save

from mnistlab.export.graph import Graph
from mnistlab.export.numpy_infer import parse_weights_npz, parse_weights_safetensors

META_KEY = "__mnistlab__"


def _meta_json(meta: dict) -> str:
    return json.dumps(meta, sort_keys=True, separators=(",", ":"))


def npz_bytes(graph: Graph, meta: dict) -> bytes:
    """An uncompressed ``.npz`` (weights barely compress, and plain storage loads fastest)."""
    arrays = {t.name: t.array for t in graph.tensors}
    if META_KEY in arrays:
        raise ValueError(f"a tensor may not be called {META_KEY!r}")
    buf = io.BytesIO()
    np.savez(buf, **arrays, **{META_KEY: np.array(_meta_json(meta))})
    return buf.getvalue()


def safetensors_bytes(graph: Graph, meta: dict) -> bytes:
    arrays = {t.name: np.ascontiguousarray(t.array, dtype=np.float32).reshape(t.array.shape) for t in graph.tensors}
    return st_save(arrays, metadata={"mnistlab": _meta_json(meta)})


__all__ = ["npz_bytes", "parse_weights_npz", "parse_weights_safetensors", "safetensors_bytes"]
