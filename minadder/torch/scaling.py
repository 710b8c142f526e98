"""The adaptive learning-rate scaling of adder filters (Eq. 13) for PyTorch optimizers.

For a layer l whose filter gradient g_l has k elements,

    alpha_l = eta * sqrt(k) / ||g_l||_2        (Eq. 13; alpha_l = 0 when g_l = 0)

and the optimizer steps with alpha_l * g_l, as ``minadder.optim.SGD`` does with
adder_scaling="adaptive" (``minadder.optim.adaptive_scale``). ``scale_adder_grads`` applies
it to every adder layer of a module between ``loss.backward()`` and ``optimizer.step()``;
under DistributedDataParallel the gradients are all-reduced by then, so every process
computes the same alpha_l and the replicas stay identical.

``reference_scale`` is the same rescaling done inside backward, as the paper's reference
code does it (eta = 0.2 there): ``Adder2d(..., eta=0.2)``. Inside backward it sees one
process's gradient, before any all-reduce.

``check_eta`` is the one check of eta, for the layers, the functions and scale_adder_grads.
This module imports nothing else of minadder.torch (function.py uses ``reference_scale``,
layers.py re-exports ``adder_modules``), so the package's imports form a tree. An adder
layer is a module whose class says ``is_adder_layer = True``, as Adder2d and AdderLinear
do: a class attribute, which copies, pickles and ``.to()`` keep.
"""
import math
import numbers

import torch


def check_eta(op, eta, optional=True):
    """eta of Eq. 13 as a float (None stays None when ``optional``): a finite number >= 0;
    inf, NaN, negatives and True/False are refused with a message naming ``op`` and eta."""
    if eta is None and optional:
        return None
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not (math.isfinite(eta) and eta >= 0):
        raise ValueError(f"{op}: eta must be {'None or ' if optional else ''}a finite non-negative number, "
                         f"got {eta!r}")
    return float(eta)


def adaptive_factor(grad, eta):
    """alpha = eta * sqrt(k) / ||grad||_2 (Eq. 13) as a 0-d tensor of grad's dtype; 0 for a
    zero gradient. The norm is summed in float64, as minadder's adaptive_scale does; no
    host synchronisation (the factor stays on grad's device)."""
    norm = torch.linalg.vector_norm(grad, dtype=torch.float64)
    factor = torch.where(norm > 0, (eta * math.sqrt(grad.numel())) / norm, torch.zeros_like(norm))
    return factor.to(grad.dtype)


def reference_scale(grad, eta=0.2):
    """grad rescaled to the norm eta * sqrt(k): Eq. 13 applied inside backward, as the
    paper's reference code does (its eta is 0.2)."""
    return grad * adaptive_factor(grad, eta)


def adder_modules(module):
    """(name, layer) for every adder layer inside ``module`` (itself included): Adder2d,
    AdderLinear, and any module whose class sets ``is_adder_layer = True``."""
    return [(name, m) for name, m in module.named_modules() if getattr(type(m), "is_adder_layer", False)]


@torch.no_grad()
def scale_adder_grads(module, eta=0.1):
    """Multiply every adder filter gradient of ``module`` by its alpha_l (Eq. 13), in place.

    Call it after ``loss.backward()`` and before ``optimizer.step()`` (with DDP: after the
    backward, whose all-reduce has then finished). Returns {layer name: alpha_l}. Filters
    without a gradient are left alone.
    """
    eta = check_eta("scale_adder_grads", eta, optional=False)
    factors = {}
    for name, layer in adder_modules(module):
        grad = layer.weight.grad
        if grad is None:
            continue
        factors[name] = adaptive_factor(grad, eta)
        grad.mul_(factors[name])
    return factors
