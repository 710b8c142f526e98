"""Batching: normalisation, padding, CIFAR crop+flip, and seeded shuffling that depends
only on (seed, epoch), so a resumed run sees the same batches."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minadder.data import DataLoader, Dataset, normalize, pad_images, random_crop_flip


def make_dataset(n=50, c=1, size=28, seed=0):
    rng = np.random.default_rng(seed)
    return Dataset(rng.integers(0, 256, (n, c, size, size), dtype=np.uint8),
                   rng.integers(0, 10, n), 10, (0.5,) * c, (0.25,) * c, "toy", "generated")


def collect(loader):
    return [(x.copy(), y.copy()) for x, y in loader]


def test_normalize_per_channel():
    x = np.array([0, 51, 255], np.uint8).reshape(1, 3, 1, 1)
    out = normalize(x, (0.0, 0.2, 0.5), (1.0, 0.5, 0.25))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.ravel(), [0.0, 0.0, 2.0], atol=1e-6)
    with pytest.raises(ValueError, match="one per channel"):
        normalize(x, (0.1, 0.2), (1.0,))
    with pytest.raises(ValueError, match="positive"):
        normalize(x, (0.1,), (0.0,))


def test_pad_images():
    x = np.full((2, 1, 28, 28), 7, np.uint8)
    p = pad_images(x, 32)
    assert p.shape == (2, 1, 32, 32) and p.dtype == np.uint8
    assert (p[:, :, 2:30, 2:30] == 7).all() and p.sum() == 7 * x.size
    with pytest.raises(ValueError, match="smaller"):
        pad_images(x, 20)


def crop_flip_loop(batch, oy, ox, flips, padding):
    """Per-sample reference for random_crop_flip, written the obvious way."""
    b, c, h, w = batch.shape
    padded = np.pad(batch, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out = np.empty_like(batch)
    for i in range(b):
        crop = padded[i, :, oy[i]:oy[i] + h, ox[i]:ox[i] + w]
        out[i] = crop[:, :, ::-1] if flips[i] else crop
    return out


@settings(deadline=None, max_examples=20)
@given(b=st.integers(1, 6), c=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
       padding=st.integers(0, 4), seed=st.integers(0, 2**32 - 1))
def test_random_crop_flip_matches_loop(b, c, h, w, padding, seed):
    batch = np.random.default_rng(seed).integers(0, 256, (b, c, h, w), dtype=np.uint8)
    out = random_crop_flip(batch, np.random.default_rng(seed), padding=padding)
    draw = np.random.default_rng(seed)  # the same draws, in the same order
    oy, ox = draw.integers(0, 2 * padding + 1, b), draw.integers(0, 2 * padding + 1, b)
    flips = draw.random(b) < 0.5
    np.testing.assert_array_equal(out, crop_flip_loop(batch, oy, ox, flips, padding))
    assert out.dtype == batch.dtype and out.shape == batch.shape


def test_random_crop_flip_varies_per_sample():
    batch = np.tile(np.arange(32 * 32, dtype=np.float32).reshape(1, 1, 32, 32), (64, 3, 1, 1))
    out = random_crop_flip(batch, np.random.default_rng(0))
    assert len({o.tobytes() for o in out}) > 30
    assert (out[:, 0] == out[:, 1]).all()  # one crop for all channels of an image


def test_batches_cover_the_dataset_once():
    ds = make_dataset(50)
    loader = DataLoader(ds, 16, seed=1)
    batches = collect(loader)
    assert len(loader) == 4 and [len(y) for _, y in batches] == [16, 16, 16, 2]
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    assert x.dtype == np.float32 and x.shape == (50, 1, 28, 28) and y.dtype == np.int64
    order = loader.order(0)
    assert sorted(order.tolist()) == list(range(50))
    np.testing.assert_array_equal(y, ds.labels[order])
    np.testing.assert_allclose(x, normalize(ds.images[order], ds.mean, ds.std))


def test_drop_last_and_no_shuffle():
    ds = make_dataset(50)
    loader = DataLoader(ds, 16, shuffle=False, drop_last=True)
    assert len(loader) == 3
    y = np.concatenate([b for _, b in loader])
    np.testing.assert_array_equal(y, ds.labels[:48])


def test_shuffle_is_a_function_of_seed_and_epoch():
    ds = make_dataset(40)
    a = DataLoader(ds, 8, seed=7)
    first, second = collect(a), collect(a)  # each full pass advances the epoch
    assert a.epoch == 2
    assert not np.array_equal(a.order(0), a.order(1))
    assert not np.array_equal(first[0][0], second[0][0])
    b = DataLoader(ds, 8, seed=7)
    b.set_epoch(1)  # "resumed" at epoch 1: the same batches as the uninterrupted run
    for (x1, y1), (x2, y2) in zip(second, collect(b)):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    c = DataLoader(ds, 8, seed=8)
    assert not np.array_equal(c.order(0), a.order(0))
    a.set_epoch(0)
    np.testing.assert_array_equal(collect(a)[0][0], first[0][0])


def test_augmentation_is_a_function_of_seed_and_epoch():
    ds = make_dataset(24, c=3, size=32)
    a = DataLoader(ds, 8, seed=3, augment="cifar")
    b = DataLoader(ds, 8, seed=3, augment="cifar")
    b.set_epoch(5)
    a.set_epoch(5)
    for (x1, _), (x2, _) in zip(a, b):
        np.testing.assert_array_equal(x1, x2)
    plain = collect(DataLoader(ds, 8, seed=3, shuffle=True))
    b.set_epoch(0)
    augmented = collect(b)
    assert any(not np.array_equal(p[0], q[0]) for p, q in zip(plain, augmented))
    a.set_epoch(6)
    assert any(not np.array_equal(p[0], q[0]) for p, q in zip(collect(a), augmented))


def test_pad_to_pads_with_background_before_normalising():
    ds = make_dataset(10)
    x, _ = next(iter(DataLoader(ds, 10, shuffle=False, pad_to=32)))
    assert x.shape == (10, 1, 32, 32)
    background = (0 - 0.5) / 0.25
    np.testing.assert_allclose(x[:, :, :2, :], background)
    np.testing.assert_allclose(x[:, :, :, -2:], background)
    np.testing.assert_allclose(x[:, :, 2:30, 2:30], normalize(ds.images, ds.mean, ds.std))


def test_custom_augment_callable_gets_uint8_and_seeded_rng():
    seen = []

    def augment(batch, rng):
        seen.append((batch.dtype, rng.integers(0, 2**31)))
        return batch

    loader = DataLoader(make_dataset(8), 4, augment=augment, seed=2)
    collect(loader)
    loader.set_epoch(0)
    collect(loader)
    assert seen[0][0] == np.uint8 and seen[:2] == seen[2:]


def test_bad_arguments():
    ds = make_dataset(4)
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(ds, 0)
    with pytest.raises(ValueError, match="augment"):
        DataLoader(ds, 2, augment="mnist")


def test_dataset_validation():
    with pytest.raises(ValueError, match="uint8"):
        Dataset(np.zeros((2, 1, 4, 4), np.float32), np.zeros(2), 10, (0.5,), (0.5,))
    with pytest.raises(ValueError, match="labels"):
        Dataset(np.zeros((2, 1, 4, 4), np.uint8), np.zeros(3), 10, (0.5,), (0.5,))
    with pytest.raises(ValueError, match=r"\[0, 9\]"):
        Dataset(np.zeros((2, 1, 4, 4), np.uint8), np.array([0, 10]), 10, (0.5,), (0.5,))
    ds = make_dataset(6)
    sub = ds.subset([1, 3])
    assert len(sub) == 2 and sub.shape == (1, 28, 28) and sub.mean == ds.mean
