"""The readers against the real files in ../shared/data (or $MINADDER_SHARED_DATA), when
present: counts, shapes, checksums and pixel statistics from that folder's README.
Skipped, with the reason, where the folder is absent (e.g. a clone without it)."""
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from minadder.data import load_dataset, read_cifar_binary, read_idx

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MINADDER_SHARED_DATA") or REPO.parent / "shared" / "data")
MNIST = SHARED / "mnist"
CIFAR = SHARED / "cifar-10-batches-bin"
FASHION = Path("/usr/share/datasets/fashion-mnist")

needs_mnist = pytest.mark.skipif(not MNIST.is_dir(), reason=f"real MNIST not found at {MNIST} "
                                 "(set MINADDER_SHARED_DATA to the shared data folder)")
needs_cifar = pytest.mark.skipif(not CIFAR.is_dir(), reason=f"real CIFAR-10 not found at {CIFAR} "
                                 "(set MINADDER_SHARED_DATA to the shared data folder)")


@pytest.fixture(autouse=True)
def no_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("MINADDER_DATA", raising=False)


# md5s of the decompressed IDX files (the README of the shared data; the canonical values)
MNIST_MD5 = {"train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
             "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
             "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
             "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637"}


@needs_mnist
def test_mnist_decompressed_md5s_and_reader():
    import gzip
    for name, digest in MNIST_MD5.items():
        raw = gzip.decompress((MNIST / (name + ".gz")).read_bytes())
        assert hashlib.md5(raw).hexdigest() == digest
        array = read_idx(MNIST / (name + ".gz"))
        header = 4 + 4 * array.ndim
        assert array.tobytes() == raw[header:]  # the reader returns exactly the payload


@needs_mnist
def test_mnist_counts_shapes_statistics():
    train = load_dataset("mnist", "train", data_dir=SHARED)
    test = load_dataset("mnist", "test", data_dir=MNIST)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.source == str(MNIST)
    assert np.bincount(train.labels).tolist()[:3] == [5923, 6742, 5958]
    assert train.labels[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]
    x = train.images.astype(np.float64) / 255
    assert x.mean() == pytest.approx(0.1307, abs=5e-5) and x.std() == pytest.approx(0.3081, abs=5e-5)
    assert train.mean == (0.1307,) and train.std == (0.3081,)


CIFAR_MD5 = ["5dd7e06a14cb22eb9f671a540d1b7c25", "5ea93a67294ea407fff1d09f752e9692",
             "942cd6a4bcdd0dd3c604fbe906cb4421", "ae636b3ba5c66a11e91e8cb52e771fcb",
             "53f37980c15c3d472c316c40844f3f0d"]


@needs_cifar
def test_cifar10_train_md5s_counts_statistics():
    paths = [CIFAR / f"data_batch_{i}.bin" for i in range(1, 6)]
    for path, digest in zip(paths, CIFAR_MD5):
        assert hashlib.md5(path.read_bytes()).hexdigest() == digest
    train = load_dataset("cifar10", "train", data_dir=SHARED)
    assert train.images.shape == (50000, 3, 32, 32) and np.bincount(train.labels).tolist() == [5000] * 10
    mean = train.images.mean(axis=(0, 2, 3)) / 255
    np.testing.assert_allclose(mean, (0.4914, 0.4822, 0.4465), atol=5e-5)
    std = (train.images[::5].astype(np.float32) / 255).std(axis=(0, 2, 3))
    np.testing.assert_allclose(std, (0.2470, 0.2435, 0.2616), atol=2e-3)


@needs_cifar
def test_cifar10_test_batches():
    test = load_dataset("cifar10", "test", data_dir=CIFAR)
    assert test.images.shape == (10000, 3, 32, 32)
    assert np.bincount(test.labels).tolist() == [1000] * 10  # the JPEG-decoded copy, class-sorted
    exact_images, exact_labels = read_cifar_binary(CIFAR / "test_batch_first1000_exact.bin")
    assert exact_images.shape == (1000, 3, 32, 32)
    assert exact_labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]  # the official test set's start


@pytest.mark.skipif(not FASHION.is_dir(), reason=f"Fashion-MNIST not installed at {FASHION} "
                    "(apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_from_the_debian_package():
    train = load_dataset("fashion-mnist", "train", data_dir=FASHION)
    test = load_dataset("fashion-mnist", "test", data_dir=FASHION)
    assert len(train) == 60000 and len(test) == 10000
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert (train.images / 255).mean() == pytest.approx(0.2860, abs=5e-5)
