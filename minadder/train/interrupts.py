"""How a run stops early: Ctrl-C and batch systems' signals deferred to the end of a batch; the exceptions reporting it.

Ctrl-C (SIGINT) does not stop the program mid-update: the first Ctrl-C asks the loop to
stop at the end of the current batch, where the weights, the momentum buffers and the
batch-norm statistics agree with each other; the loop then saves a checkpoint that
records the batch reached within the epoch, and raises ``TrainingInterrupted``. A second
Ctrl-C stops at once; if that lands inside a training step, nothing is saved and the last
good checkpoint is kept.

The signals a batch system or a closing terminal sends are handled the same way:
SIGTERM (``kill``, SLURM's and Kubernetes' "stop now, or be killed in a while"), SIGHUP
(the terminal went away) and SIGUSR1 (SLURM's warning before the time limit,
``sbatch --signal=USR1@120``). A repeated one of these only repeats the request: the
stop is on its way, and a second SIGTERM is often just the same stop sent twice. The
process then exits with status 128 + the signal's number, as a shell reports a process
the signal ended: 130 after Ctrl-C, 143 after SIGTERM, 129 after SIGHUP, 138 after SIGUSR1.

A loss that is not finite stops the run before the update that it would drive
(``TrainingDiverged``); the last good checkpoint is kept.
"""
import signal

#: The signals that stop a run at the end of its batch (those this system has).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1")
                     if hasattr(signal, name))


def signal_name(signum):
    """'Ctrl-C' for SIGINT, else the signal's name: 'SIGTERM'."""
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def exit_status(signum):
    """The exit status after the signal ``signum``: 128 + its number, as a shell reports it."""
    return 128 + int(signum)


class Stopped(KeyboardInterrupt):
    """A stop signal arrived outside the training loop; ``signum`` says which."""

    def __init__(self, signum=signal.SIGINT):
        super().__init__(f"stopped by {signal_name(signum)}")
        self.signum = signum


class TrainingInterrupted(KeyboardInterrupt):
    """Raised after Ctrl-C (or another stop signal, ``signum``) once the loop has stopped;
    ``checkpoint`` is the file saved (or None)."""

    def __init__(self, message, checkpoint=None, signum=signal.SIGINT):
        super().__init__(message)
        self.checkpoint, self.signum = checkpoint, signum


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stopped before the update it would drive."""


class _Handlers:
    """Install ``handler`` for every stop signal within a ``with`` block, then put the
    previous handlers back. Outside the main thread, where signal handlers cannot be
    installed, nothing changes."""

    def __init__(self, handler):
        self.handler, self.previous = handler, {}

    def __enter__(self):
        for signum in STOP_SIGNALS:
            try:
                self.previous[signum] = signal.signal(signum, self.handler)
            except ValueError:  # not the main thread
                break
        return self

    def __exit__(self, *exc):
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)
        return False


class StopSignals(_Handlers):
    """Within this block every stop signal raises ``Stopped`` (a KeyboardInterrupt), as
    Ctrl-C does: the command line wraps whole commands in it, so that ``finally`` blocks run
    (the run folder's lock is released) however the process is asked to stop."""

    def __init__(self):
        super().__init__(self._raise)

    @staticmethod
    def _raise(signum, frame):
        raise Stopped(signum)


class DeferredInterrupt(_Handlers):
    """Within this block the first stop signal only sets ``requested`` and ``signum`` (the
    loop checks them at batch boundaries); a second Ctrl-C raises KeyboardInterrupt at once."""

    def __init__(self, notify):
        super().__init__(self._handler)
        self.requested, self.signum, self.notify = False, None, notify

    def _handler(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if not self.requested:
            self.requested, self.signum = True, signum
        try:
            self.notify(f"{signal_name(signum)}: stopping at the end of this batch and saving a checkpoint "
                        f"(Ctrl-C again to stop now)")
        except OSError:  # no terminal to tell any more (SIGHUP)
            pass
