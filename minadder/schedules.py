"""The learning-rate schedules: cosine decay (as in SGDR, the paper's ref. [20]) and
polynomial decay, as functions of the epoch and as objects that set an optimizer's lr.
(``minadder.optim`` re-exports every name here.)"""
import math
import numbers

from .checks import check_number


def cosine_lr(base_lr, epoch, total_epochs):
    """gamma_e = gamma_0 * (1 + cos(pi * e / T)) / 2."""
    return base_lr * (1 + math.cos(math.pi * epoch / total_epochs)) / 2


def poly_lr(base_lr, epoch, total_epochs, power=1.0):
    """gamma_e = gamma_0 * (1 - e / T) ** power, for 0 <= e <= T (past T, 1 - e / T < 0
    has no real power) and power >= 0."""
    check_number("poly_lr: epoch", epoch, 0, total_epochs)
    check_number("poly_lr: power", power)
    return base_lr * (1 - epoch / total_epochs) ** power


class _Schedule:
    """Sets ``optimizer.lr`` from the position in training: ``set(e)`` for any e in
    [0, total] (a fraction of an epoch too, for a rate that decays every batch), or
    ``step()`` at the end of each epoch. ``base_lr`` defaults to the optimizer's lr;
    with ``optimizer=None`` (and a ``base_lr``) the schedule only computes ``lr_at``."""

    def __init__(self, optimizer, total_epochs, base_lr=None):
        if isinstance(total_epochs, bool) or not isinstance(total_epochs, numbers.Integral) or total_epochs < 1:
            raise ValueError(f"total_epochs must be a positive integer, got {total_epochs!r}")
        if optimizer is None and base_lr is None:
            raise ValueError("a schedule without an optimizer needs a base_lr")
        self.optimizer, self.total_epochs = optimizer, int(total_epochs)
        self.base_lr = optimizer.lr if base_lr is None else check_number("base_lr", base_lr)
        self.epoch = 0

    def lr_at(self, epoch):
        """The learning rate at position ``epoch`` (0 <= epoch <= total_epochs, may be fractional)."""
        raise NotImplementedError

    def set(self, epoch):
        """Set the optimizer's lr to ``lr_at(epoch)`` and return it; past total_epochs the
        rate stays at its last value (as PyTorch's PolynomialLR does)."""
        epoch = min(check_number(f"{type(self).__name__}: epoch", epoch), self.total_epochs)
        self.optimizer.lr = self.lr_at(epoch)
        return self.optimizer.lr

    def step(self):
        self.epoch += 1
        return self.set(self.epoch)


class CosineLR(_Schedule):
    """Cosine decay from base_lr to 0 over total_epochs (``cosine_lr``)."""

    def lr_at(self, epoch):
        return cosine_lr(self.base_lr, epoch, self.total_epochs)


class PolyLR(_Schedule):
    """Polynomial decay from base_lr to 0 over total_epochs (``poly_lr``)."""

    def __init__(self, optimizer, total_epochs, power=1.0, base_lr=None):
        super().__init__(optimizer, total_epochs, base_lr)
        self.power = check_number("PolyLR: power", power)

    def lr_at(self, epoch):
        return poly_lr(self.base_lr, epoch, self.total_epochs, self.power)


#: the schedules by the name the trainer's ``schedule`` option (--schedule) takes
SCHEDULES = {"cosine": CosineLR, "poly": PolyLR}
