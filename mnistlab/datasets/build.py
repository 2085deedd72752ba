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
label, duplicate, a path or link leading out of the image folder, a FIFO or device, an image too large
to be decoded safely). By default one bad entry fails the build and nothing is written;
``skip_bad=True`` builds from the good ones. The result is a folder that ``load(path)``, ``load_data(path)`` and ``mnistlab train --dataset``
read: ``dataset.json`` + ``x_train.npy, y_train.npy, x_test.npy, y_test.npy`` as ``uint8`` (the
course keeps float64 arrays, eight times the memory). It appears at once, complete, or not at all.

The work is split by job: :mod:`~mnistlab.datasets.sources` reads the lists and folders (and keeps
every entry inside its image folder), :mod:`~mnistlab.datasets.decoding` turns the files into pixels
in parallel, this module checks labels and classes, splits, and writes the folder with
:func:`mnistlab.fileio.atomic_folder`.

>>> result = build_dataset("mnist_image_label", "my_mnist")   # doctest: +SKIP
>>> (x_train, y_train), (x_test, y_test) = load_data("my_mnist")   # doctest: +SKIP
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import shutil
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnistlab import fileio
from mnistlab.datasets.decoding import (
    COLORS,
    DEFAULT_MAX_PIXELS,
    FITS,
    ImageOptions,
    decode_all,
    decode_image,
)
from mnistlab.datasets.sources import (
    MAX_CLASSES,
    BadEntry,
    Entry,
    detect_sources,
    folder_classes,
    read_classes,
    read_entries,
    resolve_labels,
)
from mnistlab.datasets.store import BUILT_FORMAT, load
from mnistlab.errors import DatasetError


class BuildError(DatasetError):
    """The build found bad entries and wrote nothing; ``.bad`` holds all of them."""

    def __init__(self, message: str, bad: list[BadEntry]) -> None:
        super().__init__(message)
        self.bad = bad


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
    raws = {"train": read_entries(train_src, bad)}
    if test_src is not None:
        raws["test"] = read_entries(test_src, bad)
    class_list, classes_from = _classes(classes, raws)
    items: list[tuple[str, Entry, int]] = []
    first_seen: dict[str, tuple[str, str]] = {}
    for part, entries in raws.items():
        labels, ok = resolve_labels(entries, class_list, classes_from, bad)
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

    # The sources resolved every path (no link left in it): a link swapped in since is refused, not followed.
    x, failed = decode_all(
        [r.path for _, r, _ in items], opts, workers=workers, progress=progress, follow_symlinks=False
    )
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
    classes: str | os.PathLike[str] | Sequence[str] | None, raws: dict[str, list[Entry]]
) -> tuple[list[str] | None, str]:
    if classes is None:
        all_raws = [r for rs in raws.values() for r in rs]
        if any(r.folder for r in all_raws):
            names = folder_classes(all_raws)
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
    with fileio.atomic_folder(out, prefix=f"{_building_prefix(out)}{os.getpid()}-") as tmp:
        for key, arr in arrays.items():
            with fileio.atomic_open(tmp / f"{key}.npy") as f:
                np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
        if report:
            fileio.write_text(tmp / "skipped.txt", report + "\n")
        fileio.write_json(tmp / "dataset.json", meta)
        _check_out(out, force)  # again: something may have appeared there while we decoded


def load_data(path: str | os.PathLike[str]) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``(x_train, y_train), (x_test, y_test)`` of a data set folder built by ``build_dataset`` (or any path ``load`` takes).

    >>> (x_train, y_train), (x_test, y_test) = load_data("my_mnist")   # doctest: +SKIP
    """
    return load(path).as_keras()


__all__ = [
    "COLORS",
    "DEFAULT_MAX_PIXELS",
    "FITS",
    "MAX_CLASSES",
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
