"""How the engine is laid out: primitives in ops.py, layers in layers.py, and
``minadder.functional`` still the one namespace that offers them all."""
import minadder as ma
from minadder import functional as F
from minadder import layers, ops

# every public name functional.py had before it was split into ops.py and layers.py
FUNCTIONAL_NAMES_BEFORE_THE_SPLIT = [
    "Add", "Adder2d", "AvgPool2d", "BatchNorm", "Conv2d", "CrossEntropy", "Div", "Exp", "HardTanh",
    "Log", "LogSoftmax", "MatMul", "Max", "MaxPool2d", "Mul", "Neg", "Power", "ReLU", "Reshape", "Sub",
    "Sum", "Transpose", "add", "adder2d", "adder_linear", "avg_pool2d", "batch_norm", "conv2d",
    "cross_entropy", "div", "exp", "flatten", "hardtanh", "linear", "log", "log_softmax", "matmul",
    "max", "max_pool2d", "mean", "mul", "neg", "power", "relu", "reshape", "sub", "sum", "transpose"]


def test_functional_keeps_every_public_name():
    missing = [name for name in FUNCTIONAL_NAMES_BEFORE_THE_SPLIT if not hasattr(F, name)]
    assert not missing


def test_functional_offers_the_very_objects_of_ops_and_layers():
    for module in (ops, layers):
        for name in module.__all__:
            assert getattr(F, name) is getattr(module, name), name
    assert sorted(F.__all__) == sorted(ops.__all__ + layers.__all__)


def test_primitives_and_layers_are_apart():
    assert "adder2d" in layers.__all__ and "batch_norm" in layers.__all__ and "conv2d" in layers.__all__
    assert "add" in ops.__all__ and "unbroadcast" in ops.__all__
    assert not set(ops.__all__) & set(layers.__all__)
    assert ma.functional is F
