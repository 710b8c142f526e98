"""results/cifar_runs.py: the table of every CIFAR-10 run and its figure, on the committed run folders."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"
spec = importlib.util.spec_from_file_location("cifar_runs", RESULTS / "cifar_runs.py")
cifar_runs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cifar_runs)


def rows(markdown):
    """The table's rows as {column: cell}, keyed by the run's link target."""
    lines = markdown.splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    cells = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]
    return {row["run"].split("](")[1].rstrip(")"): row for row in cells}


def test_every_run_folder_with_metrics_is_a_row():
    table = rows(cifar_runs.table())
    folders = [p.parent.name for p in RESULTS.glob("cifar10-resnet20-*/metrics.json")]
    assert len(folders) >= 2
    assert {f + "/" for f in folders} <= set(table), sorted(table)
    for folder in folders:
        metrics = json.loads((RESULTS / folder / "metrics.json").read_text())
        assert table[folder + "/"]["epochs"].endswith("in progress") == (not metrics["completed"])
    assert table["cifar10-resnet20-adder.json"]["test set"] == "10,000 JPEG"


def test_the_finished_adder_run_reads_as_its_metrics_say():
    metrics = json.loads((RESULTS / "cifar10-resnet20-adder-30ep" / "metrics.json").read_text())
    row = rows(cifar_runs.table())["cifar10-resnet20-adder-30ep/"]
    assert metrics["completed"]
    assert row["last"] == f"{100 * metrics['test_accuracy']:.1f} %" == "88.8 %"
    assert (row["network"], row["distance"], row["eta"], row["epochs"]) == ("AdderNet", "l1", "0.1", "30 / 30")
    assert row["test set"] == "1,000 exact" and row["best"] == "89.1 %"
    hours = sum(r["time_s"] for r in metrics["epochs"]) / 3600
    assert row["training time"] == f"{hours:.2f} h" == "6.60 h"


def test_the_networks_are_named_from_kind_and_distance():
    names = [cifar_runs.network({"kind": k, "distance": d})
             for k, d in (("adder", "l1"), ("adder", "l2"), ("adder", None), ("bnn", "l1"), ("cnn", None))]
    assert names == ["AdderNet", "l2-AdderNet", "AdderNet", "BNN", "CNN"]


def test_a_run_before_its_first_epoch_and_other_datasets(tmp_path):
    config = {"dataset": "cifar10", "kind": "adder", "distance": "l2", "eta": 0.2, "epochs": 30,
              "test_file": "test_batch_first1000_exact.bin"}
    (tmp_path / "cifar10-resnet20-new").mkdir()
    (tmp_path / "cifar10-resnet20-new" / "metrics.json").write_text(
        json.dumps({"config": config, "epochs": [], "completed": False}))
    (tmp_path / "cifar10-mnist.json").write_text(
        json.dumps({"config": dict(config, dataset="mnist"), "epochs": [], "completed": True}))
    table = rows(cifar_runs.table(cifar_runs.discover(tmp_path)))
    assert list(table) == ["cifar10-resnet20-new/"]
    row = table["cifar10-resnet20-new/"]
    assert (row["network"], row["eta"], row["epochs"]) == ("l2-AdderNet", "0.2", "0 / 30, in progress")
    assert (row["best"], row["last"], row["training time"], row["CPU"]) == ("-", "-", "0.00 h", "not recorded")


def test_the_figure_is_a_png(tmp_path):
    path = tmp_path / "runs.png"
    cifar_runs.figure(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_prints_the_table():
    out = subprocess.run([sys.executable, str(RESULTS / "plot.py"), "--cifar-table"],
                         capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0] == "| " + " | ".join(cifar_runs.HEADER) + " |"
    assert "[adder-30ep](cifar10-resnet20-adder-30ep/)" in out


def test_the_cpu_column_names_the_machines_the_epochs_record():
    epochs = [{"epoch": 1}, {"epoch": 2, "cpu": "Chip B (AVX2)"}, {"epoch": 3, "cpu": "Chip A (AVX-512)"}]
    assert cifar_runs.cpu("x", {"epochs": epochs}) == "Chip A (AVX-512); Chip B (AVX2) (1 earlier epochs not recorded)"
    assert cifar_runs.cpu("x", {"epochs": epochs[1:2]}) == "Chip B (AVX2)"
    assert cifar_runs.cpu("x", {"epochs": epochs[:1]}) == "not recorded"
