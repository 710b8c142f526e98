"""Bad input gets a clear error naming the argument and the expected shape."""
import numpy as np
import pytest

import minadder as ma
from minadder import functional as F
from minadder import nn


def T(*shape):
    return ma.Tensor(np.ones(shape, np.float32), requires_grad=True)


@pytest.mark.parametrize("op", [F.adder2d, F.conv2d])
def test_mismatched_channels(op):
    with pytest.raises(ValueError, match=r"x has 3 channels but weight of shape \(4, 2, 3, 3\) expects C_in=2"):
        op(T(1, 3, 8, 8), T(4, 2, 3, 3))


@pytest.mark.parametrize("op", [F.adder2d, F.conv2d])
def test_three_dimensional_input(op):
    with pytest.raises(ValueError, match=r"input x must be 4-D \(N, C_in, H, W\), got shape \(3, 8, 8\)"):
        op(T(3, 8, 8), T(4, 3, 3, 3))


def test_weight_of_the_wrong_rank():
    with pytest.raises(ValueError, match=r"weight must be 4-D \(C_out, C_in, kH, kW\), got shape \(4, 3\)"):
        F.adder2d(T(1, 3, 8, 8), T(4, 3))


def test_kernel_larger_than_padded_input():
    with pytest.raises(ValueError, match=r"kernel 5x5 is larger than the padded input 4x4 \(H=2, W=2, padding=1\)"):
        F.adder2d(T(1, 1, 2, 2), T(1, 1, 5, 5), padding=1)


def test_unknown_grad_mode():
    with pytest.raises(ValueError, match=r"grad_mode must be one of \('full', 'sign'\), got 'exact'"):
        F.adder2d(T(1, 1, 4, 4), T(1, 1, 3, 3), grad_mode="exact")
    with pytest.raises(ValueError, match="grad_mode"):
        nn.Adder2d(1, 2, 3, grad_mode="exact")


@pytest.mark.parametrize("kwargs, match", [(dict(stride=0), "stride must be a positive integer"),
                                           (dict(padding=-1), "padding must be a non-negative integer"),
                                           (dict(stride=1.5), "stride")])
def test_bad_stride_and_padding(kwargs, match):
    with pytest.raises(ValueError, match=match):
        F.adder2d(T(1, 1, 4, 4), T(1, 1, 3, 3), **kwargs)


def test_adder_linear_shapes():
    with pytest.raises(ValueError, match=r"x has 5 features but weight has shape \(3, 4\)"):
        F.adder_linear(T(2, 5), T(3, 4))
    with pytest.raises(ValueError, match="must be 2-D"):
        F.adder_linear(T(2, 5, 1), T(3, 5))


def test_cross_entropy_labels():
    logits = T(3, 4)
    with pytest.raises(ValueError, match=r"label 4 is out of range for 4 classes \(expected 0..3\)"):
        F.cross_entropy(logits, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match="label -1"):
        F.cross_entropy(logits, np.array([0, -1, 1]))
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        F.cross_entropy(logits, np.array([0, 1]))
    with pytest.raises(TypeError, match="integers"):
        F.cross_entropy(logits, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"logits must be 2-D"):
        F.cross_entropy(T(3), np.array([0, 1, 2]))


def test_batch_norm_shapes_and_no_half_update():
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\), got \(2,\)"):
        F.batch_norm(T(4, 3, 2, 2) * 2.0, rm, rv, T(2), None, training=True)
    np.testing.assert_array_equal(rm, 0)        # running statistics untouched by the failed call
    np.testing.assert_array_equal(rv, 1)
    with pytest.raises(ValueError, match="more than one value per channel"):
        F.batch_norm(T(1, 3), rm, rv, training=True)
    with pytest.raises(ValueError, match="expected a 4-D input"):
        nn.BatchNorm2d(3)(T(4, 3))


def test_shape_ops_and_matmul():
    with pytest.raises(ValueError, match=r"cannot reshape a tensor of shape \(2, 3\) into \(4, 2\)"):
        F.reshape(T(2, 3), 4, 2)
    with pytest.raises(ValueError, match="do not align"):
        F.matmul(T(2, 3), T(2, 3))
    with pytest.raises(ValueError, match="axis 3 is out of range"):
        F.sum(T(2, 3), axis=3)
    with pytest.raises(ValueError, match=r"x has 3 features but weight has shape \(2, 4\)"):
        F.linear(T(5, 3), T(2, 4))


def test_pooling_arguments():
    with pytest.raises(ValueError, match="kernel 5 is larger"):
        F.max_pool2d(T(1, 1, 3, 3), 5)
    with pytest.raises(ValueError, match="must be 4-D"):
        F.avg_pool2d(T(1, 3, 3), 2)


def test_failed_layer_call_leaves_parameters_and_grads_untouched():
    layer = nn.Adder2d(2, 3, 3)
    before = layer.weight.data.copy()
    with pytest.raises(ValueError):
        layer(T(1, 5, 6, 6))
    np.testing.assert_array_equal(layer.weight.data, before)
    assert layer.weight.grad is None


@pytest.mark.parametrize("dtype", [np.float16, np.int64, np.bool_, np.complex64])
def test_the_adder_and_convolution_refuse_dtypes_their_kernels_do_not_compute_in(dtype):
    """float32 and float64 only (the kernel contract): the backends would differ on the rest
    (float16 stayed float16 in NumPy and became float64 on the cpu backend; complex lost its
    imaginary part there), so it is refused, naming the operand, before any backend runs."""
    x, w = np.ones((1, 2, 5, 5), dtype), np.ones((3, 2, 3, 3), dtype)
    for op in (F.adder2d, F.conv2d):
        with pytest.raises(TypeError, match=f"{op.__name__}: x must be float32 or float64, got dtype"):
            op(ma.Tensor(x), T(3, 2, 3, 3))
        with pytest.raises(TypeError, match=f"{op.__name__}: weight must be float32 or float64"):
            op(T(1, 2, 5, 5), ma.Tensor(w))
    with pytest.raises(TypeError, match="adder_linear: x must be float32 or float64"):
        F.adder_linear(ma.Tensor(np.ones((2, 3), dtype)), T(4, 3))


def test_integer_input_to_batch_norm_and_cross_entropy_is_refused_not_truncated():
    """Computed in the input's dtype, batch norm's 1 / std became 0 for integers (every output 0)
    and the loss was truncated to an integer."""
    with pytest.raises(TypeError, match="batch_norm: input must be of a floating dtype, got dtype uint8"):
        nn.BatchNorm2d(1)(ma.Tensor(np.arange(36, dtype=np.uint8).reshape(1, 1, 6, 6)))
    with pytest.raises(TypeError, match="cross_entropy: logits must be of a floating dtype, got dtype int64"):
        F.cross_entropy(ma.Tensor(np.array([[0, 0, 5]])), np.array([0]))
    with pytest.raises(TypeError, match="max_pool2d: x must be of a floating dtype"):
        F.max_pool2d(ma.Tensor(np.ones((1, 1, 4, 4), np.int32)), 2)


def test_operands_that_are_not_arrays_are_named():
    with pytest.raises(TypeError, match="adder2d: x must be a Tensor or a NumPy array, got list"):
        F.adder2d([[[[1.0]]]], T(1, 1, 1, 1))
    with pytest.raises(TypeError, match="batch_norm: running_mean must be a Tensor or a NumPy array, got list"):
        F.batch_norm(T(4, 2), [0.0, 0.0], [1.0, 1.0], training=True)    # a list would not be updated in place
    with pytest.raises(ValueError, match="linear: input x must have at least 1 dimension"):
        F.linear(ma.Tensor(np.float32(1)), T(2, 3))


def test_a_bias_of_the_wrong_length_is_named():
    with pytest.raises(ValueError, match=r"conv2d: bias must have shape \(3,\), got \(4,\)"):
        F.conv2d(T(1, 2, 5, 5), T(3, 2, 3, 3), T(4))
    with pytest.raises(ValueError, match=r"linear: bias must have shape \(2,\), got \(4,\)"):
        F.linear(T(1, 3), T(2, 3), T(4))


@pytest.mark.parametrize("kwargs, match", [(dict(eps=-1.0), "batch_norm: eps must be a finite number >= 0"),
                                           (dict(eps=float("nan")), "batch_norm: eps"),
                                           (dict(momentum=None), "batch_norm: momentum must be in"),
                                           (dict(momentum=1.5), "batch_norm: momentum must be in")])
def test_batch_norm_settings_are_checked_by_the_function_too(kwargs, match):
    """as nn.BatchNorm2d checks them: eps = -1 gave NaN silently."""
    rm, rv = np.zeros(2, np.float32), np.ones(2, np.float32)
    with pytest.raises(ValueError, match=match):
        F.batch_norm(T(4, 2), rm, rv, training=True, **kwargs)
    np.testing.assert_array_equal(rm, 0)


@pytest.mark.parametrize("backend_name", ["numpy", "cpu"])
def test_an_empty_batch_goes_through_every_layer_and_back(backend_name):
    """N = 0 (the last batch of a filtered dataset): shapes (0, ...) out and gradients of the
    inputs' shapes back, on each backend (the cpu convolution raised an IndexError; batch
    norm's evaluation backward and flatten could not reshape)."""
    if backend_name == "cpu":
        pytest.importorskip("numba")
    ma.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Adder2d(3, 4, 3, padding=1),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 5)).eval()
    with ma.use_backend(backend_name):
        x = ma.Tensor(np.ones((0, 2, 4, 4), np.float32), requires_grad=True)
        y = net(x)
        assert y.shape == (0, 5)
        F.sum(y).backward()
    assert x.grad.shape == (0, 2, 4, 4)
    assert all(np.array_equal(p.grad, np.zeros_like(p.data)) for p in net.parameters())
