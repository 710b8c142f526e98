"""Resuming a saved run: the configuration a checkpoint continues, and the check that it computes the same thing.

Resuming must continue the same run, bit for bit: only the fields in
``config.RESUME_MAY_CHANGE`` (where files are read or written, how fast) may differ from
the checkpoint's saved configuration.
"""
from .checkpoint import checkpoint_path, read_checkpoint
from .config import RESUME_MAY_CHANGE, config_from_dict, flag


def config_from_checkpoint(resume, **overrides):
    """The saved configuration of a checkpoint, with `overrides` applied; an override of a
    field that changes the computation is refused (resuming must continue the same run).
    The outputs go to the folder of the checkpoint unless ``output_dir`` is overridden."""
    path = checkpoint_path(resume)
    config = config_from_dict(read_checkpoint(path, optimizer=False).config)  # open_checkpoint reads the pair
    config.output_dir = None  # where the run was written then is not where it is now
    for key, value in overrides.items():
        if key not in RESUME_MAY_CHANGE and value != getattr(config, key):
            raise ValueError(f"--resume continues a saved run: {flag(key)} cannot change "
                             f"(saved {getattr(config, key)!r}, given {value!r})")
        setattr(config, key, value)
    config.resume = str(resume)
    return config


def check_same_run(saved, config):
    """Refuse to resume a checkpoint with a configuration that computes something else."""
    for key, value in saved.items():
        if key in RESUME_MAY_CHANGE or not hasattr(config, key):
            continue
        if getattr(config, key) != value:
            raise ValueError(f"--resume continues a saved run: {flag(key)} differs "
                             f"(checkpoint {value!r}, this run {getattr(config, key)!r})")


def open_checkpoint(config):
    """With ``config.resume``, the checkpoint file and its checked contents; else (None, None)."""
    if not config.resume:
        return None, None
    path = checkpoint_path(config.resume)
    saved = read_checkpoint(path)
    check_same_run(saved.config, config)
    return path, saved
