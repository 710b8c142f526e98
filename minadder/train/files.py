"""Writing a run's files safely: atomic writes (a temporary name, then a rename) and strict JSON.

A reader (or a run resumed after a crash) never sees a half-written file: every file is
written under a hidden temporary name and renamed into place, and renaming is atomic.
"""
import json
import math
import os
from pathlib import Path


def temporary_name(path):
    """The hidden name a file is written under before it is renamed to ``path``."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp{path.suffix}")


def atomic_write(path, write):
    """Call write(tmp_path), then rename tmp_path to path: a reader never sees a half file."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        write(tmp)
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
