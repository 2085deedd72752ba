"""Realistic inputs for testing the app: data set digits as phone photos, and digits drawn like a person.

The lesson's app only works on pictures made for it. To measure how a model does on real inputs without
a folder of real photos, :func:`render_photo` prints an MNIST digit large as dark ink on paper and
photographs it badly: uneven light and shadow, paper of any shade and tint, off-centre and small or
large, thin or bold, pencil-grey or pen-black strokes, slight rotation, blur, noise, dust, and JPEG.
:func:`draw_digit` draws a digit with a few mouse-like strokes on a white canvas, like the web page.

>>> from mnistlab.datasets import mnist
>>> (_, _), (x_test, y_test) = mnist.load_data()
>>> photos, labels = photo_set(x_test, y_test, 5, seed=0)
>>> len(photos), photos[0][:2]
(5, b'\\xff\\xd8')
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Digits as a person draws them: strokes of (x, y) points in a unit box, x right, y down. Curved
# strokes are smoothed (Catmull-Rom) when drawn; corners stay sharp where the digit has corners.
# fmt: off
DIGIT_STROKES: dict[int, list[list[tuple[float, float]]]] = {
    0: [[(0.5, 0.08), (0.28, 0.2), (0.2, 0.5), (0.28, 0.8), (0.5, 0.92), (0.72, 0.8), (0.8, 0.5), (0.72, 0.2), (0.5, 0.08)]],
    1: [[(0.56, 0.08), (0.52, 0.5), (0.48, 0.92)]],
    2: [[(0.25, 0.28), (0.36, 0.13), (0.52, 0.08), (0.68, 0.15), (0.72, 0.32), (0.62, 0.5), (0.25, 0.9), (0.8, 0.9)]],
    3: [[(0.25, 0.16), (0.5, 0.08), (0.7, 0.2), (0.66, 0.38), (0.45, 0.48), (0.7, 0.6), (0.72, 0.8), (0.5, 0.92), (0.24, 0.84)]],
    4: [[(0.58, 0.08), (0.22, 0.62), (0.82, 0.62)], [(0.64, 0.3), (0.62, 0.92)]],
    5: [[(0.74, 0.1), (0.34, 0.1), (0.3, 0.46)], [(0.3, 0.46), (0.5, 0.4), (0.7, 0.5), (0.73, 0.72), (0.55, 0.9), (0.26, 0.86)]],
    6: [[(0.66, 0.08), (0.42, 0.28), (0.28, 0.58), (0.32, 0.82), (0.5, 0.92), (0.68, 0.8), (0.68, 0.6), (0.5, 0.5), (0.3, 0.62)]],
    7: [[(0.22, 0.12), (0.8, 0.12), (0.42, 0.92)]],
    8: [[(0.5, 0.5), (0.32, 0.36), (0.36, 0.14), (0.5, 0.08), (0.64, 0.14), (0.68, 0.34), (0.5, 0.5),
         (0.3, 0.68), (0.34, 0.88), (0.5, 0.93), (0.66, 0.88), (0.7, 0.68), (0.5, 0.5)]],
    9: [[(0.7, 0.3), (0.56, 0.1), (0.36, 0.13), (0.28, 0.3), (0.4, 0.46), (0.62, 0.42), (0.7, 0.28), (0.68, 0.6), (0.62, 0.92)]],
}
# fmt: on
_SHARP = {1, 4, 7}  # digits whose strokes are straight segments


def stroke_points(
    digit: int, size: int = 280, box: tuple[float, float, float, float] = (0.2, 0.12, 0.8, 0.88), step: float = 4.0
) -> list[list[tuple[float, float]]]:
    """Strokes of ``digit`` in pixels of a ``size``-square canvas, inside ``box`` (fractions: left, top,
    right, bottom), with points about ``step`` pixels apart: what a mouse reports while drawing.

    >>> len(stroke_points(4))
    2
    """
    x0, y0, x1, y1 = box
    out = []
    for stroke in DIGIT_STROKES[digit]:
        pts = np.array([(x0 + x * (x1 - x0), y0 + y * (y1 - y0)) for x, y in stroke]) * size
        dense = _polyline(pts, step) if digit in _SHARP else _catmull_rom(pts, step)
        out.append([(float(x), float(y)) for x, y in dense])
    return out


def _polyline(pts: np.ndarray, step: float) -> np.ndarray:
    out = [pts[0]]
    for a, b in zip(pts[:-1], pts[1:], strict=True):
        n = max(1, int(np.linalg.norm(b - a) / step))
        out += [a + (b - a) * t for t in np.arange(1, n + 1) / n]
    return np.array(out)


def _catmull_rom(pts: np.ndarray, step: float) -> np.ndarray:
    p = np.vstack([pts[:1], pts, pts[-1:]])
    out = [pts[0]]
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        n = max(1, int(np.linalg.norm(p2 - p1) / step))
        for t in np.arange(1, n + 1) / n:
            t2, t3 = t * t, t * t * t
            out.append(
                0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2 + (3 * p1 - p0 - 3 * p2 + p3) * t3)
            )
    return np.array(out)


def draw_digit(
    digit: int,
    size: int = 280,
    width: float = 18,
    box: tuple[float, float, float, float] = (0.2, 0.12, 0.8, 0.88),
    rng: np.random.Generator | None = None,
) -> Image.Image:
    """``digit`` drawn in black round-capped strokes of ``width`` pixels on a white ``size``-square canvas
    (anti-aliased, like a browser canvas). ``rng`` adds a person's wobble to the points.

    >>> draw_digit(7, width=3).size
    (280, 280)
    """
    ss = 4  # draw 4× larger, then shrink: anti-aliased edges like a canvas
    im = Image.new("L", (size * ss, size * ss), 255)
    d = ImageDraw.Draw(im)
    for stroke in stroke_points(digit, size, box):
        pts = np.array(stroke)
        if rng is not None:
            pts = pts + np.cumsum(rng.normal(0, size * 0.002, pts.shape), axis=0)
        pts = pts * ss
        w = max(1, round(width * ss))
        d.line([tuple(p) for p in pts], fill=0, width=w, joint="curve")
        for p in (pts[0], pts[-1]):
            d.ellipse([p[0] - w / 2, p[1] - w / 2, p[0] + w / 2, p[1] + w / 2], fill=0)
    return im.resize((size, size), Image.BOX)


def render_photo(
    digit: np.ndarray, rng: np.random.Generator, quality: int | None = None, sides: tuple[int, int] = (240, 640)
) -> bytes:
    """A phone photo (JPEG bytes, RGB) of a 28×28 data set digit printed as dark ink on paper, each side
    drawn from ``sides`` (pixels, inclusive).

    >>> photo = render_photo(np.pad(np.full((20, 4), 255, np.uint8), 4), np.random.default_rng(0))
    >>> Image.open(io.BytesIO(photo)).mode
    'RGB'
    """
    W, H = int(rng.integers(sides[0], sides[1] + 1)), int(rng.integers(sides[0], sides[1] + 1))
    paper = _paper(W, H, rng)
    ink = _ink_alpha(digit, W, H, rng)
    pencil = rng.random() < 0.4
    if pencil:
        darkness = rng.uniform(0.3, 0.6)
        # Graphite leaves a grainy line: the paper shows through in places.
        clumps = rng.uniform(0.55, 1.0, (H // 2 + 1, W // 2 + 1)).astype(np.float32)
        grain = np.asarray(Image.fromarray(clumps, "F").resize((W, H), Image.BILINEAR))
        ink = ink * grain
        colour = np.array([1.0, 1.0, 1.0])
    else:
        darkness = rng.uniform(0.75, 0.95)
        colour = np.array([1.0, 1.0, 1.0]) if rng.random() < 0.6 else np.array([1.0, 0.85, 0.55])  # black or blue pen
        colour = colour / colour.max()
    img = paper * (1 - darkness * ink[..., None] * colour)
    img = _dust(img, rng)
    im = Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8), "RGB")
    blur = rng.uniform(0, 0.006) * min(W, H)
    if blur > 0.3:
        im = im.filter(ImageFilter.GaussianBlur(blur))
    arr = np.asarray(im, np.float32) + rng.normal(0, rng.uniform(0, 0.03) * 255, (H, W, 1))
    im = Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), "RGB")
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=int(quality or rng.integers(35, 91)))
    return buf.getvalue()


def _smooth_field(W: int, H: int, rng: np.random.Generator, cells: int) -> np.ndarray:
    grid = rng.normal(0, 1, (cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, "F").resize((W, H), Image.BICUBIC), np.float32)


def _paper(W: int, H: int, rng: np.random.Generator) -> np.ndarray:
    """Paper under uneven light: a shade from dark grey to white, a tint, a lighting gradient across
    the picture, a soft shadow (a hand or the phone), and a faint texture."""
    base = rng.uniform(0.55, 0.95)
    tint = 1 - rng.uniform(0, 0.08, 3)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(theta) * (xx / W - 0.5) + np.sin(theta) * (yy / H - 0.5)) * rng.uniform(0, 0.5)
    cx, cy, sigma = rng.uniform(0, W), rng.uniform(0, H), rng.uniform(0.2, 0.5) * max(W, H)
    shadow = rng.uniform(0, 0.3) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
    texture = 0.015 * _smooth_field(W, H, rng, 24)
    light = np.clip(base * (1 + ramp - shadow + texture), 0.2, 1.0)
    return light[..., None] * tint


def _ink_alpha(digit: np.ndarray, W: int, H: int, rng: np.random.Generator) -> np.ndarray:
    """The digit as ink coverage 0..1, enlarged, thinned or thickened, tilted, and placed off-centre."""
    d = digit.astype(np.float32) / 255.0
    if not d.any():  # a blank page: photos of nothing, to check that nothing is found
        return np.zeros((H, W), np.float32)
    rows, cols = np.nonzero(d.any(1))[0], np.nonzero(d.any(0))[0]
    d = np.pad(d[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], 2)
    height = rng.uniform(0.2, 0.7) * min(W, H)
    s = height / d.shape[0]
    big = Image.fromarray(d, "F").resize((max(1, round(d.shape[1] * s)), max(1, round(d.shape[0] * s))), Image.BICUBIC)
    big = big.rotate(rng.uniform(-6, 6), resample=Image.BICUBIC, expand=True)
    a = np.asarray(big, np.float32)
    # Where the enlarged grey ramp is cut decides the stroke width: a fine pen or a marker.
    t = rng.uniform(0.15, 0.6)
    a = np.clip((a - t) / rng.uniform(0.08, 0.25), 0, 1)
    a = a[: H - 2, : W - 2]
    h, w = a.shape
    y, x = int(rng.integers(1, H - h)), int(rng.integers(1, W - w))
    out = np.zeros((H, W), np.float32)
    out[y : y + h, x : x + w] = a
    return out


def _dust(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A few specks of dirt, sometimes: they must not be taken for ink."""
    if rng.random() > 0.3:
        return img
    H, W = img.shape[:2]
    yy, xx = np.mgrid[0:H, 0:W]
    for _ in range(int(rng.integers(1, 6))):
        cx, cy, r = rng.uniform(0, W), rng.uniform(0, H), rng.uniform(0.8, 2.0)
        img = img * (1 - 0.6 * ((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r))[..., None]
    return img


def photo_set(
    x: np.ndarray, y: np.ndarray, n: int, seed: int = 0, sides: tuple[int, int] = (240, 640)
) -> tuple[list[bytes], np.ndarray]:
    """``n`` photo-like JPEGs of the first ``n`` images of ``x`` (28×28 uint8), and their labels."""
    rng = np.random.default_rng(seed)
    n = min(n, len(x))
    return [render_photo(x[i], rng, sides=sides) for i in range(n)], np.asarray(y[:n]).copy()
