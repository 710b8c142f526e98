"""Readers for CIFAR-10 and CIFAR-100, in both of the forms the datasets are distributed.

Binary version (``cifar-10-batches-bin/``, ``cifar-100-binary/``): fixed-size records, each
label byte(s) followed by 3072 pixel bytes (1024 red, 1024 green, 1024 blue, rows of 32).
CIFAR-10 records have one label byte (0-9); CIFAR-100 records have two, the coarse label
(0-19) and then the fine label (0-99).

Python version (``cifar-10-batches-py/``, ``cifar-100-python/``): each batch is a pickled
dict. ``pickle.load`` would run any function a file names, so a downloaded batch could
execute code. ``SafeUnpickler`` instead resolves only the few globals these files use
(NumPy's array reconstructor and dtype, and the codec Python 3 uses for bytes) and
refuses every other one before anything is called.

Both forms are read through ``minadder.bounded``: a file larger than ``DATA_FILE_LIMIT``
is refused before it is read, and an array a pickle declares may not be larger than the
pickle itself (its bytes must be in the file), so a small file cannot claim gigabytes.
"""
import codecs
import functools
import io
import os
import pickle

import numpy as np

from ..bounded import DATA_FILE_LIMIT, FileRejected, describe_size, read_bounded
from .dataset import DatasetFormatError, UnsafePickleError

__all__ = ["read_cifar_binary", "read_cifar_python", "safe_unpickle", "SafeUnpickler",
           "CIFAR_IMAGE_BYTES"]

CIFAR_IMAGE_BYTES = 3 * 32 * 32
_LABEL_RANGE = {"cifar10": ("label", 10), "fine": ("fine label", 100), "coarse": ("coarse label", 20)}


def _check_labels(labels, num_classes, what, path):
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(np.flatnonzero((labels < 0) | (labels >= num_classes))[0])
        raise DatasetFormatError(f"{path}: {what} {int(labels[bad])} of record {bad} is outside "
                                 f"0-{num_classes - 1}")
    return labels.astype(np.int64)


# ============================================================================ binary version
def _binary_variant(path, size, coarse, cifar100):
    """Decide between CIFAR-10 (1 label byte) and CIFAR-100 (2 label bytes) records."""
    if cifar100 is not None:
        return bool(cifar100)
    if coarse:
        return True
    name = os.path.basename(path)
    if name in ("train.bin", "test.bin"):  # CIFAR-100's file names
        return True
    if name.startswith(("data_batch", "test_batch")):  # CIFAR-10's file names
        return False
    return size % (CIFAR_IMAGE_BYTES + 1) != 0 and size % (CIFAR_IMAGE_BYTES + 2) == 0


def _read_file(path):
    """The bytes of a CIFAR batch file, refused when it is larger than any real one."""
    try:
        return read_bounded(path, DATA_FILE_LIMIT, gunzip=False)
    except FileRejected as e:
        raise DatasetFormatError(str(e)) from None


def _read_one_binary(path, coarse, cifar100):
    path = os.fspath(path)
    raw = _read_file(path)
    is100 = _binary_variant(path, len(raw), coarse, cifar100)
    label_bytes = 2 if is100 else 1
    record = CIFAR_IMAGE_BYTES + label_bytes
    if len(raw) == 0:
        raise DatasetFormatError(f"{path}: empty file")
    if len(raw) % record:
        raise DatasetFormatError(
            f"{path}: truncated or corrupt: {len(raw)} bytes is not a whole number of "
            f"{record}-byte {'CIFAR-100' if is100 else 'CIFAR-10'} records "
            f"({len(raw) // record} whole records and {len(raw) % record} bytes left over)")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)
    images = records[:, label_bytes:].reshape(-1, 3, 32, 32)
    if is100:
        kind = "coarse" if coarse else "fine"
        labels = _check_labels(records[:, 0 if coarse else 1], 20 if coarse else 100,
                               _LABEL_RANGE[kind][0], path)
        _check_labels(records[:, 1 if coarse else 0], 100 if coarse else 20,
                      _LABEL_RANGE["fine" if coarse else "coarse"][0], path)
    else:
        if coarse:
            raise ValueError(f"coarse=True needs CIFAR-100 records; {path} holds CIFAR-10 records")
        labels = _check_labels(records[:, 0], 10, "label", path)
    return images, labels


def read_cifar_binary(paths, coarse=False, cifar100=None):
    """Read one or more CIFAR binary batch files into (images uint8 (N, 3, 32, 32), labels int64).

    ``coarse=True`` returns CIFAR-100's 20 superclass labels instead of the 100 fine ones.
    ``cifar100`` forces the record layout; by default it follows the file names
    (``train.bin``/``test.bin`` are CIFAR-100, ``data_batch_*``/``test_batch*`` CIFAR-10).
    """
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise ValueError("read_cifar_binary: paths is empty")
    parts = [_read_one_binary(p, coarse, cifar100) for p in paths]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return images, labels


# ============================================================================ python version
class _NdarrayType:
    """Stands in for ``numpy.ndarray`` inside a pickle: accepted as the reconstructor's
    subtype argument, but not callable, so a pickle cannot construct arrays by itself."""


def _safe_dtype(spec, align=False, copy=False):
    """numpy.dtype restricted to plain numbers: object or structured dtypes are refused,
    because an object array would let the pickle smuggle arbitrary objects in."""
    if isinstance(spec, bytes):
        spec = spec.decode("ascii")
    if not isinstance(spec, str):
        raise UnsafePickleError(f"dtype spec {spec!r} is not a string")
    dtype = np.dtype(spec, align=bool(align), copy=bool(copy))
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise UnsafePickleError(f"dtype {dtype} is not a plain numeric type")
    return dtype


def _safe_reconstruct(subtype, shape, typecode, max_bytes=DATA_FILE_LIMIT):
    """What numpy.core.multiarray._reconstruct does for plain ndarrays: an empty array
    whose contents the pickle then sets with ``ndarray.__setstate__`` (BUILD opcode).
    Its size is checked first: no more than ``max_bytes`` (the pickle's own size)."""
    if subtype is not _NdarrayType:
        raise UnsafePickleError(f"array subtype {subtype!r} is not numpy.ndarray")
    dtype = _safe_dtype(typecode)
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape) or np.prod(shape, dtype=object) * dtype.itemsize > max_bytes:
        raise DatasetFormatError(f"an array of shape {shape} and dtype {dtype} is larger than the "
                                 f"file ({describe_size(max_bytes)}) that should hold it")
    return np.ndarray(shape, dtype=dtype)


def _safe_frombuffer(buffer, dtype, shape, order):
    """numpy's protocol-5 array constructor, for plain numeric dtypes only."""
    if not isinstance(dtype, np.dtype):
        dtype = _safe_dtype(dtype)
    elif dtype.kind not in "biuf" or dtype.fields is not None:
        raise UnsafePickleError(f"dtype {dtype} is not a plain numeric type")
    array = np.frombuffer(bytes(buffer), dtype=dtype)
    return array.reshape(tuple(shape), order=order).copy()


def _safe_encode(text, encoding="utf-8"):
    """``_codecs.encode``, which Python 3 pickles (protocol < 3) use to store bytes."""
    if not isinstance(text, str) or codecs.lookup(encoding).name not in ("latin-1", "iso8859-1", "utf-8"):
        raise UnsafePickleError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return codecs.encode(text, encoding)


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,   # NumPy 1.x pickles
    ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,  # NumPy 2.x pickles
    ("numpy.core.numeric", "_frombuffer"): _safe_frombuffer,        # protocol 5
    ("numpy._core.numeric", "_frombuffer"): _safe_frombuffer,
    ("numpy", "ndarray"): _NdarrayType,
    ("numpy", "dtype"): _safe_dtype,
    ("_codecs", "encode"): _safe_encode,
}


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only the globals listed in ``_ALLOWED_GLOBALS``.

    Pickle runs code only by calling globals it looked up (REDUCE, BUILD with
    ``__setstate__``, NEWOBJ, ...), so refusing the lookup refuses the call. Dicts, lists,
    tuples, strings, bytes, numbers and plain numeric arrays load as usual.
    """

    def __init__(self, file, *, max_array_bytes=DATA_FILE_LIMIT, **kwargs):
        super().__init__(file, **kwargs)
        self.max_array_bytes = max_array_bytes

    def find_class(self, module, name):
        try:
            found = _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name}: CIFAR batches hold only dicts, "
                f"lists, strings and NumPy arrays") from None
        if found is _safe_reconstruct:
            return functools.partial(_safe_reconstruct, max_bytes=self.max_array_bytes)
        return found

    def persistent_load(self, pid):
        raise UnsafePickleError("refusing a persistent id in the pickle")


def safe_unpickle(path):
    """Unpickle ``path`` with ``SafeUnpickler`` (``encoding='bytes'``, as CIFAR's Python 2
    pickles need). Raises ``UnsafePickleError`` or ``DatasetFormatError`` naming the file.
    The file is read whole first (bounded), so a length the pickle declares can never
    make the reader allocate more than the file holds."""
    path = os.fspath(path)
    raw = _read_file(path)
    with io.BytesIO(raw) as f:
        try:
            return SafeUnpickler(f, encoding="bytes", max_array_bytes=len(raw)).load()
        except UnsafePickleError as e:
            raise UnsafePickleError(f"{path}: {e}") from None
        except DatasetFormatError as e:
            raise DatasetFormatError(f"{path}: {e}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                IndexError, KeyError, OverflowError, MemoryError) as e:
            raise DatasetFormatError(f"{path}: not a readable CIFAR pickle "
                                     f"({type(e).__name__}: {e})") from None


def _as_str_keys(batch, path):
    if not isinstance(batch, dict):
        raise DatasetFormatError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    return {(k.decode("latin-1") if isinstance(k, bytes) else k): v for k, v in batch.items()}


def _read_one_python(path, coarse):
    path = os.fspath(path)
    batch = _as_str_keys(safe_unpickle(path), path)
    if "data" not in batch:
        raise DatasetFormatError(f"{path}: the pickled dict has no 'data' entry "
                                 f"(keys: {sorted(map(str, batch))})")
    if "labels" in batch:
        if coarse:
            raise ValueError(f"coarse=True needs a CIFAR-100 batch; {path} is a CIFAR-10 batch")
        keys = [("labels", 10, "label")]
    elif "fine_labels" in batch:   # both label sets are checked, the chosen one first
        keys = [("fine_labels", 100, "fine label"), ("coarse_labels", 20, "coarse label")][::-1 if coarse else 1]
    else:
        raise DatasetFormatError(f"{path}: the pickled dict has no 'labels' or 'fine_labels' entry")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != CIFAR_IMAGE_BYTES:
        raise DatasetFormatError(
            f"{path}: 'data' must be a uint8 array of shape (N, {CIFAR_IMAGE_BYTES}); got "
            f"{getattr(data, 'dtype', type(data).__name__)} {np.shape(data)}")
    if len(data) == 0:
        raise DatasetFormatError(f"{path}: holds no images (an empty split cannot be trained or tested on)")
    labels = [_python_labels(batch, key, len(data), num_classes, what, path)
              for i, (key, num_classes, what) in enumerate(keys) if i == 0 or key in batch]
    return data.reshape(-1, 3, 32, 32).copy(), labels[0]


def _python_labels(batch, key, count, num_classes, what, path):
    """The entry ``key`` of a python-version batch as int64 labels, each checked."""
    try:
        labels = np.asarray(batch.get(key), dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise DatasetFormatError(f"{path}: '{key}' is not a list of integers") from None
    if labels.shape != (count,):
        raise DatasetFormatError(f"{path}: {count} images but '{key}' has shape {labels.shape}")
    return _check_labels(labels, num_classes, what, path)


def read_cifar_python(path, coarse=False):
    """Read CIFAR python-version batch file(s) safely into (images (N, 3, 32, 32), labels int64).

    ``path`` may be one file or a list of files. ``coarse=True`` selects CIFAR-100's 20
    superclass labels. Pickled globals other than NumPy's array reconstruction are refused.
    """
    paths = [path] if isinstance(path, (str, bytes, os.PathLike)) else list(path)
    if not paths:
        raise ValueError("read_cifar_python: path is empty")
    parts = [_read_one_python(p, coarse) for p in paths]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
