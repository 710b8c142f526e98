"""The paper's networks built with minadder's layers, each as an AdderNet or as its CNN twin.

The networks themselves are written once, as data, in ``minadder.architectures`` (read
it for LeNet-5-BN, LeNet++, VGG-small and ResNet-20/32 and the paper's rules for which
layers become adder layers); ``minadder.torch.models`` builds the same descriptions with
PyTorch's layers. Here they become ``Network`` modules::

    model = resnet20(kind="adder", grad_mode="full")     # or build_model("resnet20", ...)
    model.architecture                                     # the description it was built from

``kind``: "adder" turns the layers the paper turns into adder layers (Eq. 2) into
``nn.Adder2d`` / ``nn.AdderLinear``; "cnn" keeps them as bias-free ``nn.Conv2d`` /
``nn.Linear``; "bnn" makes them binary layers (``minadder.binary``, the paper's BNN
baseline). A CNN, a BNN and an AdderNet of the same name have the same layers, shapes,
names and batch norms. Each model records ``first_layer`` and ``last_layer``, which the op
counter (``minadder.count``) reports totals with and without, as the paper's Table 2 does.
"""
from . import architectures as arch
from . import binary, frameworks
from . import functional as F
from . import nn
from .architectures import KINDS

__all__ = ["lenet5_bn", "lenet_pp", "vgg_small", "resnet20", "resnet32", "MODELS", "build_model", "KINDS",
           "Network", "BasicBlock", "conv", "linear"]

#: minadder's layer classes and functions, for building a description.
LAYERS = frameworks.Framework(
    Conv2d=nn.Conv2d, Linear=nn.Linear, BatchNorm2d=nn.BatchNorm2d, BatchNorm1d=nn.BatchNorm1d,
    Sequential=nn.Sequential, Adder2d=nn.Adder2d, AdderLinear=nn.AdderLinear,
    BinaryConv2d=binary.BinaryConv2d, BinaryLinear=binary.BinaryLinear,
    relu=F.relu, hardtanh=F.hardtanh, max_pool2d=F.max_pool2d, flatten=F.flatten, spatial_mean=lambda x: F.mean(x, axis=(2, 3)),
    batch_norm_relu=lambda bn, x, residual=None: bn(x, relu=True, residual=residual))


class BasicBlock(frameworks.BlockModule, nn.Module):
    """ResNet's basic block (``architectures.block_layers``) with minadder layers."""
    framework = LAYERS


class Network(frameworks.NetworkModule, nn.Module):
    """One of the paper's networks, built from its ``architectures.Architecture``."""
    framework, block_class = LAYERS, BasicBlock


def conv(kind, in_channels, out_channels, kernel_size, stride=1, padding=0, grad_mode="full", distance="l1"):
    """A k x k layer: an adder layer (Eq. 2, or Eq. 27), a bias-free convolution or a binary one (batch norm follows)."""
    record = arch.Conv2d("conv", in_channels, out_channels, kernel_size, stride, padding)
    return frameworks.make_layer(LAYERS, record, frameworks.LayerChoice(kind, grad_mode, distance))


def linear(kind, in_features, out_features, grad_mode="full", distance="l1"):
    """A fully connected layer: an adder layer on a 1x1 map, a bias-free linear layer or a binary one."""
    record = arch.Linear("fc", in_features, out_features)
    return frameworks.make_layer(LAYERS, record, frameworks.LayerChoice(kind, grad_mode, distance))


MODELS = {name: frameworks.builder(describe, Network) for name, describe in arch.DESCRIPTIONS.items()}
lenet5_bn, lenet_pp, vgg_small, resnet20, resnet32 = (MODELS[name] for name in arch.DESCRIPTIONS)


def build_model(name, **kwargs):
    """Build a model by name, e.g. ``build_model("resnet20", kind="cnn", num_classes=100)``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; models: {', '.join(MODELS)}")
    return MODELS[name](**kwargs)
