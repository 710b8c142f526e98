"""The notebooks' helpers: minadder/paper/measure.py (density fits, batch-norm inputs) and
minadder/experiments.py (the small LeNet++, the short training loop, the digits), and the
one namespace minadder.analysis that gathers them."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minadder as ma
from minadder import analysis, experiments, models, nn
from minadder.paper import measure, propositions
from minadder.data import DataLoader, synthetic_digits


@settings(deadline=None, max_examples=10, derandomize=True)
@given(st.floats(-3, 3), st.floats(0.1, 5), st.integers(0, 2**31 - 1))
def test_density_fits_recover_parameters_and_pick_the_right_family(loc, scale, seed):
    rng = np.random.default_rng(seed)
    gauss, lap = rng.normal(loc, scale, 40_000), rng.laplace(loc, scale, 40_000)
    mu, sigma, ll_g = measure.fit_gaussian(gauss)
    assert abs(mu - loc) < 0.05 * scale and abs(sigma / scale - 1) < 0.03
    # the returned value is the mean log-density of the fitted model over the sample
    direct = np.mean(-0.5 * np.log(2 * np.pi * sigma ** 2) - (gauss - mu) ** 2 / (2 * sigma ** 2))
    assert math.isclose(ll_g, direct, rel_tol=1e-9, abs_tol=1e-9)
    m, b, ll_l = measure.fit_laplace(lap)
    assert abs(m - loc) < 0.05 * scale and abs(b / scale - 1) < 0.03
    assert math.isclose(ll_l, np.mean(-np.log(2 * b) - np.abs(lap - m) / b), rel_tol=1e-9, abs_tol=1e-9)
    assert measure.fit_gaussian(gauss)[2] > measure.fit_laplace(gauss)[2]
    assert measure.fit_laplace(lap)[2] > measure.fit_gaussian(lap)[2]


def test_sign_limit_rejects_a_non_positive_step():
    with pytest.raises(ValueError, match="alpha"):
        propositions.sign_limit(0.0, 1.0, 0.0)


def test_halve_images_averages_2x2_blocks():
    x = np.arange(2 * 1 * 4 * 4, dtype=np.float32).reshape(2, 1, 4, 4)
    y = experiments.halve_images(x)
    assert y.shape == (2, 1, 2, 2)
    assert y[0, 0, 0, 0] == np.mean([0, 1, 4, 5])
    assert math.isclose(y.mean(), x.mean(), rel_tol=1e-6)


def small_net(kind="adder"):
    ma.manual_seed(0)
    return experiments.small_lenet_pp(kind, widths=(2, 2, 3, 3, 4, 4), input_size=8)


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
        experiments.small_lenet_pp(kind, widths=(2, 2), input_size=8)


def test_batchnorm_inputs_records_every_batch_norm_and_changes_nothing():
    net = small_net()
    x = np.random.default_rng(1).standard_normal((6, 1, 8, 8)).astype(np.float32)
    before = net.state_dict()
    seen = measure.batchnorm_inputs(net, x)
    # every batch norm, by its module name, in forward order
    assert list(seen) == [n for n, m in net.named_modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    assert seen["bn1"].shape == (6, 2, 8, 8) and seen["bn_feature"].shape == (6, 3)
    for name, value in net.state_dict().items():
        np.testing.assert_array_equal(value, before[name])
    assert measure.channel_std(seen["bn1"]).shape == (2,)


def test_refresh_batchnorm_sets_the_plain_average_of_the_batches():
    ma.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    rng = np.random.default_rng(2)
    batches = [rng.normal(i, 1 + i, (4, 1, 5, 5)).astype(np.float32) for i in range(3)]
    experiments.refresh_batchnorm(net, batches)
    bn = net[1]
    means = [net[0](ma.Tensor(b)).data.mean(axis=(0, 2, 3)) for b in batches]
    np.testing.assert_allclose(bn.running_mean, np.mean(means, axis=0), rtol=1e-5, atol=1e-6)
    assert bn.momentum == 0.1


def test_train_steps_learns_a_little_and_restores_the_learning_rate():
    train, test = synthetic_digits(n_train=256, n_test=64, cache=False)
    ma.manual_seed(0)
    net = models.lenet5_bn("cnn")
    opt = ma.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    test_xy = experiments.dataset_arrays(test, 64)
    assert test_xy[0].shape == (64, 1, 32, 32)
    curves = experiments.train_steps(net, opt, DataLoader(train, 32, seed=0, pad_to=32), 12, test=test_xy, eval_every=4)
    assert curves["step"] == list(range(1, 13))
    assert curves["eval_step"] == [4, 8, 12]
    assert np.mean(curves["loss"][-4:]) < np.mean(curves["loss"][:4])
    assert opt.lr == 0.1
    loss, acc = experiments.evaluate(net, *test_xy)
    assert 0 <= acc <= 1 and loss > 0


def test_batchnorm_inputs_are_what_each_batch_norm_receives():
    net = small_net("cnn").eval()
    x = np.random.default_rng(4).standard_normal((3, 1, 8, 8)).astype(np.float32)
    seen = measure.batchnorm_inputs(net, x)
    with ma.no_grad():
        np.testing.assert_array_equal(seen["bn1"], net.conv1(ma.Tensor(x)).data)
    assert all(not m._forward_hooks for m in net.modules())      # the hooks are gone


def test_notebook_digits_come_from_minadders_data_lookup(tmp_path, monkeypatch):
    # no MNIST where minadder.data looks: the synthetic digits, and nothing outside the repository is read
    monkeypatch.setenv("MINADDER_DATA", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    train, test = experiments.notebook_digits(data_dir=tmp_path)
    assert train.name == test.name == "synthetic-digits"


def test_analysis_gathers_the_paper_and_the_experiments():
    assert analysis.sign_descent is propositions.sign_descent
    assert analysis.fit_laplace is measure.fit_laplace and analysis.train_steps is experiments.train_steps
    assert all(hasattr(analysis, name) for name in analysis.__all__)
    assert not hasattr(analysis, "SHARED_DATA")
