"""Odd arguments and hand-edited checkpoints meet one line naming the flag or the file and
field, never a traceback; paths are expanded as a shell user expects (``~``, ``$VAR``)."""
import json

import numpy as np
import pytest

from cli_helpers import TINY, cli, one_line_error, private_env, shared_places
from minadder import train as T
from minadder.__main__ import main


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    return shared_places(tmp_path_factory)


@pytest.fixture(scope="module")
def env(places):
    return private_env(*places)


@pytest.fixture(scope="module")
def finished(env, tmp_path_factory):
    """A finished tiny run, copied afresh for every test that edits it."""
    folder = tmp_path_factory.mktemp("finished") / "run"
    assert cli(env, "train", *TINY, "--output-dir", folder).returncode == 0
    return folder


def edit_meta(path, entry, change):
    """Rewrite the JSON entry ``meta.<entry>`` of a checkpoint with ``change(value)`` (or raw text)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    value = json.loads(arrays[f"meta.{entry}"].tobytes().decode())
    text = change(value) if entry != "raw" else change
    if not isinstance(text, str):
        text = json.dumps(text)
    arrays[f"meta.{entry}"] = np.frombuffer(text.encode(), dtype=np.uint8)
    np.savez(path, **arrays)


def _set(key, value):
    def change(d):
        d[key] = value
        return d
    return change


def _drop(key):
    def change(d):
        del d[key]
        return d
    return change


EDITS = {
    "wrong-type": ("config", _set("epochs", "3"), "meta.config field 'epochs' must be an integer, not the text '3'"),
    "bad-value": ("config", _set("momentum", 1.5), "meta.config: --momentum must be in [0, 1)"),
    "missing-field": ("config", _drop("model"), "meta.config has no field 'model'"),
    "not-an-object": ("config", lambda d: [1, 2], "meta.config must be an object, not a list"),
    "garbage": ("metrics", lambda d: "{epochs: [", "damaged entry meta.metrics (not JSON"),
    "metrics-type": ("metrics", _set("epochs", "none"), "meta.metrics field 'epochs' has the wrong type"),
    "classes": ("metrics", lambda d: {**d, "dataset": {**d["dataset"], "num_classes": -3}},
                "'dataset.num_classes' must be a positive integer"),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_a_hand_edited_checkpoint_gives_one_line_naming_the_file_and_field(env, finished, tmp_path, edit):
    import shutil
    folder = shutil.copytree(finished, tmp_path / "run")
    entry, change, words = EDITS[edit]
    edit_meta(folder / "checkpoint.npz", entry, change)
    for command in (["evaluate", folder], ["train", "--resume", folder, "--no-progress"]):
        one_line_error(cli(env, *command), folder / "checkpoint.npz", words)


def test_a_negative_counter_is_refused(finished, tmp_path):
    import shutil
    path = shutil.copytree(finished, tmp_path / "run") / "checkpoint.npz"
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["state.seen"] = np.asarray(-5)
    np.savez(path, **arrays)
    with pytest.raises(T.CheckpointError, match=r"checkpoint.npz: entry state.seen must be >= 0"):
        T.read_checkpoint(path)


def test_the_checkpoints_in_results_still_read():
    """Every committed run folder reads: the finished 30-epoch runs (format 3: the optimizer
    file is checkpoint.optim.npz) at their last epoch, the runs in progress (format 4,
    stopped by a signal inside an epoch) somewhere before it."""
    from pathlib import Path
    finished = {"cifar10-resnet20-adder-30ep", "cifar10-resnet20-cnn-30ep"}
    seen = set()
    for path in sorted(Path(__file__).parent.parent.glob("results/*/checkpoint.npz")):
        saved = T.read_checkpoint(path)
        assert 1 <= saved.progress.epoch <= saved.config["epochs"] and "lr" in saved.optim, path
        if path.parent.name in finished:
            assert saved.progress.epoch == saved.config["epochs"], path
            seen.add(path.parent.name)
    assert seen == finished


# ================================================================ paths as a shell expands them
def test_tilde_and_variables_are_expanded_in_every_path(places, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {**private_env(places[0], home), "RUNS": str(tmp_path / "elsewhere")}
    work = tmp_path / "cwd"
    work.mkdir()
    result = cli(env, "train", *TINY, "--output-dir", "~/runs/x", cwd=work)
    assert result.returncode == 0, result.stderr
    assert (home / "runs" / "x" / "checkpoint.npz").exists()
    assert cli(env, "train", "--resume", "~/runs/x", "--no-progress", cwd=work).returncode == 0
    assert cli(env, "evaluate", "~/runs/x", cwd=work).returncode == 0
    assert cli(env, "train", *TINY, "--output-dir", "$RUNS/y", cwd=work).returncode == 0
    assert (tmp_path / "elsewhere" / "y" / "metrics.json").exists()
    assert list(work.iterdir()) == []  # no folder named "~" or "$RUNS"


@pytest.mark.parametrize("flag", ["--resume", "--output-dir"])
def test_an_empty_path_or_an_unset_variable_is_refused_naming_the_flag(env, tmp_path, flag):
    """``--resume "$RUN"`` with RUN unset had started a new run, and ``$RUN/x`` made a
    folder named "$RUN"."""
    env = {k: v for k, v in env.items() if k != "MINADDER_TEST_UNSET"}
    one_line_error(cli(env, "train", *TINY, flag, "", cwd=tmp_path), f"argument {flag}: an empty path")
    one_line_error(cli(env, "train", *TINY, flag, "$MINADDER_TEST_UNSET/x", cwd=tmp_path),
                   f"argument {flag}: '$MINADDER_TEST_UNSET/x' names $MINADDER_TEST_UNSET, which is not set")
    assert list(tmp_path.iterdir()) == []


# ================================================================ numbers in range, by flag
@pytest.mark.parametrize("args, words", [
    (["--epochs", "0"], "--epochs must be an integer from 1 to 1,000,000; got 0"),
    (["--epochs", "10000000"], "--epochs must be an integer from 1 to 1,000,000"),
    (["--batch-size", "-3"], "--batch-size must be an integer from 2 to 1,048,576; got -3"),
    (["--batch-size", "1"], "--batch-size must be an integer from 2"),      # batch norm needs two an image
    (["--dataset", "cifar10", "--extra-test-file", "test_batch.bin"],      # CIFAR-10's usual test file
     "--extra-test-file test_batch.bin is the main test set already"),
    (["--seed", str(2**40)], "--seed must be an integer from 0 to 4,294,967,295"),
    (["--limit-train", "1"], "--limit-train must be an integer from 2"),
    (["--lr", "inf"], "--lr must be a finite number >= 0"),
    (["--momentum", "-0.1"], "--momentum must be in [0, 1)"),
    (["--weight-decay", "nan"], "--weight-decay must be a finite number"),
    (["--eta", "-1"], "--eta must be a finite number > 0"),
    (["--adder-factor", "0"], "--adder-factor must be a finite number > 0"),
    (["--kind", "bnn", "--binary-weight-decay", "-1"], "--binary-weight-decay must be a finite number >= 0"),
    (["--binary-weight-decay", "0"], "--binary-weight-decay applies to --kind bnn only, not adder"),
])
def test_every_numeric_train_option_is_checked_naming_its_flag(env, capsys, args, words, tmp_path):
    assert main(["train", *TINY, *args, "--output-dir", str(tmp_path / "run")]) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_evaluate_and_count_check_their_numbers(env, finished, capsys):
    assert main(["evaluate", str(finished), "--limit-test", "0"]) == 2
    assert "--limit-test must be an integer from 2" in capsys.readouterr().err
    assert main(["count", "--num-classes", "0"]) == 2
    assert "--num-classes must be an integer from 2 to 100,000; got 0" in capsys.readouterr().err


def test_count_with_a_billion_classes_is_refused_without_allocating(env):
    one_line_error(cli(env, "count", "--num-classes", "1000000000"), "--num-classes must be an integer from 2")


def test_an_output_dir_that_cannot_be_made_is_named(env):
    """(a folder under a file has a check of its own; /proc refuses new folders even to root)"""
    import os
    if not os.path.isdir("/proc/self"):
        pytest.skip("no /proc here")
    one_line_error(cli(env, "train", *TINY, "--output-dir", "/proc/minadder-run"),
                   "--output-dir /proc/minadder-run: cannot create the folder (")
