"""What the engine refuses, as PyTorch does: gradients of non-floating tensors, partial or
ill-typed state dicts, and layer sizes that cannot make a layer (issue 24, item 6)."""
import zipfile

import numpy as np
import pytest

import minadder as ma
from minadder import bounded, nn

PYTORCH_MESSAGE = "Only Tensors of floating point"


# ------------------------------------------------------------ requires_grad only for floats
@pytest.mark.parametrize("data", [np.arange(3), np.array([True, False]), [1, 2, 3], np.arange(3, dtype=np.uint8)])
def test_integer_and_bool_tensors_cannot_require_grad(data):
    with pytest.raises(RuntimeError, match=PYTORCH_MESSAGE):
        ma.Tensor(data, requires_grad=True)
    t = ma.Tensor(data)
    with pytest.raises(RuntimeError, match=PYTORCH_MESSAGE):
        t.requires_grad = True                       # the setter refuses too
    assert t.requires_grad is False
    with pytest.raises(RuntimeError, match=PYTORCH_MESSAGE):
        nn.Parameter(data)


def test_pytorch_refuses_the_same_tensors():
    """The reference behaviour the engine copies."""
    torch = pytest.importorskip("torch")
    with pytest.raises(RuntimeError, match=PYTORCH_MESSAGE):
        torch.tensor([1, 2, 3], requires_grad=True)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_floating_tensors_still_take_gradients_in_their_dtype(dtype):
    x = ma.Tensor(np.array([1.0, -2.0, 3.0], dtype), requires_grad=True)
    (x * x).sum().backward()
    assert x.grad.dtype == dtype
    np.testing.assert_allclose(x.grad, [2.0, -4.0, 6.0])


def test_an_integer_constant_in_a_graph_gets_no_gradient():
    w = ma.Tensor(np.array([0.5, 1.5], np.float32), requires_grad=True)
    k = ma.Tensor(np.array([2, 3]))                  # integers: a constant of the graph
    y = (w * k).sum()
    y.backward()
    np.testing.assert_allclose(w.grad, [2.0, 3.0])
    assert k.grad is None and not k.requires_grad


# -------------------------------------------------------------- load_state_dict: all or nothing
def small_net():
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(2, 3))


def unchanged(net, before):
    return all(np.array_equal(v, before[k]) for k, v in net.state_dict().items())


@pytest.mark.parametrize("bad", [
    np.zeros((3, 2), np.complex64),                  # complex: its imaginary part would be dropped
    np.array([["a", "b"]] * 3),                      # text
    np.zeros((3, 2), np.int64),                      # integers for a float parameter
    np.zeros((3, 2), object),
])
def test_a_bad_dtype_late_in_the_state_changes_nothing(bad):
    net = small_net()
    before = net.state_dict()
    state = {k: v + 1 for k, v in before.items()}    # every entry new, the last one bad
    state["4.weight"] = bad
    with pytest.raises(ValueError, match=r"load_state_dict: 4\.weight has dtype"):
        net.load_state_dict(state)
    assert unchanged(net, before)


def test_a_float64_state_loads_into_float32_and_non_finite_values_are_accepted():
    net = small_net()
    state = {k: v.astype(np.float64) for k, v in net.state_dict().items()}
    state["0.bias"] = np.array([np.inf, np.nan])     # PyTorch loads them as they are; so does minadder
    net.load_state_dict(state)
    assert net[0].bias.dtype == np.float32
    assert np.isposinf(net[0].bias.data[0]) and np.isnan(net[0].bias.data[1])


def test_strict_lists_missing_and_unexpected_keys_and_non_strict_skips_them():
    net = small_net()
    before = net.state_dict()
    state = dict(before)
    del state["1.running_var"]
    state["5.weight"] = np.ones(3, np.float32)
    with pytest.raises(ValueError, match=r"missing entries: 1\.running_var.*unexpected entries: 5\.weight"):
        net.load_state_dict(state)
    state["0.bias"] = np.array([7.0, 8.0], np.float32)
    result = net.load_state_dict(state, strict=False)
    assert result.missing_keys == ["1.running_var"] and result.unexpected_keys == ["5.weight"]
    np.testing.assert_array_equal(net[0].bias.data, [7.0, 8.0])
    with pytest.raises(ValueError, match=r"0\.weight has shape"):        # shapes are checked either way
        net.load_state_dict({"0.weight": np.zeros(3, np.float32)}, strict=False)


def test_nn_load_checks_sizes_before_allocating_and_names_the_file(tmp_path):
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as zf, zf.open("w.npy", "w") as f:   # a header asking for 4 TB
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)})
        f.write(b"\0" * 16)
    with pytest.raises(bounded.FileRejected, match=r"huge\.npz: entry 'w': shape"):
        nn.load(path)
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(bounded.FileRejected, match=r"text\.npz: not a readable \.npz file"):
        nn.load(tmp_path / "text.npz")


# -------------------------------------------------------- sizes checked at construction
@pytest.mark.parametrize("make, match", [
    (lambda: nn.Adder2d(3, 4, 0), "Adder2d: kernel_size must be an integer >= 1, got 0"),
    (lambda: nn.Adder2d(3, 4, -3), "Adder2d: kernel_size must be an integer >= 1, got -3"),
    (lambda: nn.Adder2d(3, 4, True), "Adder2d: kernel_size must be an integer >= 1, got True"),
    (lambda: nn.Adder2d(3, 4, 2.0), "Adder2d: kernel_size must be an integer >= 1, got 2.0"),
    (lambda: nn.Adder2d(0, 4, 3), "Adder2d: in_channels must be an integer >= 1, got 0"),
    (lambda: nn.Adder2d(3, 4, 3, stride=0), "Adder2d: stride must be an integer >= 1, got 0"),
    (lambda: nn.Adder2d(3, 4, 3, padding=-1), "Adder2d: padding must be an integer >= 0, got -1"),
    (lambda: nn.Conv2d(3, 4, 0), "Conv2d: kernel_size must be an integer >= 1, got 0"),
    (lambda: nn.Conv2d(3, -4, 3), "Conv2d: out_channels must be an integer >= 1, got -4"),
    (lambda: nn.Conv2d(3, 4, 3, stride=False), "Conv2d: stride must be an integer >= 1, got False"),
    (lambda: nn.Linear(0, 4), "Linear: in_features must be an integer >= 1, got 0"),
    (lambda: nn.AdderLinear(3, 0), "AdderLinear: out_features must be an integer >= 1, got 0"),
    (lambda: nn.BatchNorm2d(0), "BatchNorm2d: num_features must be an integer >= 1, got 0"),
    (lambda: nn.BatchNorm1d(4, eps=0), r"BatchNorm1d: eps must be a finite number > 0"),
    (lambda: nn.BatchNorm1d(4, momentum=2), r"BatchNorm1d: momentum must be in \[0, 1\]"),
    (lambda: nn.MaxPool2d(0), "MaxPool2d: kernel_size must be an integer >= 1, got 0"),
    (lambda: nn.AvgPool2d(2, stride=0), "AvgPool2d: stride must be an integer >= 1, got 0"),
    (lambda: nn.MaxPool2d(2, padding=2), "MaxPool2d: padding 2 must be at most half the kernel size 2"),
])
def test_layers_refuse_impossible_sizes_when_built(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_valid_layers_still_build_and_run():
    x = ma.Tensor(np.ones((2, 1, 6, 6), np.float32))
    net = nn.Sequential(nn.Adder2d(1, 2, np.int64(3), padding=1), nn.MaxPool2d(2, padding=1), nn.AvgPool2d(2),
                        nn.Flatten(), nn.AdderLinear(8, 3))
    assert net(x).shape == (2, 3)
