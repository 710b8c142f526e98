"""Weights as ``.safetensors``: a format that holds only arrays and a small header, so
reading a file can never run code, and that both NumPy and PyTorch read.

The file holds the common state: minadder's parameter and buffer names (PyTorch's
``num_batches_tracked`` left out), float32 as in memory. The minadder side needs no
PyTorch at all::

    from safetensors.numpy import load_file, save_file
    model.load_state_dict(load_file("resnet20.safetensors"))   # a minadder model
    save_file(dict(model.state_dict()), "resnet20.safetensors")

and here ``save_safetensors`` / ``load_safetensors`` take either kind of model. A network
of ``minadder.models`` / ``minadder.torch.models`` also leaves in the file's metadata what
it was built with (name, kind, grad mode, class count, input), from which
``load_safetensors_model`` builds it again in either framework.
"""
import json
from collections import OrderedDict

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from .. import models as minadder_models
from . import models as torch_models
from .convert import load_numpy_state, numpy_state


def _arrays(model):
    if isinstance(model, torch.nn.Module):
        return numpy_state(model)
    if hasattr(model, "state_dict"):   # a minadder Module
        return OrderedDict((k, np.ascontiguousarray(v)) for k, v in model.state_dict().items())
    return OrderedDict((k, np.ascontiguousarray(v.detach().cpu().numpy() if torch.is_tensor(v) else v))
                       for k, v in model.items())


def save_safetensors(model, path, metadata=None):
    """Write the weights of a torch module, a minadder model or a name -> array mapping; a
    network's metadata says what it was built with (``metadata`` adds string entries)."""
    info = {"format": "minadder"}
    if isinstance(model, (minadder_models.Network, torch_models.Network)):
        config = model.config()
        info.update(name=model.name, config=json.dumps(config),
                    **{k: str(config[k]) for k in ("kind", "grad_mode", "distance", "num_classes")})
    info.update(metadata or {})
    save_file(dict(_arrays(model)), str(path), metadata=info)


def load_safetensors(path, into=None):
    """Read a ``.safetensors`` file: name -> array, or loaded into ``into`` (a torch module
    or a minadder model), which is returned."""
    arrays = load_file(str(path))
    if into is None:
        return arrays
    if isinstance(into, torch.nn.Module):
        return load_numpy_state(into, arrays, "load_safetensors")
    into.load_state_dict(arrays)
    return into


def read_metadata(path):
    """The string metadata of a ``.safetensors`` file (name, kind, grad_mode, config, ...)."""
    with safe_open(str(path), framework="numpy") as f:
        return dict(f.metadata() or {})


def load_safetensors_model(path, framework="torch"):
    """The network a file was saved from, built again from its metadata ("torch":
    ``minadder.torch.models``, "minadder": ``minadder.models``) with the file's weights."""
    info = read_metadata(path)
    if "name" not in info or "config" not in info:
        raise ValueError(f"load_safetensors_model: {path} does not say which network it holds "
                         f"(metadata: {sorted(info)}); build the model and use load_safetensors(path, into=model)")
    models = {"torch": torch_models, "minadder": minadder_models}[framework]
    return load_safetensors(path, into=models.MODELS[info["name"]](**json.loads(info["config"])))
