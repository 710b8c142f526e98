"""Weights between minadder and PyTorch, and checkpoints of the paper's reference code.

Both sides build the same descriptions (``minadder.architectures``), so they name
parameters and buffers alike and a conversion is a copy by name: the same float32
numbers, bit for bit. The twin is built from what the model itself holds: its
description (kind, class count, input) and each adder layer's own ``grad_mode``, so
nothing is guessed. PyTorch's batch norms also count ``num_batches_tracked``, which
minadder does not keep: it is dropped on the way to minadder and left as it is on the
way back.
"""
import os
from collections import OrderedDict

import numpy as np
import torch

from .. import models as minadder_models
from ..nn import check_state
from .models import Network, resnet20

TORCH_ONLY = ("num_batches_tracked",)


def _torch_only(name):
    return name.rsplit(".", 1)[-1] in TORCH_ONLY


def numpy_state(module):
    """A torch module's state_dict as NumPy arrays (copies), without the torch-only entries."""
    return OrderedDict((name, value.detach().cpu().numpy().copy())
                       for name, value in module.state_dict().items() if not _torch_only(name))


def load_numpy_state(module, arrays, what="load"):
    """Copy name -> array into a torch module; every entry is checked first (minadder's
    ``nn.check_state``). Missing entries are an error except the torch-only ones, which
    keep their values."""
    expected = module.state_dict()
    check_state({k: tuple(v.shape) for k, v in expected.items()}, arrays, what,
                optional=[k for k in expected if _torch_only(k)])
    with torch.no_grad():
        for name, value in arrays.items():
            target = expected[name]
            target.copy_(torch.as_tensor(np.asarray(value)).to(target.dtype))
    return module


def _same_mode(source_training, target):
    target.train(bool(source_training))
    return target


# ============================================================================ both ways
def _twin(source, network_class):
    """A ``network_class`` built from ``source``'s description, each adder layer given the
    grad mode of the source layer of the same name (the model's own, not a default)."""
    target = network_class(source.architecture)
    layers = dict(source.named_modules())
    for name, layer in target.named_modules():
        if hasattr(layer, "grad_mode") and name:
            layer.grad_mode = layers[name].grad_mode
            layer.distance = getattr(layers[name], "distance", "l1")
    return target


def to_minadder(module):
    """The minadder twin of a ``minadder.torch`` model, with the same weights, grad modes and mode."""
    if not isinstance(module, Network):
        raise TypeError(f"to_minadder: expected a minadder.torch model (minadder.torch.models.Network), "
                        f"got {type(module).__name__}")
    model = _twin(module, minadder_models.Network)
    model.load_state_dict(numpy_state(module))
    return _same_mode(module.training, model)


def from_minadder(model):
    """The ``minadder.torch`` twin of a minadder model, with the same weights, grad modes and mode."""
    if not isinstance(model, minadder_models.Network):
        raise TypeError(f"from_minadder: expected a minadder model (minadder.models.Network), "
                        f"got {type(model).__name__}")
    module = _twin(model, Network)
    load_numpy_state(module, model.state_dict(), "from_minadder")
    return _same_mode(model.training, module)


# ============================================================================ reference code
def _read_checkpoint(path_or_state_dict):
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        # weights_only=True: tensors and plain containers only; a pickle that names any
        # other callable is refused before it runs
        state = torch.load(path_or_state_dict, map_location="cpu", weights_only=True)
    else:
        state = path_or_state_dict
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]   # a training checkpoint around the weights
    if not isinstance(state, dict):
        raise ValueError(f"load_reference_checkpoint: expected a state dict, got {type(state).__name__}")
    return state


def reference_to_minadder_names(state):
    """The reference code's ResNet-20 state dict in this package's names and shapes.

    DataParallel's ``module.`` prefix goes; the filters ``<layer>.adder`` become
    ``<layer>.weight``; the classifier, a 1x1 convolution (C, 64, 1, 1) followed by a
    BatchNorm2d there, becomes the Linear (C, 64) followed by a BatchNorm1d here (the
    same function on a 1x1 map, and the same batch-norm entries).
    """
    out = OrderedDict()
    for name, value in state.items():
        if name.startswith("module."):
            name = name[len("module."):]
        if name.endswith(".adder"):
            name = name[:-len(".adder")] + ".weight"
        if name == "fc.weight" and value.ndim == 4:
            value = value.reshape(value.shape[0], value.shape[1])
        out[name] = value
    return out


def load_reference_checkpoint(path_or_state_dict, grad_mode="full"):
    """The ResNet-20 AdderNet (``resnet20(kind="adder")``) with the weights of a checkpoint
    saved by the paper's reference code (a path, read with ``torch.load(...,
    weights_only=True)`` so that it cannot run code, or the state dict itself)."""
    state = reference_to_minadder_names(_read_checkpoint(path_or_state_dict))
    if "fc.weight" not in state:
        raise ValueError("load_reference_checkpoint: no fc.weight: not a ResNet-20 state dict")
    model = resnet20(kind="adder", grad_mode=grad_mode, num_classes=int(state["fc.weight"].shape[0]))
    arrays = OrderedDict((k, v.detach().cpu().numpy() if torch.is_tensor(v) else np.asarray(v))
                         for k, v in state.items() if not _torch_only(k))
    load_numpy_state(model, arrays, "load_reference_checkpoint")
    with torch.no_grad():   # the counters, where the checkpoint has them
        for name, buffer in model.named_buffers():
            if _torch_only(name) and name in state:
                buffer.copy_(torch.as_tensor(state[name]))
    return model.eval()
