"""A crash at any step of writing a run's files leaves a folder that `--resume` continues
bit for bit: the process is killed (os._exit, no cleanup) before each write, rename and
removal of a tiny run in turn, and in the middle of each checkpoint write."""
import json
import os

import numpy as np
import pytest

from minadder import train as T
from minadder.train import checkpoint as C

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork to crash a copy of this process")

CRASHED = 99


@pytest.fixture(scope="module", autouse=True)
def data_once(private_data_folder):
    """Every run here trains on the same tiny data: read them once (the forked copies inherit them)."""
    loaded = []
    real_load = T.loop.load_data

    def load_data(config):
        if not loaded:
            loaded.append(real_load(config))
        return loaded[0]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(T.loop, "load_data", load_data)
        yield


def tiny(folder):
    """Two epochs of three batches of 16 digits, the reference backend."""
    return T.TrainConfig(epochs=2, batch_size=16, limit_train=48, limit_test=32, backend="numpy",
                         output_dir=str(folder), progress=False)


def quiet(_text):
    pass


def fake_curves(metrics, path):
    """curves.png without matplotlib (fast), still written atomically."""
    T.atomic_write(path, lambda tmp: tmp.write_bytes(b"png"))


class Steps:
    """Count every write, rename and removal in ``folder``; at ``crash_at`` (a step number)
    kill the process before the step, or with ``torn`` in the middle of a checkpoint write."""

    def __init__(self, monkeypatch, folder, crash_at=None, torn=False):
        self.names, self.folder, self.crash_at, self.torn = [], str(folder), crash_at, torn
        real_write, real_replace, real_unlink = C._write_npz, os.replace, os.unlink

        def write(tmp, arrays):
            if self.step(f"write {tmp.name}", tmp) and self.torn:
                real_write(tmp, arrays)
                with open(tmp, "r+b") as f:
                    f.truncate(os.path.getsize(tmp) // 2)
                os._exit(CRASHED)
            real_write(tmp, arrays)

        def replace(src, dst, **kw):
            self.step(f"rename to {os.path.basename(dst)}", dst)
            real_replace(src, dst, **kw)

        def unlink(path, **kw):
            self.step(f"remove {os.path.basename(path)}", path)
            real_unlink(path, **kw)

        monkeypatch.setattr(C, "_write_npz", write)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(os, "unlink", unlink)
        monkeypatch.setattr(T.report, "plot_curves", fake_curves)

    def step(self, name, path):
        """Record a step in the folder; kill the process at ``crash_at`` (True: the caller
        tears the write)."""
        if os.path.dirname(os.fspath(path)) != self.folder:
            return False
        self.names.append(name)
        if len(self.names) - 1 == self.crash_at:
            if not (self.torn and name.startswith("write")):
                os._exit(CRASHED)
            return True
        return False


def run_and_crash(folder, crash_at, torn):
    """Train in a forked copy of this process that dies at step ``crash_at``; its exit status."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            with pytest.MonkeyPatch.context() as mp:
                Steps(mp, folder, crash_at, torn)
                T.train(tiny(folder), log=quiet)
            os._exit(0)
        except BaseException:  # noqa: BLE001
            os._exit(3)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: its steps, final weights, momentum and metrics."""
    folder = tmp_path_factory.mktemp("reference") / "run"
    with pytest.MonkeyPatch.context() as mp:
        steps = Steps(mp, folder)
        result = T.train(tiny(folder), log=quiet)
    return steps.names, result["model"].state_dict(), T.read_checkpoint(folder / "checkpoint.npz")


def without_times(metrics):
    return [{k: v for k, v in r.items() if k not in ("time_s", "images_per_s")} for r in metrics["epochs"]]


def same_run(folder, reference):
    """The folder's final state is the reference run's, and nothing is left over."""
    names, weights, saved = reference
    final = T.read_checkpoint(folder / "checkpoint.npz")
    assert final.model.keys() == weights.keys() and all(np.array_equal(final.model[k], weights[k]) for k in weights)
    assert final.optim.keys() == saved.optim.keys()
    assert all(np.array_equal(final.optim[k], saved.optim[k]) for k in saved.optim)
    assert without_times(final.metrics) == without_times(saved.metrics)
    assert final.metrics["steps"] == saved.metrics["steps"]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["completed"] and without_times(metrics) == without_times(saved.metrics)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["checkpoint.npz", T.optimizer_file(folder / "checkpoint.npz").name, "metrics.json", "curves.png"])


def test_the_reference_run_has_the_steps_the_crashes_cut(reference):
    names = reference[0]
    commits = [i for i, n in enumerate(names) if n == "rename to checkpoint.npz"]
    assert len(commits) == 2  # one checkpoint per epoch
    # the second save: the optimizer file first, then the commit, then the old optimizer file goes
    assert names[commits[1] - 3].startswith("write .checkpoint.optim.tmp-")
    assert names[commits[1] - 2].startswith("rename to checkpoint.optim-")
    assert names[commits[1] - 1].startswith("write .checkpoint.tmp-")
    assert names[-1] == "remove .lock"


def _crash_points():
    """Every step of the reference run (its count is checked against the run below), and a
    torn write at each checkpoint write."""
    return [(k, False) for k in range(14)] + [(k, True) for k in (0, 2, 6, 8)]


@pytest.mark.parametrize("crash_at, torn", _crash_points(),
                         ids=[f"{'torn-' if torn else 'before-'}{k}" for k, torn in _crash_points()])
def test_a_crash_at_any_step_resumes_bit_for_bit(tmp_path, reference, monkeypatch, crash_at, torn):
    names = reference[0]
    assert len(names) == 14 and all(names[k].startswith("write") for k in (0, 2, 6, 8)), names
    folder = tmp_path / "run"
    assert run_and_crash(folder, crash_at, torn) == CRASHED
    monkeypatch.setattr(T.report, "plot_curves", fake_curves)
    if (folder / "checkpoint.npz").exists():  # a checkpoint was committed: --resume continues it
        T.train(T.config_from_checkpoint(folder, progress=False), log=quiet)
    else:  # killed before the first commit: no run to resume, and the folder takes a new one
        assert not T.holds_run(folder)
        T.train(tiny(folder), log=quiet)
    same_run(folder, reference)
