"""Reader for the IDX format of MNIST and Fashion-MNIST (plain or gzip-compressed).

An IDX file is a 4-byte magic number, one big-endian uint32 per dimension, then the
values in C order. The magic number is two zero bytes, a type code and the number of
dimensions: 0x00000803 is a 3-D uint8 array (images), 0x00000801 a 1-D one (labels).
"""
import gzip
import math
import os
import zlib

import numpy as np

from .dataset import DatasetFormatError

__all__ = ["read_idx", "IDX_DTYPES"]

# IDX type code -> NumPy dtype (multi-byte types are big-endian in the file).
IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path):
    """All bytes of ``path``, gunzipped when the file starts with the gzip magic."""
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
        raise DatasetFormatError(f"{path}: corrupt or truncated gzip data ({e})") from None


def read_idx(path):
    """Read an IDX file (``.gz`` or raw) into a NumPy array of native byte order.

    Checks the magic number, the type code, the dimension count and that the payload
    holds exactly prod(dims) values; raises ``DatasetFormatError`` naming the file otherwise.
    """
    path = os.fspath(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DatasetFormatError(f"{path}: {len(data)} bytes is too short for an IDX header (4 bytes)")
    zero, code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or code not in IDX_DTYPES:
        raise DatasetFormatError(
            f"{path}: bad IDX magic number 0x{data[:4].hex()} (expected 0x0000TTDD with type "
            f"code TT in {{{', '.join(f'0x{c:02x}' for c in IDX_DTYPES)}}}); not an IDX file?")
    if ndim == 0:
        raise DatasetFormatError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetFormatError(f"{path}: truncated IDX header ({len(data)} bytes, need {header} "
                                 f"for {ndim} dimensions)")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize  # Python ints: no overflow
    payload = len(data) - header
    if payload != expected:
        what = "truncated" if payload < expected else "has trailing bytes"
        raise DatasetFormatError(
            f"{path}: {what}: dimensions {dims} of {dtype.name} need {expected} payload bytes, "
            f"the file has {payload}")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True)
