"""The paper's networks written once, as plain data that both minadder and PyTorch build (mathematics.md, sec. 6).

A network is described by an ``Architecture``: its name, what it was asked for (kind,
grad mode, classes, input) and a tuple of layer records in forward order::

    Conv2d("conv1", 1, 6, 5), BatchNorm2d("bn1", 6), ReLU(), MaxPool(2), ...

A record with a ``name`` becomes a sub-module of that name (so the names in a state
dict are the record names, in this order); the others (ReLU, MaxPool, Flatten,
GlobalAvgPool) are functions applied on the way. ``minadder.models`` and
``minadder.torch.models`` build the same description with their own layer classes
(``minadder.frameworks`` does the building), so the two frameworks cannot drift apart.

``kind`` picks what the multiplying layers become (paper Sec. 4.1, 4.2): with
kind="adder", every ``Conv2d`` / ``Linear`` record whose ``adder`` flag is set becomes an
adder layer (Eq. 2, ``Adder2d`` / ``AdderLinear``; with ``distance="l2"`` the l2 layer of
Appendix B, Eq. 27); with kind="cnn" it stays a bias-free convolution / linear layer;
with kind="bnn" it becomes a binary layer (``minadder.binary``: weights and inputs
binarized by sign, the paper's BNN baseline of Tables 2 and 3), and the network's first
and last layers stay full precision, as in the BNN papers; its ReLUs act as HardTanh
(``frameworks.activation`` says why). Nothing else changes between the kinds.

- LeNet-5-BN (MNIST): every conv AND fully connected layer is an adder layer.
- VGG-small, ResNet-20, ResNet-32 (CIFAR): the first conv and the classifier stay full
  precision in both kinds (``adder=False``), as for the paper's BNN baselines.
- Every adder layer is followed by batch norm: an adder output -sum|x - f| is never
  positive and its variance grows with the fan-in (Eq. 9, proofs/variance.md), so it must be
  re-centred and re-scaled before the next layer; the multiplying twin keeps that batch
  norm and drops its bias.

``first_layer`` and ``last_layer`` name the layers the op counter (``minadder.count``)
leaves out of the paper's Table 2 totals.
"""
import numbers
from typing import NamedTuple

from .checks import check_distance
from .kernels.contract import check_grad_mode
from .kernels.geometry import output_size

KINDS = ("adder", "cnn", "bnn")


# ============================================================================ layer records
class Conv2d(NamedTuple):
    """A k x k layer without bias: an adder layer in the AdderNet when ``adder``."""
    name: str
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    adder: bool = True


class Linear(NamedTuple):
    """A fully connected layer: an adder layer in the AdderNet when ``adder``."""
    name: str
    in_features: int
    out_features: int
    adder: bool = True
    bias: bool = False


class BatchNorm2d(NamedTuple):
    """Batch norm per channel of an (N, C, H, W) input."""
    name: str
    num_features: int


class BatchNorm1d(NamedTuple):
    """Batch norm of an (N, C) input."""
    name: str
    num_features: int


class Block(NamedTuple):
    """ResNet's basic block; its layers are ``block_layers(block)``."""
    name: str
    in_channels: int
    out_channels: int
    stride: int


class Stage(NamedTuple):
    """A run of basic blocks (a Sequential whose children are named "0", "1", ...)."""
    name: str
    blocks: tuple


class ReLU(NamedTuple):
    """max(x, 0)."""


class MaxPool(NamedTuple):
    """k x k max pooling with stride k."""
    kernel_size: int = 2


class Flatten(NamedTuple):
    """(N, C, H, W) -> (N, C*H*W)."""


class GlobalAvgPool(NamedTuple):
    """The mean over every position: (N, C, H, W) -> (N, C)."""


class Features(NamedTuple):
    """Not a layer: marks where ``features(x)`` stops (LeNet++'s 3-D features)."""


class Architecture(NamedTuple):
    """One network: what it was built with, and its layer records in forward order.
    ``options``: (name, value) pairs of the builder's other arguments (LeNet++'s widths)."""
    name: str
    kind: str
    grad_mode: str
    num_classes: int
    in_channels: int
    input_size: int
    first_layer: str
    last_layer: str
    layers: tuple
    options: tuple = ()
    distance: str = "l1"


def block_layers(block):
    """(body, shortcut) of a basic block: two 3x3 layers with batch norm, and the identity
    (None) or, when the shape changes, a 1x1 stride-s layer of the same kind + batch norm,
    as in the paper's reference code."""
    c_in, c_out, stride = block.in_channels, block.out_channels, block.stride
    body = (Conv2d("conv1", c_in, c_out, 3, stride, 1), BatchNorm2d("bn1", c_out), ReLU(),
            Conv2d("conv2", c_out, c_out, 3, 1, 1), BatchNorm2d("bn2", c_out))
    if stride == 1 and c_in == c_out:
        return body, None
    return body, (Conv2d("0", c_in, c_out, 1, stride, 0), BatchNorm2d("1", c_out))


def spatial_size(layers, size):
    """The height (= width) of a square input of ``size`` after ``layers``."""
    for record in layers:
        if isinstance(record, Conv2d):
            size = output_size(size, record.kernel_size, record.stride, record.padding)
        elif isinstance(record, MaxPool):
            size //= record.kernel_size
    return size


def check_args(model, kind, grad_mode, num_classes, in_channels, input_size, min_size, distance="l1"):
    """Refuse a kind, grad mode, distance or size the network cannot be built with, naming it."""
    if kind not in KINDS:
        raise ValueError(f"{model}: kind must be one of {KINDS}, got {kind!r}")
    check_grad_mode(grad_mode, model)
    check_distance(model, distance, grad_mode)
    if distance != "l1" and kind != "adder":
        raise ValueError(f"{model}: distance={distance!r} applies to kind='adder' only, got kind={kind!r}")
    for name, value, low in (("num_classes", num_classes, 2), ("in_channels", in_channels, 1),
                             ("input_size", input_size, min_size)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{model}: {name} must be an integer >= {low}, got {value!r}")


# ============================================================================ the networks
def lenet5_bn(kind="adder", grad_mode="full", num_classes=10, in_channels=1, input_size=32, distance="l1"):
    """LeNet-5 with batch norm after every weight layer (paper Sec. 4.1), for 1x32x32 inputs:

    conv 1->6 k5, BN, ReLU, maxpool 2; conv 6->16 k5, BN, ReLU, maxpool 2;
    FC 400->120, BN, ReLU; FC 120->84, BN, ReLU; FC 84->num_classes, BN.

    In the AdderNet all five layers are adder layers. The last one gets a batch norm on
    the logits too: its outputs -||x - w_t||_1 are all negative and, with the fan-in of 84
    and N(0, 1) filters, spread over tens of units, which would saturate the softmax at
    the first step. The reference code does the same for ResNet-20; the CNN twin keeps it
    too, so that the two kinds have identical architectures.
    """
    check_args("lenet5_bn", kind, grad_mode, num_classes, in_channels, input_size, 16, distance)
    convs = (Conv2d("conv1", in_channels, 6, 5), BatchNorm2d("bn1", 6), ReLU(), MaxPool(2),
             Conv2d("conv2", 6, 16, 5), BatchNorm2d("bn2", 16), ReLU(), MaxPool(2))
    size = spatial_size(convs, input_size)   # 32 -> 28 -> 14 -> 10 -> 5
    layers = convs + (Flatten(),
                      Linear("fc1", 16 * size * size, 120), BatchNorm1d("bn3", 120), ReLU(),
                      Linear("fc2", 120, 84), BatchNorm1d("bn4", 84), ReLU(),
                      Linear("fc3", 84, num_classes), BatchNorm1d("bn5", num_classes))
    return Architecture("lenet5_bn", kind, grad_mode, num_classes, in_channels, input_size, "conv1", "fc3", layers,
                        distance=distance)


def lenet_pp(kind="adder", grad_mode="full", num_classes=10, in_channels=1, input_size=32, feature_dim=3,
             widths=(32, 32, 64, 64, 128, 128), distance="l1"):
    """LeNet++ (paper Fig. 1, after Wen et al.'s centre-loss network): six 5x5 layers of
    ``widths`` channels (padding 2, max pooling after every pair), a fully connected layer
    down to ``feature_dim`` = 3 features, and the classifier. Every weight layer is
    followed by batch norm, and in the AdderNet every one of them, the classifier
    included, is an adder layer: it scores class t by -||f - w_t||_1, an l1 distance to a
    learned centre, which is why the AdderNet's features cluster around centres while the
    CNN's spread out by angle.

    ``features(x)`` returns the 3-D features (after their batch norm, no ReLU);
    ``forward(x, return_features=True)`` returns (logits, features). Narrower ``widths``
    give the notebooks' small version.
    """
    check_args("lenet_pp", kind, grad_mode, num_classes, in_channels, input_size, 8, distance)
    if len(widths) != 6:
        raise ValueError(f"lenet_pp: widths must be 6 channel counts, got {tuple(widths)}")
    channels, convs = (in_channels, *widths), ()
    for i in range(6):
        convs += (Conv2d(f"conv{i + 1}", channels[i], channels[i + 1], 5, 1, 2),
                  BatchNorm2d(f"bn{i + 1}", channels[i + 1]), ReLU()) + ((MaxPool(2),) if i % 2 else ())
    size = spatial_size(convs, input_size)
    layers = convs + (Flatten(), Linear("feature", channels[-1] * size * size, feature_dim),
                      BatchNorm1d("bn_feature", feature_dim), Features(),
                      Linear("fc", feature_dim, num_classes), BatchNorm1d("bn_fc", num_classes))
    return Architecture("lenet_pp", kind, grad_mode, num_classes, in_channels, input_size, "conv1", "fc", layers,
                        (("feature_dim", feature_dim), ("widths", tuple(widths))), distance)


def vgg_small(kind="adder", grad_mode="full", num_classes=10, in_channels=3, input_size=32, distance="l1"):
    """VGG-small for 3x32x32 inputs (the BNN papers' network the paper uses in Table 2):

    conv 3->128 (full precision), then 128, 128, M, 256, 256, M, 512, 512, M as 3x3
    layers (adder layers in the AdderNet), each with BN + ReLU, then a full-precision
    linear classifier 512*4*4 -> num_classes (with bias: nothing normalises after it).
    """
    check_args("vgg_small", kind, grad_mode, num_classes, in_channels, input_size, 8, distance)
    layers = (Conv2d("conv0", in_channels, 128, 3, 1, 1, adder=False), BatchNorm2d("bn0", 128), ReLU())
    for i, (c_in, c_out, pool_before) in enumerate(((128, 128, False), (128, 256, True), (256, 256, False),
                                                    (256, 512, True), (512, 512, False)), start=1):
        layers += ((MaxPool(2),) if pool_before else ()) + (
            Conv2d(f"conv{i}", c_in, c_out, 3, 1, 1), BatchNorm2d(f"bn{i}", c_out), ReLU())
    layers += (MaxPool(2),)
    size = spatial_size(layers, input_size)
    layers += (Flatten(), Linear("fc", 512 * size * size, num_classes, adder=False, bias=True))
    return Architecture("vgg_small", kind, grad_mode, num_classes, in_channels, input_size, "conv0", "fc", layers,
                        distance=distance)


def resnet(depth, kind="adder", grad_mode="full", num_classes=10, in_channels=3, input_size=32, distance="l1"):
    """CIFAR ResNet-(6n+2) in the reference code's style: conv 3->16 (full precision) +
    BN + ReLU; three stages of n basic blocks with 16, 32, 64 channels (stride 2 at the
    start of stages 2 and 3); global average pooling; a full-precision classifier
    64 -> num_classes without bias followed by BN on the logits (the reference code's
    1x1 conv + BatchNorm2d, written here as Linear + BatchNorm1d, the same on a 1x1 map)."""
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or (depth - 2) % 6 != 0 or depth < 8:
        raise ValueError(f"ResNet: depth must be 6n+2 with n >= 1, got {depth}")
    name = f"resnet{depth}"
    check_args(name, kind, grad_mode, num_classes, in_channels, input_size, 4, distance)
    layers = (Conv2d("conv1", in_channels, 16, 3, 1, 1, adder=False), BatchNorm2d("bn1", 16), ReLU())
    width, n = 16, (depth - 2) // 6
    for stage, (channels, stride) in enumerate(((16, 1), (32, 2), (64, 2)), start=1):
        blocks = []
        for b in range(n):
            blocks.append(Block(str(b), width, channels, stride if b == 0 else 1))
            width = channels
        layers += (Stage(f"layer{stage}", tuple(blocks)),)
    layers += (GlobalAvgPool(), Linear("fc", 64, num_classes, adder=False), BatchNorm1d("bn2", num_classes))
    return Architecture(name, kind, grad_mode, num_classes, in_channels, input_size, "conv1", "fc", layers,
                        distance=distance)


def resnet20(kind="adder", grad_mode="full", num_classes=10, in_channels=3, input_size=32, distance="l1"):
    """ResNet-20 (3 blocks per stage) for 3x32x32 inputs; see ``resnet``."""
    return resnet(20, kind, grad_mode, num_classes, in_channels, input_size, distance)


def resnet32(kind="adder", grad_mode="full", num_classes=10, in_channels=3, input_size=32, distance="l1"):
    """ResNet-32 (5 blocks per stage) for 3x32x32 inputs; see ``resnet``."""
    return resnet(32, kind, grad_mode, num_classes, in_channels, input_size, distance)


DESCRIPTIONS = {"lenet5_bn": lenet5_bn, "lenet_pp": lenet_pp, "vgg_small": vgg_small,
                "resnet20": resnet20, "resnet32": resnet32}
