"""Measurements on a network for Table 1, Eq. 10-11 and Fig. 4: batch-norm inputs, sigma_B, gradient norms, fits.

notebooks/adaptive_lr.ipynb (Table 1, sigma_B) and notebooks/what_it_learns.ipynb (Fig. 4)
use them; tests/test_experiments.py checks them.
"""
import math

import numpy as np

from .. import functional as F
from .. import nn
from ..tensor import Tensor, no_grad


def batchnorm_inputs(model, x):
    """Run ``model`` on the batch ``x`` (in its mode, no graph) and return
    {batch-norm module name: its input array}, recorded by forward hooks: the
    pre-activations whose per-channel standard deviation sigma_B divides the gradient
    (Eq. 11). The running statistics are restored afterwards."""
    seen, handles = {}, []
    saved = model.state_dict()

    def record(name):
        def hook(module, inputs, output):
            seen[name] = np.array(inputs[0].data, copy=True)
        return hook

    for name, module in model.named_modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            handles.append(module.register_forward_hook(record(name)))
    try:
        with no_grad():
            model(Tensor(x))
    finally:
        for handle in handles:
            handle.remove()
        model.load_state_dict(saved)
    return seen


def channel_std(pre_activation):
    """Per-channel standard deviation over the batch (and positions): sigma_B of Eq. 10."""
    a = np.asarray(pre_activation, dtype=np.float64)
    axes = (0,) if a.ndim == 2 else (0, 2, 3)
    return a.std(axis=axes)


def filter_grad_norms(model, x, y, layers):
    """Table 1: the l2-norm of each named layer's filter gradient after one forward and
    backward pass of the cross-entropy loss on (x, y), before any update."""
    model.train()
    model.zero_grad()
    F.cross_entropy(model(Tensor(x)), y).backward()
    modules = dict(model.named_modules())
    norms = {name: float(np.linalg.norm(modules[name].weight.grad)) for name in layers}
    model.zero_grad()
    return norms


def fit_gaussian(w):
    """Maximum-likelihood N(mu, sigma^2): (mu, sigma, mean log-density per value)."""
    w = np.asarray(w, dtype=np.float64).ravel()
    mu, sigma = w.mean(), w.std()
    return mu, sigma, float(-0.5 * math.log(2 * math.pi * sigma ** 2) - 0.5)


def fit_laplace(w):
    """Maximum-likelihood Laplace(m, b): m the median, b the mean |w - m|;
    returns (m, b, mean log-density per value)."""
    w = np.asarray(w, dtype=np.float64).ravel()
    m = float(np.median(w))
    b = float(np.abs(w - m).mean())
    return m, b, float(-math.log(2 * b) - 1)
