"""Check a Function's backward against central differences.

For a function f of some Tensors, pick a fixed random projection R of its output and
compare d<f, R>/d(input) from ``backward`` with the central difference

    (<f(x + eps e_i), R> - <f(x - eps e_i), R>) / (2 eps)

for every element i of every input. Use float64 inputs: float32 rounding swamps the
difference quotient.
"""
import numpy as np

from .tensor import Tensor


def numerical_grad(fn, inputs, projection, eps=1e-6):
    """Central-difference gradient of <fn(*inputs), projection> with respect to each input."""
    grads = []
    for t in inputs:
        g = np.zeros_like(t.data)
        flat, gflat = t.data.reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            saved = flat[i]
            flat[i] = saved + eps
            plus = np.sum(fn(*inputs).data * projection)
            flat[i] = saved - eps
            minus = np.sum(fn(*inputs).data * projection)
            flat[i] = saved
            gflat[i] = (plus - minus) / (2 * eps)
        grads.append(g)
    return grads


def analytic_grad(fn, inputs, projection):
    """Gradient of <fn(*inputs), projection> from reverse-mode autodiff."""
    for t in inputs:
        t.grad = None
    out = fn(*inputs)
    out.backward(projection.astype(out.dtype))
    return [np.zeros_like(t.data) if t.grad is None else t.grad for t in inputs]


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, seed=0):
    """Raise AssertionError if backward and central differences disagree; return True otherwise.

    fn: a function of the Tensors in ``inputs`` (which must require grad) returning a Tensor.
    """
    inputs = [t if isinstance(t, Tensor) else Tensor(t, requires_grad=True) for t in inputs]
    out = fn(*inputs)
    projection = np.random.default_rng(seed).standard_normal(out.shape)
    analytic = analytic_grad(fn, inputs, projection)
    numeric = numerical_grad(fn, inputs, projection, eps)
    for i, (a, n) in enumerate(zip(analytic, numeric)):
        if not np.allclose(a, n, atol=atol, rtol=rtol):
            worst = tuple(int(i) for i in np.unravel_index(np.argmax(np.abs(a - n)), a.shape))
            raise AssertionError(
                f"input {i} of shape {a.shape}: analytic and numerical gradients differ; "
                f"worst at {worst}: {a[worst]} vs {n[worst]}")
    return True
