"""Writing a run's files safely: atomic writes (a temporary name, then a rename), strict JSON, expanded paths.

A reader (or a run resumed after a crash) never sees a half-written file: every file is
written under a hidden temporary name of its own process, flushed to the disk, and renamed
into place, and renaming is atomic. A crash leaves at most a temporary file behind, which
the next run in the folder removes (``remove_leftovers``).
"""
import json
import math
import os
import re
from pathlib import Path


def expand_path(text):
    """``~`` and environment variables expanded as a shell would: ``~/runs/$RUN`` -> /home/me/runs/7.
    (A path given to Python keeps its ``~`` otherwise: ``Path("~/x").mkdir()`` makes a folder named "~".)
    An empty path, or one naming a variable that is not set, is a ValueError (the command line's
    flag names it): ``--resume "$RUN"`` with RUN unset had started a new run, and ``$RUN/x``
    became a folder named "$RUN"."""
    text = str(text)
    if not text.strip():
        raise ValueError("an empty path")
    expanded = os.path.expandvars(text)
    unset = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expanded)   # what expandvars leaves: not set
    if unset:
        raise ValueError(f"{text!r} names {', '.join('$' + name for name in unset)}, which is not set")
    return os.path.expanduser(expanded)


def temporary_name(path):
    """The hidden name a file is written under before it is renamed to ``path``:
    .checkpoint.tmp-<pid>.npz; one per process, so two processes never write the same one."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


def remove_leftovers(folder):
    """Remove the temporary files that writes cut short by a crash left in ``folder`` (call it
    only while holding the folder's lock: then no other process is writing there)."""
    for tmp in Path(folder).glob(".*.tmp*"):
        if tmp.is_file():
            tmp.unlink()


def flush_to_disk(file):
    """Make the bytes written to the open ``file`` durable before it is renamed into place."""
    file.flush()
    os.fsync(file.fileno())


def sync_folder(folder):
    """Make the renames in ``folder`` durable (not possible on every system: then skipped)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write):
    """Call write(tmp_path), then rename tmp_path to path: a reader never sees a half file."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as file:
            flush_to_disk(file)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def strict_json(value):
    """``value`` with every float that is not finite replaced by None, so that
    ``json.dumps(..., allow_nan=False)`` writes strict JSON (null, never NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def to_json(value, **kw):
    """Strict JSON text of ``value`` (a value that is not finite becomes null)."""
    return json.dumps(strict_json(value), allow_nan=False, **kw)
