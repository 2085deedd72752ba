"""Finding, verifying, caching and importing data sets.

Where a known data set is looked for, in order (``mnistlab data list`` prints this):
1. an explicit ``path=`` / ``--data-dir``;
2. the data home, ``$MNISTLAB_HOME`` (default ``~/.mnistlab``), folder ``<name>/``;
3. system folders such as ``/usr/share/datasets/<name>/`` (``$MNISTLAB_SYSTEM_DIRS`` overrides, ``:``-separated);
4. the files embedded in the package (MNIST only);
5. a download from the mirror list into the data home.

A location counts when it holds all four IDX files (gzipped or not). Its content is verified against
the canonical MD5s; a file that fails raises ``DatasetError`` and is never deleted or overwritten.
The first load decodes into ``<data home>/cache/``; later loads memory-map the ``.npy`` files there,
each first checked against the checksum in the cache's manifest (a damaged cache is rebuilt from the
verified source, and a note on stderr says so).

Arrays are checked as they come: labels must be whole numbers 0..255 (a float, NaN or negative label
is refused, never truncated), images ``(N, H, W)`` or channels-last ``(N, H, W, 1|3)``, and a set
without class names must use every class 0..max label (one stray 255 among 0..9 is refused rather
than making a 256-class model).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import sys
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mnistlab import fileio
from mnistlab.datasets import download as dl
from mnistlab.datasets import idx
from mnistlab.datasets.specs import PARTS, SPECS, DatasetSpec, get_spec
from mnistlab.errors import DatasetError

if TYPE_CHECKING:
    from mnistlab.config import TrainConfig

EMBEDDED_DIR = Path(__file__).parent / "data"
BUILT_FORMAT = "mnistlab-dataset"
CACHE_VERSION = 2  # 2: the manifest holds a checksum of each .npy file


def data_home() -> Path:
    return Path(os.environ.get("MNISTLAB_HOME") or "~/.mnistlab").expanduser()


@dataclass
class Dataset:
    """Four arrays in Keras's layout plus what identifies them.

    >>> ds = load("mnist")
    >>> (x_train, y_train), (x_test, y_test) = ds.as_keras()
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: str
    digest: str = ""
    meta: dict = field(default_factory=dict)

    def as_keras(self) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        return (self.x_train, self.y_train), (self.x_test, self.y_test)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) as the models take it."""
        s = self.x_train.shape
        return (1, s[1], s[2]) if self.x_train.ndim == 3 else (s[3], s[1], s[2])

    def identity(self) -> dict:
        return {"name": self.name, "digest": self.digest}


@dataclass(frozen=True)
class Location:
    kind: str  # path | home | system | embedded | download
    path: Path

    def files(self) -> dict[str, Path] | None:
        """The four IDX files here (``.gz`` preferred), or None unless all are present."""
        found = {}
        for key, part in PARTS.items():
            for cand in (self.path / f"{part}.gz", self.path / part):
                if cand.is_file():
                    found[key] = cand
                    break
            else:
                return None
        return found


def system_dirs(spec: DatasetSpec) -> list[Path]:
    env = os.environ.get("MNISTLAB_SYSTEM_DIRS")
    if env is None:
        return [Path(d) for d in spec.system_dirs]
    return [Path(d) / folder for d in env.split(":") if d for folder in _folder_names(spec)]


def _folder_names(spec: DatasetSpec) -> list[str]:
    return [spec.name, spec.name.replace("_", "-")] if "_" in spec.name else [spec.name]


def locations(spec: DatasetSpec, path: str | os.PathLike[str] | None = None) -> list[Location]:
    """Every place ``spec`` is looked for, in order."""
    locs = []
    if path is not None:
        locs.append(Location("path", Path(path)))
    locs.append(Location("home", data_home() / spec.name))
    locs += [Location("system", d) for d in system_dirs(spec)]
    if spec.embedded:
        locs.append(Location("embedded", EMBEDDED_DIR / spec.name))
    locs.append(Location("download", data_home() / spec.name))
    return locs


def load(
    name_or_path: str | os.PathLike[str],
    *,
    path: str | os.PathLike[str] | None = None,
    download: bool = True,
    mirrors: list[str] | None = None,
    progress: bool = True,
) -> Dataset:
    """Load a known data set by name (``mnist``, ``fashion_mnist``), or any data set folder/file by path.

    A path may be a folder of four IDX files, a Keras-style ``.npz``, or a folder written by
    ``mnistlab data build``.
    """
    spec = get_spec(str(name_or_path))
    if spec is None:
        return load_path(Path(name_or_path))
    if path is not None and Path(path).suffix == ".npz":
        return _verify_arrays(spec, _read_npz(Path(path)), str(path))
    for loc in locations(spec, path):
        if loc.kind == "download":
            if not download:
                break
            have = {p for p in PARTS.values() if (loc.path / f"{p}.gz").is_file() or (loc.path / p).is_file()}
            missing = [p for p in PARTS.values() if p not in have]
            dl.download(spec, loc.path, mirrors=mirrors, progress=progress, parts=missing)
        files = loc.files()
        if files is None:
            if loc.kind == "path":
                raise DatasetError(f"{loc.path}: no {spec.name} IDX files there ({_expected_names()})")
            continue
        return _load_idx(spec, files, f"{loc.kind}:{loc.path}")
    raise DatasetError(
        f"{spec.name} not found in {', '.join(str(loc.path) for loc in locations(spec, path)[:-1])} and download is off"
    )


def _expected_names() -> str:
    return ", ".join(f"{p}[.gz]" for p in PARTS.values())


def load_path(path: Path) -> Dataset:
    """Load a data set given only its location; known content is recognised by its digest."""
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder (not a known data set name either: {', '.join(SPECS)})")
    if path.is_file() and path.suffix == ".npz":
        arrays = _read_npz(path)
        for key in ("y_train", "y_test"):
            _check_labels(arrays[key], f"{path}: {key}")
        spec = _recognise(arrays)
        if spec is not None:
            return _verify_arrays(spec, arrays, str(path))
        return _make(path.stem, arrays, None, str(path))
    if path.is_dir() and (path / "dataset.json").is_file():
        return _load_built(path)
    if path.is_dir():
        files = Location("path", path).files()
        if files is not None:
            arrays = {k: _parse_file(k, f) for k, f in files.items()}
            spec = _recognise(arrays)
            if spec is not None:
                return _load_idx(spec, files, f"path:{path}")
            return _make(path.name, arrays, None, str(path))
    raise DatasetError(
        f"{path}: not a data set (expected a folder with {_expected_names()}, "
        "a Keras-style .npz, or a folder made by `mnistlab data build`)"
    )


def _parse_file(key: str, f: Path) -> np.ndarray:
    return idx.parse(idx.read_bytes(f), str(f), 3 if key.startswith("x") else 1)


def _recognise(arrays: dict[str, np.ndarray]) -> DatasetSpec | None:
    digest = idx.md5(arrays["y_train"])
    for spec in SPECS.values():
        if spec.md5[PARTS["y_train"]] == digest:
            return spec
    return None


def _check_arrays(arrays: dict[str, np.ndarray], where: str, num_classes: int | None) -> None:
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or y.ndim != 1 or x.ndim not in (3, 4):
            raise DatasetError(
                f"{where}: x_{split} must be uint8 of shape (N, H, W[, C]) and y_{split} of shape (N,); "
                f"got {x.dtype} {x.shape} and {y.dtype} {y.shape}"
            )
        if x.ndim == 4 and x.shape[3] not in (1, 3):
            raise DatasetError(
                f"{where}: x_{split} has shape {x.shape}: images are (N, H, W, C) with C = 1 (gray) or 3 (RGB) "
                f"channels last, as in Keras; got {x.shape[3]} channels"
            )
        if len(x) != len(y):
            raise DatasetError(f"{where}: {len(x)} {split} images but {len(y)} {split} labels")
        _check_labels(y, f"{where}: y_{split}")
        if len(y) and num_classes is not None and int(y.max()) >= num_classes:
            raise DatasetError(f"{where}: {split} label {int(y.max())} out of range (expected 0..{num_classes - 1})")


def _check_labels(y: np.ndarray, where: str) -> None:
    """Labels are whole numbers 0..255: a float, NaN or negative label is refused, never truncated."""
    if y.dtype.kind in "biu":
        bad = np.flatnonzero(y < 0) if y.dtype.kind == "i" else np.empty(0, np.intp)
    elif y.dtype.kind == "f":
        finite = np.isfinite(y)
        if not finite.all():
            i = int(np.flatnonzero(~finite)[0])
            raise DatasetError(f"{where}: label {y[i]} at index {i} is not a number (labels are integers 0..255)")
        frac = np.flatnonzero(y != np.floor(y))
        if len(frac):
            i = int(frac[0])
            raise DatasetError(f"{where}: label {y[i]} at index {i} is not a whole number (labels are integers 0..255)")
        bad = np.flatnonzero(y < 0)
    else:
        raise DatasetError(f"{where}: labels must be integers, got dtype {y.dtype}")
    if len(bad):
        i = int(bad[0])
        raise DatasetError(f"{where}: label {y[i]:g} at index {i} is negative (labels are integers 0..255)")
    if y.size and y.max() > 255:
        i = int(np.argmax(y))
        raise DatasetError(f"{where}: label {y[i]:g} at index {i} is above 255 (labels are integers 0..255)")


def _check_no_gaps(arrays: dict[str, np.ndarray], where: str, top: int) -> None:
    """Without class names, the classes are 0..max label; refuse a set where some of them never occur.

    One stray label 255 among 0..9 would otherwise make a 256-class model without a word.
    """
    seen = np.zeros(top + 1, bool)
    for key in ("y_train", "y_test"):
        seen[np.asarray(arrays[key], dtype=np.int64)] = True
    missing = np.flatnonzero(~seen)
    if len(missing):
        shown = ", ".join(map(str, missing[:5])) + (", …" if len(missing) > 5 else "")
        raise DatasetError(
            f"{where}: labels run up to {top}, but {len(missing)} of the classes 0..{top} have no image ({shown}); "
            "a stray label? Fix the labels, or build the set with `mnistlab data build --classes FILE` to name "
            "the classes"
        )


def _make(name: str, arrays: dict[str, np.ndarray], spec: DatasetSpec | None, source: str, class_names=None) -> Dataset:
    nc = spec.num_classes if spec else None
    if class_names is None and spec is None:
        for split in ("train", "test"):
            _check_labels(arrays[f"y_{split}"], f"{source}: y_{split}")
        top = max(int(arrays["y_train"].max(initial=0)), int(arrays["y_test"].max(initial=0)))
        _check_no_gaps(arrays, source, top)
        class_names = tuple(str(i) for i in range(top + 1))
        nc = len(class_names)
    elif class_names is not None:
        nc = len(class_names)
    _check_arrays(arrays, source, nc)
    arrays = {k: _as_uint8_labels(k, v) for k, v in arrays.items()}
    digest = hashlib.md5("".join(idx.md5(arrays[k]) for k in PARTS).encode(), usedforsecurity=False).hexdigest()
    return Dataset(
        name=spec.name if spec else name,
        class_names=tuple(spec.class_names if spec else class_names),
        source=source,
        digest=digest,
        **arrays,
    )


def _as_uint8_labels(key: str, a: np.ndarray) -> np.ndarray:
    # _check_labels has made sure these are whole numbers 0..255.
    return a.astype(np.uint8) if key.startswith("y") and a.dtype != np.uint8 else a


def _verify_arrays(spec: DatasetSpec, arrays: dict[str, np.ndarray], where: str) -> Dataset:
    for key, part in PARTS.items():
        if key.startswith("y"):
            _check_labels(arrays[key], f"{where}: {key}")
        actual = idx.md5(arrays[key].astype(np.uint8) if key.startswith("y") else arrays[key])
        if actual != spec.md5[part]:
            raise DatasetError(
                f"{where}: {key} has content MD5 {actual}, expected {spec.md5[part]} for {spec.title} "
                f"(as the IDX file {part}); the file was left untouched"
            )
    return _make(spec.name, arrays, spec, where)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in PARTS if k not in z.files]
            if missing:
                raise DatasetError(f"{path}: missing arrays {', '.join(missing)} (has {', '.join(z.files) or 'none'})")
            return {k: np.asarray(z[k]) for k in PARTS}
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise DatasetError(f"{path}: not a readable .npz, truncated or corrupt ({e})") from None


# -- IDX sources, verified, with a memory-mapped cache ------------------------------------------


def _cache_dir(spec: DatasetSpec, files: dict[str, Path]) -> Path:
    h = hashlib.sha1(spec.name.encode(), usedforsecurity=False)
    for f in files.values():
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return data_home() / "cache" / f"{spec.name}-{h.hexdigest()[:16]}"


def _load_idx(spec: DatasetSpec, files: dict[str, Path], source: str) -> Dataset:
    cache = _cache_dir(spec, files)
    cached = _read_cache(cache, spec, source)
    if cached is not None:
        return cached
    arrays = {}
    for key, f in files.items():
        data = idx.read_bytes(f, limit=dl.expected_size(spec, PARTS[key]))
        actual = idx.md5(data)
        expected = spec.md5[PARTS[key]]
        if actual != expected:
            raise DatasetError(
                f"{f}: content MD5 {actual} does not match the canonical {expected} for {spec.title}; "
                f"the file was left untouched. Replace it with a good copy (`mnistlab data import {spec.name} PATH`) "
                "or move it away to use the next location"
            )
        arrays[key] = idx.parse(data, str(f), 3 if key.startswith("x") else 1)
    ds = _make(spec.name, arrays, spec, source)
    _write_cache(cache, ds)
    return ds


def checksum(path: Path) -> str:
    """A fast checksum of a file's bytes (about 20 ms for MNIST's 55 MB cache on a laptop core).

    Two sums of the file's 64-bit words mod 2^64, plain and weighted by block position: any change of
    one word, and any reordering of blocks, changes it. It guards against damage (bit rot, a stray
    write, a truncated copy), not against a forger, who could rewrite the manifest as well.
    """
    size = path.stat().st_size
    if size == 0:
        return "0"
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    whole = size // 8 * 8
    words = mm[:whole].view(np.uint64)
    block = 4096
    full = len(words) // block * block
    sums = words[:full].reshape(-1, block).sum(axis=1, dtype=np.uint64)
    if full < len(words):
        sums = np.append(sums, words[full:].sum(dtype=np.uint64))
    tail = int.from_bytes(bytes(mm[whole:]), "little")
    with np.errstate(over="ignore"):
        s1 = int(sums.sum(dtype=np.uint64))
        s2 = int(np.dot(sums, np.arange(1, len(sums) + 1, dtype=np.uint64)))
    del words, mm
    return f"{size:x}-{s1:016x}-{s2:016x}-{tail:x}"


def _read_cache(cache: Path, spec: DatasetSpec, source: str) -> Dataset | None:
    """The decoded arrays from ``cache`` when every file matches the checksum in its manifest, else None.

    A damaged cache is said so on stderr and rebuilt by the caller from the verified source.
    """
    manifest = cache / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        meta = json.loads(manifest.read_text())
        if meta.get("version") != CACHE_VERSION:
            return None
        sums = meta["checksums"]
        for key in PARTS:
            if checksum(cache / f"{key}.npy") != sums[key]:
                raise ValueError(f"{key}.npy does not match its checksum")
        arrays = {k: np.load(cache / f"{k}.npy", mmap_mode="c", allow_pickle=False) for k in PARTS}
        return Dataset(spec.name, class_names=spec.class_names, source=source, digest=meta["digest"], **arrays)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        print(
            f"mnistlab: note: the decoded cache {cache} is damaged ({reason}); rebuilding it from the verified source",
            file=sys.stderr,
        )
        return None


def _write_cache(cache: Path, ds: Dataset) -> None:
    try:
        cache.mkdir(parents=True, exist_ok=True)
        (cache / "manifest.json").unlink(missing_ok=True)  # no manifest while the arrays change
        sums = {}
        for key in PARTS:
            with fileio.atomic_open(cache / f"{key}.npy") as f:
                np.save(f, getattr(ds, key), allow_pickle=False)
            sums[key] = checksum(cache / f"{key}.npy")
        fileio.write_json(
            cache / "manifest.json",
            {"version": CACHE_VERSION, "digest": ds.digest, "name": ds.name, "checksums": sums},
        )
    except OSError:
        pass  # no writable data home: every load decodes afresh, which is slower but correct


def _load_built(path: Path) -> Dataset:
    try:
        meta = json.loads((path / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path / 'dataset.json'}: unreadable ({e})") from None
    if meta.get("format") != BUILT_FORMAT:
        raise DatasetError(
            f"{path / 'dataset.json'}: field 'format' is {meta.get('format')!r}, expected {BUILT_FORMAT!r}"
        )
    arrays = {}
    for key in PARTS:
        f = path / f"{key}.npy"
        try:
            arrays[key] = np.load(f, mmap_mode="c", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DatasetError(f"{f}: unreadable ({e})") from None
    names = meta.get("class_names")
    if not isinstance(names, list) or not names:
        raise DatasetError(f"{path / 'dataset.json'}: field 'class_names' must be a non-empty list")
    ds = _make(meta.get("name") or path.name, arrays, None, f"path:{path}", class_names=tuple(map(str, names)))
    ds.meta = meta
    return ds


# -- import by hand -----------------------------------------------------------------------------


def import_dataset(name: str, src: str | os.PathLike[str]) -> Path:
    """Verify a folder of IDX files (gzipped or not) or a Keras ``.npz``, then copy it into the data home.

    Returns the folder written. Nothing in the data home changes unless every file verifies; a file
    already there with other content is kept beside as ``<file>.replaced-<time>``.
    """
    spec = get_spec(name)
    if spec is None:
        raise DatasetError(f"unknown data set {name!r} (known: {', '.join(SPECS)})")
    src = Path(src)
    files: dict[str, Path] = {}
    if src.is_file() and src.suffix == ".npz":
        arrays = _read_npz(src)
    elif src.is_dir():
        files = Location("path", src).files() or {}
        if not files:
            raise DatasetError(f"{src}: expected {_expected_names()} in this folder")
        arrays = {k: _parse_file(k, f) for k, f in files.items()}
    else:
        raise DatasetError(f"{src}: not a folder of IDX files nor a .npz file")
    _verify_arrays(spec, arrays, str(src))  # raises before anything is written
    dest = data_home() / spec.name
    dl.make_home_folder(dest, "data set folder")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for key, part in PARTS.items():
        olds = [p for p in (dest / part, dest / f"{part}.gz") if p.is_file()]
        if any(_holds(spec, key, old) for old in olds):
            continue  # a good copy is already there: nothing to write, nothing to risk
        if key in files and files[key].suffix == ".gz":
            data = _read_source(files[key])  # verified above; keep its bytes
        else:
            data = gzip.compress(idx.encode(arrays[key]), compresslevel=1, mtime=0)
        _install(dest / f"{part}.gz", data, spec, key, olds, stamp)
    return dest


def _holds(spec: DatasetSpec, key: str, path: Path) -> bool:
    """Whether ``path`` holds ``spec``'s ``key`` with the canonical content."""
    try:
        return idx.md5(idx.read_bytes(path, limit=dl.expected_size(spec, PARTS[key]))) == spec.md5[PARTS[key]]
    except DatasetError:
        return False


def _read_source(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror or e})") from None


def _install(dest: Path, data: bytes, spec: DatasetSpec, key: str, olds: list[Path], stamp: str) -> None:
    """Write ``data`` beside ``dest``, read it back and verify it, and only then move it into place.

    A full disk or a read-only folder fails before anything in the data home changed; files there with
    other content are kept as ``<file>.replaced-<time>`` (a rename, which needs no space).
    """
    tmp = dest.with_name(f".{dest.name}.import")
    try:
        try:
            fileio.write_bytes(tmp, data)
        except OSError as e:
            raise DatasetError(
                f"{dest.parent}: cannot write {dest.name} ({e.strerror or e}); the data home was left as it was"
            ) from None
        if not _holds(spec, key, tmp):
            raise DatasetError(f"{tmp}: the copy written does not read back verified; the data home was left as it was")
        try:
            for old in olds:
                os.replace(old, old.with_name(f"{old.name}.replaced-{stamp}"))
            os.replace(tmp, dest)
        except OSError as e:
            raise DatasetError(f"{dest}: cannot move the verified copy into place ({e.strerror or e})") from None
    finally:
        with contextlib.suppress(OSError):  # on a read-only folder it was never made
            tmp.unlink(missing_ok=True)


def describe_locations(spec: DatasetSpec, path: str | None = None) -> list[dict]:
    """Where ``spec`` is looked for and what is there: rows for ``mnistlab data list``."""
    rows = []
    chosen = False
    for loc in locations(spec, path):
        if loc.kind == "download":
            state = "mirrors: " + ", ".join(dl.mirrors_for(spec))
        else:
            files = loc.files()
            if files is None:
                n = sum(1 for p in PARTS.values() if (loc.path / p).is_file() or (loc.path / f"{p}.gz").is_file())
                state = f"{n}/4 files" if n else "absent"
            elif chosen:
                state = "present"
            else:
                # The first complete location is the one load() takes: say whether it will work.
                bad = [f for key, f in files.items() if not _verified(spec, files, key)]
                state = (
                    "present (used)" if not bad else f"present, but {bad[0].name} has the wrong content (load fails)"
                )
                chosen = True
        rows.append({"kind": loc.kind, "path": str(loc.path), "state": state})
    return rows


def _verified(spec: DatasetSpec, files: dict[str, Path], key: str) -> bool:
    """Whether ``files[key]`` has the canonical content: known from a cache built from these very files
    (its key covers their paths, sizes and mtimes), else checked now."""
    manifest = _cache_dir(spec, files) / "manifest.json"
    return manifest.is_file() or _holds(spec, key, files[key])


def clear_cache() -> None:
    shutil.rmtree(data_home() / "cache", ignore_errors=True)


def load_for(config: TrainConfig, progress: bool = True, download: bool = True) -> Dataset:
    """The data set a run config names, cut to its ``limit_train`` / ``limit_test``."""
    ds = load(config.dataset, path=config.data_dir, download=download, progress=progress)
    if config.limit_train:
        ds.x_train, ds.y_train = ds.x_train[: config.limit_train], ds.y_train[: config.limit_train]
    if config.limit_test:
        ds.x_test, ds.y_test = ds.x_test[: config.limit_test], ds.y_test[: config.limit_test]
    return ds
