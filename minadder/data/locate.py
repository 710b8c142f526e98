"""Where datasets are looked up, in order, and the message when none is found.

For a dataset name and split, every base folder is tried in this order:
1. the ``data_dir`` argument (the command line's ``--data-dir``),
2. ``$MINADDER_DATA``,
3. the cache ``~/.cache/minadder`` (where ``download`` puts files by default),
4. system folders where a package manager installs datasets (``/usr/share/datasets``).
In each base, the files may sit directly in it or in one of the usual subfolders
(``mnist/``, ``MNIST/raw/``, ``cifar-10-batches-bin/``, ``cifar-10-batches-py/``, ...).
"""
import os
from pathlib import Path
from typing import NamedTuple

from .dataset import DatasetNotFoundError

__all__ = ["default_root", "search_places", "find_dataset", "locate_dataset", "Found", "DATASET_FOLDERS", "ENV_VAR"]

ENV_VAR = "MINADDER_DATA"
SYSTEM_DIRS = (Path("/usr/share/datasets"),)

# The folder (under a root) that ``download`` creates for each dataset.
DATASET_FOLDERS = {"mnist": "mnist", "fashion-mnist": "fashion-mnist",
                   "cifar10": "cifar-10-batches-bin", "cifar100": "cifar-100-binary"}

# Subfolders accepted under a base folder, besides the base itself.
_SUBFOLDERS = {
    "mnist": ("mnist", "MNIST/raw", "MNIST"),
    "fashion-mnist": ("fashion-mnist", "FashionMNIST/raw", "FashionMNIST", "fashion_mnist"),
    "cifar10": ("cifar-10-batches-bin", "cifar-10-batches-py"),
    "cifar100": ("cifar-100-binary", "cifar-100-python"),
}

_IDX = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}

# name -> split -> alternatives, each (format, required files). IDX files may carry ".gz".
LAYOUTS = {
    "mnist": {s: [("idx", f)] for s, f in _IDX.items()},
    "fashion-mnist": {s: [("idx", f)] for s, f in _IDX.items()},
    "cifar10": {
        "train": [("cifar-binary", tuple(f"data_batch_{i}.bin" for i in range(1, 6))),
                  ("cifar-python", tuple(f"data_batch_{i}" for i in range(1, 6)))],
        "test": [("cifar-binary", ("test_batch.bin",)), ("cifar-python", ("test_batch",))],
    },
    "cifar100": {
        "train": [("cifar-binary", ("train.bin",)), ("cifar-python", ("train",))],
        "test": [("cifar-binary", ("test.bin",)), ("cifar-python", ("test",))],
    },
}


def default_root():
    """Where downloads and generated data go: ``$MINADDER_DATA`` or ``~/.cache/minadder``."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "minadder"


def search_places(data_dir=None):
    """The (base folder, why it is searched) pairs, in lookup order, without duplicates."""
    places = []
    if data_dir is not None:
        places.append((Path(data_dir).expanduser(), "data_dir / --data-dir"))
    if os.environ.get(ENV_VAR):
        places.append((Path(os.environ[ENV_VAR]).expanduser(), f"${ENV_VAR}"))
    places.append((Path.home() / ".cache" / "minadder", "cache"))
    places.extend((d, "system datasets folder") for d in SYSTEM_DIRS)
    seen, unique = set(), []
    for base, why in places:
        if base not in seen:
            seen.add(base)
            unique.append((base, why))
    return unique


def _resolve(folder, fmt, names):
    """Paths of all ``names`` in ``folder`` (IDX names may end in .gz), or None if one is missing."""
    paths = []
    for name in names:
        options = (name + ".gz", name) if fmt == "idx" else (name,)
        found = next((folder / o for o in options if (folder / o).is_file()), None)
        if found is None:
            return None
        paths.append(found)
    return paths


def _check_name_split(name, split):
    if name not in LAYOUTS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(LAYOUTS)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


class Found(NamedTuple):
    """Where one split of a dataset was found: its format, its files, the folder holding
    them, and why that folder was searched (``"data_dir / --data-dir"``, ``"$MINADDER_DATA"``, ...)."""
    fmt: str
    paths: list
    folder: Path
    why: str


def locate_dataset(name, split="train", data_dir=None, fallback=True, file=None):
    """Find the files of one split; returns a ``Found``.

    ``fallback=False`` searches ``data_dir`` (and its usual subfolders) only, not
    ``$MINADDER_DATA`` or the cache: the trainer uses it so that both splits come from
    the one folder where the training split was found. ``file`` (CIFAR only) names one
    batch file to read instead of the split's usual ones, e.g.
    ``test_batch_first1000_exact.bin``; a path to an existing file is used as it is.
    Raises ``DatasetNotFoundError`` listing every folder looked at and how to get the data."""
    _check_name_split(name, split)
    alternatives = LAYOUTS[name][split]
    if file is not None:
        alternatives = [_file_layout(name, file)]
        direct = Path(file).expanduser()
        if direct.is_file() and (direct.is_absolute() or len(direct.parts) > 1):
            return Found(alternatives[0][0], [direct], direct.parent, "a path given as the file")
        file = direct.name
    places = search_places(data_dir)
    if not fallback:
        if data_dir is None:
            raise ValueError("locate_dataset: fallback=False needs a data_dir")
        places = places[:1]
    looked = []
    for base, why in places:
        for folder in (base, *(base / sub for sub in _SUBFOLDERS[name])):
            looked.append(f"{folder}  ({why})")
            if not folder.is_dir():
                continue
            for fmt, names in alternatives:
                paths = _resolve(folder, fmt, names)
                if paths is not None:
                    return Found(fmt, paths, folder, why)
    wanted = " or ".join(
        "{" + ", ".join(n + ("[.gz]" if fmt == "idx" else "") for n in names) + "}"
        for fmt, names in alternatives)
    raise DatasetNotFoundError(
        f"dataset {name!r} ({split} split) not found: looked for {wanted} in\n  "
        + "\n  ".join(looked)
        + f"\nTo get it: `python -m minadder download {name}` "
          f"(or `minadder.data.download({name!r}, root)` in Python), which saves to "
          f"{default_root()}; or point --data-dir (data_dir=...) or ${ENV_VAR} at a folder "
          f"holding the files (or its parent folder).")


def _file_layout(name, file):
    """(format, (file name,)) for a single CIFAR batch file: binary if it ends in .bin."""
    if not name.startswith("cifar"):
        raise ValueError(f"a test file (--test-file) can be chosen for cifar10 and cifar100 only, not {name!r}")
    file_name = Path(file).name
    return ("cifar-binary" if file_name.endswith(".bin") else "cifar-python", (file_name,))


def find_dataset(name, split="train", data_dir=None):
    """Find the files of one split: returns (format, [paths]) with format "idx",
    "cifar-binary" or "cifar-python" (``locate_dataset`` also says where and why)."""
    found = locate_dataset(name, split, data_dir)
    return found.fmt, found.paths
