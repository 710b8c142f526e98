"""``load_dataset``: one entry point for every dataset, by name.

Per-channel mean and std are the training-set statistics on the [0, 1] scale, used for
both splits (normalising the test set with its own statistics would leak information).
"""
import numpy as np

from .cifar import read_cifar_binary, read_cifar_python
from .dataset import Dataset, DatasetFormatError
from .idx import read_idx
from .locate import locate_dataset
from .synthetic import SYNTHETIC_NAME, synthetic_digits

__all__ = ["load_dataset", "DATASETS", "DATASET_NAMES"]

_CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                    "dog", "frog", "horse", "ship", "truck")
_FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_DIGITS = tuple(str(d) for d in range(10))

# name -> (num_classes, mean, std, class names, images per split)
DATASETS = {
    "mnist": (10, (0.1307,), (0.3081,), _DIGITS, {"train": 60000, "test": 10000}),
    "fashion-mnist": (10, (0.2860,), (0.3530,), _FASHION_CLASSES, {"train": 60000, "test": 10000}),
    "cifar10": (10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), _CIFAR10_CLASSES,
                {"train": 50000, "test": 10000}),
    "cifar100": (100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), (),
                 {"train": 50000, "test": 10000}),
}
DATASET_NAMES = (SYNTHETIC_NAME, *DATASETS)

#: the error for a split without images: said when the file is read, not after an epoch
_EMPTY = "{path}: holds no images (an empty split cannot be trained or tested on)"


def _read_idx_pair(name, image_path, label_path):
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DatasetFormatError(f"{image_path}: expected uint8 images of shape (N, 28, 28), "
                                 f"got {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DatasetFormatError(f"{label_path}: expected a 1-D uint8 label array, "
                                 f"got {labels.dtype} {labels.shape}")
    if len(images) == 0:
        raise DatasetFormatError(_EMPTY.format(path=image_path))
    if len(labels) != len(images):
        raise DatasetFormatError(f"{label_path}: {len(labels)} labels for the {len(images)} "
                                 f"images of {image_path}")
    if labels.size and labels.max() > 9:
        bad = int(np.argmax(labels > 9))
        raise DatasetFormatError(f"{label_path}: label {labels[bad]} of item {bad} is outside 0-9")
    return images[:, None], labels.astype(np.int64)


def _read_cifar_batches(name, fmt, paths, coarse):
    """Read CIFAR batch files one by one and join them. Several training batches must
    hold the same number of records (10,000 each in the official files): a batch cut at a
    record boundary would otherwise load silently with fewer images."""
    reader = ((lambda p: read_cifar_binary(p, coarse=coarse, cifar100=(name == "cifar100")))
              if fmt == "cifar-binary" else (lambda p: read_cifar_python(p, coarse=coarse)))
    parts = [reader(p) for p in paths]
    counts = [len(labels) for _, labels in parts]
    if len(set(counts)) > 1:
        short = paths[counts.index(min(counts))]
        raise DatasetFormatError(f"{short}: holds {min(counts)} records but the other batches of "
                                 f"the split hold up to {max(counts)}; the file is probably truncated")
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def load_dataset(name="synthetic-digits", split="train", data_dir=None, coarse=False, fallback=True, file=None):
    """Load one split of a dataset as a ``Dataset`` (uint8 images, int64 labels).

    ``name``: "synthetic-digits" (generated, cached), "mnist", "fashion-mnist" (1x28x28;
    the trainer pads to 32), "cifar10", "cifar100" (3x32x32; ``coarse=True`` for the 20
    superclasses). Files are looked up in ``data_dir``, ``$MINADDER_DATA``, then
    ``~/.cache/minadder`` (see ``minadder.data.locate``); ``fallback=False`` looks in
    ``data_dir`` only. ``file`` (CIFAR only) reads that one batch file instead of the
    split's usual files, e.g. ``test_batch_first1000_exact.bin``. A missing dataset raises
    ``FileNotFoundError`` saying where it looked and how to download it. The synthetic
    digits ignore ``data_dir``: they are generated (about 3 s) and cached as an .npz under
    ``$MINADDER_DATA`` or ``~/.cache/minadder``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if name == SYNTHETIC_NAME:
        if file is not None:
            raise ValueError(f"a test file (--test-file) can be chosen for cifar10 and cifar100 only, not {name!r}")
        train, test = synthetic_digits()
        return train if split == "train" else test
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {list(DATASET_NAMES)}")
    found = locate_dataset(name, split, data_dir, fallback=fallback, file=file)
    num_classes, mean, std, classes, _ = DATASETS[name]
    if found.fmt == "idx":
        images, labels = _read_idx_pair(name, *found.paths)
    else:
        images, labels = _read_cifar_batches(name, found.fmt, found.paths, coarse)
    if len(images) == 0:   # each reader refuses an empty file; this guards their sum
        where = found.paths[0] if len(found.paths) == 1 else found.folder
        raise DatasetFormatError(_EMPTY.format(path=where))
    if name == "cifar100" and coarse:
        num_classes, classes = 20, ()
    return Dataset(images, labels, num_classes, mean, std, name, str(found.folder), classes)
