"""Every CIFAR-10 run under results/: found, summed up in one Markdown table, drawn against epoch.

    python results/plot.py --cifar-table   # prints the table, one row per run
    python results/plot.py                 # draws results/cifar10-runs.png (among the other figures)

A run is a folder ``cifar10-*/`` holding a ``metrics.json`` (the 30-epoch runs, finished or
in progress: the trainer rewrites the file after every epoch) or an older single file
``cifar10-*.json`` (the first 3-epoch runs). Nothing here writes into a run.
"""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
EXACT, JPEG = "test_batch_first1000_exact", "test_batch"
TEST_SETS = {EXACT: "1,000 exact", JPEG: "10,000 JPEG"}     # how metrics.json names them -> the page's name
DIGITS = {EXACT: 1, JPEG: 2}                                # 1,000 images: steps of 0.1 %; 10,000: 0.01 %
NETWORKS = ("AdderNet", "l2-AdderNet", "BNN", "CNN")
COLORS = {"AdderNet": "C0", "l2-AdderNet": "C2", "BNN": "C3", "CNN": "C1"}
# The paper's ResNet-20 on CIFAR-10 after 400 epochs (Table 2).
PAPER = {"AdderNet": 91.84, "CNN": 92.25, "BNN": 84.87}
# The CPU of runs whose metrics.json does not record one, as results/README.md states it.
CPU_ON_README = {
    "cifar10-resnet20-adder": "AMD EPYC (Zen 5), 2 vCPUs, AVX-512",
    "cifar10-resnet20-cnn": "AMD EPYC (Zen 5), 2 vCPUs, AVX-512",
    "cifar10-resnet20-adder-30ep": "Intel Xeon (Emerald Rapids), 2 cores, AVX-512",
    "cifar10-resnet20-cnn-30ep": "Intel Xeon (Emerald Rapids), 2 cores, AVX-512",
}
HEADER = ("run", "network", "distance", "eta", "epochs", "test set", "best", "last",
          "last, 10,000 JPEG", "training time", "CPU")


def discover(root=HERE):
    """(name, link, metrics) of every CIFAR-10 run under root: run folders, then older single files."""
    found = [(p.parent.name, p.parent.name + "/", p) for p in sorted(root.glob("cifar10-*/metrics.json"))]
    found += [(p.stem, p.name, p) for p in sorted(root.glob("cifar10-*.json"))]
    runs = [(name, link, json.loads(path.read_text())) for name, link, path in found]
    return sorted((r for r in runs if r[2]["config"]["dataset"] == "cifar10"), key=_order)


def _order(run):
    """Longest schedule first, then AdderNet, l2-AdderNet, BNN, CNN, then eta."""
    config = run[2]["config"]
    return -config["epochs"], NETWORKS.index(network(config)), config["eta"]


def network(config):
    """The kind of network: AdderNet (l1, Eq. 2), l2-AdderNet (Eq. 27), BNN or CNN."""
    if config["kind"] == "adder":
        return "l2-AdderNet" if config.get("distance") == "l2" else "AdderNet"
    return config["kind"].upper()


def distance(config):
    """l1 or l2 for an AdderNet (runs older than the switch are l1), '-' where no layer measures one."""
    return (config.get("distance") or "l1") if config["kind"] == "adder" else "-"


def eta(config):
    """Eq. 13's eta, which only an AdderNet's filters use."""
    return f"{config['eta']:g}" if config["kind"] == "adder" else "-"


def headline(metrics):
    """The test set a run is scored on: its --test-file, else the split's usual file (10,000 JPEG)."""
    test_file = metrics["config"].get("test_file")
    return Path(test_file).stem if test_file else JPEG


def accuracies(metrics, test_set):
    """Test accuracy (%) on test_set after each epoch; older runs name only their one test set."""
    if test_set == headline(metrics):
        return [100 * r["test_accuracy"] for r in metrics["epochs"]]
    return [100 * r["tests"][test_set]["accuracy"] for r in metrics["epochs"] if test_set in r.get("tests", {})]


def epochs(metrics, unit=""):
    """'done / planned' (then unit), and ', in progress' for a run still going."""
    done = f"{len(metrics['epochs'])} / {metrics['config']['epochs']}{unit}"
    return done if metrics["completed"] else done + ", in progress"


def percent(value, test_set):
    """An accuracy to the test set's resolution; '-' for none (a run before its first epoch)."""
    return "-" if value is None else f"{value:.{DIGITS[test_set]}f} %"


def cpu(name, metrics):
    """The CPUs a run's epochs record (key "cpu", since 2026-12-05), else the one this page
    states, else 'not recorded'; epochs without a record are counted."""
    recorded = [r.get("cpu") for r in metrics["epochs"]]
    names = sorted({c for c in recorded if c})
    if not names:
        return metrics.get("cpu") or CPU_ON_README.get(name, "not recorded")
    missing = recorded.count(None)
    return "; ".join(names) + (f" ({missing} earlier epochs not recorded)" if missing else "")


def row(name, link, metrics):
    """One run's cells, in HEADER's order."""
    config, test_set = metrics["config"], headline(metrics)
    scores, jpeg = accuracies(metrics, test_set), accuracies(metrics, JPEG)
    hours = sum(r["time_s"] for r in metrics["epochs"]) / 3600
    run = f"[{name.removeprefix('cifar10-resnet20-')}]({link})"
    return (run, network(config), distance(config), eta(config), epochs(metrics), TEST_SETS[test_set],
            percent(max(scores, default=None), test_set), percent(scores[-1] if scores else None, test_set),
            percent(jpeg[-1] if jpeg else None, JPEG), f"{hours:.2f} h", cpu(name, metrics))


def table(runs=None):
    """Every CIFAR-10 run as a Markdown table, one row per run."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row(*run)) + " |" for run in (discover() if runs is None else runs)]
    return "\n".join(lines)


def label(metrics):
    """network, distance and eta (AdderNets), epochs; the test set where it is not the exact 1,000."""
    config, test_set = metrics["config"], headline(metrics)
    parts = [network(config)] + ([distance(config), f"eta {eta(config)}"] if config["kind"] == "adder" else [])
    parts.append(epochs(metrics, " epochs"))
    return ", ".join(parts) + ("" if test_set == EXACT else f" ({TEST_SETS[test_set]})")


def color(config):
    """One colour per network; an AdderNet with an eta other than the paper's 0.1 gets its own."""
    return "C4" if config["kind"] == "adder" and config["eta"] != 0.1 else COLORS[network(config)]


def line_style(metrics):
    """Solid: finished, on the exact 1,000; dashed: in progress; dotted: scored on the 10,000 JPEG."""
    if headline(metrics) != EXACT:
        return ":"
    return "-" if metrics["completed"] else "--"


def figure(path, runs=None):
    """Test accuracy against epoch, one line per CIFAR-10 run, and the paper's 400-epoch figures
    (Table 2) as dash-dotted reference lines in the colour of their network."""
    runs = discover() if runs is None else runs
    fig, ax = plt.subplots(figsize=(8, 5))
    for _, _, metrics in runs:
        scores = accuracies(metrics, headline(metrics))
        ax.plot(range(1, len(scores) + 1), scores, line_style(metrics), marker=".",
                color=color(metrics["config"]), label=label(metrics))
    for name, value in PAPER.items():
        ax.axhline(value, color=COLORS[name], linestyle="-.", linewidth=1,
                   label=f"paper, {name}, 400 epochs: {value} %")
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", ylim=(0, 100),
           title="CIFAR-10 ResNet-20, every run: test accuracy on the 1,000 exact images\n"
                 "(dashed: in progress; dotted: scored on the 10,000 JPEG)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
