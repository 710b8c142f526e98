"""`python -m minadder evaluate` and the choice of CIFAR test files: a tiny run evaluated,
two test sets per epoch, and a missing or mismatched dataset refused with a clear message."""
import json

import pytest

from cli_helpers import TINY, cli, one_line_error, private_env, private_places, write_cifar10, write_cifar10_batch
from minadder import train as T


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    return (root, *private_places(root))


@pytest.fixture(scope="module")
def env(places):
    _, data, home = places
    return private_env(data, home)


@pytest.fixture(scope="module")
def digits_run(places, env):
    """A finished one-epoch run on 48 synthetic digits, tested on 32."""
    out = places[0] / "digits-run"
    result = cli(env, "train", *TINY, "--output-dir", out)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def cifar_run(places, env):
    """A one-epoch LeNet-5-BN run on made-up CIFAR-10 files, tested on a chosen 8-image
    file and, as a second test set, on the usual test_batch.bin."""
    folder = write_cifar10(places[0] / "cifar" / "cifar-10-batches-bin")
    write_cifar10_batch(folder / "test_batch_first8.bin", 8, seed=5)
    out = places[0] / "cifar-run"
    result = cli(env, "train", "--dataset", "cifar10", "--data-dir", folder.parent, "--epochs", "1",
                 "--batch-size", "16", "--backend", "numpy", "--no-progress", "--test-file", "test_batch_first8.bin",
                 "--extra-test-file", "test_batch.bin", "--output-dir", out)
    assert result.returncode == 0, result.stderr
    return folder, out


def evaluate_json(env, *args):
    result = cli(env, "evaluate", *args, "--backend", "numpy", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_evaluating_a_tiny_run_gives_the_accuracy_it_was_trained_to(env, digits_run):
    metrics = json.loads((digits_run / "metrics.json").read_text())
    report = evaluate_json(env, digits_run, "--limit-test", "32")  # the run's own 32 test digits
    assert report["test_accuracy"] == metrics["test_accuracy"]
    assert report["test_loss"] == pytest.approx(metrics["epochs"][-1]["test_loss"], rel=1e-4)
    assert report["dataset"] == "synthetic-digits" and report["source"] == "generated"
    assert report["images"] == 32 and report["epoch"] == 1 and report["checkpoint"].endswith("checkpoint.npz")
    other = evaluate_json(env, digits_run / "checkpoint.npz", "--limit-test", "64")  # a checkpoint file too
    assert other["images"] == 64 and 0 <= other["test_accuracy"] <= 1


def test_the_plain_report_is_one_line(env, digits_run):
    result = cli(env, "evaluate", digits_run, "--limit-test", "32", "--backend", "numpy")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("test accuracy: ") and "32 images of synthetic-digits" in result.stdout
    assert "lenet5_bn AdderNet after 1 epoch," in result.stdout


def test_the_report_names_the_network_an_l2_adder_net_too(env, places):
    """kind and distance, and the name a learner knows: "l2-AdderNet" for --distance l2."""
    out = places[0] / "l2-run"
    result = cli(env, "train", *TINY, "--distance", "l2", "--output-dir", out)
    assert result.returncode == 0, result.stderr
    report = evaluate_json(env, out, "--limit-test", "32")
    assert (report["kind"], report["distance"], report["network"]) == ("adder", "l2", "l2-AdderNet")
    line = cli(env, "evaluate", out, "--limit-test", "32", "--backend", "numpy").stdout
    assert "lenet5_bn l2-AdderNet after 1 epoch," in line


def test_two_test_sets_each_epoch_each_named(cifar_run):
    folder, out = cifar_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert [(t["name"], t["images"]) for t in metrics["test_sets"]] == [("test_batch_first8", 8), ("test_batch", 20)]
    assert all(t["source"] == str(folder) for t in metrics["test_sets"])
    record = metrics["epochs"][0]
    assert set(record["tests"]) == {"test_batch_first8", "test_batch"}
    assert record["test_accuracy"] == record["tests"]["test_batch_first8"]["accuracy"]  # the main test set
    assert metrics["dataset"]["source"] == str(folder)


def test_evaluate_with_a_chosen_test_file(env, cifar_run):
    folder, out = cifar_run
    metrics = json.loads((out / "metrics.json").read_text())
    report = evaluate_json(env, out, "--data-dir", folder, "--test-file", "test_batch_first8.bin")
    assert report["images"] == 8 and report["test_set"] == "test_batch_first8"
    assert report["test_accuracy"] == metrics["epochs"][-1]["tests"]["test_batch_first8"]["accuracy"]
    usual = evaluate_json(env, out, "--data-dir", folder)
    assert usual["images"] == 20
    assert usual["test_accuracy"] == metrics["epochs"][-1]["tests"]["test_batch"]["accuracy"]


def test_a_mismatched_dataset_is_refused(env, digits_run, cifar_run):
    folder, _ = cifar_run
    result = cli(env, "evaluate", digits_run, "--dataset", "cifar10", "--data-dir", folder)
    one_line_error(result, "trained on synthetic-digits", "1x32x32", "cannot be evaluated on cifar10", "3x32x32")


def test_a_missing_dataset_is_refused(env, digits_run, tmp_path):
    result = cli(env, "evaluate", digits_run, "--dataset", "mnist", "--data-dir", tmp_path / "empty")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "dataset 'mnist' (test split) not found" in result.stderr
    assert "python -m minadder download mnist" in result.stderr
    one_line_error(cli(env, "evaluate", tmp_path / "no-run"), "minadder evaluate: error: no checkpoint at")
    one_line_error(cli(env, "evaluate", digits_run, "--test-file", "x.bin"), "--test-file", "cifar10")


def test_test_file_options_are_for_cifar_only():
    with pytest.raises(ValueError, match="--test-file applies to cifar10 and cifar100 only"):
        T.TrainConfig(test_file="test_batch_first1000_exact.bin").validate()
    with pytest.raises(ValueError, match="--extra-test-file .* is the main test set already"):
        T.TrainConfig(dataset="cifar10", test_file="a.bin", extra_test_file="a.bin").validate()


def test_the_forward_rate_leaves_out_the_first_batch_which_compiles_the_kernels(monkeypatch):
    """A first evaluate reported 639 images/s and the next 9,028: the first batch compiles
    the kernels (or loads them from Numba's cache). With more batches than one it is left out."""
    from minadder.train import evaluation
    clock = iter([0.0, 5.0, 5.0, 5.5, 5.5, 6.0])             # the first forward 5 s, then 0.5 s each
    monkeypatch.setattr(evaluation.time, "perf_counter", lambda: next(clock))
    timer = evaluation.ForwardTimer()
    for _ in range(3):
        timer.run(lambda x: x, [0] * 100)
    assert timer.images == 300 and timer.images_per_s == 200.0
    single = evaluation.ForwardTimer()
    clock = iter([0.0, 2.0])
    single.run(lambda x: x, [0] * 100)
    assert single.images_per_s == 50.0                          # one batch: all there is


def test_the_divergence_message_names_the_options_that_size_a_step():
    """It always said "try a smaller --lr", also where --eta or --weight-decay made it diverge."""
    from minadder.train.loop import _step_options
    assert _step_options(T.TrainConfig()) == "--lr, --eta or --weight-decay"
    assert _step_options(T.TrainConfig(adder_scaling="fixed", weight_decay=0.0)) == "--lr or --adder-factor"
    assert _step_options(T.TrainConfig(kind="cnn", weight_decay=0.0)) == "--lr"
