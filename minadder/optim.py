"""SGD with momentum, Nesterov momentum and weight decay (the paper's training recipe,
Sec. 4) and the adaptive learning-rate scaling of adder filters (Eq. 12, 13). The
learning-rate schedules are in ``schedules.py`` and re-exported here.

Every hyper-parameter is checked where it is set, in the constructor and on assignment
(``opt.lr = -5`` raises), so a value that cannot work fails at once with its name, not
epochs later as a diverged or frozen run.
"""
import math

import numpy as np

from .checks import check_number
from .schedules import SCHEDULES, CosineLR, PolyLR, cosine_lr, poly_lr  # noqa: F401  (re-exported)
from .tensor import no_grad

ADDER_SCALINGS = ("adaptive", "fixed", "none")


def adaptive_scale(grad, eta):
    """alpha_l = eta * sqrt(k) / ||g_l||_2 for a layer's filter gradient of k elements (Eq. 13).

    A zero gradient gets alpha = 0 (there is nothing to scale), never a division by zero.
    """
    norm = float(np.sqrt(np.sum(np.square(grad, dtype=np.float64))))
    return eta * math.sqrt(grad.size) / norm if norm > 0 else 0.0


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
        g <- g + weight_decay * p        (binary_weight_decay for a BNN's latent weights)
        v <- momentum * v + g
        p <- p - lr * (g + momentum * v)   (nesterov)   or   p <- p - lr * v

    adder_scaling: "adaptive" (alpha_l of Eq. 13 with eta), "fixed" (alpha = adder_factor,
    the paper's ILR) or "none". Parameters whose ``is_adder`` is True are adder filters.
    lr, momentum, weight_decay, eta and adder_factor are checked against ``RANGES``.
    binary_weight_decay (None: weight_decay) is the decay of the parameters whose
    ``is_binary`` is True, the real weights behind a binary layer's signs: only their signs
    act, so decay only shrinks them, and at |w| << lr * |g| every step flips signs at random.
    """

    lr = _checked_property("lr")
    momentum = _checked_property("momentum")
    weight_decay = _checked_property("weight_decay")
    eta = _checked_property("eta")
    adder_factor = _checked_property("adder_factor")

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0,
                 adder_scaling="adaptive", eta=0.1, adder_factor=100.0, binary_weight_decay=None):
        self.params = list(params)
        if not self.params:
            raise ValueError("SGD: got an empty parameter list")
        if len({id(p) for p in self.params}) < len(self.params):     # each would be stepped twice
            raise ValueError("SGD: a parameter is given twice (Module.parameters() lists a shared one once)")
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        if binary_weight_decay is not None:
            check_number("SGD: binary_weight_decay", binary_weight_decay, *RANGES["weight_decay"])
        self.binary_weight_decay = binary_weight_decay
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
                decay = self.weight_decay
                if getattr(p, "is_binary", False) and self.binary_weight_decay is not None:
                    decay = self.binary_weight_decay
                if decay:
                    g = g + p.data.dtype.type(decay) * p.data
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
