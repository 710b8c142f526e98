"""Training AdderNets: the package behind ``python -m minadder train`` and ``python -m minadder evaluate``.

One call, ``train(TrainConfig(...))``, trains a network with the paper's recipe and writes
its outputs; read the modules in this order:

- ``config.py``: ``TrainConfig``, everything a run depends on, and the checks of its values;
- ``loop.py``: the recipe and the loop (``train``, ``Run``, ``train_step``, ``build``);
- ``evaluation.py``: ``evaluate`` (one pass over a test set) and ``evaluate_checkpoint``;
- ``datasets.py``: the training split and test sets of a run, from one folder;
- ``checkpoint.py``: the checkpoint format (checkpoint.npz naming its optimizer file,
  the pair committed by one rename); ``metadata.py``: the checks of its JSON parts;
- ``resume.py``: continuing a saved run (``--resume``) exactly;
- ``run_folder.py``: where a run writes, and which folders it refuses;
- ``lock.py``: one run per folder (the lock file ``.lock``);
- ``report.py``: metrics.json and curves.png;
- ``interrupts.py``: Ctrl-C and the stop signals of batch systems deferred to the end of
  the batch, and divergence;
- ``files.py``: atomic writes, strict JSON, paths expanded as a shell does.

The output directory receives ``metrics.json``, ``curves.png``, and ``checkpoint.npz``
with its optimizer file ``checkpoint.optim-<hash>.npz``: everything needed to continue,
rewritten after every epoch (``keep_checkpoints=True`` also keeps a pair per epoch).
"""
from .checkpoint import (CHECKPOINT, FORMAT_VERSION, READABLE_VERSIONS, Checkpoint, CheckpointError,
                         Progress, checkpoint_path, optimizer_file, optimizer_files, read_checkpoint,
                         save_checkpoint, write_checkpoint)
from .config import (AUGMENTS, INTEGER_RANGES, LR_STEPS, RESUME_MAY_CHANGE, TrainConfig, config_from_dict,
                     eval_set_name, field_names, flag)
from .datasets import Data, EvalSet, load_data, load_test_split, padding_for, random_subset
from .evaluation import evaluate, evaluate_checkpoint
from .files import atomic_write, expand_path, strict_json, to_json
from .interrupts import (STOP_SIGNALS, DeferredInterrupt, StopSignals, Stopped, TrainingDiverged,
                         TrainingInterrupted, exit_status)
from .lock import LOCK, FolderInUse, RunLock
from .loop import Run, build, learning_rate, schedule_position, train, train_step
from .report import CURVES, METRICS, new_metrics, plot_curves, write_outputs
from .resume import check_same_run, config_from_checkpoint, open_checkpoint
from .run_folder import (check_output_dir, continues_in_place, default_output_dir, holds_run, output_dir_for,
                         prepare_output_dir)

__all__ = [
    "AUGMENTS", "CHECKPOINT", "CURVES", "Checkpoint", "CheckpointError", "Data", "DeferredInterrupt",
    "EvalSet", "FORMAT_VERSION", "FolderInUse", "INTEGER_RANGES", "LOCK", "LR_STEPS", "METRICS", "Progress",
    "READABLE_VERSIONS", "RESUME_MAY_CHANGE", "Run", "RunLock", "STOP_SIGNALS", "StopSignals", "Stopped",
    "TrainConfig", "TrainingDiverged", "TrainingInterrupted",
    "atomic_write", "build", "check_output_dir", "check_same_run", "checkpoint_path",
    "config_from_checkpoint", "config_from_dict", "continues_in_place", "default_output_dir",
    "eval_set_name", "evaluate", "evaluate_checkpoint", "exit_status", "expand_path", "field_names", "flag",
    "holds_run", "learning_rate", "load_data", "load_test_split", "new_metrics", "open_checkpoint",
    "optimizer_file", "optimizer_files", "output_dir_for", "padding_for", "plot_curves", "prepare_output_dir",
    "random_subset", "read_checkpoint", "save_checkpoint", "schedule_position", "strict_json", "to_json",
    "train", "train_step", "write_checkpoint", "write_outputs",
]
