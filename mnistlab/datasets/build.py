"""Build a data set from your own pictures (the lesson's "自制数据集"), in parallel, checked line by line.

Three kinds of source are understood:

- the course layout: a list file with one ``file_name label`` per line and a folder of the same name
  holding the images (``mnist_train_jpg_60000.txt`` + ``mnist_train_jpg_60000/``); give the list file,
  or the folder holding both pairs (the ``train`` pair and the ``test`` pair are found by name);
- one sub-folder per class (``root/cat/*.png``, ``root/dog/*.png``), or ``root/train/<class>/`` and
  ``root/test/<class>/``; class names are the folder names;
- a CSV file of ``path,label`` rows (a header row is allowed), paths relative to the CSV's folder.

List files may be separated by spaces or tabs; the label is the last field, so file names may hold
spaces. CRLF line ends, a UTF-8 BOM, blank lines and ``#`` comment lines are fine. Labels are
integers, or class names when a classes file gives the names (one per line, in label order).

Every bad entry is reported as ``file:line: reason`` (missing file, unreadable or corrupt image, bad
label, duplicate, a path escaping the image folder, an image too large to be decoded safely). By
default one bad entry fails the build and nothing is written; ``skip_bad=True`` builds from the good
ones. The result is a folder that ``load(path)``, ``load_data(path)`` and ``mnistlab train --dataset``
read: ``dataset.json`` + ``x_train.npy, y_train.npy, x_test.npy, y_test.npy`` as ``uint8`` (the
course keeps float64 arrays, eight times the memory). It appears at once, complete, or not at all.

>>> result = build_dataset("mnist_image_label", "my_mnist")   # doctest: +SKIP
>>> (x_train, y_train), (x_test, y_test) = load_data("my_mnist")   # doctest: +SKIP
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import csv
import glob
import io
import json
import math
import multiprocessing
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnistlab import fileio
from mnistlab.datasets.store import BUILT_FORMAT, load
from mnistlab.errors import DatasetError
from mnistlab.progress import Progbar

IMAGE_EXTS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".pnm"}
)
# Pillow's own default; images beyond it are refused before a single pixel is decoded.
DEFAULT_MAX_PIXELS = 89_478_485
COLORS = ("gray", "rgb")
FITS = ("stretch", "pad")
MAX_CLASSES = 256  # labels are stored as uint8
# Below this many images a process pool costs more than it saves.
_POOL_MIN = 2000
_DIGITS = re.compile(r"[0-9]+")
# A relative path already in normal form: no empty, "." or ".." parts, nothing starting with "/" or ".".
_PLAIN_PATH = re.compile(r"(?:[^/.\\][^/\\]*/)*[^/.\\][^/\\]*")
_HEADER_PATHS = {"path", "file", "filename", "file_name", "image", "image_path", "img"}
_HEADER_LABELS = {"label", "class", "target", "y", "category"}


@dataclass(frozen=True)
class BadEntry:
    """One entry that cannot go into the data set: where it is (``file:line`` or a path) and why.

    >>> str(BadEntry("train.txt:3", "missing file: a.png does not exist"))
    'train.txt:3: missing file: a.png does not exist'
    """

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


class BuildError(DatasetError):
    """The build found bad entries and wrote nothing; ``.bad`` holds all of them."""

    def __init__(self, message: str, bad: list[BadEntry]) -> None:
        super().__init__(message)
        self.bad = bad


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


@dataclass
class BuildResult:
    """What ``build_dataset`` wrote, and every entry it left out."""

    path: Path
    name: str
    class_names: tuple[str, ...]
    n_train: int
    n_test: int
    image_shape: tuple[int, ...]
    bad: list[BadEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        shape = "x".join(map(str, self.image_shape[:2][::-1])) + (" RGB" if len(self.image_shape) == 3 else " gray")
        names = ", ".join(self.class_names[:12]) + (", ..." if len(self.class_names) > 12 else "")
        size = (self.n_train + self.n_test) * math.prod(self.image_shape)
        return (
            f"built {self.path}: {self.n_train} train + {self.n_test} test images, {shape}, "
            f"{len(self.class_names)} classes ({names}); {size / 2**20:.1f} MiB as uint8; {self.seconds:.1f}s"
        )

    def report(self, limit: int | None = None) -> str:
        return format_report(self.bad, limit)


def format_report(bad: Sequence[BadEntry], limit: int | None = None) -> str:
    """One line per bad entry (the first ``limit``), then a count per reason when lines were left out."""
    shown = bad if limit is None else bad[:limit]
    lines = [str(b) for b in shown]
    if len(shown) < len(bad):
        kinds: dict[str, int] = {}
        for b in bad:
            kinds[_kind(b.reason)] = kinds.get(_kind(b.reason), 0) + 1
        lines.append(
            f"... and {len(bad) - len(shown)} more; all {len(bad)} by reason: "
            + ", ".join(f"{k} ×{n}" for k, n in kinds.items())
        )
    return "\n".join(lines)


def _kind(reason: str) -> str:
    """The reason without its particulars, to count alike entries: "label '…' is not an integer"."""
    return re.sub(r"'[^']*'|\b\d+\b", "…", reason.split(":")[0].split(" (")[0])


# -- reading sources ------------------------------------------------------------------------------


@dataclass
class _Raw:
    """An entry before its label is resolved: where it was listed, the image file, the label text."""

    where: str
    path: str
    label: str
    folder: bool = False  # the label is a class folder's name


@dataclass
class _Source:
    kind: str  # list | csv | folders
    path: Path
    root: Path  # where the images are

    def describe(self) -> str:
        return {"list": "list file", "csv": "CSV file", "folders": "class folders"}[self.kind] + f" {self.path}"


def detect_sources(src: str | os.PathLike[str]) -> tuple[_Source, _Source | None]:
    """The train source in ``src`` and, when ``src`` holds one, the test source."""
    src = Path(src)
    if not src.exists():
        raise DatasetError(f"{src}: no such file or folder")
    if src.is_file():
        return _file_source(src), None
    pairs = sorted(t for t in src.glob("*.txt") if (src / t.stem).is_dir())
    if pairs:
        train = [p for p in pairs if "train" in p.stem.lower()]
        test = [p for p in pairs if "test" in p.stem.lower() and p not in train]
        if len(pairs) == 1 and not test:
            train = pairs
        if len(train) != 1 or len(test) > 1:
            raise DatasetError(
                f"{src}: found list files {', '.join(p.name for p in pairs)}; expected one with 'train' in its name "
                "(and at most one with 'test'); give the list file itself instead"
            )
        return _Source("list", train[0], src / train[0].stem), (
            _Source("list", test[0], src / test[0].stem) if test else None
        )
    if (src / "train").is_dir() and _class_dirs(src / "train"):
        test = src / "test"
        return _Source("folders", src / "train", src / "train"), (
            _Source("folders", test, test) if test.is_dir() else None
        )
    if _class_dirs(src):
        return _Source("folders", src, src), None
    raise DatasetError(
        f"{src}: no data set source here (expected a list file NAME.txt beside a folder NAME/, "
        "class sub-folders with images, or train/ and test/ holding class sub-folders)"
    )


def _file_source(f: Path) -> _Source:
    if f.suffix.lower() == ".csv":
        return _Source("csv", f, f.parent)
    images = f.with_suffix("")
    return _Source("list", f, images if images.is_dir() else f.parent)


def _class_dirs(root: Path) -> list[Path]:
    """Sub-folders holding at least one image (hidden ones skipped)."""
    out = []
    with contextlib.suppress(OSError):
        for d in sorted(root.iterdir()):
            if d.is_dir() and not d.name.startswith(".") and any(_image_files(d)):
                out.append(d)
    return out


def _image_files(folder: Path):
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTS:
                yield os.path.join(dirpath, name)


def _read_text(f: Path) -> list[str]:
    try:
        data = f.read_bytes()
    except OSError as e:
        raise DatasetError(f"{f}: cannot read ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DatasetError(f"{f}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); save the file as UTF-8") from None
    return text.splitlines()  # handles \n, \r\n and \r


def _read_entries(source: _Source, bad: list[BadEntry]) -> list[_Raw]:
    if source.kind == "folders":
        out = []
        for d in _class_dirs(source.root):
            out += [_Raw(p, p, d.name, folder=True) for p in _image_files(d)]
        loose = [n for n in os.listdir(source.root) if os.path.splitext(n)[1].lower() in IMAGE_EXTS]
        if loose:
            bad += [BadEntry(str(source.root / n), "image outside any class folder") for n in sorted(loose)]
        return out
    lines = _read_text(source.path)
    rows: list[tuple[int, str, str]] = []
    if source.kind == "list":
        for i, line in enumerate(lines, 1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            parts = s.rsplit(None, 1)
            if len(parts) < 2:
                bad.append(BadEntry(f"{source.path}:{i}", f"expected 'file_name label', got {s!r}"))
                continue
            rows.append((i, parts[0].strip(), parts[1]))
    else:
        first = True
        for i, fields_ in enumerate(csv.reader(lines), 1):
            if not fields_ or not "".join(fields_).strip() or fields_[0].lstrip().startswith("#"):
                continue
            if first:
                first = False
                if fields_[0].strip().lower() in _HEADER_PATHS and fields_[-1].strip().lower() in _HEADER_LABELS:
                    continue
            if len(fields_) < 2:
                bad.append(BadEntry(f"{source.path}:{i}", f"expected 'path,label', got {','.join(fields_)!r}"))
                continue
            rows.append((i, ",".join(fields_[:-1]).strip(), fields_[-1].strip()))
    out = []
    root = str(source.root)
    for i, rel, label in rows:
        where = f"{source.path}:{i}"
        if not _PLAIN_PATH.fullmatch(rel):  # only odd paths pay for normpath (70,000 lines add up)
            norm = os.path.normpath(rel)
            if os.path.isabs(rel) or norm == ".." or norm.startswith(".." + os.sep):
                bad.append(BadEntry(where, f"path {rel!r} escapes the image folder {source.root}"))
                continue
            rel = norm
        out.append(_Raw(where, f"{root}{os.sep}{rel}", label))
    return out


def read_classes(f: str | os.PathLike[str]) -> list[str]:
    """Class names, one per line, in label order (blank lines and ``#`` comments skipped)."""
    f = Path(f)
    names: list[str] = []
    seen: dict[str, int] = {}
    for i, line in enumerate(_read_text(f), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s in seen:
            raise DatasetError(f"{f}:{i}: class {s!r} already named on line {seen[s]}")
        seen[s] = i
        names.append(s)
    if not names:
        raise DatasetError(f"{f}: no class names in it")
    if len(names) > MAX_CLASSES:
        raise DatasetError(f"{f}: {len(names)} classes; at most {MAX_CLASSES} are supported")
    return names


def _folder_classes(raws: list[_Raw]) -> list[str]:
    names = sorted({r.label for r in raws if r.folder})
    if names and all(_DIGITS.fullmatch(n) for n in names):
        names.sort(key=int)  # folders 0..10 in number order, not "10" before "2"
    return names


def _resolve_labels(
    raws: list[_Raw], classes: list[str] | None, classes_from: str, bad: list[BadEntry]
) -> tuple[list[int], list[bool]]:
    index = {n: i for i, n in enumerate(classes)} if classes is not None else {}
    labels, ok = [], []
    for r in raws:
        lab = -1
        if r.label in index:
            lab = index[r.label]
        elif r.folder:
            bad.append(BadEntry(r.where, f"class folder {r.label!r} is not a class in {classes_from}"))
        elif _DIGITS.fullmatch(r.label):
            lab = int(r.label)
            if classes is not None and lab >= len(classes):
                bad.append(
                    BadEntry(
                        r.where,
                        f"label {lab} out of range: {classes_from} names {len(classes)} classes (0..{len(classes) - 1})",
                    )
                )
                lab = -1
            elif lab >= MAX_CLASSES:
                bad.append(
                    BadEntry(r.where, f"label {lab} out of range (at most {MAX_CLASSES} classes, 0..{MAX_CLASSES - 1})")
                )
                lab = -1
        elif classes is None:
            bad.append(
                BadEntry(r.where, f"label {r.label!r} is not an integer (give a classes file to use class names)")
            )
        else:
            bad.append(BadEntry(r.where, f"label {r.label!r} is not an integer nor a class in {classes_from}"))
        labels.append(lab)
        ok.append(lab >= 0)
    return labels, ok


# -- decoding -------------------------------------------------------------------------------------


class _Bad(Exception):
    """An image that cannot be used; the message is the reason."""


def decode_image(path: str | os.PathLike[str], options: ImageOptions | None = None) -> np.ndarray:
    """One image file → ``uint8`` array of ``options.shape``; ``ImageError`` says why it cannot be.

    >>> decode_image("digit.png").shape   # doctest: +SKIP
    (28, 28)
    """
    from mnistlab.errors import ImageError

    try:
        return _decode_file(str(path), options or ImageOptions())
    except _Bad as e:
        raise ImageError(f"{path}: {e}") from None


def _decode_file(path: str, opts: ImageOptions) -> np.ndarray:
    try:
        data = _read_file(path)
    except FileNotFoundError:
        raise _Bad(f"missing file: {path} does not exist") from None
    except IsADirectoryError:
        raise _Bad(f"not an image: {path} is a folder") from None
    except OSError as e:
        raise _Bad(f"unreadable: {path} ({e.strerror or e})") from None
    if data[:3] == b"\xff\xd8\xff":
        with contextlib.suppress(ValueError, OSError):  # anything odd: the general path says what
            arr = _jpeg_fast(data, opts)
            if arr is not None:
                return arr
    return _decode_pil(data, opts)


def _read_file(path: str) -> bytes:
    # os.open/os.read: half the cost of open() for the small files that are most of a data set.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        data = os.read(fd, 1 << 16)
        if len(data) < 1 << 16:
            return data
        parts = [data]
        while chunk := os.read(fd, 1 << 20):
            parts.append(chunk)
        return b"".join(parts)
    finally:
        os.close(fd)


_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _jpeg_header(data: bytes) -> tuple[int, int, int, int] | None:
    """``(width, height, components, bits)`` from the JPEG frame header; None when an Exif block
    (it may rotate the image) or anything unusual comes first."""
    i, n = 2, len(data)
    while i + 9 < n:
        if data[i] != 0xFF:
            return None
        m = data[i + 1]
        if m == 0xFF:  # fill byte
            i += 1
            continue
        if m in _SOF:
            return data[i + 7] << 8 | data[i + 8], data[i + 5] << 8 | data[i + 6], data[i + 9], data[i + 4]
        if m == 0xDA or (m == 0xE1 and data[i + 4 : i + 8] == b"Exif"):
            return None
        i += 2 + (data[i + 2] << 8 | data[i + 3])
    return None


def _jpeg_fast(data: bytes, opts: ImageOptions) -> np.ndarray | None:
    """Decode a plain JPEG already at the target size straight through libjpeg.

    ``Image.open`` parses every JPEG marker in Python, which costs more than decoding a 28x28 image;
    here a tiny header scan finds the size and ``frombytes`` runs the same libjpeg decoder with the
    same settings as ``Image.open`` + ``draft`` (tests check the pixels are identical).
    """
    hdr = _jpeg_header(data)
    if hdr is None:
        return None
    w, h, comps, bits = hdr
    if bits != 8 or comps not in (1, 3) or (w, h) != opts.size:
        return None
    if opts.color == "gray":
        arr = _gray_jpeg_reader(opts.size).decode(data)
    else:
        arr = np.asarray(
            Image.frombytes("RGB" if comps == 3 else "L", (w, h), data, "jpeg", "RGB" if comps == 3 else "L", "")
        )
        if comps == 1:
            arr = np.repeat(arr[..., None], 3, axis=2)
    return 255 - arr if opts.invert else arr


class _GrayJpegReader:
    """Decodes grayscale JPEGs of one size into one reused NumPy buffer.

    ``Image.frombuffer`` gives an image whose pixels *are* the buffer, so libjpeg writes straight
    into it: no new image and no ``tobytes`` copy per file, a third of the time for 28x28 files. The
    first decode is checked against the plain route; if a Pillow version ever stops sharing the
    memory, the reader falls back to the plain route for good.
    """

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size
        self.buf = np.zeros(size[::-1], np.uint8)
        self.im = Image.frombuffer("L", size, self.buf, "raw", "L", 0, 1)
        self.shares: bool | None = None

    def decode(self, data: bytes) -> np.ndarray:
        if self.shares is False:
            return np.asarray(Image.frombytes("L", self.size, data, "jpeg", "L", ""))
        self.im.frombytes(data, "jpeg", "L", "")
        arr = self.buf.copy()
        if self.shares is None:
            plain = np.asarray(Image.frombytes("L", self.size, data, "jpeg", "L", ""))
            self.shares = bool(np.array_equal(plain, arr))
            return plain
        return arr


_local = threading.local()  # one reader per thread: the buffer must not be shared between threads


def _gray_jpeg_reader(size: tuple[int, int]) -> _GrayJpegReader:
    readers = _local.__dict__.setdefault("readers", {})
    if size not in readers:
        readers[size] = _GrayJpegReader(size)
    return readers[size]


def _decode_pil(data: bytes, opts: ImageOptions) -> np.ndarray:
    with warnings.catch_warnings():
        # Our own max_pixels applies (checked below, before any pixel is decoded); Pillow's warning
        # would only repeat it. Pillow still refuses beyond twice its default on its own.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return _decode_pil_checked(data, opts)


def _decode_pil_checked(data: bytes, opts: ImageOptions) -> np.ndarray:
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise _Bad("not an image Pillow can read (corrupt, or not an image file)") from None
    except Image.DecompressionBombError as e:
        raise _Bad(f"image too large: {e}") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise _Bad(f"corrupt image ({e})") from None
    with im:
        w, h = im.size
        if w * h > opts.max_pixels:
            raise _Bad(
                f"image too large: {w}x{h} = {w * h / 1e6:.1f} megapixels, over the limit of "
                f"{opts.max_pixels / 1e6:.1f} (refused as a possible decompression bomb)"
            )
        try:
            if im.format == "JPEG":  # let libjpeg shrink big photos while decoding: much faster
                im.draft("L" if opts.color == "gray" else "RGB", opts.size)
            im.load()
            img = ImageOps.exif_transpose(im) if "exif" in im.info else im  # phone photos stand upright
            arr = np.asarray(_fit(_to_mode(img, opts.color), opts))
        except Image.DecompressionBombError as e:
            raise _Bad(f"image too large: {e}") from None
        except (OSError, ValueError, SyntaxError, EOFError) as e:
            raise _Bad(f"corrupt image ({e})") from None
    if arr.shape != opts.shape:  # Pillow gave a mode we did not expect
        raise _Bad(f"decoded to shape {arr.shape}, expected {opts.shape}")
    return 255 - arr if opts.invert else arr


def _to_mode(im: Image.Image, color: str) -> Image.Image:
    mode = "L" if color == "gray" else "RGB"
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit pixels: convert() would clip at 255; scale 0..65535 to 0..255 instead.
        a = np.asarray(im).astype(np.int64)
        im = Image.fromarray(((np.clip(a, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8))
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if has_alpha:
        # Transparent areas become white, as a page or a viewer shows them; --invert makes them black.
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return im if im.mode == mode else im.convert(mode)


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


def _decode_chunk(paths: list[str], opts: ImageOptions) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Decode ``paths`` into one array; failures leave a zero image and a ``(position, reason)``."""
    out = np.zeros((len(paths), *opts.shape), np.uint8)
    errors = []
    for i, p in enumerate(paths):
        try:
            out[i] = _decode_file(p, opts)
        except _Bad as e:
            errors.append((i, str(e)))
    return out, errors


def decode_all(
    paths: Sequence[str],
    options: ImageOptions,
    *,
    workers: int | None = None,
    progress: bool = True,
    on_chunk: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, dict[int, str]]:
    """Decode many image files in parallel: ``(uint8 array, {index: reason})`` for the ones that failed.

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
            arr, errs = _decode_chunk(list(paths[start : start + step]), options)
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
        futures = {pool.submit(_decode_chunk, list(paths[s : s + size]), options): s for s in starts}
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


# -- the build ------------------------------------------------------------------------------------


def parse_size(size: int | str | Sequence[int]) -> tuple[int, int]:
    """``28``, ``"28"``, ``"32x24"`` (width x height) or ``(32, 24)`` → ``(width, height)``.

    >>> parse_size("32x24"), parse_size(28)
    ((32, 24), (28, 28))
    """
    try:
        if isinstance(size, int):
            return (size, size)
        if isinstance(size, str):
            parts = re.split(r"[x×*,]", size.strip().lower())
            vals = [int(p) for p in parts]
        else:
            vals = [int(v) for v in size]
        if len(vals) == 1:
            return (vals[0], vals[0])
        if len(vals) == 2:
            return (vals[0], vals[1])
    except (TypeError, ValueError):
        pass
    raise DatasetError(f"size must be N or WIDTHxHEIGHT (e.g. 28 or 32x32), got {size!r}")


def build_dataset(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    test: str | os.PathLike[str] | None = None,
    split: float | None = None,
    classes: str | os.PathLike[str] | Sequence[str] | None = None,
    size: int | str | Sequence[int] = 28,
    color: str = "gray",
    invert: bool = False,
    fit: str = "stretch",
    skip_bad: bool = False,
    workers: int | None = None,
    seed: int = 0,
    name: str | None = None,
    force: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
) -> BuildResult:
    """Build the data set folder ``out`` from the images in ``src`` (see the module docstring).

    ``test`` is a separate test source; ``split`` holds out that fraction of each class for the test
    part instead. ``classes`` is a file (or list) of class names in label order. Images become
    ``size`` (``28`` or ``"WxH"``) in ``color`` ``gray`` or ``rgb``, optionally inverted, stretched or
    fitted with padding (``fit="pad"`` keeps the aspect ratio). Bad entries raise ``BuildError`` listing
    them all, and nothing is written, unless ``skip_bad``. ``force`` replaces an earlier build in ``out``.

    >>> r = build_dataset("mnist_image_label", "my_mnist", progress=False)   # doctest: +SKIP
    >>> r.n_train, r.n_test                                                    # doctest: +SKIP
    (60000, 10000)
    """
    t0 = time.perf_counter()
    opts = ImageOptions(parse_size(size), color, bool(invert), fit, int(max_pixels))
    out = Path(out)
    _check_out(out, force)
    if split is not None and not 0 < split < 1:
        raise DatasetError(f"split must be a fraction between 0 and 1 (e.g. 0.1), got {split!r}")
    if workers is not None and workers < 0:
        raise DatasetError(f"workers must be ≥ 0, got {workers}")
    train_src, test_src = detect_sources(src)
    if test is not None:
        test_src = detect_sources(test)[0]
    if split is not None and test_src is not None:
        raise DatasetError(f"both a test part ({test_src.describe()}) and split={split} given; choose one")
    if split is None and test_src is None:
        raise DatasetError(f"{src}: no test part found; give a test source (--test) or hold out a part (--split 0.1)")

    # Read every list first, so each problem is reported before any image is decoded.
    bad: list[BadEntry] = []
    raws = {"train": _read_entries(train_src, bad)}
    if test_src is not None:
        raws["test"] = _read_entries(test_src, bad)
    class_list, classes_from = _classes(classes, raws)
    items: list[tuple[str, _Raw, int]] = []
    first_seen: dict[str, tuple[str, str]] = {}
    for part, entries in raws.items():
        labels, ok = _resolve_labels(entries, class_list, classes_from, bad)
        for r, lab, good in zip(entries, labels, ok, strict=True):
            key = os.path.normcase(r.path)
            if key in first_seen:
                other_part, other = first_seen[key]
                why = (
                    f"duplicate of {other}"
                    if other_part == part
                    else f"the same image is listed in {other_part} at {other}"
                )
                bad.append(BadEntry(r.where, why))
                continue
            first_seen[key] = (part, r.where)
            if good:
                items.append((part, r, lab))
    if not items:
        raise BuildError(_fail_message(src, bad) if bad else f"{src}: no images found", bad)

    x, failed = decode_all([r.path for _, r, _ in items], opts, workers=workers, progress=progress)
    for i, reason in failed.items():
        bad.append(BadEntry(items[i][1].where, reason))
    bad.sort(key=_entry_order)
    if bad and not skip_bad:
        raise BuildError(_fail_message(src, bad), bad)
    keep = np.ones(len(items), bool)
    keep[list(failed)] = False
    parts = np.array([p for p, _, _ in items])
    y = np.array([lab for _, _, lab in items], dtype=np.int64)
    if class_list is None:
        class_list = [str(i) for i in range(int(y[keep].max(initial=0)) + 1)]
    train_mask, test_mask = keep & (parts == "train"), keep & (parts == "test")
    if split is not None:
        train_mask, test_mask = _split(train_mask, y, split, seed)
    arrays = {"x_train": x[train_mask], "y_train": y[train_mask].astype(np.uint8),
              "x_test": x[test_mask], "y_test": y[test_mask].astype(np.uint8)}  # fmt: skip
    del x
    for part in ("train", "test"):
        if len(arrays[f"y_{part}"]) == 0:
            raise BuildError(f"{src}: no good {part} images left" + ("\n" + format_report(bad, 50) if bad else ""), bad)
    name = name or out.name
    meta = {
        "format": BUILT_FORMAT, "version": 1, "name": name, "class_names": list(class_list),
        "source": {"train": str(train_src.path.absolute()), "split": split, "seed": seed,
                   "test": str(test_src.path.absolute()) if test_src else None},
        "image": {"size": list(opts.size), "color": opts.color, "invert": opts.invert, "fit": opts.fit},
        "counts": {"train": int(len(arrays["y_train"])), "test": int(len(arrays["y_test"])), "skipped": len(bad)},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }  # fmt: skip
    _write(out, arrays, meta, format_report(bad) if bad else "", force)
    notes = []
    for c, n in enumerate(np.bincount(arrays["y_train"], minlength=len(class_list))):
        if n == 0:
            notes.append(f"class {class_list[c]!r} has no training images")
    return BuildResult(
        path=out, name=name, class_names=tuple(class_list), n_train=len(arrays["y_train"]), n_test=len(arrays["y_test"]),
        image_shape=opts.shape, bad=bad, notes=notes, seconds=time.perf_counter() - t0,
    )  # fmt: skip


def _entry_order(b: BadEntry) -> tuple:
    file, _, line = b.where.rpartition(":")
    return (file, int(line)) if line.isdigit() else (b.where, 0)


def _fail_message(src: object, bad: list[BadEntry]) -> str:
    head = f"{src}: {len(bad)} bad entr{'y' if len(bad) == 1 else 'ies'}; nothing written (use --skip-bad / skip_bad=True to build from the good ones)"
    return head + "\n" + format_report(bad, 50)


def _classes(
    classes: str | os.PathLike[str] | Sequence[str] | None, raws: dict[str, list[_Raw]]
) -> tuple[list[str] | None, str]:
    if classes is None:
        all_raws = [r for rs in raws.values() for r in rs]
        if any(r.folder for r in all_raws):
            names = _folder_classes(all_raws)
            if len(names) > MAX_CLASSES:
                raise DatasetError(f"{len(names)} class folders; at most {MAX_CLASSES} classes are supported")
            return names, "the class folders"
        return None, ""
    if isinstance(classes, (str, os.PathLike)):
        return read_classes(classes), str(classes)
    names = [str(c) for c in classes]
    if len(set(names)) != len(names) or not names:
        raise DatasetError(f"classes must be distinct, non-empty names, got {names!r}")
    return names, "the classes given"


def _split(train: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``round(fraction * N)`` images, each class in proportion, drawn with ``seed``; order is kept.

    Per class the share is ``fraction * n`` rounded down; the images left over go to the classes with
    the largest remainders, so small classes are not all rounded away.
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(y[train])
    members = [np.flatnonzero(train & (y == c)) for c in classes]
    quota = np.array([fraction * len(m) for m in members])
    take = np.floor(quota).astype(int)
    extra = int(round(fraction * int(train.sum()))) - int(take.sum())
    if extra > 0:
        take[np.argsort(-(quota - take), kind="stable")[:extra]] += 1
    test = np.zeros_like(train)
    for m, k in zip(members, take, strict=True):
        test[rng.choice(m, k, replace=False)] = True
    if not test.any() or test.sum() == train.sum():
        raise DatasetError(f"split {fraction} of {int(train.sum())} images leaves no test or no training images")
    return train & ~test, test


def _is_built(path: Path) -> bool:
    try:
        return json.loads((path / "dataset.json").read_text(encoding="utf-8")).get("format") == BUILT_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _check_out(out: Path, force: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise DatasetError(f"{out}: exists and is not a folder; choose another output")
    if not force:
        raise DatasetError(f"{out}: already exists; use --force (force=True) to replace it, or another output")
    if any(out.iterdir()) and not _is_built(out):
        raise DatasetError(
            f"{out}: exists and is not a data set built by mnistlab; refusing to replace it, even with --force"
        )


def _building_prefix(out: Path) -> str:
    # The host and process id in the name let a later build tell a killed build's leftovers from a live one.
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()) or "host"
    return f".{out.name}.building-{host}-"


def remove_stale_builds(out: str | os.PathLike[str]) -> list[Path]:
    """Delete the hidden ``.OUT.building-*`` folders that builds of ``out`` on this host left when killed.

    Only folders whose process no longer runs are removed; the data set at ``out`` is never touched (a
    killed build leaves it as it was). Returns the folders removed.
    """
    out = Path(out)
    prefix = _building_prefix(out)
    removed = []
    for tmp in sorted(out.parent.glob(glob.escape(prefix) + "*")):
        pid = tmp.name[len(prefix) :].split("-", 1)[0]
        if tmp.is_dir() and pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        return True
    return True


def _write(out: Path, arrays: dict[str, np.ndarray], meta: dict, report: str, force: bool) -> None:
    """Write into a hidden folder beside ``out``, then rename it into place: all or nothing."""
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(out)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_building_prefix(out)}{os.getpid()}-", dir=out.parent))
    try:
        for key, arr in arrays.items():
            with fileio.atomic_open(tmp / f"{key}.npy") as f:
                np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
        if report:
            fileio.write_text(tmp / "skipped.txt", report + "\n")
        fileio.write_json(tmp / "dataset.json", meta)
        os.chmod(tmp, 0o777 & ~fileio._umask())  # mkdtemp makes 0700; a data set is as readable as other folders
        _check_out(out, force)  # again: something may have appeared there while we decoded
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            try:
                os.replace(tmp, out)
            except BaseException:
                os.replace(old / out.name, out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_data(path: str | os.PathLike[str]) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``(x_train, y_train), (x_test, y_test)`` of a data set folder built by ``build_dataset`` (or any path ``load`` takes).

    >>> (x_train, y_train), (x_test, y_test) = load_data("my_mnist")   # doctest: +SKIP
    """
    return load(path).as_keras()


__all__ = [
    "BadEntry",
    "BuildError",
    "BuildResult",
    "ImageOptions",
    "build_dataset",
    "decode_all",
    "decode_image",
    "detect_sources",
    "format_report",
    "load_data",
    "parse_size",
    "read_classes",
]
