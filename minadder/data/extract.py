"""Unpacking a dataset's archive: only its own members, into its own folder, checked complete.

A CIFAR archive holds one folder (``cifar-10-batches-bin/``, ``cifar-100-binary/``) with a
few known files. Unpacking it must not trust the archive, because the cache root may be
a home folder (``$MINADDER_DATA=~``):

- only the members named in ``MEMBERS`` (and ``EXTRAS``) are extracted, each a regular
  file no larger than its bound; an absolute name or one with ``..`` refuses the whole
  archive; links and everything else are never written;
- they are written into a new temporary folder inside the cache root, then moved into
  the dataset's folder: a new folder is renamed into place in one step, an existing one
  receives the dataset's files one by one (``os.replace``), so other files a user put
  there (``test_batch_first1000_exact.bin``) and everything outside it stay untouched;
- ``missing_files`` says what the loader would lack: every file it reads must be there,
  with the official size when the archive is the official one, else a non-empty whole
  number of records.
"""
import os
import posixpath
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

from .dataset import DownloadError

__all__ = ["MEMBERS", "EXTRAS", "RECORD_BYTES", "missing_files", "extract_dataset", "ExtractError"]

# the files the loader reads, with their sizes in the official archives
MEMBERS = {
    "cifar10": {**{f"data_batch_{i}.bin": 30_730_000 for i in range(1, 6)}, "test_batch.bin": 30_730_000},
    "cifar100": {"train.bin": 153_700_000, "test.bin": 30_740_000},
}
# other members that are kept when present (class names, the readme), each under EXTRA_LIMIT bytes
EXTRAS = {"cifar10": ("batches.meta.txt", "readme.html"),
          "cifar100": ("coarse_label_names.txt", "fine_label_names.txt")}
EXTRA_LIMIT = 1 << 20
RECORD_BYTES = {"cifar10": 1 + 3072, "cifar100": 2 + 3072}


class ExtractError(DownloadError):
    """An archive was refused or could not be unpacked (the message names it and why)."""


def missing_files(name, folder, exact):
    """What the loader would lack in ``folder``: a list of short problems, empty when
    every file is there. ``exact``: require the official sizes."""
    problems = []
    for file, size in MEMBERS[name].items():
        path = Path(folder) / file
        if not path.is_file():
            problems.append(f"{file} is missing")
            continue
        have = path.stat().st_size
        if exact and have != size:
            problems.append(f"{file} has {have:,} bytes, not {size:,}")
        elif not exact and (have == 0 or have % RECORD_BYTES[name]):
            problems.append(f"{file} has {have:,} bytes, not a whole number of {RECORD_BYTES[name]}-byte records")
    return problems


def _allowed(name, folder_name, exact):
    """Archive member name -> the most bytes it may hold."""
    limit = max(MEMBERS[name].values())
    allowed = {f"{folder_name}/{f}": (size if exact else limit) for f, size in MEMBERS[name].items()}
    allowed.update({f"{folder_name}/{f}": EXTRA_LIMIT for f in EXTRAS[name]})
    return allowed


def _member_name(member, archive):
    """A member's name as a relative POSIX path, or ExtractError for one that could leave the folder."""
    name = member.name.replace("\\", "/")
    if name.startswith("/") or ".." in name.split("/") or (len(name) > 1 and name[1] == ":"):
        raise ExtractError(f"{archive}: refused: member {member.name!r} points outside the dataset's folder")
    return posixpath.normpath(name)   # "./a/b" -> "a/b"


def _unpack_members(archive, allowed, into):
    """Write the allowed members of ``archive`` into the folder ``into`` (by their base names)."""
    budget = sum(allowed.values())
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            name = _member_name(member, archive)
            if name not in allowed:
                continue   # not the dataset's: never written
            if not member.isreg():
                raise ExtractError(f"{archive}: refused: member {member.name!r} is not a regular file (a link?)")
            if member.size > allowed[name] or member.size > budget:
                raise ExtractError(f"{archive}: refused: member {member.name!r} declares {member.size:,} bytes, "
                                   f"more than the {allowed[name]:,} it may hold")
            budget -= member.size
            with tar.extractfile(member) as src, open(into / posixpath.basename(name), "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def _move_into_place(new, target):
    """Make the files of the folder ``new`` the dataset's files in ``target``: a rename of
    the whole folder when there is none yet, else file by file (other files stay)."""
    if not target.exists() and not target.is_symlink():
        os.rename(new, target)
        return
    if not target.is_dir():
        raise ExtractError(f"{target}: exists and is not a folder; move it away to download the dataset there")
    for file in sorted(new.iterdir()):
        os.replace(file, target / file.name)


def extract_dataset(name, archive, root, folder_name, exact):
    """Unpack the members of ``archive`` that belong to dataset ``name`` into
    ``root/folder_name``, after checking that nothing the loader needs is missing
    (``missing_files``). Raises ``ExtractError`` (an OSError) naming the archive."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder_name}.", suffix=".extracting", dir=root))
    try:
        new = tmp / folder_name
        new.mkdir()
        _unpack_members(archive, _allowed(name, folder_name, exact), new)
        problems = missing_files(name, new, exact)
        if problems:
            raise ExtractError(f"{archive}: incomplete archive, nothing was extracted: {'; '.join(problems)}")
        _move_into_place(new, root / folder_name)
    except ExtractError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise ExtractError(f"{archive}: cannot extract ({type(e).__name__}: {e})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
