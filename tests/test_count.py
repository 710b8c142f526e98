"""The op counter against counts worked out by hand (paper Tables 2 and 3, Sec. 4.1)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from minadder import count as C
from minadder.__main__ import main

ROOT = Path(__file__).resolve().parents[1]

# LeNet-5-BN on 1x32x32, pairs = fan-in x outputs:
LENET_PAIRS = {
    "conv1": 25 * 6 * 28 * 28,     # 117,600
    "conv2": 150 * 16 * 10 * 10,   # 240,000
    "fc1": 400 * 120,              # 48,000
    "fc2": 120 * 84,               # 10,080
    "fc3": 84 * 10,                # 840
}
LENET_TOTAL = 416_520


def test_lenet5_bn_by_hand():
    assert sum(LENET_PAIRS.values()) == LENET_TOTAL
    report = C.count("lenet5_bn", "adder")
    assert {r["name"]: r["pairs"] for r in report["layers"]} == LENET_PAIRS
    # every layer is an adder layer: two additions per pair, no multiplication
    assert report["totals"]["all"] == {"mul": 0, "add": 2 * LENET_TOTAL, "xnor": 0, "cycles": 4 * LENET_TOTAL}
    middle = 240_000 + 48_000 + 10_080
    assert report["totals"]["without_first_last"]["add"] == 2 * middle
    cnn = C.count("lenet5_bn", "cnn")["totals"]["all"]
    assert cnn["mul"] == cnn["add"] == LENET_TOTAL
    # Sec. 4.1 latency model: 1.67M cycles (AdderNet) vs 2.50M (CNN); the paper says ~1.7M / ~2.6M
    assert cnn["cycles"] == 6 * LENET_TOTAL == 2_499_120
    assert report["totals"]["all"]["cycles"] == 1_666_080


def test_resnet20_by_hand():
    # 3x3 layers on 32x32 (stage 1), 16x16 (stage 2), 8x8 (stage 3): each stage's full-width
    # 3x3 layer costs 16*1024*144 = 32*256*288 = 64*64*576 = 2,359,296 pairs
    full = 2_359_296
    stage1 = 6 * full
    stage2 = full // 2 + 5 * full + 32 * 256 * 16     # stride-2 conv (16 in), 5 convs, 1x1 shortcut
    stage3 = full // 2 + 5 * full + 64 * 64 * 32
    middle = stage1 + stage2 + stage3
    assert middle == 40_370_176
    first, last = 16 * 1024 * 27, 64 * 10

    report = C.count("resnet20", "adder")
    assert len(report["layers"]) == 22
    t = report["totals"]
    assert t["without_first_last"] == {"mul": 0, "add": 2 * middle, "xnor": 0, "cycles": 4 * middle}
    # the first conv and the classifier multiply even in the AdderNet
    assert t["all"]["mul"] == first + last and t["all"]["add"] == 2 * middle + first + last
    table = report["table"]
    assert table["cnn"]["without_first_last"]["mul"] == middle
    assert table["bnn"]["without_first_last"]["xnor"] == middle
    assert table["cnn"]["all"]["mul"] == middle + first + last
    assert report["not_counted"]["residual_adds"] == 3 * 16 * 1024 + 3 * 32 * 256 + 3 * 64 * 64


def test_resnet32_matches_the_paper_with_the_first_layer():
    table = C.count("resnet32", "cnn")["table"]["cnn"]
    last = 64 * 10
    assert table["all"]["mul"] - last == 69_124_096  # the paper's 69.12M


def test_trace_takes_its_hooks_off_and_restores_the_mode():
    from minadder import models
    model = models.lenet5_bn()
    rows = C.trace(model)
    assert [r["name"] for r in rows if "pairs" in r] == list(LENET_PAIRS) and model.training
    assert rows[0]["input"] == [1, 32, 32] and rows[0]["output"] == [6, 28, 28]
    before = len(rows)
    again = C.trace(model.eval())
    assert len(rows) == before               # the first trace's hooks are gone: they record nothing more
    assert again == rows and not model.training


def test_cli_count_json_and_table(capsys):
    assert main(["count", "--model", "lenet5_bn", "--kind", "cnn", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["totals"]["all"]["mul"] == LENET_TOTAL
    assert main(["count", "--model", "resnet20"]) == 0
    out = capsys.readouterr().out
    assert "layer2.0.downsample.0" in out and "80,740,352" in out and "AddNN" in out


def test_module_help_runs_as_a_subprocess():
    done = subprocess.run([sys.executable, "-m", "minadder", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "train" in done.stdout and "count" in done.stdout


@pytest.mark.parametrize("argv", [["count", "--model", "alexnet"], ["fly"]])
def test_cli_rejects_bad_arguments(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
