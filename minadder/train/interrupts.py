"""How a run stops early: Ctrl-C deferred to the end of the batch, and the exceptions that report a stop.

Ctrl-C does not stop the program mid-update: the first Ctrl-C asks the loop to stop at
the end of the current batch, where the weights, the momentum buffers and the batch-norm
statistics agree with each other; the loop then saves a checkpoint that records the batch
reached within the epoch, and raises ``TrainingInterrupted``. A second Ctrl-C stops at
once; if that lands inside a training step, nothing is saved and the last good checkpoint
is kept. A loss that is not finite stops the run before the update that it would drive
(``TrainingDiverged``); the last good checkpoint is kept.
"""
import signal


class TrainingInterrupted(KeyboardInterrupt):
    """Raised after Ctrl-C once the loop has stopped; ``checkpoint`` is the file saved (or None)."""

    def __init__(self, message, checkpoint=None):
        super().__init__(message)
        self.checkpoint = checkpoint


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stopped before the update it would drive."""


class DeferredInterrupt:
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
