"""Nothing lost, nothing silent: `python -m minadder train` with damaged files, interruptions
and odd arguments, run in a subprocess on tiny data as a user would meet it."""
import json
import os
import shutil
import signal

import numpy as np
import pytest

from cli_helpers import TINY, cli, one_line_error, private_env, private_places, write_cifar10, write_mnist
from minadder import train as T
from minadder.__main__ import main
from minadder.data import synthetic


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """A private $MINADDER_DATA holding the synthetic digits' cache, and a private home."""
    return private_places(tmp_path_factory.mktemp("cli"))


@pytest.fixture
def env(places, monkeypatch):
    """The environment for subprocesses; the same $MINADDER_DATA for in-process runs."""
    data, home = places
    monkeypatch.setenv("MINADDER_DATA", str(data))
    return private_env(data, home)


def strict_load(path):
    """json.load that refuses NaN and Infinity, as strict JSON parsers do."""
    def refuse(constant):
        raise ValueError(f"{path}: not strict JSON ({constant})")
    return json.loads(path.read_text(), parse_constant=refuse)


def interrupted_run(folder, at=(0, 2)):
    """A run of two epochs stopped by Ctrl-C after batch at[1] of epoch at[0] (in-process)."""
    def stop(epoch, step):
        if (epoch, step) == at:
            raise KeyboardInterrupt

    config = T.TrainConfig(epochs=2, batch_size=16, limit_train=48, limit_test=32, backend="numpy",
                           output_dir=str(folder), progress=False)
    with pytest.raises(T.TrainingInterrupted):
        T.train(config, callback=stop, log=lambda text: None)
    return folder


# ================================================================ 1. --resume writes into DIR
def test_resuming_a_moved_copy_writes_into_the_copy_not_the_original(env, tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    interrupted_run("orig")  # a relative --output-dir, as the checkpoint saves it
    original = (tmp_path / "a" / "orig" / "checkpoint.npz").read_bytes()
    shutil.copytree(tmp_path / "a" / "orig", tmp_path / "b" / "copy")
    (tmp_path / "c").mkdir()
    result = cli(env, "train", "--resume", "../b/copy", "--no-progress", cwd=tmp_path / "c")
    assert result.returncode == 0, result.stderr
    assert strict_load(tmp_path / "b" / "copy" / "metrics.json")["completed"]
    assert strict_load(tmp_path / "b" / "copy" / "metrics.json")["config"]["output_dir"] == "../b/copy"
    assert (tmp_path / "a" / "orig" / "checkpoint.npz").read_bytes() == original  # untouched
    assert not strict_load(tmp_path / "a" / "orig" / "metrics.json")["completed"]
    assert list((tmp_path / "c").iterdir()) == []  # the old relative path was not recreated


# ================================================================ 3. damaged checkpoints
def _missing_entry(data, path):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "state.step"}
    np.savez(path, **arrays)


def _pickled(data, path):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["meta.config"] = np.array([{"model": "lenet5_bn"}], dtype=object)
    np.savez(path, **arrays)


def _flip(data, path):
    middle = len(data) // 2
    path.write_bytes(data[:middle] + bytes([data[middle] ^ 0x55]) + data[middle + 1:])


DAMAGES = {
    "empty": lambda data, path: path.write_bytes(b""),
    "not-npz": lambda data, path: path.write_bytes(b"epoch 3 of 10\n"),
    "truncated": lambda data, path: path.write_bytes(data[:len(data) // 2]),
    "cut-at-the-end": lambda data, path: path.write_bytes(data[:-10]),
    "bit-flipped": _flip,
    "missing-entry": _missing_entry,
    "pickled": _pickled,
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_checkpoint_gives_one_line_naming_the_file(env, tmp_path, damage):
    folder = interrupted_run(tmp_path / "run")
    path = folder / "checkpoint.npz"
    DAMAGES[damage](path.read_bytes(), path)
    line = one_line_error(cli(env, "train", "--resume", folder, "--no-progress"), path)
    if damage == "pickled":
        assert "Python objects" in line and "allow_pickle" not in line
    if damage == "not-npz":
        assert "not a readable .npz file" in line and "allow_pickle" not in line
    if damage == "missing-entry":
        assert "missing state.step" in line


OPTIMIZER_DAMAGES = {
    "missing": lambda path: path.unlink(),
    "truncated": lambda path: path.write_bytes(path.read_bytes()[:100]),
    "bit-flipped": lambda path: _flip(path.read_bytes(), path),
}


@pytest.mark.parametrize("damage", list(OPTIMIZER_DAMAGES))
def test_a_damaged_optimizer_file_gives_one_line_and_evaluate_still_works(env, tmp_path, damage):
    folder = interrupted_run(tmp_path / "run")
    side = T.optimizer_file(folder / "checkpoint.npz")
    OPTIMIZER_DAMAGES[damage](side)
    named = f"{side.name} is missing" if damage == "missing" else f"{side}: does not belong"
    one_line_error(cli(env, "train", "--resume", folder, "--no-progress"), named)
    result = cli(env, "evaluate", folder, "--json")  # the model is in checkpoint.npz alone
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["images"] > 0


def test_read_checkpoint_refuses_a_model_that_does_not_match(env, tmp_path):
    folder = interrupted_run(tmp_path / "run")
    path = folder / "checkpoint.npz"
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "model.conv1.weight"}
    np.savez(path, **arrays)
    one_line_error(cli(env, "train", "--resume", folder, "--no-progress"), path, "conv1.weight")


# ================================================================ 4. damaged synthetic cache
def test_a_damaged_synthetic_cache_is_rebuilt_by_the_next_run(places, tmp_path):
    data, home = places
    fresh = tmp_path / "data"
    cache = synthetic._cache_file(fresh / synthetic.SYNTHETIC_NAME, *synthetic.DEFAULT_SIZES, 0)
    cache.parent.mkdir(parents=True)
    good = synthetic._cache_file(data / synthetic.SYNTHETIC_NAME, *synthetic.DEFAULT_SIZES, 0).read_bytes()
    cache.write_bytes(good[:len(good) // 3])  # a zip cut short: BadZipFile
    result = cli(private_env(fresh, home), "train", *TINY, "--output-dir", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    with np.load(cache, allow_pickle=False) as z:
        assert z["x_train"].shape == (synthetic.DEFAULT_SIZES[0], 1, 28, 28)


# ================================================================ 5. divergence
def test_divergence_stops_the_run_with_a_non_zero_exit(env, tmp_path):
    result = cli(env, "train", *TINY, "--lr", "1e30", "--output-dir", tmp_path / "run")
    line = one_line_error(result, "diverged", "nan", "--lr", code=1)
    assert "no checkpoint" in line
    assert not (tmp_path / "run").exists()  # nothing was saved: no empty folder is left behind


def test_divergence_keeps_the_last_good_checkpoint(env, tmp_path):
    import minadder

    def poison(epoch, step):
        if (epoch, step) == (1, 1):  # in epoch 2 the weights become NaN: the next loss is NaN
            next(iter(model_of_run[0].parameters())).data[...] = np.nan

    model_of_run = []
    real_build = T.build

    def build(*args):
        model, optimizer = real_build(*args)
        model_of_run.append(model)
        return model, optimizer

    config = T.TrainConfig(epochs=3, batch_size=16, limit_train=48, limit_test=32, backend="numpy",
                           output_dir=str(tmp_path / "run"), progress=False)
    with minadder.use_backend("numpy"), pytest.MonkeyPatch.context() as mp:
        mp.setattr(T.loop, "build", build)
        with pytest.raises(T.TrainingDiverged, match=r"nan at epoch 2, batch 2/3.*last checkpoint .* is kept"):
            T.train(config, callback=poison, log=lambda text: None)
    with np.load(tmp_path / "run" / "checkpoint.npz", allow_pickle=False) as z:
        assert (int(z["state.epoch"]), int(z["state.step"])) == (1, 0)
        assert np.isfinite(z["model.conv1.weight"]).all()
    assert len(strict_load(tmp_path / "run" / "metrics.json")["epochs"]) == 1


def test_metrics_json_is_strict_json_when_a_loss_is_infinite(env, tmp_path, monkeypatch):
    monkeypatch.setattr(T.loop, "evaluate", lambda model, batches, should_stop=None: (float("inf"), 0.5))
    assert main(["train", *TINY, "--output-dir", str(tmp_path / "run")]) == 0
    metrics = strict_load(tmp_path / "run" / "metrics.json")
    assert metrics["epochs"][0]["test_loss"] is None and metrics["test_accuracy"] == 0.5


# ================================================================ 6. an existing run is kept
def test_a_new_run_refuses_a_folder_holding_a_run_unless_overwrite(env, tmp_path):
    out = tmp_path / "run"
    assert cli(env, "train", *TINY, "--output-dir", out).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    line = one_line_error(cli(env, "train", *TINY, "--seed", "1", "--output-dir", out),
                          out, "already holds a run", "--resume", "--overwrite")
    assert "epoch" not in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert cli(env, "train", *TINY, "--seed", "1", "--output-dir", out, "--overwrite").returncode == 0
    assert strict_load(out / "metrics.json")["config"]["seed"] == 1


def test_a_new_run_refuses_a_folder_holding_an_interrupted_run(env, tmp_path):
    folder = interrupted_run(tmp_path / "run")
    one_line_error(cli(env, "train", *TINY, "--output-dir", folder), "already holds a run")


# ================================================================ 7. one data source
def test_both_splits_come_from_the_folder_holding_the_training_split(env, places, tmp_path):
    given = write_mnist(tmp_path / "given", 48)                     # training files only
    write_mnist(places[0] / "mnist", 32, split="test")              # the test split in $MINADDER_DATA
    try:
        result = cli(env, "train", *TINY, "--dataset", "mnist", "--data-dir", given,
                     "--output-dir", tmp_path / "run")
    finally:
        shutil.rmtree(places[0] / "mnist")
    one_line_error(result, "test split", str(given))
    assert not (tmp_path / "run").exists()


def test_a_misspelled_data_dir_is_noted_and_the_source_recorded(env, places, tmp_path):
    data = places[0] / "mnist"
    write_mnist(data, 48)
    write_mnist(data, 32, split="test")
    try:
        result = cli(env, "train", *TINY, "--dataset", "mnist", "--data-dir", tmp_path / "dtaa",
                     "--output-dir", tmp_path / "run")
    finally:
        shutil.rmtree(data)
    assert result.returncode == 0, result.stderr
    assert f"note: --data-dir {tmp_path / 'dtaa'} does not exist; using {data} ($MINADDER_DATA)" in result.stderr
    metrics = strict_load(tmp_path / "run" / "metrics.json")
    assert metrics["dataset"]["source"] == str(data) and metrics["test_sets"][0]["source"] == str(data)
    assert any("does not exist" in note for note in metrics["dataset"]["notes"])


# ================================================================ 8. problems found early
def test_a_data_error_leaves_no_output_folder(env, tmp_path):
    result = cli(env, "train", *TINY, "--dataset", "mnist", "--data-dir", tmp_path / "nowhere",
                 "--output-dir", tmp_path / "run")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "python -m minadder download mnist" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_read_only_output_folder_is_refused_before_training(env, tmp_path, monkeypatch, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(out) else real_access(path, mode))
    monkeypatch.setattr(T.loop, "load_data", lambda config: pytest.fail("data loaded for an unwritable folder"))
    assert main(["train", *TINY, "--output-dir", str(out)]) == 2
    assert "not writable" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_a_read_only_output_folder_is_refused_before_training_cli(env, tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        line = one_line_error(cli(env, "train", *TINY, "--output-dir", out), out, "not writable")
    finally:
        out.chmod(0o755)
    assert "epoch 1" not in line


# ================================================================ 9, 10. values and messages
@pytest.mark.parametrize("option, value, words", [
    ("--momentum", "1.5", ["--momentum must be in [0, 1); got 1.5"]),
    ("--eta", "0", ["--eta must be a finite number > 0"]),
    ("--lr", "nan", ["--lr must be a finite number"]),
    ("--weight-decay", "-1e-4", ["--weight-decay must be"]),
    ("--seed", "-1", ["--seed must be an integer from 0 to 4,294,967,295; got -1"]),
    ("--batch-size", "0", ["--batch-size must be an integer from 2"]),
    ("--limit-test", "1", ["--limit-test must be an integer from 2"]),
])
def test_a_value_that_cannot_work_is_refused_naming_the_flag(env, tmp_path, option, value, words):
    result = cli(env, "train", *TINY, f"{option}={value}", "--output-dir", tmp_path / "run")
    one_line_error(result, *words)
    assert not (tmp_path / "run").exists()


def test_a_cifar_batch_cut_at_a_record_boundary_is_refused(env, tmp_path):
    folder = write_cifar10(tmp_path / "cifar-10-batches-bin")
    records = (folder / "data_batch_3.bin").read_bytes()
    (folder / "data_batch_3.bin").write_bytes(records[:3073 * 7])  # 7 of 10 whole records
    result = cli(env, "train", *TINY, "--dataset", "cifar10", "--data-dir", tmp_path)
    one_line_error(result, "data_batch_3.bin", "holds 7 records", "truncated")


def test_ctrl_c_after_the_last_epoch_exits_130_and_says_the_run_finished(env, tmp_path, monkeypatch, capsys):
    real_plot = T.plot_curves

    def plot_then_ctrl_c(metrics, path):
        real_plot(metrics, path)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the last epoch's outputs are written

    monkeypatch.setattr(T.report, "plot_curves", plot_then_ctrl_c)
    assert main(["train", *TINY, "--output-dir", str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err
    assert "the run had finished" in err and str(tmp_path / "run") in err
    assert strict_load(tmp_path / "run" / "metrics.json")["completed"]


def test_resuming_into_another_run_or_from_an_older_epoch_file_is_refused(env, tmp_path):
    other = tmp_path / "other"
    assert cli(env, "train", *TINY, "--output-dir", other).returncode == 0
    folder = interrupted_run(tmp_path / "run")
    one_line_error(cli(env, "train", "--resume", folder, "--output-dir", other, "--no-progress"),
                   other, "already holds a run")
    fresh = tmp_path / "fresh"  # an empty folder elsewhere: the run continues there, the original stays
    before = (folder / "checkpoint.npz").read_bytes()
    assert cli(env, "train", "--resume", folder, "--output-dir", fresh, "--no-progress").returncode == 0
    assert strict_load(fresh / "metrics.json")["completed"]
    assert (folder / "checkpoint.npz").read_bytes() == before
    shutil.copy(fresh / "checkpoint.npz", fresh / "checkpoint-epoch001.npz")  # stands for an older epoch pair
    one_line_error(cli(env, "train", "--resume", fresh / "checkpoint-epoch001.npz", "--no-progress"),
                   "already holds a run")
