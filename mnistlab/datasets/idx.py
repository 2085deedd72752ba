"""Reading and writing the IDX format of LeCun's MNIST files, with every header field checked.

Layout: a 4-byte magic (two zero bytes, a type code, the number of dimensions), one big-endian
uint32 per dimension, then the items. We only meet unsigned bytes (type 0x08).
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np

from mnistlab.errors import DatasetError

UBYTE = 0x08


# Nothing we read as IDX may claim more than this (a 60000-image 28×28 set is 47 MB): a header that
# says more is refused before its items are inflated (a 1 MB gzip can expand to gigabytes).
MAX_BYTES = 1 << 30


def expected_length(head: bytes, where: str) -> int | None:
    """The total length an IDX file's header promises, or None when ``head`` is too short to tell."""
    if len(head) < 4:
        return None
    nd = head[3]
    if len(head) < 4 + 4 * nd:
        return None
    dims = struct.unpack(f">{nd}I", head[4 : 4 + 4 * nd])
    return 4 + 4 * nd + int(np.prod(dims, dtype=np.float64))


def read_bytes(path: Path, limit: int | None = None) -> bytes:
    """The uncompressed content of an IDX file, gzipped (``.gz``) or not, inflated as a stream.

    Reading stops as soon as the content passes what its own header promises, ``limit``, or
    ``MAX_BYTES``: a gzip bomb costs at most that much memory, never its inflated size.
    """
    cap = min(limit or MAX_BYTES, MAX_BYTES)
    try:
        with open(path, "rb") as raw:
            gz = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            f = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
            return _read_capped(f, str(path), cap)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DatasetError(f"{path}: corrupt or truncated gzip ({e})") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror or e})") from None


def _read_capped(f, where: str, cap: int) -> bytes:
    head = f.read(64)  # a magic and up to 15 dimensions
    if head[:3] != bytes([0, 0, UBYTE]):
        return head  # not unsigned-byte IDX: parse() names the wrong magic number
    want = expected_length(head, where)
    if want is not None and want > cap:
        raise DatasetError(
            f"{where}: its header promises {want:,.0f} bytes, more than the {cap:,} allowed here (corrupt, or not this data set)"
        )
    # One byte past the promise shows a file longer than its header; parse() reports the mismatch.
    budget = (want if want is not None else len(head)) + 1 - len(head)
    chunks = [head]
    while budget > 0 and (chunk := f.read(min(budget, 1 << 20))):
        chunks.append(chunk)
        budget -= len(chunk)
    return b"".join(chunks)


def parse(data: bytes, where: str, ndim: int) -> np.ndarray:
    """Parse IDX bytes into a uint8 array of ``ndim`` dimensions; ``where`` names the file in errors."""
    if len(data) < 4:
        raise DatasetError(f"{where}: not an IDX file (only {len(data)} bytes)")
    zero, dtype, nd = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != UBYTE or nd != ndim:
        expected = 0x0800 + ndim
        got = int.from_bytes(data[:4], "big")
        raise DatasetError(
            f"{where}: wrong magic number 0x{got:08x}, expected 0x{expected:08x} "
            f"(unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''})"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{where}: truncated header ({len(data)} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected_len = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected_len:
        raise DatasetError(
            f"{where}: file length {len(data)} does not match its header {dims} "
            f"(expected {expected_len} bytes; truncated or corrupt)"
        )
    # A copy, so callers get a writable array as from Keras (frombuffer views of bytes are read-only).
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def encode(array: np.ndarray) -> bytes:
    """IDX bytes of a uint8 array: byte-exact with the original files for the same content."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    head = struct.pack(">HBB", 0, UBYTE, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return head + array.tobytes()


def md5(data: bytes | np.ndarray) -> str:
    if isinstance(data, np.ndarray):
        data = encode(data)
    return hashlib.md5(data, usedforsecurity=False).hexdigest()
