"""The training loop behind ``python -m minadder train``.

One call, ``train(TrainConfig(...))``, builds the model and the data, runs SGD with the
paper's recipe (SPEC sections 3, 5, 7), shows a tqdm progress bar, and writes into the
output directory:

- ``metrics.json``: the configuration, one record per epoch (learning rate, train loss
  and accuracy, test loss and accuracy, seconds, images/s), the per-batch training loss
  and accuracy, and the final ``test_accuracy``;
- ``curves.png``: loss and accuracy against epochs;
- ``checkpoint.npz``: everything needed to continue (see below), rewritten after every
  epoch (``keep_checkpoints=True`` also keeps a copy per epoch).

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

Checkpoints are ``.npz`` files written by ``minadder.nn.save`` (no pickled objects): model
arrays under ``model.<name>``, optimizer arrays under ``optim.<name>``, integers and sums
under ``state.<name>``, and JSON text (configuration, metrics so far, the initialisation
generator's state) under ``meta.<name>``.
"""
import dataclasses
import datetime
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from . import backend, models, nn, optim, rng
from . import functional as F
from .tensor import Tensor, no_grad

CHECKPOINT = "checkpoint.npz"
METRICS = "metrics.json"
CURVES = "curves.png"
FORMAT_VERSION = 1

SCHEDULES = ("cosine", "poly")
AUGMENTS = ("auto", "cifar", "none")
LR_STEPS = ("batch", "epoch")

#: Fields that may differ between a checkpoint and the run that resumes it: they change
#: where things are read or written, or how fast, not what is computed.
RESUME_MAY_CHANGE = ("data_dir", "output_dir", "resume", "backend", "progress", "keep_checkpoints")


@dataclasses.dataclass
class TrainConfig:
    """Everything a run depends on. Defaults: the paper's MNIST recipe (Sec. 4.1:
    NAG with momentum 0.9, weight decay 5e-4, cosine decay from 0.1, batch 256,
    eta = 0.1) for an AdderNet LeNet-5-BN on the embedded synthetic digits, with a few
    epochs instead of 50 so that the default run takes about two minutes."""

    model: str = "lenet5_bn"
    kind: str = "adder"
    dataset: str = "synthetic-digits"
    data_dir: str = None
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
    limit_train: int = None
    limit_test: int = None
    keep_checkpoints: bool = False
    progress: bool = True

    def validate(self):
        """Raise ValueError naming the first bad option."""
        choices = {"model": tuple(models.MODELS), "kind": models.KINDS, "schedule": SCHEDULES,
                   "grad_mode": ("full", "sign"), "adder_scaling": optim.ADDER_SCALINGS,
                   "augment": AUGMENTS, "lr_step": LR_STEPS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        for name in ("epochs", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer; got {getattr(self, name)!r}")
        for name in ("lr", "momentum", "weight_decay", "eta", "adder_factor"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a non-negative number; got {value!r}")
        for name in ("limit_train", "limit_test"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 2):
                raise ValueError(f"{name} must be an integer >= 2 (or None for all); got {value!r}")
        if self.nesterov and self.momentum <= 0:
            raise ValueError("nesterov needs momentum > 0 (pass --no-nesterov or a momentum)")
        return self


class TrainingInterrupted(KeyboardInterrupt):
    """Raised after Ctrl-C once the loop has stopped; ``checkpoint`` is the file saved (or None)."""

    def __init__(self, message, checkpoint=None):
        super().__init__(message)
        self.checkpoint = checkpoint


# ============================================================================ small pieces
def learning_rate(config, epoch, step=0, batches=1):
    """The learning rate of batch `step` of epoch `epoch` (both 0-based), cosine or
    polynomial decay (SPEC 5) with e = epoch + step / batches: the rate decays a little
    every batch, as in SGDR (the cosine decay the paper cites, its ref. [20]). With
    ``lr_step="epoch"`` e is the whole epoch, as in the paper's reference code."""
    e = epoch + step / batches if config.lr_step == "batch" else epoch
    if config.schedule == "cosine":
        return optim.cosine_lr(config.lr, e, config.epochs)
    return optim.poly_lr(config.lr, e, config.epochs)


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


def atomic_write(path, write):
    """Call write(tmp_path), then rename tmp_path to path: a reader never sees a half file."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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
        self.notify("Ctrl-C: stopping after this batch and saving a checkpoint (Ctrl-C again to stop now)")

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


def save_checkpoint(path, model, optimizer, progress, config, metrics):
    """Write a checkpoint atomically (see the module docstring for its layout)."""
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optim.{k}": v for k, v in optimizer.state_dict().items()})
    arrays.update({f"state.{k}": np.asarray(v) for k, v in dataclasses.asdict(progress).items()})
    arrays["meta.format_version"] = np.asarray(FORMAT_VERSION)
    arrays["meta.config"] = np.asarray(json.dumps(dataclasses.asdict(config)))
    arrays["meta.metrics"] = np.asarray(json.dumps(metrics))
    arrays["meta.init_rng"] = np.asarray(json.dumps(rng.generator().bit_generator.state))
    atomic_write(path, lambda tmp: nn.save(arrays, tmp))
    return Path(path)


def checkpoint_path(resume):
    """--resume takes an output directory (its checkpoint.npz) or a checkpoint file."""
    path = Path(resume)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {path} (give an output directory "
                                f"holding {CHECKPOINT}, or a checkpoint file)")
    return path


def read_checkpoint(path):
    """The checkpoint's parts: (model state, optimizer state, Progress, config dict, metrics, rng state)."""
    arrays = nn.load(path)
    if int(arrays.get("meta.format_version", -1)) != FORMAT_VERSION:
        raise ValueError(f"{path}: not a minadder training checkpoint of format {FORMAT_VERSION}")

    def part(prefix):
        return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

    state = part("state.")
    progress = Progress(epoch=int(state["epoch"]), step=int(state["step"]), loss_sum=float(state["loss_sum"]),
                        correct=int(state["correct"]), seen=int(state["seen"]), seconds=float(state["seconds"]))
    return (part("model."), part("optim."), progress, json.loads(str(arrays["meta.config"])),
            json.loads(str(arrays["meta.metrics"])), json.loads(str(arrays["meta.init_rng"])))


def config_from_checkpoint(resume, **overrides):
    """The saved configuration of a checkpoint, with `overrides` applied; an override of a
    field that changes the computation is refused (resuming must continue the same run)."""
    path = checkpoint_path(resume)
    saved = read_checkpoint(path)[3]
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in saved.items() if k in fields})
    for key, value in overrides.items():
        if key not in RESUME_MAY_CHANGE and value != getattr(config, key):
            raise ValueError(f"--resume continues a saved run: {key} cannot change "
                             f"(saved {getattr(config, key)!r}, given {value!r})")
        setattr(config, key, value)
    config.resume = str(resume)
    return config


# ============================================================================ plotting
def plot_curves(metrics, path):
    """Loss and accuracy against epochs: per batch (thin) and per epoch (markers)."""
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
        loss_ax.plot(e, [r["test_loss"] for r in epochs], "s-", color="tab:orange", label="test")
        acc_ax.plot(e, [100 * r["train_accuracy"] for r in epochs], "o-", color="tab:blue", label="train (epoch)")
        acc_ax.plot(e, [100 * r["test_accuracy"] for r in epochs], "s-", color="tab:orange", label="test")
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


# ============================================================================ the loop
def _evaluate(model, loader, interrupt):
    """(mean loss, accuracy) over a loader, in eval mode (running batch-norm statistics)."""
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    with no_grad():
        for x, y in loader:
            logits = model(Tensor(x))
            loss_sum += float(F.cross_entropy(logits, y).item()) * len(y)
            correct += int((logits.data.argmax(axis=1) == y).sum())
            seen += len(y)
            if interrupt.requested:
                raise KeyboardInterrupt
    model.train()
    return loss_sum / seen, correct / seen


def _load_data(config):
    from .data import DataLoader, load_dataset  # imported here: the data package is optional for counting

    train_set = _limit(load_dataset(config.dataset, "train", config.data_dir), config.limit_train, config.seed)
    test_set = _limit(load_dataset(config.dataset, "test", config.data_dir), config.limit_test, config.seed)
    c, h, w = train_set.shape
    pad_to = 32 if (h, w) == (28, 28) else None  # MNIST-like 28x28 -> 32x32, as in the paper
    augment = {"auto": "cifar" if config.dataset.startswith("cifar") else None,
               "cifar": "cifar", "none": None}[config.augment]
    # Drop the incomplete last batch: its batch-norm statistics are noisy (a batch of one
    # cannot be normalised at all). The order changes every epoch, so no image is left out for good.
    drop_last = len(train_set) >= config.batch_size
    train_loader = DataLoader(train_set, config.batch_size, shuffle=True, seed=config.seed,
                              augment=augment, drop_last=drop_last, pad_to=pad_to)
    test_loader = DataLoader(test_set, config.batch_size, shuffle=False, seed=config.seed, pad_to=pad_to)
    return train_set, test_set, train_loader, test_loader, (c, pad_to or h)


def _build(config, num_classes, channels, size):
    rng.manual_seed(config.seed)
    model = models.build_model(config.model, kind=config.kind, grad_mode=config.grad_mode,
                               num_classes=num_classes, in_channels=channels, input_size=size)
    optimizer = optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          nesterov=config.nesterov, weight_decay=config.weight_decay,
                          adder_scaling=config.adder_scaling, eta=config.eta,
                          adder_factor=config.adder_factor)
    return model, optimizer


def _write_outputs(out_dir, metrics):
    text = json.dumps(metrics, indent=1)
    atomic_write(out_dir / METRICS, lambda tmp: tmp.write_text(text))
    plot_curves(metrics, out_dir / CURVES)


def train(config, callback=None, log=None):
    """Train as `config` says; return a dict with ``metrics``, ``model``, ``output_dir``.

    callback(epoch, step), if given, is called after every training batch (0-based epoch,
    batches finished in it), at a point where the state is consistent: tests use it to
    inject a KeyboardInterrupt. log(text) prints messages (default: tqdm.write to stderr).
    Raises TrainingInterrupted after Ctrl-C, once a checkpoint has been saved.
    """
    from tqdm.auto import tqdm

    log = log or (lambda text: tqdm.write(text, file=sys.stderr))
    config.validate()
    if config.backend:
        backend.set_backend(config.backend)
    resumed = None
    if config.resume:
        ckpt = checkpoint_path(config.resume)
        resumed = read_checkpoint(ckpt)
        _check_same_run(resumed[3], config)
    out_dir = Path(config.output_dir) if config.output_dir else (
        ckpt.parent if resumed else default_output_dir(config))
    out_dir.mkdir(parents=True, exist_ok=True)

    train_set, test_set, train_loader, test_loader, (channels, size) = _load_data(config)
    model, optimizer = _build(config, train_set.num_classes, channels, size)
    progress = Progress()
    metrics = {"config": dataclasses.asdict(config), "backend": backend.get_backend(),
               "dataset": {"name": train_set.name, "source": train_set.source, "train_images": len(train_set),
                           "test_images": len(test_set), "num_classes": train_set.num_classes},
               "model": {"name": config.model, "kind": config.kind,
                         "parameters": int(sum(p.size for p in model.parameters()))},
               "epochs": [], "steps": {"epoch": [], "loss": [], "accuracy": []},
               "test_accuracy": None, "completed": False}
    if resumed:
        model_state, optim_state, progress, _, saved_metrics, init_rng = resumed
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optim_state)
        rng.generator().bit_generator.state = init_rng
        metrics["epochs"], metrics["steps"] = saved_metrics["epochs"], saved_metrics["steps"]
        metrics["test_accuracy"] = saved_metrics["test_accuracy"]
        log(f"resuming {ckpt} at epoch {progress.epoch + 1}, batch {progress.step}/{len(train_loader)}")

    n_batches = len(train_loader)
    in_step, bar = False, None
    with _DeferredInterrupt(log) as interrupt:
        try:
            for epoch in range(progress.epoch, config.epochs):
                epoch_lr = learning_rate(config, epoch, 0, n_batches)
                train_loader.set_epoch(epoch)
                model.train()
                bar = tqdm(total=n_batches, initial=progress.step, desc=f"epoch {epoch + 1}/{config.epochs}",
                           unit="batch", disable=not config.progress, file=sys.stderr, dynamic_ncols=True)
                start = tick = time.perf_counter()
                images = 0
                for step, (x, y) in enumerate(train_loader):
                    if step < progress.step:
                        continue  # finished before an interruption; replayed only to keep the order
                    in_step = True
                    optimizer.lr = learning_rate(config, epoch, step, n_batches)
                    logits = model(Tensor(x))
                    loss = F.cross_entropy(logits, y)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    batch_loss = float(loss.item())
                    batch_correct = int((logits.data.argmax(axis=1) == y).sum())
                    progress.step, progress.seen = step + 1, progress.seen + len(y)
                    progress.loss_sum += batch_loss * len(y)
                    progress.correct += batch_correct
                    steps = metrics["steps"]
                    steps["epoch"].append(epoch + (step + 1) / n_batches)
                    steps["loss"].append(batch_loss)
                    steps["accuracy"].append(batch_correct / len(y))
                    in_step = False  # weights, momentum, BN statistics and progress agree again
                    now = time.perf_counter()
                    progress.seconds, tick = progress.seconds + now - tick, now
                    images += len(y)
                    bar.update(1)
                    bar.set_postfix(lr=f"{optimizer.lr:.3g}", loss=f"{progress.loss_sum / progress.seen:.4f}",
                                    acc=f"{100 * progress.correct / progress.seen:.2f}%",
                                    img_s=f"{images / max(time.perf_counter() - start, 1e-9):.0f}")
                    if callback is not None:
                        callback(epoch, step + 1)
                    if interrupt.requested:
                        raise KeyboardInterrupt
                bar.close()
                test_loss, test_acc = _evaluate(model, test_loader, interrupt)
                record = {"epoch": epoch + 1, "lr": epoch_lr,
                          "train_loss": progress.loss_sum / progress.seen,
                          "train_accuracy": progress.correct / progress.seen,
                          "test_loss": test_loss, "test_accuracy": test_acc,
                          "time_s": progress.seconds, "images_per_s": progress.seen / max(progress.seconds, 1e-9)}
                in_step = True  # the epoch's bookkeeping below must not be cut in half either
                metrics["epochs"].append(record)
                metrics["test_accuracy"] = test_acc
                metrics["completed"] = epoch + 1 == config.epochs
                progress.epoch = epoch + 1
                progress.start_epoch()
                in_step = False
                log(f"epoch {epoch + 1}/{config.epochs}: lr {record['lr']:.4g}, train loss {record['train_loss']:.4f}, "
                    f"train acc {100 * record['train_accuracy']:.2f}%, test acc {100 * test_acc:.2f}%, "
                    f"{record['time_s']:.1f}s ({record['images_per_s']:.0f} img/s)")
                save_checkpoint(out_dir / CHECKPOINT, model, optimizer, progress, config, metrics)
                if config.keep_checkpoints:
                    save_checkpoint(out_dir / f"checkpoint-epoch{epoch + 1:03d}.npz", model, optimizer,
                                    progress, config, metrics)
                _write_outputs(out_dir, metrics)
        except KeyboardInterrupt as exc:
            if bar is not None:
                bar.close()
            if isinstance(exc, TrainingInterrupted):
                raise
            raise _interrupted(out_dir, model, optimizer, progress, config, metrics, in_step, n_batches) from None
    return {"metrics": metrics, "model": model, "output_dir": out_dir}


def _interrupted(out_dir, model, optimizer, progress, config, metrics, in_step, n_batches):
    """Save what can be saved after Ctrl-C and build the exception that reports it."""
    if in_step:
        # the interrupt landed inside a training step: the weights may be half-updated
        last = out_dir / CHECKPOINT
        message = ("interrupted inside a training step; nothing saved, "
                   + (f"the last checkpoint ({last}) is kept" if last.exists() else "no checkpoint yet"))
        return TrainingInterrupted(message, last if last.exists() else None)
    path = save_checkpoint(out_dir / CHECKPOINT, model, optimizer, progress, config, metrics)
    if metrics["epochs"] or metrics["steps"]["epoch"]:
        _write_outputs(out_dir, metrics)
    message = (f"interrupted: saved {path} at epoch {progress.epoch + 1}, batch {progress.step}/{n_batches}; "
               f"continue with: python -m minadder train --resume {out_dir}")
    return TrainingInterrupted(message, path)


def _check_same_run(saved, config):
    """Refuse to resume a checkpoint with a configuration that computes something else."""
    for key, value in saved.items():
        if key in RESUME_MAY_CHANGE or not hasattr(config, key):
            continue
        if getattr(config, key) != value:
            raise ValueError(f"--resume continues a saved run: {key} differs "
                             f"(checkpoint {value!r}, this run {getattr(config, key)!r})")
