"""minadder's adder kernels inside PyTorch: ``pip install "minadder[torch]"``.

* ``adder2d`` (a ``torch.autograd.Function``) and the modules ``Adder2d`` / ``AdderLinear``:
  the adder layer (Eq. 2) with minadder's cpu kernels for CPU tensors and its cuda kernels
  for CUDA tensors, gradients of Eq. 4 ("sign") or Eqs. 5-6 ("full");
* ``scale_adder_grads``: the adaptive learning-rate scaling of Eq. 13 for any PyTorch
  optimizer (call it between ``loss.backward()`` and ``optimizer.step()``);
* ``lenet5_bn``, ``lenet_pp``, ``vgg_small``, ``resnet20``, ``resnet32``: minadder's
  networks, built from the same descriptions (``minadder.architectures``);
  ``to_minadder`` / ``from_minadder`` convert either way, ``load_reference_checkpoint``
  reads a ResNet-20 checkpoint of the paper's reference code, and ``save_safetensors`` /
  ``load_safetensors`` / ``load_safetensors_model`` write and read weights both
  ecosystems can load safely;
* ``python -m minadder.torch.train_ddp`` (under ``torchrun``): data-parallel training.

minadder itself never imports torch; only this package does.
"""
try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a process without torch
    raise ImportError(
        f"minadder.torch needs PyTorch ({exc}); install it with: pip install \"minadder[torch]\""
    ) from exc

from .convert import from_minadder, load_reference_checkpoint, to_minadder
from .function import adder2d, adder_linear
from .layers import Adder2d, AdderLinear, adder_modules
from .models import MODELS, lenet5_bn, lenet_pp, resnet20, resnet32, vgg_small
from .scaling import reference_scale, scale_adder_grads
from .threads import kernel_threads
from .weights import load_safetensors, load_safetensors_model, read_metadata, save_safetensors

__all__ = [
    "adder2d", "adder_linear", "Adder2d", "AdderLinear", "adder_modules",
    "scale_adder_grads", "reference_scale", "kernel_threads",
    "lenet5_bn", "lenet_pp", "vgg_small", "resnet20", "resnet32", "MODELS",
    "to_minadder", "from_minadder", "load_reference_checkpoint",
    "save_safetensors", "load_safetensors", "load_safetensors_model", "read_metadata",
]
