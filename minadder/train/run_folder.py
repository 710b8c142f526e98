"""The output-folder policy: where a run writes, refusing a folder holding or running another run, resuming in place.

A new run refuses a folder that holds another run unless ``--overwrite`` replaces it, and
any run refuses a folder another process is writing into (its lock, ``lock.py``);
``--resume`` continues in the folder of the checkpoint. Everything here is checked before
any work (loading data, building the model), so that a run that cannot write its results
stops at once and leaves nothing behind.
"""
import datetime
import os
from pathlib import Path

from .checkpoint import CHECKPOINT, optimizer_files, remove_unnamed_optimizer_files
from .files import remove_leftovers
from .lock import check_not_in_use
from .report import CURVES, METRICS


def default_output_dir(config):
    """A new folder runs/<model>-<kind>-<dataset>-<date-time>[-i] that does not exist yet."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{config.model}-{config.kind}-{config.dataset}-{stamp}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = Path(f"{base}-{i}")
    return path


def output_dir_for(config, checkpoint_file):
    """``--output-dir`` if given, else the folder of the checkpoint being resumed, else a
    new folder under runs/."""
    if config.output_dir:
        return Path(config.output_dir)
    if checkpoint_file is not None:
        return checkpoint_file.parent
    return default_output_dir(config)


def continues_in_place(checkpoint_file, out_dir):
    """Whether resuming ``checkpoint_file`` into ``out_dir`` continues the run that is there:
    its own checkpoint.npz (an older per-epoch checkpoint would replace the later state)."""
    if checkpoint_file is None or Path(out_dir).resolve() != checkpoint_file.parent.resolve():
        return False
    return checkpoint_file.name == CHECKPOINT or not (Path(out_dir) / CHECKPOINT).exists()


def holds_run(folder):
    """Whether ``folder`` holds the outputs of a run (finished or resumable)."""
    folder = Path(folder)
    return folder.is_dir() and ((folder / CHECKPOINT).exists() or (folder / METRICS).exists()
                                or any(folder.glob("checkpoint-epoch*.npz")))


def check_output_dir(out_dir, config, resuming_here):
    """Before any work: ``out_dir`` can be created and written, and holds no other run
    (unless ``overwrite``). Nothing is created yet: that waits until the data have loaded."""
    out_dir = Path(out_dir)
    where = f"--output-dir {out_dir}" if config.output_dir else f"output folder {out_dir}"
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{where} is a file, not a folder")
    existing = out_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"{where} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{where} is not writable ({existing} is read-only for this user)")
    check_not_in_use(out_dir)
    if not resuming_here and holds_run(out_dir) and not config.overwrite:
        raise FileExistsError(f"{where} already holds a run ({CHECKPOINT}, {METRICS}); continue it with "
                              f"--resume {out_dir}, choose another --output-dir, or pass --overwrite to replace it")


def prepare_output_dir(out_dir, replace):
    """Once the folder's lock is held: with ``replace`` (``--overwrite``) remove the old run's
    files; remove what writes cut short by a crash left behind: temporary files, and
    optimizer files that no checkpoint names."""
    if replace:
        old_files = [out_dir / CHECKPOINT, out_dir / METRICS, out_dir / CURVES, *optimizer_files(out_dir / CHECKPOINT),
                     *out_dir.glob("checkpoint-epoch*.npz")]  # the glob takes their optimizer files too
        for old in old_files:
            if old.exists():
                old.unlink()
    remove_leftovers(out_dir)
    for checkpoint in out_dir.glob("checkpoint*.npz"):
        if ".optim" not in checkpoint.name:
            remove_unnamed_optimizer_files(checkpoint)
