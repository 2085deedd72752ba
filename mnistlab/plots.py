"""Pictures: the one place that draws image grids and figures (headless by default)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mnistlab import fileio


def _pyplot():
    import matplotlib

    if not os.environ.get("DISPLAY") and matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike[str], dpi: int = 100) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    path = Path(path)
    with fileio.atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def image_grid(
    images: np.ndarray,
    titles: Sequence[str] | None = None,
    path: str | os.PathLike[str] | None = None,
    cols: int = 10,
    cell: float = 1.1,
    title: str | None = None,
    title_colors: Sequence[str] | None = None,
):
    """A grid of images (uint8 or 0..1 floats, gray ``(N, H, W)`` or RGB ``(N, H, W, 3)``) with titles.

    Returns the figure, or saves it as PNG when ``path`` is given (and returns the path).
    """
    plt = _pyplot()
    images = np.asarray(images)
    n = len(images)
    cols = max(1, min(cols, n))
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell, rows * (cell + 0.25)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i]
        if img.ndim == 3 and img.shape[-1] == 1:
            img = img[..., 0]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255 if images.dtype == np.uint8 else 1)
        if titles is not None:
            color = title_colors[i] if title_colors is not None else "black"
            ax.set_title(str(titles[i]), fontsize=8, color=color)
    if title:
        fig.suptitle(title)
    if path is None:
        return fig
    return save_figure(fig, path)
