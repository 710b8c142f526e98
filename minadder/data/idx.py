"""Reader for the IDX format of MNIST and Fashion-MNIST (plain or gzip-compressed), its header checked before anything is allocated.

An IDX file is a 4-byte magic number, one big-endian uint32 per dimension, then the
values in C order. The magic number is two zero bytes, a type code and the number of
dimensions: 0x00000803 is a 3-D uint8 array (images), 0x00000801 a 1-D one (labels).

The header is read first, through a bounded stream (``minadder.bounded``): a file with
an unknown type code, more than ``MAX_IDX_DIMS`` dimensions, or sizes whose product
exceeds the limit is refused before its payload is decompressed or any array allocated,
and the payload must then be exactly as long as the header says.
"""
import math
import os

import numpy as np

from ..bounded import DATA_FILE_LIMIT, FileRejected, describe_size, fill_from, open_bounded
from .dataset import DatasetFormatError

__all__ = ["read_idx", "IDX_DTYPES", "MAX_IDX_DIMS"]

# IDX type code -> NumPy dtype (multi-byte types are big-endian in the file).
IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

#: MNIST-like files are 1-D (labels) or 3-D (images); 4 leaves room for a channel axis.
MAX_IDX_DIMS = 4


def _read_header(f, path):
    """(dtype, dims) from an IDX header, each field checked."""
    magic = f.read(4)
    if len(magic) < 4:
        raise DatasetFormatError(f"{path}: {len(magic)} bytes is too short for an IDX header (4 bytes)")
    zero, code, ndim = int.from_bytes(magic[:2], "big"), magic[2], magic[3]
    if zero != 0 or code not in IDX_DTYPES:
        raise DatasetFormatError(
            f"{path}: bad IDX magic number 0x{magic.hex()} (expected 0x0000TTDD with type "
            f"code TT in {{{', '.join(f'0x{c:02x}' for c in IDX_DTYPES)}}}); not an IDX file?")
    if not 1 <= ndim <= MAX_IDX_DIMS:
        raise DatasetFormatError(f"{path}: IDX header declares {ndim} dimensions; MNIST-like files "
                                 f"have 1 to {MAX_IDX_DIMS}")
    sizes = f.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise DatasetFormatError(f"{path}: truncated IDX header ({4 + len(sizes)} bytes, need "
                                 f"{4 + 4 * ndim} for {ndim} dimensions)")
    return IDX_DTYPES[code], tuple(int.from_bytes(sizes[4 * i: 4 * i + 4], "big") for i in range(ndim))


def _payload_bytes(path, dtype, dims, limit):
    """The payload size the header declares, refused when it exceeds ``limit``."""
    expected = math.prod(dims) * dtype.itemsize  # Python ints: no overflow
    if expected > limit:
        raise DatasetFormatError(f"{path}: IDX header declares dimensions {dims} of {dtype.name}, "
                                 f"{describe_size(expected)}, over the limit of {describe_size(limit)}")
    return expected


def read_idx(path, limit=DATA_FILE_LIMIT):
    """Read an IDX file (``.gz`` or raw) into a NumPy array of native byte order.

    Checks the magic number, the type code, the dimension count (1 to ``MAX_IDX_DIMS``),
    that the declared array fits in ``limit`` bytes, and that the payload holds exactly
    prod(dims) values; raises ``DatasetFormatError`` naming the file otherwise. A .gz
    file is decompressed as it is read, never more than ``limit`` bytes of it.
    """
    path = os.fspath(path)
    try:
        with open_bounded(path, limit + 4 + 4 * MAX_IDX_DIMS) as f:
            dtype, dims = _read_header(f, path)
            expected = _payload_bytes(path, dtype, dims, limit)
            array = np.empty(dims, dtype=dtype)
            try:
                fill_from(f, array, path, "IDX payload")
            except FileRejected as e:
                if not e.problem.startswith("truncated"):
                    raise
                raise DatasetFormatError(f"{path}: truncated: dimensions {dims} of {dtype.name} need "
                                         f"{expected} payload bytes, the file has fewer") from None
            if f.read(1):
                raise DatasetFormatError(f"{path}: has trailing bytes after the {expected} payload bytes "
                                         f"that dimensions {dims} of {dtype.name} need")
    except FileRejected as e:
        raise DatasetFormatError(str(e)) from None
    return array.astype(dtype.newbyteorder("="), copy=False)
