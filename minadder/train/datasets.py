"""Loading the data of a run: training and test splits from one folder, padding, subsets, notes on sizes and sources.

Both splits come from the folder where the training split was found (``$MINADDER_DATA``
never supplies one split while ``--data-dir`` supplies the other), and a note says so
when ``--data-dir`` was not the folder used, or when a split is not its official size.
"""
import dataclasses
from pathlib import Path

import numpy as np

from .config import eval_set_name


@dataclasses.dataclass
class EvalSet:
    """One test set: how metrics.json names it, the data, and its batches."""
    name: str
    dataset: object
    loader: object


@dataclasses.dataclass
class Data:
    """What ``load_data`` returns: the training set and loader, the test sets (the first is
    the main one), (channels, image size after padding), the padding, and notes to show."""
    train_set: object
    train_loader: object
    tests: list
    image: tuple
    pad_to: int
    notes: list


def padding_for(shape):
    """The size images of ``shape`` (C, H, W) are zero-padded to, or None: MNIST-like
    28x28 images become 32x32, as in the paper (LeNet-5 takes 32x32 inputs)."""
    return 32 if tuple(shape[-2:]) == (28, 28) else None


def random_subset(dataset, limit, seed):
    """A random subset of `limit` samples, the same for a given seed (test sets can be
    sorted by class, so the first `limit` would not do)."""
    if limit is None or limit >= len(dataset):
        return dataset
    chosen = np.random.default_rng([seed, limit]).permutation(len(dataset))[:limit]
    return dataset.subset(np.sort(chosen))


def _training_split(config):
    """The training split and notes on where it came from: one place for the whole dataset."""
    from ..data import SYNTHETIC_NAME, load_dataset, locate_dataset
    if config.dataset == SYNTHETIC_NAME:
        notes = [f"--data-dir {config.data_dir} is not used: the synthetic digits are generated"] \
            if config.data_dir else []
        return load_dataset(SYNTHETIC_NAME, "train"), None, notes
    found = locate_dataset(config.dataset, "train", config.data_dir)
    notes = []
    if config.data_dir is not None and found.why != "data_dir / --data-dir":
        state = "does not exist" if not Path(config.data_dir).expanduser().exists() else \
            f"holds no {config.dataset} training files"
        notes.append(f"--data-dir {config.data_dir} {state}; using {found.folder} ({found.why}) instead")
    return load_dataset(config.dataset, "train", found.folder, fallback=False), found.folder, notes


def _test_splits(config, folder):
    """[(name, dataset, file)] for the main test set and the extra one, read from ``folder``
    (the folder of the training split; None for the generated synthetic digits)."""
    from ..data import DatasetNotFoundError, load_dataset
    files = [config.test_file] + ([config.extra_test_file] if config.extra_test_file else [])
    tests = []
    for file in files:
        if folder is None:
            tests.append((eval_set_name(file), load_dataset(config.dataset, "test"), file))
            continue
        try:
            tests.append((eval_set_name(file),
                          load_dataset(config.dataset, "test", folder, fallback=False, file=file), file))
        except DatasetNotFoundError:
            wanted = f"the test file {file}" if file else "the test split"
            raise DatasetNotFoundError(
                f"dataset {config.dataset!r}: {wanted} is not in {folder}, where the training split was "
                f"found (both splits are read from one folder: put the test files there, or point "
                f"--data-dir at a folder holding both)") from None
    return tests


def _size_notes(name, splits):
    """Notes for the splits [(split, dataset, file)] whose size is not the official one
    (a copy cut short, or a made-up one); a chosen file is expected to differ."""
    from ..data import DATASETS
    if name not in DATASETS:
        return []
    official = DATASETS[name][4]
    return [f"the {split} split in {ds.source} has {len(ds)} images; the official {name} {split} split "
            f"has {official[split]}" for split, ds, file in splits if file is None and len(ds) != official[split]]


def load_data(config):
    """The training split, the test set(s) and their loaders, all from one folder."""
    from ..data import DataLoader
    train_set, folder, notes = _training_split(config)
    tests = _test_splits(config, folder)
    notes += _size_notes(config.dataset, [("train", train_set, None)] + [("test", t, f) for _, t, f in tests])
    train_set = random_subset(train_set, config.limit_train, config.seed)
    c, h, w = train_set.shape
    pad_to = padding_for(train_set.shape)
    augment = {"auto": "cifar" if config.dataset.startswith("cifar") else None,
               "cifar": "cifar", "none": None}[config.augment]
    # Drop the incomplete last batch: its batch-norm statistics are noisy (a batch of one
    # cannot be normalised at all). The order changes every epoch, so no image is left out for good.
    drop_last = len(train_set) >= config.batch_size
    train_loader = DataLoader(train_set, config.batch_size, shuffle=True, seed=config.seed,
                              augment=augment, drop_last=drop_last, pad_to=pad_to)
    eval_sets = []
    for name, test, _ in tests:
        test = random_subset(test, config.limit_test, config.seed)
        eval_sets.append(EvalSet(name, test, DataLoader(test, config.batch_size, shuffle=False,
                                                        seed=config.seed, pad_to=pad_to)))
    return Data(train_set, train_loader, eval_sets, (c, pad_to or h), pad_to, notes)


def load_test_split(name, data_dir, test_file):
    """The test split of ``name`` alone (to evaluate a checkpoint) and notes on where it came from."""
    from ..data import SYNTHETIC_NAME, load_dataset, locate_dataset
    if name == SYNTHETIC_NAME:
        return load_dataset(name, "test", file=test_file), []
    found = locate_dataset(name, "test", data_dir, file=test_file)
    notes = []
    if data_dir is not None and found.why != "data_dir / --data-dir":
        notes.append(f"--data-dir {data_dir} holds no {name} test files; using {found.folder} ({found.why})")
    return load_dataset(name, "test", found.folder, fallback=False, file=test_file), notes
