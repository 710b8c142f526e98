"""Numba's disk cache, kept in step with this package's sources.

Every kernel here is compiled with ``cache=True``: its machine code is saved beside the
source (``__pycache__``, or under NUMBA_CACHE_DIR) and loaded by the next process instead
of compiled again (seconds per kernel). Numba decides whether a saved entry is stale by
the modification time and size of the kernel's *own* source file. But a kernel here
also compiles in code from other files of the package: register_block.py's blocks,
positions.py's helpers, frame.py's VECTOR and SLACK (constants are frozen into the
machine code). After an edit to one of those, Numba would go on loading the old code
for an unchanged kernel file: measured once, a stale AVX2 dX block ran for a whole
benchmark session. With a constant such as SLACK changed, old code could even read
past the end of a buffer the new code allocates.

So the package keeps a digest of all its sources next to the cache, and when the digest
differs from the one saved there, it deletes its saved entries before any kernel is
loaded (``keep_in_step``, called when the package is imported). A fresh checkout has no
cache and nothing to delete; a changed one compiles each kernel once again.
"""
import hashlib
import os
from pathlib import Path

#: the file beside the cache that holds the digest of the sources it was compiled from
STAMP = "minadder-sources.sha256"
#: the sources that can end up inside a kernel of this package: its own modules and the
#: two of the level above that choose the CPU and Numba's settings
_HERE = Path(__file__).resolve().parent
_SOURCES = sorted(_HERE.glob("*.py")) + [_HERE.parent / "target.py", _HERE.parent / "settings.py"]


def sources_digest(paths=_SOURCES):
    """SHA-256 over the names and contents of ``paths`` (in the order given)."""
    h = hashlib.sha256()
    for path in paths:
        h.update(Path(path).name.encode() + b"\0" + Path(path).read_bytes() + b"\0")
    return h.hexdigest()


def cache_dir(dispatcher):
    """The folder Numba saves ``dispatcher``'s machine code in, or None (caching off)."""
    path = getattr(getattr(dispatcher, "_cache", None), "_cache_path", None)
    return None if path is None else Path(path)


def keep_in_step(folder, digest, modules):
    """Delete the saved entries (``module.*.nbi`` / ``.nbc``) of ``modules`` in ``folder``
    unless its stamp holds ``digest``; then write the stamp. Returns how many files went.

    Two processes may do this at once: a file already gone is skipped, and the stamp is
    replaced in one step (os.replace), never left half written. A folder that cannot be
    written (a read-only install) is left as it is."""
    if folder is None:
        return 0
    try:
        folder.mkdir(parents=True, exist_ok=True)   # so that the first process's cache is stamped
    except OSError:
        return 0
    stamp = folder / STAMP
    try:
        if stamp.read_text().strip() == digest:
            return 0
    except OSError:
        pass                        # no stamp yet: a cache of unknown sources
    removed = 0
    for entry in folder.iterdir():
        if entry.suffix in (".nbi", ".nbc") and entry.name.split(".", 1)[0] in modules:
            try:
                entry.unlink()
                removed += 1
            except FileNotFoundError:
                pass                # another process deleted it first
            except OSError:
                return removed      # not ours to delete
    try:
        part = folder / f"{STAMP}.{os.getpid()}"
        part.write_text(digest + "\n")
        os.replace(part, stamp)
    except OSError:
        pass
    return removed


def module_names():
    """This package's modules, by the names Numba gives their cache files."""
    return {path.stem for path in _HERE.glob("*.py")}
