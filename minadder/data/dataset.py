"""The in-memory dataset every reader returns, and the errors readers and the downloader raise.

A ``Dataset`` is deliberately plain: a uint8 image array in (N, C, H, W) order, the int64
labels, and the per-channel mean/std (on the [0, 1] pixel scale) that ``normalize`` uses.
Images stay uint8 until a batch is drawn, so 60,000 MNIST digits take 47 MB, not 188 MB.
"""
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Dataset", "DatasetFormatError", "UnsafePickleError", "DatasetNotFoundError",
           "DownloadError", "ChecksumError"]


class DatasetFormatError(ValueError):
    """A data file is truncated, corrupt or not in the expected format (the message names it)."""


class UnsafePickleError(DatasetFormatError):
    """A pickle asked for a Python object that a CIFAR batch never holds; it was not loaded."""


class DatasetNotFoundError(FileNotFoundError):
    """No copy of a dataset was found; the message lists every place that was looked at."""


class DownloadError(OSError):
    """A download failed after its retries (network error or HTTP error status), or what
    it fetched was refused or incomplete."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not have the expected MD5; nothing was kept."""


@dataclass
class Dataset:
    """Images and labels of one split of one dataset.

    Fields: ``images`` uint8 (N, C, H, W); ``labels`` int64 (N,); ``num_classes``;
    ``mean``/``std`` per-channel tuples on the [0, 1] scale (training-set statistics, also
    for the test split, so both splits are normalised the same way); ``name``; ``source``
    (the path the data were read from, or ``"generated"``); ``classes`` (optional names).
    """

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    mean: tuple
    std: tuple
    name: str = ""
    source: str = "generated"
    classes: tuple = field(default=())

    def __post_init__(self):
        images, labels = self.images, np.asarray(self.labels)
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(
                f"Dataset.images must be a uint8 array of shape (N, C, H, W); got "
                f"{getattr(images, 'dtype', type(images).__name__)} with shape {np.shape(images)}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(f"Dataset.labels must have shape ({len(images)},); got {labels.shape}")
        self.labels = labels.astype(np.int64, copy=False)
        channels = images.shape[1]
        self.mean = tuple(float(m) for m in np.broadcast_to(self.mean, (channels,)))
        self.std = tuple(float(s) for s in np.broadcast_to(self.std, (channels,)))
        self.num_classes = int(self.num_classes)
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= self.num_classes):
            raise ValueError(f"Dataset.labels must lie in [0, {self.num_classes - 1}]; got "
                             f"[{self.labels.min()}, {self.labels.max()}]")

    def __len__(self):
        return len(self.labels)

    @property
    def shape(self):
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    def subset(self, indices):
        """A new Dataset with the samples at ``indices`` (same statistics and metadata)."""
        indices = np.asarray(indices)
        return Dataset(self.images[indices], self.labels[indices], self.num_classes,
                       self.mean, self.std, self.name, self.source, self.classes)

    def __repr__(self):
        return (f"Dataset(name={self.name!r}, images={self.images.shape} uint8, "
                f"num_classes={self.num_classes}, source={self.source!r})")
