"""The networks of the paper, each as an AdderNet or as its CNN twin (proofs/mathematics.md, section 6).

Every builder takes ``kind``: "adder" turns the multiplying layers the paper turns into
adder layers (Eq. 2) into ``nn.Adder2d`` / ``nn.AdderLinear``; "cnn" keeps them as
``nn.Conv2d`` / ``nn.Linear``. Nothing else changes between the two kinds, so a CNN and
an AdderNet of the same name have the same layers, shapes and batch norms, and differ
only in how each of those layers compares its input with its filters.

The rules (paper Sec. 4.1, 4.2):

- LeNet-5-BN (MNIST): every conv AND fully connected layer is an adder layer.
- VGG-small, ResNet-20, ResNet-32 (CIFAR): the first conv and the classifier stay full
  precision in both kinds, as for the paper's BNN baselines.
- Every adder layer is followed by batch norm: an adder output -sum|x - f| is never
  positive and its variance grows with the fan-in (Eq. 9, proofs/variance.md), so it must be
  re-centred and re-scaled before the next layer. The multiplying layers that take an
  adder layer's place keep that batch norm and drop their bias (batch norm's shift
  replaces it).

Each model records the names of its first and last weight layers in ``first_layer`` and
``last_layer``, which the op counter (``minadder.count``) uses to report totals with and
without them, as the paper's Table 2 does.
"""
import numpy as np

from . import functional as F
from . import nn
from .kernels.contract import check_grad_mode, output_size

KINDS = ("adder", "cnn")

__all__ = ["lenet5_bn", "lenet_pp", "vgg_small", "resnet20", "resnet32", "MODELS", "build_model", "KINDS"]


# ============================================================================ building blocks
def _check_args(model, kind, grad_mode, num_classes, in_channels, input_size, min_size):
    if kind not in KINDS:
        raise ValueError(f"{model}: kind must be one of {KINDS}, got {kind!r}")
    check_grad_mode(grad_mode, model)
    for name, value, low in (("num_classes", num_classes, 2), ("in_channels", in_channels, 1),
                             ("input_size", input_size, min_size)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{model}: {name} must be an integer >= {low}, got {value!r}")


def conv(kind, in_channels, out_channels, kernel_size, stride=1, padding=0, grad_mode="full"):
    """A k x k layer: an adder layer (Eq. 2) or a bias-free convolution (batch norm follows)."""
    if kind == "adder":
        return nn.Adder2d(in_channels, out_channels, kernel_size, stride, padding, grad_mode=grad_mode)
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)


def linear(kind, in_features, out_features, grad_mode="full"):
    """A fully connected layer: an adder layer on a 1x1 map, or a bias-free linear layer."""
    if kind == "adder":
        return nn.AdderLinear(in_features, out_features, grad_mode=grad_mode)
    return nn.Linear(in_features, out_features, bias=False)


def _check_input(model, x, channels, size):
    if x.ndim != 4 or x.shape[1] != channels or x.shape[2] != size or x.shape[3] != size:
        raise ValueError(f"{model}: expected input of shape (N, {channels}, {size}, {size}), got {x.shape}")


class _Net(nn.Module):
    """Common base: the input check, ``kind``, and the first/last layer names."""

    name = "net"
    first_layer = last_layer = None

    def __init__(self, kind, in_channels, input_size):
        super().__init__()
        self.kind, self.in_channels, self.input_size = kind, in_channels, input_size

    def input_shape(self):
        """(C, H, W) of one input image."""
        return (self.in_channels, self.input_size, self.input_size)

    def extra_repr(self):
        return f"kind={self.kind!r}, input={self.input_shape()}"


# ============================================================================ LeNet-5-BN
class LeNet5BN(_Net):
    """LeNet-5 with batch norm after every weight layer (paper Sec. 4.1).

    conv 1->6 k5, BN, ReLU, maxpool 2; conv 6->16 k5, BN, ReLU, maxpool 2;
    FC 400->120, BN, ReLU; FC 120->84, BN, ReLU; FC 84->num_classes, BN.

    In the AdderNet all five layers are adder layers. The last one gets a BatchNorm1d on
    the logits too: its outputs -||x - w_t||_1 are all negative and, with the fan-in of 84
    and N(0, 1) filters, spread over tens of units, which would saturate the softmax at
    the first step. The paper's reference code does the same for ResNet-20, whose
    classifier is followed by a BatchNorm on the logits; the CNN twin keeps it too, so
    that the two kinds have identical architectures.
    """

    name = "lenet5_bn"
    first_layer, last_layer = "conv1", "fc3"

    def __init__(self, kind="adder", grad_mode="full", num_classes=10, in_channels=1, input_size=32):
        _check_args(self.name, kind, grad_mode, num_classes, in_channels, input_size, 16)
        super().__init__(kind, in_channels, input_size)
        size = output_size(output_size(input_size, 5, 1, 0) // 2, 5, 1, 0) // 2  # 32 -> 28 -> 14 -> 10 -> 5
        self.conv1, self.bn1 = conv(kind, in_channels, 6, 5, grad_mode=grad_mode), nn.BatchNorm2d(6)
        self.conv2, self.bn2 = conv(kind, 6, 16, 5, grad_mode=grad_mode), nn.BatchNorm2d(16)
        self.fc1, self.bn3 = linear(kind, 16 * size * size, 120, grad_mode), nn.BatchNorm1d(120)
        self.fc2, self.bn4 = linear(kind, 120, 84, grad_mode), nn.BatchNorm1d(84)
        self.fc3, self.bn5 = linear(kind, 84, num_classes, grad_mode), nn.BatchNorm1d(num_classes)

    def forward(self, x):
        _check_input(self.name, x, self.in_channels, self.input_size)
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.flatten(x, 1)
        x = F.relu(self.bn3(self.fc1(x)))
        x = F.relu(self.bn4(self.fc2(x)))
        return self.bn5(self.fc3(x))


# ============================================================================ LeNet++
class LeNetPP(_Net):
    """LeNet++ (paper Fig. 1, after Wen et al.'s centre-loss network): six 5x5 conv
    layers of 32, 32, 64, 64, 128, 128 channels (padding 2, max pooling after every
    pair), a fully connected layer down to ``feature_dim`` = 3 features, and the
    classifier. Every weight layer is followed by batch norm, and in the AdderNet every
    one of them, the classifier included, is an adder layer. The classifier then scores
    class t by -||f - w_t||_1, an l1 distance to a learned centre, which is why the
    AdderNet's features cluster around centres while the CNN's spread out by angle.

    ``features(x)`` returns the 3-D features (after their batch norm, no ReLU);
    ``forward(x, return_features=True)`` returns (logits, features).
    """

    name = "lenet_pp"
    first_layer, last_layer = "conv1", "fc"

    def __init__(self, kind="adder", grad_mode="full", num_classes=10, in_channels=1, input_size=32,
                 feature_dim=3):
        _check_args(self.name, kind, grad_mode, num_classes, in_channels, input_size, 8)
        super().__init__(kind, in_channels, input_size)
        widths = [in_channels, 32, 32, 64, 64, 128, 128]
        for i in range(6):
            setattr(self, f"conv{i + 1}", conv(kind, widths[i], widths[i + 1], 5, 1, 2, grad_mode))
            setattr(self, f"bn{i + 1}", nn.BatchNorm2d(widths[i + 1]))
        size = input_size // 2 // 2 // 2
        self.feature = linear(kind, 128 * size * size, feature_dim, grad_mode)
        self.bn_feature = nn.BatchNorm1d(feature_dim)
        self.fc, self.bn_fc = linear(kind, feature_dim, num_classes, grad_mode), nn.BatchNorm1d(num_classes)

    def features(self, x):
        _check_input(self.name, x, self.in_channels, self.input_size)
        for i in range(1, 7):
            x = F.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)))
            if i % 2 == 0:
                x = F.max_pool2d(x, 2)
        return self.bn_feature(self.feature(F.flatten(x, 1)))

    def forward(self, x, return_features=False):
        f = self.features(x)
        logits = self.bn_fc(self.fc(f))
        return (logits, f) if return_features else logits


# ============================================================================ VGG-small
class VGGSmall(_Net):
    """VGG-small for CIFAR (the BNN papers' network the paper uses in Table 2):

    conv 3->128 (full precision), then 128, 128, M, 256, 256, M, 512, 512, M as 3x3
    layers (adder layers in the AdderNet), each with BN + ReLU, then a full-precision
    linear classifier 512*4*4 -> num_classes (with bias: nothing normalises after it).
    """

    name = "vgg_small"
    first_layer, last_layer = "conv0", "fc"
    plan = (("conv1", 128, 128, False), ("conv2", 128, 256, True), ("conv3", 256, 256, False),
            ("conv4", 256, 512, True), ("conv5", 512, 512, False))  # (name, in, out, pool before)

    def __init__(self, kind="adder", grad_mode="full", num_classes=10, in_channels=3, input_size=32):
        _check_args(self.name, kind, grad_mode, num_classes, in_channels, input_size, 8)
        super().__init__(kind, in_channels, input_size)
        self.conv0, self.bn0 = nn.Conv2d(in_channels, 128, 3, 1, 1, bias=False), nn.BatchNorm2d(128)
        for i, (name, cin, cout, _) in enumerate(self.plan, start=1):
            setattr(self, name, conv(kind, cin, cout, 3, 1, 1, grad_mode))
            setattr(self, f"bn{i}", nn.BatchNorm2d(cout))
        size = input_size // 8
        self.fc = nn.Linear(512 * size * size, num_classes)

    def forward(self, x):
        _check_input(self.name, x, self.in_channels, self.input_size)
        x = F.relu(self.bn0(self.conv0(x)))
        for i, (name, _, _, pool_before) in enumerate(self.plan, start=1):
            if pool_before:
                x = F.max_pool2d(x, 2)
            x = F.relu(getattr(self, f"bn{i}")(getattr(self, name)(x)))
        x = F.max_pool2d(x, 2)
        return self.fc(F.flatten(x, 1))


# ============================================================================ ResNet-20/32
class BasicBlock(nn.Module):
    """Two 3x3 layers with BN, plus the shortcut: the identity, or (when the shape
    changes) a 1x1 stride-2 layer of the same kind + BN, as in the reference code."""

    def __init__(self, kind, in_channels, out_channels, stride, grad_mode):
        super().__init__()
        self.conv1, self.bn1 = conv(kind, in_channels, out_channels, 3, stride, 1, grad_mode), nn.BatchNorm2d(out_channels)
        self.conv2, self.bn2 = conv(kind, out_channels, out_channels, 3, 1, 1, grad_mode), nn.BatchNorm2d(out_channels)
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
    """CIFAR ResNet-(6n+2) in the reference code's style: conv 3->16 (full precision) +
    BN + ReLU; three stages of n basic blocks with 16, 32, 64 channels (stride 2 at the
    start of stages 2 and 3); global average pooling; a full-precision classifier
    64 -> num_classes without bias followed by BN on the logits (the reference code's
    1x1 conv + BatchNorm2d, written here as Linear + BatchNorm1d, which is the same on a
    1x1 map)."""

    first_layer, last_layer = "conv1", "fc"

    def __init__(self, depth, kind="adder", grad_mode="full", num_classes=10, in_channels=3, input_size=32):
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"ResNet: depth must be 6n+2 with n >= 1, got {depth}")
        name = f"resnet{depth}"
        _check_args(name, kind, grad_mode, num_classes, in_channels, input_size, 4)
        super().__init__(kind, in_channels, input_size)
        self.name = name
        n = (depth - 2) // 6
        self.conv1, self.bn1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
        width = 16
        for stage, (channels, stride) in enumerate(((16, 1), (32, 2), (64, 2)), start=1):
            blocks = []
            for b in range(n):
                blocks.append(BasicBlock(kind, width, channels, stride if b == 0 else 1, grad_mode))
                width = channels
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.fc, self.bn2 = nn.Linear(64, num_classes, bias=False), nn.BatchNorm1d(num_classes)

    def forward(self, x):
        _check_input(self.name, x, self.in_channels, self.input_size)
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.mean(x, axis=(2, 3))  # global average pooling (AvgPool2d(8) on 32x32 inputs)
        return self.bn2(self.fc(x))


# ============================================================================ builders
def lenet5_bn(kind="adder", grad_mode="full", num_classes=10, in_channels=1, input_size=32):
    """LeNet-5-BN for 1x32x32 inputs (MNIST padded to 32); see ``LeNet5BN``."""
    return LeNet5BN(kind, grad_mode, num_classes, in_channels, input_size)


def lenet_pp(kind="adder", grad_mode="full", num_classes=10, in_channels=1, input_size=32, feature_dim=3):
    """LeNet++ with a 3-D feature layer (paper Fig. 1); see ``LeNetPP``."""
    return LeNetPP(kind, grad_mode, num_classes, in_channels, input_size, feature_dim)


def vgg_small(kind="adder", grad_mode="full", num_classes=10, in_channels=3, input_size=32):
    """VGG-small for 3x32x32 inputs; see ``VGGSmall``."""
    return VGGSmall(kind, grad_mode, num_classes, in_channels, input_size)


def resnet20(kind="adder", grad_mode="full", num_classes=10, in_channels=3, input_size=32):
    """ResNet-20 (3 blocks per stage) for 3x32x32 inputs; see ``ResNet``."""
    return ResNet(20, kind, grad_mode, num_classes, in_channels, input_size)


def resnet32(kind="adder", grad_mode="full", num_classes=10, in_channels=3, input_size=32):
    """ResNet-32 (5 blocks per stage) for 3x32x32 inputs; see ``ResNet``."""
    return ResNet(32, kind, grad_mode, num_classes, in_channels, input_size)


MODELS = {"lenet5_bn": lenet5_bn, "lenet_pp": lenet_pp, "vgg_small": vgg_small,
          "resnet20": resnet20, "resnet32": resnet32}


def build_model(name, **kwargs):
    """Build a model by name, e.g. ``build_model("resnet20", kind="cnn", num_classes=100)``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; models: {', '.join(MODELS)}")
    return MODELS[name](**kwargs)
