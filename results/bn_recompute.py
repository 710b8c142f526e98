"""Is a run's low test accuracy its batch-norm running statistics, or its weights?

    python results/bn_recompute.py RUN_DIR_OR_CHECKPOINT [DATA_DIR]

Evaluates the checkpoint on the 1,000 exact CIFAR-10 test images twice: as saved (the
running mean and variance that training accumulated, momentum 0.1), then with every batch
norm layer's statistics recomputed as a plain average over 20 training batches of 128
(no augmentation, in training mode, without gradients; the weights are not touched; the
same idea as PyTorch's ``torch.optim.swa_utils.update_bn``). A large gain means the running
averages trail the filters: the statistics, not the learned weights, cost the accuracy.
This is a diagnostic; the results page's accuracies are always the checkpoint as saved.
"""
import dataclasses
import sys

from minadder import models, nn
from minadder import train as T
from minadder.data import DataLoader, load_dataset
from minadder.tensor import Tensor, no_grad

BATCHES, BATCH_SIZE = 20, 128


def load_model(saved):
    config = saved.config
    model = models.build_model(config["model"], kind=config["kind"], grad_mode=config["grad_mode"],
                               num_classes=10, in_channels=3, input_size=32)
    model.load_state_dict(saved.model)
    return model


def recompute_batch_norm(model, batches):
    """Replace each BN layer's running statistics by their average over ``batches``."""
    layers = [m for m in model.modules() if isinstance(m, nn._BatchNorm)]
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.running_mean[:], m.running_var[:] = 0.0, 1.0
    model.train()
    with no_grad():
        for k, (x, _) in enumerate(batches):
            for m in layers:
                m.momentum = 1.0 / (k + 1)  # running average with weight 1/(k+1): the plain mean
            model(Tensor(x))
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum
    model.eval()


def main(target, data_dir):
    saved = T.read_checkpoint(T.checkpoint_path(target, what="bn_recompute"), optimizer=False)
    stats = saved.metrics["dataset"]
    norm = dict(mean=tuple(stats["mean"]), std=tuple(stats["std"]))
    test = dataclasses.replace(load_dataset("cifar10", "test", data_dir, fallback=False,
                                            file="test_batch_first1000_exact.bin"), **norm)
    train = dataclasses.replace(load_dataset("cifar10", "train", data_dir, fallback=False), **norm)
    model = load_model(saved)
    _, as_saved = T.evaluate(model, DataLoader(test, 500, shuffle=False))
    loader = DataLoader(train, BATCH_SIZE, shuffle=True, seed=123)
    recompute_batch_norm(model, (b for k, b in zip(range(BATCHES), loader)))
    _, recomputed = T.evaluate(model, DataLoader(test, 500, shuffle=False))
    print(f"{target}: epoch {saved.progress.epoch} ({saved.config['kind']}), 1,000 exact test images: "
          f"{100 * as_saved:.1f} % as saved, {100 * recomputed:.1f} % with the BN statistics recomputed "
          f"from {BATCHES} x {BATCH_SIZE} training images")


if __name__ == "__main__":
    main(*sys.argv[1:])
