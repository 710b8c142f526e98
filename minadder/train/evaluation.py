"""Measuring a model on test data: ``evaluate`` (one pass, after every epoch) and ``evaluate_checkpoint`` (the CLI)."""
import dataclasses

from .. import backend
from .. import functional as F
from ..tensor import Tensor, no_grad
from .checkpoint import CheckpointError, checkpoint_path, read_checkpoint
from .config import config_from_dict, eval_set_name
from .datasets import load_test_split, padding_for, random_subset
from .files import strict_json


def evaluate(model, batches, should_stop=None):
    """(mean loss, accuracy) over the (x, y) batches, in eval mode (running batch-norm
    statistics), without a graph; the model is put back in training mode afterwards.
    ``should_stop()``, checked after every batch, raises KeyboardInterrupt when true."""
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    try:
        with no_grad():
            for x, y in batches:
                logits = model(Tensor(x))
                loss_sum += float(F.cross_entropy(logits, y).item()) * len(y)
                correct += int((logits.data.argmax(axis=1) == y).sum())
                seen += len(y)
                if should_stop is not None and should_stop():
                    raise KeyboardInterrupt
    finally:
        model.train()
    return loss_sum / seen, correct / seen


def _trained_image(config, saved_metrics):
    """(channels, size) of the images the checkpoint's model was built for."""
    image = saved_metrics.get("dataset", {}).get("image")
    if image:
        return tuple(image)
    return (3 if config.dataset.startswith("cifar") else 1), 32  # checkpoints from before "image" was saved


def evaluate_checkpoint(target, dataset=None, data_dir=None, test_file=None, limit_test=None, batch_size=500):
    """Evaluate the model of a checkpoint (``target``: a run folder or a checkpoint file) on
    a test split, with the preprocessing it was trained with (the training set's mean and
    std, the same padding). ``dataset`` defaults to the one it was trained on; another
    one must have the same image shape and number of classes. Returns a dict with
    ``test_accuracy``, ``test_loss``, the dataset, its source, the number of images, ..."""
    from ..data import DataLoader
    path = checkpoint_path(target, what="evaluate")
    saved = read_checkpoint(path, optimizer=False)
    config = config_from_dict(saved.config)
    name = dataset or config.dataset
    trained = saved.metrics.get("dataset", {})
    num_classes = int(trained.get("num_classes", 10))
    channels, size = _trained_image(config, saved.metrics)
    test, notes = load_test_split(name, data_dir, test_file)
    c, h, w = test.shape
    pad_to = padding_for(test.shape)
    if (c, pad_to or h, pad_to or w) != (channels, size, size) or test.num_classes != num_classes:
        raise ValueError(f"{path}: the model was trained on {config.dataset} ({channels}x{size}x{size} images, "
                         f"{num_classes} classes) and cannot be evaluated on {name} ({c}x{h}x{w} images, "
                         f"{test.num_classes} classes)")
    if trained.get("mean") and trained.get("std"):  # normalise as in training
        test = dataclasses.replace(test, mean=tuple(trained["mean"]), std=tuple(trained["std"]))
    test = random_subset(test, limit_test, config.seed)
    model = config.build_network(num_classes, channels, size)
    try:
        model.load_state_dict(saved.model)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    loss, accuracy = evaluate(model, DataLoader(test, batch_size, shuffle=False, pad_to=pad_to))
    return strict_json({
        "test_accuracy": accuracy, "test_loss": loss, "dataset": name, "test_set": eval_set_name(test_file),
        "source": test.source, "images": len(test), "trained_on": config.dataset, "checkpoint": str(path),
        "epoch": saved.progress.epoch, "model": config.model, "kind": config.kind,
        "backend": backend.get_backend(), "notes": notes})
