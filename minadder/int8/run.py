"""Quantizing a trained run (``python -m minadder quantize``) and the int8 model that ``evaluate --int8`` runs.

A run folder's int8 model is the file ``int8.npz`` beside its ``checkpoint.npz`` (a
checkpoint file of another name, ``checkpoint-epoch005.npz``, gets
``checkpoint-epoch005.int8.npz``). It records the SHA-256 of the checkpoint it was made
from, so that a run trained further is not evaluated with the scales and filters of its
past: ``evaluate --int8`` refuses such a file and says how to make a new one.

The scales are calibrated on the first ``calibration_batches`` batches of the run's own
training split, shuffled with the run's seed, without augmentation, normalised as in
training, in batches of the run's batch size.
"""
import dataclasses
import hashlib
import itertools
from pathlib import Path

from ..train.checkpoint import CHECKPOINT
from ..train.evaluation import load_trained_model, normalised_as_trained
from . import kernel
from .calibrate import DEFAULT_METHOD, DEFAULT_PERCENTILE
from .files import Int8FileError, load, save
from .model import check_quantizable, quantize

INT8_FILE = "int8.npz"
DEFAULT_CALIBRATION_BATCHES = 4
#: the range of ``--calibration-batches``: at least one, and far beyond any useful number
CALIBRATION_BATCHES_RANGE = (1, 100_000)


def int8_path(checkpoint):
    """Where the int8 model of the checkpoint file ``checkpoint`` is kept."""
    checkpoint = Path(checkpoint)
    if checkpoint.name == CHECKPOINT:
        return checkpoint.with_name(INT8_FILE)
    return checkpoint.with_name(f"{checkpoint.stem}.int8.npz")


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def calibration_batches(config, saved, count, data_dir=None):
    """(the first ``count`` (x, y) batches of the run's training split, notes on where it was read)."""
    from ..data import DataLoader
    from ..train.datasets import load_data
    data = load_data(dataclasses.replace(config, data_dir=data_dir or config.data_dir, extra_test_file=None,
                                         augment="none"))
    loader = DataLoader(normalised_as_trained(data.train_set, saved.metrics), config.batch_size, shuffle=True,
                        seed=config.seed, pad_to=data.pad_to)
    return list(itertools.islice(loader, count)), data.notes


def _quantize_checkpoint(path, saved, config, model, count, method, percentile, data_dir, bits=8):
    """(the int8 network of a loaded checkpoint, notes), calibrated on its training split."""
    check_quantizable(model.architecture)        # before any data are read
    batches, notes = calibration_batches(config, saved, count, data_dir)
    network = quantize(model, batches, method, percentile, bits)
    network.calibration.update(batches=len(batches), checkpoint_sha256=_sha256(path))
    return network, notes


def quantize_run(target, calibration_batches=DEFAULT_CALIBRATION_BATCHES, method=DEFAULT_METHOD, data_dir=None,
                 percentile=DEFAULT_PERCENTILE, bits=8):
    """Quantize the AdderNet of a run folder (or checkpoint file) ``target`` and write its
    int8 model beside the checkpoint (codes of ``bits`` bits, 2 to 8). Returns (the file
    written, the Int8Network, notes)."""
    path, saved, config, model = load_trained_model(target)
    network, notes = _quantize_checkpoint(path, saved, config, model, calibration_batches, method, percentile,
                                          data_dir, bits)
    return save(network, int8_path(path)), network, notes


def describe(network, file):
    """What ``evaluate --json`` reports about an int8 model."""
    return {"int8_file": str(file), "calibration": dict(network.calibration), "sad_kernel": kernel.name(),
            "int8_layers": network.adder_names, "float32_layers": network.float_names}


def network_for_checkpoint(path, saved, config, model, data_dir=None):
    """(the int8 network of a loaded checkpoint, ``describe``'s dict, notes): read from its
    int8 file, or quantized now with the defaults and saved there when there is none."""
    file = int8_path(path)
    if not file.exists():
        network, notes = _quantize_checkpoint(path, saved, config, model, DEFAULT_CALIBRATION_BATCHES,
                                              DEFAULT_METHOD, DEFAULT_PERCENTILE, data_dir)
        save(network, file)
        return network, describe(network, file), notes + [f"quantized {path.name} into {file}"]
    network = load(file)
    if network.calibration.get("checkpoint_sha256") != _sha256(path):
        raise Int8FileError(f"{file}: made from another checkpoint than {path} (trained further, or copied); "
                            f"run python -m minadder quantize {path.parent} to quantize this one")
    if network.architecture != model.architecture._replace(grad_mode=network.architecture.grad_mode):
        raise Int8FileError(f"{file}: holds a {network.architecture.name} that is not the network of {path}")
    return network, describe(network, file), []
