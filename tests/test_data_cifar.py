"""CIFAR readers against small files made here: binary (CIFAR-10 and CIFAR-100, fine and
coarse), the pickled python version (Python 2 and 3 pickles), truncated and corrupt
files, labels out of range, and pickles that try to run code or smuggle objects."""
import os
import pickle
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from minadder.data import (DatasetFormatError, UnsafePickleError, load_dataset, locate,
                           read_cifar_binary, read_cifar_python)


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MINADDER_DATA", raising=False)
    monkeypatch.setattr(locate, "SYSTEM_DIRS", ())


def random_images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


def cifar10_bin(images, labels):
    labels = np.asarray(labels, np.uint8)[:, None]
    return np.concatenate([labels, images.reshape(len(images), -1)], axis=1).tobytes()


def cifar100_bin(images, coarse, fine):
    lab = np.stack([np.asarray(coarse, np.uint8), np.asarray(fine, np.uint8)], axis=1)
    return np.concatenate([lab, images.reshape(len(images), -1)], axis=1).tobytes()


# ============================================================================ binary
def test_cifar10_binary_roundtrip(tmp_path):
    imgs, labels = random_images(5), [0, 9, 3, 3, 1]
    a, b = tmp_path / "data_batch_1.bin", tmp_path / "data_batch_2.bin"
    a.write_bytes(cifar10_bin(imgs[:3], labels[:3]))
    b.write_bytes(cifar10_bin(imgs[3:], labels[3:]))
    x, y = read_cifar_binary([a, b])
    assert x.shape == (5, 3, 32, 32) and x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(x, imgs)
    np.testing.assert_array_equal(y, labels)
    # channel layout: the first 1024 bytes after the label are the red plane, row-major
    raw = np.frombuffer(a.read_bytes(), np.uint8)
    np.testing.assert_array_equal(x[0, 0].ravel(), raw[1:1025])
    np.testing.assert_array_equal(x[0, 2, 31], raw[1 + 2048 + 31 * 32:1 + 3072])


def test_cifar100_binary_fine_and_coarse(tmp_path):
    imgs = random_images(4)
    coarse, fine = [0, 19, 5, 7], [99, 0, 42, 11]
    path = tmp_path / "train.bin"
    path.write_bytes(cifar100_bin(imgs, coarse, fine))
    x, y = read_cifar_binary(path)
    np.testing.assert_array_equal(x, imgs)
    np.testing.assert_array_equal(y, fine)
    _, yc = read_cifar_binary(path, coarse=True)
    np.testing.assert_array_equal(yc, coarse)
    # an unfamiliar name: the layout can be forced
    other = tmp_path / "mine.bin"
    other.write_bytes(path.read_bytes())
    np.testing.assert_array_equal(read_cifar_binary(other, cifar100=True)[1], fine)


@pytest.mark.parametrize("cut", [1, 3072])
def test_binary_truncated(tmp_path, cut):
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(cifar10_bin(random_images(2), [1, 2])[:-cut])
    with pytest.raises(DatasetFormatError, match="truncated") as e:
        read_cifar_binary(path)
    assert str(path) in str(e.value) and "3073-byte" in str(e.value)


def test_binary_empty(tmp_path):
    path = tmp_path / "test_batch.bin"
    path.write_bytes(b"")
    with pytest.raises(DatasetFormatError, match="empty"):
        read_cifar_binary(path)


def test_cifar10_label_out_of_range(tmp_path):
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(cifar10_bin(random_images(3), [1, 10, 2]))
    with pytest.raises(DatasetFormatError, match="label 10 of record 1 is outside 0-9") as e:
        read_cifar_binary(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("coarse, fine, coarse_flag, match", [
    ([0, 20], [0, 1], False, "coarse label 20 of record 1 is outside 0-19"),
    ([0, 1], [100, 1], False, "fine label 100 of record 0 is outside 0-99"),
    ([0, 20], [0, 1], True, "coarse label 20 of record 1 is outside 0-19"),
])
def test_cifar100_labels_out_of_range(tmp_path, coarse, fine, coarse_flag, match):
    path = tmp_path / "test.bin"
    path.write_bytes(cifar100_bin(random_images(2), coarse, fine))
    with pytest.raises(DatasetFormatError, match=match):
        read_cifar_binary(path, coarse=coarse_flag)


def test_load_cifar10_binary_layout(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for i in range(1, 6):
        (folder / f"data_batch_{i}.bin").write_bytes(cifar10_bin(random_images(2, i), [i, i]))
    (folder / "test_batch.bin").write_bytes(cifar10_bin(random_images(3, 9), [7, 8, 9]))
    train = load_dataset("cifar10", "train", data_dir=tmp_path)  # parent folder
    test = load_dataset("cifar10", "test", data_dir=folder)      # the folder itself
    assert train.images.shape == (10, 3, 32, 32) and train.labels.tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert test.labels.tolist() == [7, 8, 9] and test.num_classes == 10
    assert train.mean == (0.4914, 0.4822, 0.4465) and train.classes[0] == "airplane"


def test_load_cifar100_binary_coarse(tmp_path):
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    (folder / "train.bin").write_bytes(cifar100_bin(random_images(2), [3, 4], [30, 40]))
    ds = load_dataset("cifar100", "train", data_dir=tmp_path)
    assert ds.num_classes == 100 and ds.labels.tolist() == [30, 40]
    ds = load_dataset("cifar100", "train", data_dir=tmp_path, coarse=True)
    assert ds.num_classes == 20 and ds.labels.tolist() == [3, 4]


# ============================================================================ python version
class Py2StylePickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` opcodes (SHORT_BINSTRING/BINSTRING), as the real
    CIFAR python batches (pickled by Python 2's cPickle) do."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_pickle(obj):
    import io
    buf = io.BytesIO()
    Py2StylePickler(buf, protocol=2).dump(obj)
    # NumPy 1.x (and the real files) name the reconstructor numpy.core.multiarray
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def cifar10_batch(n=3, seed=0):
    imgs = random_images(n, seed)
    return imgs, {b"batch_label": b"training batch 1 of 5", b"labels": list(range(n)),
                  b"data": imgs.reshape(n, -1), b"filenames": [b"img%d.png" % i for i in range(n)]}


def test_python_version_py2_pickle(tmp_path):
    imgs, batch = cifar10_batch()
    data = py2_pickle(batch)
    assert b"numpy.core.multiarray" in data and pickle.SHORT_BINSTRING in data
    path = tmp_path / "data_batch_1"
    path.write_bytes(data)
    x, y = read_cifar_python(path)
    np.testing.assert_array_equal(x, imgs)
    assert y.tolist() == [0, 1, 2] and y.dtype == np.int64


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_python_version_py3_pickles(tmp_path, protocol):
    imgs, batch = cifar10_batch(seed=protocol)
    batch = {k.decode(): v for k, v in batch.items()}  # str keys, as Python 3 would write
    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    x, y = read_cifar_python([path, path])
    np.testing.assert_array_equal(x, np.concatenate([imgs, imgs]))


def test_python_version_cifar100(tmp_path):
    imgs = random_images(2)
    batch = {b"data": imgs.reshape(2, -1), b"fine_labels": [99, 3], b"coarse_labels": [19, 0],
             b"filenames": [b"a", b"b"], b"batch_label": b"training batch 1 of 1"}
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    (folder / "train").write_bytes(py2_pickle(batch))
    assert read_cifar_python(folder / "train")[1].tolist() == [99, 3]
    assert read_cifar_python(folder / "train", coarse=True)[1].tolist() == [19, 0]
    ds = load_dataset("cifar100", "train", data_dir=tmp_path)
    np.testing.assert_array_equal(ds.images, imgs)


def test_python_version_label_out_of_range(tmp_path):
    _, batch = cifar10_batch()
    batch[b"labels"] = [0, 1, 12]
    path = tmp_path / "data_batch_1"
    path.write_bytes(py2_pickle(batch))
    with pytest.raises(DatasetFormatError, match="label 12 of record 2 is outside 0-9"):
        read_cifar_python(path)


def test_python_version_wrong_shapes(tmp_path):
    _, batch = cifar10_batch()
    path = tmp_path / "b"
    path.write_bytes(py2_pickle({**batch, b"labels": [0, 1]}))
    with pytest.raises(DatasetFormatError, match="3 images but 'labels'"):
        read_cifar_python(path)
    path.write_bytes(py2_pickle({**batch, b"data": np.zeros((3, 100), np.uint8)}))
    with pytest.raises(DatasetFormatError, match=r"\(N, 3072\)"):
        read_cifar_python(path)
    path.write_bytes(py2_pickle([1, 2, 3]))
    with pytest.raises(DatasetFormatError, match="expected a pickled dict"):
        read_cifar_python(path)


def test_python_version_truncated(tmp_path):
    _, batch = cifar10_batch()
    path = tmp_path / "data_batch_1"
    path.write_bytes(py2_pickle(batch)[:-500])
    with pytest.raises(DatasetFormatError) as e:
        read_cifar_python(path)
    assert str(path) in str(e.value)


class RunsShell:
    """What an attacker would pickle: unpickling calls os.system(command)."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    _, batch = cifar10_batch()
    batch[b"labels"] = RunsShell(f"touch {marker}")
    for data in (pickle.dumps(batch, protocol=2), pickle.dumps(batch, protocol=5)):
        path = tmp_path / "data_batch_1"
        path.write_bytes(data)
        with pytest.raises(UnsafePickleError, match="refusing to load global (posix|nt).system") as e:
            read_cifar_python(path)
        assert str(path) in str(e.value)
        assert not marker.exists()
    # the same bytes really would run the command under plain pickle (the test is meaningful)
    pickle.loads(pickle.dumps(RunsShell(f"touch {marker}")))
    assert marker.exists()


@pytest.mark.parametrize("module, name", [("builtins", "eval"), ("builtins", "getattr"),
                                          ("subprocess", "Popen"), ("numpy", "load"),
                                          ("numpy.core.multiarray", "scalar")])
def test_other_globals_refused(tmp_path, module, name):
    data = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"q\x00."
    path = tmp_path / "b"
    path.write_bytes(data)
    with pytest.raises(UnsafePickleError, match=f"{module}.{name}"):
        read_cifar_python(path)


def test_object_arrays_refused(tmp_path):
    """An object-dtype array could carry arbitrary objects: the dtype itself is refused."""
    batch = {b"data": np.array([None, 1], dtype=object), b"labels": [0]}
    path = tmp_path / "b"
    path.write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(UnsafePickleError, match="not a plain numeric type"):
        read_cifar_python(path)


def test_ndarray_not_callable_from_pickle(tmp_path):
    """numpy.ndarray may appear only as the reconstructor's argument, not be called."""
    data = (b"\x80\x02cnumpy\nndarray\nq\x00K\x02\x85q\x01X\x01\x00\x00\x00Oq\x02\x86q\x03Rq\x04.")
    path = tmp_path / "b"
    path.write_bytes(data)
    with pytest.raises(DatasetFormatError):
        read_cifar_python(path)


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(protocol=st.sampled_from(["py2", 2, 5]), edits=st.lists(
    st.tuples(st.sampled_from(["set", "cut", "insert"]), st.floats(0, 1), st.binary(min_size=1, max_size=8)),
    min_size=1, max_size=4))
def test_corrupted_pickles_fail_cleanly(tmp_path, protocol, edits):
    """Random byte edits of a valid batch either still load or raise DatasetFormatError
    (UnsafePickleError included); never another exception, never code."""
    _, batch = cifar10_batch(2)
    data = bytearray(py2_pickle(batch) if protocol == "py2" else pickle.dumps(batch, protocol=protocol))
    for op, where, payload in edits:
        pos = int(where * (len(data) - 1))
        if op == "set":
            data[pos] = payload[0]
        elif op == "cut":
            del data[pos:pos + 8 * len(payload)]
        else:
            data[pos:pos] = payload
    path = tmp_path / "fuzzed"
    path.write_bytes(bytes(data))
    try:
        x, y = read_cifar_python(path)
    except DatasetFormatError as e:
        assert str(path) in str(e)
    else:
        assert x.shape == (len(y), 3, 32, 32) and x.dtype == np.uint8 and ((0 <= y) & (y < 10)).all()


def test_a_training_batch_cut_at_a_record_boundary_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for i in range(1, 6):
        (folder / f"data_batch_{i}.bin").write_bytes(cifar10_bin(random_images(3 if i != 4 else 2, i), [i] * (3 if i != 4 else 2)))
    with pytest.raises(DatasetFormatError, match=r"data_batch_4.bin: holds 2 records but the other batches .* up to 3"):
        load_dataset("cifar10", "train", data_dir=tmp_path)


# ============================================================================ sizes bounded
def test_a_pickle_declaring_a_huge_array_is_refused_before_allocating(tmp_path):
    """A 68-byte pickle that calls NumPy's array reconstructor with the shape (10**7, 3072),
    30 GB: an array may not be larger than the file that should hold its bytes."""
    data = (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + pickle.BININT
            + struct.pack("<i", 10 ** 7) + pickle.BININT2 + struct.pack("<H", 3072) + pickle.TUPLE2
            + pickle.SHORT_BINSTRING + b"\x01b" + pickle.TUPLE3 + pickle.REDUCE + pickle.STOP)
    path = tmp_path / "data_batch_1"
    path.write_bytes(data)
    with pytest.raises(DatasetFormatError, match=r"shape \(10000000, 3072\) and dtype int8 is larger than "
                                                 r"the file \(68 bytes\)") as e:
        read_cifar_python(path)
    assert str(e.value).startswith(f"{path}: ")


def test_a_batch_file_larger_than_any_real_one_is_refused_unread(tmp_path, monkeypatch):
    from minadder.data import cifar
    monkeypatch.setattr(cifar, "DATA_FILE_LIMIT", 3073 * 2)
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(cifar10_bin(random_images(3), [0, 1, 2]))
    with pytest.raises(DatasetFormatError, match="file of 9,219 bytes exceeds the limit of 6,146 bytes"):
        read_cifar_binary(path)


def test_python_version_empty_batch_and_the_other_label_set_are_checked(tmp_path):
    path = tmp_path / "train"
    path.write_bytes(py2_pickle({b"data": np.zeros((0, 3072), np.uint8), b"fine_labels": [], b"coarse_labels": []}))
    with pytest.raises(DatasetFormatError, match="holds no images"):
        read_cifar_python(path)
    batch = {b"data": random_images(2).reshape(2, -1), b"fine_labels": [5, 3], b"coarse_labels": [19, 20]}
    path.write_bytes(py2_pickle(batch))
    with pytest.raises(DatasetFormatError, match="coarse label 20 of record 1 is outside 0-19"):
        read_cifar_python(path)   # the fine labels are chosen; the coarse ones are checked too
