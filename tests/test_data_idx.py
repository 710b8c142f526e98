"""IDX reader (MNIST / Fashion-MNIST) against small files made here: valid, truncated,
wrong magic, wrong sizes, and labels out of range."""
import gzip

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from minadder.data import DatasetFormatError, load_dataset, locate, read_idx


def idx_bytes(array, code=None):
    """Serialise an array in the IDX format (big-endian, header = magic + dims)."""
    codes = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C,
             np.float32: 0x0D, np.float64: 0x0E}
    array = np.asarray(array)
    code = codes[array.dtype.type] if code is None else code
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_mnist(folder, n=12, labels=None, gz=True, split="train", seed=0):
    """Write a tiny MNIST-layout pair of IDX files into ``folder``; return (images, labels)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8) if labels is None else np.asarray(labels, np.uint8)
    prefix = "train" if split == "train" else "t10k"
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
        data = idx_bytes(arr)
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return images, labels


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MINADDER_DATA", raising=False)
    monkeypatch.setattr(locate, "SYSTEM_DIRS", ())


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("gz", [False, True])
def test_roundtrip_every_type(tmp_path, dtype, gz):
    array = (np.arange(2 * 3 * 4) - 7).astype(dtype).reshape(2, 3, 4)
    if dtype == np.uint8:
        array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    data = idx_bytes(array)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    path.write_bytes(gzip.compress(data) if gz else data)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def test_gzip_detected_by_content_not_name(tmp_path):
    path = tmp_path / "labels"  # no .gz suffix
    path.write_bytes(gzip.compress(idx_bytes(np.arange(5, dtype=np.uint8))))
    np.testing.assert_array_equal(read_idx(path), np.arange(5))


@pytest.mark.parametrize("cut", [1, 100, 783])
def test_truncated_payload(tmp_path, cut):
    data = idx_bytes(np.zeros((2, 28, 28), np.uint8))[:-cut]
    path = tmp_path / "images.idx"
    path.write_bytes(data)
    with pytest.raises(DatasetFormatError, match="truncated") as e:
        read_idx(path)
    assert str(path) in str(e.value)


def test_trailing_bytes(tmp_path):
    path = tmp_path / "x.idx"
    path.write_bytes(idx_bytes(np.zeros(3, np.uint8)) + b"\0")
    with pytest.raises(DatasetFormatError, match="trailing"):
        read_idx(path)


def test_truncated_header(tmp_path):
    path = tmp_path / "x.idx"
    path.write_bytes(idx_bytes(np.zeros((2, 2, 2), np.uint8))[:9])
    with pytest.raises(DatasetFormatError, match="header"):
        read_idx(path)
    path.write_bytes(b"\0\0")
    with pytest.raises(DatasetFormatError, match="too short"):
        read_idx(path)


@pytest.mark.parametrize("magic", [b"\x01\x00\x08\x01", b"\x00\x00\x07\x01", b"PK\x03\x04"])
def test_wrong_magic(tmp_path, magic):
    path = tmp_path / "x.idx"
    path.write_bytes(magic + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(DatasetFormatError, match="magic") as e:
        read_idx(path)
    assert str(path) in str(e.value)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((4, 28, 28), np.uint8)))[:-20])
    with pytest.raises(DatasetFormatError, match="gzip") as e:
        read_idx(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_layout(tmp_path, gz):
    images, labels = write_mnist(tmp_path / "mnist", gz=gz)
    ds = load_dataset("mnist", "train", data_dir=tmp_path)
    assert ds.images.shape == (12, 1, 28, 28) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64 and ds.num_classes == 10
    np.testing.assert_array_equal(ds.images[:, 0], images)
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.mean == (0.1307,) and ds.std == (0.3081,)
    assert ds.source == str(tmp_path / "mnist") and ds.name == "mnist"


def test_mnist_label_out_of_range(tmp_path):
    write_mnist(tmp_path, n=5, labels=[0, 1, 2, 10, 3])
    with pytest.raises(DatasetFormatError, match=r"label 10 of item 3 is outside 0-9") as e:
        load_dataset("mnist", "train", data_dir=tmp_path)
    assert "train-labels-idx1-ubyte" in str(e.value)


def test_mnist_count_mismatch(tmp_path):
    write_mnist(tmp_path, n=5)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros(4, np.uint8))))
    with pytest.raises(DatasetFormatError, match="4 labels for the 5 images"):
        load_dataset("mnist", "train", data_dir=tmp_path)


def test_mnist_wrong_image_shape(tmp_path):
    tmp_path.joinpath("t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((2, 32, 32), np.uint8)))
    tmp_path.joinpath("t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(2, np.uint8)))
    with pytest.raises(DatasetFormatError, match=r"\(N, 28, 28\)"):
        load_dataset("mnist", "test", data_dir=tmp_path)


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(gz=st.booleans(), cut=st.integers(0, 200), flips=st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=3))
def test_corrupted_idx_fails_cleanly(tmp_path, gz, cut, flips):
    """Truncated or byte-flipped files (raw or gzip) load or raise DatasetFormatError."""
    data = idx_bytes(np.arange(3 * 5 * 7, dtype=np.uint8).reshape(3, 5, 7))
    data = bytearray(gzip.compress(data) if gz else data)
    for pos, value in flips:
        data[pos % len(data)] = value
    data = data[:max(len(data) - cut, 0)]
    path = tmp_path / "fuzzed.idx"
    path.write_bytes(bytes(data))
    try:
        out = read_idx(path)
    except DatasetFormatError as e:
        assert str(path) in str(e)
    else:
        assert isinstance(out, np.ndarray)


# ============================================================================ headers bounded
@pytest.mark.parametrize("ndim", [0, 5, 255])
def test_a_dimension_count_outside_1_to_4_is_refused(tmp_path, ndim):
    path = tmp_path / "x.idx"
    path.write_bytes(bytes([0, 0, 8, ndim]) + bytes(4 * ndim))
    with pytest.raises(DatasetFormatError, match=f"declares {ndim} dimensions") as e:
        read_idx(path)
    assert str(e.value).startswith(f"{path}: ")


def test_sizes_over_the_limit_are_refused_before_the_payload_is_read(tmp_path, monkeypatch):
    """A header declaring 4 x 2**32-1 values: refused from the header alone (the payload
    that follows is never decompressed, nor an array allocated)."""
    path = tmp_path / "x.idx.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 0x0E, 4]) + b"\xff" * 16 + bytes(100)))
    monkeypatch.setattr(np, "empty", None)   # would fail if an array were allocated
    with pytest.raises(DatasetFormatError, match=r"dimensions \(4294967295, 4294967295, 4294967295, "
                                                 r"4294967295\) of float64, .* over the limit of 256 MiB"):
        read_idx(path)


def test_the_limit_is_exact(tmp_path):
    path = tmp_path / "x.idx.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((10, 10), np.float32))))
    assert read_idx(path, limit=400).shape == (10, 10)
    with pytest.raises(DatasetFormatError, match="over the limit of 399 bytes"):
        read_idx(path, limit=399)


def test_a_gzip_file_with_more_than_its_header_declares_stops_after_one_extra_byte(tmp_path):
    """Two labels declared, 64 MiB of zeros following: refused as trailing bytes, without
    decompressing the rest."""
    from bombs import gzip_bomb
    path = gzip_bomb(tmp_path / "labels.gz", expanded=64 << 20, head=idx_bytes(np.array([1, 2], np.uint8)))
    with pytest.raises(DatasetFormatError, match="trailing bytes"):
        read_idx(path, limit=1 << 20)


@pytest.mark.parametrize("split, prefix", [("train", "train"), ("test", "t10k")])
def test_an_empty_split_is_refused_naming_its_image_file(tmp_path, split, prefix):
    write_mnist(tmp_path, n=0, split=split)
    with pytest.raises(DatasetFormatError, match="holds no images") as e:
        load_dataset("mnist", split, data_dir=tmp_path)
    assert str(e.value).startswith(str(tmp_path / f"{prefix}-images-idx3-ubyte.gz"))
