"""SGD updates against hand-computed values (the paper's Sec. 4 recipe, Eq. 12-13), value
ranges, and the learning-rate schedules."""
import math

import numpy as np
import pytest

from minadder.nn import Parameter
from minadder.optim import SCHEDULES, SGD, CosineLR, PolyLR, adaptive_scale, cosine_lr, poly_lr


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


def test_binary_weight_decay_applies_to_the_latent_weights_of_binary_layers_only():
    """A BNN's real weights behind its signs (is_binary) take binary_weight_decay; the others
    weight_decay; binary_weight_decay None leaves every parameter at weight_decay."""
    latent, other = param([1.0, -2.0], [0.5, 0.5]), param([1.0, -2.0], [0.5, 0.5])
    latent.is_binary = True
    SGD([latent, other], lr=0.1, weight_decay=0.01, binary_weight_decay=0.0).step()
    np.testing.assert_allclose(latent.data, [1 - 0.05, -2 - 0.05])
    np.testing.assert_allclose(other.data, [1 - 0.1 * (0.5 + 0.01), -2 - 0.1 * (0.5 - 0.02)])
    latent = param([1.0, -2.0], [0.5, 0.5])
    latent.is_binary = True
    SGD([latent], lr=0.1, weight_decay=0.01).step()
    np.testing.assert_allclose(latent.data, other.data)
    with pytest.raises(ValueError, match="binary_weight_decay"):
        SGD([latent], lr=0.1, binary_weight_decay=-1.0)


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
    (dict(lr=-1), r"lr must be a finite number >= 0; got -1"), (dict(lr=0.1, nesterov=True), "nesterov"),
    (dict(lr=0.1, adder_scaling="big"), "adder_scaling"),
    (dict(lr=float("nan")), "lr must be a finite number"), (dict(lr=float("inf")), "lr must be"),
    (dict(lr="0.1"), "lr must be"), (dict(lr=0.1, momentum=1.5), r"momentum must be in \[0, 1\); got 1.5"),
    (dict(lr=0.1, momentum=1.0), "momentum must be in"), (dict(lr=0.1, momentum=-0.1), "momentum"),
    (dict(lr=0.1, weight_decay=-1e-4), "weight_decay must be"),
    (dict(lr=0.1, weight_decay=float("nan")), "weight_decay must be"),
    (dict(lr=0.1, eta=0), "eta must be a finite number > 0; got 0"), (dict(lr=0.1, eta=-0.1), "eta must be"),
    (dict(lr=0.1, adder_factor=0), "adder_factor must be"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SGD([param([1.0], [1.0])], **kwargs)


@pytest.mark.parametrize("name, value", [("lr", -5), ("lr", float("nan")), ("momentum", 1.5),
                                         ("weight_decay", -1.0), ("eta", 0.0)])
def test_assigning_a_bad_value_is_refused_and_changes_nothing(name, value):
    opt = SGD([param([1.0], [1.0])], lr=0.1, momentum=0.9, weight_decay=1e-4, eta=0.1)
    before = getattr(opt, name)
    with pytest.raises(ValueError, match=f"SGD: {name} must be"):
        setattr(opt, name, value)
    assert getattr(opt, name) == before


def test_loading_a_bad_learning_rate_is_refused():
    opt = SGD([param([1.0], [1.0])], lr=0.1)
    with pytest.raises(ValueError, match="lr must be"):
        opt.load_state_dict({"lr": np.asarray(np.nan)})
    assert opt.lr == 0.1


def test_schedule_at_a_fraction_of_an_epoch_and_by_name():
    opt = SGD([param([1.0], [1.0])], lr=0.3)
    sched = SCHEDULES["cosine"](opt, total_epochs=2, base_lr=0.1)
    assert sched.set(0.5) == pytest.approx(0.05 * (1 + math.cos(math.pi / 4))) and opt.lr == sched.lr_at(0.5)
    assert SCHEDULES["poly"](opt, 4, base_lr=0.1).set(3.5) == pytest.approx(0.1 * 0.125)
    with pytest.raises(ValueError, match="total_epochs"):
        CosineLR(opt, 0)


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


def test_a_parameter_given_twice_is_refused():
    """it would be stepped twice, with two momentum buffers"""
    p = param([1.0], [1.0])
    with pytest.raises(ValueError, match="SGD: a parameter is given twice"):
        SGD([p, p], lr=0.1)


def test_poly_power_is_checked_and_the_rate_stays_at_its_end_past_the_last_epoch():
    """PolyLR stepped past total_epochs asked for (1 - e / T) ** power < 0: an lr of -0.05
    that SGD refused, a complex one for a fractional power. Past the end the rate now stays
    at its last value (PyTorch's PolynomialLR); the power must be a number >= 0."""
    opt = SGD([param([1.0], [1.0])], lr=0.1)
    sched = PolyLR(opt, total_epochs=2, power=0.5)
    assert [sched.step() for _ in range(4)] == [pytest.approx(0.1 * 0.5 ** 0.5), 0.0, 0.0, 0.0]
    cosine = CosineLR(SGD([param([1.0], [1.0])], lr=0.1), total_epochs=2)
    assert [cosine.step() for _ in range(3)] == [pytest.approx(0.05), pytest.approx(0.0), pytest.approx(0.0)]
    for power in (-1, "2", math.nan):
        with pytest.raises(ValueError, match="PolyLR: power must be a finite number >= 0"):
            PolyLR(opt, 2, power=power)
    with pytest.raises(ValueError, match=r"poly_lr: epoch must be in \[0, 2\]; got 2.5"):
        poly_lr(0.1, 2.5, 2, 0.5)
    with pytest.raises(ValueError, match="PolyLR: epoch must be a finite number >= 0"):
        sched.set(-1)
