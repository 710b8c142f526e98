"""The downloader against a local HTTP server (a thread serving files the test makes):
checksums, .part files, resuming with Range, restarting without it, dropped
connections, and whole datasets (MNIST files, a CIFAR tar.gz) end to end."""
import gzip
import hashlib
import io
import socket
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from minadder.data import (ChecksumError, DownloadError, download, download_file, extract, load_dataset,
                           locate)


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        wanted = self.headers.get("Range")
        if wanted and server.ranges:
            start = int(wanted.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        rest = body[start:]
        if server.drops > 0:  # send part of the body, then hang up
            server.drops -= 1
            self.wfile.write(rest[:max(1, len(rest) // 3)])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(rest)


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.files, httpd.requests, httpd.ranges, httpd.drops = {}, [], True, 0
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MINADDER_DATA", raising=False)
    monkeypatch.setattr(locate, "SYSTEM_DIRS", ())


def idx_bytes(array):
    """A uint8 array in the IDX format (magic 0x000008DD, big-endian dims, payload)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def md5(data):
    return hashlib.md5(data).hexdigest()


BODY = bytes(np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8))
FAST = dict(progress=False, timeout=5, backoff=0.0, chunk_size=4096)


def test_download_ok(server, tmp_path):
    server.files["/f.bin"] = BODY
    dest = download_file(server.url + "/f.bin", tmp_path / "f.bin", md5=md5(BODY), **FAST)
    assert dest.read_bytes() == BODY
    assert not (tmp_path / "f.bin.part").exists()
    # a second call finds the verified file and does not download again
    download_file(server.url + "/f.bin", tmp_path / "f.bin", md5=md5(BODY), **FAST)
    assert len(server.requests) == 1


def test_wrong_checksum_leaves_nothing(server, tmp_path):
    server.files["/f.bin"] = BODY
    with pytest.raises(ChecksumError, match="expected 0123") as e:
        download_file(server.url + "/f.bin", tmp_path / "f.bin", md5="0123" + "0" * 28, **FAST)
    assert md5(BODY) in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_existing_file_with_wrong_checksum_is_replaced(server, tmp_path):
    server.files["/f.bin"] = BODY
    (tmp_path / "f.bin").write_bytes(b"old and wrong")
    download_file(server.url + "/f.bin", tmp_path / "f.bin", md5=md5(BODY), **FAST)
    assert (tmp_path / "f.bin").read_bytes() == BODY


def test_dropped_connection_resumes_with_range(server, tmp_path):
    server.files["/f.bin"] = BODY
    server.drops = 2
    download_file(server.url + "/f.bin", tmp_path / "f.bin", md5=md5(BODY), **FAST)
    assert (tmp_path / "f.bin").read_bytes() == BODY
    ranges = [r for _, r in server.requests]
    assert len(ranges) == 3 and ranges[0] is None
    first_cut = len(BODY) // 3
    assert ranges[1] == f"bytes={first_cut}-"  # asked only for the missing bytes
    assert ranges[2] == f"bytes={first_cut + (len(BODY) - first_cut) // 3}-"


def test_dropped_connection_restarts_without_range_support(server, tmp_path):
    server.files["/f.bin"] = BODY
    server.ranges = False
    server.drops = 1
    download_file(server.url + "/f.bin", tmp_path / "f.bin", md5=md5(BODY), **FAST)
    assert (tmp_path / "f.bin").read_bytes() == BODY
    assert len(server.requests) == 2 and server.requests[1][1] is not None  # asked, got 200


def test_gives_up_after_retries_and_keeps_part(server, tmp_path):
    server.files["/f.bin"] = BODY
    server.drops = 100
    with pytest.raises(DownloadError, match="after 2 retries"):
        download_file(server.url + "/f.bin", tmp_path / "f.bin", md5=md5(BODY), retries=2, **FAST)
    assert not (tmp_path / "f.bin").exists()
    part = tmp_path / "f.bin.part"
    assert 0 < part.stat().st_size < len(BODY) and BODY.startswith(part.read_bytes())
    # a later call resumes from the .part and completes
    server.drops = 0
    download_file(server.url + "/f.bin", tmp_path / "f.bin", md5=md5(BODY), **FAST)
    assert (tmp_path / "f.bin").read_bytes() == BODY and not part.exists()
    assert server.requests[-1][1] == f"bytes={part_size_after(BODY, 3)}-"


def part_size_after(body, drops):
    """Bytes held after `drops` dropped responses that each deliver a third of the rest."""
    have = 0
    for _ in range(drops):
        have += max(1, (len(body) - have) // 3)
    return have


def test_stale_part_is_discarded_when_checksum_fails(server, tmp_path):
    server.files["/f.bin"] = BODY
    (tmp_path / "f.bin.part").write_bytes(b"x" * 1000)  # not a prefix of the real file
    download_file(server.url + "/f.bin", tmp_path / "f.bin", md5=md5(BODY), **FAST)
    assert (tmp_path / "f.bin").read_bytes() == BODY
    assert [r for _, r in server.requests] == ["bytes=1000-", None]


def test_part_longer_than_file_restarts(server, tmp_path):
    server.files["/f.bin"] = BODY[:5000]
    (tmp_path / "f.bin.part").write_bytes(b"y" * 6000)
    download_file(server.url + "/f.bin", tmp_path / "f.bin", md5=md5(BODY[:5000]), **FAST)
    assert (tmp_path / "f.bin").read_bytes() == BODY[:5000]


def test_http_error(server, tmp_path):
    with pytest.raises(DownloadError, match="404"):
        download_file(server.url + "/missing", tmp_path / "m", md5=None, **FAST)
    assert not any(tmp_path.iterdir())


def test_progress_bar_runs(server, tmp_path, capsys):
    server.files["/f.bin"] = BODY
    download_file(server.url + "/f.bin", tmp_path / "f.bin", md5=md5(BODY), progress=True, timeout=5)
    assert (tmp_path / "f.bin").read_bytes() == BODY


# ============================================================================ whole datasets
def mnist_files(n=6):
    rng = np.random.default_rng(1)
    out = {}
    for prefix, count in (("train", n), ("t10k", n // 2)):
        out[f"{prefix}-images-idx3-ubyte.gz"] = gzip.compress(
            idx_bytes(rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)))
        out[f"{prefix}-labels-idx1-ubyte.gz"] = gzip.compress(
            idx_bytes(rng.integers(0, 10, count, dtype=np.uint8)))
    return out


def test_download_mnist_then_load(server, tmp_path):
    files = mnist_files()
    for name, data in files.items():
        server.files["/mirror/" + name] = data
    server.drops = 1
    root = tmp_path / "root"
    folder = download("mnist", root, url=server.url + "/mirror",
                      expected_md5={k: md5(v) for k, v in files.items()}, progress=False, timeout=5,
                      backoff=0)
    assert folder == root / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(files)
    assert load_dataset("mnist", "train", data_dir=root).images.shape == (6, 1, 28, 28)
    assert load_dataset("mnist", "test", data_dir=root).images.shape == (3, 1, 28, 28)


@pytest.mark.parametrize("raw", [True, False])
def test_download_mnist_keeps_files_the_loader_already_reads(tmp_path, raw, monkeypatch):
    """Raw IDX files, or .gz ones compressed anew (other bytes than the official archives'),
    already in ROOT/mnist: nothing is fetched (offline it had asked for the files it had)."""
    import importlib
    fetching = importlib.import_module("minadder.data.download")     # (the package exports a function of that name)

    def no_network(*args, **kwargs):
        raise AssertionError("download fetched a file the folder already held")
    monkeypatch.setattr(fetching, "download_file", no_network)
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name, data in mnist_files().items():
        (folder / (name[:-3] if raw else name)).write_bytes(gzip.decompress(data) if raw else data)
    before = sorted(p.name for p in folder.iterdir())
    assert download("mnist", tmp_path, progress=False) == folder        # the official mirrors: not asked
    assert sorted(p.name for p in folder.iterdir()) == before
    assert load_dataset("mnist", "test", data_dir=tmp_path).images.shape == (3, 1, 28, 28)


def test_download_default_root_is_env_then_cache(server, tmp_path, monkeypatch):
    files = mnist_files()
    for name, data in files.items():
        server.files["/m/" + name] = data
    md5s = {k: md5(v) for k, v in files.items()}
    folder = download("fashion-mnist", url=server.url + "/m", expected_md5=md5s, progress=False)
    assert folder == tmp_path / "home" / ".cache" / "minadder" / "fashion-mnist"
    monkeypatch.setenv("MINADDER_DATA", str(tmp_path / "env"))
    folder = download("fashion-mnist", url=server.url + "/m", expected_md5=md5s, progress=False)
    assert folder == tmp_path / "env" / "fashion-mnist"
    assert load_dataset("fashion-mnist", "test").source == str(folder)


def test_download_with_official_checksum_rejects_other_bytes(server, tmp_path):
    for name, data in mnist_files().items():
        server.files["/m/" + name] = data
    with pytest.raises(ChecksumError, match="f68b3c2dcbeaaa9fbdd348bbdeb94873"):
        download("mnist", tmp_path, url=server.url + "/m", progress=False)
    assert not (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").exists()
    assert not (tmp_path / "mnist" / "train-images-idx3-ubyte.gz.part").exists()


def make_tar_gz(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tiny_cifar10_tar():
    rng = np.random.default_rng(2)
    members = {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records = rng.integers(0, 256, (2, 3073), dtype=np.uint8)
        records[:, 0] %= 10
        members["cifar-10-batches-bin/" + name] = records.tobytes()
    members["cifar-10-batches-bin/batches.meta.txt"] = b"airplane\n"
    return make_tar_gz(members)


def test_download_cifar10_extracts(server, tmp_path):
    archive = tiny_cifar10_tar()
    server.files["/k/cifar-10-binary.tar.gz"] = archive
    folder = download("cifar10", tmp_path, url=server.url + "/k/", expected_md5=md5(archive),
                      progress=False)
    assert folder == tmp_path / "cifar-10-batches-bin"
    assert not (tmp_path / "cifar-10-binary.tar.gz").exists()  # archive removed once unpacked
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-batches-bin"]
    assert load_dataset("cifar10", "train", data_dir=tmp_path).images.shape == (10, 3, 32, 32)
    # already there: no second download
    n = len(server.requests)
    download("cifar10", tmp_path, url=server.url + "/k/", expected_md5=md5(archive), progress=False)
    assert len(server.requests) == n


def test_archive_with_path_traversal_is_refused(server, tmp_path):
    archive = make_tar_gz({"../evil.txt": b"gotcha", "cifar-10-batches-bin/x.bin": b"1"})
    server.files["/k/cifar-10-binary.tar.gz"] = archive
    root = tmp_path / "root"
    with pytest.raises(DownloadError, match="'../evil.txt' points outside the dataset's folder"):
        download("cifar10", root, url=server.url + "/k", expected_md5=md5(archive), progress=False)
    assert not (tmp_path / "evil.txt").exists()
    assert not (root / "cifar-10-batches-bin").exists()


def test_unknown_and_synthetic_names(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        download("svhn", tmp_path)
    with pytest.raises(ValueError, match="needs no download"):
        download("synthetic-digits", tmp_path)


def test_offline_fails_fast_with_advice(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request
    calls = []

    def no_dns(request, timeout=None):
        calls.append(request.full_url)
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(urllib.request, "urlopen", no_dns)
    with pytest.raises(DownloadError, match="offline") as e:
        download("mnist", tmp_path, progress=False)
    assert len(calls) == 3  # each official mirror once, no retries against a missing DNS
    assert f"copy the dataset's files into {tmp_path / 'mnist'}" in str(e.value)
    assert not list((tmp_path / "mnist").iterdir())


def test_complete_part_is_verified_not_refetched(server, tmp_path):
    """A .part that already holds the whole file (killed before the rename) is checked
    and renamed: the server answers 416 to the Range request and nothing is re-sent."""
    server.files["/f.bin"] = BODY
    (tmp_path / "f.bin.part").write_bytes(BODY)
    download_file(server.url + "/f.bin", tmp_path / "f.bin", md5=md5(BODY), **FAST)
    assert (tmp_path / "f.bin").read_bytes() == BODY
    assert server.requests == [("/f.bin", f"bytes={len(BODY)}-")]


# ============================================================================ extraction
def _archive(tmp_path, members):
    path = tmp_path / "cifar-10-binary.tar.gz"
    path.write_bytes(make_tar_gz(members) if isinstance(members, dict) else members)
    return path


def _batches(prefix="cifar-10-batches-bin/"):
    return {prefix + name: bytes(3073 * 2) for name in extract.MEMBERS["cifar10"]}


def test_members_named_with_a_leading_dot_slash_are_the_datasets_own(tmp_path):
    archive = _archive(tmp_path, _batches("./cifar-10-batches-bin/"))
    extract.extract_dataset("cifar10", archive, tmp_path / "root", "cifar-10-batches-bin", exact=False)
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["cifar-10-batches-bin"]
    assert extract.missing_files("cifar10", tmp_path / "root" / "cifar-10-batches-bin", exact=False) == []


def test_a_hard_link_member_is_refused(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in _batches().items():
            info = tarfile.TarInfo(name)
            if name.endswith("test_batch.bin"):
                info.type, info.linkname = tarfile.LNKTYPE, "cifar-10-batches-bin/data_batch_1.bin"
                tar.addfile(info)
                continue
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive = _archive(tmp_path, buf.getvalue())
    with pytest.raises(DownloadError, match="'cifar-10-batches-bin/test_batch.bin' is not a regular file"):
        extract.extract_dataset("cifar10", archive, tmp_path / "root", "cifar-10-batches-bin", exact=False)
    assert list((tmp_path / "root").iterdir()) == []


def test_a_member_larger_than_the_official_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(extract.MEMBERS, "cifar10", {n: 3073 * 2 for n in extract.MEMBERS["cifar10"]})
    members = _batches()
    members["cifar-10-batches-bin/data_batch_2.bin"] += bytes(3073)
    with pytest.raises(DownloadError, match="declares 9,219 bytes, more than the 6,146 it may hold"):
        extract.extract_dataset("cifar10", _archive(tmp_path, members), tmp_path / "root",
                                "cifar-10-batches-bin", exact=True)


def test_a_file_in_the_place_of_the_datasets_folder_is_left_alone(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "cifar-10-batches-bin").write_text("mine")
    with pytest.raises(DownloadError, match="exists and is not a folder"):
        extract.extract_dataset("cifar10", _archive(tmp_path, _batches()), root, "cifar-10-batches-bin", exact=False)
    assert (root / "cifar-10-batches-bin").read_text() == "mine"
    assert [p.name for p in root.iterdir()] == ["cifar-10-batches-bin"]


def test_missing_files_checks_official_sizes_or_whole_records(tmp_path):
    for name in extract.MEMBERS["cifar10"]:
        (tmp_path / name).write_bytes(bytes(3073 * 3))
    assert extract.missing_files("cifar10", tmp_path, exact=False) == []
    assert extract.missing_files("cifar10", tmp_path, exact=True)[0] == "data_batch_1.bin has 9,219 bytes, not 30,730,000"
    (tmp_path / "test_batch.bin").write_bytes(bytes(3074))
    (tmp_path / "data_batch_5.bin").unlink()
    assert extract.missing_files("cifar10", tmp_path, exact=False) == [
        "data_batch_5.bin is missing", "test_batch.bin has 3,074 bytes, not a whole number of 3073-byte records"]


def test_the_offline_message_is_one_line(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    def no_dns(request, timeout=None):
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(urllib.request, "urlopen", no_dns)
    with pytest.raises(DownloadError) as e:
        download("cifar10", tmp_path, progress=False)
    assert "\n" not in str(e.value) and "could not download cifar-10-binary.tar.gz for cifar10" in str(e.value)
