"""`python -m minadder quantize` and `evaluate --int8` on a tiny trained run, as a user runs
them: int8.npz written and read, images/s reported for float32 and int8, bad flags and
files refused in one line."""
import json
import shutil

import pytest

from cli_helpers import TINY, cli, one_line_error, private_env, shared_places
from minadder import int8


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(an environment with private data and home folders, the folder of a finished
    one-epoch LeNet-5-BN AdderNet run on 48 synthetic digits trained in it)."""
    env, out = private_env(*shared_places(tmp_path_factory)), tmp_path_factory.mktemp("cli-int8") / "run"
    assert cli(env, "train", *TINY, "--output-dir", out).returncode == 0
    return env, out


def evaluate_json(env, *args):
    result = cli(env, "evaluate", *args, "--limit-test", "32", "--backend", "numpy", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_quantize_writes_the_int8_model_and_says_so_in_one_line(trained):
    env, run = trained
    result = cli(env, "quantize", run, "--calibration-batches", "2", "--method", "max", "--backend", "numpy")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"int8 model: {run / 'int8.npz'} (lenet5_bn: 5 adder layers")
    assert "by max over 32 training images in 2 batches" in lines[0]
    network = int8.load(run / "int8.npz")
    assert network.adder_names == ["conv1", "conv2", "fc1", "fc2", "fc3"] and network.calibration["batches"] == 2


def test_evaluate_int8_reports_accuracy_and_images_per_second(trained):
    env, run = trained
    cli(env, "quantize", run, "--backend", "numpy")
    report = evaluate_json(env, run, "--int8", "--batch-size", "8")
    assert report["precision"] == "int8" and report["images"] == 32 and report["batch_size"] == 8
    assert 0 <= report["test_accuracy"] <= 1 and report["images_per_s"] > 0
    assert report["int8_file"] == str(run / "int8.npz") and report["calibration"]["method"] == int8.DEFAULT_METHOD
    assert report["sad_kernel"] == "numpy" and report["float32_layers"] == []
    plain = evaluate_json(env, run)
    assert plain["precision"] == "float32" and plain["images_per_s"] > 0 and "int8_file" not in plain
    line = cli(env, "evaluate", run, "--limit-test", "32", "--backend", "numpy", "--int8").stdout.strip()
    assert line.startswith("test accuracy: ") and "int8" in line and "images/s" in line and "\n" not in line


def test_evaluate_int8_quantizes_a_run_that_has_no_int8_model(trained, tmp_path):
    env, run = trained
    fresh = tmp_path / "fresh"
    shutil.copytree(run, fresh, ignore=shutil.ignore_patterns("int8.npz"))
    result = cli(env, "evaluate", fresh, "--limit-test", "32", "--backend", "numpy", "--int8")
    assert result.returncode == 0, result.stderr
    assert f"quantized checkpoint.npz into {fresh / 'int8.npz'}" in result.stderr
    assert int8.load(fresh / "int8.npz").calibration["method"] == int8.DEFAULT_METHOD


def test_an_int8_model_of_another_checkpoint_is_refused(trained, tmp_path):
    env, run = trained
    other = tmp_path / "other"
    shutil.copytree(run, other)
    network = int8.load(other / "int8.npz")
    network.calibration["checkpoint_sha256"] = "0" * 64          # as if made before more training
    int8.save(network, other / "int8.npz")
    one_line_error(cli(env, "evaluate", other, "--int8", "--backend", "numpy"),
                   "int8.npz", "made from another checkpoint", "minadder quantize")
    (other / "int8.npz").write_bytes(b"damaged")
    one_line_error(cli(env, "evaluate", other, "--int8", "--backend", "numpy"), "int8.npz", "not an int8 model file")


@pytest.mark.parametrize("args, words", [
    (["quantize", "RUN", "--calibration-batches", "0"], ["--calibration-batches must be an integer from 1"]),
    (["quantize", "RUN", "--calibration-batches", "1000000"], ["--calibration-batches", "got 1000000"]),
    (["quantize", "RUN", "--method", "mean"], ["--method", "invalid choice"]),
    (["quantize", "RUN", "--bits", "9"], ["--bits must be an integer from 2 to 8", "got 9"]),
    (["quantize", "RUN", "--bits", "1"], ["--bits must be an integer from 2"]),
    (["evaluate", "RUN", "--int8", "--batch-size", "0"], ["--batch-size must be an integer from 1"]),
    (["evaluate", "RUN", "--batch-size", "-3"], ["--batch-size", "got -3"]),
    (["quantize", "NOWHERE"], ["minadder quantize: error: no checkpoint at"]),
])
def test_bad_flags_and_targets_are_refused_in_one_line(trained, tmp_path, args, words):
    env, run = trained
    args = [{"RUN": run, "NOWHERE": tmp_path / "nowhere"}.get(a, a) for a in args]
    one_line_error(cli(env, *args), *words)


def test_quantize_bits_writes_narrower_codes(trained, tmp_path):
    import shutil
    env, run = trained
    copy = tmp_path / "run4"
    shutil.copytree(run, copy)
    result = cli(env, "quantize", copy, "--bits", "4", "--calibration-batches", "1", "--backend", "numpy")
    assert result.returncode == 0, result.stderr
    assert "adder layers in 4 bits" in result.stdout
    network = int8.load(copy / "int8.npz")
    assert network.bits == 4
