"""``model.onnx``: the network in eval mode, with a dynamic batch dimension and metadata, checked by onnxruntime.

The graph has one input ``images``, float32 ``(batch, C, H, W)`` in 0..1 (uint8 pixels / 255), and two
outputs, ``logits`` and ``probabilities`` (softmax), so a consumer needs no maths of its own. The
metadata (``metadata_props``) names the classes (JSON list), the input layout and the preprocessing,
and holds the full mnistlab description as JSON under ``mnistlab``.

>>> import onnxruntime as ort                                             # doctest: +SKIP
>>> sess = ort.InferenceSession("runs/mnist-mlp/model.onnx")              # doctest: +SKIP
>>> logits, probs = sess.run(None, {"images": x_test[:5, None] / 255.0})  # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import torch
from torch import nn

from mnistlab.errors import ExportError

OPSET = 17
INPUT, OUTPUTS = "images", ("logits", "probabilities")


class _WithProbabilities(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(x)
        return logits, torch.softmax(logits, dim=1)


def onnx_bytes(model: nn.Module, in_shape: tuple[int, int, int], meta: dict) -> bytes:
    """The model as ONNX bytes: eval mode, dynamic batch, metadata; validated by ``onnx.checker``."""
    import onnx

    model = model.cpu().eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # torch 2.9+ warns that the TorchScript exporter is legacy; it needs no onnxscript and handles
        # these plain Sequential models exactly, so we keep it on purpose.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _WithProbabilities(model), (torch.zeros((1, *in_shape)),), buf, dynamo=False, opset_version=OPSET,
            input_names=[INPUT], output_names=list(OUTPUTS), training=torch.onnx.TrainingMode.EVAL,
            dynamic_axes={INPUT: {0: "batch"}, OUTPUTS[0]: {0: "batch"}, OUTPUTS[1]: {0: "batch"}},
            do_constant_folding=True,
        )  # fmt: skip
    proto = onnx.load_from_string(buf.getvalue())
    c, h, w = in_shape
    props = {
        "class_names": json.dumps(meta.get("class_names") or []),
        "input_layout": f"NCHW float32, shape (batch, {c}, {h}, {w}); batch is dynamic",
        "preprocessing": f"uint8 {'gray' if c == 1 else 'RGB'} pixels / 255 -> 0..1"
        + ("; standardization is inside the graph" if (meta.get("preprocessing") or {}).get("standardize") else ""),
        "outputs": "logits (batch, classes); probabilities = softmax(logits)",
        "mnistlab": json.dumps({k: v for k, v in meta.items() if k != "tensors"}, sort_keys=True),
    }
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "mnistlab"
    proto.doc_string = f"mnistlab {meta.get('model', '')} network; see metadata_props for classes and input layout"
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:  # a bug in the exporter, not in the user's input
        raise ExportError(f"the exported ONNX graph does not validate: {str(e).splitlines()[0]}") from None
    return proto.SerializeToString()


def onnx_probabilities(data: bytes, x: np.ndarray, threads: int = 0) -> np.ndarray:
    """Run ONNX bytes with onnxruntime on float32 NCHW input; the ``probabilities`` output."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
    return sess.run([OUTPUTS[1]], {INPUT: np.ascontiguousarray(x, dtype=np.float32)})[0]


__all__ = ["INPUT", "OUTPUTS", "onnx_bytes", "onnx_probabilities"]
