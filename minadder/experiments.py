"""Short training runs for the notebooks: which digits, evaluation arrays, a few hundred SGD steps, a small LeNet++.

The digits are real MNIST when ``minadder.data`` finds a copy (``$MINADDER_DATA`` or the
download cache that ``python -m minadder download mnist`` fills), otherwise the embedded
synthetic digits. Each step is the trainer's own ``minadder.train.train_step``.
"""
from collections import deque

import numpy as np

from . import models, nn
from . import train as trainer
from .data import DataLoader, DatasetNotFoundError, load_dataset
from .optim import CosineLR
from .tensor import Tensor, no_grad


def notebook_digits(data_dir=None):
    """(train, test) digits for the notebooks: real MNIST if ``minadder.data`` finds a copy
    (``data_dir``, ``$MINADDER_DATA``, or the download cache), otherwise the embedded
    synthetic digits. ``train.name`` says which one was used."""
    try:
        return load_dataset("mnist", "train", data_dir), load_dataset("mnist", "test", data_dir)
    except DatasetNotFoundError:
        return load_dataset("synthetic-digits", "train"), load_dataset("synthetic-digits", "test")


def dataset_arrays(dataset, n=None, pad_to=32, seed=0):
    """The first ``n`` images of a random order of ``dataset`` as normalised float32
    arrays (x of shape (n, C, pad_to, pad_to), y), e.g. a fixed evaluation set."""
    order = np.random.default_rng(seed).permutation(len(dataset))[:n]
    loader = DataLoader(dataset.subset(order), 1000, shuffle=False, pad_to=pad_to)
    xs, ys = zip(*loader)
    return np.concatenate(xs), np.concatenate(ys)


def evaluate(model, x, y, batch_size=500):
    """(mean cross-entropy, accuracy) of ``model`` in evaluation mode on arrays (x, y):
    the trainer's ``minadder.train.evaluate`` over batches of ``batch_size``."""
    batches = ((x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(y), batch_size))
    return trainer.evaluate(model, batches)


def refresh_batchnorm(model, batches):
    """Re-estimate every batch norm's running statistics as the plain average over
    ``batches`` (arrays of inputs), run in training mode without a graph ("precise BN").

    The running averages (momentum 0.1) lag behind the batch statistics while the
    filters still move fast, which early in training makes evaluation-mode accuracy
    meaningless for an AdderNet, whose outputs have large means and variances. Training
    itself never reads the running statistics, so refreshing them changes nothing in it.
    """
    bns = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    saved = [m.momentum for m in bns]
    model.train()
    try:
        with no_grad():
            for i, x in enumerate(batches):
                for m in bns:
                    m.momentum = 1.0 / (i + 1)      # a cumulative average of the batches
                model(Tensor(x))
    finally:
        for m, momentum in zip(bns, saved):
            m.momentum = momentum


def train_steps(model, optimizer, loader, steps, test=None, eval_every=None, transform=None,
                refresh_bn=8):
    """A small training loop for the notebooks: ``steps`` SGD steps on batches of
    ``loader`` (a DataLoader, cycled over epochs), each the trainer's ``train_step``,
    with the learning rate decayed from ``optimizer.lr`` to 0 by ``optim.CosineLR``
    counted in steps instead of epochs. Every ``eval_every`` steps and at the end,
    ``test = (x, y)`` is evaluated in evaluation mode, after ``refresh_batchnorm`` on the
    last ``refresh_bn`` training batches (0: use the running statistics as they are).
    ``transform(x)``, if given, maps each input batch (e.g. a smaller image size).
    Returns a dict of lists: step, loss, accuracy (per batch); eval_step, test_loss, test_accuracy.
    """
    base_lr = optimizer.lr
    schedule = CosineLR(optimizer, steps)
    curves = {"step": [], "loss": [], "accuracy": [], "eval_step": [], "test_loss": [], "test_accuracy": []}
    recent = deque(maxlen=max(refresh_bn, 1))

    def record_eval(step):
        if test is not None:
            if refresh_bn:
                refresh_batchnorm(model, list(recent))
            loss, acc = evaluate(model, *test)
            curves["eval_step"].append(step)
            curves["test_loss"].append(loss)
            curves["test_accuracy"].append(acc)

    def batches():
        while True:
            yield from loader

    model.train()
    for step, (x, y) in zip(range(1, steps + 1), batches()):
        x = transform(x) if transform is not None else x
        recent.append(x)
        schedule.set(step - 1)
        loss, correct = trainer.train_step(model, optimizer, x, y, check_finite=False)
        curves["step"].append(step)
        curves["loss"].append(loss)
        curves["accuracy"].append(correct / len(y))
        if eval_every and step % eval_every == 0 and step != steps:
            record_eval(step)
    record_eval(steps)
    optimizer.lr = base_lr
    return curves


def small_lenet_pp(kind="adder", widths=(8, 8, 16, 16, 32, 32), input_size=16, grad_mode="full",
                   num_classes=10, feature_dim=3):
    """LeNet++ (``models.lenet_pp``, paper Fig. 1) with narrower layers and smaller images,
    so that the notebooks can train it in seconds: six 5x5 layers of ``widths`` channels
    (padding 2, max pooling after every pair), a ``feature_dim``-D feature layer with
    batch norm, and the classifier, all adder layers when kind="adder". The full model
    has widths (32, 32, 64, 64, 128, 128) on 32x32 images, about 50 times the work."""
    return models.lenet_pp(kind, grad_mode, num_classes, 1, input_size, feature_dim, widths=widths)


def halve_images(x):
    """2x2 average pooling of a batch (N, C, H, W) as plain arrays: 32x32 digits -> 16x16."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))
