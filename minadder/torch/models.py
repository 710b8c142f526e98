"""minadder's networks in PyTorch: the same descriptions (``minadder.architectures``), built with torch layers.

Every network of ``minadder.models`` exists here too, LeNet-5-BN, LeNet++, VGG-small and
ResNet-20/32, with the names, shapes and order of parameters and buffers of its minadder
twin, so ``to_minadder`` / ``from_minadder`` copy weights by name. The only extra state
is PyTorch's ``num_batches_tracked`` in every batch norm, which minadder does not keep.
``kind="adder"`` makes the layers the paper turns into adder layers ``Adder2d`` /
``AdderLinear`` (Eq. 2, minadder's kernels inside autograd); ``kind="cnn"``, bias-free
convolutions and linear layers.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .. import architectures as arch
from .. import frameworks
from ..architectures import KINDS  # noqa: F401  (the same kinds as minadder.models)
from .binary import BinaryConv2d, BinaryLinear
from .layers import Adder2d, AdderLinear

#: PyTorch's layer classes (minadder's adder layers among them) and functions.
TORCH_LAYERS = frameworks.Framework(
    Conv2d=nn.Conv2d, Linear=nn.Linear, BatchNorm2d=nn.BatchNorm2d, BatchNorm1d=nn.BatchNorm1d,
    Sequential=nn.Sequential, Adder2d=Adder2d, AdderLinear=AdderLinear,
    BinaryConv2d=BinaryConv2d, BinaryLinear=BinaryLinear,
    relu=F.relu, hardtanh=F.hardtanh, max_pool2d=F.max_pool2d, flatten=torch.flatten, spatial_mean=lambda x: x.mean(dim=(2, 3)))


class BasicBlock(frameworks.BlockModule, nn.Module):
    """ResNet's basic block with torch layers."""
    framework = TORCH_LAYERS


class Network(frameworks.NetworkModule, nn.Module):
    """One of the paper's networks as a ``torch.nn.Module``; ``.architecture`` is its description."""
    framework, block_class = TORCH_LAYERS, BasicBlock


MODELS = {name: frameworks.builder(describe, Network) for name, describe in arch.DESCRIPTIONS.items()}
lenet5_bn, lenet_pp, vgg_small, resnet20, resnet32 = (MODELS[name] for name in arch.DESCRIPTIONS)
