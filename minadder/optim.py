"""SGD with momentum, Nesterov momentum and weight decay (SPEC section 5), and the
adaptive learning-rate scaling of adder filters (Eq. 12, 13); learning-rate schedules."""
import math

import numpy as np

from .tensor import no_grad

ADDER_SCALINGS = ("adaptive", "fixed", "none")


def adaptive_scale(grad, eta):
    """alpha_l = eta * sqrt(k) / ||g_l||_2 for a layer's filter gradient of k elements (Eq. 13).

    A zero gradient gets alpha = 0 (there is nothing to scale), never a division by zero.
    """
    norm = float(np.sqrt(np.sum(np.square(grad, dtype=np.float64))))
    return eta * math.sqrt(grad.size) / norm if norm > 0 else 0.0


class SGD:
    """Stochastic gradient descent, exactly SPEC section 5, per parameter p with gradient g:

        g <- alpha_l * g                 adder filters only (adder_scaling, Eq. 13)
        g <- g + weight_decay * p
        v <- momentum * v + g
        p <- p - lr * (g + momentum * v)   (nesterov)   or   p <- p - lr * v

    adder_scaling: "adaptive" (alpha_l of Eq. 13 with eta), "fixed" (alpha = adder_factor,
    the paper's ILR) or "none". Parameters whose ``is_adder`` is True are adder filters.
    """

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0,
                 adder_scaling="adaptive", eta=0.1, adder_factor=100.0):
        self.params = list(params)
        if not self.params:
            raise ValueError("SGD: got an empty parameter list")
        if lr < 0 or momentum < 0 or weight_decay < 0 or eta < 0:
            raise ValueError("SGD: lr, momentum, weight_decay and eta must be non-negative")
        if nesterov and momentum <= 0:
            raise ValueError("SGD: nesterov needs momentum > 0")
        if adder_scaling not in ADDER_SCALINGS:
            raise ValueError(f"SGD: adder_scaling must be one of {ADDER_SCALINGS}, got {adder_scaling!r}")
        self.lr, self.momentum, self.nesterov = lr, momentum, nesterov
        self.weight_decay, self.adder_scaling = weight_decay, adder_scaling
        self.eta, self.adder_factor = eta, adder_factor
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
        velocity = [None] * len(self.params)
        for key, value in state.items():
            if key.startswith("velocity."):
                i = int(key.split(".")[1])
                if i >= len(self.params) or np.shape(value) != self.params[i].shape:
                    raise ValueError(f"SGD.load_state_dict: {key} of shape {np.shape(value)} matches no parameter")
                velocity[i] = np.array(value, dtype=self.params[i].dtype)
        self.velocity = velocity
        self.lr = float(state["lr"])


# ============================================================================ schedules
def cosine_lr(base_lr, epoch, total_epochs):
    """gamma_e = gamma_0 * (1 + cos(pi * e / T)) / 2."""
    return base_lr * (1 + math.cos(math.pi * epoch / total_epochs)) / 2


def poly_lr(base_lr, epoch, total_epochs, power=1.0):
    """gamma_e = gamma_0 * (1 - e / T) ** power."""
    return base_lr * (1 - epoch / total_epochs) ** power


class _Schedule:
    """Sets ``optimizer.lr`` once per epoch: call ``step()`` at the end of each epoch."""

    def __init__(self, optimizer, total_epochs):
        if total_epochs < 1:
            raise ValueError(f"total_epochs must be at least 1, got {total_epochs}")
        self.optimizer, self.total_epochs = optimizer, total_epochs
        self.base_lr, self.epoch = optimizer.lr, 0

    def lr_at(self, epoch):
        raise NotImplementedError

    def step(self):
        self.epoch += 1
        self.optimizer.lr = self.lr_at(self.epoch)
        return self.optimizer.lr


class CosineLR(_Schedule):
    def lr_at(self, epoch):
        return cosine_lr(self.base_lr, epoch, self.total_epochs)


class PolyLR(_Schedule):
    def __init__(self, optimizer, total_epochs, power=1.0):
        super().__init__(optimizer, total_epochs)
        self.power = power

    def lr_at(self, epoch):
        return poly_lr(self.base_lr, epoch, self.total_epochs, self.power)
