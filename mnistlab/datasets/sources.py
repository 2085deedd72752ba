"""Where a data set's images and labels are listed: the three kinds of source ``data build`` reads.

- the course layout: a list file with one ``file_name label`` per line and a folder of the same name
  holding the images (``mnist_train_jpg_60000.txt`` + ``mnist_train_jpg_60000/``); given as the list
  file, or the folder holding both pairs (the ``train`` pair and the ``test`` pair are found by name);
- one sub-folder per class (``root/cat/*.png``), or ``root/train/<class>/`` and ``root/test/<class>/``;
- a CSV file of ``path,label`` rows (a header row is allowed), paths relative to the CSV's folder.

Every entry must stay inside its image folder: ``../`` and absolute paths are refused, and so is a
symbolic link (to a file, or a folder on the way) that leads out of it. Folders are walked without
following links to folders (``again -> .`` would repeat the images, ``up -> ..`` never end); such links
are reported as bad entries. Reading the pixels (and refusing FIFOs and devices) is
:mod:`mnistlab.datasets.decoding`'s job.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mnistlab.errors import DatasetError

IMAGE_EXTS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".pnm"}
)
MAX_CLASSES = 256  # labels are stored as uint8
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


@dataclass
class Entry:
    """An entry before its label is resolved: where it was listed, the image file, the label text."""

    where: str
    path: str
    label: str
    folder: bool = False  # the label is a class folder's name


@dataclass
class Source:
    kind: str  # list | csv | folders
    path: Path
    root: Path  # where the images are

    def describe(self) -> str:
        return {"list": "list file", "csv": "CSV file", "folders": "class folders"}[self.kind] + f" {self.path}"


def detect_sources(src: str | os.PathLike[str]) -> tuple[Source, Source | None]:
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
        return Source("list", train[0], src / train[0].stem), (
            Source("list", test[0], src / test[0].stem) if test else None
        )
    if (src / "train").is_dir() and _class_dirs(src / "train"):
        test = src / "test"
        return Source("folders", src / "train", src / "train"), (
            Source("folders", test, test) if test.is_dir() else None
        )
    if _class_dirs(src):
        return Source("folders", src, src), None
    raise DatasetError(
        f"{src}: no data set source here (expected a list file NAME.txt beside a folder NAME/, "
        "class sub-folders with images, or train/ and test/ holding class sub-folders)"
    )


def _file_source(f: Path) -> Source:
    if f.suffix.lower() == ".csv":
        return Source("csv", f, f.parent)
    images = f.with_suffix("")
    return Source("list", f, images if images.is_dir() else f.parent)


def _class_dirs(root: Path) -> list[Path]:
    """Sub-folders holding at least one image (hidden ones and links to folders skipped)."""
    out = []
    with contextlib.suppress(OSError), os.scandir(root) as it:
        for d in sorted(it, key=lambda e: e.name):
            if d.is_dir(follow_symlinks=False) and not d.name.startswith(".") and any(_image_files(Path(d.path))):
                out.append(Path(d.path))
    return out


def _linked_dirs(root: Path) -> list[str]:
    """Links to folders directly in ``root`` (not followed: a class folder must really be inside)."""
    with contextlib.suppress(OSError), os.scandir(root) as it:
        return sorted(e.path for e in it if not e.name.startswith(".") and e.is_symlink() and e.is_dir())
    return []


def _image_files(folder: Path, links: list[str] | None = None) -> Iterator[str]:
    """Image files under ``folder``, in name order. Links to folders are not followed (``again -> .``
    would repeat every image, ``up -> ..`` never end); they are added to ``links`` instead."""
    for dirpath, dirnames, filenames in os.walk(folder):  # os.walk does not follow links by default
        keep = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            if os.path.islink(os.path.join(dirpath, d)):
                if links is not None:
                    links.append(os.path.join(dirpath, d))
                continue
            keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTS:
                yield os.path.join(dirpath, name)


class _Inside:
    """Keeps entries inside an image folder: each path is resolved (links followed) and must stay in it.

    Folders on the way are resolved once each (a data set has few); the file itself costs one
    ``lstat``, and a ``realpath`` only when it is a link. The path returned has no link left in it, so
    the decoder can refuse to follow links (one swapped in meanwhile is then refused, not followed).
    """

    def __init__(self, root: Path) -> None:
        self.shown = root
        self.root = os.path.realpath(root)
        self.dirs: dict[str, tuple[str, str]] = {}  # folder -> (path to use, real path)

    def _within(self, real: str) -> bool:
        return real == self.root or real.startswith(self.root.rstrip(os.sep) + os.sep)

    def resolve(self, path: str) -> tuple[str, str | None]:
        """``(path to read, None)``, or ``(path, reason)`` when it leads out of the folder."""
        folder, name = os.path.split(path)
        known = self.dirs.get(folder)
        if known is None:
            real_dir = os.path.realpath(folder)
            # No link on the way: keep the path as the user wrote it (messages show it so).
            known = self.dirs[folder] = (folder if real_dir == os.path.abspath(folder) else real_dir, real_dir)
        real_dir, resolved = known
        if not self._within(resolved):
            return path, f"path leads out of the image folder {self.shown} (through a link to {resolved})"
        real = os.path.join(real_dir, name)
        try:
            if not stat.S_ISLNK(os.lstat(real).st_mode):
                return real, None
            target = os.path.realpath(real, strict=True)
        except OSError:  # missing, or a broken or looping link: the decoder says which
            return real, None
        if not self._within(target):
            return path, f"symbolic link to {target}, outside the image folder {self.shown}"
        return target, None


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


def read_entries(source: Source, bad: list[BadEntry]) -> list[Entry]:
    """The entries a source lists, each with its image's real path; bad ones are added to ``bad``."""
    inside = _Inside(source.root)
    if source.kind == "folders":
        out = []
        links = _linked_dirs(source.root)
        for d in _class_dirs(source.root):
            for p in _image_files(d, links):
                real, why = inside.resolve(p)
                if why:
                    bad.append(BadEntry(p, why))
                else:
                    out.append(Entry(p, real, d.name, folder=True))
        loose = [n for n in os.listdir(source.root) if os.path.splitext(n)[1].lower() in IMAGE_EXTS]
        if loose:
            bad += [BadEntry(str(source.root / n), "image outside any class folder") for n in sorted(loose)]
        bad += [
            BadEntry(p, "link to a folder, not followed (it could repeat images or leave the folder)") for p in links
        ]
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
        real, why = inside.resolve(f"{root}{os.sep}{rel}")
        if why:
            bad.append(BadEntry(where, why))
            continue
        out.append(Entry(where, real, label))
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


def folder_classes(raws: list[Entry]) -> list[str]:
    """The class folders' names, in number order when all are numbers, else in name order."""
    names = sorted({r.label for r in raws if r.folder})
    if names and all(_DIGITS.fullmatch(n) for n in names):
        names.sort(key=int)  # folders 0..10 in number order, not "10" before "2"
    return names


def resolve_labels(
    raws: list[Entry], classes: list[str] | None, classes_from: str, bad: list[BadEntry]
) -> tuple[list[int], list[bool]]:
    """Each entry's label number and whether it is good; bad labels are added to ``bad``."""
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


__all__ = [
    "IMAGE_EXTS",
    "MAX_CLASSES",
    "BadEntry",
    "Entry",
    "Source",
    "detect_sources",
    "folder_classes",
    "read_classes",
    "read_entries",
    "resolve_labels",
]
