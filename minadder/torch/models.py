"""minadder's networks in PyTorch, layer for layer (``minadder.models``).

Each module has the name, shape and order of parameters and buffers of its minadder
twin, so ``to_minadder`` / ``from_minadder`` copy weights by name. The only extra state
is PyTorch's ``num_batches_tracked`` in every batch norm, which minadder does not keep.

- ResNet-20/32 (CIFAR): conv 3->16 (full precision) + BN + ReLU, three stages of basic
  blocks (16, 32, 64 channels; the shortcut of a changing shape is a 1x1 stride-2 layer of
  the same kind + BN), global average pooling, a bias-free linear classifier and BN on
  the logits. ``kind="adder"``: every 3x3 and 1x1 layer inside the blocks is an Adder2d
  (Eq. 2); ``kind="cnn"``: a bias-free convolution.
- LeNet-5-BN (MNIST, 1x32x32): two 5x5 layers and three fully connected ones, each with
  batch norm; in the AdderNet all five are adder layers.
"""
import torch
import torch.nn.functional as F
from torch import nn

from ..kernels.contract import check_grad_mode, output_size
from .layers import Adder2d, AdderLinear

KINDS = ("adder", "cnn")


def _check_args(model, kind, grad_mode, num_classes, in_channels, input_size, min_size):
    if kind not in KINDS:
        raise ValueError(f"{model}: kind must be one of {KINDS}, got {kind!r}")
    check_grad_mode(grad_mode, model)
    for name, value, low in (("num_classes", num_classes, 2), ("in_channels", in_channels, 1),
                             ("input_size", input_size, min_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{model}: {name} must be an integer >= {low}, got {value!r}")


def conv(kind, in_channels, out_channels, kernel_size, stride=1, padding=0, grad_mode="full"):
    """A k x k layer: an adder layer (Eq. 2) or a bias-free convolution (batch norm follows)."""
    if kind == "adder":
        return Adder2d(in_channels, out_channels, kernel_size, stride, padding, grad_mode=grad_mode)
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)


def linear(kind, in_features, out_features, grad_mode="full"):
    """A fully connected layer: an adder layer, or a bias-free linear layer."""
    if kind == "adder":
        return AdderLinear(in_features, out_features, grad_mode=grad_mode)
    return nn.Linear(in_features, out_features, bias=False)


class _Net(nn.Module):
    """Common base: what a model was built with (``to_minadder`` rebuilds it from this)."""

    name = "net"
    first_layer = last_layer = None

    def __init__(self, kind, grad_mode, num_classes, in_channels, input_size):
        super().__init__()
        self.kind, self.grad_mode, self.num_classes = kind, grad_mode, num_classes
        self.in_channels, self.input_size = in_channels, input_size

    def config(self):
        """The builder's keyword arguments for this model."""
        return dict(kind=self.kind, grad_mode=self.grad_mode, num_classes=self.num_classes,
                    in_channels=self.in_channels, input_size=self.input_size)

    def check_input(self, x):
        c, s = self.in_channels, self.input_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (c, s, s):
            raise ValueError(f"{self.name}: expected input of shape (N, {c}, {s}, {s}), got {tuple(x.shape)}")


class LeNet5BN(_Net):
    """conv 1->6 k5, BN, ReLU, maxpool 2; conv 6->16 k5, BN, ReLU, maxpool 2;
    FC 400->120, BN, ReLU; FC 120->84, BN, ReLU; FC 84->num_classes, BN."""

    name = "lenet5_bn"
    first_layer, last_layer = "conv1", "fc3"

    def __init__(self, kind="adder", grad_mode="full", num_classes=10, in_channels=1, input_size=32):
        _check_args(self.name, kind, grad_mode, num_classes, in_channels, input_size, 16)
        super().__init__(kind, grad_mode, num_classes, in_channels, input_size)
        size = output_size(output_size(input_size, 5, 1, 0) // 2, 5, 1, 0) // 2
        self.conv1, self.bn1 = conv(kind, in_channels, 6, 5, grad_mode=grad_mode), nn.BatchNorm2d(6)
        self.conv2, self.bn2 = conv(kind, 6, 16, 5, grad_mode=grad_mode), nn.BatchNorm2d(16)
        self.fc1, self.bn3 = linear(kind, 16 * size * size, 120, grad_mode), nn.BatchNorm1d(120)
        self.fc2, self.bn4 = linear(kind, 120, 84, grad_mode), nn.BatchNorm1d(84)
        self.fc3, self.bn5 = linear(kind, 84, num_classes, grad_mode), nn.BatchNorm1d(num_classes)

    def forward(self, x):
        self.check_input(x)
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.bn3(self.fc1(x)))
        x = F.relu(self.bn4(self.fc2(x)))
        return self.bn5(self.fc3(x))


class BasicBlock(nn.Module):
    """Two 3x3 layers with BN, plus the identity or a 1x1 stride-s layer + BN as shortcut."""

    def __init__(self, kind, in_channels, out_channels, stride, grad_mode):
        super().__init__()
        self.conv1 = conv(kind, in_channels, out_channels, 3, stride, 1, grad_mode)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv(kind, out_channels, out_channels, 3, 1, 1, grad_mode)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(conv(kind, in_channels, out_channels, 1, stride, 0, grad_mode),
                                            nn.BatchNorm2d(out_channels))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class ResNet(_Net):
    """CIFAR ResNet-(6n+2), as ``minadder.models.ResNet``."""

    first_layer, last_layer = "conv1", "fc"

    def __init__(self, depth, kind="adder", grad_mode="full", num_classes=10, in_channels=3, input_size=32):
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"ResNet: depth must be 6n+2 with n >= 1, got {depth}")
        name = f"resnet{depth}"
        _check_args(name, kind, grad_mode, num_classes, in_channels, input_size, 4)
        super().__init__(kind, grad_mode, num_classes, in_channels, input_size)
        self.name, self.depth = name, depth
        self.conv1, self.bn1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
        width, n = 16, (depth - 2) // 6
        for stage, (channels, stride) in enumerate(((16, 1), (32, 2), (64, 2)), start=1):
            blocks = []
            for b in range(n):
                blocks.append(BasicBlock(kind, width, channels, stride if b == 0 else 1, grad_mode))
                width = channels
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.fc, self.bn2 = nn.Linear(64, num_classes, bias=False), nn.BatchNorm1d(num_classes)

    def forward(self, x):
        self.check_input(x)
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = x.mean(dim=(2, 3))   # global average pooling
        return self.bn2(self.fc(x))


def lenet5_bn(kind="adder", grad_mode="full", num_classes=10, in_channels=1, input_size=32):
    """LeNet-5-BN for 1x32x32 inputs; see ``LeNet5BN``."""
    return LeNet5BN(kind, grad_mode, num_classes, in_channels, input_size)


def resnet20(kind="adder", grad_mode="full", num_classes=10, in_channels=3, input_size=32):
    """ResNet-20 (3 blocks per stage) for 3x32x32 inputs; see ``ResNet``."""
    return ResNet(20, kind, grad_mode, num_classes, in_channels, input_size)


def resnet32(kind="adder", grad_mode="full", num_classes=10, in_channels=3, input_size=32):
    """ResNet-32 (5 blocks per stage) for 3x32x32 inputs; see ``ResNet``."""
    return ResNet(32, kind, grad_mode, num_classes, in_channels, input_size)


MODELS = {"lenet5_bn": lenet5_bn, "resnet20": resnet20, "resnet32": resnet32}
