"""distance="l2" through the networks, the training configuration, checkpoints, the op
counter and the PyTorch bridge; checkpoints from before the option load as l1."""
import json

import numpy as np
import pytest

import minadder as ma
from minadder import count, models
from minadder.train import TrainConfig, config_from_dict


@pytest.mark.parametrize("name", ["lenet5_bn", "resnet20", "lenet_pp"])
def test_every_adder_layer_of_an_l2_network_is_l2_and_its_config_rebuilds_it(name):
    model = models.build_model(name, kind="adder", distance="l2")
    adders = [m for _, m in model.named_modules() if isinstance(m, (ma.nn.Adder2d, ma.nn.AdderLinear))]
    assert adders and all(m.distance == "l2" for m in adders)
    again = models.build_model(name, **model.config())
    assert all(m.distance == "l2" for _, m in again.named_modules() if isinstance(m, (ma.nn.Adder2d, ma.nn.AdderLinear)))


def test_a_saved_configuration_without_distance_is_an_l1_one():
    saved = {k: v for k, v in TrainConfig().__dict__.items() if k != "distance"}
    config = config_from_dict(saved)
    assert config.distance == "l1"
    model = config.build_network(10, 1, 32)
    assert {m.distance for _, m in model.named_modules() if isinstance(m, ma.nn.Adder2d)} == {"l1"}


def test_the_committed_checkpoint_from_before_the_option_is_l1():
    from minadder.train.checkpoint import checkpoint_path, read_checkpoint
    saved = read_checkpoint(checkpoint_path("results/cifar10-resnet20-adder-30ep", what="test"), optimizer=False)
    assert "distance" not in saved.config
    assert config_from_dict(saved.config).distance == "l1"


@pytest.mark.parametrize("changes, match", [
    ({"distance": "l3"}, "--distance must be one of"),
    ({"distance": "l2", "kind": "cnn"}, "--distance l2 applies to --kind adder only"),
    ({"distance": "l2", "grad_mode": "sign"}, "--grad-mode sign applies to the l1 distance only"),
])
def test_bad_distance_options_are_refused_naming_the_flag(changes, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**changes).validate()


def test_an_l2_layer_multiplies_once_per_term():
    l1 = count.count("lenet5_bn", "adder")
    l2 = count.count("lenet5_bn", "adder", distance="l2")
    cnn = count.count("lenet5_bn", "cnn")
    assert l1["totals"]["all"]["mul"] == 0
    assert l2["totals"]["all"]["mul"] == cnn["totals"]["all"]["mul"] > 0
    assert l2["totals"]["all"]["add"] == l1["totals"]["all"]["add"]
    assert l1["table"]["adder_l2"] == l2["totals"]
    assert "l2-AdderNet" in count.format_report(l2) and "AddNN-l2" in count.format_report(l1)


def test_the_torch_bridge_carries_the_distance_both_ways(tmp_path):
    torch = pytest.importorskip("torch")
    from minadder.torch import models as torch_models
    from minadder.torch.convert import from_minadder, to_minadder
    from minadder.torch.weights import load_safetensors_model, read_metadata, save_safetensors
    pytest.importorskip("safetensors")
    ma.manual_seed(1)
    model = models.lenet5_bn("adder", distance="l2")
    twin = from_minadder(model)
    assert {m.distance for m in twin.modules() if hasattr(m, "distance")} == {"l2"}
    x = np.random.default_rng(0).standard_normal((3, 1, 32, 32)).astype(np.float32)
    model.eval(), twin.eval()
    np.testing.assert_allclose(twin(torch.tensor(x)).detach().numpy(), model(ma.Tensor(x)).data, rtol=1e-4, atol=1e-3)
    back = to_minadder(twin)
    assert back.distance == "l2" and back.conv2.distance == "l2"
    path = tmp_path / "l2.safetensors"
    save_safetensors(model, path)
    assert read_metadata(path)["distance"] == "l2"
    assert json.loads(read_metadata(path)["config"])["distance"] == "l2"
    loaded = load_safetensors_model(path, framework="torch")
    assert isinstance(loaded, torch_models.Network) and loaded.conv2.distance == "l2"


def test_the_torch_l2_layer_gradients_equal_the_definition():
    torch = pytest.importorskip("torch")
    from minadder.torch.layers import Adder2d
    layer = Adder2d(2, 3, 3, stride=2, padding=1, distance="l2", dtype=torch.float64)
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    w = layer.weight.detach().clone().requires_grad_(True)
    xd = x.detach().clone().requires_grad_(True)
    cols = torch.nn.functional.unfold(xd, 3, padding=1, stride=2)               # (N, K, L)
    want = -((cols[:, None] - w.reshape(3, -1)[None, :, :, None]) ** 2).sum(2).reshape(y.shape)
    torch.testing.assert_close(y, want)
    g = torch.randn_like(y)
    y.backward(g)
    want.backward(g)
    torch.testing.assert_close(x.grad, xd.grad)
    torch.testing.assert_close(layer.weight.grad, w.grad)
    with pytest.raises(ValueError, match="l1 distance only"):
        Adder2d(2, 3, 3, distance="l2", grad_mode="sign")
