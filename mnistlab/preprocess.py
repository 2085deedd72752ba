"""The one place that turns pixels into model inputs.

Training, evaluation, the predict CLI, the web page and the exporters all call these functions, so the
scaling can never drift apart between them. Models take ``float32`` tensors of shape ``(N, C, H, W)``
scaled to 0..1 (the lesson's ``x / 255.0``); any standardisation lives inside the model as a
``Standardize`` layer, so it travels with the checkpoint.

Real pictures (photos, drawings, uploads) go through :func:`prepare_image` first, which redoes what the
data set's makers did to their scans, so the model sees the kind of image it was trained on:

- ``digit`` (MNIST): ink made bright on dark, uneven lighting and noise removed, cropped to the ink,
  fitted into a 20×20 box keeping the aspect ratio and placed in 28×28 by centre of mass (LeCun et al.);
- ``fashion`` (Fashion-MNIST): trimmed to the object, longest side scaled to 28, centred, negated
  (Xiao et al. 2017);
- ``plain``: the whole picture resized to the model's input, for other data sets.

>>> prepared = prepare_image(np.pad(np.full((60, 12), 20, np.uint8), 70, constant_values=230))
>>> prepared.image.shape, prepared.inverted
((28, 28), True)
"""

from __future__ import annotations

import io
import math
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from mnistlab import imaging
from mnistlab.config import KINDS
from mnistlab.errors import EmptyImageError, ImageError
from mnistlab.imaging import FULL_SIZE, ImageSource, to_gray  # to_gray and ImageSource: predict and web use them

# Mean and standard deviation of MNIST training pixels after scaling to 0..1.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

# Pictures are analysed at most this large; a phone photo holds far more detail than 28×28 needs.
WORK_SIDE = 384
LOW_SIDE = 128  # smaller pictures are enlarged to this (see _work_scale)
# A clean picture (a flat border: a canvas, a scan) is worked at most this large: its strokes need no room
# for filters against noise and light. (At 160 a thin digit in a canvas corner came out 7 off, at 200 2.2.)
FLAT_SIDE = 200
# A JPEG is decoded at the smallest of 1/2, 1/4, 1/8 scale still this large (libjpeg scales in the DCT, a
# box average for free): photos of 512-767 px are worked at half size. Same accuracy on 1,800 photo-like
# digits, the 120 drawings and the fixed pictures, 12% less time a photo.
DRAFT_SIDE = 256
# MNIST's recipe: the digit fills a 20×20 box, its centre of mass at pixel (14, 14) of 28×28
# (measured on the training set: mean 14.00 ± 0.29 in both axes).
BOX = 20
SIDE = 28
# Stroke width relative to the digit's size: MNIST's median is 0.126, its 5th percentile 0.083.
THIN_STROKE = 0.07
TARGET_STROKE = 0.11
# Ink must stand out from the paper around it by this many noise sigmas (at its 90th percentile). Left-
# over shading on 150 blank photo-like pages reached 9.0; the faintest of 800 photo-like digits 14.2.
STRONG_INK = 11.5
# A border whose values spread less than this (5th to 90th percentile) is a flat background: a canvas,
# a clean scan, an MNIST image. Photos of paper spread more (noise, texture, light), and get an estimate.
FLAT_BORDER = 0.025


# -- reading pictures -------------------------------------------------------------------------------


def read_image(
    src: ImageSource,
    name: str | None = None,
    *,
    gray: bool = False,
    into: Callable[[str, tuple[int, int]], Any] | None = None,
) -> Image.Image:
    """Decode a path, encoded bytes, an array or a PIL image into a loaded PIL image, upright (EXIF).

    The one safe decoder, :func:`mnistlab.imaging.open_image`: not-images, truncated files, decompression
    bombs, folders, FIFOs and devices are refused with ``ImageError`` naming ``name`` (or the path); a
    big JPEG is decoded at a scale still at least :data:`DRAFT_SIDE` (its size in the file is then in
    ``info[FULL_SIZE]``). ``gray``: only the gray picture is needed (a colour JPEG is decoded to its luma).
    ``into``: reused memory to decode a JPEG into (see ``open_image``).

    >>> read_image(np.zeros((5, 7), np.uint8)).size
    (7, 5)
    """
    return imaging.open_image(src, name, size=(DRAFT_SIDE, DRAFT_SIDE), gray=gray, into=into)


# -- the prepared input --------------------------------------------------------------------------


@dataclass
class Prepared:
    """What the model sees, and how it was made from the picture.

    ``image`` is uint8 ``(28, 28)`` (``(H, W)`` or ``(H, W, 3)`` for ``plain``), bright on dark like
    the data set; ``bbox`` is ``(left, top, right, bottom)`` of the ink/object in the source picture.
    """

    image: np.ndarray
    kind: str
    source_size: tuple[int, int]
    inverted: bool = False
    bbox: tuple[int, int, int, int] | None = None
    thickened: bool = False
    empty: bool = False
    notes: list[str] = field(default_factory=list)

    def to_png(self, scale: int = 1) -> bytes:
        """The prepared image as PNG bytes (``scale`` repeats pixels, for looking at it)."""
        img = self.image
        if scale > 1:
            img = img.repeat(scale, 0).repeat(scale, 1)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        return buf.getvalue()


def prepare_image(
    src: ImageSource,
    kind: str = "digit",
    *,
    size: tuple[int, int] = (SIDE, SIDE),
    channels: int = 1,
    thicken: bool | None = None,
    allow_empty: bool = False,
    name: str | None = None,
) -> Prepared:
    """Turn a real picture into the input a model trained on MNIST-style data expects.

    ``kind`` is ``digit``, ``fashion`` or ``plain`` (see the module docstring; :func:`kind_for` picks it
    from a run). ``thicken`` widens thin pen strokes: ``None`` does so only when they are much thinner
    than MNIST's, ``True`` always, ``False`` never. A picture with nothing on it raises
    ``ImageError("no digit found ...")`` unless ``allow_empty``, which returns ``empty=True`` instead.
    ``size`` and ``channels`` only matter for ``plain``.

    >>> p = prepare_image(np.pad(np.full((60, 12), 20, np.uint8), 70, constant_values=230))
    >>> int(p.image.max()), p.bbox
    (255, (69, 69, 83, 131))
    """
    if kind not in KINDS:
        raise ImageError(f"unknown preprocessing kind {kind!r} (choose from {', '.join(KINDS)})")
    where = name or (str(src) if isinstance(src, str | os.PathLike) else "image")
    if kind == "plain":
        return _prepare_plain(read_image(src, where, gray=channels == 1), size, channels)
    im = read_image(src, where, gray=True, into=_decode_target)  # (the picture never leaves this function)
    gray, scale, border = _work_gray(im, kind, where)
    if kind == "fashion":
        prepared = _prepare_fashion(np.multiply(gray, np.float32(1 / 255), dtype=np.float32), scale, im.size)
    else:
        prepared = _prepare_digit(gray, scale, im.size, thicken, border)
    if FULL_SIZE in im.info:  # decoded smaller than stored (JPEG draft): report in the file's pixels
        full = im.info[FULL_SIZE]
        f = full[0] / im.width
        prepared.source_size = tuple(full)
        if prepared.bbox:
            left, top, right, bottom = prepared.bbox
            w, h = full
            prepared.bbox = (
                min(round(left * f), w),
                min(round(top * f), h),
                min(round(right * f), w),
                min(round(bottom * f), h),
            )
    if prepared.empty and not allow_empty:
        what = "digit" if kind == "digit" else "object"
        raise EmptyImageError(f"{where}: no {what} found ({'; '.join(prepared.notes) or 'the picture is blank'})")
    return prepared


# From this many files on, a folder is prepared in worker processes (a new interpreter importing NumPy and
# OpenCV costs ~0.3 s of CPU: as much as 80 photos); below, in threads of this process (OpenCV, NumPy's
# loops and the decoders run without the GIL: measured 1.1-1.6x on two busy cores).
PROCESSES_FROM = 1000


def prepare_files(
    paths: Sequence[str], names: Sequence[str], options: dict, workers: int, *, processes: bool = True
) -> Iterator[Prepared | ImageError]:
    """:func:`prepare_image` (with ``options``) on picture files with ``workers`` threads or, for many files
    (:data:`PROCESSES_FROM`, when ``processes``), processes; in order, each input or the ``ImageError``
    that refused its picture.

    Processes get only paths and send back 28×28 inputs, a few files at a time. Starting them takes a
    while, so this process prepares too, from the far end of the list, while they start and take files
    from the front: no core waits.
    """
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(path, name, options) for path, name in zip(paths, names, strict=True)]
    size = max(1, min(16, len(jobs) // (8 * (workers + 1))))  # small: the last chunks end together
    chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # the threads or processes already fill the cores
    try:
        if len(jobs) < PROCESSES_FROM or not processes:
            with ThreadPoolExecutor(workers) as pool:
                done = list(pool.map(_prepare_chunk, chunks))
        else:
            done = _in_processes(chunks, workers)
    finally:
        cv2.setNumThreads(threads)
    for chunk in done:
        for result in chunk:
            yield ImageError(result) if isinstance(result, str) else result


def _in_processes(chunks: list[list[tuple[str, str, dict]]], workers: int) -> list[list[Prepared | str]]:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

    done: list[list[Prepared | str]] = [[] for _ in chunks]
    front, back = 0, len(chunks)  # the workers' next chunk, and one past this process's next
    # "spawn": a fresh interpreter per worker, never a fork of a process that holds torch's threads.
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_one_thread)
    running: dict[Future, int] = {}
    try:
        while front < back or running:
            for future in [f for f in running if f.done()]:
                done[running.pop(future)] = future.result()
            while front < back and len(running) < 2 * workers:  # one chunk at work and one queued each
                running[pool.submit(_prepare_chunk, chunks[front])] = front
                front += 1
            if front < back:
                back -= 1
                done[back] = _prepare_chunk(chunks[back])
            elif running:
                wait(running, return_when=FIRST_COMPLETED)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return done


def _one_thread() -> None:
    cv2.setNumThreads(1)  # the processes already fill the cores


def _prepare_chunk(jobs: list[tuple[str, str, dict]]) -> list[Prepared | str]:
    out: list[Prepared | str] = []
    for path, name, options in jobs:
        try:
            out.append(prepare_image(path, name=name, **options))
        except ImageError as e:  # sent back as its message: the parent raises or records it
            out.append(str(e))
    return out


def kind_for(dataset: str | dict | None, class_names: tuple[str, ...] | list[str] = ()) -> str:
    """The preprocessing a model needs, from its data set's name (or identity dict) and class names.

    >>> kind_for("fashion_mnist"), kind_for("mnist"), kind_for("my-photos", ["cat", "dog"])
    ('fashion', 'digit', 'plain')
    """
    name = dataset.get("name", "") if isinstance(dataset, dict) else (dataset or "")
    name = Path(str(name)).name.lower()
    if "fashion" in name:
        return "fashion"
    if name in ("mnist", "emnist", "kmnist", "qmnist") or "digit" in name:
        return "digit"
    names = [str(c) for c in class_names]
    if names and all(c.isdigit() for c in names):
        return "digit"
    if names:
        from mnistlab.datasets.specs import FASHION_MNIST

        if names == list(FASHION_MNIST.class_names):
            return "fashion"
        return "plain"
    return "digit"


# -- the working copy ------------------------------------------------------------------------------
#
# Everything below runs on a working copy at most WORK_SIDE pixels a side, in 8 bits until the ink is
# found (a phone photo holds far more detail than a 20×20 box needs, and a byte a pixel is a quarter of
# the memory traffic and page faults of a float), with OpenCV's filters: each is one C loop over the
# pixels. The paper's level, its uneven light and the ink's polarity come from one small thumbnail.


def _work_gray(im: Image.Image, kind: str, where: str) -> tuple[np.ndarray, float, tuple[float, ...] | None]:
    """The picture's 8-bit luma (uint8, 255 = white) at working size, its scale from ``im``, and its
    border's levels (:func:`_border_levels`) when they were needed to choose the size.

    The decoder's 8-bit gray (:func:`mnistlab.imaging.flatten`: transparency on white paper) is shrunk
    by a box average by a whole factor, then bilinear for the rest (less than 2×, where OpenCV's area
    averaging would cost 8× as much); small pictures are enlarged with Pillow's bicubic (a = -0.5:
    OpenCV's sharper a = -0.75 rings around strokes).
    """
    w0, h0 = im.size
    scale = _work_scale(w0, h0) if kind == "digit" else min(1.0, WORK_SIDE / max(w0, h0))
    full = levels = kept = None
    if kind == "digit" and max(w0, h0) * scale > FLAT_SIDE:
        full = _gray_pixels(im, where)
        levels = _border_levels(full)
        if levels[-1] - levels[0] < FLAT_BORDER:
            # A flat border (a canvas, a scan) stays flat when shrunk: its levels, measured here, serve.
            scale, kept = FLAT_SIDE / max(w0, h0), levels
    size = (max(1, round(w0 * scale)), max(1, round(h0 * scale)))
    if scale < 1:
        k = min(w0 // size[0], h0 // size[1])
        if k >= 2:
            gray8 = imaging.flatten(im, "gray", where) if full is None else Image.fromarray(full)
            small = imaging.gray_array(gray8.reduce(k))
        else:
            small = _gray_pixels(im, where) if full is None else full
        if small.shape != size[::-1]:
            small = cv2.resize(small, size, dst=_scratch("small", size[::-1], np.uint8), interpolation=cv2.INTER_LINEAR)
        return small, scale, kept
    if scale != 1:
        return imaging.gray_array(imaging.flatten(im, "gray", where).resize(size, Image.BICUBIC)), scale, None
    return (_gray_pixels(im, where) if full is None else full), scale, levels


_SCRATCH = threading.local()  # each thread's reusable working arrays (prepare_files and the server run threads)


def _scratch(name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """An uninitialised array of ``shape`` that this thread reuses under ``name`` (grown when too small): no
    allocation and no page faults on a fresh full-size array for each picture. Only for arrays that never
    leave :func:`prepare_image`."""
    n = math.prod(shape)
    buf = _SCRATCH.__dict__.get(name)
    if buf is None or buf.size < n or buf.dtype != dtype:
        buf = np.empty(max(n, 1 << 18), dtype)
        if n <= SCRATCH_MAX:  # (a huge picture's arrays are not kept)
            _SCRATCH.__dict__[name] = buf
    return buf[:n].reshape(shape)


# The largest array a thread keeps (elements: a 1024×1024 picture). The working copies are at most WORK_SIDE
# a side, a canvas's pixels its size: a thread keeps a few MB at most.
SCRATCH_MAX = 1 << 20


def _gray_pixels(im: Image.Image, where: str) -> np.ndarray:
    """``imaging.gray_array(imaging.flatten(im, "gray", where))``, as an array this thread reuses (only for
    working copies that never leave :func:`prepare_image`).

    A JPEG's luma decoded into the page this thread keeps (:func:`_decode_target`) is read where it lies.
    Other pixels reach NumPy by a paste into an image whose memory is a NumPy array (a plain copy): a gray
    picture into that page, rows :data:`PAGE_WIDTH` bytes apart, made once (no ``frombuffer``, no
    allocation, no page faults per picture; the page stays in the cache); an opaque RGBA picture (a web
    page's canvas) into a buffer of its size, its alpha checked in one pass and its luma by OpenCV (the
    same ITU-R 601 weights as Pillow's ``L``, rounded within one level of it; gray pixels exactly equal):
    a third of the time of Pillow's alpha band, extrema and conversion. Anything else, or a way first
    found not to share the memory: flattened and copied as :mod:`mnistlab.imaging` does.
    """
    mode, (w, h) = im.mode, im.size
    if mode == "L" and w <= PAGE_WIDTH and h <= PAGE_HEIGHT:
        page, target = _page()
        way = "decoded" if im.im is _SCRATCH.__dict__.get("decoded") else mode  # decoded into the page: no copy
        if _SHARES.get(way) is not False:
            if way == mode:
                target.paste(im, (0, 0))
            gray = page[:h, :w]
            if _SHARES.get(way) is None:
                _SHARES[way] = bool(np.array_equal(gray, np.asarray(im)))
            if _SHARES[way]:
                return gray
    elif mode == "RGBA" and sys.byteorder == "little" and _SHARES.get(mode) is not False:
        rgba, target = _SCRATCH.__dict__.get("canvas", (None, None))
        if target is None or target.size != im.size:  # (a page's canvases come in one size: made once)
            rgba = _scratch("rgba", (h, w, 4), np.uint8)
            target = Image.frombuffer("RGBA", im.size, rgba, "raw", "RGBA", 0, 1)
            target.readonly = False  # frombuffer's image is marked read-only; its memory is our scratch array
            if rgba.base is _SCRATCH.__dict__.get("rgba"):
                _SCRATCH.canvas = rgba, target
        target.paste(im, (0, 0))
        if int(rgba.view(np.uint32).min()) >= 0xFF000000:  # alpha is each pixel's top byte: all 255
            gray = cv2.cvtColor(rgba, cv2.COLOR_RGBA2GRAY, dst=_scratch("gray", (h, w), np.uint8))
            if _SHARES.get(mode) is None:
                _SHARES[mode] = bool(np.abs(gray - imaging.gray_array(im.convert("L")).astype(np.int16)).max() <= 1)
            if _SHARES[mode]:
                return gray
    return imaging.gray_array(imaging.flatten(im, "gray", where))


# The gray page: photos of 500-767 px are decoded at half size, smaller ones whole.
PAGE_WIDTH, PAGE_HEIGHT = 512, 1024
# Per way ("decoded" into the page, or a paste of a mode into frombuffer's image): whether it writes the array.
_SHARES: dict[str, bool] = {}


def _decode_target(mode: str, size: tuple[int, int]) -> Any:
    """This thread's gray page as the Pillow core image a JPEG's luma is decoded into (its pixels then need
    no copy: :func:`_gray_pixels`), or None (another mode, too large, or a decoder found not to write it)."""
    w, h = size
    if mode != "L" or w > PAGE_WIDTH or h > PAGE_HEIGHT or _SHARES.get("decoded") is False:
        return None
    core = Image.frombuffer("L", size, _page()[0], "raw", "L", PAGE_WIDTH, 1).im  # rows PAGE_WIDTH apart
    _SCRATCH.decoded = core
    return core


def _page() -> tuple[np.ndarray, Image.Image]:
    """This thread's gray page and the PIL image whose pixels it is."""
    page = _SCRATCH.__dict__.get("page")
    if page is None:
        a = np.empty((PAGE_HEIGHT, PAGE_WIDTH), np.uint8)
        target = Image.frombuffer("L", (PAGE_WIDTH, PAGE_HEIGHT), a, "raw", "L", 0, 1)
        target.readonly = False  # frombuffer's image is marked read-only; its memory is our array
        page = _SCRATCH.page = a, target
    return page


def _work_scale(w: int, h: int) -> float:
    """The working copy's scale: large pictures to WORK_SIDE (a digit may fill only a fifth of a photo,
    and still needs twice the 20-pixel box), tiny ones enlarged to LOW_SIDE so the filters have room.
    (Pictures of up to WORK_SIDE worked at half size, 64-192 px, cost 1-4 of 600 photo-like digits; JPEGs
    of 512-767 px come from the decoder at half size, 256-383 px: see DRAFT_SIDE.)"""
    side = max(w, h)
    if side > WORK_SIDE:
        return WORK_SIDE / side
    if side < LOW_SIDE:
        return float(-(-LOW_SIDE // side))
    return 1.0


def _resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Float image to ``size`` (w, h): area averaging when shrinking (anti-aliasing, like MNIST's),
    bicubic when enlarging (PIL's, a = -0.5: OpenCV's sharper a = -0.75 rings around strokes)."""
    w, h = max(1, size[0]), max(1, size[1])
    if a.dtype != np.float32:
        a = a.astype(np.float32)
    if w <= a.shape[1] and h <= a.shape[0]:
        return cv2.resize(a, (w, h), interpolation=cv2.INTER_AREA)  # (a cut of rows: OpenCV reads it in place)
    a = np.ascontiguousarray(a)
    return np.array(Image.fromarray(a, "F").resize((w, h), Image.BICUBIC), dtype=np.float32)  # writable


def _blur3(x: np.ndarray) -> np.ndarray:
    """3×3 mean: quiets sensor noise and JPEG speckle."""
    return cv2.blur(x, (3, 3), borderType=cv2.BORDER_REPLICATE)


def _grow(mask: np.ndarray, r: int = 1) -> np.ndarray:
    """Grow a 0/1 uint8 mask by ``r`` pixels (8-neighbourhood: a (2r+1)² square)."""
    return cv2.dilate(mask, _square(r), borderType=cv2.BORDER_CONSTANT, borderValue=0)


def _square(r: int) -> np.ndarray:
    """The (2r+1)² square structuring element (made once per size)."""
    if r not in _SQUARES:
        _SQUARES[r] = np.ones((2 * r + 1, 2 * r + 1), np.uint8)
    return _SQUARES[r]


_SQUARES: dict[int, np.ndarray] = {}


# -- digits ----------------------------------------------------------------------------------------


def _prepare_digit(
    g: np.ndarray, scale: float, full: tuple[int, int], thicken: bool | None, levels: tuple[float, ...] | None = None
) -> Prepared:
    w0, h0 = full
    notes: list[str] = []
    p5, p10, mid, p90, p95 = levels or _border_levels(g)
    # A flat border (a canvas, a scan, an MNIST image) is the paper: the ink is whichever side of it holds
    # more. Otherwise (a photo) the ink is found against the local median (_ink_is_dark).
    flat = p95 - p5 < FLAT_BORDER
    thumb = None if flat else _thumbnail(g, THUMB_SIDE)
    inverted = _flat_ink_is_dark(g, mid) if flat else _ink_is_dark(g, thumb)
    # The ink's paper, as x = ink bright on dark sees it: the border's 5th to 90th percentile of x.
    x = _ink_above_paper(g, inverted, (1 - p95, 1 - p10) if inverted else (p5, p90), thumb)
    soft, keep, (r0, c0), reason = _find_ink(x)  # cut to the kept pieces: a few thousand pixels
    if keep is None:
        return Prepared(np.zeros((SIDE, SIDE), np.uint8), "digit", (w0, h0), inverted, empty=True, notes=[reason])
    soft = cv2.multiply(soft, _grow(keep), dtype=cv2.CV_32F)  # keep the anti-aliased rim, drop the specks
    left, top, cw, ch = cv2.boundingRect((soft > 0).view(np.uint8))
    bottom, right = top + ch, left + cw
    big = max(ch, cw)
    if big < max(4, 0.03 * max(x.shape)):
        reason = f"only a speck of ink ({cw}×{ch} pixels)"
        return Prepared(np.zeros((SIDE, SIDE), np.uint8), "digit", (w0, h0), inverted, empty=True, notes=[reason])
    crop = soft[top:bottom, left:right]
    did_thicken = False
    width = _stroke_width(keep[top:bottom, left:right]) / big
    if thicken or (thicken is None and width < THIN_STROKE):
        crop, did_thicken = _thicken(crop, width), True
        notes.append(f"thickened strokes (width {width:.3f} of the digit's size)")
    image = _fit_and_centre(crop)
    top, bottom, left, right = top + r0, bottom + r0, left + c0, right + c0
    bbox = (int(left / scale), int(top / scale), min(w0, round(right / scale)), min(h0, round(bottom / scale)))
    return Prepared(image, "digit", (w0, h0), inverted, bbox, did_thicken, notes=notes)


def _ink_is_dark(g: np.ndarray, thumb: np.ndarray) -> bool:
    """True for dark ink on light paper (``thumb``: :func:`_thumbnail` of ``g``). The ink is the minority:
    measured against the local median (over a third of the picture, where even a bold digit covers less
    than half), whichever tail of the pixel values stands out further is the ink, whatever the paper's
    shade or lighting."""
    # Every fourth pixel each way: the same sums and noise, a sixteenth of the work. (With this and the
    # paper's level from every eighth pixel in _find_ink, against every other and every fourth: on 1,400
    # benchmark pictures the same polarities, 1,393 inputs within one gray level, 6 within two, and one
    # photo's box a row taller, mean difference 2.1 of 255; the fixed pictures' figures unchanged.)
    part = thumb
    h, w = thumb.shape
    s = MEDIAN_SIDE / max(h, w)
    small = cv2.resize(thumb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    resid = part - _rank_filter(small, 0.15 * MEDIAN_SIDE, "median", part.shape)
    sigma = 1.4826 * _median(np.abs(resid[::2, ::2])) + 0.255
    # The residuals beyond 3 sigma below and above, summed: max(-r - c, 0) = -min(r, -c) - c, max(r - c, 0) =
    # max(r, c) - c (two calls a side instead of four; the sums in float64, where the c's cancel exactly).
    c = 3 * sigma
    dark = -float(np.minimum(resid, -c).sum(dtype=np.float64)) - c * resid.size
    bright = float(np.maximum(resid, c).sum(dtype=np.float64)) - c * resid.size
    if abs(dark - bright) <= 0.2 * max(dark, bright):  # undecided: the border is usually paper
        edge = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
        return bool(_median(edge) >= _median(g))
    return dark > bright


def _flat_ink_is_dark(g: np.ndarray, paper: float) -> bool:
    """True for dark ink on a flat paper of level ``paper`` (0..1): more lies below it than above."""
    # (The sum of the darker pixels' distances below it less the brighter ones' above is the sum of
    # paper - value: dark wins when the paper is at least the mean.)
    return paper * 255 >= cv2.mean(g)[0]


def _ink_above_paper(
    g: np.ndarray, inverted: bool, border: tuple[float, float], thumb: np.ndarray | None
) -> np.ndarray:
    """The ink bright on dark over its paper at 0, 3×3 smoothed against sensor noise and JPEG speckle:
    uint16 sums of 3×3 8-bit values (:data:`SUM`, exact: the 3×3 mean in 0..1 is the sum / SUM), from ``g`` (uint8, 255 = white), the ink's polarity and the 5th and 90th percentile
    of the border as the ink-bright picture sees it.

    A picture whose border is evenly lit (a canvas, a scan, an MNIST image) has a flat paper: its level,
    taken from the border, a lower envelope (the paper's noise stays above it). Otherwise (a photo) a
    smooth estimate: a grey opening of the ink-bright picture (a closing of ``g`` for dark ink), with a
    window wider than a stroke (a fifth of the picture) but narrower than the soft shadows and light
    gradients, which it keeps. The opening is not used on flat pictures because a bold digit filling
    the frame has blobs of ink wider than its window, which it would take for background.

    In 8 bits, where the subtraction saturates at the paper (levels within half a step of the float
    version's), and the smoothing in 16 (floats only for the ink's box, in _find_ink).
    """
    lo, hi = border
    if hi - lo < FLAT_BORDER or thumb is None:
        x8 = _scratch("x8", g.shape, np.uint8)
        x8 = cv2.subtract(255 * (1 - lo), g, dst=x8) if inverted else cv2.subtract(g, 255 * lo, dst=x8)
    else:
        paper = _rank_filter(thumb, 0.1 * THUMB_SIDE, "closing" if inverted else "opening", g.shape)
        x8 = cv2.subtract(paper, g, dst=paper) if inverted else cv2.subtract(g, paper, dst=paper)
    sums = _scratch("sums", x8.shape, np.uint16)
    return cv2.boxFilter(x8, cv2.CV_16U, (3, 3), dst=sums, normalize=False, borderType=cv2.BORDER_REPLICATE)


# The thumbnail the paper's light is estimated on (the opening), and the smaller one of the median
# that decides the ink's polarity: each filter then costs the same for any picture.
THUMB_SIDE = 64
MEDIAN_SIDE = 16


def _thumbnail(g: np.ndarray, side: int) -> np.ndarray:
    """``g`` (uint8) as float32 0..255, its longest side ``side``: bilinear samples at twice that size,
    then 2×2 means (OpenCV's area averaging costs a nanosecond a source pixel when the factor is not
    whole: a tenth of a millisecond on a photo; this, a tenth of that, averages 16 pixels a cell)."""
    h, w = g.shape
    s = side / max(h, w)
    tw, th = max(1, round(w * s)), max(1, round(h * s))
    if s >= 0.5:
        return cv2.resize(g, (tw, th), interpolation=cv2.INTER_AREA).astype(np.float32)
    twice = cv2.resize(g, (2 * tw, 2 * th), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    return cv2.resize(twice, (tw, th), interpolation=cv2.INTER_AREA)


_SMOOTH5 = np.array([1, 2, 3, 2, 1], np.float32) / 9


def _rank_filter(small: np.ndarray, radius: float, how: str, shape: tuple[int, ...]) -> np.ndarray:
    """A rank filter of a thumbnail (float32 0..255) with a window ``radius`` pixels each side, smoothed
    and enlarged to ``shape``: float32 for ``median`` (a window of at most 5), uint8 for ``opening`` (min
    then max filter: removes bright things narrower than the window and keeps broad ones) and ``closing``
    (max then min: the same for dark things)."""
    m = round(radius)
    if how == "median":
        # OpenCV's median of floats (windows of 3 and 5) with its own edge copies: the polarity compares
        # the two tails over the whole picture, which a band at an edge does not tip. (With this, the
        # 16 px median and the 64 px thumbnail: the same polarity as before on 1,338 benchmark and fixed
        # pictures, the larger tail at least 4.3 times the smaller one; undecided is below 1.25.)
        out = cv2.medianBlur(small, 2 * m + 1)
        return cv2.resize(cv2.sepFilter2D(out, -1, _SMOOTH5, _SMOOTH5, borderType=cv2.BORDER_REPLICATE),
                          (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)  # fmt: skip
    pad = 2 * m  # an opening is two filters: twice the margin
    # Continue the picture past its edges as a mirrored slope: with plain edge copies, light that
    # brightens towards an edge would be under-estimated there and leave a band that looks like ink.
    h, w = small.shape
    if min(h, w) > pad:
        padded = _odd_reflect(_odd_reflect(small, pad, 0), 0, pad)  # rows, then columns, as np.pad does
    else:
        padded = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    # Every window inside lies wholly in the padding.
    op = cv2.MORPH_OPEN if how == "opening" else cv2.MORPH_CLOSE
    out = cv2.morphologyEx(padded, op, _square(m), borderType=cv2.BORDER_REPLICATE)
    # Smoothed by two 3×3 means (one 5×5 filter, [1, 2, 3, 2, 1] / 9 each way) that read the continued
    # picture beyond the edges, then cut to the picture, rounded to 8 bits (negatives, from the slope, 0).
    out = cv2.sepFilter2D(out, -1, _SMOOTH5, _SMOOTH5, borderType=cv2.BORDER_REPLICATE)[pad:-pad, pad:-pad]
    out = cv2.addWeighted(out, 1.0, out, 0.0, 0.0, dtype=cv2.CV_8U)
    # (Into this thread's reused full-size array: _ink_above_paper subtracts the picture from it in place.)
    paper = _scratch("x8", shape[:2], np.uint8)
    return cv2.resize(out, (shape[1], shape[0]), dst=paper, interpolation=cv2.INTER_LINEAR)


def _odd_reflect(a: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``np.pad(a, ((rows, rows), (cols, cols)), mode="reflect", reflect_type="odd")`` from OpenCV's
    borders (a tenth of the cost): the edge value plus its difference to the mirrored one."""
    edge = cv2.copyMakeBorder(a, rows, rows, cols, cols, cv2.BORDER_REPLICATE)
    mirror = cv2.copyMakeBorder(a, rows, rows, cols, cols, cv2.BORDER_REFLECT_101)
    return cv2.addWeighted(edge, 2.0, mirror, -1.0, 0.0)


def _median(v: np.ndarray) -> float:
    """``np.median`` from one partial sort, without its checks (a third of its cost on small arrays).
    Floats are sorted whole: NumPy's selection of floats takes a hundred times as long on some
    residuals (ties around the median), its sort of floats runs in SIMD."""
    n, k = v.size, v.size // 2  # axis=None: one copy of a strided sample, not two
    part = np.sort(v, axis=None) if v.dtype.kind == "f" else np.partition(v, k, axis=None)
    if n % 2:
        return float(part[k])
    return (float(part[:k].max()) + float(part[k])) / 2


def _select2(v: np.ndarray, f: int) -> tuple[float, float]:
    """The ``f``-th and ``f + 1``-th smallest of ``v`` (0-based; the last twice at the end). NumPy's
    selection of one rank runs in SIMD, of two ranks in plain introselect: five times longer."""
    if f + 1 >= v.size:
        top = float(np.partition(v, f, axis=None)[f])
        return top, top
    part = np.partition(v, f + 1, axis=None)  # below f + 1: the f + 1 smallest, the f-th the largest
    return float(part[: f + 1].max()), float(part[f + 1])


def _border_levels(g: np.ndarray) -> tuple[float, ...]:
    """The 5th, 10th, 50th, 90th and 95th percentile (``np.percentile``'s linear, 0..1) of :func:`_border`
    of ``g`` (uint8), from one sort (NumPy sorts bytes by counting when asked for a stable sort)."""
    v = np.sort(_border(g), kind="stable")
    n, out = v.size, []
    for q in (0.05, 0.10, 0.50, 0.90, 0.95):
        i = q * (n - 1)
        f = int(i)
        lo, hi = int(v[f]), int(v[min(f + 1, n - 1)])  # (scalars: a tenth of the cost of NumPy's calls)
        out.append((lo + (i - f) * (hi - lo)) / 255)
    return tuple(out)


def _border(g: np.ndarray) -> np.ndarray:
    """The band 4% wide around the picture, every other pixel (plenty for its percentiles)."""
    h, w = g.shape
    m = max(2, round(0.04 * min(h, w)))
    band = (g[:m:2, ::2], g[-m::2, ::2], g[::2, :m:2], g[::2, -m::2])
    return np.concatenate(band, axis=None)


def _otsu(s: np.ndarray, top: float) -> float:
    """Otsu's threshold over 256 bins from 0 to ``top`` (OpenCV's, on the values in 8 bits)."""
    # floor(s * 256 / top), at most 255, in one pass: |v - 0.5| rounded to the nearest, saturated.
    q = cv2.convertScaleAbs(s, alpha=256 / top, beta=-0.5)
    t, _ = cv2.threshold(q, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    return (t + 1) * top / 256  # the upper edge of the last bin counted as background


# The ink map's unit: it holds sums of 3×3 values of 0..255, the 3×3 mean in 0..1 times this.
SUM = 9 * 255


def _find_ink(s: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int], str]:
    """The digit's ink as a soft 0..1 map (anti-aliased edges kept) and a 0/1 mask of the pieces kept,
    both cut to the kept pieces' box and one pixel more, and where that box starts (row, column), from
    :func:`_ink_above_paper`'s sums (uint16, :data:`SUM` for full ink: 16 bits hold them exactly, and
    pass over a whole photo at half a float's memory traffic; floats only within the kept box).

    A piece counts as ink when it stands out from the paper right around it by far more than the
    paper's noise: shading left over from the lighting makes large blobs that rise slowly out of their
    surroundings, ink rises at once. Kept: the heaviest such piece, others nearly as heavy close by,
    and smaller pieces near it (a stroke broken by the pen); specks and dirt elsewhere go. The mask is
    None (with a reason) when there is nothing.
    """
    # Every other pixel each way (Otsu's histogram, and where the ink is), and every eighth (the paper's
    # level and noise): a quarter and a 64th of the work, from one copy that stays in the cache.
    half = np.ascontiguousarray(s[::2, ::2])
    sample = half[::4, ::4]
    base = _median(sample)
    sigma = 1.4826 * _median(np.abs(sample - np.float32(base))) + 1e-4 * SUM
    top = float(half.max())
    if top - base < 0.03 * SUM:
        return s, None, (0, 0), "the picture is blank"
    t = max(_otsu(half, top + 1e-6 * SUM), base + 4 * sigma)
    # Labelled within the ink's box and the 7 pixels of paper around it that ring_level reads (OpenCV's
    # statistics cost ~2 ns a pixel, background included: 3x the labelling on a whole photo). The box
    # from every other pixel, and two more (a piece of ink is wider than one: the 3×3 sums smear it).
    ti = math.floor(t)  # the sums are whole: above t is above its floor (and no cast of them to floats)
    hc, hr, hw, hh = cv2.boundingRect((half > ti).view(np.uint8))
    if hw == 0:  # (kept out of labelling: its one label would be the background)
        return s, None, (0, 0), "the picture is blank"
    h, w = s.shape
    r0, c0 = max(0, 2 * hr - 9), max(0, 2 * hc - 9)
    mask = (s[r0 : min(h, 2 * (hr + hh) + 9), c0 : min(w, 2 * (hc + hw) + 9)] > ti).view(np.uint8)
    ic, ir, iw, ih = cv2.boundingRect(mask)  # the ink's box, to the pixel
    ink = (ic + c0, ir + r0, iw, ih)
    br, bc = max(r0, ink[1] - 7), max(c0, ink[0] - 7)
    be, bf = min(r0 + mask.shape[0], ink[1] + ih + 7), min(c0 + mask.shape[1], ink[0] + iw + 7)
    full, x, mask = s, s[br:be, bc:bf], np.ascontiguousarray(mask[br - r0 : be - r0, bc - c0 : bf - c0])
    # Grana's block-based labelling, 16-bit labels (a 400×400 cut holds at most 40,000 pieces). One
    # piece is the mask's box; the boxes of several cost twice the labels, so only then.
    n, labels = cv2.connectedComponentsWithAlgorithm(mask, 8, cv2.CV_16U, cv2.CCL_GRANA)
    if n == 2:  # (top, bottom, left, right), inclusive
        boxes = [[ink[1] - br, ink[1] - br + ih - 1, ink[0] - bc, ink[0] - bc + iw - 1]]
        pieces = _Pieces(x, mask, labels, boxes, full)
    else:
        n, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(mask, 8, cv2.CV_16U, cv2.CCL_GRANA)
        # (top, bottom, left, right), inclusive, from OpenCV's (left, top, width, height, area).
        bbox = stats[1:, (1, 1, 0, 0)]
        bbox[:, 1::2] += stats[1:, (3, 2)] - 1
        pieces = _Pieces(x, mask, labels, bbox.tolist(), full, bbox)
    if n == 2:  # one piece (a drawing, most photos): nothing to weigh or choose between, the same answer
        main, keep, best = 0, None, pieces.contrast(0)
        # The paper around the one piece lies in the cut and outside the piece, so at most t: ink that stands
        # out from t by enough stands out from it too, and its ring need not be looked at. (The ring is
        # empty only when the cut leaves no room of 4 pixels beside the piece on any side.)
        room = max(ink[1] - br, ink[0] - bc, be - ink[1] - ih, bf - ink[0] - iw)
        if room < 4 or best - t < STRONG_INK * sigma:
            best -= pieces.ring_level(0)
        strong = best >= STRONG_INK * sigma
    else:
        main, keep, best = _choose(pieces, x - np.float32(base), base, sigma)
        strong = keep is not None
    if not strong:
        return full, None, (0, 0), f"nothing stands out from the paper (best contrast {best / sigma:.1f}× the noise)"
    if keep is None:  # (the one piece's box in Python's numbers: a tenth of NumPy's calls)
        top, bottom, left, right = pieces.boxes[0]
    else:
        kept = pieces.bbox[keep[1:] > 0]
        top, bottom, left, right = kept[:, 0].min(), kept[:, 1].max(), kept[:, 2].min(), kept[:, 3].max()
    r0, r1 = max(0, top - 1), min(x.shape[0], bottom + 2)
    c0, c1 = max(0, left - 1), min(x.shape[1], right + 2)
    level = pieces.p90(main)[1]
    lo = min(base + 3 * sigma, 0.5 * t)
    # (x - lo) / (level - lo), clipped to 0..1, in floats over the box alone (OpenCV's scaled conversion).
    a = 1 / max(level - lo, 1e-6 * SUM)
    soft = cv2.addWeighted(x[r0:r1, c0:c1], a, x[r0:r1, c0:c1], 0.0, -lo * a, dtype=cv2.CV_32F)
    np.minimum(np.maximum(soft, 0.0, out=soft), 1.0, out=soft)  # (np.clip's wrappers cost more than the two)
    kept_mask = mask[r0:r1, c0:c1].copy() if keep is None else keep[labels[r0:r1, c0:c1]]
    return soft, kept_mask, (int(r0 + br), int(c0 + bc)), ""


def _choose(pieces: _Pieces, above: np.ndarray, base: float, sigma: float) -> tuple[int, np.ndarray | None, float]:
    """Of several pieces (``above``: the picture less the paper's level), the digit's: the heaviest piece
    that stands out, a 0/1 flag per label (None when no piece stands out) for it and the pieces kept
    with it, and the best contrast over the paper around a piece."""
    mass = pieces.sum(above)
    top, bottom, left, right = pieces.bbox.T
    local = np.zeros(pieces.n)
    for k in np.argsort(-mass)[:8]:  # the heaviest candidates are enough
        local[k] = pieces.contrast(k) - pieces.ring_level(k)
    strong = local >= STRONG_INK * sigma
    if not strong.any():
        return 0, None, float(local.max())
    main = int(np.argmax(np.where(strong, mass, -1)))
    size = max(bottom[main] - top[main], right[main] - left[main])

    def inside(d: float) -> np.ndarray:
        box = pieces.bbox[main]
        return (top >= box[0] - d) & (bottom <= box[1] + d) & (left >= box[2] - d) & (right <= box[3] + d)

    heavy = inside(size) & (mass >= 0.25 * mass[main])
    near = inside(0.3 * size) & (mass >= 0.01 * mass[main])
    keep = np.zeros(pieces.n + 1, np.uint8)
    for k in np.nonzero(heavy | near)[0]:
        keep[1 + k] = pieces.contrast(k) - base >= 0.7 * STRONG_INK * sigma
    keep[1 + main] = 1
    return main, keep, float(local.max())


class _Pieces:
    """The labelled pieces of a mask (0-based ``k`` for label ``k + 1``): boxes for all, from the
    labelled pixels alone; percentiles and the paper around a piece only for the pieces asked about."""

    def __init__(
        self,
        x: np.ndarray,
        mask: np.ndarray,
        labels: np.ndarray,
        boxes: list[list[int]],
        full: np.ndarray,
        bbox: np.ndarray | None = None,
    ) -> None:
        self.x, self.labels, self.n, self.full = x, labels, len(boxes), full  # full: the picture x is cut from
        self._p90: dict[int, tuple[float, float]] = {}
        self.on = mask.view(bool)
        # Each piece's (top, bottom, left, right), inclusive: as Python ints (for slicing) and, for
        # several pieces, as an array (for choosing between them).
        self.boxes, self.bbox = boxes, bbox

    def sum(self, values: np.ndarray) -> np.ndarray:
        """Sum of ``values`` over each piece."""
        return np.bincount(self.labels[self.on] - 1, weights=values[self.on], minlength=self.n)

    def _box(self, k: int, pad: int = 0) -> tuple[slice, slice]:
        top, bottom, left, right = self.boxes[k]
        h, w = self.x.shape
        return slice(max(0, top - pad), min(h, bottom + 1 + pad)), slice(max(0, left - pad), min(w, right + 1 + pad))

    def p90(self, k: int) -> tuple[float, float]:
        """``x``'s 90th percentile over the piece, as the lower of its two neighbours and interpolated
        (numpy's ``lower`` and ``linear``), from one partial sort; remembered per piece."""
        if k not in self._p90:
            box = self._box(k)
            v = self.x[box][self._piece(k, box)]
            i = 0.9 * (len(v) - 1)
            f = int(i)
            lo, hi = _select2(v, f)
            self._p90[k] = (lo, lo + (i - f) * (hi - lo))
        return self._p90[k]

    def contrast(self, k: int) -> float:
        """How bright the piece is: ``x``'s 90th percentile over it."""
        return self.p90(k)[0]

    def ring_level(self, k: int) -> float:
        """Median of ``x`` in a ring 3 to 6 pixels outside the piece: the paper right around it."""
        box = self._box(k, 7)
        near = _grow(self._piece(k, box).view(np.uint8), 3)
        ring = cv2.subtract(_grow(near, 3), near).view(bool)  # grown by 6 (two 7×7 squares make a 13×13)
        v = self.x[box][ring]
        return _median(v) if v.size else _median(self.full)

    def _piece(self, k: int, box: tuple[slice, slice]) -> np.ndarray:
        """Where piece ``k`` is within ``box``, as bools (the mask itself when it is the only piece)."""
        return self.on[box] if self.n == 1 else self.labels[box] == k + 1


_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def _stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width in pixels: twice the area over the boundary (a stroke has two edges)."""
    inner = cv2.erode(mask, _CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    area = cv2.countNonZero(mask)
    return 2.0 * area / max(area - cv2.countNonZero(inner), 1)


def _thicken(crop: np.ndarray, width: float) -> np.ndarray:
    """Widen strokes to about MNIST's relative width, at a resolution where that is a few pixels."""
    h, w = crop.shape
    s = min(1.0, 80 / max(h, w))
    small = _resize(crop, (round(w * s), round(h * s))) if s < 1 else crop
    big = max(small.shape)
    r = max(1, round((TARGET_STROKE - width) * big / 2))
    padded = np.pad(small.astype(np.float32), r)  # the wider strokes must not be cut at the crop's edge
    return cv2.dilate(padded, _square(r), borderType=cv2.BORDER_REPLICATE)


def _fit_and_centre(crop: np.ndarray) -> np.ndarray:
    """MNIST's last steps: fit into 20×20 keeping the aspect ratio, centre of mass to pixel (14, 14)."""
    h, w = crop.shape
    s = BOX / max(h, w)
    small = _resize(crop, (max(1, round(w * s)), max(1, round(h * s))))
    if s > 1:  # bicubic overshoots; area averages of 0..1 stay in 0..1
        small = np.clip(small, 0.0, 1.0, out=small)
    sh, sw = small.shape
    m = cv2.moments(small)  # the mass and its first moments, in one pass
    total = m["m00"] or 1.0
    cy, cx = m["m01"] / total, m["m10"] / total
    oy = min(max(round(SIDE // 2 - cy), 0), SIDE - sh)  # (np.clip on a number costs 15 µs)
    ox = min(max(round(SIDE // 2 - cx), 0), SIDE - sw)
    out = np.zeros((SIDE, SIDE), np.uint8)
    out[oy : oy + sh, ox : ox + sw] = cv2.convertScaleAbs(small, alpha=255)  # rounded half to even, as np.round
    return out


# -- clothes ---------------------------------------------------------------------------------------


def _prepare_fashion(g: np.ndarray, scale: float, full: tuple[int, int]) -> Prepared:
    """Fashion-MNIST's recipe: trim what looks like the corners' colour (5% tolerance), scale the
    longest side to 28, centre, negate; the background then maps to black, as in the data set."""
    w0, h0 = full
    corners = np.array([g[0, 0], g[0, -1], g[-1, 0], g[-1, -1]])
    bg = float(np.median(corners))
    diff = _blur3(np.abs(g - bg)) > 0.05
    empty = Prepared(np.zeros((SIDE, SIDE), np.uint8), "fashion", (w0, h0), bg > 0.5, empty=True)
    rows, cols = np.nonzero(diff.any(1))[0], np.nonzero(diff.any(0))[0]
    if len(rows) == 0 or max(rows[-1] - rows[0], cols[-1] - cols[0]) < 2:
        empty.notes = ["everything has the corners' colour"]
        return empty
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    x = 1.0 - g if bg > 0.5 else g
    ground = 1.0 - bg if bg > 0.5 else bg
    x = np.clip((x - ground) / max(1.0 - ground, 1e-6), 0, 1)[top:bottom, left:right]
    h, w = x.shape
    s = SIDE / max(h, w)
    small = np.clip(_resize(x, (max(1, round(w * s)), max(1, round(h * s)))), 0, 1)
    out = np.zeros((SIDE, SIDE), np.float32)
    sh, sw = small.shape
    oy, ox = (SIDE - sh) // 2, (SIDE - sw) // 2
    out[oy : oy + sh, ox : ox + sw] = small
    bbox = (int(left / scale), int(top / scale), min(w0, round(right / scale)), min(h0, round(bottom / scale)))
    return Prepared((out * 255).round().astype(np.uint8), "fashion", (w0, h0), bg > 0.5, bbox)


# -- the lesson's way, for comparison ------------------------------------------------------------------


def lesson_image(src: ImageSource, threshold: int | None = 200) -> np.ndarray:
    """What the lesson's app does: the whole picture resized to 28×28, then gray values under
    ``threshold`` become ink (255) and the rest paper (0); ``threshold=None`` inverts instead
    (``255 - x``). Kept as the baseline the benchmark and tests compare :func:`prepare_image` with.

    >>> lesson_image(np.full((50, 50), 255, np.uint8)).max()
    np.uint8(0)
    """
    gray = np.asarray(read_image(src).convert("L").resize((SIDE, SIDE), Image.LANCZOS))
    if threshold is None:
        return (255 - gray).astype(np.uint8)
    return np.where(gray < threshold, 255, 0).astype(np.uint8)


# -- anything else ---------------------------------------------------------------------------------


def _prepare_plain(im: Image.Image, size: tuple[int, int], channels: int) -> Prepared:
    """The lesson's way: the whole picture resized to the model's input, nothing else."""
    h, w = size
    if channels == 3:
        rgb = im.convert("RGBA")
        canvas = Image.new("RGBA", rgb.size, (255, 255, 255, 255))
        arr = np.asarray(Image.alpha_composite(canvas, rgb).convert("RGB").resize((w, h), Image.BOX))
    else:
        arr = (np.clip(_resize(to_gray(im), (w, h)), 0, 1) * 255).round().astype(np.uint8)
    return Prepared(np.ascontiguousarray(arr), "plain", im.size)
