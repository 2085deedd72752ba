"""The one safe image decoder (mnistlab.imaging), the NumPy runner's copy of it, and what it refuses."""

from __future__ import annotations

import io
import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnistlab import imaging
from mnistlab.cli import main
from mnistlab.datasets.decoding import DEFAULT_MAX_PIXELS
from mnistlab.errors import ImageError
from mnistlab.export import numpy_infer
from mnistlab.preprocess import read_image


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims to be ``width`` x ``height``: a decompression bomb's header, no pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def ring(h: int = 40, w: int = 30) -> np.ndarray:
    """A dark ring on light paper: not symmetric under rotation (w != h), so orientation shows."""
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot((yy - h / 2) / h, (xx - w / 2) / w)
    return np.where((r > 0.25) & (r < 0.4), 20, 230).astype(np.uint8)


@pytest.fixture(scope="module")
def tricky(tmp_path_factory) -> dict[str, Path]:
    """One file per rule of the decoder."""
    d = tmp_path_factory.mktemp("tricky")
    g = ring()
    files = {}

    def save(name: str, im: Image.Image, **kw) -> None:
        im.save(d / name, **kw)
        files[name] = d / name

    save("sixteen.png", Image.fromarray(g.astype(np.uint16) * 257))
    pal = Image.fromarray(g).convert("P")
    save("palette_transparent.png", pal, transparency=int(np.asarray(pal)[0, 0]))
    save("la.png", Image.fromarray(np.dstack([g, np.where(g < 100, 255, 0).astype(np.uint8)]), "LA"))
    rgba = np.dstack([g, g // 2, 255 - g, np.where(g < 100, 255, 0)]).astype(np.uint8)
    save("rgba.png", Image.fromarray(rgba, "RGBA"))
    save("cmyk.jpg", Image.fromarray(np.dstack([g, g // 2, 255 - g])).convert("CMYK"), quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    save("exif_rotated.jpg", Image.fromarray(g).transpose(Image.Transpose.ROTATE_90), exif=exif, quality=95)
    save("one_bit.png", Image.fromarray(g < 100))
    save("gray.jpg", Image.fromarray(g), quality=90)
    save("color.jpg", Image.fromarray(np.dstack([g, 255 - g, g // 3])), quality=90)
    big = np.kron(np.array([[30, 220], [220, 30]], np.uint8), np.ones((600, 800), np.uint8))
    save("big.jpg", Image.fromarray(big), quality=90)
    (d / "bomb.png").write_bytes(png_header_only(30000, 30000))
    files["bomb.png"] = d / "bomb.png"
    return files


# -- the rules --------------------------------------------------------------------------------------


def test_the_rules(tricky) -> None:
    g = ring()
    sixteen = imaging.decode(tricky["sixteen.png"])
    np.testing.assert_array_equal(sixteen, g)  # 0..65535 scaled back to 0..255, not clipped to white
    for name in ("palette_transparent.png", "la.png", "rgba.png"):
        a = imaging.decode(tricky[name])
        assert a.shape == g.shape and a[0, 0] == 255, name  # transparent parts are white paper
    cmyk = imaging.decode(tricky["cmyk.jpg"], "rgb")
    assert cmyk.shape == (*g.shape, 3) and np.abs(cmyk[..., 0].astype(int) - g).mean() < 8
    upright = imaging.decode(tricky["exif_rotated.jpg"])
    assert upright.shape == g.shape and np.abs(upright.astype(int) - g).mean() < 4
    assert set(np.unique(imaging.decode(tricky["one_bit.png"]))) == {0, 255}
    # A big JPEG is decoded at the smallest scale still at least the size asked for, and says so.
    im = imaging.open_image(tricky["big.jpg"], size=(300, 200))
    assert im.size == (400, 300) and im.info[imaging.FULL_SIZE] == (1600, 1200)
    assert imaging.open_image(tricky["big.jpg"]).size == (1600, 1200)
    assert imaging.to_gray(Image.new("LA", (2, 2), (0, 0))).tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_one_limit_everywhere(tricky, tmp_path) -> None:
    assert DEFAULT_MAX_PIXELS == imaging.MAX_PIXELS == numpy_infer.MAX_PIXELS
    # Just over the limit, 100 bytes on disk: refused from the header, before decoding, by every reader.
    (tmp_path / "small_bomb.png").write_bytes(png_header_only(6400, 6400))
    for path in (tmp_path / "small_bomb.png", tricky["bomb.png"]):
        said = set()
        for read in (imaging.decode, read_image, lambda p: numpy_infer.load_image(p, (1, 28, 28))):
            with pytest.raises(ImageError) as info:
                read(path)
            said.add(str(info.value))
        assert len(said) == 1 and said.pop().startswith(f"{path}: image too large: ")
    with pytest.raises(ImageError) as info:
        imaging.decode(tmp_path / "small_bomb.png")
    assert str(info.value).endswith(
        "6400×6400 pixels (41.0 megapixels; the limit is 40.0, against decompression bombs)"
    )
    assert imaging.decode(_png(np.zeros((10, 20), np.uint8))).shape == (10, 20)


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("color", ["gray", "rgb"])
def test_numpy_runner_copy_equals_the_decoder(tricky, color) -> None:
    for name, path in tricky.items():
        for size in (None, (28, 28), (300, 200)):
            try:
                ours = imaging.decode(path, color, size=size)
            except ImageError as e:
                with pytest.raises(numpy_infer.ImageFileError) as info:
                    numpy_infer.decode_image(path, color, size)
                assert str(info.value) == str(e), name
                continue
            np.testing.assert_array_equal(numpy_infer.decode_image(path, color, size), ours, err_msg=f"{name} {size}")


def test_jpeg_fast_path_equals_the_general_path(tricky) -> None:
    for name in ("gray.jpg", "color.jpg"):
        data = tricky[name].read_bytes()
        for color in ("gray", "rgb"):
            fast = imaging._jpeg_fast(data, color, (30, 40))
            assert fast is not None
            np.testing.assert_array_equal(fast, np.asarray(imaging.flatten(imaging.open_image(data), color)))


# -- what is refused --------------------------------------------------------------------------------


def test_only_regular_files_are_read(tmp_path, tricky) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    link = tmp_path / "link.png"
    link.symlink_to(tricky["gray.jpg"])
    (tmp_path / "empty.png").write_bytes(b"")
    cases = {
        "/dev/zero": "/dev/zero: not a regular file (a device); only image files are read",
        str(fifo): f"{fifo}: not a regular file (a FIFO); only image files are read",
        str(tmp_path): f"{tmp_path}: is a folder, not an image",
        str(tmp_path / "nope.png"): f"{tmp_path / 'nope.png'}: no such file",
        str(tmp_path / "empty.png"): f"{tmp_path / 'empty.png'}: empty file (0 bytes)",
    }
    for path, message in cases.items():
        for read in (imaging.read_file, read_image, numpy_infer.read_image_file):
            with pytest.raises(ImageError) as info:
                read(path)
            assert str(info.value) == message
    assert imaging.decode(link).shape == (40, 30)  # followed by default: the user named it
    with pytest.raises(ImageError, match="link.png: is a symbolic link, not followed here"):
        imaging.read_file(link, follow_symlinks=False)


def test_predict_refuses_dev_zero_and_a_fifo_in_one_line(small_run, tmp_path, capsys) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    done = []
    # Run in a thread: before the fix a FIFO blocked for ever, and /dev/zero read until memory ran out.
    worker = threading.Thread(target=lambda: done.append(main(["predict", str(small_run), "/dev/zero"])), daemon=True)
    worker.start()
    worker.join(60)
    assert done == [2]
    err = capsys.readouterr().err
    assert err == "mnistlab: error: /dev/zero: not a regular file (a device); only image files are read\n"
    worker = threading.Thread(target=lambda: done.append(main(["predict", str(small_run), str(fifo)])), daemon=True)
    worker.start()
    worker.join(60)
    assert done == [2, 2]
    err = capsys.readouterr().err
    assert err == f"mnistlab: error: {fifo}: not a regular file (a FIFO); only image files are read\n"
