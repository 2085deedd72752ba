"""Fetch a data set's files from a list of mirrors, verifying content before anything is kept.

Each file is streamed into a temp file beside its destination; only after the body is complete and its
uncompressed MD5 matches the canonical one is it renamed into place. Any failure (HTTP error, timeout,
truncated body, bad digest) moves on to the next mirror, and the temp file is removed.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import os
import socket
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from mnistlab.datasets import idx
from mnistlab.datasets.specs import PARTS, DatasetSpec
from mnistlab.errors import DatasetError, DownloadError
from mnistlab.progress import Progbar

CHUNK = 1 << 16


def make_home_folder(path: Path, what: str) -> None:
    """Create ``path`` (a folder under the data home) or say in one line why it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(f"{path}: cannot create the {what} ({e.strerror or e}); check MNISTLAB_HOME") from None


def mirrors_for(spec: DatasetSpec, mirrors: list[str] | None = None) -> list[str]:
    """Mirrors to try, in order: ``mirrors`` if given, else ``$MNISTLAB_MIRRORS`` (comma-separated), else built-in."""
    if mirrors:
        return list(mirrors)
    env = os.environ.get("MNISTLAB_MIRRORS", "").strip()
    if env:
        return [m.strip() for m in env.split(",") if m.strip()]
    return list(spec.mirrors)


def max_download(size: int) -> int:
    """The most bytes accepted for a file whose uncompressed content is ``size`` bytes.

    A mirror may send it gzipped or not; gzip never grows data by more than a few bytes per 16 KB
    block, so anything longer is not the file (a broken or hostile mirror) and is cut off.
    """
    return size + size // 100 + (1 << 16)


def _fetch(url: str, dest: Path, timeout: float, progress: bool, cap: int | None = None) -> Path:
    """Stream ``url`` into a temp file in ``dest``'s folder; return the temp path (caller renames).

    More than ``cap`` bytes (announced or sent) fails the mirror before the disk fills.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".download", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if cap is not None and total is not None and total > cap:
                raise DatasetError(f"announces {total:,} bytes, more than the {cap:,} this file can take")
            bar = Progbar(total, unit="B", byte_units=True, enabled=progress)
            got = 0
            while chunk := resp.read(CHUNK):
                got += len(chunk)
                if cap is not None and got > cap:
                    raise DatasetError(f"sent more than the {cap:,} bytes this file can take")
                out.write(chunk)
                bar.update(got)
            if total is not None and got != total:
                raise DatasetError(f"truncated body ({got} of {total} bytes)")
            bar.update(got, finalize=True)
            out.flush()
            os.fsync(out.fileno())
        return Path(tmp)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# Errors of our own disk, not of the mirror: trying the next mirror cannot help.
FATAL_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.ENOTDIR}


def expected_size(spec: DatasetSpec, part: str) -> int:
    """The length of one of ``spec``'s uncompressed IDX files, e.g. 47,040,016 bytes for MNIST's training images."""
    n = spec.train_count if part.startswith("train") else spec.test_count
    return 16 + n * 28 * 28 if "images" in part else 8 + n


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code}"
    if isinstance(e, urllib.error.URLError):
        r = e.reason
        return "timeout" if isinstance(r, socket.timeout | TimeoutError) else str(r)
    if isinstance(e, socket.timeout | TimeoutError):
        return "timeout"
    if isinstance(e, http.client.IncompleteRead):
        return f"truncated body ({len(e.partial)} bytes read)"
    if isinstance(e, DatasetError):
        return str(e)
    return f"{type(e).__name__}: {e}"


def download(
    spec: DatasetSpec,
    dest_dir: Path,
    *,
    mirrors: list[str] | None = None,
    timeout: float = 30.0,
    progress: bool = True,
    parts: list[str] | None = None,
) -> None:
    """Download the missing IDX files of ``spec`` into ``dest_dir`` as ``<canonical name>.gz``.

    Raises ``DownloadError`` naming every URL tried and where to place the files by hand.
    """
    if not timeout > 0 or timeout == float("inf"):
        raise DatasetError(f"--timeout must be a positive number of seconds, got {timeout}")
    made = [p for p in (dest_dir, *dest_dir.parents) if not p.exists()]
    try:
        _fetch_all(spec, dest_dir, mirrors, timeout, progress, parts)
    except BaseException:
        for folder in made:  # a failed download leaves not even the folders it made
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _fetch_all(
    spec: DatasetSpec,
    dest_dir: Path,
    mirrors: list[str] | None,
    timeout: float,
    progress: bool,
    parts: list[str] | None,
) -> None:
    make_home_folder(dest_dir, "download folder")
    todo = parts if parts is not None else list(PARTS.values())
    urls = mirrors_for(spec, mirrors)
    for part in todo:
        dest = dest_dir / f"{part}.gz"
        tried: list[str] = []
        for base in urls:
            url = base.rstrip("/") + f"/{part}.gz"
            if progress:
                print(f"Downloading {url}", flush=True)
            size = expected_size(spec, part)
            try:
                tmp = _fetch(url, dest, timeout, progress, max_download(size))
            except (OSError, http.client.HTTPException, DatasetError) as e:
                if isinstance(e, OSError) and e.errno in FATAL_ERRNOS:  # the next mirror would fail alike
                    raise DatasetError(f"{dest_dir}: cannot write the download ({e.strerror})") from None
                tried.append(f"{url} ({_reason(e)})")
                continue
            try:
                actual = idx.md5(idx.read_bytes(tmp, limit=size))
                if actual != spec.md5[part]:
                    raise DatasetError(f"content MD5 {actual}, expected {spec.md5[part]}")
                os.replace(tmp, dest)
            except DatasetError as e:
                tried.append(f"{url} ({str(e).removeprefix(str(tmp) + ': ')})")
                continue
            except OSError as e:
                raise DatasetError(f"{dest}: cannot move the download into place ({e.strerror or e})") from None
            finally:
                tmp.unlink(missing_ok=True)  # gone already when it was moved into place
            break
        else:
            names = ", ".join(f"{p}.gz" for p in PARTS.values())
            raise DownloadError(
                f"could not download {spec.name}: tried {'; '.join(tried) or 'no mirrors'}. "
                f"Place {names} in {dest_dir}/ by hand, or run "
                f"`mnistlab data import {spec.name} PATH` on a folder or Keras .npz you fetched elsewhere"
            )
