"""Weights both ways between minadder and minadder.torch, reference checkpoints, safetensors."""
import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason='minadder.torch needs PyTorch: pip install "minadder[torch]"')
pytest.importorskip("safetensors", reason='safetensors is part of the torch extra: pip install "minadder[torch]"')

import minadder  # noqa: E402
import minadder.torch as mt  # noqa: E402
from minadder import Tensor, models, no_grad  # noqa: E402

BUILDERS = [("resnet20", "adder"), ("resnet20", "cnn"), ("lenet5_bn", "adder"), ("lenet5_bn", "cnn"),
            ("lenet_pp", "adder"), ("vgg_small", "cnn")]


def _input(name, n=4, seed=0):
    shape = (n, 1, 32, 32) if name.startswith("lenet") else (n, 3, 32, 32)
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _perturb_batch_norms(module):
    """Running statistics and affine parameters away from their initial values."""
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen))
    return module


def _logits_minadder(model, x):
    with minadder.use_backend("cpu"), no_grad():
        return model(Tensor(x)).data


@pytest.mark.parametrize("name, kind", BUILDERS)
def test_torch_to_minadder_and_back_bit_for_bit_with_the_same_logits(name, kind):
    torch.manual_seed(0)
    module = _perturb_batch_norms(getattr(mt, name)(kind=kind)).eval()
    model = mt.to_minadder(module)
    assert type(model) is type(models.build_model(name, kind=kind)) and not model.training
    ours = {k: v.detach().numpy() for k, v in module.state_dict().items() if "num_batches" not in k}
    theirs = model.state_dict()
    assert sorted(ours) == sorted(theirs)
    for key in ours:
        assert ours[key].dtype == theirs[key].dtype and np.array_equal(ours[key], theirs[key]), key
    back = mt.from_minadder(model)
    for key, value in module.state_dict().items():
        assert torch.equal(value, back.state_dict()[key]), key
    x = _input(name)
    with torch.no_grad():
        logits = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_logits_minadder(model, x), logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["resnet20", "lenet5_bn"])
def test_minadder_to_torch_keeps_grad_mode_classes_and_training_mode(name):
    minadder.manual_seed(1)
    model = models.build_model(name, kind="adder", grad_mode="sign", num_classes=7)
    module = mt.from_minadder(model)
    assert module.grad_mode == "sign" and module.num_classes == 7 and module.training
    assert all(m.grad_mode == "sign" for _, m in mt.adder_modules(module))
    x = _input(name, n=3, seed=2)
    with torch.no_grad():   # training mode: batch statistics on both sides
        logits = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_logits_minadder(model, x), logits, rtol=1e-4, atol=1e-4)


def test_every_network_exists_in_both_with_the_same_state_names_and_shapes():
    assert list(mt.MODELS) == list(models.MODELS)
    for name in models.MODELS:
        for kind in ("adder", "cnn"):
            ours = mt.MODELS[name](kind=kind, num_classes=3).state_dict()
            theirs = models.build_model(name, kind=kind, num_classes=3).state_dict()
            # the same names and shapes (minadder lists the parameters first, then the buffers)
            assert {k: tuple(v.shape) for k, v in ours.items() if "num_batches" not in k} == \
                {k: v.shape for k, v in theirs.items()}, (name, kind)


def test_conversion_reads_each_layers_grad_mode_and_the_class_count_from_the_model():
    model = models.lenet5_bn(kind="adder", grad_mode="full", num_classes=4)
    model.fc2.grad_mode = "sign"             # changed after building: the layer's own mode travels
    module = mt.from_minadder(model)
    modes = {name: m.grad_mode for name, m in mt.adder_modules(module)}
    assert modes == {"conv1": "full", "conv2": "full", "fc1": "full", "fc2": "sign", "fc3": "full"}
    assert module.fc3.weight.shape == (4, 84) and module.num_classes == 4
    back = mt.to_minadder(module)
    assert back.fc2.grad_mode == "sign" and back.conv1.grad_mode == "full"


def test_to_minadder_refuses_what_it_cannot_convert():
    with pytest.raises(TypeError, match="to_minadder: expected a minadder.torch model"):
        mt.to_minadder(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="from_minadder: expected a minadder model"):
        mt.from_minadder(minadder.nn.Linear(2, 2))


# ============================================================================ reference code
def reference_layout(module):
    """A state dict laid out as the paper's reference code saves its ResNet-20: under
    DataParallel (``module.`` prefixes), filters named ``adder``, the classifier a 1x1
    convolution (C, 64, 1, 1)."""
    out = OrderedDict()
    adders = {name for name, _ in mt.adder_modules(module)}
    for key, value in module.state_dict().items():
        layer, _, leaf = key.rpartition(".")
        if layer in adders and leaf == "weight":
            key = f"{layer}.adder"
        if key == "fc.weight":
            value = value.reshape(*value.shape, 1, 1)
        out["module." + key] = value.clone()
    return out


def test_load_reference_checkpoint_from_a_file_and_from_a_state_dict(tmp_path):
    torch.manual_seed(3)
    source = _perturb_batch_norms(mt.resnet20(kind="adder")).eval()
    state = reference_layout(source)
    assert "module.layer1.0.conv1.adder" in state and "module.layer2.0.downsample.0.adder" in state
    assert state["module.fc.weight"].shape == (10, 64, 1, 1)
    path = tmp_path / "ResNet20-AdderNet.pth"
    torch.save(state, path)
    x = torch.from_numpy(_input("resnet20", n=2))
    with torch.no_grad():
        expected = source(x)
    for loaded in (mt.load_reference_checkpoint(path), mt.load_reference_checkpoint(state),
                   mt.load_reference_checkpoint({"state_dict": state})):
        assert not loaded.training
        for key, value in source.state_dict().items():
            assert torch.equal(value, loaded.state_dict()[key]), key
        with torch.no_grad():
            assert torch.equal(loaded(x), expected)


def test_reference_checkpoint_without_batch_counters_and_with_wrong_entries():
    source = mt.resnet20(kind="adder")
    state = OrderedDict((k, v) for k, v in reference_layout(source).items() if "num_batches" not in k)
    mt.load_reference_checkpoint(state)           # old PyTorch versions saved no counters
    del state["module.layer3.2.conv2.adder"]
    state["module.extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing entries: layer3\.2\.conv2\.weight; unexpected entries: extra"):
        mt.load_reference_checkpoint(state)


class _RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_holding_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    state = reference_layout(mt.resnet20(kind="adder"))
    state["payload"] = _RunsCode(marker)
    path = tmp_path / "evil.pth"
    torch.save(state, path)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        mt.load_reference_checkpoint(path)
    assert not marker.exists()


# ============================================================================ safetensors
def test_safetensors_from_torch_into_minadder_and_back(tmp_path):
    from safetensors.numpy import load_file

    torch.manual_seed(4)
    module = _perturb_batch_norms(mt.resnet20(kind="adder"))
    path = tmp_path / "resnet20.safetensors"
    mt.save_safetensors(module, path)
    arrays = load_file(str(path))            # NumPy only
    assert "layer1.0.bn1.num_batches_tracked" not in arrays
    model = models.resnet20(kind="adder")
    model.load_state_dict(arrays)            # minadder's own loader
    for key, value in model.state_dict().items():
        assert np.array_equal(value, module.state_dict()[key].numpy()), key
    path2 = tmp_path / "from_minadder.safetensors"
    mt.save_safetensors(model, path2)
    back = mt.load_safetensors(path2, into=mt.resnet20(kind="adder"))
    for key, value in module.state_dict().items():
        if "num_batches" not in key:
            assert torch.equal(value, back.state_dict()[key]), key
    assert mt.load_safetensors(path2, into=models.resnet20()) is not None


@pytest.mark.parametrize("framework", ["torch", "minadder"])
def test_safetensors_carry_the_grad_mode_and_class_count(tmp_path, framework):
    minadder.manual_seed(6)
    model = models.lenet_pp(kind="adder", grad_mode="sign", num_classes=4, widths=(2, 2, 3, 3, 4, 4), input_size=16)
    path = tmp_path / "lenet_pp.safetensors"
    mt.save_safetensors(model, path)
    info = mt.read_metadata(path)
    assert (info["name"], info["kind"], info["grad_mode"], info["num_classes"]) == ("lenet_pp", "adder", "sign", "4")
    loaded = mt.load_safetensors_model(path, framework)
    assert isinstance(loaded, mt.models.Network if framework == "torch" else models.Network)
    assert loaded.grad_mode == "sign" and loaded.num_classes == 4 and loaded.config()["widths"] == (2, 2, 3, 3, 4, 4)
    assert loaded.conv3.grad_mode == "sign"
    saved = model.state_dict()
    for key, value in loaded.state_dict().items():
        if "num_batches" not in key:
            assert np.array_equal(np.asarray(value), saved[key]), key
    mt.save_safetensors(dict(saved), tmp_path / "bare.safetensors")   # plain arrays say nothing
    with pytest.raises(ValueError, match="does not say which network"):
        mt.load_safetensors_model(tmp_path / "bare.safetensors")


def test_safetensors_shape_mismatch_changes_nothing(tmp_path):
    path = tmp_path / "lenet.safetensors"
    mt.save_safetensors(mt.lenet5_bn(num_classes=5), path)
    target = mt.lenet5_bn(num_classes=10)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ValueError, match=r"load_safetensors: .*fc3\.weight has shape \(5, 84\), expected \(10, 84\)"):
        mt.load_safetensors(path, into=target)
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in before.items())
