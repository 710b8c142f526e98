"""The training loop: the paper's recipe (Sec. 4) as ``train(config)``, a ``Run`` of epochs of ``train_step``.

The recipe, with the defaults of ``TrainConfig`` (the paper's MNIST settings):

- the network's adder layers get full-precision gradients: Eq. 5 (X - F) for the filters
  and Eq. 6 (HardTanh(F - X)) for the inputs (``--grad-mode sign``: Eq. 4);
- SGD with Nesterov momentum 0.9 and weight decay 5e-4, batch 256 (``build``);
- the adder filters' gradients scaled by the adaptive learning rate of Eq. 13,
  alpha_l = eta * sqrt(k) / ||dL/dF_l||_2 with eta = 0.1 (``optim.SGD``);
- a learning rate decaying from 0.1 along a cosine (``learning_rate``).

``train(config)`` runs these steps, in this order:

1. ``open_checkpoint``: with ``--resume``, read and check the checkpoint (before any work);
2. ``output_dir_for`` and ``check_output_dir``: where the outputs go, which must be
   writable, must not hold another run (unless ``--overwrite``) and must not be in use;
3. ``load_data``: the training split and one or more test sets, all from one place;
4. ``build``: the model and the optimizer, from the seed;
5. ``RunLock``: the folder is created and locked (one run per folder), then
   ``prepare_output_dir`` clears what a crash or ``--overwrite`` leaves;
6. ``Run``: restores a checkpoint, then per epoch ``train_epoch`` (``train_step`` per
   batch), ``evaluate`` on every test set, and ``end_epoch`` (the epoch's record, the
   checkpoint and ``write_outputs``).

Resuming replays the data loader of the interrupted epoch up to the batch reached (without
computing anything) and carries on, so an interrupted and resumed run ends bit-for-bit
where an uninterrupted run ends (see checkpoint.py and interrupts.py).
"""
import math
import shlex
import signal
import sys
import time
from pathlib import Path

from .. import backend, optim, rng
from .. import functional as F
from ..tensor import Tensor
from .checkpoint import CHECKPOINT, CheckpointError, Progress, save_checkpoint
from .datasets import load_data
from .evaluation import evaluate
from .interrupts import DeferredInterrupt, TrainingDiverged, TrainingInterrupted, signal_name
from .lock import RunLock, describe
from .report import epoch_line, epoch_record, new_metrics, step_value, write_outputs
from .resume import open_checkpoint
from .run_folder import check_output_dir, continues_in_place, output_dir_for, prepare_output_dir


# ============================================================================ the recipe
def build(config, num_classes, channels, size):
    """The model (initialised from ``config.seed``) and its optimizer: SGD with (Nesterov)
    momentum, weight decay and the adder filters' learning-rate scaling (Eq. 13)."""
    rng.manual_seed(config.seed)
    model = config.build_network(num_classes, channels, size)
    optimizer = optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          nesterov=config.nesterov, weight_decay=config.weight_decay,
                          binary_weight_decay=config.binary_weight_decay,
                          adder_scaling=config.adder_scaling, eta=config.eta,
                          adder_factor=config.adder_factor)
    return model, optimizer


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
        if saved.progress.step > self.batches:
            raise CheckpointError(f"{path}: does not match this run (batch {saved.progress.step} of an epoch "
                                  f"of {self.batches} batches)")
        self.progress = saved.progress
        self.metrics["completed"] = self.progress.epoch >= self.config.epochs
        self.log(f"resuming {path} at epoch {self.progress.epoch + 1}, batch {self.progress.step}/{self.batches}")

    def loop(self, callback=None):
        """Train the remaining epochs; Ctrl-C or another stop signal (deferred to a batch
        boundary) saves and raises TrainingInterrupted."""
        with DeferredInterrupt(self.log) as interrupt:
            if self.progress.epoch >= self.config.epochs and (self.out_dir / CHECKPOINT).exists():
                write_outputs(self.out_dir, self.metrics)  # finished: outputs as its checkpoint says
            try:
                for epoch in range(self.progress.epoch, self.config.epochs):
                    self.train_epoch(epoch, interrupt, callback)
                    self.end_epoch(epoch, self.evaluate_tests(interrupt))
            except KeyboardInterrupt as exc:
                if self.bar is not None:
                    self.bar.close()
                if isinstance(exc, TrainingInterrupted):
                    raise
                raise self._interrupted(interrupt.signum or signal.SIGINT) from None
            if interrupt.requested:  # Ctrl-C while the last epoch's outputs were being written
                raise TrainingInterrupted(f"{signal_name(interrupt.signum)} after the last epoch: the run had "
                                          f"finished and its outputs are saved in {self.out_dir}",
                                          self.out_dir / CHECKPOINT, interrupt.signum)

    def train_epoch(self, epoch, interrupt, callback=None):
        """Train through one epoch from batch ``progress.step`` (the batches before it were
        finished before an interruption and are replayed only to keep the order)."""
        from tqdm.auto import tqdm
        progress = self.progress
        self.data.train_loader.set_epoch(epoch)
        self.model.train()
        self.bar = tqdm(total=self.batches, initial=progress.step, desc=f"epoch {epoch + 1}/{self.config.epochs}",
                        unit="batch", disable=not self.config.progress, file=sys.stderr, dynamic_ncols=True)
        start = tick = time.perf_counter()
        images = 0
        for step, (x, y) in enumerate(self.data.train_loader):
            if step < progress.step:
                continue
            self.in_step = True
            lr = self.schedule.set(schedule_position(self.config, epoch, step, self.batches))
            try:
                loss, correct = train_step(self.model, self.optimizer, x, y)
            except TrainingDiverged as exc:
                self.in_step = False
                raise self._diverged(exc, epoch, step, lr) from None
            self._record_step(epoch, step, len(y), loss, correct)
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

    def _record_step(self, epoch, step, size, loss, correct):
        """Add a finished batch to the epoch's sums and to the per-batch curves."""
        progress, steps = self.progress, self.metrics["steps"]
        progress.step, progress.seen = step + 1, progress.seen + size
        progress.loss_sum += loss * size
        progress.correct += correct
        steps["epoch"].append(round(epoch + (step + 1) / self.batches, 6))
        steps["loss"].append(step_value(loss))
        steps["accuracy"].append(step_value(correct / size))

    def evaluate_tests(self, interrupt):
        """{test set name: {"loss", "accuracy"}} for every test set."""
        results = {}
        for test in self.data.tests:
            loss, accuracy = evaluate(self.model, test.loader, lambda: interrupt.requested)
            results[test.name] = {"loss": loss, "accuracy": accuracy}
        return results

    def end_epoch(self, epoch, results):
        """Record the finished epoch, then write the checkpoint and the outputs."""
        record = epoch_record(epoch, self.schedule.lr_at(epoch), self.progress, results, self.data.tests[0].name)
        self.in_step = True  # the epoch's bookkeeping below must not be cut in half either
        self.metrics["epochs"].append(record)
        self.metrics["test_accuracy"] = record["test_accuracy"]
        self.metrics["completed"] = epoch + 1 == self.config.epochs
        self.progress.epoch = epoch + 1
        self.progress.start_epoch()
        self.in_step = False
        self.log(epoch_line(record, self.config.epochs))
        if self.config.keep_checkpoints:  # first: a crash between the two saves redoes the epoch
            self.save(f"checkpoint-epoch{epoch + 1:03d}.npz")
        self.save(CHECKPOINT)
        write_outputs(self.out_dir, self.metrics)

    def save(self, name=CHECKPOINT):
        return save_checkpoint(self.out_dir / name, self.model, self.optimizer, self.progress, self.config,
                               self.metrics)

    def _last_checkpoint(self):
        last = self.out_dir / CHECKPOINT
        return (f"the last checkpoint ({last}) is kept" if last.exists() else "no checkpoint yet"), \
            (last if last.exists() else None)

    def _interrupted(self, signum):
        """Save what can be saved after Ctrl-C (or ``signum``) and build the exception that reports it."""
        how = "interrupted" if signum == signal.SIGINT else f"stopped by {signal_name(signum)}"
        if self.in_step:  # the interrupt landed inside a training step: the weights may be half-updated
            kept, last = self._last_checkpoint()
            return TrainingInterrupted(f"{how} inside a training step; nothing saved, " + kept, last, signum)
        path = self.save()
        if self.metrics["epochs"] or self.metrics["steps"]["epoch"]:
            write_outputs(self.out_dir, self.metrics)
        return TrainingInterrupted(
            f"{how}: saved {path} at epoch {self.progress.epoch + 1}, batch {self.progress.step}/"
            f"{self.batches}; continue with: python -m minadder train --resume {shlex.quote(str(self.out_dir))}",
            path, signum)

    def _diverged(self, exc, epoch, step, lr):
        if self.bar is not None:
            self.bar.close()
        kept = self._last_checkpoint()[0]
        return TrainingDiverged(f"training diverged: {exc} at epoch {epoch + 1}, batch {step + 1}/{self.batches} "
                                f"(learning rate {lr:.3g}); stopped before updating the weights, {kept}; "
                                f"try a smaller {_step_options(self.config)}")


def _step_options(config):
    """The options that set the size of a step, for the divergence message: --lr, and those
    that scale it (the adder filters' --eta or --adder-factor, --weight-decay) where set."""
    scaling = {"adaptive": "--eta", "fixed": "--adder-factor"}.get(config.adder_scaling)
    names = ["--lr"] + ([scaling] if scaling and config.kind == "adder" else []) + \
        (["--weight-decay"] if config.weight_decay else [])
    return f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]


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
    checkpoint_file, saved = open_checkpoint(config)                      # step 1
    out_dir = output_dir_for(config, checkpoint_file)                     # step 2
    resuming_here = continues_in_place(checkpoint_file, out_dir)
    check_output_dir(out_dir, config, resuming_here)

    data = load_data(config)                                              # step 3
    for note in data.notes:
        log(f"note: {note}")
    model, optimizer = build(config, data.train_set.num_classes, *data.image)  # step 4
    run = Run(config, out_dir, data, model, optimizer, log)               # step 6
    if saved is not None:
        run.restore(checkpoint_file, saved)
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:    # one line naming the flag, not a bare "[Errno 2] ..."
        raise OSError(f"--output-dir {out_dir}: cannot create the folder ({error.strerror})") from None
    try:
        with RunLock(out_dir) as lock:                                    # step 5
            if lock.stale:
                log(f"note: took over the lock of a run that no longer runs ({describe(lock.stale)})")
            prepare_output_dir(out_dir, replace=config.overwrite and not resuming_here)
            run.loop(callback)
    except BaseException:
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()  # stopped before anything was saved: leave no empty folder behind
        raise
    return {"metrics": run.metrics, "model": model, "output_dir": out_dir}
