"""Mini-batches: shuffling with a seed, zero padding, CIFAR augmentation, normalisation.

Every random choice of an epoch (the order of the samples and each batch's crops and
flips) is drawn from a generator seeded by (seed, epoch[, batch]), never from a
generator that carries state from earlier epochs. So epoch e looks the same whether a
run got there directly or was resumed from a checkpoint written after epoch e-1.
"""
import numpy as np

__all__ = ["DataLoader", "normalize", "pad_images", "random_crop_flip"]


def normalize(images_uint8, mean, std):
    """float32 (x / 255 - mean_c) / std_c for uint8 images (B, C, H, W), per channel c."""
    images = np.asarray(images_uint8)
    if images.ndim != 4:
        raise ValueError(f"normalize expects images of shape (B, C, H, W), got {images.shape}")
    c = images.shape[1]
    mean = np.asarray(mean, np.float32).reshape(-1)
    std = np.asarray(std, np.float32).reshape(-1)
    if mean.size not in (1, c) or std.size not in (1, c):
        raise ValueError(f"mean and std need 1 or {c} values (one per channel); got {mean.size} and {std.size}")
    if np.any(std <= 0):
        raise ValueError(f"std must be positive, got {std.tolist()}")
    scale = (1.0 / (255.0 * std)).reshape(1, -1, 1, 1)
    shift = (mean / std).reshape(1, -1, 1, 1)
    return (images.astype(np.float32) * scale - shift).astype(np.float32, copy=False)


def pad_images(images, size):
    """Zero-pad images (B, C, H, W) symmetrically to (B, C, size, size), e.g. MNIST 28 -> 32
    for LeNet-5. Odd differences put the extra row/column at the bottom/right."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"pad_images expects images of shape (B, C, H, W), got {images.shape}")
    h, w = images.shape[-2:]
    if size < h or size < w:
        raise ValueError(f"pad_images: size={size} is smaller than the images ({h}x{w})")
    top, left = (size - h) // 2, (size - w) // 2
    return np.pad(images, ((0, 0), (0, 0), (top, size - h - top), (left, size - w - left)))


def random_crop_flip(batch, rng, padding=4, flip=True):
    """CIFAR augmentation, per sample and vectorised: zero-pad by ``padding`` pixels,
    take a random crop of the original size, and mirror it horizontally with p = 1/2.

    Returns a new array of the same shape and dtype as ``batch`` (B, C, H, W).
    """
    batch = np.asarray(batch)
    if batch.ndim != 4:
        raise ValueError(f"random_crop_flip expects a batch of shape (B, C, H, W), got {batch.shape}")
    b, c, h, w = batch.shape
    padded = np.pad(batch, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oy = rng.integers(0, 2 * padding + 1, b)
    ox = rng.integers(0, 2 * padding + 1, b)
    flips = rng.random(b) < 0.5 if flip else np.zeros(b, bool)
    rows = oy[:, None] + np.arange(h)                                 # (B, H)
    cols = np.where(flips[:, None], np.arange(w)[::-1], np.arange(w)) + ox[:, None]  # (B, W)
    return padded[np.arange(b)[:, None, None, None], np.arange(c)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


_AUGMENTATIONS = {"cifar": random_crop_flip}


class DataLoader:
    """Iterate over a ``Dataset`` in mini-batches of (x float32 (B, C, H, W), y int64 (B,)).

    ``shuffle``: a new order every epoch, a pure function of (seed, epoch).
    ``augment``: None, "cifar" (random crop with 4-pixel zero padding + horizontal flip),
    or a callable ``f(batch_uint8, rng) -> batch_uint8``.
    ``pad_to``: zero-pad images to pad_to x pad_to before augmenting and normalising, so
    the padding has the background's value (MNIST 28 -> 32 for LeNet-5).
    Each complete pass advances the epoch by one; ``set_epoch(e)`` sets it explicitly
    (call it at the start of every epoch in a resumable training loop).
    """

    def __init__(self, dataset, batch_size, shuffle=True, seed=0, augment=None,
                 drop_last=False, pad_to=None):
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(augment, str):
            if augment not in _AUGMENTATIONS:
                raise ValueError(f"augment must be None, a callable or one of "
                                 f"{sorted(_AUGMENTATIONS)}; got {augment!r}")
            augment = _AUGMENTATIONS[augment]
        elif augment is not None and not callable(augment):
            raise ValueError(f"augment must be None, a string or a callable; got {augment!r}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.augment = augment
        self.drop_last = bool(drop_last)
        self.pad_to = pad_to
        self.epoch = 0

    def __len__(self):
        n = len(self.dataset.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch):
        """Make the next pass epoch ``epoch``: its order and augmentation depend only on
        (seed, epoch)."""
        self.epoch = int(epoch)

    def order(self, epoch=None):
        """The sample indices of an epoch, in the order they are served."""
        epoch = self.epoch if epoch is None else int(epoch)
        n = len(self.dataset.labels)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, epoch, 0]).permutation(n)

    def _batch(self, indices, epoch, number):
        images = self.dataset.images[indices]
        if self.pad_to is not None:
            images = pad_images(images, self.pad_to)
        if self.augment is not None:
            images = self.augment(images, np.random.default_rng([self.seed, epoch, 1, number]))
        x = normalize(images, self.dataset.mean, self.dataset.std)
        return x, self.dataset.labels[indices]

    def __iter__(self):
        epoch = self.epoch
        order = self.order(epoch)
        for number in range(len(self)):
            yield self._batch(order[number * self.batch_size:(number + 1) * self.batch_size],
                              epoch, number)
        self.epoch = epoch + 1
