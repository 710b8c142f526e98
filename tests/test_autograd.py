"""The engine itself: graph recording, topological backward, accumulation, broadcasting, dtypes."""
import numpy as np
import pytest

import minadder as ma
from minadder import functional as F
from minadder.ops import unbroadcast


def test_chain_rule_on_a_small_expression():
    x = ma.Tensor(np.array(3.0), requires_grad=True)
    y = ma.Tensor(np.array(-2.0), requires_grad=True)
    z = (x * y + x ** 2) / y          # = x + x^2 / y
    z.backward()
    assert z.item() == pytest.approx(3 + 9 / -2)
    assert x.grad == pytest.approx(1 + 2 * 3 / -2)
    assert y.grad == pytest.approx(-9 / 4)


def test_a_tensor_used_twice_accumulates_both_paths():
    x = ma.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * x + x).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data + 1)


def test_grad_accumulates_across_backward_calls_until_cleared():
    x = ma.Tensor(np.array([1.0, -1.0]), requires_grad=True)
    (x * 3).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad, [6.0, 6.0])


def test_diamond_graph_visits_each_node_once():
    x = ma.Tensor(np.array(2.0), requires_grad=True)
    a = x * 3
    b = a + a          # a feeds b twice
    c = b * a          # and c once more: c = 6x * 3x = 18 x^2
    c.backward()
    assert x.grad == pytest.approx(36 * 2.0)


def test_broadcast_operands_get_gradients_of_their_own_shape():
    a = ma.Tensor(np.ones((4, 3)), requires_grad=True)
    b = ma.Tensor(np.ones((1, 3)), requires_grad=True)
    c = ma.Tensor(np.ones(3), requires_grad=True)
    (a * b + c).sum().backward()
    assert b.grad.shape == (1, 3) and c.grad.shape == (3,)
    np.testing.assert_allclose(b.grad, [[4, 4, 4]])
    np.testing.assert_allclose(c.grad, [4, 4, 4])


def test_unbroadcast_sums_added_and_stretched_axes():
    g = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_allclose(unbroadcast(g, (3, 1)), g.sum(axis=(0, 2)).reshape(3, 1))
    np.testing.assert_allclose(unbroadcast(g, (4,)), g.sum(axis=(0, 1)))


def test_a_backward_that_forgets_to_unbroadcast_is_named():
    class BroadcastAdd(ma.Function):
        @staticmethod
        def forward(ctx, a, b):
            return a + b

        @staticmethod
        def backward(ctx, g):
            return g, g            # wrong for b, which was broadcast: unbroadcast(g, b.shape)

    a, b = ma.Tensor(np.ones((2, 3)), requires_grad=True), ma.Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"BroadcastAdd.backward returned a gradient of shape "
                                           r"\(2, 3\) for an input of shape \(3,\)"):
        BroadcastAdd.apply(a, b).sum().backward()


def test_the_record_on_a_result_names_its_function_and_inputs():
    x = ma.Tensor(np.ones(2), requires_grad=True)
    y = x * 2.0
    assert x.node is None                      # a leaf
    assert y.node.function is F.Mul and y.node.inputs[0] is x and y.node.inputs[1] == 2.0
    np.testing.assert_array_equal(y.node.ctx.a, x.data)


def test_no_grad_records_no_graph():
    x = ma.Tensor(np.ones(3), requires_grad=True)
    with ma.no_grad():
        y = x * 2
    assert not y.requires_grad
    assert ma.is_grad_enabled()


def test_backward_of_non_scalar_needs_a_gradient():
    x = ma.Tensor(np.ones(3), requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match="non-scalar"):
        y.backward()
    y.backward(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(x.grad, [2, 4, 6])


def test_backward_rejects_a_gradient_of_the_wrong_shape():
    x = ma.Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(ValueError, match=r"expected \(3,\)"):
        (x * 2).backward(np.ones(4))


def test_graph_is_freed_after_backward():
    x = ma.Tensor(np.ones(2), requires_grad=True)
    y = (x * 2).sum()
    y.backward()
    assert y.node.freed and y.node.ctx is None and y.node.inputs == ()
    assert y.node.function is F.Sum                 # what made it is still known


def test_a_second_backward_through_a_freed_graph_raises():
    a = ma.Tensor([2.0], requires_grad=True)
    b = a * a
    (b * 3).backward()
    with pytest.raises(RuntimeError, match=r"backward through the graph a second time.*retain_graph=True"):
        (b * 5).backward()
    np.testing.assert_allclose(a.grad, [12.0])      # the refused pass changed nothing
    assert b.grad is None


def test_retain_graph_keeps_it_for_a_second_backward():
    a = ma.Tensor([2.0], requires_grad=True)
    b = a * a
    (b * 3).backward(retain_graph=True)
    (b * 5).backward()
    np.testing.assert_allclose(a.grad, [32.0])      # d(3a^2 + 5a^2)/da = 16 a
    with pytest.raises(RuntimeError, match="second time"):
        (b * 7).backward()                          # the second pass freed it


def test_backward_twice_from_the_same_root_raises():
    x = ma.Tensor(np.ones(2), requires_grad=True)
    y = (x * 2).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_deep_graph_needs_no_recursion():
    x = ma.Tensor(np.array(1.0), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y + 1
    y.backward()
    assert x.grad == 1.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_preserved_through_forward_and_backward(dtype):
    x = ma.Tensor(np.ones((2, 3, 6, 6), dtype), requires_grad=True)
    w = ma.Tensor(np.ones((4, 3, 3, 3), dtype), requires_grad=True)
    y = F.adder2d(x, w, padding=1)
    loss = F.mean(F.relu(y + 30.0) * 0.5)
    loss.backward()
    assert y.dtype == dtype and loss.dtype == dtype
    assert x.grad.dtype == dtype and w.grad.dtype == dtype


def test_python_floats_become_float32_and_numpy_float64_stays():
    assert ma.Tensor([1.0, 2.0]).dtype == np.float32
    assert ma.Tensor(np.zeros(2)).dtype == np.float64
    assert ma.Tensor(np.float64(1.0)).dtype == np.float64
    assert (ma.Tensor(np.zeros(2, np.float32)) + 1.5).dtype == np.float32


def test_custom_function_gets_needs_input_grad():
    seen = {}

    class Twice(ma.Function):
        @staticmethod
        def forward(ctx, a, b):
            seen["needs"] = ctx.needs_input_grad
            return a * 2 + b

        @staticmethod
        def backward(ctx, g):
            return 2 * g, g

    a = ma.Tensor(np.ones(2), requires_grad=True)
    b = ma.Tensor(np.ones(2))
    Twice.apply(a, b).sum().backward()
    assert seen["needs"] == (True, False)
    np.testing.assert_allclose(a.grad, [2, 2])
    assert b.grad is None


# --------------------------------------------- a Function that adds its input's other gradients
class _TwiceAdding(ma.Function):
    """y = 2x, whose backward adds the gradient x gathered so far (tensor.Function's
    adds_to_first_grad), and records what it was given."""
    adds_to_first_grad = True
    given = []

    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, g, gathered=None):
        _TwiceAdding.given.append(None if gathered is None else gathered.copy())
        return 2 * g if gathered is None else 2 * g + gathered


def test_a_function_that_adds_to_its_first_grad_gets_what_its_input_gathered():
    """z = 2x feeds u = z + x: the addition's node comes first in the backward and leaves
    x's gradient 1; the adding Function gets it, returns 2 + 1, and the engine does not add
    it a second time."""
    _TwiceAdding.given.clear()
    x = ma.Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    (_TwiceAdding.apply(x) + x).sum().backward()
    np.testing.assert_allclose(x.grad, [3.0, 3.0, 3.0])
    assert len(_TwiceAdding.given) == 1
    np.testing.assert_array_equal(_TwiceAdding.given[0], [1.0, 1.0, 1.0])


def test_a_function_that_adds_to_its_first_grad_alone_gets_none():
    _TwiceAdding.given.clear()
    x = ma.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    _TwiceAdding.apply(x).sum().backward()
    assert _TwiceAdding.given == [None]
    np.testing.assert_allclose(x.grad, [2.0, 2.0])


@pytest.mark.parametrize("backend_name", ["numpy", "cpu"])
@pytest.mark.parametrize("layer", ["adder", "conv"])
def test_a_residual_blocks_input_gradient_is_its_two_paths(backend_name, layer):
    """x feeds an adder (or ordinary) convolution and the block's shortcut, as in a ResNet:
    its gradient, the shortcut's added inside the layer's backward, equals the sum of the
    two paths computed apart (the layer alone, and the shortcut's upstream gradient)."""
    if backend_name == "cpu":
        pytest.importorskip("numba")
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((3, 4, 9, 9)).astype(np.float32)
    w = ma.Tensor(rng.standard_normal((4, 4, 3, 3)).astype(np.float32))
    g = rng.standard_normal((3, 4, 9, 9)).astype(np.float32)
    fn = (lambda t: F.adder2d(t, w, 1, 1)) if layer == "adder" else (lambda t: F.conv2d(t, w, None, 1, 1))
    with ma.use_backend(backend_name):
        x = ma.Tensor(x0, requires_grad=True)
        (fn(x) + x).backward(g)
        alone = ma.Tensor(x0, requires_grad=True)
        fn(alone).backward(g)
    np.testing.assert_array_equal(x.grad, alone.grad + g)


def test_transpose_with_negative_axes_gets_the_inverse_permutation_back():
    """np.transpose counts negative axes from the end; the backward's argsort of the axes
    as given was wrong (a shape error, or on equal sides a silently wrong gradient)."""
    g = np.arange(24.0).reshape(4, 2, 3)
    a = ma.Tensor(np.zeros((2, 3, 4)), requires_grad=True)
    F.transpose(a, (-1, 0, 1)).backward(g)
    np.testing.assert_array_equal(a.grad, g.transpose(1, 2, 0))
    cube, g = ma.Tensor(np.zeros((2, 2, 2)), requires_grad=True), np.arange(8.0).reshape(2, 2, 2)
    F.transpose(cube, (1, -1, 0)).backward(g)
    np.testing.assert_array_equal(cube.grad, g.transpose(2, 0, 1))
    with pytest.raises(ValueError, match=r"transpose: axes \(0, 0, 1\) are not a permutation"):
        F.transpose(cube, (0, 0, 1))


def test_the_power_zero_has_a_zero_gradient_at_zero():
    """d(a ** 0)/da = 0; the general rule gave 0 * 0 ** -1 = nan at a = 0 (PyTorch gives 0)."""
    a = ma.Tensor(np.array([0.0, 2.0]), requires_grad=True)
    F.sum(a ** 0).backward()
    np.testing.assert_array_equal(a.grad, [0.0, 0.0])
