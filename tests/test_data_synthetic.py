"""Synthetic digits: shapes, balance, MNIST-like look, determinism per seed, the cache."""
import numpy as np
import pytest

from minadder.data import Dataset, load_dataset, synthetic_digits
from minadder.data import synthetic


def small(seed=0, **kw):
    return synthetic_digits(n_train=300, n_test=100, seed=seed, cache=False, **kw)


def test_shapes_and_types():
    train, test = small()
    assert isinstance(train, Dataset) and isinstance(test, Dataset)
    assert train.images.shape == (300, 1, 28, 28) and test.images.shape == (100, 1, 28, 28)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int64
    assert train.num_classes == 10 and train.source == "generated" and train.name == "synthetic-digits"
    assert np.bincount(train.labels, minlength=10).tolist() == [30] * 10  # balanced
    assert test.mean == train.mean and test.std == train.std            # training statistics
    x = train.images / 255.0
    assert train.mean[0] == pytest.approx(x.mean(), rel=1e-5) and train.std[0] == pytest.approx(x.std(), rel=1e-5)


def test_looks_like_mnist():
    """White digits on a dark background, centred, filling roughly MNIST's 20x20 box."""
    train, _ = small()
    x = train.images[:, 0].astype(np.float64) / 255
    assert 0.08 < x.mean() < 0.3                       # MNIST: 0.13
    border = np.concatenate([x[:, :2].ravel(), x[:, -2:].ravel(), x[:, :, :2].ravel(), x[:, :, -2:].ravel()])
    assert border.mean() < 0.03                        # background stays black at the edges
    assert (x.max(axis=(1, 2)) > 0.7).mean() > 0.95    # strokes are bright
    ys, xs = np.mgrid[:28, :28]
    cy = (x * ys).sum((1, 2)) / x.sum((1, 2))
    cx = (x * xs).sum((1, 2)) / x.sum((1, 2))
    assert abs(cy.mean() - 13.5) < 1 and abs(cx.mean() - 13.5) < 1
    rows = (x > 0.3).any(axis=2).sum(1)  # digit height in pixels
    assert 14 < np.median(rows) < 24


def test_deterministic_per_seed_and_different_across_seeds():
    a_train, a_test = small(seed=3)
    b_train, b_test = small(seed=3)
    np.testing.assert_array_equal(a_train.images, b_train.images)
    np.testing.assert_array_equal(a_train.labels, b_train.labels)
    np.testing.assert_array_equal(a_test.images, b_test.images)
    c_train, c_test = small(seed=4)
    assert not np.array_equal(a_train.images, c_train.images)
    assert not np.array_equal(a_test.images, c_test.images)
    assert not np.array_equal(a_train.images[:100], a_test.images)  # train and test differ


def test_test_set_does_not_depend_on_train_size():
    _, a = synthetic_digits(n_train=50, n_test=40, seed=1, cache=False)
    _, b = synthetic_digits(n_train=70, n_test=40, seed=1, cache=False)
    np.testing.assert_array_equal(a.images, b.images)


def test_cache_roundtrip(tmp_path, monkeypatch):
    train, test = synthetic_digits(n_train=40, n_test=20, seed=5, cache_dir=tmp_path)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz" and "train40-test20-seed5" in files[0].name
    monkeypatch.setattr(synthetic, "_generate", lambda *a, **k: pytest.fail("regenerated despite cache"))
    again, again_test = synthetic_digits(n_train=40, n_test=20, seed=5, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.images, train.images)
    np.testing.assert_array_equal(again_test.labels, test.labels)
    assert again.mean == train.mean


def _flip_middle_byte(data):
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]


@pytest.mark.parametrize("damage", [lambda d: b"not an npz", lambda d: b"", lambda d: d[:len(d) // 2],
                                    lambda d: d[:-30], _flip_middle_byte],
                         ids=["garbage", "empty", "truncated", "cut-directory", "bit-flip"])
def test_damaged_cache_is_regenerated_and_replaced(tmp_path, damage):
    train, _ = synthetic_digits(n_train=30, n_test=10, seed=2, cache_dir=tmp_path)
    path = next(tmp_path.iterdir())
    good = path.read_bytes()
    path.write_bytes(damage(good))
    again, _ = synthetic_digits(n_train=30, n_test=10, seed=2, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.images, train.images)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    with np.load(path, allow_pickle=False) as z:  # the damaged file was replaced by a good one
        np.testing.assert_array_equal(z["x_train"], train.images)


def test_load_dataset_uses_cache_dir_under_minadder_data(tmp_path, monkeypatch):
    monkeypatch.setenv("MINADDER_DATA", str(tmp_path))
    monkeypatch.setattr(synthetic, "DEFAULT_SIZES", (60, 20))
    ds = load_dataset("synthetic-digits", "test")
    assert len(ds) == 20
    assert len(list((tmp_path / "synthetic-digits").glob("*.npz"))) == 1


def test_templates_cover_every_font_and_digit():
    images, digit, stroke, fit = synthetic.render_templates()
    n = len(synthetic.GLYPH_SETS) * 10 * len(synthetic.STROKES)
    assert images.shape == (n, synthetic.CANVAS, synthetic.CANVAS)
    assert np.bincount(digit).tolist() == [n // 10] * 10
    assert (images.reshape(n, -1).max(1) > 0.5).all()  # every glyph rendered ink


def test_bad_sizes():
    with pytest.raises(ValueError, match="n_train"):
        synthetic_digits(n_train=-1, cache=False)


class FullDisk:
    """A file open for writing that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, path, mode, room):
        self.file, self.room = open(path, mode), room

    def write(self, data):
        if len(data) > self.room:
            import errno
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


@pytest.mark.parametrize("room", [0, 1000, 30_000])
def test_a_full_disk_while_the_cache_is_written_leaves_no_temporary_file(tmp_path, monkeypatch, room):
    """The write fails after ``room`` bytes: the digits are returned from memory, and the
    cache folder holds neither a cache file nor the half-written temporary one."""
    opened = []
    monkeypatch.setattr(synthetic, "open", lambda path, mode: opened.append(path) or FullDisk(path, mode, room),
                        raising=False)
    train, test = synthetic_digits(n_train=40, n_test=20, seed=6, cache_dir=tmp_path)
    assert len(train) == 40 and len(test) == 20
    assert len(opened) == 1 and opened[0].name.endswith(".tmp.npz")   # the write was tried
    assert list(tmp_path.iterdir()) == []
    expected, _ = synthetic_digits(n_train=40, n_test=20, seed=6, cache=False)
    np.testing.assert_array_equal(train.images, expected.images)


def test_an_interrupted_cache_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(synthetic.np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        synthetic_digits(n_train=20, n_test=10, seed=6, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
