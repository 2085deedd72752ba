"""Write ``prepared_reference.npz``: a fixed set of pictures and the 28×28 inputs the photo pipeline made
of them at commit 9e1480c (the hand-written NumPy pipeline, before issue 19), so tests can check that a
faster pipeline still gives the same inputs within a small tolerance.

Run once, from the repository root, on that commit's ``mnistlab/preprocess.py``::

    python tests/data/make_prepared_reference.py

The file holds ``names`` (str), and per picture ``i``: ``picture_i`` (the encoded file's bytes as uint8),
``input_i`` (uint8 28×28), ``inverted_i``, ``thickened_i`` and ``bbox_i``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from mnistlab.datasets import mnist
from mnistlab.photolike import draw_digit, render_photo
from mnistlab.preprocess import prepare_image

OUT = Path(__file__).with_name("prepared_reference.npz")


def _png(a: np.ndarray | Image.Image) -> bytes:
    buf = io.BytesIO()
    (a if isinstance(a, Image.Image) else Image.fromarray(a)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _jpeg(im: Image.Image, quality: int = 80) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def pictures() -> list[tuple[str, bytes]]:
    (_, _), (x, y) = mnist.load_data()
    rng = np.random.default_rng(19)
    out = []
    for i in range(8):  # photo-like JPEGs, 240-640 px
        out.append((f"photo-{y[100 + i]}-{i}.jpg", render_photo(x[100 + i], rng, quality=int(rng.integers(35, 71)))))
    for i in range(3):  # larger phone-like photos: 500-800 px a side
        small = Image.open(io.BytesIO(render_photo(x[200 + i], rng)))
        side = int(rng.integers(500, 801))
        big = small.resize((side, round(side * small.height / small.width)), Image.BICUBIC)
        out.append((f"photo-large-{y[200 + i]}-{i}.jpg", _jpeg(big, 75)))
    for d, w, box in ((3, 4, (0.2, 0.12, 0.8, 0.88)), (7, 18, (0.2, 0.12, 0.8, 0.88)),
                      (2, 30, (0.2, 0.12, 0.8, 0.88)), (5, 3, (0.05, 0.05, 0.4, 0.45))):  # fmt: skip
        out.append((f"canvas-{d}-w{w}.png", _png(draw_digit(d, size=280, width=w, box=box).convert("RGBA"))))
    out.append((f"mnist-{y[0]}.png", _png(x[0])))
    out.append((f"mnist-inverted-{y[1]}.png", _png(255 - x[1])))
    # A small "5" near a corner of a page lit from one side, with dust elsewhere.
    h, w = 450, 600
    yy, xx = np.mgrid[0:h, 0:w]
    page = 0.45 + 0.45 * xx / w
    ink = np.asarray(draw_digit(5, size=60, width=5, box=(0.1, 0.05, 0.9, 0.95)), np.float32) / 255
    page[350:410, 470:530] *= ink
    for cy, cx in ((40, 40), (300, 100), (60, 500)):
        page[(yy - cy) ** 2 + (xx - cx) ** 2 <= 4] *= 0.4
    out.append(("uneven-page-5.png", _png((page * 255).astype(np.uint8))))
    return out


def main() -> None:
    arrays: dict[str, np.ndarray] = {}
    names = []
    for i, (name, data) in enumerate(pictures()):
        p = prepare_image(data, name=name)
        names.append(name)
        arrays[f"picture_{i}"] = np.frombuffer(data, np.uint8)
        arrays[f"input_{i}"] = p.image
        arrays[f"inverted_{i}"] = np.array(p.inverted)
        arrays[f"thickened_{i}"] = np.array(p.thickened)
        arrays[f"bbox_{i}"] = np.array(p.bbox)
    np.savez_compressed(OUT, names=np.array(names), **arrays)
    print(f"{OUT}: {len(names)} pictures, {OUT.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
