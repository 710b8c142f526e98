"""The checkpoint format 3: the pair checkpoint.npz + checkpoint.optim.npz, written atomically; formats 1-2 read too.

Reproducibility makes a checkpoint small. Given the same seed and backend a run is a pure
function of its configuration: the weights are initialised from ``minadder.manual_seed(seed)``;
the data order and augmentation of epoch e are a pure function of (seed, e)
(``DataLoader.set_epoch``); the learning rate of epoch e is computed from e. So a
checkpoint needs only the arrays: weights, batch-norm statistics, momentum buffers, the
epoch and batch reached, and the running sums of the epoch in progress (``Progress``).

Checkpoints are pairs of compressed ``.npz`` files written by ``minadder.nn.save`` (no
pickled objects). ``checkpoint.npz`` holds the model arrays under ``model.<name>``, integers
and sums under ``state.<name>``, and JSON text (configuration, metrics so far, the
initialisation generator's state) under ``meta.<name>``, as UTF-8 bytes (a uint8 array: a
NumPy unicode string would spend 4 bytes per character, and the metrics hold every batch's
loss). It is all that evaluating needs. ``checkpoint.optim.npz`` holds the optimizer arrays
under ``optim.<name>``: the momentum buffers, as large as the weights and needed only to
resume. Compression shrinks the JSON tenfold and the float arrays hardly at all, so the two
halves are about the same size (1.2 and 1.0 MB for ResNet-20). The first file records the
SHA-256 of the second, so a pair that does not belong together is refused.
``read_checkpoint`` checks all of it, reads the older one-file formats 1 and 2 too, and
raises ``CheckpointError`` naming the file and what is wrong.
"""
import dataclasses
import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .. import nn, rng
from .files import temporary_name, to_json

CHECKPOINT = "checkpoint.npz"
#: 3: a pair of files, the optimizer state in the second; 2: one file, its JSON as UTF-8 bytes;
#: 1: one file, its JSON as NumPy unicode.
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
_META = ("config", "metrics", "init_rng")


class CheckpointError(ValueError):
    """A checkpoint is damaged, incomplete, or not a minadder training checkpoint (the message names it)."""


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


def optimizer_file(path):
    """Where the optimizer state of the checkpoint ``path`` lives: checkpoint.npz ->
    checkpoint.optim.npz, beside it."""
    path = Path(path)
    return path.with_name(f"{path.stem}.optim{path.suffix or '.npz'}")


def write_checkpoint(path, arrays):
    """Write the arrays of a checkpoint in the current format: the ``optim.*`` arrays (the
    momentum buffers, as large as the weights) to ``optimizer_file(path)``, everything else
    to ``path`` with the SHA-256 of the optimizer file, by which a reader knows that the two
    belong together. Both are written under temporary names first and renamed one after the
    other, so neither is ever half-written. (``write_checkpoint(path, nn.load(path))``
    rewrites a format-2 checkpoint in format 3.)"""
    path, side = Path(path), optimizer_file(path)
    model = {k: v for k, v in arrays.items() if not k.startswith("optim.")}
    model["meta.format_version"] = np.asarray(FORMAT_VERSION)
    temporary = [temporary_name(side), temporary_name(path)]
    try:
        nn.save({k: v for k, v in arrays.items() if k.startswith("optim.")}, temporary[0], compress=True)
        model["meta.optimizer_sha256"] = _utf8(_sha256(temporary[0]))
        nn.save(model, temporary[1], compress=True)
        os.replace(temporary[0], side)
        os.replace(temporary[1], path)  # between these two renames the pair disagrees: readers say so
    finally:
        for tmp in temporary:
            if tmp.exists():
                tmp.unlink()
    return path


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _utf8(text):
    """JSON text as a uint8 array of its UTF-8 bytes (one byte per ASCII character)."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


# ============================================================================ reading
def _text(array):
    """The JSON text of a meta entry: UTF-8 bytes (format 2) or a NumPy unicode scalar (format 1)."""
    if array.dtype == np.uint8 and array.ndim == 1:
        return array.tobytes().decode("utf-8")
    if array.dtype.kind == "U" and array.shape == ():
        return str(array)
    raise ValueError(f"a meta entry of dtype {array.dtype} and shape {array.shape}")


def checkpoint_path(resume, what="--resume"):
    """--resume (and evaluate) take an output directory (its checkpoint.npz) or a checkpoint file."""
    path = Path(resume)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no checkpoint at {path} (give an output directory "
                                f"holding {CHECKPOINT}, or a checkpoint file)")
    return path


def _load_arrays(path):
    """All arrays of an .npz file, or CheckpointError saying what is wrong with the file."""
    try:
        return nn.load(path)
    except ValueError as exc:
        if "Object arrays" in str(exc):  # an entry of pickled objects: minadder never writes one
            raise CheckpointError(f"{path}: holds pickled Python objects, which minadder checkpoints never "
                                  f"do; refusing to load it (unpickling can run code)") from None
        if "pickle" in str(exc):  # neither a zip archive nor a .npy array: NumPy takes it for a pickle
            raise CheckpointError(f"{path}: not an .npz file (neither a zip archive nor a NumPy array); "
                                  f"refusing to unpickle it") from None
        raise CheckpointError(f"{path}: damaged or not a checkpoint ({exc})") from None
    except Exception as exc:  # noqa: BLE001 -- truncated or bit-flipped zips raise many kinds
        raise CheckpointError(f"{path}: damaged or not a checkpoint ({_what_is_wrong(exc)})") from None


def _what_is_wrong(exc):
    """A few words on why an .npz file could not be read."""
    if isinstance(exc, EOFError):
        return "empty or truncated file"
    if isinstance(exc, zipfile.BadZipFile):
        if "not a zip file" in str(exc):
            return "truncated, or not a zip archive"
        return f"corrupt zip archive: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _read_optimizer_file(path, arrays):
    """The ``optim.*`` arrays of a format-3 checkpoint, from the file beside it, once its
    SHA-256 is the one the checkpoint recorded."""
    side = optimizer_file(path)
    if "meta.optimizer_sha256" not in arrays:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing meta.optimizer_sha256")
    if not side.is_file():
        raise CheckpointError(f"{path}: its optimizer state {side.name} is missing (resuming needs both "
                              f"files, evaluating only {path.name}; copy them together)")
    try:
        recorded = _text(arrays["meta.optimizer_sha256"])
    except ValueError:
        raise CheckpointError(f"{path}: damaged entry meta.optimizer_sha256") from None
    if _sha256(side) != recorded:
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

    state = part("state.")
    try:
        numbers = {f: state[f].item() for f in fields}
        progress = Progress(**{f: (int if f in ("epoch", "step", "correct", "seen") else float)(numbers[f])
                               for f in fields})
        meta = {m: json.loads(_text(arrays[f"meta.{m}"])) for m in _META}
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: damaged entry ({exc})") from None
    if progress.epoch < 0 or progress.step < 0 or not isinstance(meta["config"], dict):
        raise CheckpointError(f"{path}: damaged state (epoch {progress.epoch}, batch {progress.step})")
    return Checkpoint(part("model."), part("optim."), progress, meta["config"], meta["metrics"], meta["init_rng"])
