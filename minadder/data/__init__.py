"""Datasets for minadder: readers, download, lookup, synthetic digits, batching.

    from minadder.data import load_dataset, DataLoader
    train = load_dataset("mnist", "train")   # after `python -m minadder download mnist`; or "synthetic-digits"
    for x, y in DataLoader(train, 128, seed=0, pad_to=32):
        ...   # x: float32 (128, 1, 32, 32) normalised, y: int64 (128,)

Modules: ``dataset`` (the Dataset record and errors), ``idx`` (MNIST/Fashion-MNIST),
``cifar`` (CIFAR binary and a safe reader for the pickled python version), ``locate``
(where files are looked up), ``download`` (checksummed, resumable fetching), ``extract``
(unpacking only a dataset's own members into its own folder),
``synthetic`` (digits rendered from matplotlib's fonts), ``loader`` (batching,
normalisation, augmentation), ``registry`` (``load_dataset``).
"""
from .cifar import read_cifar_binary, read_cifar_python, safe_unpickle
from .dataset import Dataset, DatasetFormatError, DatasetNotFoundError, UnsafePickleError
from .download import ChecksumError, DownloadError, download, download_file
from .idx import read_idx
from .loader import DataLoader, normalize, pad_images, random_crop_flip
from .locate import Found, default_root, find_dataset, locate_dataset, search_places
from .registry import DATASET_NAMES, DATASETS, load_dataset
from .synthetic import SYNTHETIC_NAME, synthetic_digits

__all__ = [
    "Dataset", "DatasetFormatError", "DatasetNotFoundError", "UnsafePickleError",
    "load_dataset", "DATASET_NAMES", "DATASETS",
    "read_idx", "read_cifar_binary", "read_cifar_python", "safe_unpickle",
    "download", "download_file", "DownloadError", "ChecksumError",
    "default_root", "find_dataset", "locate_dataset", "Found", "search_places",
    "synthetic_digits", "SYNTHETIC_NAME",
    "DataLoader", "normalize", "pad_images", "random_crop_flip",
]
