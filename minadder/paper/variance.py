"""Eq. 8, 9 (output variance of a convolution and of an adder layer) and Eq. 11 (batch norm's gradient scale).

Eq. 11: batch norm's backward scales a gradient by gamma / sigma_B, which is why an adder
layer, whose sigma_B is large, gets small gradients and needs the adaptive learning rate.

proofs/variance.md derives them, with the corrected constant of Eq. 9; tests/test_proofs_variance.py
checks them by Monte Carlo and against the engine; notebooks/adaptive_lr.ipynb plots them.
"""
import math

import numpy as np


# ============================================================================ Eq. 8 and 9
def conv_output_variance(d, c_in, var_x, var_f):
    """Eq. 8: Var[Y_CNN] = d^2 c_in Var[X] Var[F] (independent, zero-mean X and F)."""
    return d * d * c_in * var_x * var_f


def adder_output_variance(d, c_in, var_x, var_f):
    """Eq. 9 with the right constant: Var[Y_adder] = (1 - 2/pi) d^2 c_in (Var[X] + Var[F])
    for independent zero-mean normal X and F (Var|Z| = (1 - 2/pi) s^2 for Z ~ N(0, s^2))."""
    return (1 - 2 / math.pi) * d * d * c_in * (var_x + var_f)


def adder_output_variance_as_printed(d, c_in, var_x, var_f):
    """Eq. 9 as the paper prints it, with sqrt(pi/2) where (1 - 2/pi) belongs."""
    return math.sqrt(math.pi / 2) * d * d * c_in * (var_x + var_f)


def folded_normal_moments(mu, var):
    """E|Z| and Var|Z| for Z ~ N(mu, var): the moments of one adder term |X - f| with a
    fixed filter value f (mu = -f). Vectorised over mu."""
    mu = np.asarray(mu, dtype=np.float64)
    s = math.sqrt(var)
    erf = np.vectorize(math.erf)
    mean = s * math.sqrt(2 / math.pi) * np.exp(-mu ** 2 / (2 * var)) + mu * erf(mu / (s * math.sqrt(2)))
    return mean, mu ** 2 + var - mean ** 2


def adder_output_variance_fixed_filter(weight, var_x):
    """Var over inputs X ~ N(0, var_x) of one adder output -sum_k |X_k - w_k| for fixed
    filter values w: the sum of the folded-normal variances. This is what batch norm sees
    per channel (the filter does not change within a batch); averaged over w ~ N(0, var_f)
    it is smaller than Eq. 9 by Var_w[E|X - w|] per term (the law of total variance)."""
    return float(folded_normal_moments(-np.ravel(weight), var_x)[1].sum())


# ============================================================================ Eq. 11
def batch_norm_grad(x, grad_y, gamma=1.0, eps=1e-5):
    """The gradient of batch norm (Eq. 10) with respect to x for one channel, written as

        dL/dx = gamma / sigma_B * P(dL/dy),   P g = g - mean(g) - xhat * mean(g * xhat)

    P is the orthogonal projection that removes the components of g along the constant
    vector and along xhat (they are orthogonal, and |xhat|^2 = m), so |dL/dx| <= gamma |g| / sigma_B.
    x, grad_y: 1-D arrays of the m values of one channel over the batch (and positions).
    """
    x, g = np.asarray(x, dtype=np.float64), np.asarray(grad_y, dtype=np.float64)
    sigma = math.sqrt(x.var() + eps)
    xhat = (x - x.mean()) / sigma
    return gamma / sigma * (g - g.mean() - xhat * (g * xhat).mean())
