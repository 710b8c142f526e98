"""Count the multiplications and additions of one forward pass (paper Tables 2 and 3, Sec. 4.1).

How a layer is counted. A weight layer computes, for every output value, one reduction
over its fan-in K = C_in * d * d (K = in_features for a fully connected layer), so it
does ``pairs = K * (number of outputs)`` input-filter comparisons for one image:

- a convolution / linear layer: one multiplication and one addition per pair
  (multiply-accumulate; the paper's CNN rows give #Add = #Mul);
- an adder layer (Eq. 2): two additions per pair, the subtraction x - f and the
  accumulation of |x - f| (taking an absolute value clears a sign bit and is not counted),
  and no multiplication (the paper's AdderNet rows: 0 #Mul, twice the CNN's #Add);
- a binary layer (the paper's BNN rows, shown for comparison): one XNOR and one addition
  (popcount) per pair.

As in the paper, batch norm, pooling, ReLU and the residual additions are left out of
the totals; they are reported separately (batch norm folded into one multiplication and
one addition per value at inference). The paper leaves the first and last layers out of
Table 2 (they stay full precision in every CIFAR row); this module reports totals with
and without them. The latency estimate is the paper's Sec. 4.1 model: a float
multiplication costs 4 cycles and an addition 2 (VIA Nano 2000 latencies).

Layers are found by tracing: a forward hook on every weight layer, batch norm and
residual block records the shapes it sees during one forward pass of a zero image, so
the count follows the model's real forward (shortcuts included).

How the results compare with the paper's (see ``PAPER`` and ``compare``):

- ResNet-32: 69.12M multiply-accumulates in the CNN, exactly the paper's 69.12M, but
  only when the first conv (0.44M) and the two 1x1 shortcut layers (0.26M) are counted
  and the classifier is not; without the first and last layers (the rule the paper
  states) it is 68.68M. So the paper's Table 2 numbers include the first layer.
- ResNet-20: the same rule gives 40.81M (40.37M without the first and last layers),
  0.9 % below the paper's 41.17M. No combination of first layer, shortcuts, classifier,
  batch norm (0.20M values) or residual additions (0.11M) gives 41.17M; the paper's
  number is probably from a slightly different count, which its text does not say.
- VGG-small: 0.604G without the first and last layers, 0.608G with them (0.65G in the
  paper). The paper does not define VGG-small; with the two 1024-wide fully connected
  layers of the LQ-Nets version it would be 0.617G. The remaining gap is unexplained.
- LeNet-5-BN: 416,520 multiply-accumulates over all five layers (the paper: ~435K),
  833,040 additions in the AdderNet (~870K). With batch norm folded in (6,518 values,
  one multiplication each) it is 423K. Latency: 1.67M cycles for the AdderNet and 2.50M for the CNN, against the
  paper's ~1.7M and ~2.6M (which are 435K x 4 x 2 / 2 and 435K x (4 + 2)).
"""
import numpy as np

from . import models, nn
from .tensor import Tensor, no_grad

#: Float multiplication and addition latencies of Sec. 4.1 (VIA Nano 2000), in cycles.
MUL_CYCLES, ADD_CYCLES = 4, 2

#: The paper's numbers: #Mul of the CNN (Table 2, Sec. 4.1) and the LeNet-5 latencies.
PAPER = {
    "lenet5_bn": {"cnn_mul": 435e3, "adder_add": 870e3, "adder_cycles": 1.7e6, "cnn_cycles": 2.6e6},
    "vgg_small": {"cnn_mul": 0.65e9},
    "resnet20": {"cnn_mul": 41.17e6},
    "resnet32": {"cnn_mul": 69.12e6},
}

_WEIGHT_LAYERS = (nn.Conv2d, nn.Adder2d, nn.Linear, nn.AdderLinear)


# ============================================================================ tracing
def _weight_row(rows, name):
    """A forward hook that records a weight layer's shapes, fan-in K and pairs = K * outputs."""
    def hook(layer, inputs, output):
        fan_in = int(np.prod(layer.weight.shape[1:]))
        rows.append({"name": name, "type": type(layer).__name__, "input": list(inputs[0].shape[1:]),
                     "output": list(output.shape[1:]), "fan_in": fan_in,
                     "pairs": fan_in * int(np.prod(output.shape[1:]))})
    return hook


def _value_row(rows, name, kind):
    """A forward hook that records how many values a batch norm or residual add produces."""
    def hook(module, inputs, output):
        rows.append({"name": name, "type": kind, "output": list(output.shape[1:]),
                     "values": int(np.prod(output.shape[1:]))})
    return hook


def trace(model, input_shape=None):
    """Run one zero image through `model` (evaluation mode) with forward hooks; return the rows.

    Each row is a dict: name, type, input/output shape (without the batch axis), fan_in K
    and ``pairs`` = K * outputs. Batch norm layers and residual blocks are recorded as
    rows of type "BatchNorm" (values normalised) and "residual add" (values added).
    """
    input_shape = tuple(input_shape or model.input_shape())
    rows, handles = [], []
    for name, module in model.named_modules():
        if isinstance(module, _WEIGHT_LAYERS):
            hook = _weight_row(rows, name)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            hook = _value_row(rows, name, "BatchNorm")
        elif isinstance(module, models.BasicBlock):
            hook = _value_row(rows, name, "residual add")
        else:
            continue
        handles.append(module.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with no_grad():
            model(Tensor(np.zeros((1,) + input_shape, dtype=np.float32)))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return rows


# ============================================================================ counting
def layer_ops(row, kind, distance="l1"):
    """mul, add, xnor of one weight layer computed as `kind` ("cnn", "adder" or "bnn").

    An l1 adder term |x - w| is a subtraction and an accumulation (the absolute value is a
    sign bit); an l2 term (x - w)^2 (Eq. 27) is a subtraction, a multiplication and an
    accumulation: the l2-AdderNet multiplies as often as the CNN does."""
    pairs = row["pairs"]
    if kind == "adder":
        return {"mul": pairs if distance == "l2" else 0, "add": 2 * pairs, "xnor": 0}
    if kind == "bnn":
        return {"mul": 0, "add": pairs, "xnor": pairs}
    return {"mul": pairs, "add": pairs, "xnor": 0}


def cycles(ops):
    """Latency estimate of Sec. 4.1: 4 cycles per multiplication, 2 per addition."""
    return MUL_CYCLES * ops["mul"] + ADD_CYCLES * ops["add"]


def _sum(op_rows):
    total = {"mul": 0, "add": 0, "xnor": 0}
    for ops in op_rows:
        for key in total:
            total[key] += ops[key]
    total["cycles"] = cycles(total)
    return total


def _as_kind(kind, row, full_precision, edge=()):
    """The kind a layer runs as: full-precision layers stay "cnn" in every kind, and a
    BNN keeps its first and last layers (``edge``) full precision too."""
    return "cnn" if row["name"] in full_precision or (kind == "bnn" and row["name"] in edge) else kind


#: The most classes ``count`` builds a classifier for (ImageNet-21k has about 21,000):
#: the weights of a larger one would not fit in memory.
MAX_CLASSES = 100_000


def check_num_classes(num_classes):
    """Refuse a number of classes no classifier can have (--num-classes)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 2 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"--num-classes must be an integer from 2 to {MAX_CLASSES:,}; got {num_classes!r}")


def count(model_name, kind="adder", num_classes=10, in_channels=None, input_size=None, distance="l1"):
    """The op counts of one forward pass of `model_name` as a JSON-ready dict.

    ``layers`` lists every weight layer with its mul/add/xnor as `kind` (its adder layers
    of ``distance``); ``totals`` has "all" and "without_first_last"; ``table`` holds the
    three rows of the paper's Table 2 (BNN, AdderNet, CNN) both ways, and "adder_l2", the
    l2-AdderNet of Appendix B; ``not_counted`` has batch norm and residual additions.
    """
    check_num_classes(num_classes)
    kwargs = {"num_classes": num_classes}
    if in_channels is not None:
        kwargs["in_channels"] = in_channels
    if input_size is not None:
        kwargs["input_size"] = input_size
    adder_twin = models.build_model(model_name, kind="adder", **kwargs)
    if kind == "adder":
        model = models.build_model(model_name, kind=kind, distance=distance, **kwargs)
    else:
        model = models.build_model(model_name, kind=kind, **kwargs)
        distance = "l1"
    rows = trace(model)
    weight_rows = [r for r in rows if "pairs" in r]
    # the layers the AdderNet keeps multiplying (the first and last of the CIFAR nets)
    full_precision = _full_precision_names(adder_twin)
    edge = {model.first_layer, model.last_layer}

    layers = []
    for r in weight_rows:
        role = "first" if r["name"] == model.first_layer else "last" if r["name"] == model.last_layer else ""
        ops = layer_ops(r, _as_kind(kind, r, full_precision, edge), distance)
        layers.append({**r, "role": role, **ops, "cycles": cycles(ops)})

    def totals(as_kind, as_distance="l1"):
        per_layer = [(r, layer_ops(r, _as_kind(as_kind, r, full_precision, edge), as_distance)) for r in weight_rows]
        return {"all": _sum(ops for _, ops in per_layer),
                "without_first_last": _sum(ops for r, ops in per_layer if r["name"] not in edge)}

    bn_values = sum(r["values"] for r in rows if r["type"] == "BatchNorm")
    residual_values = sum(r["values"] for r in rows if r["type"] == "residual add")
    return {
        "model": model_name, "kind": kind, "distance": distance, "input_shape": list(model.input_shape()),
        "first_layer": model.first_layer, "last_layer": model.last_layer,
        "full_precision_layers": sorted(full_precision),
        "layers": layers,
        "totals": totals(kind, distance),
        "table": {**{k: totals(k) for k in ("bnn", "adder", "cnn")}, "adder_l2": totals("adder", "l2")},
        "not_counted": {"batch_norm_values": bn_values, "batch_norm_folded": {"mul": bn_values, "add": bn_values},
                        "residual_adds": residual_values},
        "paper": PAPER.get(model_name, {}),
    }


def _full_precision_names(adder_model):
    """Names of the layers that multiply even in the AdderNet (first/last of CIFAR nets)."""
    return {name for name, m in adder_model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


# ============================================================================ printing
def _si(n):
    """41170000 -> '41.17M' (the paper's style)."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}"
    return str(int(n))


def format_report(report):
    """The report of ``count`` as the text table the command line prints."""
    kind_name = {"adder": "AdderNet", "cnn": "CNN", "bnn": "BNN"}[report["kind"]]
    if report.get("distance") == "l2":
        kind_name = "l2-AdderNet"
    shape = "x".join(map(str, report["input_shape"]))
    lines = [f"{report['model']} ({kind_name}), one {shape} image", ""]
    header = f"{'layer':<28}{'type':<12}{'output':>12}{'mul':>14}{'add':>14}"
    lines += [header, "-" * len(header)]
    for row in report["layers"]:
        name = row["name"] + (f" ({row['role']})" if row["role"] else "")
        out = "x".join(map(str, row["output"]))
        lines.append(f"{name:<28}{row['type']:<12}{out:>12}{row['mul']:>14,}{row['add']:>14,}")
    lines.append("-" * len(header))
    for key, label in (("all", "total"), ("without_first_last", "without first and last")):
        t = report["totals"][key]
        lines.append(f"{label:<52}{t['mul']:>14,}{t['add']:>14,}")
    nc = report["not_counted"]
    lines += ["", f"not counted (as in the paper): batch norm {nc['batch_norm_values']:,} values "
                  f"(folded: one mul + one add each), residual additions {nc['residual_adds']:,}", ""]

    lines.append("As in Table 2 (without first and last layers) | all layers; "
                 f"cycles: mul {MUL_CYCLES}, add {ADD_CYCLES}")
    lines.append(f"{'':<10}{'#Mul':>10}{'#Add':>10}{'XNOR':>10}{'cycles':>10}  |"
                 f"{'#Mul':>10}{'#Add':>10}{'XNOR':>10}{'cycles':>10}")
    for kind, label in (("bnn", "BNN"), ("adder", "AddNN"), ("adder_l2", "AddNN-l2"), ("cnn", "CNN")):
        cells = []
        for key in ("without_first_last", "all"):
            t = report["table"][kind][key]
            cyc = "-" if kind == "bnn" else _si(t["cycles"])
            cells.append(f"{_si(t['mul']):>10}{_si(t['add']):>10}{_si(t['xnor']):>10}{cyc:>10}")
        lines.append(f"{label:<10}" + "  |".join(cells))
    paper = report["paper"]
    if paper:
        bits = [f"CNN #Mul {_si(paper['cnn_mul'])}"]
        if "adder_cycles" in paper:
            bits.append(f"AdderNet #Add ~{_si(paper['adder_add'])}, cycles ~{_si(paper['adder_cycles'])} "
                        f"(CNN ~{_si(paper['cnn_cycles'])})")
        lines.append("paper: " + "; ".join(bits))
    return "\n".join(lines)
