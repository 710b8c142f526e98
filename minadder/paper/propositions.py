"""Propositions 1 and 2 (appendix A): gradient descent on |x - f| with the sign and the full-precision gradient.

Each iteration comes with what its proposition predicts for it.

proofs/proposition1.md and proofs/proposition2.md prove them; tests/test_proofs_proposition*.py
check these functions against the proofs, and notebooks/propositions.ipynb plots them.
Every function works on Python numbers, ``fractions.Fraction`` (exact arithmetic, which
the tests use to check "exactly") and NumPy arrays (coordinate by coordinate).
"""
import math

import numpy as np


def sgn(z):
    """sgn(z) in {-1, 0, +1}, elementwise for arrays; exact for Fractions."""
    if isinstance(z, (np.ndarray, np.generic)):
        return np.sign(z)
    return (z > 0) - (z < 0)


def sign_step(f, x, alpha):
    """One step of gradient descent on |x - f| with the sign gradient (Eq. 15):
    f <- f - alpha * sgn(f - x)."""
    return f - alpha * sgn(f - x)


def full_step(f, x, alpha):
    """One step with the full-precision gradient (Eq. 16, 24): f <- f - alpha * (f - x)."""
    return f - alpha * (f - x)


def iterate(step, f0, x, alpha, steps):
    """[f_0, f_1, ..., f_steps] for f_{j+1} = step(f_j, x, alpha)."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    path = [f0]
    for _ in range(steps):
        path.append(step(path[-1], x, alpha))
    return path


def sign_descent(f0, x, alpha, steps):
    """The sign-gradient iterates f_0..f_steps (Proposition 1); arrays give an array (steps+1, ...)."""
    path = iterate(sign_step, f0, x, alpha, steps)
    return np.stack(path) if isinstance(f0, np.ndarray) else path


def full_descent(f0, x, alpha, steps):
    """The full-precision iterates f_0..f_steps (Proposition 2)."""
    path = iterate(full_step, f0, x, alpha, steps)
    return np.stack(path) if isinstance(f0, np.ndarray) else path


def sign_limit(f0, x, alpha):
    """What Proposition 1 predicts for f <- f - alpha sgn(f - x), for scalars (use Fractions
    for exact answers): (t, low, high).

    With r = (x - f0) / alpha, the iterates walk along the lattice f0 + alpha * Z towards x,
    one lattice point per step, and reach the set {low, high} at step t = floor(|r|):

        low  = f0 + alpha * floor(r) = x - alpha * {r}
        high = f0 + alpha * ceil(r)  = x + alpha * (1 - {r})        ({r} = r - floor(r))

    If r is an integer, low == high == x and f_j = x for every j >= t. Otherwise f
    alternates between low and high for ever, from step t on.
    """
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    r = (x - f0) / alpha
    return math.floor(abs(r)), f0 + alpha * math.floor(r), f0 + alpha * math.ceil(r)


def full_closed_form(f0, x, alpha, j):
    """Proposition 2: f_j = x + (1 - alpha)^j (f0 - x)."""
    return x + (1 - alpha) ** j * (f0 - x)


def full_regime(alpha):
    """The behaviour Proposition 2 predicts for f0 != x, from |1 - alpha| and the sign of 1 - alpha."""
    if alpha <= 0:
        return "diverges" if alpha < 0 else "stays"
    if alpha < 1:
        return "monotone"
    if alpha == 1:
        return "one step"
    if alpha < 2:
        return "alternating"
    return "oscillates" if alpha == 2 else "diverges"
