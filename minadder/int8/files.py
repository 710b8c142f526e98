"""The int8 model file: one .npz of arrays only (no pickle), checked entry by entry when read.

``save(network, path)`` writes, for an architecture whose weight layers are named as in
its state dict (``conv1``, ``layer2.0.downsample.0``, ``fc``, ...):

    format_version                 int64 scalar, FORMAT_VERSION
    meta.architecture              UTF-8 JSON: name, kind, num_classes, in_channels,
                                   input_size, options (as uint8 bytes)
    meta.calibration               UTF-8 JSON: method, percentile, images, bits, checkpoint_sha256
    bits                           uint8 scalar, the codes' width, 2..7; only when under 8
                                   (a file without it is 8-bit, so an 8-bit file is the same
                                   as before ``bits`` existed, and an older reader refuses a
                                   narrower one as an unexpected entry instead of misreading it)
    <adder layer>.codes            uint8, the filters' codes (0 .. 2^bits - 1), the weight's shape
    <adder layer>.scale            float32 scalar s      (value ~ s * (code - z))
    <adder layer>.offset           uint8 scalar z        (the code of 0.0)
    <adder layer>.rescale, .bias   float32 (C_out,)      (batch norm folded, sign included)
    <float layer>.weight           float32, the layer's weight shape
    <float layer>.rescale, .bias   float32 (C_out,)

``load(path)`` reads it with every size bounded before anything is allocated and no
pickled objects (``minadder.bounded.load_npz``, what ``np.load(allow_pickle=False)`` reads),
rebuilds the architecture from its description, and requires exactly the entries that
architecture needs, each of its dtype and shape, every float finite, every scale
positive and every code and offset at most 2^bits - 1. Anything else raises
``Int8FileError``: one line naming the file and the entry.
"""
import functools
import json

import numpy as np

from .. import bounded
from ..architectures import DESCRIPTIONS, resnet
from ..train.files import atomic_write
from .layers import BITS_RANGE, AdderLayer, FloatLayer, Quantizer, largest_code
from .model import Int8Network, weight_layers

FORMAT_VERSION = 1
MAX_RESNET_DEPTH = 2000   # ResNet-1202 is the deepest CIFAR ResNet in the literature


class Int8FileError(ValueError):
    """An int8 model file that cannot be used; the message is one line naming the file."""


def _utf8(value):
    return np.frombuffer(json.dumps(value).encode("utf-8"), dtype=np.uint8)


def _architecture_json(a):
    return {"name": a.name, "kind": a.kind, "num_classes": a.num_classes, "in_channels": a.in_channels,
            "input_size": a.input_size, "options": dict(a.options)}


# ============================================================================ writing
def layer_arrays(name, layer):
    """The file's entries for one layer."""
    common = {f"{name}.rescale": layer.rescale.astype(np.float32), f"{name}.bias": layer.bias.astype(np.float32)}
    if isinstance(layer, FloatLayer):
        return {f"{name}.weight": layer.weight.astype(np.float32), **common}
    return {f"{name}.codes": layer.codes, f"{name}.scale": np.float32(layer.quantizer.scale),
            f"{name}.offset": np.uint8(layer.quantizer.offset), **common}


def save(network, path):
    """Write ``network`` (an Int8Network) to ``path`` as one .npz, atomically."""
    arrays = {"format_version": np.int64(FORMAT_VERSION),
              "meta.architecture": _utf8(_architecture_json(network.architecture)),
              "meta.calibration": _utf8(network.calibration)}
    if network.bits != 8:
        arrays["bits"] = np.uint8(network.bits)
    for name, layer in network.layers.items():
        arrays.update(layer_arrays(name, layer))

    def write(tmp):
        with open(tmp, "xb") as file:
            np.savez(file, **arrays)

    atomic_write(path, write)
    return path


# ============================================================================ reading
def _json(path, arrays, key):
    """The JSON object stored as UTF-8 bytes under ``key``."""
    array = arrays[key]
    if array.dtype != np.uint8 or array.ndim != 1:
        raise Int8FileError(f"{path}: entry {key} must be uint8 UTF-8 bytes, got {array.dtype} of shape {array.shape}")
    try:
        value = json.loads(array.tobytes().decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are both ValueErrors
        raise Int8FileError(f"{path}: entry {key} is not UTF-8 JSON ({exc})") from None
    if not isinstance(value, dict):
        raise Int8FileError(f"{path}: entry {key} must be a JSON object")
    return value


def describer(name):
    """The function that describes the network ``name``: one of ``DESCRIPTIONS``, or
    ``resnet(depth, ...)`` for "resnet<depth>" (depth 6n + 2 up to 2,000), or None."""
    if name in DESCRIPTIONS:
        return DESCRIPTIONS[name]
    depth = name[len("resnet"):] if isinstance(name, str) and name.startswith("resnet") else ""
    if depth.isdigit() and len(depth) <= 4 and int(depth) <= MAX_RESNET_DEPTH:
        return functools.partial(resnet, int(depth))
    return None


def _architecture(path, fields):
    """The architecture the file describes, built from its own description."""
    name, kind = fields.get("name"), fields.get("kind")
    describe = describer(name)
    if describe is None or kind != "adder":
        raise Int8FileError(f"{path}: meta.architecture must name an AdderNet of {', '.join(DESCRIPTIONS)} "
                            f"or resnet<depth>; got {name!r} of kind {kind!r}")
    options = fields.get("options", {})
    if not isinstance(options, dict):
        raise Int8FileError(f"{path}: meta.architecture options must be a JSON object, got {options!r}")
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    try:
        return describe(kind="adder", num_classes=fields.get("num_classes"),
                                  in_channels=fields.get("in_channels"), input_size=fields.get("input_size"),
                                  **options)
    except (TypeError, ValueError) as exc:
        raise Int8FileError(f"{path}: meta.architecture does not describe a network: {exc}") from None


def expected_entries(architecture):
    """{key: (dtype, shape)} of every layer entry the file of ``architecture`` holds."""
    entries = {}
    for w in weight_layers(architecture):
        r = w.record
        shape = ((r.out_channels, r.in_channels, r.kernel_size, r.kernel_size) if hasattr(r, "kernel_size")
                 else (r.out_features, r.in_features))
        per_channel = {f"{w.name}.rescale": (np.float32, shape[:1]), f"{w.name}.bias": (np.float32, shape[:1])}
        if w.adder:
            entries.update({f"{w.name}.codes": (np.uint8, shape), f"{w.name}.scale": (np.float32, ()),
                            f"{w.name}.offset": (np.uint8, ()), **per_channel})
        else:
            entries.update({f"{w.name}.weight": (np.float32, shape), **per_channel})
    return entries


def _check_entries(path, arrays, expected):
    """Exactly the ``expected`` entries, each of its dtype and shape, the floats finite."""
    missing = [k for k in expected if k not in arrays]
    unexpected = [k for k in arrays if k not in expected]
    if missing or unexpected:
        raise Int8FileError(f"{path}: " + "; ".join(
            part for part in (f"missing entries: {', '.join(missing[:5])}" if missing else "",
                              f"unexpected entries: {', '.join(unexpected[:5])}" if unexpected else "") if part))
    for key, (dtype, shape) in expected.items():
        array = arrays[key]
        if array.dtype != dtype or array.shape != shape:
            raise Int8FileError(f"{path}: entry {key} must be {np.dtype(dtype).name} of shape {shape}, "
                                f"got {array.dtype} of shape {array.shape}")
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise Int8FileError(f"{path}: entry {key} holds values that are not finite")
        if key.endswith(".scale") and not array > 0:
            raise Int8FileError(f"{path}: entry {key} must be a positive scale, got {array}")


def _read(path):
    """The file's arrays (sizes bounded, no objects) and its format, or Int8FileError."""
    try:
        arrays = bounded.load_npz(path)
    except bounded.FileRejected as exc:
        raise Int8FileError(f"{path}: not an int8 model file: {exc.problem}") from None
    version = arrays.pop("format_version", None)
    if version is None or version.shape != () or version.dtype.kind not in "iu" or int(version) != FORMAT_VERSION:
        raise Int8FileError(f"{path}: not a minadder int8 model file of format {FORMAT_VERSION} "
                            f"(format_version is {None if version is None else version.tolist()!r})")
    for key in ("meta.architecture", "meta.calibration"):
        if key not in arrays:
            raise Int8FileError(f"{path}: missing entries: {key}")
    return arrays


def _bits(path, arrays):
    """The codes' width the file records (its ``bits`` entry, taken out of ``arrays``), 8 without one."""
    bits = arrays.pop("bits", None)
    if bits is None:
        return 8
    low, high = BITS_RANGE
    if bits.shape != () or bits.dtype.kind not in "iu" or not low <= int(bits) <= high:
        raise Int8FileError(f"{path}: entry bits must be an integer scalar from {low} to {high}, "
                            f"got {bits.tolist()!r} of type {bits.dtype}")
    return int(bits)


def _check_codes(path, arrays, bits):
    """Every filter code and offset below 2^bits (a narrower model's codes use fewer values)."""
    top = largest_code(bits)
    for key, array in arrays.items():
        if key.endswith((".codes", ".offset")) and array.size and int(array.max()) > top:
            raise Int8FileError(f"{path}: entry {key} holds a code above {top}, the largest of {bits} bits")


def load(path):
    """The Int8Network saved in ``path``; Int8FileError (one line) for a wrong or damaged file."""
    arrays = _read(path)
    bits = _bits(path, arrays)
    architecture = _architecture(path, _json(path, arrays, "meta.architecture"))
    calibration = _json(path, arrays, "meta.calibration")
    layer_entries = {k: v for k, v in arrays.items() if k not in ("meta.architecture", "meta.calibration")}
    _check_entries(path, layer_entries, expected_entries(architecture))
    _check_codes(path, layer_entries, bits)
    layers = {w.name: _layer(w, {k[len(w.name) + 1:]: v for k, v in layer_entries.items()
                                 if k.rsplit(".", 1)[0] == w.name}, bits)
              for w in weight_layers(architecture)}
    return Int8Network(architecture, layers, calibration)


def _layer(w, entries, bits=8):
    """The layer of the WeightLayer ``w`` from its checked entries ({"codes": ..., "scale": ...}),
    its codes ``bits`` wide."""
    stride, padding = getattr(w.record, "stride", 1), getattr(w.record, "padding", 0)
    if w.adder:
        quantizer = Quantizer(float(entries["scale"]), int(entries["offset"]), bits)
        return AdderLayer(entries["codes"], quantizer, entries["rescale"], entries["bias"], stride, padding)
    return FloatLayer(entries["weight"], entries["rescale"], entries["bias"], stride, padding)
