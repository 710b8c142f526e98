"""SGD updates against hand-computed values (SPEC section 3 and 5)."""
import math

import numpy as np
import pytest

import minadder as ma
from minadder.nn import Parameter
from minadder.optim import SGD, CosineLR, PolyLR, adaptive_scale, cosine_lr, poly_lr


def param(values, grad, is_adder=False):
    p = Parameter(np.array(values, dtype=np.float64), is_adder=is_adder)
    p.grad = np.array(grad, dtype=np.float64)
    return p


def test_plain_sgd():
    p = param([1.0, 2.0], [0.5, -1.0])
    SGD([p], lr=0.1).step()
    np.testing.assert_allclose(p.data, [1.0 - 0.05, 2.0 + 0.1])


def test_weight_decay_is_added_to_the_gradient():
    p = param([1.0, 2.0], [0.5, -1.0])
    SGD([p], lr=0.1, weight_decay=0.01).step()
    np.testing.assert_allclose(p.data, [1 - 0.1 * (0.5 + 0.01), 2 - 0.1 * (-1 + 0.02)])


def test_momentum_over_two_steps():
    p = param([1.0], [1.0])
    opt = SGD([p], lr=0.1, momentum=0.9)
    opt.step()                         # v = 1,           p = 1 - 0.1
    p.grad = np.array([2.0])
    opt.step()                         # v = 0.9 + 2 = 2.9, p = 0.9 - 0.29
    np.testing.assert_allclose(p.data, [0.9 - 0.29])


def test_nesterov_over_two_steps():
    p = param([1.0], [1.0])
    opt = SGD([p], lr=0.1, momentum=0.9, nesterov=True)
    opt.step()                         # v = 1,   p -= 0.1 * (1 + 0.9)
    assert p.data[0] == pytest.approx(1 - 0.19)
    p.grad = np.array([2.0])
    opt.step()                         # v = 2.9, p -= 0.1 * (2 + 0.9 * 2.9)
    assert p.data[0] == pytest.approx(1 - 0.19 - 0.1 * (2 + 2.61))


def test_adaptive_scaling_of_adder_filters_eq13():
    g = np.array([3.0, 4.0, 0.0, 0.0])            # ||g|| = 5, k = 4
    p = param(np.zeros(4), g, is_adder=True)
    q = param(np.zeros(4), g)                      # not an adder filter: unscaled
    SGD([p, q], lr=0.1, eta=0.2).step()
    alpha = 0.2 * math.sqrt(4) / 5
    np.testing.assert_allclose(p.data, -0.1 * alpha * g)
    np.testing.assert_allclose(q.data, -0.1 * g)


def test_scaling_comes_before_weight_decay_and_momentum():
    g = np.array([0.0, 2.0])                       # ||g|| = 2, k = 2, alpha = 0.1*sqrt(2)/2
    p = param([1.0, 1.0], g, is_adder=True)
    opt = SGD([p], lr=0.5, momentum=0.9, nesterov=True, weight_decay=0.1, eta=0.1)
    opt.step()
    alpha = 0.1 * math.sqrt(2) / 2
    d = alpha * g + 0.1 * np.array([1.0, 1.0])     # scaled gradient + weight decay
    np.testing.assert_allclose(p.data, 1 - 0.5 * (d + 0.9 * d))


def test_fixed_and_no_scaling():
    g = [1.0, -1.0]
    p = param([0.0, 0.0], g, is_adder=True)
    SGD([p], lr=0.01, adder_scaling="fixed", adder_factor=100).step()
    np.testing.assert_allclose(p.data, [-1.0, 1.0])
    q = param([0.0, 0.0], g, is_adder=True)
    SGD([q], lr=0.01, adder_scaling="none").step()
    np.testing.assert_allclose(q.data, [-0.01, 0.01])


def test_zero_gradient_gives_no_nan():
    p = param([1.0, 2.0], [0.0, 0.0], is_adder=True)
    SGD([p], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.0).step()
    assert np.all(np.isfinite(p.data))
    np.testing.assert_array_equal(p.data, [1.0, 2.0])
    assert adaptive_scale(np.zeros(3), 0.1) == 0.0


def test_parameters_without_grad_are_skipped():
    p = param([1.0], [1.0])
    p.grad = None
    SGD([p], lr=1.0).step()
    assert p.data[0] == 1.0


def test_float32_parameters_stay_float32():
    p = Parameter(np.ones(3, np.float32), is_adder=True)
    p.grad = np.ones(3, np.float32)
    SGD([p], lr=0.1, momentum=0.9, weight_decay=1e-4).step()
    assert p.data.dtype == np.float32


def test_zero_grad_clears():
    p = param([1.0], [1.0])
    opt = SGD([p], lr=0.1)
    opt.zero_grad()
    assert p.grad is None


def test_state_dict_round_trip_restores_momentum():
    p = param([1.0, 2.0], [1.0, 1.0])
    opt = SGD([p], lr=0.1, momentum=0.9)
    opt.step()
    q = param([1.0, 2.0], [1.0, 1.0])
    opt2 = SGD([q], lr=0.5, momentum=0.9)
    opt2.load_state_dict(opt.state_dict())
    assert opt2.lr == 0.1
    np.testing.assert_array_equal(opt2.velocity[0], opt.velocity[0])
    with pytest.raises(ValueError, match="velocity.0"):
        SGD([param([1.0], [1.0])], lr=0.1).load_state_dict(opt.state_dict())


@pytest.mark.parametrize("kwargs, match", [
    (dict(lr=-1), "non-negative"), (dict(lr=0.1, nesterov=True), "nesterov"),
    (dict(lr=0.1, adder_scaling="big"), "adder_scaling"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SGD([param([1.0], [1.0])], **kwargs)


def test_schedules():
    assert cosine_lr(0.1, 0, 10) == pytest.approx(0.1)
    assert cosine_lr(0.1, 5, 10) == pytest.approx(0.05)
    assert cosine_lr(0.1, 10, 10) == pytest.approx(0.0)
    assert poly_lr(0.1, 5, 10, power=2) == pytest.approx(0.1 * 0.25)
    opt = SGD([param([1.0], [1.0])], lr=0.2)
    sched = CosineLR(opt, total_epochs=4)
    lrs = [sched.step() for _ in range(4)]
    np.testing.assert_allclose(lrs, [0.2 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(1, 5)])
    opt = SGD([param([1.0], [1.0])], lr=0.2)
    sched = PolyLR(opt, total_epochs=2, power=1.0)
    assert sched.step() == pytest.approx(0.1)
