"""The preprocessing of real pictures: reading them safely, and making them look like the data set's images."""

from __future__ import annotations

import io
import struct
import time
import zlib
from collections import deque

import cv2
import numpy as np
import pytest
from PIL import Image

from mnistlab.datasets import load, mnist
from mnistlab.errors import EmptyImageError, ImageError
from mnistlab.export import numpy_infer
from mnistlab.export.numpy_infer import label_runs
from mnistlab.imaging import MAX_PIXELS
from mnistlab.photolike import draw_digit, render_photo
from mnistlab.preprocess import (
    FLAT_SIDE,
    kind_for,
    prepare_files,
    prepare_image,
    read_image,
    to_gray,
)
from mnistlab.tensors import images_to_tensor
from tests.helpers import ROOT, shared_dataset

REFERENCE = ROOT / "tests" / "data" / "prepared_reference.npz"


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def centre_of_mass(img: np.ndarray) -> tuple[float, float]:
    a = img.astype(np.float64)
    return float((a.sum(1) * np.arange(28)).sum() / a.sum()), float((a.sum(0) * np.arange(28)).sum() / a.sum())


def ink_box(img: np.ndarray, level: int = 0) -> tuple[int, int]:
    rows, cols = np.nonzero((img > level).any(1))[0], np.nonzero((img > level).any(0))[0]
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


@pytest.fixture(scope="module")
def mnist_test() -> tuple[np.ndarray, np.ndarray]:
    return mnist.load_data()[1]


# -- reading ----------------------------------------------------------------------------------------


def test_images_to_tensor_scales_and_orders() -> None:
    t = images_to_tensor(np.full((2, 28, 28), 255, np.uint8))
    assert t.shape == (2, 1, 28, 28) and float(t.max()) == 1.0


def test_read_image_names_the_file_in_every_error(tmp_path) -> None:
    with pytest.raises(ImageError, match=r"nope\.png: no such file"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="is a folder"):
        read_image(tmp_path)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.png: empty file"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "notes.png").write_text("not a picture at all")
    with pytest.raises(ImageError, match=r"notes\.png: not an image"):
        read_image(tmp_path / "notes.png")
    whole = png(draw_digit(3))
    (tmp_path / "cut.png").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ImageError, match=r"cut\.png: unreadable image"):
        read_image(tmp_path / "cut.png")
    with pytest.raises(ImageError, match="expected an array"):
        read_image(np.zeros((2, 3, 4, 5)))


def _png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size: the shape of a decompression bomb."""
    data = png(Image.new("L", (1, 1)))
    ihdr = struct.pack(">II", width, height) + data[24:29]
    chunk = b"IHDR" + ihdr
    return data[:12] + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]


@pytest.mark.parametrize("side", [8000, 50000])
def test_decompression_bombs_are_refused_before_decoding(side: int) -> None:
    bomb = _png_header_claiming(side, side)
    assert len(bomb) < 100
    with pytest.raises(ImageError, match="too large"):
        read_image(bomb, "bomb.png")


def test_a_real_compressed_bomb_is_refused() -> None:
    # 49 megapixels of white compress to a few tens of KB.
    data = png(Image.new("1", (7000, 7000), 1))
    assert len(data) < 200_000 and 7000 * 7000 > MAX_PIXELS
    with pytest.raises(ImageError, match="7000×7000"):
        prepare_image(data)


def test_transparency_is_flattened_onto_white() -> None:
    drawn = np.asarray(draw_digit(4, width=14))
    # The same digit as black ink with alpha on a fully transparent (and black) background.
    rgba = np.zeros((*drawn.shape, 4), np.uint8)
    rgba[..., 3] = 255 - drawn
    on_white = prepare_image(png(Image.fromarray(drawn))).image
    for im in (Image.fromarray(rgba, "RGBA"), Image.fromarray(rgba, "RGBA").convert("LA")):
        assert np.abs(prepare_image(png(im)).image.astype(int) - on_white).max() <= 2
    assert to_gray(Image.fromarray(rgba, "RGBA"))[0, 0] == 1.0  # transparent → white paper


def test_sixteen_bit_and_palette_pictures() -> None:
    drawn = np.asarray(draw_digit(2, width=14))
    ref = prepare_image(drawn).image
    sixteen = Image.fromarray(drawn.astype(np.uint16) * 257)
    assert sixteen.mode.startswith("I;16")
    assert corr(prepare_image(png(sixteen)).image, ref) > 0.98
    palette = Image.fromarray(drawn).convert("P")
    assert corr(prepare_image(png(palette)).image, ref) > 0.98


def test_exif_orientation_is_applied() -> None:
    upright = draw_digit(7, width=14).convert("RGB")
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # how a phone held sideways stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    buf = io.BytesIO()
    stored.save(buf, format="JPEG", exif=exif, quality=95)
    assert read_image(buf.getvalue()).size == upright.size
    assert corr(prepare_image(buf.getvalue()).image, prepare_image(upright).image) > 0.95


# -- digits -----------------------------------------------------------------------------------------


def test_digit_fits_20x20_keeps_aspect_and_is_centred_by_mass() -> None:
    bar = np.pad(np.full((60, 12), 20, np.uint8), 70, constant_values=230)  # a dark "1", 5:1
    p = prepare_image(bar)
    assert p.image.shape == (28, 28) and p.image.dtype == np.uint8
    assert p.inverted
    # The box may take in one pixel of the smoothed edge on each side.
    assert all(abs(a - b) <= 1 for a, b in zip(p.bbox, (70, 70, 82, 130), strict=True)), p.bbox
    h, w = ink_box(p.image)
    assert h == 20 and w in (4, 5)  # 12 of 62 pixels wide, plus a smoothed rim
    cy, cx = centre_of_mass(p.image)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


def test_mnist_images_come_back_as_they_were(mnist_test) -> None:
    # An MNIST digit is already in MNIST's format: preparing it again must change little.
    x, _ = mnist_test
    scores = np.array([corr(prepare_image(x[i]).image, x[i]) for i in range(60)])
    # Thin digits ("1") lose most from a one-pixel shift of the centre of mass; the rest match closely.
    assert np.median(scores) > 0.93 and np.mean(scores > 0.85) > 0.85 and scores.min() > 0.5


def test_polarity_is_detected_both_ways(mnist_test) -> None:
    x, _ = mnist_test
    light_on_dark = prepare_image(x[0])
    dark_on_light = prepare_image(255 - x[0])
    assert not light_on_dark.inverted and dark_on_light.inverted
    assert corr(light_on_dark.image, dark_on_light.image) > 0.97


def test_small_off_centre_digit_on_uneven_paper_is_found() -> None:
    # A 60-pixel "5" near a corner of a 600×450 page lit from one side, with dust elsewhere.
    h, w = 450, 600
    yy, xx = np.mgrid[0:h, 0:w]
    paper = 0.45 + 0.45 * xx / w  # dark on the left, bright on the right
    ink = np.asarray(draw_digit(5, size=60, width=5, box=(0.1, 0.05, 0.9, 0.95)), np.float32) / 255
    page = paper.copy()
    page[350:410, 470:530] *= ink
    for cy, cx in ((40, 40), (300, 100), (60, 500)):
        page[(yy - cy) ** 2 + (xx - cx) ** 2 <= 4] *= 0.4
    p = prepare_image((page * 255).astype(np.uint8))
    rows, cols = np.nonzero((ink < 0.9).any(1))[0] + 350, np.nonzero((ink < 0.9).any(0))[0] + 470
    truth = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    # Within the smoothed rim: two pixels of the 384-pixel working copy are three of the page.
    assert all(abs(a - b) <= 3 for a, b in zip(p.bbox, truth, strict=True)), (p.bbox, truth)
    assert ink_box(p.image, 30)[0] >= 18


@pytest.mark.parametrize(
    "picture",
    [
        np.full((280, 280), 255, np.uint8),  # an empty canvas
        np.full((300, 200), 128, np.uint8),  # grey card
        np.zeros((28, 28), np.uint8),  # an empty MNIST-style image
    ],
)
def test_blank_pictures_say_no_digit_found(picture: np.ndarray) -> None:
    with pytest.raises(EmptyImageError, match="no digit found"):
        prepare_image(picture)
    assert prepare_image(picture, allow_empty=True).empty


def test_photos_of_blank_paper_say_no_digit_found() -> None:
    # Real-looking blank paper: uneven light, shadow, texture, noise, dust, JPEG. None may become a digit.
    rng = np.random.default_rng(5)
    for _ in range(15):
        photo = render_photo(np.zeros((28, 28), np.uint8), rng)
        with pytest.raises(EmptyImageError, match="no digit found"):
            prepare_image(photo)


def test_a_speck_is_not_a_digit() -> None:
    canvas = np.full((400, 400), 255, np.uint8)
    canvas[200:204, 200:204] = 0
    with pytest.raises(EmptyImageError, match="speck"):
        prepare_image(canvas)


def test_thin_strokes_are_thickened_only_when_thin() -> None:
    thin = prepare_image(draw_digit(4, size=400, width=2))
    thick = prepare_image(draw_digit(4, size=280, width=18))
    assert thin.thickened and not thick.thickened
    # After thickening the ink covers about as much of the box as MNIST's strokes do (≈19% of 28×28).
    assert 0.08 < (thin.image > 127).mean() < 0.3
    assert not prepare_image(draw_digit(4, size=400, width=2), thicken=False).thickened
    assert prepare_image(draw_digit(4, size=280, width=18), thicken=True).thickened


def test_large_photo_is_fast_enough() -> None:
    rng = np.random.default_rng(0)
    big = Image.open(io.BytesIO(render_photo(mnist.load_data()[1][0][0], rng))).resize((3000, 2200))
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=85)
    t0 = time.perf_counter()
    p = prepare_image(buf.getvalue())
    assert time.perf_counter() - t0 < 3.0  # generous: CPUs here are shared
    assert p.source_size == (3000, 2200)


def test_a_canvas_gives_the_same_input_however_it_is_stored_and_shrunk() -> None:
    # A web page's canvas is an opaque RGBA PNG: its gray comes from a copy of its pixels and OpenCV's luma,
    # its flat border is measured once at full size and the picture shrunk to FLAT_SIDE. The same drawing
    # stored as gray, as colour, or already shrunk (the general path, its border measured after) gives the
    # same input; a translucent pixel sends it through the decoder's flattening onto white.
    rng = np.random.default_rng(3)
    for d in (0, 4, 7):
        gray = np.asarray(draw_digit(d, size=280, width=18, rng=rng).convert("L"))
        canvas = prepare_image(png(Image.fromarray(gray).convert("RGBA")))
        assert canvas.inverted and canvas.bbox is not None  # dark ink on white
        assert np.array_equal(canvas.image, prepare_image(png(Image.fromarray(gray))).image)
        shrunk = prepare_image(cv2.resize(gray, (FLAT_SIDE, FLAT_SIDE), interpolation=cv2.INTER_LINEAR))
        assert np.array_equal(canvas.image, shrunk.image), d
        tinted = np.stack([gray // 2, gray, 255 - (255 - gray) // 3], axis=-1)  # coloured pen and paper
        as_rgb = prepare_image(png(Image.fromarray(tinted))).image.astype(int)
        assert np.abs(prepare_image(png(Image.fromarray(tinted).convert("RGBA"))).image - as_rgb).max() <= 1
        rgba = np.dstack([tinted, np.full(gray.shape, 255, np.uint8)])
        rgba[0, 0, 3] = 0  # one transparent pixel: white paper there
        flattened = tinted.copy()
        flattened[0, 0] = 255
        assert np.array_equal(
            prepare_image(png(Image.fromarray(rgba, "RGBA"))).image,
            prepare_image(png(Image.fromarray(flattened))).image,
        )
    # A canvas three times FLAT_SIDE is box-averaged by three (Pillow's reduce), not sampled.
    big = draw_digit(3, size=3 * FLAT_SIDE, width=30, rng=rng).convert("L")
    assert np.array_equal(prepare_image(png(big.convert("RGBA"))).image, prepare_image(big.reduce(3)).image)


def test_threads_prepare_as_one_thread_does(tmp_path) -> None:
    # The working copies are arrays each thread reuses: pictures of different kinds and sizes prepared in
    # threads give what one thread gives, and an input stays as it was after the next picture is prepared.
    rng = np.random.default_rng(5)
    (_, _), (x, _) = mnist.load_data()
    paths = []
    for i in range(12):
        path = tmp_path / f"p{i}.{'jpg' if i % 3 else 'png'}"
        if i % 3:  # photos of 240-800 px: decoded whole, at half size, or shrunk
            path.write_bytes(render_photo(x[i], rng, sides=(240, 800)))
        else:
            Image.fromarray(np.asarray(draw_digit(i % 10, size=280, width=18, rng=rng).convert("RGBA"))).save(path)
        paths.append(str(path))
    alone = [prepare_image(p) for p in paths]
    first = alone[0].image.copy()
    prepare_image(paths[1])
    assert np.array_equal(alone[0].image, first)
    threaded = list(prepare_files(paths, paths, {}, workers=4, processes=False))
    for a, b in zip(alone, threaded, strict=True):
        assert np.array_equal(a.image, b.image) and a.bbox == b.bbox


def test_a_jpeg_decoded_into_the_reused_page_prepares_as_a_fresh_decode() -> None:
    # prepare_image decodes a JPEG's luma straight into memory its thread reuses (no copy afterwards);
    # the input must be what a picture decoded on its own gives, for photos decoded whole and at half size.
    from mnistlab import preprocess

    rng = np.random.default_rng(11)
    (_, _), (x, _) = mnist.load_data()
    for i, sides in enumerate(((240, 500), (520, 760), (770, 800), (1600, 2000))):
        jpeg = render_photo(x[i], rng, sides=sides)
        direct = prepare_image(jpeg)
        fresh = prepare_image(preprocess.read_image(jpeg, gray=True))  # a picture of its own: copied once
        assert np.array_equal(direct.image, fresh.image) and direct.bbox == fresh.bbox, sides
        assert direct.source_size == Image.open(io.BytesIO(jpeg)).size
    assert preprocess._SHARES.get("decoded") is True  # the decoder wrote the page: the fast path ran


def reference_pictures() -> list[tuple[str, bytes, dict]]:
    """The fixed pictures of ``tests/data/prepared_reference.npz`` (photos, canvas drawings, scans) and
    what the NumPy pipeline before issue 19 (commit 9e1480c) made of them."""
    with np.load(REFERENCE, allow_pickle=False) as z:
        return [
            (
                str(name),
                z[f"picture_{i}"].tobytes(),
                {k: z[f"{k}_{i}"] for k in ("input", "inverted", "thickened", "bbox")},
            )  # fmt: skip
            for i, name in enumerate(z["names"])
        ]


def shifted_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |a - b| (0..255) at the best alignment within one pixel: the centre of mass is rounded to a
    whole pixel, so a mass a hair either side of .5 moves the whole digit by one."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return min(float(np.abs(np.roll(a, (dy, dx), (0, 1)) - b).mean()) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


# Measured on these 18 pictures: the OpenCV pipeline is within 4.4 of the NumPy one (median 1.1; the worst
# a photo of a thin "1", the rest within 2.6), and so is the NumPy runner. The same ink polarity and
# thickening on all.
TOLERANCE = 6.0


def test_prepared_inputs_equal_the_numpy_pipeline_within_a_small_tolerance() -> None:
    worst = []
    for name, data, ref in reference_pictures():
        p = prepare_image(data, name=name)
        assert (p.inverted, p.thickened) == (bool(ref["inverted"]), bool(ref["thickened"])), name
        # The box: within the smoothed rim, in the file's pixels (two working pixels of a large photo).
        assert all(abs(a - b) <= 4 for a, b in zip(p.bbox, ref["bbox"].tolist(), strict=True)), (name, p.bbox)
        worst.append((shifted_difference(p.image, ref["input"]), name))
    assert max(worst)[0] <= TOLERANCE, sorted(worst)[-3:]
    assert np.median([w for w, _ in worst]) <= 2.0, sorted(worst)


def test_numpy_runner_prepares_pictures_as_predict_does(tmp_path) -> None:
    # The copy-anywhere runner carries the recipe in NumPy and Pillow alone: it must give the model the
    # same 28×28 inputs as mnistlab's own pipeline, read from the same files.
    for name, data, _ in reference_pictures():
        path = tmp_path / name
        path.write_bytes(data)
        ours = numpy_infer.prepare_file(path, (1, 28, 28), "digit")
        assert ours.dtype == np.uint8 and ours.shape == (28, 28)
        assert shifted_difference(ours, prepare_image(path).image) <= TOLERANCE, name
    blank = tmp_path / "blank.png"
    Image.new("L", (200, 150), 255).save(blank)
    with pytest.raises(numpy_infer.NoDigitError, match="no digit found"):
        numpy_infer.prepare_file(blank, (1, 28, 28), "digit")


def test_label_runs_matches_a_flood_fill() -> None:
    rng = np.random.default_rng(1)
    for density in (0.3, 0.5, 0.6):
        mask = rng.random((40, 50)) < density
        labels, n = label_runs(mask)
        # Reference: breadth-first flood fill with 8-connectivity.
        ref = np.zeros(mask.shape, int)
        count = 0
        for y, x in zip(*np.nonzero(mask), strict=True):
            if ref[y, x]:
                continue
            count += 1
            ref[y, x] = count
            queue = deque([(y, x)])
            while queue:
                cy, cx = queue.popleft()
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        ny, nx = cy + dy, cx + dx
                        if 0 <= ny < 40 and 0 <= nx < 50 and mask[ny, nx] and not ref[ny, nx]:
                            ref[ny, nx] = count
                            queue.append((ny, nx))
        assert n == count
        # Same partition: each reference component maps to exactly one label and back.
        pairs = set(zip(ref[mask].tolist(), labels[mask].tolist(), strict=True))
        assert len(pairs) == n == len({a for a, _ in pairs}) == len({b for _, b in pairs})


# -- clothes and others ---------------------------------------------------------------------------


def test_fashion_product_photo_comes_back_like_the_data_set() -> None:
    ds = load("fashion_mnist", path=shared_dataset("fashion-mnist"), progress=False)
    rng = np.random.default_rng(2)
    scores = []
    for i in range(12):
        item = ds.x_test[i]
        # A product shot: dark item on white, enlarged, somewhere on a larger white page.
        big = np.asarray(Image.fromarray(255 - item).resize((280, 280), Image.BICUBIC))
        page = np.full((420, 380), 255, np.uint8)
        y, x = rng.integers(0, 140), rng.integers(0, 100)
        page[y : y + 280, x : x + 280] = big
        p = prepare_image(png(Image.fromarray(page)), kind="fashion")
        assert p.inverted and p.image.shape == (28, 28)
        scores.append(corr(p.image, item))
    assert np.median(scores) > 0.9


def test_fashion_with_transparent_background_and_nothing() -> None:
    rgba = np.zeros((200, 300, 4), np.uint8)
    rgba[50:150, 40:260] = (90, 30, 30, 255)  # a bag-like block on a transparent background
    p = prepare_image(png(Image.fromarray(rgba, "RGBA")), kind="fashion")
    h, w = ink_box(p.image, 20)
    assert w == 28 and 11 <= h <= 14  # longest side fills 28, aspect 100:220 kept
    with pytest.raises(EmptyImageError, match="no object found"):
        prepare_image(np.full((100, 100), 255, np.uint8), kind="fashion")


def test_plain_kind_and_kind_for() -> None:
    p = prepare_image(np.zeros((50, 80, 3), np.uint8), kind="plain", size=(32, 32), channels=3)
    assert p.image.shape == (32, 32, 3)
    assert kind_for("mnist") == "digit" and kind_for({"name": "fashion_mnist"}) == "fashion"
    assert kind_for("/data/my-set", [str(i) for i in range(10)]) == "digit"
    assert kind_for("/data/pets", ["cat", "dog"]) == "plain"
    with pytest.raises(ImageError, match="unknown preprocessing kind"):
        prepare_image(np.zeros((5, 5), np.uint8), kind="photo")
