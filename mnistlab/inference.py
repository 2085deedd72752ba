"""Inference on tensors: logits and probabilities in large batches, under autocast when asked.

Shared by the engine (validation), checkpoints (``LoadedModel.predict_proba``), analysis and export.

>>> import torch
>>> from torch import nn
>>> predict_logits(nn.Linear(4, 2), torch.zeros(3, 4)).shape
torch.Size([3, 2])
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from mnistlab.tensors import images_to_tensor


@torch.no_grad()
def predict_logits(
    model: nn.Module, x: torch.Tensor, batch_size: int = 4096, precision: str = "fp32", channels_last: bool = False
) -> torch.Tensor:
    """Logits in eval mode, in large batches; ``precision="bf16"`` runs under autocast (float32 logits)."""
    was = model.training
    model.eval()
    try:
        outs = []
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size]
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast(xb.device, precision):
                outs.append(model(xb).float())
        return torch.cat(outs)
    finally:
        model.train(was)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    # bfloat16 autocast: convolutions and matmuls in bf16 (AMX/AVX-512 on recent CPUs, tensor cores on GPUs),
    # weights, optimizer state and batch-norm statistics stay float32.
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def predict_proba(model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 4096) -> np.ndarray:
    """Softmax probabilities for images (uint8, or floats in 0..1), as a NumPy array ``(N, classes)``."""
    device = next(model.parameters()).device
    xt = images_to_tensor(x, device)
    return torch.softmax(predict_logits(model, xt, batch_size), dim=1).cpu().numpy()
