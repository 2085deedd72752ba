"""Crash-safe file writing: a temp file in the same folder, flush + fsync, then ``os.replace``.

A reader (or a ``kill -9`` at any moment) sees either the old file or the new one, never half of one;
:func:`atomic_folder` does the same for a whole folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from mnistlab.errors import ConfigError


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on clean exit it replaces ``path`` atomically.

    >>> with atomic_open("/tmp/x.txt", "w") as f:
    ...     _ = f.write("hello")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike[str], prefix: str | None = None) -> Iterator[Path]:
    """Yield a new hidden folder beside ``path``; on clean exit it takes ``path``'s place at once.

    A folder already at ``path`` is moved aside, replaced, then deleted (and put back if the swap
    fails); on an exception (or Ctrl-C) the new folder is deleted and ``path`` is left as it was. A
    process killed inside the block leaves the hidden folder behind: ``prefix`` (default
    ``.NAME.new-``) names it so that the caller can recognise and remove it later. Checks that must
    hold at the moment of the swap belong at the end of the block.

    >>> with atomic_folder("/tmp/atomic-example") as tmp:
    ...     write_text(tmp / "hello.txt", "hello")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix or f".{path.name}.new-", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the folder the usual permissions
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old / path.name)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old / path.name, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    # The rename itself is only durable once the directory entry is flushed.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


# -- the one rule for every output file -------------------------------------------------------------

# Bytes that say a file was written by this toolkit: our own formats name themselves, and Matplotlib,
# which draws every figure we save, signs PNG/SVG/PDF files. Looked for in the first ``_SNIFF`` bytes.
_SIGNATURES = (b"mnistlab", b"matplotlib")
_SNIFF = 1 << 16
CHECKPOINT_MARK = b"mnistlab-checkpoint"


def made_by_toolkit(path: str | os.PathLike[str]) -> bool:
    """Whether the file at ``path`` looks written by mnistlab (its own mark, or a Matplotlib figure)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF).lower()
    except OSError:
        return False
    return any(sig in head for sig in _SIGNATURES)


def is_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a mnistlab checkpoint (judged from the first bytes of its header)."""
    try:
        with open(path, "rb") as f:
            return CHECKPOINT_MARK in f.read(_SNIFF)
    except OSError:
        return False


def check_new_output(
    path: str | os.PathLike[str],
    suffixes: tuple[str, ...],
    *,
    force: bool = False,
    flag: str = "-o",
) -> Path:
    """Refuse, with one line, an output path that would destroy something the toolkit did not make.

    The rule every command that writes a file follows (report, plot, export, data grid, augment preview):
    a folder, a device or a FIFO is never written; without ``force`` the file must end in one of
    ``suffixes`` (a picture named ``.safetensors`` is a slip of the keyboard), and an existing file is
    replaced only when the toolkit wrote it (never a checkpoint).
    Raises ``ConfigError``; returns ``path`` as a ``Path``.

    >>> check_new_output("/tmp/new-report.html", (".html",))
    PosixPath('/tmp/new-report.html')
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {path}: is a folder; give a file name such as {path / ('out' + suffixes[0])}")
    if path.exists() and not path.is_file():
        raise ConfigError(f"{flag} {path}: is not a regular file (a device, FIFO or socket); refusing to write there")
    if force:
        return path
    again = " (pass --force to write it anyway)"
    if path.suffix.lower() not in suffixes:
        raise ConfigError(
            f"{flag} {path}: this writes {'/'.join(suffixes)} files, not {path.suffix or 'a file without suffix'}"
            + again
        )
    if not path.exists():
        return path
    if is_checkpoint(path):
        raise ConfigError(f"{flag} {path}: is a checkpoint; refusing to replace it" + again)
    if not made_by_toolkit(path):
        raise ConfigError(f"{flag} {path}: exists and was not written by mnistlab; refusing to replace it" + again)
    return path


def mark_png(data: bytes) -> bytes:
    """PNG bytes with a ``Software: mnistlab`` text chunk after the header, so ``made_by_toolkit`` knows them."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return data
    end = 8 + 8 + int.from_bytes(data[8:12], "big") + 4  # signature, IHDR length+type, IHDR data, CRC
    body = b"tEXtSoftware\0mnistlab"
    chunk = (len(body) - 4).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")
    return data[:end] + chunk + data[end:]
