"""Arrays to tensors: images as float32 ``(N, C, H, W)`` in 0..1, labels as int64.

One conversion for training, evaluation and prediction, so they never drift apart.
"""

from __future__ import annotations

import numpy as np
import torch

PIXEL_MAX = 255.0


def images_to_tensor(x: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 images ``(N, H, W)`` or ``(N, H, W, C)`` → float32 ``(N, C, H, W)`` in 0..1.

    Float input is taken as already scaled to 0..1 (the lesson divides by 255 before ``fit``).

    >>> images_to_tensor(np.full((2, 28, 28), 255, np.uint8)).shape
    torch.Size([2, 1, 28, 28])
    """
    t = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    if t.ndim == 2:  # a single image
        t = t.unsqueeze(0)
    if t.ndim == 3:
        t = t.unsqueeze(1)
    elif t.ndim == 4 and t.shape[-1] in (1, 3) and t.shape[1] not in (1, 3):
        t = t.permute(0, 3, 1, 2)
    else:
        if t.ndim != 4:
            raise ValueError(f"expected images of shape (N, H, W) or (N, H, W, C), got {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        return t.to(device=device, dtype=torch.float32).div_(PIXEL_MAX).contiguous()
    return t.to(device=device, dtype=torch.float32).contiguous()


def labels_to_tensor(y: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.as_tensor(np.asarray(y)).to(device=device, dtype=torch.long)
