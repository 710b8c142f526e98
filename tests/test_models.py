"""The networks (proofs/mathematics.md, section 6): output shapes, which layers are adder layers,
and the one description (minadder.architectures) each is built from."""
import numpy as np
import pytest

import minadder
from minadder import Tensor, architectures, models, nn



@pytest.fixture(autouse=True)
def numpy_backend():
    with minadder.use_backend("numpy"):
        yield

WEIGHT_LAYERS = (nn.Adder2d, nn.AdderLinear, nn.Conv2d, nn.Linear)
CIFAR_NETS = ("vgg_small", "resnet20", "resnet32")


def weight_layers(model):
    return [(name, m) for name, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)]


def is_adder(module):
    return isinstance(module, (nn.Adder2d, nn.AdderLinear))


@pytest.mark.parametrize("name, shape", [("lenet5_bn", (1, 32, 32)), ("lenet_pp", (1, 32, 32)),
                                         ("resnet20", (3, 32, 32))])
@pytest.mark.parametrize("kind", ["adder", "cnn"])
def test_logits_shape_and_backward(name, shape, kind):
    model = models.build_model(name, kind=kind, num_classes=7)
    assert model.input_shape() == shape
    x = Tensor(np.random.default_rng(0).standard_normal((3, *shape)).astype(np.float32))
    y = model(x)
    assert y.shape == (3, 7) and y.dtype == np.float32
    y.sum().backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in model.parameters())


@pytest.mark.parametrize("name", ["vgg_small", "resnet32"])
def test_bigger_cifar_nets_run_eval_forward(name):
    # eval mode on two images keeps this cheap; shapes only
    model = models.build_model(name, kind="cnn", num_classes=100).eval()
    with minadder.no_grad():
        y = model(Tensor(np.zeros((2, 3, 32, 32), np.float32)))
    assert y.shape == (2, 100)


def test_lenet5_bn_is_all_adder_layers_each_followed_by_bn():
    model = models.lenet5_bn(kind="adder")
    layers = weight_layers(model)
    assert [n for n, _ in layers] == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    assert all(is_adder(m) for _, m in layers)
    # the last adder layer gets a BN on the logits too
    assert isinstance(model.bn5, nn.BatchNorm1d) and model.bn5.running_mean.shape == (10,)
    assert (model.first_layer, model.last_layer) == ("conv1", "fc3")
    assert model.fc1.weight.shape == (120, 400)


def test_cnn_twin_has_no_adder_layer_and_same_shapes():
    for name in models.MODELS:
        adder, cnn = models.build_model(name, kind="adder"), models.build_model(name, kind="cnn")
        assert not any(is_adder(m) for _, m in weight_layers(cnn))
        assert [(n, p.shape) for n, p in adder.named_parameters()] == [(n, p.shape) for n, p in cnn.named_parameters()]


@pytest.mark.parametrize("name", CIFAR_NETS)
def test_cifar_nets_keep_first_and_last_full_precision(name):
    model = models.build_model(name, kind="adder")
    layers = dict(weight_layers(model))
    first, last = layers.pop(model.first_layer), layers.pop(model.last_layer)
    assert isinstance(first, nn.Conv2d) and isinstance(last, nn.Linear)
    assert layers and all(is_adder(m) for m in layers.values())


def test_resnet20_structure():
    model = models.resnet20(kind="adder", grad_mode="sign")
    layers = dict(weight_layers(model))
    assert len(layers) == 1 + 18 + 2 + 1  # first conv, 9 blocks x 2, two 1x1 shortcuts, classifier
    shortcut = layers["layer2.0.downsample.0"]
    assert isinstance(shortcut, nn.Adder2d) and shortcut.weight.shape == (32, 16, 1, 1) and shortcut.stride == 2
    assert isinstance(model.layer2[0].downsample[1], nn.BatchNorm2d)
    assert model.layer1[0].downsample is None
    assert all(m.grad_mode == "sign" for m in layers.values() if is_adder(m))
    assert isinstance(model.bn2, nn.BatchNorm1d)  # BN on the logits, as the reference code
    assert len(dict(weight_layers(models.resnet32()))) == 1 + 30 + 2 + 1


def test_vgg_small_widths():
    model = models.vgg_small(kind="adder")
    shapes = [m.weight.shape for _, m in weight_layers(model)]
    assert shapes == [(128, 3, 3, 3), (128, 128, 3, 3), (256, 128, 3, 3), (256, 256, 3, 3),
                      (512, 256, 3, 3), (512, 512, 3, 3), (10, 8192)]


def test_lenet_pp_features():
    model = models.lenet_pp(kind="adder")
    widths = [m.weight.shape[0] for n, m in weight_layers(model) if n.startswith("conv")]
    assert widths == [32, 32, 64, 64, 128, 128]
    x = Tensor(np.random.default_rng(1).standard_normal((4, 1, 32, 32)).astype(np.float32))
    logits, feats = model(x, return_features=True)
    assert feats.shape == (4, 3) and logits.shape == (4, 10)
    np.testing.assert_array_equal(model.features(x).data, feats.data)
    assert is_adder(model.fc)  # the classifier scores -||f - w_t||_1


def test_same_seed_same_weights():
    minadder.manual_seed(5)
    a = models.resnet20().state_dict()
    minadder.manual_seed(5)
    b = models.resnet20().state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kwargs, match", [
    ({"kind": "xnor"}, "kind must be one of"),
    ({"kind": "cnn", "distance": "l2"}, "applies to kind=.adder. only"),
    ({"distance": "l2", "grad_mode": "sign"}, "applies to the l1 distance only"),
    ({"distance": "l3"}, "distance must be one of"),
    ({"grad_mode": "exact"}, "grad_mode must be one of"),
    ({"num_classes": 1}, "num_classes must be an integer >= 2"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.lenet5_bn(**kwargs)


def test_lenet_pp_widths_are_part_of_its_description():
    model = models.lenet_pp("cnn", widths=(2, 2, 3, 3, 4, 4), input_size=16, feature_dim=2)
    assert [m.weight.shape[0] for n, m in weight_layers(model)] == [2, 2, 3, 3, 4, 4, 2, 10]
    assert model.feature.weight.shape == (2, 4 * 2 * 2)
    assert model.config()["widths"] == (2, 2, 3, 3, 4, 4) and model.config()["feature_dim"] == 2
    again = models.build_model("lenet_pp", **model.config())
    assert [(n, p.shape) for n, p in again.named_parameters()] == [(n, p.shape) for n, p in model.named_parameters()]
    with pytest.raises(ValueError, match="widths must be 6 channel counts"):
        models.lenet_pp(widths=(2, 2))


def test_only_lenet_pp_has_features():
    x = Tensor(np.zeros((2, 1, 32, 32), np.float32))
    with pytest.raises(ValueError, match="lenet5_bn has no feature layer"):
        models.lenet5_bn().features(x)
    with pytest.raises(ValueError, match="lenet5_bn has no feature layer"):
        models.lenet5_bn()(x, return_features=True)


@pytest.mark.parametrize("name", list(models.MODELS))
def test_the_description_names_every_module_and_records_what_was_asked(name):
    model = models.build_model(name, kind="adder", grad_mode="sign", num_classes=5)
    described = model.architecture
    assert isinstance(described, architectures.Architecture) and described == architectures.DESCRIPTIONS[name](
        kind="adder", grad_mode="sign", num_classes=5)
    assert (model.name, model.kind, model.grad_mode, model.num_classes) == (name, "adder", "sign", 5)
    top = [r.name for r in described.layers if getattr(r, "name", None)]
    assert top == list(model._modules)                      # the records' names, in their order
    assert name in repr(model)


def test_descriptions_compute_their_flattened_sizes():
    # LeNet-5 on 28x28 (no padding to 32): 28 -> 24 -> 12 -> 8 -> 4, so fc1 takes 16*4*4
    assert models.lenet5_bn(input_size=28).fc1.weight.shape == (120, 256)
    assert models.vgg_small(input_size=16).fc.weight.shape == (10, 512 * 2 * 2)
    assert architectures.spatial_size(architectures.lenet5_bn().layers, 32) == 5


def test_bad_input_shape_and_name():
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 1, 32, 32\), got \(2, 1, 28, 28\)"):
        models.lenet5_bn()(Tensor(np.zeros((2, 1, 28, 28), np.float32)))
    with pytest.raises(ValueError, match="unknown model 'resnet18'"):
        models.build_model("resnet18")
    with pytest.raises(ValueError, match="depth must be 6n"):
        architectures.resnet(21)


@pytest.mark.parametrize("name, kind, shape", [("resnet20", "adder", (2, 3, 32, 32)), ("lenet5_bn", "cnn", (3, 1, 32, 32)),
                                               ("resnet20", "bnn", (2, 3, 32, 32))])
def test_batch_norm_and_relu_fused_compute_what_the_two_layers_do(name, kind, shape, monkeypatch):
    """frameworks.run applies a batch norm record and the ReLU after it as one fused layer
    (F.batch_norm(relu=True)), and a basic block its last batch norm, the shortcut's
    addition and the ReLU (residual=): the logits, every gradient and the running
    statistics are those of the layers run apart (the framework without batch_norm_relu).
    In a BNN the record stands for HardTanh, which is never fused."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    labels = rng.integers(0, 10, shape[0])

    def step(fuse):
        minadder.manual_seed(0)
        model = models.build_model(name, kind=kind)
        if not fuse:
            for module in model.modules():
                if getattr(module, "framework", None) is models.LAYERS:
                    module.framework = models.LAYERS._replace(batch_norm_relu=None)
        calls = []
        monkeypatch.setattr(nn.BatchNorm2d, "forward", _counting(nn.BatchNorm2d.forward, calls))
        logits = model(Tensor(x))
        minadder.functional.cross_entropy(logits, labels).backward()
        return logits.data, {n: p.grad for n, p in model.named_parameters()}, model.state_dict(), calls

    fused, apart = step(True), step(False)
    np.testing.assert_allclose(fused[0], apart[0], rtol=1e-5, atol=1e-6)
    for n in apart[1]:
        np.testing.assert_allclose(fused[1][n], apart[1][n], rtol=1e-4, atol=1e-6, err_msg=n)
    for n in apart[2]:
        np.testing.assert_allclose(fused[2][n], apart[2][n], rtol=1e-5, atol=1e-6, err_msg=n)
    assert not any(relu or residual for relu, residual in apart[3])
    assert any(relu for relu, _ in fused[3]) == (kind != "bnn")   # the fused layer ran (none in the BNN)
    # and ResNet's block ends, relu(bn(out) + shortcut), as one layer (a BNN's end in HardTanh)
    assert any(residual for _, residual in fused[3]) == (name == "resnet20" and kind != "bnn")


def _counting(forward, calls):
    """forward, recording whether each call fused its ReLU, and a residual."""
    def counted(self, x, relu=False, residual=None):
        calls.append((relu, residual is not None))
        return forward(self, x, relu, residual)
    return counted
