"""Int8Network: a whole architecture run with its adder layers in integers and everything between them in float32.

The network is walked from its description (``minadder.architectures``), as the float
model is, so the two cannot disagree on the order of the layers:

- every adder layer (``Conv2d`` / ``Linear`` records with ``adder`` set, in an AdderNet)
  quantizes its float input to bytes, takes the integer SAD with its byte filters, and
  applies the batch norm after it as a per-channel rescale and bias (``layers.py``);
- the layers the paper keeps full precision (the first convolution and the classifier of
  ResNet and VGG-small) run in float32, their batch norm folded the same way. In
  LeNet-5-BN and LeNet++ every weight layer is an adder layer, the first and the last
  included: all of them run in integers;
- ReLU, max pooling, flattening, global average pooling and ResNet's residual additions
  run in float32 between the integer layers, and the next adder layer requantizes what
  they produce with its own scale.
"""
from typing import NamedTuple

import numpy as np

from .. import functional as F
from ..architectures import (BatchNorm1d, BatchNorm2d, Conv2d, Features, Flatten, GlobalAvgPool, Linear, MaxPool,
                             ReLU, Stage, block_layers)
from .calibrate import DEFAULT_METHOD, DEFAULT_PERCENTILE, check_method, input_quantizers, observe_inputs
from ..tensor import Tensor, no_grad
from .layers import AdderLayer, FloatLayer, check_bits

_BATCH_NORMS = (BatchNorm1d, BatchNorm2d)


class WeightLayer(NamedTuple):
    """One weight layer of a network: its module name ("layer2.0.downsample.0"), its record,
    the name of the batch norm right after it (or None), and whether it is an adder layer."""
    name: str
    record: object
    bn_name: object
    adder: bool


def weight_layers(architecture):
    """The ``WeightLayer``s of ``architecture`` in forward order (the names of its state dict).
    Every batch norm must follow a weight layer: it is folded into that layer."""
    adder_net = architecture.kind == "adder"

    def walk(records, prefix):
        for i, record in enumerate(records):
            after = records[i + 1] if i + 1 < len(records) else None
            if isinstance(record, (Conv2d, Linear)):
                bn = prefix + after.name if isinstance(after, _BATCH_NORMS) else None
                yield WeightLayer(prefix + record.name, record, bn, adder_net and record.adder)
            elif isinstance(record, _BATCH_NORMS) and not (i and isinstance(records[i - 1], (Conv2d, Linear))):
                raise ValueError(f"{architecture.name}: batch norm {prefix}{record.name} follows no weight layer")
            elif isinstance(record, Stage):
                for block in record.blocks:
                    body, shortcut = block_layers(block)
                    yield from walk(body, f"{prefix}{record.name}.{block.name}.")
                    yield from walk(shortcut or (), f"{prefix}{record.name}.{block.name}.downsample.")

    return list(walk(architecture.layers, ""))


def check_quantizable(architecture):
    """Refuse a network that is not an l1 AdderNet: only |x - f| turns into a SAD of bytes."""
    distance = getattr(architecture, "distance", "l1")
    if architecture.kind != "adder" or distance != "l1":
        raise ValueError(f"{architecture.name}: int8 quantization is for l1 AdderNets (kind 'adder', distance "
                         f"'l1'), not kind {architecture.kind!r} with distance {distance!r}")


class Int8Network:
    """An architecture with its adder layers in integers: ``network(x)`` maps float32 images
    (N, C, H, W), normalised as in training, to float32 logits (N, classes).

    ``layers``: {name: AdderLayer or FloatLayer}, one per weight layer of the architecture;
    ``calibration``: how the scales were chosen (method, percentile, batches, images)."""

    def __init__(self, architecture, layers, calibration=None):
        check_quantizable(architecture)
        self.architecture, self.layers, self.calibration = architecture, dict(layers), dict(calibration or {})
        wanted = [(w.name, AdderLayer if w.adder else FloatLayer) for w in weight_layers(architecture)]
        wrong = [name for name, kind in wanted if not isinstance(self.layers.get(name), kind)]
        if wrong or len(self.layers) != len(wanted):
            raise ValueError(f"{architecture.name}: the int8 layers do not match the architecture "
                             f"(missing or of the wrong kind: {', '.join(wrong) or 'none'})")

    @classmethod
    def from_float(cls, model, quantizers, calibration=None):
        """The int8 version of the float AdderNet ``model``, each adder layer in the units of
        ``quantizers[name]``, each batch norm folded into the layer before it."""
        modules = dict(model.named_modules())
        layers = {}
        for w in weight_layers(model.architecture):
            bn = modules[w.bn_name] if w.bn_name else None
            layers[w.name] = (AdderLayer.from_float(modules[w.name], bn, quantizers[w.name]) if w.adder
                              else FloatLayer.from_float(modules[w.name], bn))
        return cls(model.architecture, layers, calibration)

    @property
    def adder_names(self):
        """The names of the layers that run in integers, in forward order."""
        return [name for name, layer in self.layers.items() if isinstance(layer, AdderLayer)]

    @property
    def bits(self):
        """The width of the adder layers' codes (8 when there is no adder layer)."""
        return max((self.layers[name].quantizer.bits for name in self.adder_names), default=8)

    @property
    def float_names(self):
        """The names of the layers that run in float32."""
        return [name for name, layer in self.layers.items() if isinstance(layer, FloatLayer)]

    def __call__(self, x):
        a = self.architecture
        x = np.asarray(x, np.float32)
        if x.ndim != 4 or x.shape[1:] != (a.in_channels, a.input_size, a.input_size):
            raise ValueError(f"{a.name}: expected input of shape (N, {a.in_channels}, {a.input_size}, "
                             f"{a.input_size}), got {x.shape}")
        return self._run(a.layers, x, "")

    def _run(self, records, x, prefix):
        """``records`` applied in order; batch norms are inside the layers before them."""
        for record in records:
            if isinstance(record, (Conv2d, Linear)):
                x = self.layers[prefix + record.name](x)
            elif isinstance(record, ReLU):
                x = np.maximum(x, 0)
            elif isinstance(record, MaxPool):
                with no_grad():
                    x = F.max_pool2d(Tensor(x), record.kernel_size).data
            elif isinstance(record, Flatten):
                x = x.reshape(len(x), -1)
            elif isinstance(record, GlobalAvgPool):
                x = x.mean(axis=(2, 3), dtype=np.float32)
            elif isinstance(record, Stage):
                for block in record.blocks:
                    x = self._block(block, x, f"{prefix}{record.name}.{block.name}.")
            elif not isinstance(record, (Features,) + _BATCH_NORMS):
                raise TypeError(f"no int8 layer for {record!r}")
        return x

    def _block(self, block, x, prefix):
        """ResNet's basic block: relu(body(x) + shortcut(x)), the addition in float32."""
        body, shortcut = block_layers(block)
        skip = x if shortcut is None else self._run(shortcut, x, prefix + "downsample.")
        return np.maximum(self._run(body, x, prefix) + skip, 0)

    def __repr__(self):
        return (f"Int8Network({self.architecture.name}, {len(self.adder_names)} adder layers in {self.bits} bits, "
                f"float32: {', '.join(self.float_names) or 'none'})")


def quantize(model, batches, method=DEFAULT_METHOD, percentile=DEFAULT_PERCENTILE, bits=8):
    """The ``Int8Network`` of the float AdderNet ``model``: one quantizer per adder layer,
    calibrated on ``batches`` (float32 image arrays or (x, y) pairs, normalised as in
    training) by ``method`` ("max" or "percentile", see ``calibrate.py``), with codes of
    ``bits`` bits (2 to 8; fewer bits, a coarser step, the same byte kernel)."""
    check_method(method, percentile)
    bits = check_bits(bits)
    check_quantizable(model.architecture)
    names = [w.name for w in weight_layers(model.architecture) if w.adder]
    ranges, images = observe_inputs(model, batches, names, method, percentile)
    calibration = {"method": method, "percentile": percentile if method == "percentile" else None,
                   "images": images, "bits": bits}
    return Int8Network.from_float(model, input_quantizers(ranges, bits), calibration)
