"""Proposition 1 (proofs/proposition1.md): sign-gradient descent on |x - f| reaches x iff
(x - f0) / alpha is an integer, and otherwise ends in a two-value oscillation.

"Exactly" is checked in exact rational arithmetic (fractions.Fraction); floating-point
checks use dyadic values (k / 2^p), for which every step is exact in float64.
"""
import math
from fractions import Fraction

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import minadder as ma
from minadder.paper import propositions as prop

SETTINGS = settings(deadline=None, max_examples=60)


def rationals(lo, hi, max_den=40):
    return st.builds(Fraction, st.integers(lo * max_den, hi * max_den), st.integers(1, max_den))


positive_alpha = st.builds(Fraction, st.integers(1, 120), st.integers(1, 40))   # (0, 120]


def frac_part(r):
    return r - math.floor(r)


@SETTINGS
@given(rationals(-10, 10), rationals(-10, 10), positive_alpha)
def test_walk_then_oscillation_exactly_as_proved(f0, x, alpha):
    r = (x - f0) / alpha
    n, low, high = prop.sign_limit(f0, x, alpha)
    assert n == math.floor(abs(r))
    path = prop.sign_descent(f0, x, alpha, n + 8)

    # part 1: a full step of alpha towards x at each of the first n steps
    s = (r > 0) - (r < 0)
    for j in range(n + 1):
        assert path[j] == f0 + j * alpha * s
        assert abs(path[j] - x) == alpha * (abs(r) - j)

    tail = path[n:]
    if r.denominator == 1:
        # part 2: exact convergence after |r| steps, and it stays
        assert n == abs(r)
        assert all(f == x for f in tail)
        assert low == high == x
    else:
        # part 3: alternates between L and H for ever (the map is deterministic, so
        # f_{n+2} == f_n already implies period 2 for all later steps)
        assert low == x - alpha * frac_part(r) and high == x + alpha * (1 - frac_part(r))
        assert low < x < high and high - low == alpha
        assert tail[0] == (low if f0 < x else high)
        for a, b in zip(tail, tail[1:]):
            assert {a, b} == {low, high}
        errors = {abs(f - x) for f in tail}
        assert errors == {alpha * frac_part(r), alpha * (1 - frac_part(r))}
        assert all(0 < e < alpha for e in errors)
        assert all(f != x for f in path)            # never reaches the optimum
        assert all(abs(f - x) > alpha for f in path[:n])


@SETTINGS
@given(rationals(-10, 10), positive_alpha, st.integers(-25, 25))
def test_integer_ratio_converges_in_exactly_abs_k_steps(f0, alpha, k):
    x = f0 + k * alpha
    path = prop.sign_descent(f0, x, alpha, abs(k) + 5)
    assert all(f != x for f in path[:abs(k)])
    assert all(f == x for f in path[abs(k):])


@SETTINGS
@given(rationals(-10, 10), positive_alpha, st.integers(-25, 25), st.fractions(0, 1, max_denominator=50))
def test_non_integer_ratio_never_converges(f0, alpha, k, theta):
    assume(0 < theta < 1)
    x = f0 + (k + theta) * alpha
    n, low, high = prop.sign_limit(f0, x, alpha)
    path = prop.sign_descent(f0, x, alpha, n + 40)
    assert all(f != x for f in path)
    assert path[-1] in (low, high) and path[-2] in (low, high) and path[-1] != path[-2]
    # the error averaged over one period is alpha / 2, whatever f0 and x
    assert (abs(path[-1] - x) + abs(path[-2] - x)) / 2 == alpha / 2


dyadic = st.integers(-2**10, 2**10).map(lambda k: k / 2**6)     # exact in float64


@SETTINGS
@given(st.integers(1, 40), st.integers(0, 6), st.data())
def test_vector_converges_iff_every_coordinate_ratio_is_integer(m, p, data):
    """Part 4 with float64 arrays: alpha = 2^-p, every value a multiple of 2^-8."""
    alpha = 2.0 ** -p
    f0 = np.array(data.draw(st.lists(dyadic, min_size=m, max_size=m)))
    r = np.array(data.draw(st.lists(st.integers(-64, 64), min_size=m, max_size=m))) / 4.0
    x = f0 + r * alpha                         # r a multiple of 1/4: exact, and integer or not
    integer = r == np.round(r)
    steps = int(np.floor(np.abs(r)).max())
    path = prop.sign_descent(f0, x, alpha, steps + 6)
    tail = path[steps:]
    converged = np.all(tail == x, axis=0)
    np.testing.assert_array_equal(converged, integer)
    assert np.all(tail[2:] == tail[:-2])                           # period 2 from T on
    assert np.all(np.abs(tail[:, ~integer] - x[~integer]) < alpha)  # within alpha of x
    errors = np.abs(tail - x).sum(axis=1)
    np.testing.assert_array_equal(errors[1:] + errors[:-1], alpha * (~integer).sum())
    assert bool(np.all(path[-1] == x)) == bool(integer.all())


@settings(deadline=None, max_examples=20)
@given(st.integers(1, 12), st.integers(0, 4), st.integers(0, 2**31 - 1), st.sampled_from(["sign", "full"]))
def test_engine_adder_layer_follows_the_same_iteration(m, p, seed, mode):
    """Training one adder filter on one input with SGD (no lr scaling) is exactly (S) in
    sign mode and the full-precision step of Proposition 2 in full mode: the loss
    -Y = sum |x - f| has gradient sgn(f - x) (sign, Eq. 15) or f - x (full, Eq. 16)."""
    rng = np.random.default_rng(seed)
    alpha = 2.0 ** -p
    x = (rng.integers(-64, 64, size=(1, m)) / 8).astype(np.float32)
    f0 = (rng.integers(-64, 64, size=(1, m)) / 8).astype(np.float32)
    layer = ma.nn.AdderLinear(m, 1, grad_mode=mode)
    layer.weight.data[...] = f0
    opt = ma.optim.SGD(layer.parameters(), lr=alpha, adder_scaling="none")
    step = prop.sign_step if mode == "sign" else prop.full_step
    expected = f0.astype(np.float64)
    for _ in range(12):
        opt.zero_grad()
        loss = -ma.functional.sum(layer(ma.Tensor(x)))
        loss.backward()
        opt.step()
        expected = step(expected, x.astype(np.float64), alpha)
        if mode == "sign":       # dyadic values: float32 is exact
            np.testing.assert_array_equal(layer.weight.data, expected)
        else:
            np.testing.assert_allclose(layer.weight.data, expected, rtol=0, atol=1e-4)
