"""The BNN baseline (minadder.binary): forward = a convolution of signs, backward = the
straight-through estimator; the networks of kind "bnn" in minadder and in PyTorch."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minadder as ma
from minadder import binary, models
from minadder.kernels import reference
from minadder.kernels.geometry import Window


def _sgn(a):
    return np.where(a > 0, 1.0, -1.0)


@settings(deadline=None, max_examples=20)
@given(n=st.integers(1, 2), c=st.integers(1, 3), size=st.integers(3, 6), c_out=st.integers(1, 3),
       k=st.integers(1, 3), stride=st.integers(1, 2), padding=st.integers(0, 1), seed=st.integers(0, 2**16))
def test_binary_conv_is_a_convolution_of_signs_with_the_straight_through_gradient(n, c, size, c_out, k, stride,
                                                                                   padding, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, (n, c, size, size))
    layer = binary.BinaryConv2d(c, c_out, k, stride, padding, bias=False, dtype=np.float64)
    layer.weight.data = rng.uniform(-1.5, 1.5, layer.weight.shape)
    xt = ma.Tensor(x, requires_grad=True)
    y = layer(xt)
    win = Window.of(x.shape, layer.weight.shape, stride, padding)
    want, saved = reference.conv2d_forward(_sgn(x), _sgn(layer.weight.data), win)
    np.testing.assert_allclose(y.data, want, rtol=0, atol=1e-12)      # integers: exact
    g = rng.standard_normal(y.shape)
    (y * ma.Tensor(g)).sum().backward()
    dx_signs, dw_signs = reference.conv2d_backward(g, saved)
    np.testing.assert_allclose(xt.grad, dx_signs * (np.abs(x) <= 1), atol=1e-9)
    np.testing.assert_allclose(layer.weight.grad, dw_signs * (np.abs(layer.weight.data) <= 1), atol=1e-9)


def test_binary_linear_and_the_sign_of_zero():
    layer = binary.BinaryLinear(3, 2, bias=False, dtype=np.float64)
    layer.weight.data = np.array([[0.5, -0.5, 0.0], [2.0, 3.0, -1.0]])
    x = ma.Tensor(np.array([[0.0, 0.2, -3.0]]), requires_grad=True)
    y = layer(x)
    # sgn(x) = (-1, 1, -1), sgn(w) rows = (1, -1, -1) and (1, 1, -1): sgn(0) is -1
    np.testing.assert_array_equal(y.data, [[-1 - 1 + 1, -1 + 1 + 1]])
    y.sum().backward()
    # dL/dsgn(x) = (1 + 1, -1 + 1, -1 - 1); the estimator stops it where |x| > 1
    np.testing.assert_array_equal(x.grad, [[2.0, 0.0, 0.0]])
    np.testing.assert_array_equal(layer.weight.grad, [[-1.0, 1.0, -1.0], [0.0, 0.0, -1.0]])


def test_signs_keep_the_dtype_and_send_zero_and_nan_to_minus_one():
    for dtype in (np.float32, np.float64):
        a = np.array([[-2.0, -0.0, 0.0, 1e-30, np.nan, np.inf, -np.inf]], dtype=dtype)
        s = binary.signs(a)
        assert s.dtype == dtype
        np.testing.assert_array_equal(s, [[-1, -1, -1, 1, -1, 1, -1]])


@pytest.mark.parametrize("name", ["lenet5_bn", "resnet20", "vgg_small"])
def test_a_bnn_keeps_its_first_and_last_layers_full_precision(name):
    model = models.build_model(name, kind="bnn")
    binary_layers = {n for n, m in model.named_modules() if isinstance(m, (binary.BinaryConv2d, binary.BinaryLinear))}
    adder_twin = models.build_model(name, kind="adder")
    adder_layers = {n for n, m in adder_twin.named_modules() if isinstance(m, (ma.nn.Adder2d, ma.nn.AdderLinear))}
    assert binary_layers == adder_layers - {model.first_layer, model.last_layer}
    assert binary_layers and model.first_layer not in binary_layers and model.last_layer not in binary_layers
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in models.build_model(name, kind="cnn").named_parameters()]


def test_the_binary_layers_mark_their_real_weights_for_the_optimizer():
    """is_binary (optim.SGD's binary_weight_decay) on the binary layers' weights, and only there."""
    model = models.build_model("resnet20", kind="bnn")
    marked = {n for n, p in model.named_parameters() if getattr(p, "is_binary", False)}
    binary_layers = {n for n, m in model.named_modules() if isinstance(m, (binary.BinaryConv2d, binary.BinaryLinear))}
    assert marked == {f"{n}.weight" for n in binary_layers}


def test_the_torch_bnn_is_the_same_network():
    torch = pytest.importorskip("torch")
    from minadder.torch import models as torch_models
    from minadder.torch.convert import from_minadder
    ma.manual_seed(3)
    model = models.lenet5_bn("bnn")
    twin = from_minadder(model)
    x = np.random.default_rng(0).standard_normal((4, 1, 32, 32)).astype(np.float32)
    xt = ma.Tensor(x)
    out = model(xt)
    out.sum().backward()
    tx = torch.tensor(x)
    tout = twin(tx)
    tout.sum().backward()
    assert isinstance(twin, torch_models.Network) and type(twin.conv2).__name__ == "BinaryConv2d"
    np.testing.assert_allclose(tout.detach().numpy(), out.data, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(twin.conv2.weight.grad.numpy(), model.conv2.weight.grad, rtol=1e-3, atol=1e-3)


def test_a_bnn_uses_hardtanh_where_the_others_use_relu():
    from minadder import frameworks
    from minadder import functional as F
    bnn, adder = models.resnet20("bnn"), models.resnet20("adder")
    assert frameworks.activation(bnn) is F.hardtanh and frameworks.activation(bnn.layer2[0]) is F.hardtanh
    assert frameworks.activation(adder) is F.relu and frameworks.activation(adder.layer2[0]) is F.relu
    x = ma.Tensor(np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32))
    bnn.eval()
    stem = bnn.bn1(bnn.conv1(x))
    inside = frameworks.run(bnn, bnn.architecture.layers[:3], x).data       # conv1, bn1, activation
    np.testing.assert_allclose(inside, np.clip(stem.data, -1, 1), rtol=1e-6)
