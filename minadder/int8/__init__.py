"""Post-training int8 quantization of an l1 AdderNet, and its integer inference (issue 28).

    network = quantize(model, batches)          # an Int8Network, calibrated on a few batches
    quantize(model, batches, bits=4)            # codes 0..15 instead of 0..255, the same kernel
    logits = network(images)                    # adder layers as sums of absolute byte differences
    save(network, "int8.npz"); load("int8.npz") # one .npz of arrays, no pickle
    quantize_run("runs/<run>")                  # python -m minadder quantize runs/<run>

Read the modules in this order:

- ``layers.py``: one scale and offset for an adder layer's input and filters,
  Y ~ -s * SAD(q_x, q_f), and batch norm folded into a per-channel rescale and bias;
- ``calibrate.py``: how each layer's range is chosen ("max" or "percentile");
- ``model.py``: ``Int8Network``, a whole architecture with its adder layers in
  integers, the paper's full-precision layers and what lies between them in float32;
  ``quantize``;
- ``kernel.py``: the integer SAD kernel the layers call (compiled, or the NumPy reference);
- ``files.py``: the int8.npz file, checked entry by entry when read;
- ``run.py``: quantizing a run folder, and the int8 model ``evaluate --int8`` runs.
"""
from .calibrate import DEFAULT_METHOD, DEFAULT_PERCENTILE, METHODS
from .files import FORMAT_VERSION, Int8FileError, load, save
from .layers import BITS_RANGE, AdderLayer, FloatLayer, Quantizer, fold_batch_norm, quantizer_for
from .model import Int8Network, quantize, weight_layers
from .run import CALIBRATION_BATCHES_RANGE, DEFAULT_CALIBRATION_BATCHES, INT8_FILE, int8_path, quantize_run

__all__ = ["AdderLayer", "BITS_RANGE", "CALIBRATION_BATCHES_RANGE", "DEFAULT_CALIBRATION_BATCHES", "DEFAULT_METHOD",
           "DEFAULT_PERCENTILE", "FORMAT_VERSION", "FloatLayer", "INT8_FILE", "Int8FileError", "Int8Network",
           "METHODS", "Quantizer", "fold_batch_norm", "int8_path", "load", "quantize", "quantize_run",
           "quantizer_for", "save", "weight_layers"]
