"""Building a data set from your own images: real MNIST digits written as JPG/PNG files by the tests."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnistlab import imaging
from mnistlab.cli import main
from mnistlab.datasets import build as B
from mnistlab.datasets import decoding, load, load_data
from mnistlab.datasets.build import BuildError, ImageOptions, build_dataset, decode_image
from mnistlab.errors import DatasetError, ImageError
from tests.helpers import run_cli

N_TRAIN, N_TEST = 300, 100


@pytest.fixture(scope="module")
def mnist_arrays():
    ds = load("mnist")
    return (
        np.asarray(ds.x_train[:N_TRAIN]),
        np.asarray(ds.y_train[:N_TRAIN]),
        np.asarray(ds.x_test[:N_TEST]),
        np.asarray(ds.y_test[:N_TEST]),
    )


def write_course(root: Path, arrays, ext: str = "png") -> Path:
    """The course layout: ``mnist_train_<ext>_N.txt`` + folder, and the same for test."""
    x_tr, y_tr, x_te, y_te = arrays
    for split, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
        stem = f"mnist_{split}_{ext}_{len(x)}"
        (root / stem).mkdir(parents=True)
        lines = []
        for i in range(len(x)):
            name = f"{i}_{y[i]}.{ext}"
            Image.fromarray(x[i]).save(root / stem / name)
            lines.append(f"{name} {y[i]}\n")
        (root / f"{stem}.txt").write_text("".join(lines))
    return root


@pytest.fixture(scope="module")
def course_png(tmp_path_factory, mnist_arrays) -> Path:
    return write_course(tmp_path_factory.mktemp("course_png"), mnist_arrays, "png")


@pytest.fixture(scope="module")
def course_jpg(tmp_path_factory, mnist_arrays) -> Path:
    return write_course(tmp_path_factory.mktemp("course_jpg"), mnist_arrays, "jpg")


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


# -- good sources ---------------------------------------------------------------------------------


def test_course_layout_png_equals_source_pixels(course_png, mnist_arrays, tmp_path):
    result = build_dataset(course_png, tmp_path / "own", progress=False)
    assert (result.n_train, result.n_test) == (N_TRAIN, N_TEST)
    (x_tr, y_tr), (x_te, y_te) = load_data(tmp_path / "own")
    assert x_tr.dtype == np.uint8 and x_tr.shape == (N_TRAIN, 28, 28)
    np.testing.assert_array_equal(x_tr, mnist_arrays[0])
    np.testing.assert_array_equal(y_tr, mnist_arrays[1])
    np.testing.assert_array_equal(x_te, mnist_arrays[2])
    np.testing.assert_array_equal(y_te, mnist_arrays[3])
    ds = load(tmp_path / "own")
    assert ds.class_names == tuple(str(i) for i in range(10)) and ds.input_shape == (1, 28, 28)
    meta = json.loads((tmp_path / "own" / "dataset.json").read_text())
    assert meta["format"] == "mnistlab-dataset" and meta["counts"] == {"train": N_TRAIN, "test": N_TEST, "skipped": 0}
    assert leftovers(tmp_path) == []


def test_course_layout_jpg_matches_the_course_loop(course_jpg, mnist_arrays, tmp_path):
    build_dataset(course_jpg, tmp_path / "own", progress=False)
    (x_tr, y_tr), _ = load_data(tmp_path / "own")
    # The course's own loop: PIL open, convert L, np.array. Ours must give the very same pixels.
    folder = course_jpg / f"mnist_train_jpg_{N_TRAIN}"
    course = np.array([np.array(Image.open(folder / f"{i}_{y}.jpg").convert("L")) for i, y in enumerate(y_tr)])
    np.testing.assert_array_equal(x_tr, course)
    diff = np.abs(x_tr.astype(int) - mnist_arrays[0])
    assert diff.mean() < 3 and np.mean(diff > 40) < 0.01  # JPEG is lossy, but only a little
    np.testing.assert_array_equal(y_tr, mnist_arrays[1])


def test_list_file_given_directly_with_split(course_png, mnist_arrays, tmp_path):
    result = build_dataset(
        course_png / f"mnist_train_png_{N_TRAIN}.txt", tmp_path / "own", split=0.2, seed=1, progress=False
    )
    (x_tr, y_tr), (x_te, y_te) = load_data(tmp_path / "own")
    assert len(y_tr) + len(y_te) == N_TRAIN and result.n_test == len(y_te)
    counts = np.bincount(mnist_arrays[1], minlength=10)
    got = np.bincount(y_te, minlength=10)
    assert len(y_te) == 60 and np.all(np.abs(got - counts * 0.2) < 1)  # each class in proportion
    # The two parts are disjoint and together the source, order kept.
    both = np.concatenate([x_tr, x_te]).reshape(N_TRAIN, -1)
    assert len({r.tobytes() for r in both}) == len({r.tobytes() for r in mnist_arrays[0].reshape(N_TRAIN, -1)})
    again = build_dataset(
        course_png / f"mnist_train_png_{N_TRAIN}.txt", tmp_path / "b", split=0.2, seed=1, progress=False
    )
    assert again.n_test == result.n_test
    np.testing.assert_array_equal(load_data(tmp_path / "b")[1][0], x_te)


def test_no_test_part_is_an_error(course_png, tmp_path):
    with pytest.raises(DatasetError, match="no test part"):
        build_dataset(course_png / f"mnist_train_png_{N_TRAIN}.txt", tmp_path / "own", progress=False)
    with pytest.raises(DatasetError, match="choose one"):
        build_dataset(course_png, tmp_path / "own", split=0.1, progress=False)


def write_class_folders(root: Path, arrays, names: list[str], n: int = 60) -> None:
    x, y = arrays[0][:n], arrays[1][:n]
    for i in range(n):
        d = root / names[int(y[i])]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i]).save(d / f"img{i:03d}.png")


def test_class_folders_keep_names(mnist_arrays, tmp_path):
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    write_class_folders(tmp_path / "src" / "train", mnist_arrays, names)
    x_te = (mnist_arrays[2][:20], mnist_arrays[3][:20])
    write_class_folders(tmp_path / "src" / "test", (*x_te, None, None), names, 20)
    (tmp_path / "src" / "train" / ".hidden").mkdir()
    (tmp_path / "src" / "train" / "notes").mkdir()  # no images: not a class
    (tmp_path / "src" / "train" / "notes" / "readme.txt").write_text("hi")
    build_dataset(tmp_path / "src", tmp_path / "own", progress=False)
    ds = load(tmp_path / "own")
    assert ds.class_names == tuple(sorted(names))
    # Each image carries its folder's name.
    order = sorted(range(60), key=lambda i: (names[mnist_arrays[1][i]], f"img{i:03d}"))
    np.testing.assert_array_equal(ds.x_train, mnist_arrays[0][order])
    assert [ds.class_names[c] for c in ds.y_train] == [names[mnist_arrays[1][i]] for i in order]
    assert len(ds.y_test) == 20

    # A classes file fixes the label order.
    (tmp_path / "classes.txt").write_text("\ufeff# digits\n" + "\n".join(names) + "\n\n")
    build_dataset(tmp_path / "src", tmp_path / "own2", classes=tmp_path / "classes.txt", progress=False)
    ds2 = load(tmp_path / "own2")
    assert ds2.class_names == tuple(names)
    np.testing.assert_array_equal(ds2.y_train, mnist_arrays[1][order])


def test_numeric_class_folders_sort_by_number(mnist_arrays, tmp_path):
    for k in (2, 10, 1):
        d = tmp_path / "src" / str(k)
        d.mkdir(parents=True)
        Image.fromarray(mnist_arrays[0][k]).save(d / "a.png")
        Image.fromarray(mnist_arrays[0][k + 1]).save(d / "b.png")
    build_dataset(tmp_path / "src", tmp_path / "own", split=0.5, progress=False)
    assert load(tmp_path / "own").class_names == ("1", "2", "10")


def test_csv_source(mnist_arrays, tmp_path):
    (tmp_path / "imgs").mkdir()
    rows = ["path,label"]
    for i in range(40):
        name = f"imgs/digit, no {i}.png"  # a comma and spaces in the name, quoted in the CSV
        Image.fromarray(mnist_arrays[0][i]).save(tmp_path / name)
        rows.append(f'"{name}",{mnist_arrays[1][i]}')
    (tmp_path / "all.csv").write_text("\r\n".join(rows) + "\r\n")
    build_dataset(tmp_path / "all.csv", tmp_path / "own", split=0.25, progress=False)
    (x_tr, y_tr), (x_te, y_te) = load_data(tmp_path / "own")
    assert len(y_tr) + len(y_te) == 40
    assert sorted(np.concatenate([y_tr, y_te]).tolist()) == sorted(mnist_arrays[1][:40].tolist())


def test_list_parsing_is_forgiving(mnist_arrays, tmp_path):
    img = tmp_path / "list"
    img.mkdir()
    names = ["a.png", "with space.png", "tab.png", "crlf.png", "last.png"]
    for i, n in enumerate(names):
        Image.fromarray(mnist_arrays[0][i]).save(img / n)
    y = mnist_arrays[1]
    text = (
        "\ufeff# the course's list, as saved by Notepad\r\n"
        f"a.png {y[0]}\r\n"
        "\r\n"
        f"with space.png   {y[1]}\r\n"
        f"tab.png\t{y[2]}\r\n"
        f"  crlf.png {y[3]}  \r\n"
        f"last.png {y[4]}"  # no newline at the end
    )
    (tmp_path / "list.txt").write_bytes(text.encode("utf-8"))
    build_dataset(tmp_path / "list.txt", tmp_path / "own", split=0.4, progress=False)
    (x_tr, y_tr), (x_te, y_te) = load_data(tmp_path / "own")
    assert len(y_tr) + len(y_te) == 5


def test_image_options(tmp_path):
    src = tmp_path / "src" / "wide"
    src.mkdir(parents=True)
    # A white bar on black, twice as wide as high, and an RGB photo-like image.
    bar = np.zeros((20, 40), np.uint8)
    bar[5:15, 5:35] = 255
    Image.fromarray(bar).save(src / "bar.png")
    Image.fromarray(np.dstack([bar, bar // 2, 255 - bar])).save(src / "rgb.png")
    gray = decode_image(src / "bar.png")
    assert gray.shape == (28, 28) and gray.dtype == np.uint8
    padded = decode_image(src / "bar.png", ImageOptions(fit="pad"))
    assert padded[:7].max() == 0 and padded[-7:].max() == 0 and padded[12:16, 6:22].min() > 200  # aspect kept, padded
    assert decode_image(src / "bar.png", ImageOptions(size=(32, 16))).shape == (16, 32)
    inv = decode_image(src / "bar.png", ImageOptions(invert=True))
    np.testing.assert_array_equal(inv, 255 - gray)
    rgb = decode_image(src / "rgb.png", ImageOptions(color="rgb", size=(40, 20)))
    assert rgb.shape == (20, 40, 3)
    np.testing.assert_array_equal(rgb[..., 0], bar)
    build_dataset(tmp_path / "src", tmp_path / "own", color="rgb", size="32x32", split=0.5, progress=False)
    ds = load(tmp_path / "own")
    assert ds.x_train.shape[1:] == (32, 32, 3) and ds.input_shape == (3, 32, 32)


def test_transparency_16bit_and_exif(tmp_path):
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[10:18, 10:18] = (0, 0, 0, 255)  # a black square on a transparent background
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    a = decode_image(tmp_path / "t.png")
    assert a[0, 0] == 255 and a[12, 12] == 0  # transparency shows as white paper
    deep = (np.arange(28 * 28, dtype=np.uint16).reshape(28, 28) * 80).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")
    d = decode_image(tmp_path / "d.png")
    np.testing.assert_allclose(d, deep / 65535 * 255, atol=1)
    # A photo taken sideways: EXIF orientation 6 says "rotate 90° clockwise to view".
    img = np.zeros((28, 28), np.uint8)
    img[:, :4] = 255  # a bar along the left edge
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(img).save(tmp_path / "e.jpg", exif=exif, quality=95)
    e = decode_image(tmp_path / "e.jpg")
    assert e[:4].mean() > 200 and e[-4:].mean() < 50  # the bar is now along the top


@pytest.mark.parametrize("mode", ["L", "RGB"])
@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_fast_path_matches_pillow(mnist_arrays, mode, progressive):
    rng = np.random.default_rng(0)
    for i in range(20):
        x = mnist_arrays[0][i]
        img = (
            Image.fromarray(x)
            if mode == "L"
            else Image.fromarray(np.dstack([x, rng.integers(0, 255, x.shape, np.uint8), x // 2]))
        )
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=80, progressive=progressive)
        data = buf.getvalue()
        for color in ("gray", "rgb"):
            fast = imaging._jpeg_fast(data, color, (28, 28))
            assert fast is not None
            general = np.asarray(imaging.flatten(imaging.open_image(data, size=(28, 28)), color))
            np.testing.assert_array_equal(fast, general)
            np.testing.assert_array_equal(imaging.decode(data, color, size=(28, 28)), general)


def test_parallel_decoding_equals_serial(course_jpg, monkeypatch, tmp_path):
    folder = course_jpg / f"mnist_train_jpg_{N_TRAIN}"
    paths = sorted(str(p) for p in folder.iterdir()) + [str(folder / "missing.jpg")]
    serial, failed_s = decoding.decode_all(paths, ImageOptions(), workers=1, progress=False)
    monkeypatch.setattr(decoding, "_POOL_MIN", 10)
    seen = []
    parallel, failed_p = decoding.decode_all(paths, ImageOptions(), workers=2, progress=False, on_chunk=seen.append)
    np.testing.assert_array_equal(serial, parallel)
    assert failed_s == failed_p and list(failed_p) == [len(paths) - 1] and "missing file" in failed_p[len(paths) - 1]
    assert seen[-1] == len(paths)


# -- bad entries ----------------------------------------------------------------------------------


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims to be ``width`` x ``height``: a decompression bomb's header, no pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture
def bad_source(tmp_path, mnist_arrays) -> Path:
    src = tmp_path / "bad"
    img = src / "train"
    img.mkdir(parents=True)
    for i in range(5):
        Image.fromarray(mnist_arrays[0][i]).save(img / f"ok{i}.png")
    (img / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (img / "notimage.png").write_bytes(b"hello, world")
    buf = io.BytesIO()
    Image.fromarray(mnist_arrays[0][5]).save(buf, "PNG")
    (img / "truncated.png").write_bytes(buf.getvalue()[:60])
    (img / "bomb.png").write_bytes(png_header_only(30000, 30000))
    (tmp_path / "outside.png").write_bytes((img / "ok0.png").read_bytes())
    lines = [
        "ok0.png 5",  # 1
        "ok1.png 0",  # 2
        "missing.png 3",  # 3
        "corrupt.jpg 1",  # 4
        "notimage.png 1",  # 5
        "ok2.png seven",  # 6
        "ok1.png 0",  # 7 duplicate of 2
        "../../outside.png 1",  # 8
        "truncated.png 2",  # 9
        "bomb.png 4",  # 10
        "ok3.png",  # 11 no label
        "ok3.png -1",  # 12
        f"{tmp_path / 'outside.png'} 1",  # 13 absolute
    ]
    (src / "train.txt").write_text("\n".join(lines) + "\n")
    (src / "test.txt").write_text("train/ok0.png 5\ntrain/ok4.png 4\n")  # line 1: the same image as in train
    return src


EXPECTED_BAD = {
    3: "missing file",
    4: "corrupt",
    5: "not an image",
    6: "not an integer",
    7: "duplicate of",
    8: "escapes the image folder",
    9: "corrupt",
    10: "too large",
    11: "expected 'file_name label'",
    12: "not an integer",
    13: "escapes the image folder",
}


def test_every_bad_line_is_reported_and_nothing_written(bad_source, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(BuildError) as info:
        build_dataset(bad_source / "train.txt", out, test=bad_source / "test.txt", progress=False)
    bad = info.value.bad
    train_txt = str(bad_source / "train.txt")
    by_line = {int(b.where.rsplit(":", 1)[1]): b.reason for b in bad if b.where.startswith(train_txt + ":")}
    assert set(by_line) == set(EXPECTED_BAD), bad
    for line, word in EXPECTED_BAD.items():
        assert word in by_line[line], (line, by_line[line])
    test_bad = [b for b in bad if b.where.startswith(str(bad_source / "test.txt"))]
    assert len(test_bad) == 1 and test_bad[0].where.endswith(":1") and "listed in train" in test_bad[0].reason
    message = str(info.value)
    assert message.splitlines()[0].endswith(
        "nothing written (use --skip-bad / skip_bad=True to build from the good ones)"
    )
    assert f"{train_txt}:10: image too large" in message
    assert not out.exists() and leftovers(tmp_path) == []


def test_unknown_class_with_classes_file(bad_source, tmp_path):
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    (bad_source / "named.txt").write_text("train/ok0.png dog\ntrain/ok1.png cow\ntrain/ok2.png 1\ntrain/ok3.png 2\n")
    with pytest.raises(BuildError) as info:
        build_dataset(
            bad_source / "named.txt", tmp_path / "out", split=0.5, classes=tmp_path / "classes.txt", progress=False
        )
    reasons = {b.where.rsplit(":", 1)[1]: b.reason for b in info.value.bad}
    assert set(reasons) == {"2", "4"}
    assert "'cow' is not an integer nor a class" in reasons["2"] and "out of range" in reasons["4"]


def test_skip_bad_builds_from_good_lines(bad_source, tmp_path):
    out = tmp_path / "out"
    result = build_dataset(bad_source / "train.txt", out, test=bad_source / "test.txt", skip_bad=True, progress=False)
    assert (result.n_train, result.n_test) == (2, 1)  # ok0, ok1 / ok4 (ok0 in test repeats train)
    assert len(result.bad) == len(EXPECTED_BAD) + 1
    (x_tr, y_tr), (x_te, y_te) = load_data(out)
    assert y_tr.tolist() == [5, 0] and y_te.tolist() == [4]
    assert "train.txt:10: image too large" in (out / "skipped.txt").read_text()


def test_cli_reports_bad_lines_without_traceback(bad_source, tmp_path, capsys):
    out = tmp_path / "out"
    r = run_cli("data", "build", str(bad_source / "train.txt"), "--test", str(bad_source / "test.txt"), "-o", str(out))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("mnistlab: error: ") and "12 bad entries; nothing written" in r.stderr.splitlines()[0]
    assert "train.txt:3: missing file" in r.stderr and "train.txt:8: path '../../outside.png' escapes" in r.stderr
    assert not out.exists()
    # The same CLI code in-process (another interpreter start would cost seconds).
    args = ["data", "build", str(bad_source / "train.txt"), "--test", str(bad_source / "test.txt"), "-o", str(out)]
    assert main([*args, "--skip-bad"]) == 0
    printed = capsys.readouterr().out
    assert "skipped 12 bad entries" in printed and "train.txt:6: label 'seven' is not an integer" in printed


def test_bad_list_files(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs.txt").write_bytes("a.png 1\n\xe9t\xe9.png 2\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"imgs.txt:2: not UTF-8"):
        build_dataset(tmp_path / "imgs.txt", tmp_path / "out", split=0.5, progress=False)
    (tmp_path / "imgs.txt").write_text("a.png 1\n")
    (tmp_path / "classes.txt").write_text("a\nb\na\n")
    with pytest.raises(DatasetError, match=r"classes.txt:3: class 'a' already named on line 1"):
        build_dataset(tmp_path / "imgs.txt", tmp_path / "out", split=0.5, classes=tmp_path / "classes.txt")
    with pytest.raises(DatasetError, match="no such file"):
        build_dataset(tmp_path / "nope", tmp_path / "out")
    with pytest.raises(DatasetError, match="no data set source"):
        build_dataset(tmp_path / "imgs", tmp_path / "out")
    with pytest.raises(DatasetError, match="size must be"):
        build_dataset(tmp_path / "imgs.txt", tmp_path / "out", size="big")
    assert not (tmp_path / "out").exists()


def test_decode_image_errors(tmp_path):
    (tmp_path / "x.png").write_bytes(b"garbage")
    with pytest.raises(ImageError, match="x.png: not an image"):
        decode_image(tmp_path / "x.png")
    (tmp_path / "big.png").write_bytes(png_header_only(200, 200))
    with pytest.raises(ImageError, match="too large: 200×200"):
        decode_image(tmp_path / "big.png", ImageOptions(max_pixels=10_000))


# -- writing --------------------------------------------------------------------------------------


def test_next_build_removes_what_a_killed_build_left(course_png, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "own"
    # A real build process killed with SIGKILL half-way through writing its hidden folder.
    killed = subprocess.run([sys.executable, "-c", (
        "import os, signal, tempfile, pathlib\n"
        "from mnistlab.datasets.build import _building_prefix\n"
        f"out = pathlib.Path({str(out)!r})\n"
        "tmp = tempfile.mkdtemp(prefix=f'{_building_prefix(out)}{os.getpid()}-', dir=out.parent)\n"
        "pathlib.Path(tmp, 'x_train.npy').write_bytes(b'partial')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )], capture_output=True)  # fmt: skip
    assert killed.returncode == -9
    stale = leftovers(tmp_path)
    assert len(stale) == 1 and stale[0].startswith(".own.building-")
    # A build of the same output still running (this process) must be left alone.
    live = tmp_path / f"{B._building_prefix(out)}{os.getpid()}-live"
    live.mkdir()
    build_dataset(course_png, out, progress=False)
    assert load(out).x_train.shape[0] == N_TRAIN
    assert leftovers(tmp_path) == [live.name]


def test_interrupted_write_leaves_nothing(course_png, monkeypatch, tmp_path):
    out = tmp_path / "own"
    calls = []
    real_save = np.save

    def flaky_save(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_save(*args, **kwargs)

    monkeypatch.setattr(B.np, "save", flaky_save)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(course_png, out, progress=False)
    assert not out.exists() and leftovers(tmp_path) == []

    # Replacing an earlier build: an interruption keeps the earlier one whole.
    monkeypatch.setattr(B.np, "save", real_save)
    build_dataset(course_png, out, size=20, progress=False)
    calls.clear()
    monkeypatch.setattr(B.np, "save", flaky_save)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(course_png, out, force=True, progress=False)
    assert load(out).x_train.shape == (N_TRAIN, 20, 20) and leftovers(tmp_path) == []
    monkeypatch.setattr(B.np, "save", real_save)
    build_dataset(course_png, out, force=True, progress=False)
    assert load(out).x_train.shape == (N_TRAIN, 28, 28) and leftovers(tmp_path) == []


def test_output_rules(course_png, tmp_path):
    out = tmp_path / "own"
    build_dataset(course_png, out, progress=False)
    with pytest.raises(DatasetError, match="already exists; use --force"):
        build_dataset(course_png, out, progress=False)
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(DatasetError, match="not a data set built by mnistlab"):
        build_dataset(course_png, mine, force=True, progress=False)
    assert (mine / "holiday.jpg").read_bytes() == b"precious"
    assert os.stat(out / "x_train.npy").st_mode & 0o044  # readable like any other file, not 0600


def test_cli_build_then_train_and_show(course_png, tmp_path, capsys):
    out = tmp_path / "own"
    r = run_cli("data", "build", str(course_png), "-o", str(out), "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert f"built {out}: {N_TRAIN} train + {N_TEST} test images, 28x28 gray, 10 classes" in r.stdout
    assert main(["data", "show", str(out), "--index", "1"]) == 0
    assert "label: " in capsys.readouterr().out
    run = tmp_path / "run"
    r = run_cli("train", "--preset", "lesson", "--epochs", "2", "--dataset", str(out), "--out", str(run), "--quiet")
    assert r.returncode == 0, r.stderr
    result = json.loads((run / "result.json").read_text())
    assert result["dataset"]["name"] == "own" and result["test"]["sparse_categorical_accuracy"] > 0.3


# -- links, FIFOs and devices (issue 15, item 8) ---------------------------------------------------


def test_class_folders_follow_no_links_out_or_in_loops_and_read_no_fifos(mnist_arrays, tmp_path):
    train = tmp_path / "src" / "train"
    for label in (3, 5):
        (train / str(label)).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(mnist_arrays[0][label * 3 + i]).save(train / str(label) / f"img{i}.png")
    Image.fromarray(mnist_arrays[0][0]).save(tmp_path / "outside.png")
    (train / "3" / "again").symlink_to(".")  # a loop: 6 images became 200+
    (train / "5" / "up").symlink_to("..")  # two such links never finish
    (train / "3" / "far.png").symlink_to(tmp_path / "outside.png")
    (train / "5" / "zero.png").symlink_to("/dev/zero")  # read until memory ran out
    os.mkfifo(train / "3" / "pipe.png")  # blocked for ever
    with pytest.raises(BuildError) as info:
        build_dataset(train, tmp_path / "own", split=0.5, workers=1, progress=False)
    reasons = {Path(b.where).relative_to(train).as_posix(): b.reason for b in info.value.bad}
    assert set(reasons) == {"3/again", "5/up", "3/far.png", "5/zero.png", "3/pipe.png"}, reasons
    assert reasons["3/again"].startswith("link to a folder, not followed") and reasons["5/up"] == reasons["3/again"]
    assert reasons["3/far.png"].startswith(f"symbolic link to {tmp_path / 'outside.png'}, outside the image folder")
    assert reasons["5/zero.png"].startswith("symbolic link to /dev/zero, outside the image folder")
    assert reasons["3/pipe.png"].startswith("not a regular file (a FIFO); only image files are read: ")
    result = build_dataset(train, tmp_path / "own", split=0.5, skip_bad=True, workers=1, progress=False)
    assert result.n_train + result.n_test == 6 and len(result.bad) == 5


def test_list_entries_stay_inside_the_image_folder(bad_source, tmp_path, capsys):
    img = bad_source / "train"
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "a.png").write_bytes((img / "ok0.png").read_bytes())
    (img / "sub").symlink_to(tmp_path / "elsewhere")
    (img / "zero.png").symlink_to("/dev/zero")
    (img / "out.png").symlink_to(tmp_path / "outside.png")
    (img / "same.png").symlink_to("ok0.png")  # a link inside the folder is fine, but it is ok0.png again
    (img / "dir.png").mkdir()
    os.mkfifo(img / "pipe.png")
    names = [
        "ok0.png 5",
        "sub/a.png 1",
        "zero.png 2",
        "out.png 3",
        "same.png 5",
        "pipe.png 4",
        "dir.png 4",
        "ok1.png 0",
    ]
    (bad_source / "links.txt").write_text("".join(f"train/{n}\n" for n in names))  # the image folder: bad_source
    with pytest.raises(BuildError) as info:
        build_dataset(bad_source / "links.txt", tmp_path / "out", split=0.5, workers=1, progress=False)
    reasons = {int(b.where.rsplit(":", 1)[1]): b.reason for b in info.value.bad}
    assert set(reasons) == {2, 3, 4, 5, 6, 7}, reasons
    assert reasons[2].startswith(f"path leads out of the image folder {bad_source} (through a link to ")
    assert reasons[3].startswith("symbolic link to /dev/zero, outside the image folder")
    assert reasons[4].startswith(f"symbolic link to {tmp_path / 'outside.png'}")
    assert reasons[5].startswith("duplicate of ") and reasons[5].endswith("links.txt:1")
    assert reasons[6] == f"not a regular file (a FIFO); only image files are read: {img / 'pipe.png'}"
    assert reasons[7] == f"not an image: {img / 'dir.png'} is a folder"
    # The CLI reports each one on its own line, as any other bad line, and writes nothing.
    assert main(["data", "build", str(bad_source / "links.txt"), "--split", "0.5", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "6 bad entries; nothing written" in err.splitlines()[0] and "Traceback" not in err
    assert all(f"links.txt:{n}: " in err for n in (2, 3, 4, 5, 6, 7)) and not (tmp_path / "out").exists()
