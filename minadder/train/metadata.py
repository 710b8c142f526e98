"""What a checkpoint's metadata must hold: progress counters, the config by TrainConfig's field types, metrics lists.

A checkpoint is a file a user can copy, edit or damage, so ``read_checkpoint`` trusts none
of its JSON: ``check_metadata`` checks every field it will use, type and range, and the
first problem raises ``CheckpointError``, one line naming the file and the field
(``run/checkpoint.npz: meta.config field 'epochs' must be an integer, not the text '3'``),
before anything reaches the training loop or ``evaluate`` as an AttributeError or TypeError.
"""
import dataclasses
import math

#: Config fields every checkpoint ever written holds; the others take their default when
#: missing (a field added after the checkpoint was written).
REQUIRED_CONFIG = ("model", "kind", "dataset", "epochs", "batch_size", "lr", "seed")
#: Metrics fields resuming and evaluating read.
REQUIRED_METRICS = {"epochs": list, "steps": dict, "test_accuracy": (int, float, type(None))}
_COUNTERS = ("epoch", "step", "correct", "seen")
_SUMS = ("loss_sum", "seconds")


class CheckpointError(ValueError):
    """A checkpoint is damaged, incomplete, or not a minadder training checkpoint (the message names it)."""


def _kind(value):
    """How a message names a JSON value's type: 'the text '3'', 'a list', 'null'."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"the text {value[:40]!r}"
    return {bool: "a boolean", int: "an integer", float: "a number", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _progress(path, state):
    """The Progress fields from the ``state.*`` arrays: counters non-negative integers, sums
    non-negative finite numbers, no more correct answers than images seen."""
    numbers = {}
    for name in _COUNTERS + _SUMS:
        array = state[name]
        integer = name in _COUNTERS
        kinds = "iu" if integer else "iuf"
        if array.shape != () or array.dtype.kind not in kinds:
            raise CheckpointError(f"{path}: entry state.{name} must be one {'integer' if integer else 'number'}, "
                                  f"not an array of dtype {array.dtype} and shape {array.shape}")
        value = int(array) if integer else float(array)
        if not math.isfinite(value) or value < 0:
            raise CheckpointError(f"{path}: entry state.{name} must be >= 0; it is {value}")
        numbers[name] = value
    if numbers["correct"] > numbers["seen"]:
        raise CheckpointError(f"{path}: entry state.correct ({numbers['correct']}) exceeds state.seen "
                              f"({numbers['seen']})")
    return numbers


def _config(path, config):
    """The configuration: an object whose fields have TrainConfig's types and valid values."""
    from .config import TrainConfig, config_from_dict
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: meta.config must be an object, not {_kind(config)}")
    missing = [k for k in REQUIRED_CONFIG if k not in config]
    if missing:
        raise CheckpointError(f"{path}: meta.config has no field {', '.join(map(repr, missing))}")
    for field in dataclasses.fields(TrainConfig):
        if field.name not in config:
            continue
        value, wanted = config[field.name], field.type
        ok = ((value is None and field.default is None) or (wanted is bool and isinstance(value, bool))
              or (wanted is int and _is_int(value)) or (wanted is float and _is_number(value))
              or (wanted is str and isinstance(value, str)))
        if not ok:
            what = {bool: "true or false", int: "an integer", float: "a finite number", str: "text"}[wanted]
            raise CheckpointError(f"{path}: meta.config field {field.name!r} must be {what}"
                                  f"{' or null' if field.default is None else ''}, not {_kind(value)}")
    try:
        config_from_dict(config).validate()
    except ValueError as exc:  # e.g. "--momentum must be in [0, 1); got 1.5"
        raise CheckpointError(f"{path}: meta.config: {exc}") from None


def _numbers(path, where, values):
    """A list of numbers (null where a value was not finite)."""
    if not isinstance(values, list) or not all(v is None or _is_number(v) for v in values):
        raise CheckpointError(f"{path}: meta.metrics {where} must be a list of numbers")


def _metrics(path, metrics, epochs):
    """The metrics: a record per finished epoch, the per-batch lists, and the dataset's
    shape, classes and normalisation, which evaluating uses."""
    if not isinstance(metrics, dict):
        raise CheckpointError(f"{path}: meta.metrics must be an object, not {_kind(metrics)}")
    for name, wanted in REQUIRED_METRICS.items():
        if name not in metrics:
            raise CheckpointError(f"{path}: meta.metrics has no field {name!r}")
        if not isinstance(metrics[name], wanted) or isinstance(metrics[name], bool):
            raise CheckpointError(f"{path}: meta.metrics field {name!r} has the wrong type ({_kind(metrics[name])})")
    if len(metrics["epochs"]) != epochs or not all(isinstance(r, dict) for r in metrics["epochs"]):
        raise CheckpointError(f"{path}: meta.metrics field 'epochs' must hold one record per finished epoch "
                              f"({epochs}); it holds {len(metrics['epochs'])}")
    steps = metrics["steps"]
    for name in ("epoch", "loss", "accuracy"):
        _numbers(path, f"field 'steps.{name}'", steps.get(name))
    if len({len(steps[name]) for name in ("epoch", "loss", "accuracy")}) != 1:
        raise CheckpointError(f"{path}: meta.metrics lists steps.epoch, steps.loss, steps.accuracy differ in length")
    _dataset(path, metrics.get("dataset", {}))


def _dataset(path, dataset):
    """What ``evaluate`` reads of the training set: classes, image shape, mean and std."""
    if not isinstance(dataset, dict):
        raise CheckpointError(f"{path}: meta.metrics field 'dataset' must be an object, not {_kind(dataset)}")
    classes, image = dataset.get("num_classes", 10), dataset.get("image", [1, 32])
    if not _is_int(classes) or classes < 1:
        raise CheckpointError(f"{path}: meta.metrics field 'dataset.num_classes' must be a positive integer, "
                              f"not {_kind(classes)}")
    if image is not None and not (isinstance(image, list) and len(image) == 2
                                  and all(_is_int(v) and v > 0 for v in image)):
        raise CheckpointError(f"{path}: meta.metrics field 'dataset.image' must be [channels, size]")
    for name in ("mean", "std"):
        values = dataset.get(name)
        if values is not None:
            _numbers(path, f"field 'dataset.{name}'", values)
            if name == "std" and not all(v is not None and v > 0 for v in values):
                raise CheckpointError(f"{path}: meta.metrics field 'dataset.std' must hold positive numbers")


def _init_rng(path, state):
    """The initialisation generator's state: a NumPy bit generator's state object."""
    if not isinstance(state, dict) or not isinstance(state.get("bit_generator"), str) \
            or not isinstance(state.get("state"), dict):
        raise CheckpointError(f"{path}: meta.init_rng must be a NumPy bit generator state, not {_kind(state)}")


def check_metadata(path, state, meta):
    """The Progress fields of a checkpoint, once its ``state.*`` arrays and its ``meta``
    (config, metrics, init_rng) are checked; CheckpointError names the first bad field."""
    progress = _progress(path, state)
    _config(path, meta["config"])
    if progress["epoch"] > meta["config"]["epochs"]:
        raise CheckpointError(f"{path}: entry state.epoch ({progress['epoch']}) exceeds the configured "
                              f"epochs ({meta['config']['epochs']})")
    _metrics(path, meta["metrics"], progress["epoch"])
    _init_rng(path, meta["init_rng"])
    return progress

