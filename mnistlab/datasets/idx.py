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


def read_bytes(path: Path) -> bytes:
    """The uncompressed content of an IDX file, gzipped (``.gz``) or not."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DatasetError(f"{path}: corrupt or truncated gzip ({e})") from None
    return raw


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
