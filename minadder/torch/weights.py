"""Weights as ``.safetensors``: a format that holds only arrays and a small header, so
reading a file can never run code, and that both NumPy and PyTorch read.

The file holds the common state: minadder's parameter and buffer names (PyTorch's
``num_batches_tracked`` left out), float32 as in memory. The minadder side needs no
PyTorch at all::

    from safetensors.numpy import load_file, save_file
    model.load_state_dict(load_file("resnet20.safetensors"))   # a minadder model
    save_file(dict(model.state_dict()), "resnet20.safetensors")

and here ``save_safetensors`` / ``load_safetensors`` take either kind of model.
"""
from collections import OrderedDict

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from .convert import load_numpy_state, numpy_state


def _arrays(model):
    if isinstance(model, torch.nn.Module):
        return numpy_state(model)
    if hasattr(model, "state_dict"):   # a minadder Module
        return OrderedDict((k, np.ascontiguousarray(v)) for k, v in model.state_dict().items())
    return OrderedDict((k, np.ascontiguousarray(v.detach().cpu().numpy() if torch.is_tensor(v) else v))
                       for k, v in model.items())


def save_safetensors(model, path, metadata=None):
    """Write the weights of a torch module, a minadder model or a name -> array mapping."""
    info = {"format": "minadder"}
    for key in ("name", "kind"):
        if isinstance(getattr(model, key, None), str):
            info[key] = getattr(model, key)
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
