"""minadder.torch.Adder2d / AdderLinear and the Eq. 13 scaling for PyTorch optimizers."""
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason='minadder.torch needs PyTorch: pip install "minadder[torch]"')

import minadder.torch as mt  # noqa: E402
from minadder.optim import SGD, adaptive_scale  # noqa: E402
from minadder.nn import Parameter  # noqa: E402


def test_adder2d_filters_are_the_weight_parameter_initialised_standard_normal():
    torch.manual_seed(0)
    layer = mt.Adder2d(16, 32, 3, stride=2, padding=1)
    names = [n for n, _ in layer.named_parameters()]
    assert names == ["weight"] and layer.weight.shape == (32, 16, 3, 3) and layer.weight.is_adder
    w = layer.weight.detach().double()
    assert abs(w.mean().item()) < 0.05 and abs(w.std().item() - 1) < 0.05   # N(0, 1), 4608 draws
    y = layer(torch.randn(2, 16, 8, 8))
    assert y.shape == (2, 32, 4, 4)


def test_adder2d_bias_and_adder_linear():
    layer = mt.Adder2d(3, 4, 3, padding=1, bias=True)
    with torch.no_grad():
        layer.bias.copy_(torch.arange(4.0))
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(layer(x), mt.adder2d(x, layer.weight, 1, 1) + torch.arange(4.0).view(1, 4, 1, 1))
    fc = mt.AdderLinear(6, 2, bias=True)
    assert fc.weight.shape == (2, 6) and fc(torch.randn(3, 6)).shape == (3, 2)
    assert [n for n, _ in mt.adder_modules(torch.nn.Sequential(layer, torch.nn.ReLU(), fc))] == ["0", "2"]


@pytest.mark.parametrize("bad, match", [
    (dict(grad_mode="fast"), "Adder2d: grad_mode must be one of"),
    (dict(kernel_size=0), "Adder2d: kernel_size must be an integer >= 1"),
    (dict(kernel_size=True), "Adder2d: kernel_size must be an integer >= 1"),
    (dict(out_channels=-2), "Adder2d: out_channels must be an integer >= 1"),
    (dict(stride=0), "Adder2d: stride must be an integer >= 1"),
    (dict(padding=-1), "Adder2d: padding must be an integer >= 0"),
    (dict(eta=float("inf")), "Adder2d: eta must be None or a finite non-negative number, got inf"),
    (dict(eta=float("nan")), "Adder2d: eta must be None or a finite non-negative number, got nan"),
    (dict(eta=-0.1), "Adder2d: eta must be None or a finite non-negative number, got -0.1"),
])
def test_adder2d_checks_its_arguments(bad, match):
    args = dict(in_channels=3, out_channels=4, kernel_size=3) | bad
    with pytest.raises(ValueError, match=match):
        mt.Adder2d(**args)


@pytest.mark.parametrize("eta", [float("inf"), float("nan"), -1.0, None, True])
def test_adder_linear_and_scale_adder_grads_refuse_a_bad_eta(eta):
    if eta is not None:
        with pytest.raises(ValueError, match="AdderLinear: eta must be None or a finite non-negative number"):
            mt.AdderLinear(3, 2, eta=eta)
    net = torch.nn.Sequential(mt.AdderLinear(3, 2))
    net(torch.randn(4, 3)).sum().backward()
    before = net[0].weight.grad.clone()
    with pytest.raises(ValueError, match="scale_adder_grads: eta must be a finite non-negative number"):
        mt.scale_adder_grads(net, eta=eta)
    assert torch.equal(net[0].weight.grad, before)      # refused before any gradient was touched


def test_adder2d_trains_with_a_torch_optimizer():
    torch.manual_seed(1)
    net = torch.nn.Sequential(mt.Adder2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    x, labels = torch.randn(16, 1, 6, 6), torch.randint(0, 2, (16,))
    x[labels == 1] += 1.0
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), labels)
        loss.backward()
        mt.scale_adder_grads(net, eta=0.1)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_scale_adder_grads_is_eq_13_as_minadder_sgd_applies_it():
    torch.manual_seed(2)
    net = torch.nn.Sequential(mt.Adder2d(3, 4, 3), torch.nn.Conv2d(4, 2, 1))
    net(torch.randn(2, 3, 6, 6)).square().sum().backward()
    grad = net[0].weight.grad.clone()
    conv_grad = net[1].weight.grad.clone()
    factors = mt.scale_adder_grads(net, eta=0.1)
    alpha = adaptive_scale(grad.numpy(), 0.1)
    assert list(factors) == ["0"]
    assert math.isclose(factors["0"].item(), alpha, rel_tol=1e-6)
    # minadder's own SGD (lr 1, no momentum) steps by exactly the scaled gradient
    p = Parameter(np.zeros(grad.shape, np.float32), is_adder=True)
    p.grad = grad.numpy().copy()
    SGD([p], lr=1.0, eta=0.1).step()
    np.testing.assert_allclose(net[0].weight.grad.numpy(), -p.data, rtol=1e-6)
    assert torch.equal(net[1].weight.grad, conv_grad)      # not an adder layer: untouched
    norm = torch.linalg.vector_norm(net[0].weight.grad.double()).item()
    assert math.isclose(norm, 0.1 * math.sqrt(grad.numel()), rel_tol=1e-5)


def test_zero_gradient_gets_factor_zero_and_missing_gradients_are_skipped():
    net = torch.nn.Sequential(mt.Adder2d(1, 2, 1), mt.Adder2d(2, 2, 1))
    net[0].weight.grad = torch.zeros_like(net[0].weight)
    assert mt.scale_adder_grads(net)["0"].item() == 0 and torch.equal(net[0].weight.grad, torch.zeros(2, 1, 1, 1))
    assert "1" not in mt.scale_adder_grads(net)


def test_reference_normalisation_inside_backward():
    """eta=0.2 on the layer: dF is rescaled inside backward to the norm 0.2 * sqrt(k), the
    reference code's normalisation, and dX is unchanged."""
    torch.manual_seed(3)
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    plain, scaled = mt.Adder2d(3, 5, 3, padding=1), mt.Adder2d(3, 5, 3, padding=1, eta=0.2)
    with torch.no_grad():
        scaled.weight.copy_(plain.weight)
    g = torch.randn(2, 5, 6, 6)
    dx_plain, dw_plain = torch.autograd.grad(plain(x), (x, plain.weight), g)
    dx_scaled, dw_scaled = torch.autograd.grad(scaled(x), (x, scaled.weight), g)
    assert torch.equal(dx_plain, dx_scaled)
    k = dw_plain.numel()
    torch.testing.assert_close(dw_scaled, dw_plain * (0.2 * math.sqrt(k) / dw_plain.double().norm().item()))
    assert math.isclose(dw_scaled.double().norm().item(), 0.2 * math.sqrt(k), rel_tol=1e-5)
