"""One run per folder: a second `python -m minadder train` into a folder another run is
writing is refused in one line and changes nothing; the lock is released however a run
ends, and a lock left by a killed run is taken over."""
import json
import os
import socket
import subprocess
import sys

import pytest

from cli_helpers import TINY, cli, cli_hooked, one_line_error, private_env, shared_places, wait_for
from minadder import train as T
from minadder.train import lock as L


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return private_env(*shared_places(tmp_path_factory))


def test_a_second_run_into_a_running_folder_is_refused_and_the_first_finishes_intact(env, tmp_path):
    folder, ready, go = tmp_path / "run", tmp_path / "ready", tmp_path / "go"
    first = cli_hooked(env, 2, "train", *TINY, "--output-dir", folder, ready=ready, go=go, wait=False)
    try:
        wait_for(ready, first)  # the first run is inside its second batch, holding the lock
        owner = json.loads((folder / T.LOCK).read_text())
        assert owner["pid"] == first.pid and owner["host"] == socket.gethostname()
        before = sorted(p.name for p in folder.iterdir())
        for extra in ([], ["--overwrite"]):
            second = cli(env, "train", *TINY, "--seed", "1", "--output-dir", folder, *extra)
            one_line_error(second, folder, "in use by another run", f"pid {first.pid}")
        assert sorted(p.name for p in folder.iterdir()) == before
    finally:
        go.touch()
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    saved = T.read_checkpoint(folder / "checkpoint.npz")  # complete and consistent
    assert saved.progress.epoch == 1 and saved.config["seed"] == 0
    assert json.loads((folder / "metrics.json").read_text())["completed"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["checkpoint.npz", T.optimizer_file(folder / "checkpoint.npz").name, "metrics.json", "curves.png"])


def test_resuming_a_folder_that_is_still_running_is_refused(env, tmp_path):
    folder, ready, go = tmp_path / "run", tmp_path / "ready", tmp_path / "go"
    first = cli_hooked(env, 5, "train", *TINY, "--epochs", "2", "--output-dir", folder, ready=ready, go=go,
                       wait=False)
    try:
        wait_for(ready, first)  # in epoch 2: a checkpoint of epoch 1 exists
        one_line_error(cli(env, "train", "--resume", folder, "--no-progress"), "in use by another run")
    finally:
        go.touch()
    assert first.wait(timeout=120) == 0


def test_a_lock_left_by_a_killed_run_is_taken_over_with_a_note(env, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = {"pid": int(dead.stdout), "host": socket.gethostname(), "started": "2026-01-01T00:00:00"}
    (folder / T.LOCK).write_text(json.dumps(stale))
    result = cli(env, "train", *TINY, "--output-dir", folder)
    assert result.returncode == 0, result.stderr
    assert f"note: took over the lock of a run that no longer runs (pid {stale['pid']} on host" in result.stderr
    assert not (folder / T.LOCK).exists()


def test_the_lock_is_released_after_an_error_and_a_new_run_may_follow(env, tmp_path):
    folder = tmp_path / "run"
    result = cli(env, "train", *TINY, "--lr", "1e30", "--output-dir", folder)  # diverges in the first batch
    assert result.returncode == 1 and not folder.exists()
    assert cli(env, "train", *TINY, "--output-dir", folder).returncode == 0
    assert not (folder / T.LOCK).exists()


def test_without_file_locks_a_live_owner_is_still_refused(tmp_path, monkeypatch):
    """On a file system without locks the recorded pid decides: alive here -> in use."""
    monkeypatch.setattr(L, "fcntl", None)
    parent = {"pid": os.getppid(), "host": socket.gethostname(), "started": "now"}
    (tmp_path / T.LOCK).write_text(json.dumps(parent))
    with pytest.raises(T.FolderInUse, match=f"pid {os.getppid()}"):
        T.RunLock(tmp_path).acquire()
    (tmp_path / T.LOCK).write_text(json.dumps({**parent, "host": "another-host"}))
    with pytest.raises(T.FolderInUse, match="another-host"):  # cannot be checked from here: assumed alive
        T.RunLock(tmp_path).acquire()
    (tmp_path / T.LOCK).write_text("garbage")
    with T.RunLock(tmp_path) as lock:
        assert lock.stale is None and json.loads((tmp_path / T.LOCK).read_text())["pid"] == os.getpid()
    assert not (tmp_path / T.LOCK).exists()


def test_two_locks_in_one_process_exclude_each_other(tmp_path):
    with T.RunLock(tmp_path):
        with pytest.raises(T.FolderInUse, match=str(tmp_path)):
            T.RunLock(tmp_path).acquire()
    with T.RunLock(tmp_path):  # released: free again
        pass


def test_temporary_names_are_per_process(tmp_path):
    from minadder.train.files import temporary_name
    assert temporary_name(tmp_path / "checkpoint.npz").name == f".checkpoint.tmp-{os.getpid()}.npz"
