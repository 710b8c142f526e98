"""How a framework, minadder or PyTorch, builds and runs a network described in ``minadder.architectures``.

A ``Framework`` record lends the layer classes (minadder.nn and torch.nn take the same
constructor arguments) and four functions. ``make_layer`` turns one named record into a
module (an adder layer or its multiplying twin, by ``kind``), ``add_layers`` gives a
module one child per named record, and ``run`` applies the records in order. The two
mix-ins ``NetworkModule`` and ``BlockModule`` hold everything a network and ResNet's
basic block do; ``minadder.models`` and ``minadder.torch.models`` put each in front of
their framework's ``Module``.
"""
import functools
from typing import Any, NamedTuple, Optional

from .architectures import (BatchNorm1d, BatchNorm2d, Conv2d, Features, Flatten, GlobalAvgPool, Linear, MaxPool,
                            ReLU, Stage, block_layers)


class Framework(NamedTuple):
    """What a framework lends to build and run a description: its layer classes (the
    same constructor arguments in minadder.nn and torch.nn) and four functions."""
    Conv2d: Any
    Linear: Any
    BatchNorm2d: Any
    BatchNorm1d: Any
    Sequential: Any
    Adder2d: Any
    AdderLinear: Any
    BinaryConv2d: Any
    BinaryLinear: Any
    relu: Any
    hardtanh: Any
    max_pool2d: Any
    flatten: Any
    spatial_mean: Any
    #: (batch norm module, x, residual=None) -> relu(module(x) + residual) as one fused
    #: layer, or None: run() then applies a batch norm record and the ReLU record after it
    #: as two, and a basic block adds its shortcut and applies its ReLU apart
    batch_norm_relu: Any = None


class LayerChoice(NamedTuple):
    """What the weight layers whose ``adder`` flag is set become: ``kind`` ("adder", "cnn"
    or "bnn"), the adder layers' ``grad_mode`` and ``distance``, and the names of the
    records kept full precision whatever the kind (a BNN's first and last layers)."""
    kind: str
    grad_mode: str = "full"
    distance: str = "l1"
    full_precision: tuple = ()


def choice_of(architecture):
    """The LayerChoice of a network's top-level records."""
    a = architecture
    edges = (a.first_layer, a.last_layer) if a.kind == "bnn" else ()
    return LayerChoice(a.kind, a.grad_mode, a.distance, edges)


def _weight_kind(record, choice):
    if not getattr(record, "adder", False) or record.name in choice.full_precision:
        return "cnn"
    return choice.kind


def make_layer(fw, record, choice, block_class=None):
    """The module for one named record, from framework ``fw``, as ``choice`` (a LayerChoice) says."""
    kind = _weight_kind(record, choice) if isinstance(record, (Conv2d, Linear)) else None
    if isinstance(record, Conv2d):
        size = (record.in_channels, record.out_channels, record.kernel_size, record.stride, record.padding)
        if kind == "adder":
            return fw.Adder2d(*size, grad_mode=choice.grad_mode, distance=choice.distance)
        return (fw.BinaryConv2d if kind == "bnn" else fw.Conv2d)(*size, bias=False)
    if isinstance(record, Linear):
        size = (record.in_features, record.out_features)
        if kind == "adder":
            return fw.AdderLinear(*size, grad_mode=choice.grad_mode, distance=choice.distance)
        return (fw.BinaryLinear if kind == "bnn" else fw.Linear)(*size, bias=record.bias)
    if isinstance(record, BatchNorm2d):
        return fw.BatchNorm2d(record.num_features)
    if isinstance(record, BatchNorm1d):
        return fw.BatchNorm1d(record.num_features)
    if isinstance(record, Stage):   # a block's own "conv1" is not the network's first layer
        inner = choice._replace(full_precision=())
        return fw.Sequential(*(block_class(block, inner) for block in record.blocks))
    raise TypeError(f"no layer for {record!r}")


def add_layers(module, records, choice):
    """Give ``module`` one sub-module per named record, in order."""
    for record in records:
        if getattr(record, "name", None) is not None:
            setattr(module, record.name, make_layer(module.framework, record, choice,
                                                    getattr(module, "block_class", None)))


def activation(module):
    """The function a ReLU record stands for: ReLU, or HardTanh in a BNN (``module.binary``).

    A binary layer's straight-through gradient passes where its input a has |a| <= 1
    (minadder.binary). After HardTanh that is where the pre-activation z has |z| <= 1, as
    in BinaryNet; after a ReLU it would be only 0 < z <= 1, half the window, although
    sgn(relu(z)) = sgn(hardtanh(z)) = sgn(z) in the forward pass."""
    return module.framework.hardtanh if getattr(module, "binary", False) else module.framework.relu


def run(module, records, x):
    """``records`` applied to ``x`` in order: a named record is ``module``'s sub-module. A
    batch norm followed by a ReLU runs as one fused layer where the framework has one."""
    fw = module.framework
    fused = False                       # the record before was a batch norm that did this ReLU
    for i, record in enumerate(records):
        fuses = _relu_fuses(module, records, i)
        if isinstance(record, ReLU):
            x = x if fused else activation(module)(x)
        elif isinstance(record, MaxPool):
            x = fw.max_pool2d(x, record.kernel_size)
        elif isinstance(record, Flatten):
            x = fw.flatten(x, 1)
        elif isinstance(record, GlobalAvgPool):
            x = fw.spatial_mean(x)
        elif fuses:
            x = fw.batch_norm_relu(getattr(module, record.name), x)
        elif not isinstance(record, Features):
            x = getattr(module, record.name)(x)
        fused = fuses
    return x


def _relu_fuses(module, records, i):
    """Whether records[i] is a batch norm that run() fuses with the ReLU record after it."""
    return (module.framework.batch_norm_relu is not None and isinstance(records[i], (BatchNorm1d, BatchNorm2d))
            and i + 1 < len(records) and isinstance(records[i + 1], ReLU) and activation(module) is module.framework.relu)


class NetworkModule:
    """What a network does in either framework; mixed in before that framework's Module
    by ``minadder.models.Network`` and ``minadder.torch.models.Network``."""

    framework: Optional[Framework] = None
    block_class = None

    def __init__(self, architecture):
        super().__init__()
        a = self.architecture = architecture
        self.name, self.kind, self.grad_mode, self.num_classes = a.name, a.kind, a.grad_mode, a.num_classes
        self.in_channels, self.input_size, self.first_layer, self.last_layer = (
            a.in_channels, a.input_size, a.first_layer, a.last_layer)
        self.distance, self.binary = a.distance, a.kind == "bnn"
        add_layers(self, architecture.layers, choice_of(architecture))

    def input_shape(self):
        """(C, H, W) of one input image."""
        return (self.in_channels, self.input_size, self.input_size)

    def config(self):
        """The builder's keyword arguments for this model: ``MODELS[model.name](**model.config())``."""
        return dict(kind=self.kind, grad_mode=self.grad_mode, num_classes=self.num_classes,
                    in_channels=self.in_channels, input_size=self.input_size, distance=self.distance,
                    **dict(self.architecture.options))

    def _split(self):
        layers = self.architecture.layers
        cut = next((i for i, r in enumerate(layers) if isinstance(r, Features)), None)
        return (layers, None) if cut is None else (layers[:cut], layers[cut + 1:])

    def features(self, x):
        """The values at the ``Features`` mark (LeNet++'s 3-D features)."""
        head, tail = self._split()
        if tail is None:
            raise ValueError(f"{self.name} has no feature layer")
        return run(self, head, self._checked(x))

    def forward(self, x, return_features=False):
        head, tail = self._split()
        if tail is None and not return_features:
            return run(self, head, self._checked(x))
        f = self.features(x)
        logits = run(self, tail, f)
        return (logits, f) if return_features else logits

    def _checked(self, x):
        c, s = self.in_channels, self.input_size
        if len(x.shape) != 4 or tuple(x.shape[1:]) != (c, s, s):
            raise ValueError(f"{self.name}: expected input of shape (N, {c}, {s}, {s}), got {tuple(x.shape)}")
        return x

    def extra_repr(self):
        distance = f", distance={self.distance!r}" if self.distance != "l1" else ""
        return f"{self.name}, kind={self.kind!r}{distance}, input={self.input_shape()}"


class BlockModule:
    """ResNet's basic block in either framework: relu(body(x) + shortcut(x))."""

    framework: Optional[Framework] = None

    def __init__(self, block, choice):
        super().__init__()
        self.binary = choice.kind == "bnn"
        self.body_records, shortcut = block_layers(block)
        add_layers(self, self.body_records, choice)
        self.downsample = None if shortcut is None else self.framework.Sequential(
            *(make_layer(self.framework, record, choice) for record in shortcut))

    def forward(self, x):
        body, last = self.body_records, self.body_records[-1]
        if self._fuses_end():     # relu(bn(out) + shortcut) as one layer
            out = run(self, body[:-1], x)
            return self.framework.batch_norm_relu(getattr(self, last.name), out, self._shortcut(x))
        return activation(self)(run(self, body, x) + self._shortcut(x))

    def _shortcut(self, x):
        return x if self.downsample is None else self.downsample(x)

    def _fuses_end(self):
        """Whether the body's last batch norm, the shortcut's addition and the ReLU run as one layer."""
        return (self.framework.batch_norm_relu is not None and isinstance(self.body_records[-1], BatchNorm2d)
                and activation(self) is self.framework.relu)


def builder(describe, network_class):
    """The public builder of one network: ``describe``'s arguments, a ``network_class``."""
    @functools.wraps(describe)
    def build(*args, **kwargs):
        return network_class(describe(*args, **kwargs))
    return build
