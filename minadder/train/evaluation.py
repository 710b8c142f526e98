"""Measuring a model on test data: ``evaluate`` (every epoch), ``evaluate_checkpoint`` (float32 or int8), images/s."""
import dataclasses
import time

from .. import backend
from .. import functional as F
from ..tensor import Tensor, no_grad
from .checkpoint import CheckpointError, checkpoint_path, read_checkpoint
from .config import config_from_dict, eval_set_name
from .datasets import load_test_split, padding_for, random_subset
from .files import strict_json
from .report import network_label


class ForwardTimer:
    """Seconds spent in forward passes and the images they took: ``images_per_s`` counts the
    network alone, not the loading, padding and normalising of the batches, and not the
    first batch where there are more (it compiles the kernels or loads them from Numba's
    cache: a first evaluate reported 639 images/s, the next 9,028)."""

    def __init__(self):
        self.seconds, self.images, self.first = 0.0, 0, None

    def run(self, forward, x):
        """``forward(x)``, timed."""
        start = time.perf_counter()
        out = forward(x)
        self.seconds += time.perf_counter() - start
        self.images += len(x)
        self.first = self.first or (self.seconds, self.images)
        return out

    @property
    def images_per_s(self):
        seconds, images = self.seconds, self.images
        if self.first is not None and images > self.first[1]:
            seconds, images = seconds - self.first[0], images - self.first[1]
        return images / seconds if seconds > 0 else None


def score(forward, batches, timer=None, should_stop=None):
    """(mean loss, accuracy) of ``forward`` (float32 images -> NumPy logits) over the (x, y)
    batches. ``should_stop()``, checked after every batch, raises KeyboardInterrupt when true."""
    timer = timer or ForwardTimer()
    loss_sum, correct, seen = 0.0, 0, 0
    for x, y in batches:
        logits = timer.run(forward, x)
        loss_sum += float(F.cross_entropy(Tensor(logits), y).item()) * len(y)
        correct += int((logits.argmax(axis=1) == y).sum())
        seen += len(y)
        if should_stop is not None and should_stop():
            raise KeyboardInterrupt
    return loss_sum / seen, correct / seen


def evaluate(model, batches, should_stop=None, timer=None):
    """(mean loss, accuracy) of a float model over the (x, y) batches, in eval mode (running
    batch-norm statistics), without a graph; the model is put back in training mode afterwards."""
    model.eval()
    try:
        with no_grad():
            return score(lambda x: model(Tensor(x)).data, batches, timer, should_stop)
    finally:
        model.train()


def _trained_image(config, saved_metrics):
    """(channels, size) of the images the checkpoint's model was built for."""
    image = saved_metrics.get("dataset", {}).get("image")
    if image:
        return tuple(image)
    return (3 if config.dataset.startswith("cifar") else 1), 32  # checkpoints from before "image" was saved


def normalised_as_trained(dataset, saved_metrics):
    """``dataset`` normalised with the mean and std the checkpoint's model was trained with."""
    trained = saved_metrics.get("dataset", {})
    if trained.get("mean") and trained.get("std"):
        return dataclasses.replace(dataset, mean=tuple(trained["mean"]), std=tuple(trained["std"]))
    return dataset


def load_trained_model(target, what=None):
    """(checkpoint path, Checkpoint, TrainConfig, model holding its weights) of ``target``, a
    run folder or a checkpoint file."""
    path = checkpoint_path(target, what=what)
    saved = read_checkpoint(path, optimizer=False)
    config = config_from_dict(saved.config)
    channels, size = _trained_image(config, saved.metrics)
    model = config.build_network(int(saved.metrics.get("dataset", {}).get("num_classes", 10)), channels, size)
    try:
        model.load_state_dict(saved.model)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return path, saved, config, model


def _test_set(path, saved, config, model, name, data_dir, test_file, limit_test):
    """The test split ``name`` preprocessed as in training, its padding and notes; refused
    when its images or classes are not the model's."""
    test, notes = load_test_split(name, data_dir, test_file)
    c, h, w = test.shape
    pad_to = padding_for(test.shape)
    channels, size = model.in_channels, model.input_size
    if (c, pad_to or h, pad_to or w) != (channels, size, size) or test.num_classes != model.num_classes:
        raise ValueError(f"{path}: the model was trained on {config.dataset} ({channels}x{size}x{size} images, "
                         f"{model.num_classes} classes) and cannot be evaluated on {name} ({c}x{h}x{w} images, "
                         f"{test.num_classes} classes)")
    return random_subset(normalised_as_trained(test, saved.metrics), limit_test, config.seed), pad_to, notes


def evaluate_checkpoint(target, dataset=None, data_dir=None, test_file=None, limit_test=None, batch_size=500,
                        int8=False):
    """Evaluate the model of a checkpoint (``target``: a run folder or a checkpoint file) on
    a test split, with the preprocessing it was trained with (the training set's mean and
    std, the same padding). ``dataset`` defaults to the one it was trained on; another
    one must have the same image shape and number of classes. ``int8``: run the int8
    model of the checkpoint (``minadder.int8``; quantized now, into int8.npz beside the
    checkpoint, when there is none yet). Returns a dict with ``test_accuracy``,
    ``test_loss``, ``images_per_s`` (forward passes only), the dataset, its source, ..."""
    from ..data import DataLoader
    path, saved, config, model = load_trained_model(target)
    name = dataset or config.dataset
    test, pad_to, notes = _test_set(path, saved, config, model, name, data_dir, test_file, limit_test)
    batches, timer, extra = DataLoader(test, batch_size, shuffle=False, pad_to=pad_to), ForwardTimer(), {}
    if int8:
        from ..int8 import run as int8_run
        network, extra, int8_notes = int8_run.network_for_checkpoint(path, saved, config, model, data_dir)
        notes = notes + int8_notes
        loss, accuracy = score(network, batches, timer)
    else:
        loss, accuracy = evaluate(model, batches, timer=timer)
    return strict_json({
        "test_accuracy": accuracy, "test_loss": loss, "dataset": name, "test_set": eval_set_name(test_file),
        "source": test.source, "images": len(test), "trained_on": config.dataset, "checkpoint": str(path),
        "epoch": saved.progress.epoch, "model": config.model, "kind": config.kind, "distance": config.distance,
        "network": network_label(config.kind, config.distance), "backend": backend.get_backend(),
        "precision": "int8" if int8 else "float32", "batch_size": batch_size,
        "images_per_s": timer.images_per_s, **extra, "notes": notes})
