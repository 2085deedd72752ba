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
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from mnistlab import imaging
from mnistlab.errors import EmptyImageError, ImageError
from mnistlab.imaging import FULL_SIZE, ImageSource, to_gray  # to_gray and ImageSource: predict and web use them

# Mean and standard deviation of MNIST training pixels after scaling to 0..1.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

KINDS = ("digit", "fashion", "plain")
# Pictures are analysed at most this large; a phone photo holds far more detail than 28×28 needs.
WORK_SIDE = 384
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


def read_image(src: ImageSource, name: str | None = None) -> Image.Image:
    """Decode a path, encoded bytes, an array or a PIL image into a loaded PIL image, upright (EXIF).

    The one safe decoder, :func:`mnistlab.imaging.open_image`: not-images, truncated files, decompression
    bombs, folders, FIFOs and devices are refused with ``ImageError`` naming ``name`` (or the path); a
    big JPEG is decoded at a scale still larger than the working size (its size in the file is then in
    ``info[FULL_SIZE]``).

    >>> read_image(np.zeros((5, 7), np.uint8)).size
    (7, 5)
    """
    return imaging.open_image(src, name, size=(WORK_SIDE, WORK_SIDE))


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
    im = read_image(src, where)
    if kind == "plain":
        return _prepare_plain(im, size, channels)
    gray = to_gray(im)
    if kind == "fashion":
        prepared = _prepare_fashion(gray)
    else:
        prepared = _prepare_digit(gray, thicken)
    if FULL_SIZE in im.info:  # decoded smaller than stored (JPEG draft): report in the file's pixels
        full = im.info[FULL_SIZE]
        f = full[0] / im.width
        prepared.source_size = tuple(full)
        if prepared.bbox:
            prepared.bbox = tuple(min(round(v * f), full[i % 2]) for i, v in enumerate(prepared.bbox))
    if prepared.empty and not allow_empty:
        what = "digit" if kind == "digit" else "object"
        raise EmptyImageError(f"{where}: no {what} found ({'; '.join(prepared.notes) or 'the picture is blank'})")
    return prepared


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


# -- digits ----------------------------------------------------------------------------------------


def _prepare_digit(gray: np.ndarray, thicken: bool | None) -> Prepared:
    h0, w0 = gray.shape
    notes: list[str] = []
    scale = _work_scale(w0, h0)
    g = _resize(gray, (round(w0 * scale), round(h0 * scale))) if scale != 1 else gray
    inverted = _ink_is_dark(g)
    x = 1.0 - g if inverted else g
    x = np.clip(x - _background(x), 0, None)  # uneven lighting, paper shade and colour go here
    x = _blur3(x)
    soft, keep, reason = _find_ink(x)
    empty = Prepared(np.zeros((SIDE, SIDE), np.uint8), "digit", (w0, h0), inverted, empty=True, notes=[reason])
    if keep is None:
        return empty
    soft = soft * _dilate(keep)  # keep the anti-aliased rim of the strokes, drop the specks
    rows, cols = np.nonzero(soft.any(1))[0], np.nonzero(soft.any(0))[0]
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    big = max(bottom - top, right - left)
    if big < max(4, 0.03 * max(soft.shape)):
        empty.notes = [f"only a speck of ink ({right - left}×{bottom - top} pixels)"]
        return empty
    crop = soft[top:bottom, left:right]
    did_thicken = False
    width = _stroke_width(keep[top:bottom, left:right]) / big
    if thicken or (thicken is None and width < THIN_STROKE):
        crop, did_thicken = _thicken(crop, width), True
        notes.append(f"thickened strokes (width {width:.3f} of the digit's size)")
    image = _fit_and_centre(crop)
    bbox = (int(left / scale), int(top / scale), min(w0, round(right / scale)), min(h0, round(bottom / scale)))
    return Prepared(image, "digit", (w0, h0), inverted, bbox, did_thicken, notes=notes)


def _work_scale(w: int, h: int) -> float:
    side = max(w, h)
    if side > WORK_SIDE:
        return WORK_SIDE / side
    if side < 128:
        # Tiny inputs (an MNIST-sized image) are enlarged so the lighting grid and filters have room.
        return float(-(-128 // side))
    return 1.0


def _resize(a: np.ndarray, size: tuple[int, int], resample: int | None = None) -> np.ndarray:
    w, h = max(1, size[0]), max(1, size[1])
    if resample is None:
        # Area averaging when shrinking (anti-aliasing, like MNIST's), smooth interpolation when enlarging.
        resample = Image.BOX if w <= a.shape[1] and h <= a.shape[0] else Image.BICUBIC
    return np.asarray(Image.fromarray(a.astype(np.float32), "F").resize((w, h), resample), dtype=np.float32)


def _ink_is_dark(g: np.ndarray) -> bool:
    """True for dark ink on light paper. The ink is the minority: measured against the local median
    (over a third of the picture, where even a bold digit covers less than half), whichever tail of
    the pixel values stands out further is the ink, whatever the paper's shade or lighting."""
    local = _thumb_filter(g, 0.15, "median")
    resid = (g - local)[::2, ::2]  # every other pixel: the same statistics, a quarter of the work
    sigma = 1.4826 * float(np.median(np.abs(resid))) + 1e-3
    dark = float(np.clip(-resid - 3 * sigma, 0, None).sum())
    bright = float(np.clip(resid - 3 * sigma, 0, None).sum())
    if abs(dark - bright) <= 0.2 * max(dark, bright):  # undecided: the border is usually paper
        border = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
        return bool(np.median(border) >= np.median(g))
    return dark > bright


def _thumb_filter(x: np.ndarray, radius: float, how: str) -> np.ndarray:
    """A rank filter with a window of ``radius`` × the picture's longest side, run on a thumbnail (so
    it costs the same for any picture), smoothed and enlarged back to ``x``'s size. ``how`` is
    ``median`` or ``opening`` (min then max filter: removes bright things narrower than the window
    and keeps broad ones)."""
    h, w = x.shape
    side = 32 if how == "median" else 64  # a 2-D median costs k² per pixel; min and max only 2k
    s = side / max(h, w)
    small = _resize(x, (max(1, round(w * s)), max(1, round(h * s))))
    m = round(radius * side)
    k, pad = 2 * m + 1, m if how == "median" else 2 * m  # an opening is two filters: twice the margin
    # Continue the picture past its edges as a mirrored slope: with plain edge copies, light that
    # brightens towards an edge would be under-estimated there and leave a band that looks like ink.
    if min(small.shape) > pad:
        padded = np.pad(small, pad, mode="reflect", reflect_type="odd")
    else:
        padded = np.pad(small, pad, mode="edge")
    win = np.lib.stride_tricks.sliding_window_view
    if how == "median":
        out = np.median(win(padded, (k, k)), axis=(-2, -1))
    else:
        eroded = win(win(padded, k, axis=0).min(-1), k, axis=1).min(-1)
        out = win(win(eroded, k, axis=0).max(-1), k, axis=1).max(-1)
    return _upsample(_blur3(_blur3(out.astype(np.float32))), x.shape)


def _background(x: np.ndarray) -> np.ndarray | float:
    """The (dark) background under bright ink.

    A picture whose border is evenly lit (a canvas, a scan, an MNIST image) has a flat background:
    its level, taken from the border. Otherwise (a photo) a smooth estimate: a grey opening with a
    window wider than a stroke (a fifth of the picture) but narrower than the soft shadows and light
    gradients, which it keeps. The opening is not used on flat pictures because a bold digit filling
    the frame has blobs of ink wider than its window, which it would take for background.
    """
    h, w = x.shape
    m = max(2, round(0.04 * min(h, w)))
    border = np.concatenate([x[:m].ravel(), x[-m:].ravel(), x[:, :m].ravel(), x[:, -m:].ravel()])
    lo, hi = np.percentile(border, [5, 90])
    if hi - lo < FLAT_BORDER:
        return float(lo)  # a lower envelope, like the opening: the paper's noise stays above it
    return _thumb_filter(x, 0.1, "opening")


def _upsample(grid: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return _resize(grid, (shape[1], shape[0]), Image.BILINEAR)


def _blur3(x: np.ndarray) -> np.ndarray:
    """3×3 mean: quiets sensor noise and JPEG speckle (a median filter costs 10× more here)."""
    p = np.pad(x, 1, mode="edge")
    rows = p[:-2] + p[1:-1] + p[2:]
    return (rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]) / 9.0


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    top = float(values.max()) + 1e-6
    idx = np.minimum((values.ravel() * (bins / top)).astype(np.int32), bins - 1)
    hist = np.bincount(idx, minlength=bins).astype(np.float64)  # np.histogram is several times slower
    edges = np.linspace(0.0, top, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def label_runs(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected component labels (0 = background, 1..n) of a boolean image, without SciPy.

    Works on horizontal runs of pixels, so the Python loop is over a few runs per row, not pixels.

    >>> label_runs(np.array([[1, 0, 1], [0, 0, 1]], bool))[1]
    2
    """
    h, w = mask.shape
    padded = np.zeros((h, w + 2), np.int8)
    padded[:, 1:-1] = mask
    d = np.diff(padded, axis=1)
    starts_r, starts_c = np.nonzero(d == 1)
    ends_c = np.nonzero(d == -1)[1]
    parent = list(range(len(starts_r)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    row_first = np.searchsorted(starts_r, np.arange(h + 1))
    for r in range(1, h):
        a0, a1 = row_first[r - 1], row_first[r]  # runs of the row above
        b0, b1 = row_first[r], row_first[r + 1]
        i, j = a0, b0
        while i < a1 and j < b1:
            # Runs [s, e) touch diagonally when they overlap after widening by one pixel.
            if starts_c[i] <= ends_c[j] and starts_c[j] <= ends_c[i]:
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
            if ends_c[i] < ends_c[j]:
                i += 1
            else:
                j += 1
    labels = np.zeros((h, w), np.int32)
    roots: dict[int, int] = {}
    for k in range(len(starts_r)):
        lab = roots.setdefault(find(k), len(roots) + 1)
        labels[starts_r[k], starts_c[k] : ends_c[k]] = lab
    return labels, len(roots)


def _find_ink(x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, str]:
    """The digit's ink as a soft 0..1 map (anti-aliased edges kept) and a mask of the pieces kept.

    A piece counts as ink when it stands out from the paper right around it by far more than the
    paper's noise: shading left over from the lighting makes large blobs that rise slowly out of their
    surroundings, ink rises at once. Kept: the heaviest such piece, others nearly as heavy close by,
    and smaller pieces near it (a stroke broken by the pen); specks and dirt elsewhere go. The mask is
    None (with a reason) when there is nothing.
    """
    sample = x[::2, ::2]  # every other pixel: the same statistics, a quarter of the work
    base = float(np.median(sample))
    sigma = 1.4826 * float(np.median(np.abs(sample - base))) + 1e-4
    if float(x.max()) - base < 0.03:
        return x, None, "the picture is blank"
    t = max(_otsu(x), base + 4 * sigma)
    labels, n = label_runs(x > t)
    if n == 0:
        return x, None, "the picture is blank"
    comp = _component_stats(labels, n, x - base)
    local = np.zeros(n)
    for k in np.argsort(-comp["mass"])[:8]:  # the heaviest candidates are enough
        local[k] = comp["contrast"][k] + base - _ring_level(x, labels, k + 1, comp["bbox"][k])
    strong = local >= STRONG_INK * sigma
    if not strong.any():
        return x, None, f"nothing stands out from the paper (best contrast {local.max() / sigma:.1f}× the noise)"
    main = int(np.argmax(np.where(strong, comp["mass"], -1)))
    top, bottom, left, right = comp["bbox"][main]
    margin = 0.3 * max(bottom - top, right - left)
    near = (comp["bbox"][:, 0] >= top - margin) & (comp["bbox"][:, 1] <= bottom + margin)
    near &= (comp["bbox"][:, 2] >= left - margin) & (comp["bbox"][:, 3] <= right + margin)
    size = max(bottom - top, right - left)
    close = (comp["bbox"][:, 0] >= top - size) & (comp["bbox"][:, 1] <= bottom + size)
    close &= (comp["bbox"][:, 2] >= left - size) & (comp["bbox"][:, 3] <= right + size)
    heavy = close & (comp["mass"] >= 0.25 * comp["mass"][main])
    keep = (comp["contrast"] >= 0.7 * STRONG_INK * sigma) & (
        heavy | (near & (comp["mass"] >= 0.01 * comp["mass"][main]))
    )
    keep[main] = True
    mask = np.concatenate([[False], keep])[labels]
    level = float(np.percentile(x[labels == main + 1], 90))
    lo = min(base + 3 * sigma, 0.5 * t)
    soft = np.clip((x - lo) / max(level - lo, 1e-6), 0, 1).astype(np.float32)
    return soft, mask, ""


def _ring_level(x: np.ndarray, labels: np.ndarray, label: int, bbox: np.ndarray) -> float:
    """Median of ``x`` in a ring 3 to 6 pixels outside one labelled piece: the paper right around it."""
    h, w = x.shape
    top, bottom, left, right = (int(v) for v in bbox)
    rows = slice(max(0, top - 7), min(h, bottom + 8))
    cols = slice(max(0, left - 7), min(w, right + 8))
    piece = labels[rows, cols] == label
    grown = piece
    for _ in range(3):
        grown = _dilate(grown) > 0
    inner = grown
    for _ in range(3):
        grown = _dilate(grown) > 0
    ring = grown & ~inner
    return float(np.median(x[rows, cols][ring])) if ring.any() else float(np.median(x))


def _component_stats(labels: np.ndarray, n: int, x: np.ndarray) -> dict[str, np.ndarray]:
    """Per labelled piece: ``mass`` (sum of ``x``), ``contrast`` (90th percentile of ``x``) and ``bbox``
    (top, bottom, left, right; inclusive), computed in one pass over the pixels, not one per piece."""
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs] - 1
    vals = x[ys, xs]
    mass = np.bincount(lab, weights=vals, minlength=n)
    order = np.lexsort((vals, lab))
    starts = np.searchsorted(lab[order], np.arange(n))
    counts = np.bincount(lab, minlength=n)
    contrast = vals[order][starts + (0.9 * (counts - 1)).astype(int)]
    bbox = np.empty((n, 4), np.int64)
    bbox[:, 0], bbox[:, 2] = ys.max() + 1, xs.max() + 1
    bbox[:, 1], bbox[:, 3] = -1, -1
    np.minimum.at(bbox[:, 0], lab, ys)
    np.maximum.at(bbox[:, 1], lab, ys)
    np.minimum.at(bbox[:, 2], lab, xs)
    np.maximum.at(bbox[:, 3], lab, xs)
    return {"mass": mass, "contrast": contrast, "bbox": bbox}


def _dilate(mask: np.ndarray) -> np.ndarray:
    """Grow a mask by one pixel (8-neighbourhood), as 0/1 floats."""
    p = np.pad(mask, 1)
    rows = p[:-2] | p[1:-1] | p[2:]
    return (rows[:, :-2] | rows[:, 1:-1] | rows[:, 2:]).astype(np.float32)


def _stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width in pixels: twice the area over the boundary (a stroke has two edges)."""
    m = np.pad(mask, 1)
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    boundary = int((mask & ~inner).sum())
    return 2.0 * int(mask.sum()) / max(boundary, 1)


def _thicken(crop: np.ndarray, width: float) -> np.ndarray:
    """Widen strokes to about MNIST's relative width, at a resolution where that is a few pixels."""
    from PIL import ImageFilter

    h, w = crop.shape
    s = min(1.0, 80 / max(h, w))
    small = _resize(crop, (round(w * s), round(h * s))) if s < 1 else crop
    big = max(small.shape)
    r = max(1, round((TARGET_STROKE - width) * big / 2))
    padded = np.pad(small, r)  # the wider strokes must not be cut at the crop's edge
    grown = Image.fromarray(padded.astype(np.float32), "F").filter(ImageFilter.MaxFilter(2 * r + 1))
    return np.asarray(grown, np.float32)


def _fit_and_centre(crop: np.ndarray) -> np.ndarray:
    """MNIST's last steps: fit into 20×20 keeping the aspect ratio, centre of mass to pixel (14, 14)."""
    h, w = crop.shape
    s = BOX / max(h, w)
    small = np.clip(_resize(crop, (max(1, round(w * s)), max(1, round(h * s)))), 0, 1)
    sh, sw = small.shape
    total = float(small.sum()) or 1.0
    cy = float((small.sum(1) * np.arange(sh)).sum()) / total
    cx = float((small.sum(0) * np.arange(sw)).sum()) / total
    oy = int(np.clip(round(SIDE // 2 - cy), 0, SIDE - sh))
    ox = int(np.clip(round(SIDE // 2 - cx), 0, SIDE - sw))
    out = np.zeros((SIDE, SIDE), np.float32)
    out[oy : oy + sh, ox : ox + sw] = small
    return (out * 255).round().astype(np.uint8)


# -- clothes ---------------------------------------------------------------------------------------


def _prepare_fashion(gray: np.ndarray) -> Prepared:
    """Fashion-MNIST's recipe: trim what looks like the corners' colour (5% tolerance), scale the
    longest side to 28, centre, negate; the background then maps to black, as in the data set."""
    h0, w0 = gray.shape
    scale = _work_scale(w0, h0) if max(w0, h0) > WORK_SIDE else 1.0
    g = _resize(gray, (round(w0 * scale), round(h0 * scale))) if scale != 1 else gray
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
