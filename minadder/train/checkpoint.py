"""The checkpoint format 4: checkpoint.npz names its optimizer file, one rename commits the pair; 1-3 read too.

Reproducibility makes a checkpoint small. Given the same seed and backend a run is a pure
function of its configuration: the weights are initialised from ``minadder.manual_seed(seed)``;
the data order and augmentation of epoch e are a pure function of (seed, e)
(``DataLoader.set_epoch``); the learning rate of epoch e is computed from e. So a
checkpoint needs only the arrays: weights, batch-norm statistics, momentum buffers, the
epoch and batch reached, and the running sums of the epoch in progress (``Progress``).

A checkpoint is two compressed ``.npz`` files of arrays only (no pickled objects).
``checkpoint.npz`` holds the model arrays under ``model.<name>``, integers and sums under
``state.<name>``, and JSON text (configuration, metrics so far, the initialisation
generator's state) under ``meta.<name>``, as UTF-8 bytes (a uint8 array: a NumPy unicode
string would spend 4 bytes per character, and the metrics hold every batch's loss). It is
all that evaluating needs. The optimizer file holds the ``optim.<name>`` arrays: the
momentum buffers, as large as the weights and needed only to resume.

How a pair is committed as one step (``write_checkpoint``). The optimizer file is named
after its contents, ``checkpoint.optim-<first 16 hex digits of its SHA-256>.npz``, so a
new one never replaces the one the current checkpoint.npz names. A save

1. writes the new optimizer file under a temporary name and renames it to its own name,
   beside the old pair (which stays complete);
2. writes the new checkpoint.npz, recording that name and the SHA-256, under a temporary
   name, and renames it over the old one: this one atomic rename commits the new pair;
3. removes the optimizer files no checkpoint.npz names any more.

A crash at any instant leaves either the old pair or the new one complete, plus perhaps a
temporary or an unnamed optimizer file, which the next save (or the next run in the folder)
removes. ``read_checkpoint`` checks all of it (sizes bounded before anything is
decompressed: ``minadder.bounded``; every metadata field: ``metadata.py``), reads format 3
(the optimizer file always ``checkpoint.optim.npz``, as in results/) and the one-file
formats 1 and 2, and raises ``CheckpointError`` naming the file and what is wrong.
"""
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .. import bounded, nn, rng
from .files import flush_to_disk, sync_folder, temporary_name, to_json
from .metadata import CheckpointError, check_metadata

CHECKPOINT = "checkpoint.npz"
#: 4: checkpoint.npz names its optimizer file (committed by one rename); 3: a pair, the
#: optimizer state always in checkpoint.optim.npz; 2: one file, its JSON as UTF-8 bytes;
#: 1: one file, its JSON as NumPy unicode.
FORMAT_VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)
_META = ("config", "metrics", "init_rng")


@dataclasses.dataclass
class Progress:
    """Where the run is: epochs finished, batches finished in the current epoch, and the
    running sums of that epoch's training loss and accuracy."""

    epoch: int = 0
    step: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0

    def start_epoch(self):
        self.step, self.loss_sum, self.correct, self.seen, self.seconds = 0, 0.0, 0, 0, 0.0


class Checkpoint(NamedTuple):
    """The parts of a checkpoint, as ``read_checkpoint`` returns them."""
    model: dict
    optim: dict
    progress: Progress
    config: dict
    metrics: dict
    init_rng: dict


# ============================================================================ writing
def save_checkpoint(path, model, optimizer, progress, config, metrics):
    """Write a checkpoint, ``path`` and its optimizer file (see the module docstring)."""
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optim.{k}": v for k, v in optimizer.state_dict().items()})
    arrays.update({f"state.{k}": np.asarray(v) for k, v in dataclasses.asdict(progress).items()})
    arrays["meta.config"] = _utf8(to_json(dataclasses.asdict(config)))
    arrays["meta.metrics"] = _utf8(to_json(metrics))
    arrays["meta.init_rng"] = _utf8(json.dumps(rng.generator().bit_generator.state))
    return write_checkpoint(path, arrays)


def optimizer_files(path):
    """Every optimizer file beside the checkpoint ``path`` (committed or left by a crash):
    checkpoint.optim.npz (format 3) and checkpoint.optim-<hash>.npz (format 4)."""
    path = Path(path)
    return sorted(path.parent.glob(f"{path.stem}.optim*.npz"))


def write_checkpoint(path, arrays):
    """Write the arrays of a checkpoint in the current format and commit the pair with one
    rename (steps 1-3 of the module docstring): the ``optim.*`` arrays go to the optimizer
    file, everything else to ``path`` with that file's name and SHA-256. (``write_checkpoint(
    path, nn.load(path))`` rewrites a format-2 checkpoint in format 4.)"""
    path = Path(path)
    model = {k: v for k, v in arrays.items() if not k.startswith("optim.")}
    model["meta.format_version"] = np.asarray(FORMAT_VERSION)
    temporary = [temporary_name(path.with_name(f"{path.stem}.optim.npz")), temporary_name(path)]
    try:
        _write_npz(temporary[0], {k: v for k, v in arrays.items() if k.startswith("optim.")})
        digest = hashlib.sha256(temporary[0].read_bytes()).hexdigest()
        side = path.with_name(f"{path.stem}.optim-{digest[:16]}.npz")
        os.replace(temporary[0], side)                      # 1. beside the old pair
        model["meta.optimizer_file"] = _utf8(side.name)
        model["meta.optimizer_sha256"] = _utf8(digest)
        _write_npz(temporary[1], model)
        os.replace(temporary[1], path)                      # 2. the commit
    finally:
        for tmp in temporary:
            if tmp.exists():
                tmp.unlink()
    sync_folder(path.parent)
    remove_unnamed_optimizer_files(path, side)              # 3. what no checkpoint names
    return path


def remove_unnamed_optimizer_files(path, named=None):
    """Remove the optimizer files beside the checkpoint ``path`` other than the one it names
    (``named``, else read from it; a checkpoint that cannot be read keeps them all)."""
    if named is None:
        try:
            named = optimizer_file(path)
        except (CheckpointError, OSError):
            return
    for old in optimizer_files(path):
        if old != named:
            old.unlink()


def _write_npz(tmp, arrays):
    """The arrays into the new file ``tmp``, compressed and flushed to the disk."""
    with open(tmp, "xb") as file:  # "x": never write into a file that exists
        nn.save(arrays, file, compress=True)
        flush_to_disk(file)


def _utf8(text):
    """JSON text as a uint8 array of its UTF-8 bytes (one byte per ASCII character)."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


# ============================================================================ reading
def _text(path, arrays, key):
    """The text of a meta entry: UTF-8 bytes (formats 2-4) or a NumPy unicode scalar (format 1)."""
    array = arrays[key]
    try:
        if array.dtype == np.uint8 and array.ndim == 1:
            return array.tobytes().decode("utf-8")
        if array.dtype.kind == "U" and array.shape == ():
            return str(array)
    except UnicodeDecodeError:
        pass
    raise CheckpointError(f"{path}: damaged entry {key} (not UTF-8 text: dtype {array.dtype}, shape {array.shape})")


def _json(path, arrays, key):
    """The JSON value of a meta entry."""
    text = _text(path, arrays, key)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CheckpointError(f"{path}: damaged entry {key} (not JSON: {exc})") from None


def checkpoint_path(resume, what="--resume"):
    """--resume (and evaluate) take an output directory (its checkpoint.npz) or a checkpoint file."""
    path = Path(resume)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"{what + ': ' if what else ''}no checkpoint at {path} (give an output directory "
                                f"holding {CHECKPOINT}, or a checkpoint file)")
    return path


def _load_arrays(path):
    """All arrays of an .npz file, read with bounded sizes, or CheckpointError saying what is wrong."""
    try:
        return bounded.load_npz(path)
    except bounded.FileRejected as exc:
        raise CheckpointError(f"{path}: damaged or not a checkpoint: {exc.problem}") from None


def optimizer_file(path, arrays=None):
    """The optimizer file of the checkpoint ``path``: the one its ``meta.optimizer_file``
    names (format 4), else checkpoint.optim.npz beside it (format 3)."""
    path = Path(path)
    arrays = _load_arrays(path) if arrays is None else arrays
    if "meta.optimizer_file" not in arrays:
        return path.with_name(f"{path.stem}.optim{path.suffix or '.npz'}")
    name = _text(path, arrays, "meta.optimizer_file")
    if Path(name).name != name or not name.endswith(".npz") or name.startswith("."):
        raise CheckpointError(f"{path}: damaged entry meta.optimizer_file ({name!r} is not a file name)")
    return path.with_name(name)


def _read_optimizer_file(path, arrays):
    """The ``optim.*`` arrays of a format-3 or -4 checkpoint, from the file beside it, once
    its SHA-256 is the one the checkpoint recorded."""
    side = optimizer_file(path, arrays)
    if "meta.optimizer_sha256" not in arrays:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing meta.optimizer_sha256")
    if not side.is_file():
        raise CheckpointError(f"{path}: its optimizer state {side.name} is missing (resuming needs both "
                              f"files, evaluating only {path.name}; copy them together)")
    if hashlib.sha256(side.read_bytes()).hexdigest() != _text(path, arrays, "meta.optimizer_sha256"):
        raise CheckpointError(f"{side}: does not belong to {path.name} (not the file saved with it: "
                              f"damaged, or from another save); resuming needs the pair saved together")
    return {k: v for k, v in _load_arrays(side).items() if k.startswith("optim.")}


def _format_version(path, arrays):
    """The format of a checkpoint's arrays, or CheckpointError when it is none that can be read."""
    if arrays and all(k.startswith("optim.") for k in arrays):
        raise CheckpointError(f"{path}: the optimizer state of a checkpoint, not a checkpoint; "
                              f"give the checkpoint file beside it")
    version = arrays.get("meta.format_version")
    if (version is None or version.shape != () or version.dtype.kind not in "iu"
            or int(version) not in READABLE_VERSIONS):
        raise CheckpointError(f"{path}: not a minadder training checkpoint of format "
                              f"{', '.join(map(str, READABLE_VERSIONS[:-1]))} or {READABLE_VERSIONS[-1]}")
    return int(version)


def read_checkpoint(path, optimizer=True):
    """The checkpoint's parts as a ``Checkpoint`` (model state, optimizer state, Progress,
    config dict, metrics, rng state); every part is checked, and any problem raises
    ``CheckpointError`` naming the file and what is wrong. ``optimizer=False`` skips the
    optimizer state (evaluating needs only the model): ``.optim`` is then empty."""
    path = Path(path)
    arrays = _load_arrays(path)
    version = _format_version(path, arrays)
    if optimizer and version >= 3:
        arrays.update(_read_optimizer_file(path, arrays))
    elif not optimizer:
        arrays = {k: v for k, v in arrays.items() if not k.startswith("optim.")}
    fields = [f.name for f in dataclasses.fields(Progress)]
    required = [f"state.{f}" for f in fields] + [f"meta.{m}" for m in _META] + (["optim.lr"] if optimizer else [])
    missing = [k for k in required if k not in arrays]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}")

    def part(prefix):
        return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

    meta = {m: _json(path, arrays, f"meta.{m}") for m in _META}
    progress = Progress(**check_metadata(path, part("state."), meta))
    return Checkpoint(part("model."), part("optim."), progress, meta["config"], meta["metrics"], meta["init_rng"])
