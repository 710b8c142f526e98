"""Reading files minadder did not write itself: sizes bounded before anything is decompressed or allocated.

A downloaded or copied file can lie. A 2 MB gzip file can expand to 4 GB; a zip member can
declare 10 bytes and inflate to gigabytes; a .npy header can ask for an array of 10**18
elements. NumPy and the standard library would believe all of them and try to allocate the
memory first. Everything here refuses such a file while reading it, with one error line:

    FileRejected: <path>: <what is wrong>

- ``read_bounded(path, limit, gunzip=True)``: the bytes of a file, gunzipped when it is
  gzip, stopping with ``FileRejected`` as soon as more than ``limit`` bytes come out
  (never the whole decompressed file first).
- ``open_bounded(path, limit, gunzip=True)`` / ``open_bounded_gzip(path, limit)``: the
  same as a stream, for readers that parse as they go (the IDX header first);
  ``fill_from(stream, array, path)`` fills an array the caller allocated once its size
  was checked; ``check_file_size(path, limit)`` refuses a file by its size on disk.
- ``load_npz(path, ...)``: the arrays of an .npz file, each member's declared size, its
  actual size and its .npy header (no object dtype; shape times item size within bounds)
  checked before NumPy allocates it.

The default limits are a few times the largest legitimate file, so no real dataset or
checkpoint is refused while a bomb stops long before it fills memory:

- ``DATA_FILE_LIMIT`` = 256 MiB for one data file after decompression. The largest
  minadder reads is CIFAR-100's python-version ``train`` pickle (50,000 x 3,072 image bytes
  plus labels, about 155 MB); MNIST's training images are 47 MB, a CIFAR-10 batch 31 MB.
- ``NPZ_ENTRY_LIMIT`` = 256 MiB for one array of an .npz file, ``NPZ_TOTAL_LIMIT`` = 1 GiB
  for all of them, ``NPZ_MAX_ENTRIES`` = 10,000 arrays. The largest network, VGG-small,
  has 4.7 M parameters: its largest array is 9 MB, its checkpoint pair with the momentum
  buffers 37 MB (ResNet-32: 0.47 M parameters, 170 arrays); the synthetic-digits cache
  (20,000 + 4,000 images of 28 x 28) is 19 MB.
"""
import gzip
import io
import math
import os
import zipfile
import zlib

import numpy as np

__all__ = ["FileRejected", "DATA_FILE_LIMIT", "NPZ_ENTRY_LIMIT", "NPZ_TOTAL_LIMIT",
           "NPZ_MAX_ENTRIES", "BoundedReader", "check_file_size", "open_bounded",
           "open_bounded_gzip", "read_bounded", "fill_from", "load_npz", "describe_size"]

MiB = 1 << 20
DATA_FILE_LIMIT = 256 * MiB
NPZ_ENTRY_LIMIT = 256 * MiB
NPZ_TOTAL_LIMIT = 1024 * MiB
NPZ_MAX_ENTRIES = 10_000

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 * MiB
_NPY_HEADER_ROOM = 10_000   # NumPy's own bound on a .npy header (np.load's max_header_size)


class FileRejected(ValueError):
    """A file was refused before it was read in full; the message is one line,
    ``<path>: <what is wrong>`` (``.path`` and ``.problem`` hold the two parts)."""

    def __init__(self, path, problem):
        self.path, self.problem = os.fspath(path), str(problem)
        super().__init__(f"{self.path}: {self.problem}")


def describe_size(n):
    """A byte count for a message: '1,234 bytes' or '2.0 GiB'."""
    if n < 10 * MiB:
        return f"{n:,} bytes"
    return f"{n / MiB:,.0f} MiB" if n < (1 << 30) else f"{n / (1 << 30):,.1f} GiB"


def check_file_size(path, limit, what="file"):
    """The size of ``path`` on disk, or ``FileRejected`` when it exceeds ``limit`` bytes."""
    size = os.path.getsize(path)
    if size > limit:
        raise FileRejected(path, f"{what} of {describe_size(size)} exceeds the limit of "
                                 f"{describe_size(limit)}")
    return size


# ============================================================================ bounded streams
class BoundedReader(io.RawIOBase):
    """A read-only stream over ``raw`` that raises ``FileRejected`` once more than ``limit``
    bytes have come out of it. Wraps a decompressing stream, so that decompression stops
    at the limit instead of after the whole file. Errors of a corrupt gzip or zip stream
    are reported as ``FileRejected`` too."""

    def __init__(self, raw, limit, path, what="decompressed data"):
        super().__init__()
        self._raw, self.limit, self.path, self.what = raw, int(limit), os.fspath(path), what
        self.count = 0

    def readable(self):
        return True

    def readinto(self, buffer):
        view = memoryview(buffer).cast("B")
        # one byte past the limit is enough to know it is exceeded
        want = min(len(view), self.limit + 1 - self.count)
        if want <= 0:
            want = 1
        try:
            data = self._raw.read(want)
        except (EOFError, OSError, zlib.error, zipfile.BadZipFile) as e:
            raise FileRejected(self.path, f"corrupt or truncated compressed data ({e})") from None
        n = len(data)
        view[:n] = data
        self.count += n
        if self.count > self.limit:
            raise FileRejected(self.path, f"{self.what} exceed the limit of {describe_size(self.limit)} "
                                          f"(a damaged file, or a decompression bomb)")
        return n

    def close(self):
        if not self.closed:
            self._raw.close()
        super().close()


def fill_from(stream, array, path, what="data"):
    """Fill ``array``'s bytes from ``stream`` (allocated by the caller after its size was
    checked), or ``FileRejected`` when the stream ends first."""
    view, got = memoryview(array.reshape(-1).view(np.uint8)), 0
    while got < len(view):
        n = stream.readinto(view[got:got + _CHUNK])
        if not n:
            raise FileRejected(path, f"truncated {what}: {got:,} of the {len(view):,} bytes expected")
        got += n
    return array


def _is_gzip(path):
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def open_bounded_gzip(path, limit):
    """A stream of the decompressed bytes of the gzip file ``path``, stopping with
    ``FileRejected`` once more than ``limit`` bytes come out."""
    path = os.fspath(path)
    return io.BufferedReader(BoundedReader(gzip.open(path, "rb"), limit, path), _CHUNK)


def open_bounded(path, limit, gunzip=True):
    """A stream of ``path``'s bytes, gunzipped when the file starts with the gzip magic
    (and ``gunzip`` is true), stopping with ``FileRejected`` once more than ``limit`` bytes
    come out. A plain file over ``limit`` is refused before it is opened."""
    path = os.fspath(path)
    if gunzip and _is_gzip(path):
        return open_bounded_gzip(path, limit)
    check_file_size(path, limit)
    return io.BufferedReader(BoundedReader(open(path, "rb"), limit, path, "the file's bytes"), _CHUNK)


def read_bounded(path, limit, gunzip=True):
    """All bytes of ``path`` (gunzipped when it is gzip and ``gunzip`` is true), or
    ``FileRejected`` once more than ``limit`` bytes come out; the memory used never
    exceeds about ``limit``."""
    with open_bounded(path, limit, gunzip) as f:
        return f.read()


# ============================================================================ .npz files
def _npy_header(stream, path, name):
    """(shape, fortran_order, dtype) from the .npy header of the member ``name``."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(stream)
        reader = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
        if reader is None:
            raise ValueError(f"unsupported .npy version {version}")
        shape, fortran, dtype = reader(stream, max_header_size=_NPY_HEADER_ROOM)
    except FileRejected:
        raise
    except Exception as e:  # noqa: BLE001 -- a garbled header fails in NumPy's parser in many ways
        raise FileRejected(path, f"entry {name!r}: not a readable .npy header ({type(e).__name__})") from None
    return shape, fortran, dtype


def _check_entry(path, name, shape, dtype, max_entry_bytes):
    """The byte count of an entry's array, or ``FileRejected`` if NumPy should not allocate it."""
    if dtype.hasobject:
        raise FileRejected(path, f"entry {name!r} holds Python objects (dtype {dtype}), which loading "
                                 f"would unpickle and unpickling can run code; refused")
    if any(int(s) < 0 for s in shape):
        raise FileRejected(path, f"entry {name!r}: negative dimension in shape {shape}")
    nbytes = math.prod(int(s) for s in shape) * dtype.itemsize   # Python ints: no overflow
    if nbytes > max_entry_bytes:
        raise FileRejected(path, f"entry {name!r}: shape {shape} of {dtype} needs {describe_size(nbytes)}, "
                                 f"over the limit of {describe_size(max_entry_bytes)} per array")
    return nbytes


def _read_member(zf, info, path, max_entry_bytes):
    """One member's array, read through a bounded stream (its header may lie)."""
    name = info.filename[:-4]
    stream = BoundedReader(zf.open(info), min(info.file_size, max_entry_bytes + _NPY_HEADER_ROOM), path,
                           f"entry {name!r}: the decompressed bytes")
    with stream:
        shape, fortran, dtype = _npy_header(stream, path, name)
        nbytes = _check_entry(path, name, shape, dtype, max_entry_bytes)
        if stream.count + nbytes != info.file_size:
            raise FileRejected(path, f"entry {name!r}: its header asks for {nbytes:,} data bytes, "
                                     f"the zip records {info.file_size - stream.count:,}")
        flat = fill_from(stream, np.empty(nbytes, dtype=np.uint8), path, f"entry {name!r}")
    if not dtype.itemsize:   # e.g. empty strings: nothing to read
        return np.empty(shape, dtype, order="F" if fortran else "C")
    return flat.view(dtype).reshape(shape, order="F" if fortran else "C")


def _members(zf, path, max_entry_bytes, max_total_bytes, max_entries):
    """The members of an .npz archive, their declared sizes checked before any is read."""
    infos = zf.infolist()
    if len(infos) > max_entries:
        raise FileRejected(path, f"{len(infos):,} entries, over the limit of {max_entries:,}")
    names, total = set(), 0
    for info in infos:
        if not info.filename.endswith(".npy"):
            raise FileRejected(path, f"entry {info.filename!r} is not a .npy array")
        if info.filename in names:
            raise FileRejected(path, f"entry {info.filename!r} appears twice")
        names.add(info.filename)
        if info.file_size > max_entry_bytes + _NPY_HEADER_ROOM:
            raise FileRejected(path, f"entry {info.filename[:-4]!r} declares {describe_size(info.file_size)}, "
                                     f"over the limit of {describe_size(max_entry_bytes)} per array")
        total += info.file_size
    if total > max_total_bytes:
        raise FileRejected(path, f"its entries declare {describe_size(total)} in all, over the limit of "
                                 f"{describe_size(max_total_bytes)}")
    return infos


def load_npz(path, max_entry_bytes=NPZ_ENTRY_LIMIT, max_total_bytes=NPZ_TOTAL_LIMIT,
             max_entries=NPZ_MAX_ENTRIES, allow_pickle=False):
    """All arrays of the .npz file ``path`` as a dict name -> array, in the file's order.

    What ``np.load(path, allow_pickle=False)`` reads, with every size checked first: the
    file itself, the number of entries, each entry's declared size (the zip's directory),
    each .npy header (no object dtype; shape x item size <= ``max_entry_bytes``), and the
    bytes actually decompressed (the directory can lie). Raises ``FileRejected`` naming the
    file and what is wrong. ``allow_pickle`` exists so calls read like ``np.load``'s; only
    False is supported, since pickled arrays cannot be bounded.
    """
    if allow_pickle:
        raise ValueError("load_npz: allow_pickle=True is not supported (pickled arrays cannot be bounded)")
    path = os.fspath(path)
    check_file_size(path, max_total_bytes)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = _members(zf, path, max_entry_bytes, max_total_bytes, max_entries)
            return {info.filename[:-4]: _read_member(zf, info, path, max_entry_bytes) for info in infos}
    except FileRejected:
        raise
    except zipfile.BadZipFile as e:
        problem = ("empty, truncated, or not a zip archive" if "not a zip file" in str(e)
                   else f"corrupt zip archive ({e})")
        raise FileRejected(path, f"not a readable .npz file: {problem}") from None
    except (EOFError, OSError, zlib.error, NotImplementedError, RuntimeError) as e:
        if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise
        raise FileRejected(path, f"not a readable .npz file ({type(e).__name__}: {e})") from None
