"""Turning a data set's image files into one uint8 array, in parallel: the pixels half of ``data build``.

Each file is read by the one safe decoder (:func:`mnistlab.imaging.decode`: regular files only, the
pixel limit on the header, EXIF, transparency on white, 16-bit scaled), then fitted to the data set's
size (stretched, or padded keeping the aspect ratio) and optionally inverted. Many files are decoded
by a pool of processes, in chunks, and a file that cannot be used leaves a zero image and a reason.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from mnistlab import config, imaging
from mnistlab.errors import DatasetError, ImageError
from mnistlab.progress import Progbar

# The one limit of mnistlab.imaging; images beyond it are refused before a single pixel is decoded.
DEFAULT_MAX_PIXELS = imaging.MAX_PIXELS
COLORS = imaging.COLORS
FITS = config.FITS
# Below this many images a process pool costs more than it saves.
_POOL_MIN = 2000


@dataclass(frozen=True)
class ImageOptions:
    """How every image is turned into pixels: size ``(width, height)``, colour, inversion, fit."""

    size: tuple[int, int] = (28, 28)
    color: str = "gray"
    invert: bool = False
    fit: str = "stretch"
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        w, h = self.size
        if not (1 <= w <= 4096 and 1 <= h <= 4096):
            raise DatasetError(f"size must be between 1x1 and 4096x4096 pixels, got {w}x{h}")
        if self.color not in COLORS:
            raise DatasetError(f"color must be one of {', '.join(COLORS)}, got {self.color!r}")
        if self.fit not in FITS:
            raise DatasetError(f"fit must be one of {', '.join(FITS)}, got {self.fit!r}")
        if self.max_pixels < 1:
            raise DatasetError(f"max_pixels must be ≥ 1, got {self.max_pixels}")

    @property
    def shape(self) -> tuple[int, ...]:
        w, h = self.size
        return (h, w) if self.color == "gray" else (h, w, 3)


def decode_image(
    path: str | os.PathLike[str], options: ImageOptions | None = None, *, follow_symlinks: bool = True
) -> np.ndarray:
    """One image file → ``uint8`` array of ``options.shape``; ``ImageError`` says why it cannot be.

    >>> decode_image("digit.png").shape   # doctest: +SKIP
    (28, 28)
    """
    opts = options or ImageOptions()
    arr = imaging.decode(path, opts.color, size=opts.size, max_pixels=opts.max_pixels, follow_symlinks=follow_symlinks)
    if arr.shape != opts.shape:
        arr = np.asarray(_fit(Image.fromarray(arr), opts))
    return 255 - arr if opts.invert else arr


def _reason(path: str, e: ImageError) -> str:
    """The decoder's refusal as a ``data build`` report gives it: the list line shows where, this why."""
    kind, reason = getattr(e, "kind", "image"), getattr(e, "reason", str(e))
    if kind == "missing":
        return f"missing file: {path} does not exist"
    if kind == "folder":
        return f"not an image: {path} is a folder"
    return f"{reason}: {path}" if kind == "file" else reason


def _fit(im: Image.Image, opts: ImageOptions) -> Image.Image:
    w, h = opts.size
    if im.size == (w, h):
        return im
    if opts.fit == "stretch":
        return im.resize((w, h), Image.Resampling.LANCZOS, reducing_gap=3.0)
    scale = min(w / im.width, h / im.height)
    nw, nh = max(1, round(im.width * scale)), max(1, round(im.height * scale))
    small = im.resize((nw, nh), Image.Resampling.LANCZOS, reducing_gap=3.0)
    # Pad with the picture's own background: the median colour along its border.
    a = np.asarray(small)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    fill = np.median(border, axis=0).round().astype(int)
    canvas = Image.new(im.mode, (w, h), int(fill) if fill.ndim == 0 else tuple(fill.tolist()))
    canvas.paste(small, ((w - nw) // 2, (h - nh) // 2))
    return canvas


def _decode_chunk(
    paths: list[str], opts: ImageOptions, follow_symlinks: bool = True
) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Decode ``paths`` into one array; failures leave a zero image and a ``(position, reason)``."""
    out = np.zeros((len(paths), *opts.shape), np.uint8)
    errors = []
    for i, p in enumerate(paths):
        try:
            out[i] = decode_image(p, opts, follow_symlinks=follow_symlinks)
        except ImageError as e:
            errors.append((i, _reason(p, e)))
    return out, errors


def decode_all(
    paths: Sequence[str],
    options: ImageOptions,
    *,
    workers: int | None = None,
    progress: bool = True,
    on_chunk: Callable[[int], None] | None = None,
    follow_symlinks: bool = True,
) -> tuple[np.ndarray, dict[int, str]]:
    """Decode many image files in parallel: ``(uint8 array, {index: reason})`` for the ones that failed.

    ``follow_symlinks=False`` refuses paths that are links (``data build`` passes paths it has resolved).

    >>> x, failed = decode_all(["a.png", "b.jpg"], ImageOptions(), progress=False)   # doctest: +SKIP
    """
    n = len(paths)
    out = np.zeros((n, *options.shape), np.uint8)
    failed: dict[int, str] = {}
    bar = Progbar(n, unit="image", enabled=progress)
    workers = workers or _cpu_count()
    if n < _POOL_MIN or workers <= 1:
        step = max(1, min(1000, n))
        for start in range(0, n, step):
            arr, errs = _decode_chunk(list(paths[start : start + step]), options, follow_symlinks)
            out[start : start + len(arr)] = arr
            failed.update({start + i: r for i, r in errs})
            bar.update(start + len(arr))
            if on_chunk:
                on_chunk(start + len(arr))
        bar.update(n, finalize=True)
        return out, failed
    # ~8 chunks per worker: small enough for a smooth progress bar and load balance, large enough
    # that sending the results back (one array per chunk) costs nothing.
    size = min(4096, max(256, -(-n // (workers * 8))))
    starts = list(range(0, n, size))
    done = 0
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    try:
        futures = {pool.submit(_decode_chunk, list(paths[s : s + size]), options, follow_symlinks): s for s in starts}
        for fut in cf.as_completed(futures):
            s = futures[fut]
            arr, errs = fut.result()
            out[s : s + len(arr)] = arr
            failed.update({s + i: r for i, r in errs})
            done += len(arr)
            bar.update(done)
            if on_chunk:
                on_chunk(done)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    bar.update(n, finalize=True)
    return out, failed


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


__all__ = ["COLORS", "DEFAULT_MAX_PIXELS", "FITS", "ImageOptions", "decode_all", "decode_image"]
