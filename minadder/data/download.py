"""Download the official dataset files into a local cache, checksummed and resumable.

The rules that keep a cache trustworthy:
- bytes arrive in ``<file>.part``; only after the MD5 of what was downloaded matches the
  published one is the file renamed to its final name (``os.replace`` is atomic), so a
  file under a final name is always complete and correct;
- an interrupted download keeps its ``.part``; the next attempt asks the server for the
  rest with an HTTP ``Range`` request and restarts from zero when the server ignores it;
- a dropped connection is retried a few times (resuming), then reported.
- a CIFAR archive is unpacked by ``extract.py``: only the dataset's own members, into its
  own folder, via a temporary folder inside the cache root; nothing else in the root is
  touched, even when the root is a home folder;
- a dataset counts as downloaded only when every file its loader reads is there (CIFAR:
  with the official sizes; MNIST: with the published MD5s), before and after a download.

Why not pooch: it would add requests and its dependencies, does not resume a partial
download, and unpacks with tarfile as it is: the member list, the bounds and the
completeness check below would stay hand-written anyway.
"""
import hashlib
import os
import socket
import time
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path

from .dataset import ChecksumError, DatasetNotFoundError, DownloadError
from .extract import extract_dataset, missing_files
from .locate import DATASET_FOLDERS, default_root, locate_dataset

__all__ = ["download", "download_file", "DownloadError", "ChecksumError", "SOURCES", "md5sum"]


_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

# name -> mirrors (base URLs, tried in order), {file name: md5 of the file as published},
# and the folder (under root) that ends up holding the dataset.
SOURCES = {
    "mnist": {
        "mirrors": ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                    "https://storage.googleapis.com/cvdf-datasets/mnist/",
                    "http://yann.lecun.com/exdb/mnist/"),
        "files": dict(zip(_MNIST_FILES, (
            "f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"))),
        "archive": False,
    },
    "fashion-mnist": {
        "mirrors": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
        "files": dict(zip(_MNIST_FILES, (
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"))),
        "archive": False,
    },
    "cifar10": {
        "mirrors": ("https://www.cs.toronto.edu/~kriz/",),
        "files": {"cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530"},
        "archive": True,
    },
    "cifar100": {
        "mirrors": ("https://www.cs.toronto.edu/~kriz/",),
        "files": {"cifar-100-binary.tar.gz": "03b5dce01913d631647c71ecec9e9cb8"},
        "archive": True,
    },
}

_NETWORK_ERRORS = (urllib.error.URLError, HTTPException, ConnectionError, socket.timeout,
                   TimeoutError, OSError)


def md5sum(path, chunk=1 << 20):
    """Hex MD5 of a file's bytes."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _progress_bar(total, initial, desc, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True,
                unit_divisor=1024, leave=False)


def _fetch_once(url, part, timeout, progress, chunk_size):
    """One HTTP request appending to ``part`` (resuming from its size if the server allows).

    Returns normally when the server's advertised length was fully received; raises a
    network error (OSError/HTTPException) when the connection drops midway.
    """
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "minadder"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            return  # nothing after our .part: the checksum decides whether it is whole
        raise
    with response:
        resumed = have and response.status == 206 and \
            response.headers.get("Content-Range", "").startswith(f"bytes {have}-")
        if not resumed:
            have = 0  # full body follows (server ignored Range, or nothing to resume)
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        bar = _progress_bar(total, have, os.path.basename(str(part))[:-5], progress)
        received = have
        try:
            with open(part, "ab" if resumed else "wb") as out:
                while True:
                    block = response.read(chunk_size)
                    if not block:
                        break
                    out.write(block)
                    received += len(block)
                    if bar is not None:
                        bar.update(len(block))
        finally:
            if bar is not None:
                bar.close()
    if total is not None and received < total:
        raise ConnectionError(f"connection closed after {received} of {total} bytes")


def download_file(url, dest, md5=None, retries=3, timeout=30.0, progress=True,
                  chunk_size=1 << 16, backoff=0.5):
    """Download ``url`` to ``dest`` via ``dest.part``; verify ``md5``; rename when it matches.

    Returns the final path. An existing ``dest`` whose MD5 matches is kept as is.
    Retries a dropped connection ``retries`` times, resuming with a Range request.
    Raises ``ChecksumError`` (nothing left under ``dest`` nor ``dest.part``) or
    ``DownloadError``.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and (md5 is None or md5sum(dest) == md5):
        return dest
    part = dest.with_name(dest.name + ".part")
    resumed_from_old_part = part.exists() and part.stat().st_size > 0
    attempt = 0
    while True:
        try:
            _fetch_once(url, part, timeout, progress, chunk_size)
        except urllib.error.HTTPError as e:
            raise DownloadError(f"{url}: HTTP error {e.code} {e.reason}") from None
        except _NETWORK_ERRORS as e:
            if isinstance(getattr(e, "reason", None), socket.gaierror):
                raise DownloadError(f"{url}: cannot resolve the host ({e.reason}); "
                                    f"is this machine offline?") from None
            attempt += 1
            if attempt > retries:
                kept = (f"; the partial file {part} is kept and will be resumed"
                        if part.exists() and part.stat().st_size else "")
                raise DownloadError(f"{url}: download failed after {retries} retries ({e}){kept}") from None
            time.sleep(backoff * attempt)
            continue
        got = md5sum(part)
        if md5 is None or got == md5:
            os.replace(part, dest)
            return dest
        part.unlink()
        if resumed_from_old_part:  # the stale .part we resumed may have been the culprit
            resumed_from_old_part = False
            continue
        raise ChecksumError(f"{url}: MD5 of the downloaded file is {got}, expected {md5}; "
                            f"the file was deleted")


def _fetch(name, filename, md5, dest, mirrors, folder, **options):
    """Download one file of dataset ``name`` from the first mirror that has it."""
    errors = []
    for base in mirrors:
        try:
            return download_file(base + filename, dest, md5=md5, **options)
        except ChecksumError:
            raise
        except DownloadError as e:
            errors.append(str(e))
    raise DownloadError(
        f"could not download {filename} for {name} ({'; '.join(errors)}); without network access, copy "
        f"the dataset's files into {folder} (or pass --data-dir / set $MINADDER_DATA to a folder that holds them)")


def _idx_present(name, folder):
    """Whether ``folder`` itself holds both splits of the IDX dataset ``name`` as the loader
    finds them (locate_dataset: each file raw or gzipped)."""
    try:
        return all(locate_dataset(name, split, folder, fallback=False).folder == folder for split in ("train", "test"))
    except DatasetNotFoundError:
        return False


def _incomplete(name, folder, problems):
    return DownloadError(f"{folder}: the {name} download is incomplete: {'; '.join(problems)}")


def download(name, root=None, url=None, expected_md5=None, progress=True, retries=3,
             timeout=30.0, keep_archive=False, backoff=0.5):
    """Fetch dataset ``name`` ("mnist", "fashion-mnist", "cifar10", "cifar100") into ``root``.

    ``root`` defaults to ``$MINADDER_DATA`` or ``~/.cache/minadder``; MNIST-style files go to
    ``root/<name>/``, CIFAR archives are unpacked to ``root/cifar-10-batches-bin/`` etc.
    ``url`` replaces the official mirrors with one base URL (the file names are appended);
    ``expected_md5`` replaces the official checksums (a {file name: md5} dict, or one string
    for a single-file dataset). Returns the folder that holds the dataset.
    """
    from .synthetic import SYNTHETIC_NAME
    if name == SYNTHETIC_NAME:
        raise ValueError(f"{SYNTHETIC_NAME!r} is generated locally and needs no download")
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; downloadable: {sorted(SOURCES)}")
    source = SOURCES[name]
    root = Path(root) if root is not None else default_root()
    md5s = dict(source["files"])
    if isinstance(expected_md5, str):
        if len(md5s) != 1:
            raise ValueError(f"{name} has {len(md5s)} files; pass expected_md5 as a "
                             f"{{file name: md5}} dict")
        md5s = {next(iter(md5s)): expected_md5}
    elif expected_md5 is not None:
        md5s.update(expected_md5)
    mirrors = (url if url.endswith("/") else url + "/",) if url else source["mirrors"]
    folder = root / DATASET_FOLDERS[name]
    options = dict(retries=retries, timeout=timeout, progress=progress, backoff=backoff)
    if not source["archive"]:   # MNIST-like: each file checked against its MD5, kept if it matches
        if url is None and expected_md5 is None and _idx_present(name, folder):
            return folder   # every file the loader reads is already there (raw or gzipped)
        for filename, md5 in md5s.items():
            _fetch(name, filename, md5, folder / filename, mirrors, folder, **options)
        problems = [f"{f} is missing" for f in md5s if not (folder / f).is_file()]
        if problems:
            raise _incomplete(name, folder, problems)
        return folder
    (filename, md5), = md5s.items()
    exact = md5 == source["files"][filename]   # the official archive: the official sizes
    if not missing_files(name, folder, exact):
        return folder   # every file the loader reads is already there
    archive = _fetch(name, filename, md5, root / filename, mirrors, folder, **options)
    try:
        extract_dataset(name, archive, root, DATASET_FOLDERS[name], exact)
    finally:  # unpacked, or refused: either way the archive is not needed again
        if not keep_archive:
            archive.unlink(missing_ok=True)
    problems = missing_files(name, folder, exact)
    if problems:
        raise _incomplete(name, folder, problems)
    return folder
