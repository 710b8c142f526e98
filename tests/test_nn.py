"""Modules, parameters, state dicts and checkpoints."""
import numpy as np
import pytest

import minadder as ma
from minadder import nn


def small_net(grad_mode="full"):
    return nn.Sequential(
        nn.Adder2d(1, 4, 3, padding=1, grad_mode=grad_mode), nn.BatchNorm2d(4), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.AdderLinear(4 * 4 * 4, 3, grad_mode=grad_mode), nn.BatchNorm1d(3))


def test_parameters_are_found_in_order_with_names():
    net = small_net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["0.weight", "1.weight", "1.bias", "5.weight", "6.weight", "6.bias"]
    assert [p.is_adder for p in net.parameters()] == [True, False, False, True, False, False]
    assert set(net.state_dict()) == set(names) | {"1.running_mean", "1.running_var",
                                                  "6.running_mean", "6.running_var"}


def test_adder_filters_start_standard_normal():
    ma.manual_seed(0)
    w = nn.Adder2d(64, 64, 3).weight.data
    assert w.shape == (64, 64, 3, 3) and w.dtype == np.float32
    assert abs(w.mean()) < 0.02 and abs(w.std() - 1) < 0.02


def test_manual_seed_makes_initialisation_repeatable():
    ma.manual_seed(5)
    a = small_net().state_dict()
    ma.manual_seed(5)
    b = small_net().state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_train_and_eval_switch_batch_norm():
    net = small_net()
    x = ma.Tensor(np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32))
    net(x)
    rm = net[1].running_mean.copy()
    assert not np.allclose(rm, 0)
    net.eval()
    assert not net[1].training
    net(x)
    np.testing.assert_array_equal(net[1].running_mean, rm)   # eval leaves running stats alone
    net.train()
    assert net[1].training


def test_state_dict_save_load_round_trip(tmp_path):
    net = small_net()
    net(ma.Tensor(np.ones((2, 1, 8, 8), np.float32)))
    path = tmp_path / "ckpt.npz"
    nn.save(net.state_dict(), path)
    other = small_net()
    other.load_state_dict(nn.load(path))
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[k], v)


def test_load_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, w=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        nn.load(path)


def test_load_state_dict_with_missing_or_misshaped_entries_changes_nothing():
    net = small_net()
    before = net.state_dict()
    state = dict(before)
    state["0.weight"] = np.zeros((4, 1, 5, 5), np.float32)
    del state["6.bias"]
    state["extra"] = np.zeros(1)
    with pytest.raises(ValueError) as err:
        net.load_state_dict({k: (v * 0 if k == "1.weight" else v) for k, v in state.items()})
    msg = str(err.value)
    assert "6.bias" in msg and "0.weight" in msg and "(4, 1, 3, 3)" in msg and "extra" in msg
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_module_repr_and_zero_grad():
    net = small_net()
    assert "Adder2d(1, 4, kernel_size=3" in repr(net)
    for p in net.parameters():
        p.grad = np.ones_like(p.data)
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_custom_module_registers_children():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(3, 2)
            self.scale = nn.Parameter(np.ones(1, np.float32))

        def forward(self, x):
            return self.body(x) * self.scale

    net = Net()
    assert [n for n, _ in net.named_parameters()] == ["scale", "body.weight", "body.bias"]
    assert net(ma.Tensor(np.ones((1, 3), np.float32))).shape == (1, 2)


def test_setattr_before_init_is_explained():
    class Broken(nn.Module):
        def __init__(self):
            self.w = 1

    with pytest.raises(AttributeError, match="super"):
        Broken()


def test_a_reassigned_buffer_stays_in_the_state_dict():
    bn = nn.BatchNorm2d(3)
    bn.running_mean = np.full(3, 2.0, np.float32)       # a new array, not an in-place update
    state = bn.state_dict()
    np.testing.assert_array_equal(state["running_mean"], [2.0, 2.0, 2.0])
    bn.load_state_dict(dict(state, running_mean=np.full(3, 5.0, np.float32)))
    np.testing.assert_array_equal(bn.running_mean, [5.0, 5.0, 5.0])   # loaded into the new array
    bn.eval()
    y = bn(ma.Tensor(np.full((2, 3, 1, 1), 5.0, np.float32)))          # and used by forward
    np.testing.assert_allclose(y.data, 0.0, atol=1e-6)


def test_a_buffer_replaced_by_a_parameter_is_a_parameter_only():
    bn = nn.BatchNorm1d(2)
    bn.running_var = nn.Parameter(np.ones(2, np.float32))
    assert "running_var" in dict(bn.named_parameters())
    assert "running_var" not in dict(bn.named_buffers())


def test_avg_pool_is_not_a_kind_of_max_pool():
    x = ma.Tensor(np.array([[[[1.0, 3.0], [5.0, 7.0]]]], np.float32))
    assert not isinstance(nn.AvgPool2d(2), nn.MaxPool2d)
    assert nn.AvgPool2d(2)(x).item() == 4.0 and nn.MaxPool2d(2)(x).item() == 7.0
    assert repr(nn.AvgPool2d(2)) == "AvgPool2d(kernel_size=2)"


def test_named_modules_follow_pytorchs_names():
    block = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sequential(nn.BatchNorm2d(2), nn.ReLU()))
    net = nn.Sequential(block, nn.Flatten())
    names = [n for n, _ in net.named_modules()]
    assert names == ["", "0", "0.0", "0.1", "0.1.0", "0.1.1", "1"]
    assert dict(net.named_modules())["0.1.0"] is block[1][0]
    assert [n for n, _ in net.named_parameters()] == ["0.0.weight", "0.0.bias", "0.1.0.weight", "0.1.0.bias"]
    assert [n for n, _ in net.named_buffers()] == ["0.1.0.running_mean", "0.1.0.running_var"]


def test_forward_hook_sees_inputs_and_output_and_may_replace_the_output():
    net = small_net().eval()
    x = ma.Tensor(np.random.default_rng(3).standard_normal((2, 1, 8, 8)).astype(np.float32))
    calls = []

    def record(module, inputs, output):
        calls.append((module, inputs, output.shape))   # returns None: the output stays

    handle = net[2].register_forward_hook(record)
    y = net(x)
    assert len(calls) == 1 and calls[0][0] is net[2] and calls[0][2] == (2, 4, 8, 8)
    assert len(calls[0][1]) == 1 and calls[0][1][0].shape == (2, 4, 8, 8)   # (input,) of the ReLU
    ones = ma.Tensor(np.ones((2, 64), np.float32))
    swap = net[4].register_forward_hook(lambda m, inputs, out: ones)   # replaces Flatten's output
    y1 = net(x)
    assert y1.shape == y.shape and not np.allclose(y1.data, y.data)
    np.testing.assert_array_equal(net[6](net[5](ones)).data, y1.data)
    handle.remove()
    swap.remove()
    swap.remove()                                    # removing twice is harmless
    np.testing.assert_array_equal(net(x).data, y.data)
    assert len(calls) == 2


def test_hooks_run_in_registration_order_and_are_called_through_call_only():
    layer, order = nn.ReLU(), []
    layer.register_forward_hook(lambda m, i, o: order.append("a"))
    layer.register_forward_hook(lambda m, i, o: order.append("b"))
    x = ma.Tensor(np.ones((1, 2), np.float32))
    layer(x)
    layer.forward(x)                                 # forward itself does not run hooks
    assert order == ["a", "b"]


def test_sequential_refuses_what_is_not_a_module():
    """A function given to Sequential became a plain attribute that forward skipped: the
    net ran without its ReLU, silently. PyTorch raises a TypeError too."""
    with pytest.raises(TypeError, match="Sequential: entry 1 is a function, not a Module"):
        nn.Sequential(nn.Linear(4, 3), ma.functional.relu)


def test_a_shared_module_is_listed_once_and_stepped_once():
    """Sequential(lin, lin) applies lin twice, but its parameters are one set: listed once
    (under their first name, as PyTorch does), so SGD steps them once."""
    ma.manual_seed(0)
    lin = nn.Linear(2, 2)
    net = nn.Sequential(lin, lin)
    assert len(net) == 2 and [name for name, _ in net.named_parameters()] == ["0.weight", "0.bias"]
    assert list(net.state_dict()) == ["0.weight", "0.bias"] and len(net.modules()) == 2
    x = ma.Tensor(np.ones((1, 2), np.float32))
    ma.functional.sum(net(x)).backward()
    w0, g = lin.weight.data.copy(), lin.weight.grad.copy()
    ma.optim.SGD(net.parameters(), lr=0.1).step()
    np.testing.assert_allclose(lin.weight.data, w0 - np.float32(0.1) * g, rtol=1e-6)


def test_save_and_load_state_dict_take_tensors_and_refuse_objects(tmp_path):
    """dict(named_parameters()) holds Parameters: save wrote them as pickled objects, which
    load then refused; now their data are written. What NumPy can only pickle is refused
    before anything is written."""
    ma.manual_seed(0)
    lin = nn.Linear(2, 2)
    nn.save(dict(lin.named_parameters()), tmp_path / "p.npz")
    loaded = nn.load(tmp_path / "p.npz")
    np.testing.assert_array_equal(loaded["weight"], lin.weight.data)
    other = nn.Linear(2, 2)
    other.load_state_dict(dict(lin.named_parameters()))
    np.testing.assert_array_equal(other.weight.data, lin.weight.data)
    with pytest.raises(TypeError, match="save: entries note are not numeric arrays"):
        nn.save({"weight": lin.weight.data, "note": {"a": 1}}, tmp_path / "q.npz")
    assert not (tmp_path / "q.npz").exists()
