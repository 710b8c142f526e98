"""Where datasets are looked up (data_dir, then $MINADDER_DATA, then ~/.cache/minadder)
and the message when a dataset is missing."""
import gzip

import numpy as np
import pytest

from minadder.data import DatasetNotFoundError, find_dataset, load_dataset, locate, search_places


def write_mnist(folder, n, split="train"):
    """Tiny MNIST IDX pair with ``n`` images, so the copy that was read can be told by its size."""
    prefix = "train" if split == "train" else "t10k"
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in ((f"{prefix}-images-idx3-ubyte", np.zeros((n, 28, 28), np.uint8)),
                      (f"{prefix}-labels-idx1-ubyte", np.zeros(n, np.uint8))):
        header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
        (folder / (name + ".gz")).write_bytes(gzip.compress(header + arr.tobytes()))


@pytest.fixture
def home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MINADDER_DATA", raising=False)
    monkeypatch.setattr(locate, "SYSTEM_DIRS", ())
    return tmp_path / "home"


def test_order_data_dir_env_cache(home, tmp_path, monkeypatch):
    cache, env, given = home / ".cache" / "minadder", tmp_path / "env", tmp_path / "given"
    write_mnist(cache / "mnist", 1)
    assert len(load_dataset("mnist", data_dir=given)) == 1  # data_dir lacks it: falls through to the cache
    write_mnist(env / "mnist", 2)
    monkeypatch.setenv("MINADDER_DATA", str(env))
    assert len(load_dataset("mnist")) == 2                  # $MINADDER_DATA before the cache
    write_mnist(given, 3)
    ds = load_dataset("mnist", data_dir=given)
    assert len(ds) == 3 and ds.source == str(given)         # data_dir first
    assert [why for _, why in search_places(given)] == ["data_dir / --data-dir", "$MINADDER_DATA", "cache"]


@pytest.mark.parametrize("sub", ["", "mnist", "MNIST/raw"])
def test_folder_or_parent_folder(home, tmp_path, sub):
    write_mnist(tmp_path / "d" / sub, 4, split="test")
    fmt, paths = find_dataset("mnist", "test", data_dir=tmp_path / "d")
    assert fmt == "idx" and [p.name for p in paths] == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert len(load_dataset("mnist", "test", data_dir=str(tmp_path / "d"))) == 4


def test_incomplete_copy_is_skipped(home, tmp_path):
    write_mnist(tmp_path / "a", 2)
    (tmp_path / "a" / "train-labels-idx1-ubyte.gz").unlink()
    write_mnist(home / ".cache" / "minadder" / "mnist", 5)
    assert len(load_dataset("mnist", data_dir=tmp_path / "a")) == 5


def test_missing_dataset_message(home, tmp_path, monkeypatch):
    monkeypatch.setenv("MINADDER_DATA", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError) as e:
        load_dataset("cifar10", "test", data_dir=tmp_path / "given")
    assert isinstance(e.value, DatasetNotFoundError)
    text = str(e.value)
    for place in (tmp_path / "given", tmp_path / "given" / "cifar-10-batches-bin",
                  tmp_path / "env", tmp_path / "env" / "cifar-10-batches-py",
                  home / ".cache" / "minadder", home / ".cache" / "minadder" / "cifar-10-batches-bin"):
        assert f"{place}  (" in text
    assert "test_batch.bin" in text
    assert "python -m minadder download cifar10" in text
    assert "minadder.data.download('cifar10', root)" in text
    assert "--data-dir" in text and "$MINADDER_DATA" in text


def test_bad_names(home):
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        load_dataset("mnist", "val")


def test_default_root(home, tmp_path, monkeypatch):
    assert locate.default_root() == home / ".cache" / "minadder"
    monkeypatch.setenv("MINADDER_DATA", str(tmp_path / "x"))
    assert locate.default_root() == tmp_path / "x"


def test_fallback_false_searches_data_dir_only(home, tmp_path):
    write_mnist(home / ".cache" / "minadder" / "mnist", 5, split="test")
    write_mnist(tmp_path / "given", 2, split="train")
    found = locate.locate_dataset("mnist", "train", tmp_path / "given")
    assert found.folder == tmp_path / "given" and found.why == "data_dir / --data-dir"
    assert locate.locate_dataset("mnist", "test", tmp_path / "given").why == "cache"  # the fallback
    with pytest.raises(DatasetNotFoundError) as e:
        load_dataset("mnist", "test", data_dir=tmp_path / "given", fallback=False)
    assert str(tmp_path / "given") in str(e.value) and "(cache)" not in str(e.value)


def test_a_chosen_cifar_file_by_name_or_path(home, tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    records = np.zeros((3, 3073), np.uint8)
    records[:, 0] = [1, 2, 3]
    (folder / "test_batch_first3.bin").write_bytes(records.tobytes())
    ds = load_dataset("cifar10", "test", data_dir=tmp_path, file="test_batch_first3.bin")
    assert ds.labels.tolist() == [1, 2, 3] and ds.source == str(folder)
    assert len(load_dataset("cifar10", "test", file=str(folder / "test_batch_first3.bin"))) == 3
    with pytest.raises(DatasetNotFoundError, match="test_batch_missing.bin"):
        load_dataset("cifar10", "test", data_dir=tmp_path, file="test_batch_missing.bin")
    with pytest.raises(ValueError, match="--test-file"):
        load_dataset("mnist", "test", data_dir=tmp_path, file="x.bin")
