"""minadder.bounded: reading files minadder did not write itself, every size bounded before
anything is decompressed or allocated; real gzip and .npz bombs with their peak memory."""
import gzip
import io
import sys
import zipfile

import numpy as np
import pytest

from bombs import GiB, gzip_bomb, npz_bomb, peak_memory_of
from minadder.bounded import (BoundedReader, FileRejected, check_file_size, fill_from, load_npz,
                              open_bounded, read_bounded)

MiB = 1 << 20


def one_line(error, path):
    text = str(error)
    assert "\n" not in text and text.startswith(f"{path}: "), text
    return text


# ============================================================================ streams
@pytest.mark.parametrize("gz", [False, True])
def test_read_bounded_returns_the_bytes_up_to_the_limit_and_refuses_one_more(tmp_path, gz):
    data = bytes(range(256)) * 40
    path = tmp_path / "f"
    path.write_bytes(gzip.compress(data) if gz else data)
    assert read_bounded(path, len(data)) == data
    with pytest.raises(FileRejected) as e:
        read_bounded(path, len(data) - 1)
    assert "limit of 10,239 bytes" in one_line(e.value, path)


def test_gunzip_false_reads_a_gzip_file_as_it_is(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(gzip.compress(b"abc"))
    assert read_bounded(path, 100, gunzip=False) == path.read_bytes()


def test_a_plain_file_over_the_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = tmp_path / "big"
    path.write_bytes(bytes(1000))
    monkeypatch.setattr("builtins.open", None)   # would fail if the file were opened
    with pytest.raises(FileRejected, match="file of 1,000 bytes exceeds the limit of 999 bytes"):
        check_file_size(path, 999)


def test_a_corrupt_gzip_stream_is_rejected_naming_the_file(tmp_path):
    data = bytearray(gzip.compress(bytes(range(256)) * 100))
    data[30:40] = b"\xff" * 10
    path = tmp_path / "bad.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(FileRejected, match="corrupt or truncated compressed data") as e:
        read_bounded(path, MiB)
    one_line(e.value, path)


def test_the_bounded_reader_stops_an_endless_stream(tmp_path):
    class Endless(io.RawIOBase):
        def readable(self):
            return True

        def read(self, n=-1):
            return b"x" * (n if n and n > 0 else 4096)

    stream = BoundedReader(Endless(), 10_000, "endless")
    with pytest.raises(FileRejected, match="exceed the limit of 10,000 bytes"):
        while stream.read(3000):
            pass
    assert stream.count == 10_001   # one byte past the limit, no more


def test_fill_from_says_when_the_stream_ends_first():
    array = np.empty(10, np.float32)
    with pytest.raises(FileRejected, match="truncated data: 12 of the 40 bytes"):
        fill_from(io.BytesIO(bytes(12)), array, "f")
    assert fill_from(io.BytesIO(np.arange(10, dtype=np.float32).tobytes()), array, "f").tolist() == list(range(10))


def rejected_in_a_child(call, bomb):
    """(the FileRejected message, peak memory) of ``minadder.bounded.<call>`` on ``bomb``
    in a fresh Python process."""
    assert bomb.stat().st_size < 2 * MiB
    code = (f"import sys; from minadder.bounded import *\n"
            f"try:\n {call}\nexcept FileRejected as e:\n print(e)")
    result, peak = peak_memory_of([sys.executable, "-c", code, bomb])
    assert result.returncode == 0, result.stderr
    return result.stdout, peak


def test_a_gzip_bomb_is_stopped_with_bounded_memory(tmp_path):
    """1 GiB of zeros in a 1 MB file: read with a 64 MiB limit, the reader stops near
    64 MiB; the whole process stays far below the expanded size."""
    message, peak = rejected_in_a_child("read_bounded(sys.argv[1], 64 << 20)", gzip_bomb(tmp_path / "bomb.gz"))
    assert "exceed the limit of 64 MiB" in message
    assert peak < 250 * MiB, peak / MiB


def test_open_bounded_streams_without_reading_ahead_of_what_is_asked(tmp_path):
    bomb = gzip_bomb(tmp_path / "bomb.gz", expanded=GiB, head=b"HEAD")
    with open_bounded(bomb, 32 * MiB) as f:
        assert f.read(4) == b"HEAD"
        assert f.raw.count <= 2 * MiB   # one buffer, not the file


# ============================================================================ .npz files
ARRAYS = dict(a=np.arange(12.0).reshape(3, 4), b=np.asfortranarray(np.arange(6, dtype=">i4").reshape(2, 3)),
              c=np.array(3), s=np.array(["ab", "c"]), e=np.zeros((0, 5), np.float32),
              st=np.zeros(2, dtype=[("x", "i4"), ("y", "f8")]), u=np.frombuffer(b'{"k": 1}', np.uint8))


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_load_npz_reads_what_numpy_writes(tmp_path, save):
    path = tmp_path / "a.npz"
    save(path, **ARRAYS)
    out = load_npz(path)
    assert list(out) == list(ARRAYS)
    for name, array in ARRAYS.items():
        assert out[name].dtype == array.dtype and out[name].shape == array.shape
        np.testing.assert_array_equal(out[name], array)
    assert out["b"].flags.f_contiguous


def test_an_object_entry_is_refused_naming_it(tmp_path):
    path = tmp_path / "o.npz"
    np.savez(path, fine=np.zeros(2), o=np.array([1, None], dtype=object))
    with pytest.raises(FileRejected, match="entry 'o' holds Python objects") as e:
        load_npz(path)
    one_line(e.value, path)


def test_an_entry_over_the_limit_is_refused_by_its_header(tmp_path):
    path = tmp_path / "a.npz"
    np.savez_compressed(path, w=np.zeros(1000))
    with pytest.raises(FileRejected, match=r"entry 'w': shape \(1000,\) of float64 needs 8,000 bytes, "
                                           r"over the limit of 100 bytes per array"):
        load_npz(path, max_entry_bytes=100)
    assert load_npz(path, max_entry_bytes=8000)["w"].shape == (1000,)


def test_the_total_and_the_number_of_entries_are_bounded(tmp_path):
    path = tmp_path / "a.npz"
    np.savez_compressed(path, **{f"w{i}": np.zeros(100) for i in range(5)})
    assert path.stat().st_size < 3000
    with pytest.raises(FileRejected, match="declare 4,640 bytes in all, over the limit of 3,000 bytes"):
        load_npz(path, max_total_bytes=3000)
    with pytest.raises(FileRejected, match="5 entries, over the limit of 4"):
        load_npz(path, max_entries=4)


def test_a_header_that_asks_for_more_than_the_entry_holds_is_refused_before_allocating(tmp_path):
    """A .npy header claiming 10**12 float64 values in a 200-byte entry: NumPy would try to
    allocate 8 TB; the header is checked against the bound first."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    header["shape"] = (10 ** 12,)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    path = tmp_path / "lie.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", buf.getvalue() + bytes(80))
    with pytest.raises(FileRejected, match=r"shape \(1000000000000,\) of float64 needs 7,450.6 GiB"):
        load_npz(path)
    with pytest.raises(FileRejected, match="its header asks for 800 data bytes, the zip records 80"):
        header["shape"] = (100,)
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, header)
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("x.npy", buf.getvalue() + bytes(80))
        load_npz(path)


@pytest.mark.parametrize("content, words", [
    (b"", "empty, truncated, or not a zip archive"),
    (b"not a zip at all", "empty, truncated, or not a zip archive"),
])
def test_a_file_that_is_not_an_npz_is_refused(tmp_path, content, words):
    path = tmp_path / "x.npz"
    path.write_bytes(content)
    with pytest.raises(FileRejected, match=words) as e:
        load_npz(path)
    one_line(e.value, path)


def test_a_truncated_or_bit_flipped_npz_is_refused(tmp_path):
    path = tmp_path / "x.npz"
    np.savez_compressed(path, w=np.arange(10_000.0))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(FileRejected):
        load_npz(path)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF   # in the deflated payload
    path.write_bytes(bytes(flipped))
    with pytest.raises(FileRejected, match="corrupt"):
        load_npz(path)


def test_members_that_are_not_arrays_or_appear_twice_are_refused(tmp_path):
    path = tmp_path / "x.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", b"hi")
    with pytest.raises(FileRejected, match="entry 'readme.txt' is not a .npy array"):
        load_npz(path)
    buf = io.BytesIO()
    np.save(buf, np.zeros(2))
    with pytest.warns(UserWarning), zipfile.ZipFile(path, "w") as zf:
        zf.writestr("w.npy", buf.getvalue())
        zf.writestr("w.npy", buf.getvalue())
    with pytest.raises(FileRejected, match="entry 'w.npy' appears twice"):
        load_npz(path)


def test_allow_pickle_true_is_not_offered(tmp_path):
    with pytest.raises(ValueError, match="not supported"):
        load_npz(tmp_path / "x.npz", allow_pickle=True)


def test_an_npz_bomb_is_refused_with_bounded_memory(tmp_path):
    """One entry of 1 GiB of zeros in a 1 MB .npz: ``np.load`` would allocate the whole
    gigabyte; ``load_npz`` refuses it from the zip's directory, before decompressing."""
    message, peak = rejected_in_a_child("load_npz(sys.argv[1])", npz_bomb(tmp_path / "bomb.npz"))
    assert "entry 'x' declares 1.0 GiB, over the limit of 256 MiB per array" in message
    assert peak < 250 * MiB, peak / MiB


def test_an_npz_bomb_whose_directory_lies_is_refused(tmp_path):
    """The same bomb with a directory that declares 1,000 bytes: the stream is cut there and
    its checksum fails; nothing near the expanded size is read."""
    bomb = npz_bomb(tmp_path / "lie.npz", expanded=256 * MiB, declare=1000)
    with pytest.raises(FileRejected, match="corrupt or truncated compressed data") as e:
        load_npz(bomb)
    one_line(e.value, bomb)
