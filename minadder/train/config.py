"""The configuration of a training run: ``TrainConfig``, its command-line flag names, and the checks of its values.

Every field of ``TrainConfig`` is one flag of ``python -m minadder train`` (``batch_size``
-> ``--batch-size``), and every error message names the flag, so that a learner reading
the message knows what to change on the command line.
"""
import dataclasses
from pathlib import Path

from .. import models, optim
from ..data.locate import LAYOUTS
from ..kernels.contract import DISTANCES, check_grad_mode

AUGMENTS = ("auto", "cifar", "none")
LR_STEPS = ("batch", "epoch")

#: The range of every integer option: a seed as NumPy's legacy generators and PyTorch take
#: it; other bounds far beyond any real run, so that a typo is refused before it allocates.
#: (batch_size from 2: batch norm in training needs two values a channel, and LeNet-5-BN's
#: fully connected ones have one an image)
INTEGER_RANGES = {"epochs": (1, 1_000_000), "batch_size": (2, 1 << 20), "seed": (0, 2**32 - 1),
                  "limit_train": (2, 2**31 - 1), "limit_test": (2, 2**31 - 1)}

#: Fields that may differ between a checkpoint and the run that resumes it: they change
#: where things are read or written, or how fast, not what is computed.
RESUME_MAY_CHANGE = ("data_dir", "output_dir", "resume", "backend", "progress", "keep_checkpoints", "overwrite")


def flag(name):
    """The command-line flag of a TrainConfig field: batch_size -> --batch-size."""
    return "--" + name.replace("_", "-")


def eval_set_name(file):
    """How metrics.json names a test set: "test" for the split's usual files, else the file's stem."""
    return "test" if file is None else Path(file).name.rsplit(".", 1)[0]


def _usual_test_files(dataset):
    """The names (eval_set_name) of the files a dataset's test split is read from when no
    --test-file is given: test_batch for CIFAR-10, test for CIFAR-100."""
    return {eval_set_name(name) for _, files in LAYOUTS.get(dataset, {}).get("test", ()) for name in files}


@dataclasses.dataclass
class TrainConfig:
    """Everything a run depends on. Defaults: the paper's MNIST recipe (Sec. 4.1:
    NAG with momentum 0.9, weight decay 5e-4, cosine decay from 0.1, batch 256,
    eta = 0.1) for an AdderNet LeNet-5-BN on the embedded synthetic digits, with a few
    epochs instead of 50 so that the default run takes about a minute.

    ``test_file`` (CIFAR) reads that test batch file instead of the usual one;
    ``extra_test_file`` is a second test set evaluated after every epoch as well."""

    model: str = "lenet5_bn"
    kind: str = "adder"
    dataset: str = "synthetic-digits"
    data_dir: str = None
    test_file: str = None
    extra_test_file: str = None
    epochs: int = 3
    batch_size: int = 256
    lr: float = 0.1
    schedule: str = "cosine"
    lr_step: str = "batch"
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    binary_weight_decay: float = None   # None: weight_decay (as every run before this option)
    grad_mode: str = "full"
    distance: str = "l1"        # checkpoints written before this option existed are l1 ones
    adder_scaling: str = "adaptive"
    eta: float = 0.1
    adder_factor: float = 100.0
    augment: str = "auto"
    backend: str = None
    seed: int = 0
    output_dir: str = None
    resume: str = None
    overwrite: bool = False
    limit_train: int = None
    limit_test: int = None
    keep_checkpoints: bool = False
    progress: bool = True

    def validate(self):
        """Raise ValueError naming the flag of the first bad option (e.g. --batch-size)."""
        self._check_choices()
        self._check_numbers()
        self._check_combinations()
        return self

    def _check_choices(self):
        """Every option with a registry (models, kinds, datasets, schedules, ...) names an entry of it."""
        from ..data import DATASET_NAMES
        choices = {"model": tuple(models.MODELS), "kind": models.KINDS, "dataset": DATASET_NAMES,
                   "schedule": tuple(optim.SCHEDULES), "adder_scaling": optim.ADDER_SCALINGS,
                   "augment": AUGMENTS, "lr_step": LR_STEPS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{flag(name)} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        check_grad_mode(self.grad_mode, "--grad-mode")  # the kernels' own check
        if self.distance not in DISTANCES:
            raise ValueError(f"--distance must be one of {', '.join(DISTANCES)}; got {self.distance!r}")

    def _check_numbers(self):
        """Counts are integers in ``INTEGER_RANGES``; the optimizer's numbers are in optim.RANGES."""
        for name, (low, high) in INTEGER_RANGES.items():
            value = getattr(self, name)
            if value is None and name.startswith("limit_"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{flag(name)} must be an integer from {low} to {high:,}"
                                 f"{' (or left out for all)' if name.startswith('limit_') else ''}; got {value!r}")
        for name, (low, high, low_open, high_open) in optim.RANGES.items():
            optim.check_number(flag(name), getattr(self, name), low, high, low_open, high_open)
        if self.binary_weight_decay is not None:
            optim.check_number(flag("binary_weight_decay"), self.binary_weight_decay, *optim.RANGES["weight_decay"])

    def _check_combinations(self):
        """Options that are each valid but do not go together."""
        if self.distance == "l2" and self.kind != "adder":
            raise ValueError(f"--distance l2 applies to --kind adder only, not {self.kind}")
        if self.distance == "l2" and self.grad_mode == "sign":
            raise ValueError("--grad-mode sign applies to the l1 distance only; an l2 layer's gradients are exact")
        if self.binary_weight_decay is not None and self.kind != "bnn":
            raise ValueError(f"--binary-weight-decay applies to --kind bnn only, not {self.kind}")
        if self.nesterov and self.momentum <= 0:
            raise ValueError("--nesterov needs --momentum > 0 (pass --no-nesterov or a momentum)")
        for name in ("test_file", "extra_test_file"):
            if getattr(self, name) is not None and not self.dataset.startswith("cifar"):
                raise ValueError(f"{flag(name)} applies to cifar10 and cifar100 only, not {self.dataset}")
        main = {eval_set_name(self.test_file)} if self.test_file else {"test", *_usual_test_files(self.dataset)}
        if self.extra_test_file is not None and eval_set_name(self.extra_test_file) in main:
            raise ValueError(f"--extra-test-file {self.extra_test_file} is the main test set already")

    def build_network(self, num_classes, channels, size):
        """The network this configuration names (initialised from the global generator:
        call ``minadder.manual_seed`` first to make it repeatable)."""
        return models.build_model(self.model, kind=self.kind, grad_mode=self.grad_mode, distance=self.distance,
                                  num_classes=num_classes,
                                  in_channels=channels, input_size=size)


def field_names():
    """The names of TrainConfig's fields (the options of ``python -m minadder train``)."""
    return {f.name for f in dataclasses.fields(TrainConfig)}


def config_from_dict(saved):
    """The TrainConfig of a saved configuration (a checkpoint's ``meta.config``); keys that
    are not fields (written by older versions) are ignored, missing ones take the default."""
    names = field_names()
    return TrainConfig(**{k: v for k, v in saved.items() if k in names})
