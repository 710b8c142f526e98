"""Proposition 2 (proofs/proposition2.md): full-precision descent f <- f - alpha (f - x)
satisfies f_j - x = (1 - alpha)^j (f0 - x), so it converges iff 0 < alpha < 2."""
import math
from fractions import Fraction

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from minadder.paper import propositions as prop

SETTINGS = settings(deadline=None, max_examples=60)
STEPS = 25


def rationals(lo, hi, max_den=30):
    return st.builds(Fraction, st.integers(lo * max_den, hi * max_den), st.integers(1, max_den))


def sign(z):
    return (z > 0) - (z < 0)


@SETTINGS
@given(rationals(-10, 10), rationals(-10, 10), rationals(-1, 4))
def test_closed_form_holds_exactly_at_every_step(f0, x, alpha):
    path = prop.full_descent(f0, x, alpha, STEPS)
    for j, f in enumerate(path):
        assert f - x == (1 - alpha) ** j * (f0 - x)
        assert f == prop.full_closed_form(f0, x, alpha, j)


@SETTINGS
@given(rationals(-10, 10), rationals(-10, 10), rationals(0, 4))
def test_each_regime_of_the_table(f0, x, alpha):
    assume(f0 != x and alpha > 0)
    e = [f - x for f in prop.full_descent(f0, x, alpha, STEPS)]
    regime = prop.full_regime(alpha)
    if alpha < 1:
        assert regime == "monotone"
        assert all(sign(ej) == sign(e[0]) for ej in e)                  # never crosses x
        assert all(abs(b) < abs(a) for a, b in zip(e, e[1:]))           # strictly closer
        steps = [b - a for a, b in zip(e, e[1:])]
        assert all(sign(d) == -sign(e[0]) for d in steps)               # f strictly monotone
    elif alpha == 1:
        assert regime == "one step" and all(ej == 0 for ej in e[1:])
    elif alpha < 2:
        assert regime == "alternating"
        assert all(sign(b) == -sign(a) for a, b in zip(e, e[1:]))       # crosses every step
        assert all(abs(b) < abs(a) for a, b in zip(e, e[1:]))
    elif alpha == 2:
        assert regime == "oscillates"
        assert all(f == (f0 if j % 2 == 0 else 2 * x - f0)
                   for j, f in enumerate(prop.full_descent(f0, x, alpha, STEPS)))
    else:
        assert regime == "diverges"
        assert all(sign(b) == -sign(a) for a, b in zip(e, e[1:]))
        assert all(abs(b) == (alpha - 1) * abs(a) > abs(a) for a, b in zip(e, e[1:]))


@SETTINGS
@given(rationals(-10, 10), rationals(-10, 10), st.sampled_from([Fraction(2), Fraction(5, 2), Fraction(3)]))
def test_no_convergence_for_alpha_at_least_2_unless_started_at_x(f0, x, alpha):
    e_last = prop.full_descent(f0, x, alpha, STEPS)[-1] - x
    if f0 == x:
        assert e_last == 0
    else:
        assert abs(e_last) >= abs(f0 - x)


@SETTINGS
@given(rationals(-10, 10), rationals(0, 10), st.integers(1, 99).map(lambda n: Fraction(n, 100)))
def test_paper_inequality_corrected_f_climbs_towards_x_from_below(f0, gap, alpha):
    """Eq. 25 for 0 < alpha < 1 and f^j < x: f^{j+1} < x and f^{j+1} > f^j (the paper prints <)."""
    assume(gap > 0)   # x above f0 by construction, alpha in (0, 1): almost nothing is filtered
    x = f0 + gap
    path = prop.full_descent(f0, x, alpha, STEPS)
    for a, b in zip(path, path[1:]):
        assert a < b < x


@SETTINGS
@given(st.integers(1, 64), st.floats(0.01, 1.99), st.integers(0, 2**31 - 1))
def test_vector_rate_is_the_same_in_every_norm_and_dimension(m, alpha, seed):
    rng = np.random.default_rng(seed)
    x, f0 = rng.standard_normal(m), rng.standard_normal(m)
    path = prop.full_descent(f0, x, alpha, STEPS)
    q = abs(1 - alpha)
    roundoff = 1e-13 * m        # each step rounds f - alpha (f - x) at about 1e-16 |f|
    for j in range(STEPS + 1):
        for order in (1, 2, np.inf):
            np.testing.assert_allclose(np.linalg.norm(path[j] - x, order),
                                       q ** j * np.linalg.norm(f0 - x, order), rtol=1e-9, atol=roundoff)


@SETTINGS
@given(st.floats(0.05, 1.95), st.floats(1e-8, 1e-2), st.integers(0, 2**31 - 1))
def test_steps_to_reach_a_tolerance(alpha, eps, seed):
    assume(abs(alpha - 1) > 1e-3)
    rng = np.random.default_rng(seed)
    x, f0 = rng.standard_normal(), rng.standard_normal()
    assume(abs(f0 - x) > 1e-3)
    j = math.ceil(math.log(eps / abs(f0 - x)) / math.log(abs(1 - alpha)))
    path = prop.full_descent(f0, x, alpha, max(j, 0) + 1)
    assert abs(path[max(j, 0)] - x) <= eps * (1 + 1e-9)
    if j >= 1:
        assert abs(path[j - 1] - x) > eps * (1 - 1e-9)
