"""The signals batch systems send (SIGTERM, SIGHUP, SIGUSR1) stop `python -m minadder train`
as Ctrl-C does: at the end of the batch, with a checkpoint, one line saying how to resume,
and exit status 128 + the signal's number; the resumed run ends bit for bit as an
uninterrupted one."""
import signal
import subprocess
import sys

import numpy as np
import pytest

from cli_helpers import TINY, cli, cli_hooked, one_line_error, private_env, shared_places, wait_for
from minadder import train as T

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")

#: two epochs of three batches
RUN = [*TINY, "--epochs", "2"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return private_env(*shared_places(tmp_path_factory))


@pytest.fixture(scope="module")
def uninterrupted(env, tmp_path_factory):
    folder = tmp_path_factory.mktemp("signals") / "full"
    assert cli(env, "train", *RUN, "--output-dir", folder).returncode == 0
    return T.read_checkpoint(folder / "checkpoint.npz")


def same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_sigterm_stops_at_the_end_of_the_batch_saves_and_resumes_bit_for_bit(env, tmp_path, uninterrupted):
    folder = tmp_path / "run"
    result = cli_hooked(env, 4, "train", *RUN, "--output-dir", folder, signal="SIGTERM")  # batch 1 of epoch 2
    line = one_line_error(result, "stopped by SIGTERM", "epoch 2, batch 1/3",
                          f"continue with: python -m minadder train --resume {folder}", code=143)
    assert "SIGTERM: stopping at the end of this batch" in result.stderr and line
    saved = T.read_checkpoint(folder / "checkpoint.npz")
    assert (saved.progress.epoch, saved.progress.step) == (1, 1)
    assert not (folder / T.LOCK).exists()
    resumed = cli(env, "train", "--resume", folder, "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    final = T.read_checkpoint(folder / "checkpoint.npz")
    assert same(final.model, uninterrupted.model) and same(final.optim, uninterrupted.optim)
    assert final.metrics["steps"] == uninterrupted.metrics["steps"]


@pytest.mark.parametrize("name, status", [("SIGHUP", 129), ("SIGUSR1", 138)])
def test_sighup_and_sigusr1_stop_the_same_way(env, tmp_path, name, status):
    folder = tmp_path / "run"
    result = cli_hooked(env, 2, "train", *RUN, "--output-dir", folder, signal=name)
    one_line_error(result, f"stopped by {name}", "epoch 1, batch 2/3", "--resume", code=status)
    assert T.read_checkpoint(folder / "checkpoint.npz").progress.step == 2


def test_sigterm_from_outside_mid_batch(env, tmp_path, uninterrupted):
    """A real SIGTERM from another process, while a batch is being trained."""
    folder, ready, go = tmp_path / "run", tmp_path / "ready", tmp_path / "go"
    process = cli_hooked(env, 2, "train", *RUN, "--output-dir", folder, ready=ready, go=go, wait=False)
    wait_for(ready, process)
    process.send_signal(signal.SIGTERM)
    process.send_signal(signal.SIGTERM)  # sent twice, as some systems do: still one clean stop
    go.touch()
    out, err = process.communicate(timeout=120)
    assert process.returncode == 143 and "Traceback" not in err, err
    assert "saved" in err.strip().splitlines()[-1]
    assert T.read_checkpoint(folder / "checkpoint.npz").progress.step == 2
    assert cli(env, "train", "--resume", folder, "--no-progress").returncode == 0
    assert same(T.read_checkpoint(folder / "checkpoint.npz").model, uninterrupted.model)


_STOP_WHILE_LOADING = """
import os, signal, sys
from minadder.__main__ import main
from minadder.train import loop
real_load = loop.load_data
def load_data(config):
    os.kill(os.getpid(), signal.SIGTERM)
    return real_load(config)
loop.load_data = load_data
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_before_training_exits_at_once_without_a_traceback(env, tmp_path):
    """Outside the loop (here: while the data load) a stop signal ends the command at once:
    no traceback, exit 143, no folder left behind."""
    folder = tmp_path / "run"
    result = subprocess.run([sys.executable, "-c", _STOP_WHILE_LOADING, "train", *RUN, "--output-dir", str(folder)],
                            env=env, capture_output=True, text=True, timeout=300)
    one_line_error(result, "stopped by SIGTERM", code=143)
    assert not folder.exists()
