"""Hostile and empty data files met through the command line, as a user would: `python -m
minadder train | evaluate | download` in a subprocess on tiny generated files; each ends
with a non-zero exit and one line naming the file, with no traceback and bounded memory."""
import functools
import gzip
import hashlib
import io
import resource
import subprocess
import sys
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from bombs import gzip_bomb, idx_header, npz_bomb, peak_memory_of
from cli_helpers import TINY, cli, one_line_error, private_env, shared_places, write_cifar10, write_mnist
from minadder.data import synthetic

MiB = 1 << 20


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The runs' environment: the $MINADDER_DATA (with the synthetic digits' cache) and the
    home folder that the CLI tests share."""
    return private_env(*shared_places(tmp_path_factory))


def train_mnist(env, folder, *extra):
    return cli(env, "train", "--dataset", "mnist", "--data-dir", folder, *TINY, *extra)


def empty_split(folder, split):
    """Replace one split of a tiny MNIST folder with IDX files that hold zero items."""
    prefix = "train" if split == "train" else "t10k"
    (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_header((0, 28, 28))))
    (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_header((0,))))
    return folder / f"{prefix}-images-idx3-ubyte.gz"


# ============================================================================ 1. empty splits
@pytest.mark.parametrize("split", ["train", "test"])
def test_an_empty_split_is_refused_when_it_is_read_before_any_epoch(env, tmp_path, split):
    folder = write_mnist(tmp_path / "mnist", 48)
    write_mnist(folder, 32, split="test")
    empty = empty_split(folder, split)
    out = tmp_path / "run"
    result = train_mnist(env, folder, "--output-dir", out)
    one_line_error(result, empty, "holds no images")
    assert "epoch" not in result.stdout and not out.exists()   # refused before training


@pytest.fixture(scope="module")
def digits_run(env, tmp_path_factory):
    """A tiny run on the synthetic digits: 1x28x28 images and 10 classes, like MNIST."""
    out = tmp_path_factory.mktemp("run") / "run"
    result = cli(env, "train", *TINY, "--output-dir", out)
    assert result.returncode == 0, result.stderr
    return out


def test_evaluate_on_an_empty_test_split_is_refused_naming_the_file(env, tmp_path, digits_run):
    folder = write_mnist(tmp_path / "mnist", 8, split="test")
    empty = empty_split(folder, "test")
    result = cli(env, "evaluate", digits_run, "--dataset", "mnist", "--data-dir", folder)
    one_line_error(result, empty, "holds no images")


# ============================================================================ 2. IDX headers, bombs
@pytest.mark.parametrize("header, words", [
    (bytes([0, 0, 8, 255]) + bytes(4 * 255), "declares 255 dimensions; MNIST-like files have 1 to 4"),
    (idx_header((4_000_000_000, 28, 28)), "over the limit of 256 MiB"),
    (idx_header((0xFFFFFFFF,) * 4), "over the limit of 256 MiB"),
    (bytes([0, 0, 0x42, 3]), "bad IDX magic number 0x00004203"),
    (idx_header((2, 28, 28)), "truncated"),
])
def test_an_absurd_idx_header_is_refused_in_one_line(env, tmp_path, header, words):
    folder = write_mnist(tmp_path / "mnist", 48)
    write_mnist(folder, 32, split="test")
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header))
    one_line_error(train_mnist(env, folder), path, words)


def test_a_gzip_bomb_in_the_training_files_is_stopped_with_bounded_memory(env, tmp_path):
    """A 1 MB train-images file whose header declares 60,000 images and that expands to
    1 GiB: the reader allocates the 47 MB the header asks for, finds the bytes that follow,
    and stops; the process never holds the expanded gigabyte."""
    folder = write_mnist(tmp_path / "mnist", 48)
    write_mnist(folder, 32, split="test")
    path = folder / "train-images-idx3-ubyte.gz"
    gzip_bomb(path, head=idx_header((60000, 28, 28)))
    result, peak = peak_memory_of([sys.executable, "-m", "minadder", "train", "--dataset", "mnist",
                                   "--data-dir", folder, *TINY], env=env)
    one_line_error(result, path, "trailing bytes")
    assert peak < 400 * MiB, peak / MiB


def test_an_npz_bomb_as_the_synthetic_digits_cache_is_replaced_not_loaded(tmp_path):
    """The cache .npz replaced by a 1 MB file that expands to 1 GiB: refused from its
    directory, the digits regenerated and the cache rebuilt, with bounded memory."""
    cache = synthetic._cache_file(tmp_path, 40, 20, 0)
    npz_bomb(cache, entry="x_train")
    code = ("import sys; from minadder.data import synthetic_digits\n"
            "train, test = synthetic_digits(40, 20, cache_dir=sys.argv[1]); print(len(train), len(test))")
    result, peak = peak_memory_of([sys.executable, "-c", code, tmp_path])
    assert result.returncode == 0 and result.stdout.split()[:2] == ["40", "20"], result
    assert peak < 400 * MiB, peak / MiB
    assert 30_000 < cache.stat().st_size < 100_000   # rebuilt: 60 digits, not the bomb


# ============================================================================ 9. CIFAR labels
def test_a_cifar10_label_byte_outside_0_9_is_refused_naming_file_and_record(env, tmp_path):
    folder = write_cifar10(tmp_path / "cifar-10-batches-bin")
    batch = folder / "data_batch_3.bin"
    data = bytearray(batch.read_bytes())
    data[4 * 3073] = 77
    batch.write_bytes(bytes(data))
    result = cli(env, "train", "--dataset", "cifar10", "--data-dir", tmp_path, "--model", "resnet20", *TINY)
    one_line_error(result, batch, "label 77 of record 4 is outside 0-9")


def test_a_cifar100_coarse_label_outside_0_19_is_refused(env, tmp_path):
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    for name, n in (("train.bin", 40), ("test.bin", 20)):
        records = np.random.default_rng(n).integers(0, 20, (n, 3074), dtype=np.uint8)
        records[n - 1, 0] = 20
        (folder / name).write_bytes(records.tobytes())
    result = cli(env, "train", "--dataset", "cifar100", "--data-dir", tmp_path, "--model", "resnet20", *TINY)
    one_line_error(result, folder / "train.bin", "coarse label 20 of record 39 is outside 0-19")


# ============================================================================ 5. download
class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path):
    """(folder, base URL): a local HTTP server of the folder's files."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


_CIFAR10_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
RECORDS = 2   # records per batch in the made-up archives


def cifar10_archive(folder, members):
    """Write ``cifar-10-binary.tar.gz`` holding ``members`` ({name: bytes or a TarInfo}); its MD5."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            if isinstance(data, tarfile.TarInfo):
                tar.addfile(data)
                continue
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (folder / "cifar-10-binary.tar.gz").write_bytes(buf.getvalue())
    return hashlib.md5(buf.getvalue()).hexdigest()


def batches(records=RECORDS):
    out = {}
    for i, name in enumerate(_CIFAR10_FILES):
        r = np.random.default_rng(i).integers(0, 256, (records, 3073), dtype=np.uint8)
        r[:, 0] %= 10
        out[f"cifar-10-batches-bin/{name}"] = r.tobytes()
    return out


# `download` with the mirror and the official checksum and sizes replaced by the made-up archive's
_DOWNLOAD = """
import sys
from importlib import import_module
from minadder.__main__ import main
download, extract = import_module("minadder.data.download"), import_module("minadder.data.extract")
url, md5, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
download.SOURCES["cifar10"]["mirrors"] = (url,)
download.SOURCES["cifar10"]["files"] = {"cifar-10-binary.tar.gz": md5}
extract.MEMBERS["cifar10"] = {name: size for name in extract.MEMBERS["cifar10"]}
sys.exit(main(["download", "cifar10"]))
"""


def download_cifar10(env, url, md5, size=RECORDS * 3073):
    return subprocess.run([sys.executable, "-c", _DOWNLOAD, url, md5, str(size)], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def home_root(tmp_path):
    """$MINADDER_DATA pointing at a home folder with a dotfile and another dataset in it."""
    home = tmp_path / "home"
    (home / "mnist").mkdir(parents=True)
    (home / ".bashrc").write_text("export KEEP=1\n")
    (home / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"mine")
    return home, private_env(home, home)


def untouched(home):
    assert (home / ".bashrc").read_text() == "export KEEP=1\n"
    assert (home / "mnist" / "train-images-idx3-ubyte.gz").read_bytes() == b"mine"
    assert sorted(p.name for p in home.iterdir() if p.name != "cifar-10-batches-bin") == [".bashrc", "mnist"]


def test_download_extracts_only_the_datasets_own_members_into_its_folder(mirror, home_root):
    folder, url = mirror
    home, env = home_root
    md5 = cifar10_archive(folder, {**batches(), ".bashrc": b"rm -rf ~\n", "mnist/train-images-idx3-ubyte.gz": b"x",
                                   "cifar-10-batches-bin/batches.meta.txt": b"airplane\n",
                                   "cifar-10-batches-bin/evil.sh": b"x"})
    result = download_cifar10(env, url, md5)
    assert result.returncode == 0, result.stderr
    untouched(home)
    assert sorted(p.name for p in (home / "cifar-10-batches-bin").iterdir()) == sorted(
        _CIFAR10_FILES + ["batches.meta.txt"])


@pytest.mark.parametrize("member, words", [
    ("../.bashrc", "'../.bashrc' points outside the dataset's folder"),
    ("/etc/passwd", "'/etc/passwd' points outside the dataset's folder"),
    ("symlink", "'cifar-10-batches-bin/test_batch.bin' is not a regular file (a link?)"),
])
def test_download_refuses_an_archive_that_reaches_outside_or_links(mirror, home_root, member, words):
    folder, url = mirror
    home, env = home_root
    members = batches()
    if member == "symlink":
        link = tarfile.TarInfo("cifar-10-batches-bin/test_batch.bin")
        link.type, link.linkname = tarfile.SYMTYPE, "../.bashrc"
        members["cifar-10-batches-bin/test_batch.bin"] = link
    else:
        members[member] = b"gotcha\n"
    result = download_cifar10(env, url, cifar10_archive(folder, members))
    one_line_error(result, "cifar-10-binary.tar.gz", words)
    untouched(home)
    assert not (home / "cifar-10-batches-bin").exists()
    assert not [p for p in home.iterdir() if "extracting" in p.name]


def test_download_does_not_report_success_for_a_folder_holding_only_a_readme(mirror, home_root):
    folder, url = mirror
    home, env = home_root
    (home / "cifar-10-batches-bin").mkdir()
    (home / "cifar-10-batches-bin" / "readme.html").write_text("<html>")
    result = download_cifar10(env, url, "0" * 32)   # the mirror has no archive: HTTP 404
    one_line_error(result, "could not download cifar-10-binary.tar.gz for cifar10", "404")
    untouched(home)


def test_download_refuses_an_archive_missing_a_batch_and_keeps_the_folder_as_it_was(mirror, home_root):
    folder, url = mirror
    home, env = home_root
    (home / "cifar-10-batches-bin").mkdir()
    (home / "cifar-10-batches-bin" / "test_batch_first1000_exact.bin").write_bytes(b"users")
    members = batches()
    del members["cifar-10-batches-bin/data_batch_4.bin"]
    members["cifar-10-batches-bin/test_batch.bin"] = members["cifar-10-batches-bin/test_batch.bin"][:-5]
    result = download_cifar10(env, url, cifar10_archive(folder, members))
    line = one_line_error(result, "incomplete archive", "data_batch_4.bin is missing",
                          "test_batch.bin has 6,141 bytes, not 6,146")
    assert line.count("\n") == 0
    assert [p.name for p in (home / "cifar-10-batches-bin").iterdir()] == ["test_batch_first1000_exact.bin"]
    untouched(home)


def test_a_complete_folder_is_not_downloaded_again_and_other_files_in_it_stay(mirror, home_root):
    folder, url = mirror
    home, env = home_root
    md5 = cifar10_archive(folder, batches())
    assert download_cifar10(env, url, md5).returncode == 0
    (home / "cifar-10-batches-bin" / "test_batch_first1000_exact.bin").write_bytes(b"users")
    (folder / "cifar-10-binary.tar.gz").unlink()   # a second download would now fail
    result = download_cifar10(env, url, md5)
    assert result.returncode == 0, result.stderr
    assert (home / "cifar-10-batches-bin" / "test_batch_first1000_exact.bin").read_bytes() == b"users"


# ============================================================================ 8. full disk
def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 10, 256 << 10))   # writes past 256 KB fail: EFBIG


def test_a_synthetic_cache_that_cannot_be_written_leaves_no_temporary_file(tmp_path):
    """Files may not grow past 256 KB in this process (the 1.4 MB cache cannot be written,
    as on a full disk): the digits are used from memory and nothing half-written is left."""
    code = ("import sys; from minadder.data import synthetic_digits\n"
            "train, test = synthetic_digits(1600, 200, cache_dir=sys.argv[1]); print(len(train), len(test))")
    result = subprocess.run([sys.executable, "-c", code, tmp_path / "cache"], capture_output=True, text=True,
                            timeout=120, preexec_fn=_limit_file_size)
    assert result.returncode == 0 and result.stdout.split() == ["1600", "200"], result.stderr
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []
