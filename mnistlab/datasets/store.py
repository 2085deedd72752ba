"""Finding, verifying, caching and importing data sets.

Where a known data set is looked for, in order (``mnistlab data list`` prints this):
1. an explicit ``path=`` / ``--data-dir``;
2. the data home, ``$MNISTLAB_HOME`` (default ``~/.mnistlab``), folder ``<name>/``;
3. system folders such as ``/usr/share/datasets/<name>/`` (``$MNISTLAB_SYSTEM_DIRS`` overrides, ``:``-separated);
4. the files embedded in the package (MNIST only);
5. a download from the mirror list into the data home.

A location counts when it holds all four IDX files (gzipped or not). Its content is verified against
the canonical MD5s; a file that fails raises ``DatasetError`` and is never deleted or overwritten.
The first load decodes into ``<data home>/cache/``; later loads memory-map the ``.npy`` files there.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import time
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
CACHE_VERSION = 1


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
        if len(x) != len(y):
            raise DatasetError(f"{where}: {len(x)} {split} images but {len(y)} {split} labels")
        if len(y) and num_classes is not None and int(y.max()) >= num_classes:
            raise DatasetError(f"{where}: {split} label {int(y.max())} out of range (expected 0..{num_classes - 1})")


def _make(name: str, arrays: dict[str, np.ndarray], spec: DatasetSpec | None, source: str, class_names=None) -> Dataset:
    nc = spec.num_classes if spec else None
    if class_names is None and spec is None:
        top = max(int(arrays["y_train"].max(initial=0)), int(arrays["y_test"].max(initial=0)))
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
    if key.startswith("y") and a.dtype != np.uint8:
        if a.size and (a.min() < 0 or a.max() > 255):
            raise DatasetError(f"labels of {key} must lie in 0..255")
        return a.astype(np.uint8)
    return a


def _verify_arrays(spec: DatasetSpec, arrays: dict[str, np.ndarray], where: str) -> Dataset:
    for key, part in PARTS.items():
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
    except (OSError, ValueError, EOFError) as e:
        raise DatasetError(f"{path}: not a readable .npz ({e})") from None


# -- IDX sources, verified, with a memory-mapped cache ------------------------------------------


def _cache_dir(spec: DatasetSpec, files: dict[str, Path]) -> Path:
    h = hashlib.sha1(spec.name.encode(), usedforsecurity=False)
    for f in files.values():
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return data_home() / "cache" / f"{spec.name}-{h.hexdigest()[:16]}"


def _load_idx(spec: DatasetSpec, files: dict[str, Path], source: str) -> Dataset:
    cache = _cache_dir(spec, files)
    manifest = cache / "manifest.json"
    if manifest.is_file():
        try:
            meta = json.loads(manifest.read_text())
            if meta.get("version") == CACHE_VERSION:
                arrays = {k: np.load(cache / f"{k}.npy", mmap_mode="c", allow_pickle=False) for k in PARTS}
                return Dataset(spec.name, class_names=spec.class_names, source=source, digest=meta["digest"], **arrays)
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is rebuilt from the verified source below
    arrays = {}
    for key, f in files.items():
        data = idx.read_bytes(f)
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


def _write_cache(cache: Path, ds: Dataset) -> None:
    try:
        cache.mkdir(parents=True, exist_ok=True)
        for key in PARTS:
            with fileio.atomic_open(cache / f"{key}.npy") as f:
                np.save(f, getattr(ds, key), allow_pickle=False)
        fileio.write_json(cache / "manifest.json", {"version": CACHE_VERSION, "digest": ds.digest, "name": ds.name})
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
    dest.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for key, part in PARTS.items():
        data = b"" if key in files and files[key].suffix == ".gz" else idx.encode(arrays[key])
        for old in (dest / part, dest / f"{part}.gz"):
            if old.is_file():
                try:
                    same = idx.md5(idx.read_bytes(old)) == spec.md5[part]
                except DatasetError:
                    same = False
                if same:
                    old.unlink()  # identical content, rewritten below
                else:
                    os.replace(old, old.with_name(f"{old.name}.replaced-{stamp}"))
        if key in files and files[key].suffix == ".gz":
            fileio.write_bytes(dest / f"{part}.gz", files[key].read_bytes())  # verified above; keep its bytes
        else:
            fileio.write_bytes(dest / f"{part}.gz", gzip.compress(data, compresslevel=1, mtime=0))
    return dest


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
            else:
                state = "present" + ("" if chosen else " (used)")
                chosen = True
        rows.append({"kind": loc.kind, "path": str(loc.path), "state": state})
    return rows


def clear_cache() -> None:
    shutil.rmtree(data_home() / "cache", ignore_errors=True)


def load_for(config: TrainConfig, progress: bool = True) -> Dataset:
    """The data set a run config names, cut to its ``limit_train`` / ``limit_test``."""
    ds = load(config.dataset, path=config.data_dir, progress=progress)
    if config.limit_train:
        ds.x_train, ds.y_train = ds.x_train[: config.limit_train], ds.y_train[: config.limit_train]
    if config.limit_test:
        ds.x_test, ds.y_test = ds.x_test[: config.limit_test], ds.y_test[: config.limit_test]
    return ds
