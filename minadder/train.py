"""The training loop behind ``python -m minadder train``.

One call, ``train(TrainConfig(...))``, runs these named steps, each a function below:

1. ``open_checkpoint``: with ``resume``, read and check the checkpoint (before any work);
2. ``output_dir_for`` and ``check_output_dir``: where the outputs go (the folder being
   resumed, unless ``output_dir`` says otherwise), which must be writable and must not
   hold another run (unless ``overwrite``);
3. ``load_data``: the training split and one or more test sets, all from one place;
4. ``build``: the model and the optimizer, from the seed;
5. ``Run``: restores a checkpoint, then per epoch ``train_epoch`` (``train_step`` per
   batch), ``evaluate`` on every test set, and ``end_epoch`` (the epoch's record,
   ``save_checkpoint`` and ``write_outputs``).

The recipe is the paper's (Sec. 4): SGD with Nesterov momentum and weight decay, cosine
learning-rate decay (``optim.SCHEDULES``), and the adaptive learning-rate scaling of the
adder filters (Eq. 12, 13). The output directory receives:

- ``metrics.json``: the configuration, the dataset and where it was read from, one record
  per epoch (learning rate, train loss and accuracy, test loss and accuracy on every test
  set, seconds, images/s), the per-batch training loss and accuracy, and the final
  ``test_accuracy``. Strict JSON: a value that is not finite is written as null.
- ``curves.png``: loss and accuracy against epochs;
- ``checkpoint.npz`` and ``checkpoint.optim.npz``: everything needed to continue (see
  below), rewritten after every epoch (``keep_checkpoints=True`` also keeps a pair per epoch).

Reproducibility. Given the same seed and backend a run is a pure function of its
configuration: the weights are initialised from ``minadder.manual_seed(seed)``; the data
order and augmentation of epoch e are a pure function of (seed, e) (``DataLoader.set_epoch``);
the learning rate of epoch e is computed from e. So a checkpoint needs only the arrays:
weights, batch-norm statistics, momentum buffers, the epoch and batch reached, and the
running sums of the epoch in progress.

Interruptions. A checkpoint is always written to a temporary file and renamed, so it is
never half-written. Ctrl-C does not stop the program mid-update: the first Ctrl-C asks the
loop to stop at the end of the current batch, where the weights, the momentum buffers and
the batch-norm statistics agree with each other; the loop then saves a checkpoint that
records the batch reached within the epoch, and raises ``TrainingInterrupted``. Resuming
replays the data loader of that epoch up to that batch (without computing anything) and
carries on, so an interrupted and resumed run ends bit-for-bit where an uninterrupted run
ends. A second Ctrl-C stops at once; if that lands inside a training step, nothing is
saved and the last good checkpoint is kept.

Divergence. A loss that is not finite stops the run before the update that it would
drive (``TrainingDiverged``); the last good checkpoint is kept.

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
import datetime
import hashlib
import json
import math
import os
import signal
import sys
import time
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import backend, models, nn, optim, rng
from . import functional as F
from .kernels.contract import check_grad_mode
from .tensor import Tensor, no_grad

CHECKPOINT = "checkpoint.npz"
METRICS = "metrics.json"
CURVES = "curves.png"
#: 3: a pair of files, the optimizer state in the second; 2: one file, its JSON as UTF-8 bytes;
#: 1: one file, its JSON as NumPy unicode.
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)

AUGMENTS = ("auto", "cifar", "none")
LR_STEPS = ("batch", "epoch")

#: Fields that may differ between a checkpoint and the run that resumes it: they change
#: where things are read or written, or how fast, not what is computed.
RESUME_MAY_CHANGE = ("data_dir", "output_dir", "resume", "backend", "progress", "keep_checkpoints", "overwrite")


def flag(name):
    """The command-line flag of a TrainConfig field: batch_size -> --batch-size."""
    return "--" + name.replace("_", "-")


@dataclasses.dataclass
class TrainConfig:
    """Everything a run depends on. Defaults: the paper's MNIST recipe (Sec. 4.1:
    NAG with momentum 0.9, weight decay 5e-4, cosine decay from 0.1, batch 256,
    eta = 0.1) for an AdderNet LeNet-5-BN on the embedded synthetic digits, with a few
    epochs instead of 50 so that the default run takes about two minutes.

    ``test_file`` (CIFAR) reads that test batch file instead of the usual one;
    ``extra_test_file`` is a second test set evaluated after every epoch as well."""

    model: str = "lenet5_bn"
    kind: str = "adder"
    dataset: str = "synthetic-digits"
    data_dir: str = None
    test_file: str = None
    extra_test_file: str = None
    epochs: int = 3
    batch_size: int = 256
    lr: float = 0.1
    schedule: str = "cosine"
    lr_step: str = "batch"
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    grad_mode: str = "full"
    adder_scaling: str = "adaptive"
    eta: float = 0.1
    adder_factor: float = 100.0
    augment: str = "auto"
    backend: str = None
    seed: int = 0
    output_dir: str = None
    resume: str = None
    overwrite: bool = False
    limit_train: int = None
    limit_test: int = None
    keep_checkpoints: bool = False
    progress: bool = True

    def validate(self):
        """Raise ValueError naming the flag of the first bad option (e.g. --batch-size)."""
        from .data import DATASET_NAMES
        choices = {"model": tuple(models.MODELS), "kind": models.KINDS, "dataset": DATASET_NAMES,
                   "schedule": tuple(optim.SCHEDULES), "adder_scaling": optim.ADDER_SCALINGS,
                   "augment": AUGMENTS, "lr_step": LR_STEPS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{flag(name)} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        check_grad_mode(self.grad_mode, "--grad-mode")  # the kernels' own check
        for name, low, what in (("epochs", 1, "a positive integer"), ("batch_size", 1, "a positive integer"),
                                ("seed", 0, "a non-negative integer")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{flag(name)} must be {what}; got {value!r}")
        for name, (low, high, low_open, high_open) in optim.RANGES.items():
            optim.check_number(flag(name), getattr(self, name), low, high, low_open, high_open)
        for name in ("limit_train", "limit_test"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 2):
                raise ValueError(f"{flag(name)} must be an integer >= 2 (or left out for all); got {value!r}")
        if self.nesterov and self.momentum <= 0:
            raise ValueError("--nesterov needs --momentum > 0 (pass --no-nesterov or a momentum)")
        for name in ("test_file", "extra_test_file"):
            if getattr(self, name) is not None and not self.dataset.startswith("cifar"):
                raise ValueError(f"{flag(name)} applies to cifar10 and cifar100 only, not {self.dataset}")
        if self.extra_test_file is not None and eval_set_name(self.extra_test_file) == eval_set_name(self.test_file):
            raise ValueError(f"--extra-test-file {self.extra_test_file} is the main test set already")
        return self


class TrainingInterrupted(KeyboardInterrupt):
    """Raised after Ctrl-C once the loop has stopped; ``checkpoint`` is the file saved (or None)."""

    def __init__(self, message, checkpoint=None):
        super().__init__(message)
        self.checkpoint = checkpoint


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stopped before the update it would drive."""


class CheckpointError(ValueError):
    """A checkpoint is damaged, incomplete, or not a minadder training checkpoint (the message names it)."""


# ============================================================================ small pieces
def eval_set_name(file):
    """How metrics.json names a test set: "test" for the split's usual files, else the file's stem."""
    return "test" if file is None else Path(file).name.rsplit(".", 1)[0]


def schedule_position(config, epoch, step, batches):
    """Where batch ``step`` of ``epoch`` (both 0-based, ``batches`` per epoch) lies on the
    learning-rate schedule: e = epoch + step / batches, so that the rate decays a little
    every batch, as in SGDR (the cosine decay the paper cites, its ref. [20]); with
    ``lr_step="epoch"`` e = epoch, constant within an epoch as in the paper's reference code."""
    return epoch + step / batches if config.lr_step == "batch" else epoch


def learning_rate(config, epoch, step=0, batches=1):
    """The learning rate of batch ``step`` of ``epoch``: the schedule ``config.schedule``
    of ``optim.SCHEDULES`` at ``schedule_position``."""
    schedule = optim.SCHEDULES[config.schedule](None, config.epochs, base_lr=config.lr)
    return schedule.lr_at(schedule_position(config, epoch, step, batches))


def _limit(dataset, limit, seed):
    """A random subset of `limit` samples, the same for a given seed (test sets can be
    sorted by class, so the first `limit` would not do)."""
    if limit is None or limit >= len(dataset):
        return dataset
    chosen = np.random.default_rng([seed, limit]).permutation(len(dataset))[:limit]
    return dataset.subset(np.sort(chosen))


def default_output_dir(config):
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{config.model}-{config.kind}-{config.dataset}-{stamp}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = Path(f"{base}-{i}")
    return path


def _temporary(path):
    """The hidden name a file is written under before it is renamed to ``path``."""
    return path.with_name(f".{path.stem}.tmp{path.suffix}")


def atomic_write(path, write):
    """Call write(tmp_path), then rename tmp_path to path: a reader never sees a half file."""
    path = Path(path)
    tmp = _temporary(path)
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
    return json.dumps(strict_json(value), allow_nan=False, **kw)


class _DeferredInterrupt:
    """Within this block the first Ctrl-C only sets ``requested`` (the loop checks it at
    batch boundaries); a second Ctrl-C raises KeyboardInterrupt at once. Outside the main
    thread, where signal handlers cannot be installed, Ctrl-C behaves as usual."""

    def __init__(self, notify):
        self.requested, self.notify, self.previous = False, notify, None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.notify("Ctrl-C: stopping at the end of this batch and saving a checkpoint (Ctrl-C again to stop now)")

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread
            self.previous = None
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


# ============================================================================ checkpoints
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


_META = ("config", "metrics", "init_rng")


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
    temporary = [_temporary(side), _temporary(path)]
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


def read_checkpoint(path, optimizer=True):
    """The checkpoint's parts as a ``Checkpoint`` (model state, optimizer state, Progress,
    config dict, metrics, rng state); every part is checked, and any problem raises
    ``CheckpointError`` naming the file and what is wrong. ``optimizer=False`` skips the
    optimizer state (evaluating needs only the model): ``.optim`` is then empty."""
    path = Path(path)
    arrays = _load_arrays(path)
    if arrays and all(k.startswith("optim.") for k in arrays):
        raise CheckpointError(f"{path}: the optimizer state of a checkpoint, not a checkpoint; "
                              f"give the checkpoint file beside it")
    version = arrays.get("meta.format_version")
    if (version is None or version.shape != () or version.dtype.kind not in "iu"
            or int(version) not in READABLE_VERSIONS):
        raise CheckpointError(f"{path}: not a minadder training checkpoint of format "
                              f"{', '.join(map(str, READABLE_VERSIONS[:-1]))} or {READABLE_VERSIONS[-1]}")
    if optimizer and int(version) >= 3:
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


def config_from_checkpoint(resume, **overrides):
    """The saved configuration of a checkpoint, with `overrides` applied; an override of a
    field that changes the computation is refused (resuming must continue the same run).
    The outputs go to the folder of the checkpoint unless ``output_dir`` is overridden."""
    path = checkpoint_path(resume)
    saved = read_checkpoint(path, optimizer=False).config  # open_checkpoint reads the pair
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in saved.items() if k in fields})
    config.output_dir = None  # where the run was written then is not where it is now
    for key, value in overrides.items():
        if key not in RESUME_MAY_CHANGE and value != getattr(config, key):
            raise ValueError(f"--resume continues a saved run: {flag(key)} cannot change "
                             f"(saved {getattr(config, key)!r}, given {value!r})")
        setattr(config, key, value)
    config.resume = str(resume)
    return config


def _check_same_run(saved, config):
    """Refuse to resume a checkpoint with a configuration that computes something else."""
    for key, value in saved.items():
        if key in RESUME_MAY_CHANGE or not hasattr(config, key):
            continue
        if getattr(config, key) != value:
            raise ValueError(f"--resume continues a saved run: {flag(key)} differs "
                             f"(checkpoint {value!r}, this run {getattr(config, key)!r})")


def open_checkpoint(config):
    """Step 1: with ``config.resume``, the checkpoint file and its checked contents; else (None, None)."""
    if not config.resume:
        return None, None
    path = checkpoint_path(config.resume)
    saved = read_checkpoint(path)
    _check_same_run(saved.config, config)
    return path, saved


# ============================================================================ the output folder
def output_dir_for(config, checkpoint_file):
    """Step 2: ``--output-dir`` if given, else the folder of the checkpoint being resumed,
    else a new folder under runs/."""
    if config.output_dir:
        return Path(config.output_dir)
    if checkpoint_file is not None:
        return checkpoint_file.parent
    return default_output_dir(config)


def continues_in_place(checkpoint_file, out_dir):
    """Whether resuming ``checkpoint_file`` into ``out_dir`` continues the run that is there:
    its own checkpoint.npz (an older per-epoch checkpoint would replace the later state)."""
    if checkpoint_file is None or Path(out_dir).resolve() != checkpoint_file.parent.resolve():
        return False
    return checkpoint_file.name == CHECKPOINT or not (Path(out_dir) / CHECKPOINT).exists()


def holds_run(folder):
    """Whether ``folder`` holds the outputs of a run (finished or resumable)."""
    folder = Path(folder)
    return folder.is_dir() and ((folder / CHECKPOINT).exists() or (folder / METRICS).exists()
                                or any(folder.glob("checkpoint-epoch*.npz")))


def check_output_dir(out_dir, config, resuming_here):
    """Before any work: ``out_dir`` can be created and written, and holds no other run
    (unless ``overwrite``). Nothing is created yet: that waits until the data have loaded."""
    out_dir = Path(out_dir)
    where = f"--output-dir {out_dir}" if config.output_dir else f"output folder {out_dir}"
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{where} is a file, not a folder")
    existing = out_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"{where} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{where} is not writable ({existing} is read-only for this user)")
    if not resuming_here and holds_run(out_dir) and not config.overwrite:
        raise FileExistsError(f"{where} already holds a run ({CHECKPOINT}, {METRICS}); continue it with "
                              f"--resume {out_dir}, choose another --output-dir, or pass --overwrite to replace it")


def make_output_dir(out_dir, replace):
    """Create the output folder; with ``replace`` (``--overwrite``) remove the old run's files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if replace:
        for old in [out_dir / CHECKPOINT, optimizer_file(out_dir / CHECKPOINT), out_dir / METRICS, out_dir / CURVES,
                    *out_dir.glob("checkpoint-epoch*.npz")]:  # the glob takes their .optim.npz files too
            if old.exists():
                old.unlink()


# ============================================================================ data and model
@dataclasses.dataclass
class EvalSet:
    """One test set: how metrics.json names it, the data, and its batches."""
    name: str
    dataset: object
    loader: object


@dataclasses.dataclass
class Data:
    """What ``load_data`` returns: the training set and loader, the test sets (the first is
    the main one), (channels, image size after padding), the padding, and notes to show."""
    train_set: object
    train_loader: object
    tests: list
    image: tuple
    pad_to: int
    notes: list


def _training_split(config):
    """The training split and notes on where it came from: one place for the whole dataset."""
    from .data import SYNTHETIC_NAME, load_dataset, locate_dataset
    if config.dataset == SYNTHETIC_NAME:
        notes = [f"--data-dir {config.data_dir} is not used: the synthetic digits are generated"] \
            if config.data_dir else []
        return load_dataset(SYNTHETIC_NAME, "train"), None, notes
    found = locate_dataset(config.dataset, "train", config.data_dir)
    notes = []
    if config.data_dir is not None and found.why != "data_dir / --data-dir":
        state = "does not exist" if not Path(config.data_dir).expanduser().exists() else \
            f"holds no {config.dataset} training files"
        notes.append(f"--data-dir {config.data_dir} {state}; using {found.folder} ({found.why}) instead")
    return load_dataset(config.dataset, "train", found.folder, fallback=False), found.folder, notes


def _test_splits(config, folder):
    """[(name, dataset, file)] for the main test set and the extra one, read from ``folder``
    (the folder of the training split; None for the generated synthetic digits)."""
    from .data import DatasetNotFoundError, load_dataset
    files = [config.test_file] + ([config.extra_test_file] if config.extra_test_file else [])
    tests = []
    for file in files:
        if folder is None:
            tests.append((eval_set_name(file), load_dataset(config.dataset, "test"), file))
            continue
        try:
            tests.append((eval_set_name(file),
                          load_dataset(config.dataset, "test", folder, fallback=False, file=file), file))
        except DatasetNotFoundError:
            wanted = f"the test file {file}" if file else "the test split"
            raise DatasetNotFoundError(
                f"dataset {config.dataset!r}: {wanted} is not in {folder}, where the training split was "
                f"found (both splits are read from one folder: put the test files there, or point "
                f"--data-dir at a folder holding both)") from None
    return tests


def _size_notes(name, splits):
    """Notes for the splits [(split, dataset, file)] whose size is not the official one
    (a copy cut short, or a made-up one); a chosen file is expected to differ."""
    from .data import DATASETS
    if name not in DATASETS:
        return []
    official = DATASETS[name][4]
    return [f"the {split} split in {ds.source} has {len(ds)} images; the official {name} {split} split "
            f"has {official[split]}" for split, ds, file in splits if file is None and len(ds) != official[split]]


def load_data(config):
    """Step 3: the training split, the test set(s) and their loaders. Both splits come from
    the folder where the training split was found (``$MINADDER_DATA`` never supplies one
    split while ``--data-dir`` supplies the other)."""
    from .data import DataLoader
    train_set, folder, notes = _training_split(config)
    tests = _test_splits(config, folder)
    notes += _size_notes(config.dataset, [("train", train_set, None)] + [("test", t, f) for _, t, f in tests])
    train_set = _limit(train_set, config.limit_train, config.seed)
    c, h, w = train_set.shape
    pad_to = 32 if (h, w) == (28, 28) else None  # MNIST-like 28x28 -> 32x32, as in the paper
    augment = {"auto": "cifar" if config.dataset.startswith("cifar") else None,
               "cifar": "cifar", "none": None}[config.augment]
    # Drop the incomplete last batch: its batch-norm statistics are noisy (a batch of one
    # cannot be normalised at all). The order changes every epoch, so no image is left out for good.
    drop_last = len(train_set) >= config.batch_size
    train_loader = DataLoader(train_set, config.batch_size, shuffle=True, seed=config.seed,
                              augment=augment, drop_last=drop_last, pad_to=pad_to)
    eval_sets = []
    for name, test, _ in tests:
        test = _limit(test, config.limit_test, config.seed)
        eval_sets.append(EvalSet(name, test, DataLoader(test, config.batch_size, shuffle=False,
                                                        seed=config.seed, pad_to=pad_to)))
    return Data(train_set, train_loader, eval_sets, (c, pad_to or h), pad_to, notes)


def build(config, num_classes, channels, size):
    """Step 4: the model (initialised from ``config.seed``) and its optimizer."""
    rng.manual_seed(config.seed)
    model = models.build_model(config.model, kind=config.kind, grad_mode=config.grad_mode,
                               num_classes=num_classes, in_channels=channels, input_size=size)
    optimizer = optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          nesterov=config.nesterov, weight_decay=config.weight_decay,
                          adder_scaling=config.adder_scaling, eta=config.eta,
                          adder_factor=config.adder_factor)
    return model, optimizer


def new_metrics(config, data, model):
    """The metrics record of a run before its first epoch."""
    train_set = data.train_set
    return {"config": dataclasses.asdict(config), "backend": backend.get_backend(),
            "dataset": {"name": train_set.name, "source": train_set.source, "train_images": len(train_set),
                        "test_images": len(data.tests[0].dataset), "num_classes": train_set.num_classes,
                        "mean": list(train_set.mean), "std": list(train_set.std), "pad_to": data.pad_to,
                        "image": list(data.image),
                        "notes": list(data.notes)},
            "test_sets": [{"name": t.name, "source": t.dataset.source, "images": len(t.dataset)}
                          for t in data.tests],
            "model": {"name": config.model, "kind": config.kind,
                      "parameters": int(sum(p.size for p in model.parameters()))},
            "epochs": [], "steps": {"epoch": [], "loss": [], "accuracy": []},
            "test_accuracy": None, "completed": False}


# ============================================================================ one step, one evaluation
def train_step(model, optimizer, x, y, check_finite=True):
    """One SGD step on the batch (x, y); returns (loss, number correct).

    With ``check_finite`` a loss that is NaN or infinite raises ``TrainingDiverged``
    before the backward pass, so the weights stay those that gave the last finite loss."""
    logits = model(Tensor(x))
    loss = F.cross_entropy(logits, y)
    value = float(loss.item())
    if check_finite and not math.isfinite(value):
        raise TrainingDiverged(f"the training loss is {value}")
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return value, int((logits.data.argmax(axis=1) == y).sum())


def evaluate(model, batches, should_stop=None):
    """(mean loss, accuracy) over the (x, y) batches, in eval mode (running batch-norm
    statistics), without a graph; the model is put back in training mode afterwards.
    ``should_stop()``, checked after every batch, raises KeyboardInterrupt when true."""
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    try:
        with no_grad():
            for x, y in batches:
                logits = model(Tensor(x))
                loss_sum += float(F.cross_entropy(logits, y).item()) * len(y)
                correct += int((logits.data.argmax(axis=1) == y).sum())
                seen += len(y)
                if should_stop is not None and should_stop():
                    raise KeyboardInterrupt
    finally:
        model.train()
    return loss_sum / seen, correct / seen


# ============================================================================ plotting
def plot_curves(metrics, path):
    """Loss and accuracy against epochs: per batch (thin) and per epoch (markers), one
    line per test set."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: no global state
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    loss_ax, acc_ax = fig.subplots(1, 2)
    steps, epochs = metrics["steps"], metrics["epochs"]
    e = [r["epoch"] for r in epochs]
    loss_ax.plot(steps["epoch"], steps["loss"], lw=0.7, alpha=0.45, color="tab:blue", label="train (batch)")
    acc_ax.plot(steps["epoch"], [100 * a for a in steps["accuracy"]], lw=0.7, alpha=0.45, color="tab:blue",
                label="train (batch)")
    if epochs:
        loss_ax.plot(e, [r["train_loss"] for r in epochs], "o-", color="tab:blue", label="train (epoch)")
        acc_ax.plot(e, [100 * r["train_accuracy"] for r in epochs], "o-", color="tab:blue", label="train (epoch)")
        for name, color in zip(_test_results(epochs[-1]), ("tab:orange", "tab:green", "tab:red")):
            results = [_test_results(r)[name] for r in epochs]
            label = "test" if name == "test" else f"test ({name})"
            loss_ax.plot(e, [_nan_if_none(t["loss"]) for t in results], "s-", color=color, label=label)
            acc_ax.plot(e, [100 * _nan_if_none(t["accuracy"]) for t in results], "s-", color=color, label=label)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    loss_ax.set_yscale("log")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    final = metrics.get("test_accuracy")
    if final is not None:
        acc_ax.annotate(f"test {100 * final:.2f} %", xy=(e[-1], 100 * final), xytext=(-10, -18),
                        textcoords="offset points", ha="right", color="tab:orange")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    c = metrics["config"]
    fig.suptitle(f"{c['model']} ({'AdderNet' if c['kind'] == 'adder' else 'CNN'}) on {c['dataset']}, "
                 f"backend {metrics['backend']}")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def _test_results(record):
    """{test set name: {"loss", "accuracy"}} of an epoch record (records written before
    there could be several test sets hold only test_loss and test_accuracy)."""
    return record.get("tests") or {"test": {"loss": record["test_loss"], "accuracy": record["test_accuracy"]}}


def _nan_if_none(value):
    """metrics.json writes a value that is not finite as null; matplotlib wants NaN (a gap)."""
    return math.nan if value is None else value


def write_outputs(out_dir, metrics):
    """metrics.json (strict JSON) and curves.png, each written atomically."""
    text = to_json(metrics, indent=1)
    atomic_write(out_dir / METRICS, lambda tmp: tmp.write_text(text))
    plot_curves(metrics, out_dir / CURVES)


# ============================================================================ the run
class Run:
    """One training run in progress: the model, the optimizer, the schedule, the data,
    where it is (``progress``) and what it has measured (``metrics``)."""

    def __init__(self, config, out_dir, data, model, optimizer, log):
        self.config, self.out_dir, self.data, self.log = config, Path(out_dir), data, log
        self.model, self.optimizer = model, optimizer
        self.schedule = optim.SCHEDULES[config.schedule](optimizer, config.epochs, base_lr=config.lr)
        self.progress = Progress()
        self.metrics = new_metrics(config, data, model)
        self.metrics["config"]["output_dir"] = str(self.out_dir)
        self.in_step = False  # True while the weights, momentum and progress may disagree
        self.bar = None

    @property
    def batches(self):
        return len(self.data.train_loader)

    def restore(self, path, saved):
        """Continue from a checkpoint read by ``read_checkpoint``."""
        try:
            self.model.load_state_dict(saved.model)
            self.optimizer.load_state_dict(saved.optim)
            rng.generator().bit_generator.state = saved.init_rng
            for key in ("epochs", "steps", "test_accuracy"):
                self.metrics[key] = saved.metrics[key]
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{path}: does not match this run ({exc})") from None
        self.progress = saved.progress
        self.log(f"resuming {path} at epoch {self.progress.epoch + 1}, batch {self.progress.step}/{self.batches}")

    def lr_at(self, epoch, step):
        """Set the optimizer's learning rate for batch ``step`` of ``epoch`` and return it."""
        return self.schedule.set(schedule_position(self.config, epoch, step, self.batches))

    def train_epoch(self, epoch, interrupt, callback=None):
        """Train through one epoch from batch ``progress.step`` (the batches before it were
        finished before an interruption and are replayed only to keep the order)."""
        from tqdm.auto import tqdm
        config, progress, steps = self.config, self.progress, self.metrics["steps"]
        self.data.train_loader.set_epoch(epoch)
        self.model.train()
        self.bar = tqdm(total=self.batches, initial=progress.step, desc=f"epoch {epoch + 1}/{config.epochs}",
                        unit="batch", disable=not config.progress, file=sys.stderr, dynamic_ncols=True)
        start = tick = time.perf_counter()
        images = 0
        for step, (x, y) in enumerate(self.data.train_loader):
            if step < progress.step:
                continue
            self.in_step = True
            lr = self.lr_at(epoch, step)
            try:
                loss, correct = train_step(self.model, self.optimizer, x, y)
            except TrainingDiverged as exc:
                self.in_step = False
                raise self._diverged(exc, epoch, step, lr) from None
            progress.step, progress.seen = step + 1, progress.seen + len(y)
            progress.loss_sum += loss * len(y)
            progress.correct += correct
            steps["epoch"].append(epoch + (step + 1) / self.batches)
            steps["loss"].append(loss)
            steps["accuracy"].append(correct / len(y))
            self.in_step = False  # weights, momentum, BN statistics and progress agree again
            now = time.perf_counter()
            progress.seconds, tick = progress.seconds + now - tick, now
            images += len(y)
            self.bar.update(1)
            self.bar.set_postfix(lr=f"{lr:.3g}", loss=f"{progress.loss_sum / progress.seen:.4f}",
                                 acc=f"{100 * progress.correct / progress.seen:.2f}%",
                                 img_s=f"{images / max(time.perf_counter() - start, 1e-9):.0f}")
            if callback is not None:
                callback(epoch, step + 1)
            if interrupt.requested:
                raise KeyboardInterrupt
        self.bar.close()

    def evaluate_tests(self, interrupt):
        """{test set name: {"loss", "accuracy"}} for every test set."""
        results = {}
        for test in self.data.tests:
            loss, accuracy = evaluate(self.model, test.loader, lambda: interrupt.requested)
            results[test.name] = {"loss": loss, "accuracy": accuracy}
        return results

    def end_epoch(self, epoch, results):
        """Record the finished epoch, then write the checkpoint and the outputs."""
        config, progress = self.config, self.progress
        main = results[self.data.tests[0].name]
        record = {"epoch": epoch + 1, "lr": self.schedule.lr_at(epoch),
                  "train_loss": progress.loss_sum / progress.seen,
                  "train_accuracy": progress.correct / progress.seen,
                  "test_loss": main["loss"], "test_accuracy": main["accuracy"], "tests": results,
                  "time_s": progress.seconds, "images_per_s": progress.seen / max(progress.seconds, 1e-9)}
        self.in_step = True  # the epoch's bookkeeping below must not be cut in half either
        self.metrics["epochs"].append(record)
        self.metrics["test_accuracy"] = main["accuracy"]
        self.metrics["completed"] = epoch + 1 == config.epochs
        progress.epoch = epoch + 1
        progress.start_epoch()
        self.in_step = False
        tests = ", ".join(f"{'test' if name == 'test' else name} acc {100 * r['accuracy']:.2f}%"
                          for name, r in results.items())
        self.log(f"epoch {epoch + 1}/{config.epochs}: lr {record['lr']:.4g}, train loss {record['train_loss']:.4f}, "
                 f"train acc {100 * record['train_accuracy']:.2f}%, {tests}, "
                 f"{record['time_s']:.1f}s ({record['images_per_s']:.0f} img/s)")
        self.save(CHECKPOINT)
        if config.keep_checkpoints:
            self.save(f"checkpoint-epoch{epoch + 1:03d}.npz")
        write_outputs(self.out_dir, self.metrics)

    def save(self, name=CHECKPOINT):
        return save_checkpoint(self.out_dir / name, self.model, self.optimizer, self.progress, self.config,
                               self.metrics)

    def loop(self, callback=None):
        """Train the remaining epochs; Ctrl-C (deferred to a batch boundary) saves and raises
        TrainingInterrupted."""
        with _DeferredInterrupt(self.log) as interrupt:
            try:
                for epoch in range(self.progress.epoch, self.config.epochs):
                    self.train_epoch(epoch, interrupt, callback)
                    self.end_epoch(epoch, self.evaluate_tests(interrupt))
            except KeyboardInterrupt as exc:
                if self.bar is not None:
                    self.bar.close()
                if isinstance(exc, TrainingInterrupted):
                    raise
                raise self._interrupted() from None
            if interrupt.requested:  # Ctrl-C while the last epoch's outputs were being written
                raise TrainingInterrupted(f"interrupted after the last epoch: the run had finished and its "
                                          f"outputs are saved in {self.out_dir}", self.out_dir / CHECKPOINT)

    def _last_checkpoint(self):
        last = self.out_dir / CHECKPOINT
        return (f"the last checkpoint ({last}) is kept" if last.exists() else "no checkpoint yet"), \
            (last if last.exists() else None)

    def _interrupted(self):
        """Save what can be saved after Ctrl-C and build the exception that reports it."""
        if self.in_step:  # the interrupt landed inside a training step: the weights may be half-updated
            kept, last = self._last_checkpoint()
            return TrainingInterrupted("interrupted inside a training step; nothing saved, " + kept, last)
        path = self.save()
        if self.metrics["epochs"] or self.metrics["steps"]["epoch"]:
            write_outputs(self.out_dir, self.metrics)
        return TrainingInterrupted(
            f"interrupted: saved {path} at epoch {self.progress.epoch + 1}, batch {self.progress.step}/"
            f"{self.batches}; continue with: python -m minadder train --resume {self.out_dir}", path)

    def _diverged(self, exc, epoch, step, lr):
        if self.bar is not None:
            self.bar.close()
        kept = self._last_checkpoint()[0]
        return TrainingDiverged(f"training diverged: {exc} at epoch {epoch + 1}, batch {step + 1}/{self.batches} "
                                f"(learning rate {lr:.3g}); stopped before updating the weights, {kept}; "
                                f"try a smaller --lr")


def train(config, callback=None, log=None):
    """Train as `config` says; return a dict with ``metrics``, ``model``, ``output_dir``.

    callback(epoch, step), if given, is called after every training batch (0-based epoch,
    batches finished in it), at a point where the state is consistent: tests use it to
    inject a KeyboardInterrupt. log(text) prints messages (default: tqdm.write to stderr).
    Raises TrainingInterrupted after Ctrl-C, once a checkpoint has been saved, and
    TrainingDiverged when the loss stops being finite.
    """
    from tqdm.auto import tqdm

    log = log or (lambda text: tqdm.write(text, file=sys.stderr))
    config.validate()
    if config.backend:
        backend.set_backend(config.backend)
    checkpoint_file, saved = open_checkpoint(config)
    out_dir = output_dir_for(config, checkpoint_file)
    resuming_here = continues_in_place(checkpoint_file, out_dir)
    check_output_dir(out_dir, config, resuming_here)

    data = load_data(config)
    for note in data.notes:
        log(f"note: {note}")
    model, optimizer = build(config, data.train_set.num_classes, *data.image)
    run = Run(config, out_dir, data, model, optimizer, log)
    if saved is not None:
        run.restore(checkpoint_file, saved)
    created = not out_dir.exists()
    make_output_dir(out_dir, replace=config.overwrite and not resuming_here)
    try:
        run.loop(callback)
    except BaseException:
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()  # stopped before anything was saved: leave no empty folder behind
        raise
    return {"metrics": run.metrics, "model": model, "output_dir": out_dir}


# ============================================================================ evaluate a checkpoint
def _trained_image(config, saved_metrics):
    """(channels, size) of the images the checkpoint's model was built for."""
    image = saved_metrics.get("dataset", {}).get("image")
    if image:
        return tuple(image)
    return (3 if config.dataset.startswith("cifar") else 1), 32  # checkpoints from before "image" was saved


def _evaluation_set(name, data_dir, test_file):
    """The test split of ``name`` and notes on where it came from."""
    from .data import SYNTHETIC_NAME, load_dataset, locate_dataset
    if name == SYNTHETIC_NAME:
        return load_dataset(name, "test", file=test_file), []
    found = locate_dataset(name, "test", data_dir, file=test_file)
    notes = []
    if data_dir is not None and found.why != "data_dir / --data-dir":
        notes.append(f"--data-dir {data_dir} holds no {name} test files; using {found.folder} ({found.why})")
    return load_dataset(name, "test", found.folder, fallback=False, file=test_file), notes


def evaluate_checkpoint(target, dataset=None, data_dir=None, test_file=None, limit_test=None, batch_size=500):
    """Evaluate the model of a checkpoint (``target``: a run folder or a checkpoint file) on
    a test split, with the preprocessing it was trained with (the training set's mean and
    std, the same padding). ``dataset`` defaults to the one it was trained on; another
    one must have the same image shape and number of classes. Returns a dict with
    ``test_accuracy``, ``test_loss``, the dataset, its source, the number of images, ..."""
    from .data import DataLoader
    path = checkpoint_path(target, what="evaluate")
    saved = read_checkpoint(path, optimizer=False)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in saved.config.items() if k in fields})
    name = dataset or config.dataset
    trained = saved.metrics.get("dataset", {})
    num_classes = int(trained.get("num_classes", 10))
    channels, size = _trained_image(config, saved.metrics)
    test, notes = _evaluation_set(name, data_dir, test_file)
    c, h, w = test.shape
    pad_to = 32 if (h, w) == (28, 28) else None
    if (c, pad_to or h, pad_to or w) != (channels, size, size) or test.num_classes != num_classes:
        raise ValueError(f"{path}: the model was trained on {config.dataset} ({channels}x{size}x{size} images, "
                         f"{num_classes} classes) and cannot be evaluated on {name} ({c}x{h}x{w} images, "
                         f"{test.num_classes} classes)")
    if trained.get("mean") and trained.get("std"):  # normalise as in training
        test = dataclasses.replace(test, mean=tuple(trained["mean"]), std=tuple(trained["std"]))
    test = _limit(test, limit_test, config.seed)
    model = models.build_model(config.model, kind=config.kind, grad_mode=config.grad_mode,
                               num_classes=num_classes, in_channels=channels, input_size=size)
    try:
        model.load_state_dict(saved.model)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    loss, accuracy = evaluate(model, DataLoader(test, batch_size, shuffle=False, pad_to=pad_to))
    return strict_json({
        "test_accuracy": accuracy, "test_loss": loss, "dataset": name, "test_set": eval_set_name(test_file),
        "source": test.source, "images": len(test), "trained_on": config.dataset, "checkpoint": str(path),
        "epoch": saved.progress.epoch, "model": config.model, "kind": config.kind,
        "backend": backend.get_backend(), "notes": notes})
