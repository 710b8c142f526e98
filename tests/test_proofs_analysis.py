"""The notebook helpers of minadder/analysis.py: density fits, batch-norm bookkeeping,
the small LeNet++, the short training loop."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minadder as ma
from minadder import analysis as A
from minadder import models, nn
from minadder.data import DataLoader, synthetic_digits


@settings(deadline=None, max_examples=10, derandomize=True)
@given(st.floats(-3, 3), st.floats(0.1, 5), st.integers(0, 2**31 - 1))
def test_density_fits_recover_parameters_and_pick_the_right_family(loc, scale, seed):
    rng = np.random.default_rng(seed)
    gauss, lap = rng.normal(loc, scale, 40_000), rng.laplace(loc, scale, 40_000)
    mu, sigma, ll_g = A.fit_gaussian(gauss)
    assert abs(mu - loc) < 0.05 * scale and abs(sigma / scale - 1) < 0.03
    # the returned value is the mean log-density of the fitted model over the sample
    direct = np.mean(-0.5 * np.log(2 * np.pi * sigma ** 2) - (gauss - mu) ** 2 / (2 * sigma ** 2))
    assert math.isclose(ll_g, direct, rel_tol=1e-9, abs_tol=1e-9)
    m, b, ll_l = A.fit_laplace(lap)
    assert abs(m - loc) < 0.05 * scale and abs(b / scale - 1) < 0.03
    assert math.isclose(ll_l, np.mean(-np.log(2 * b) - np.abs(lap - m) / b), rel_tol=1e-9, abs_tol=1e-9)
    assert A.fit_gaussian(gauss)[2] > A.fit_laplace(gauss)[2]
    assert A.fit_laplace(lap)[2] > A.fit_gaussian(lap)[2]


def test_sign_limit_rejects_a_non_positive_step():
    with pytest.raises(ValueError, match="alpha"):
        A.sign_limit(0.0, 1.0, 0.0)


def test_halve_images_averages_2x2_blocks():
    x = np.arange(2 * 1 * 4 * 4, dtype=np.float32).reshape(2, 1, 4, 4)
    y = A.halve_images(x)
    assert y.shape == (2, 1, 2, 2)
    assert y[0, 0, 0, 0] == np.mean([0, 1, 4, 5])
    assert math.isclose(y.mean(), x.mean(), rel_tol=1e-6)


def small_net(kind="adder"):
    ma.manual_seed(0)
    return A.small_lenet_pp(kind, widths=(2, 2, 3, 3, 4, 4), input_size=8)


@pytest.mark.parametrize("kind", ["adder", "cnn"])
def test_small_lenet_pp_shapes_and_layer_kinds(kind):
    net = small_net(kind)
    x = ma.Tensor(np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32))
    logits, feats = net(x, return_features=True)
    assert logits.shape == (5, 10) and feats.shape == (5, 3)
    weight_layers = [m for m in net.modules() if isinstance(m, (nn.Adder2d, nn.AdderLinear, nn.Conv2d, nn.Linear))]
    assert len(weight_layers) == 8
    adder = all(isinstance(m, (nn.Adder2d, nn.AdderLinear)) for m in weight_layers)
    assert adder == (kind == "adder")
    with pytest.raises(ValueError, match="widths"):
        A.small_lenet_pp(kind, widths=(2, 2), input_size=8)


def test_batchnorm_inputs_records_every_batch_norm_and_changes_nothing():
    net = small_net()
    x = np.random.default_rng(1).standard_normal((6, 1, 8, 8)).astype(np.float32)
    before = net.state_dict()
    seen = A.batchnorm_inputs(net, x)
    assert sorted(seen) == sorted(n.rstrip(".") for n, m in net.named_modules()
                                  if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)))
    assert seen["bn1"].shape == (6, 2, 8, 8) and seen["bn_feature"].shape == (6, 3)
    for name, value in net.state_dict().items():
        np.testing.assert_array_equal(value, before[name])
    assert A.channel_std(seen["bn1"]).shape == (2,)


def test_refresh_batchnorm_sets_the_plain_average_of_the_batches():
    ma.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    rng = np.random.default_rng(2)
    batches = [rng.normal(i, 1 + i, (4, 1, 5, 5)).astype(np.float32) for i in range(3)]
    A.refresh_batchnorm(net, batches)
    bn = net[1]
    means = [net[0](ma.Tensor(b)).data.mean(axis=(0, 2, 3)) for b in batches]
    np.testing.assert_allclose(bn.running_mean, np.mean(means, axis=0), rtol=1e-5, atol=1e-6)
    assert bn.momentum == 0.1


def test_train_steps_learns_a_little_and_restores_the_learning_rate():
    train, test = synthetic_digits(n_train=256, n_test=64, cache=False)
    ma.manual_seed(0)
    net = models.lenet5_bn("cnn")
    opt = ma.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    test_xy = A.dataset_arrays(test, 64)
    assert test_xy[0].shape == (64, 1, 32, 32)
    curves = A.train_steps(net, opt, DataLoader(train, 32, seed=0, pad_to=32), 12, test=test_xy, eval_every=4)
    assert curves["step"] == list(range(1, 13))
    assert curves["eval_step"] == [4, 8, 12]
    assert np.mean(curves["loss"][-4:]) < np.mean(curves["loss"][:4])
    assert opt.lr == 0.1
    loss, acc = A.evaluate(net, *test_xy)
    assert 0 <= acc <= 1 and loss > 0
