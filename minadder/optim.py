"""SGD with momentum, Nesterov momentum and weight decay (the paper's training recipe,
Sec. 4), the adaptive learning-rate scaling of adder filters (Eq. 12, 13), and the
learning-rate schedules (cosine decay, as in SGDR, the paper's ref. [20]; polynomial decay).

Every hyper-parameter is checked where it is set, in the constructor and on assignment
(``opt.lr = -5`` raises), so a value that cannot work fails at once with its name, not
epochs later as a diverged or frozen run.
"""
import math
import numbers

import numpy as np

from .tensor import no_grad

ADDER_SCALINGS = ("adaptive", "fixed", "none")


def adaptive_scale(grad, eta):
    """alpha_l = eta * sqrt(k) / ||g_l||_2 for a layer's filter gradient of k elements (Eq. 13).

    A zero gradient gets alpha = 0 (there is nothing to scale), never a division by zero.
    """
    norm = float(np.sqrt(np.sum(np.square(grad, dtype=np.float64))))
    return eta * math.sqrt(grad.size) / norm if norm > 0 else 0.0


def check_number(name, value, low=0.0, high=math.inf, low_open=False, high_open=False):
    """Return ``value`` as a float if it is a finite real number in the interval from
    ``low`` to ``high`` (each end closed unless ``*_open``); else raise a ValueError that
    names it, e.g. "momentum must be in [0, 1); got 1.5"."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        if high == math.inf:
            wanted = f"a finite number {'>' if low_open else '>='} {low:g}"
        else:
            wanted = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be {wanted}; got {value!r}")
    return float(value)


#: name -> (low, high, low_open, high_open): the values of each hyper-parameter that can work.
#: momentum >= 1 makes the velocity grow without bound; eta = 0 freezes the adder filters.
RANGES = {
    "lr": (0.0, math.inf, False, False),
    "momentum": (0.0, 1.0, False, True),
    "weight_decay": (0.0, math.inf, False, False),
    "eta": (0.0, math.inf, True, False),
    "adder_factor": (0.0, math.inf, True, False),
}


def _checked_property(name):
    """A property that stores the value in ``_name`` after ``check_number`` with RANGES[name]."""
    low, high, low_open, high_open = RANGES[name]

    def read(self):
        return getattr(self, "_" + name)

    def write(self, value):
        setattr(self, "_" + name, check_number(f"SGD: {name}", value, low, high, low_open, high_open))

    return property(read, write, doc=f"{name}, checked on every assignment (see optim.RANGES)")


class SGD:
    """Stochastic gradient descent, per parameter p with gradient g:

        g <- alpha_l * g                 adder filters only (adder_scaling, Eq. 13)
        g <- g + weight_decay * p
        v <- momentum * v + g
        p <- p - lr * (g + momentum * v)   (nesterov)   or   p <- p - lr * v

    adder_scaling: "adaptive" (alpha_l of Eq. 13 with eta), "fixed" (alpha = adder_factor,
    the paper's ILR) or "none". Parameters whose ``is_adder`` is True are adder filters.
    lr, momentum, weight_decay, eta and adder_factor are checked against ``RANGES``.
    """

    lr = _checked_property("lr")
    momentum = _checked_property("momentum")
    weight_decay = _checked_property("weight_decay")
    eta = _checked_property("eta")
    adder_factor = _checked_property("adder_factor")

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0,
                 adder_scaling="adaptive", eta=0.1, adder_factor=100.0):
        self.params = list(params)
        if not self.params:
            raise ValueError("SGD: got an empty parameter list")
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.eta, self.adder_factor = eta, adder_factor
        if nesterov and self.momentum <= 0:
            raise ValueError("SGD: nesterov needs momentum > 0")
        if adder_scaling not in ADDER_SCALINGS:
            raise ValueError(f"SGD: adder_scaling must be one of {ADDER_SCALINGS}, got {adder_scaling!r}")
        self.nesterov, self.adder_scaling = nesterov, adder_scaling
        self.velocity = [None] * len(self.params)

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def scaled_grad(self, p):
        """The gradient after the adder learning-rate scaling (the identity for other parameters)."""
        if not getattr(p, "is_adder", False) or self.adder_scaling == "none":
            return p.grad
        if self.adder_scaling == "fixed":
            return p.grad * p.grad.dtype.type(self.adder_factor)
        return p.grad * p.grad.dtype.type(adaptive_scale(p.grad, self.eta))

    def step(self):
        with no_grad():
            for i, p in enumerate(self.params):
                if p.grad is None:
                    continue
                g = self.scaled_grad(p)
                if self.weight_decay:
                    g = g + p.data.dtype.type(self.weight_decay) * p.data
                if self.momentum:
                    mu = p.data.dtype.type(self.momentum)
                    v = g.copy() if self.velocity[i] is None else mu * self.velocity[i] + g
                    self.velocity[i] = v
                    g = g + mu * v if self.nesterov else v
                p.data -= p.data.dtype.type(self.lr) * g

    def state_dict(self):
        """lr and the momentum buffers, as arrays (for np.savez checkpoints)."""
        state = {"lr": np.asarray(self.lr, dtype=np.float64)}
        for i, v in enumerate(self.velocity):
            if v is not None:
                state[f"velocity.{i}"] = v
        return state

    def load_state_dict(self, state):
        """Restore lr and the momentum buffers; every entry is checked before anything changes."""
        if "lr" not in state:
            raise ValueError("SGD.load_state_dict: no 'lr' entry")
        velocity = [None] * len(self.params)
        for key, value in state.items():
            if key.startswith("velocity."):
                index = key.split(".")[1]
                i = int(index) if index.isdigit() else len(self.params)
                if i >= len(self.params) or np.shape(value) != self.params[i].shape:
                    raise ValueError(f"SGD.load_state_dict: {key} of shape {np.shape(value)} matches no parameter")
                velocity[i] = np.array(value, dtype=self.params[i].dtype)
        self.lr = float(state["lr"])
        self.velocity = velocity


# ============================================================================ schedules
def cosine_lr(base_lr, epoch, total_epochs):
    """gamma_e = gamma_0 * (1 + cos(pi * e / T)) / 2."""
    return base_lr * (1 + math.cos(math.pi * epoch / total_epochs)) / 2


def poly_lr(base_lr, epoch, total_epochs, power=1.0):
    """gamma_e = gamma_0 * (1 - e / T) ** power."""
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
        """Set the optimizer's lr to ``lr_at(epoch)`` and return it."""
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
        self.power = power

    def lr_at(self, epoch):
        return poly_lr(self.base_lr, epoch, self.total_epochs, self.power)


#: the schedules by the name the trainer's ``schedule`` option (--schedule) takes
SCHEDULES = {"cosine": CosineLR, "poly": PolyLR}
