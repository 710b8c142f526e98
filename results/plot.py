"""Draw the results page's figures from the metrics.json files in results/.

    python results/plot.py                # writes results/ablation.png (and ablation-50ep.png), results/eta.png,
                                          # results/cifar10.png, results/cifar10-30ep.png and results/cifar10-runs.png
    python results/plot.py --table        # prints the per-epoch table of the 30-epoch CIFAR-10 runs (Markdown)
    python results/plot.py --cifar-table  # prints one row per CIFAR-10 run (cifar_runs.py, Markdown)

Only the figures whose runs are present are drawn.
"""
import sys
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import cifar_runs  # noqa: E402  (beside this file: python puts the script's folder on the path)

HERE = Path(__file__).resolve().parent


def load(name):
    path = HERE / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def test_curve(metrics):
    epochs = [r["epoch"] for r in metrics["epochs"]]
    return epochs, [100 * r["test_accuracy"] for r in metrics["epochs"]]


def figure(runs, title, path, ylim=None):
    """One line of test accuracy against epochs per (label, run name) present."""
    found = [(label, load(name)) for label, name in runs]
    found = [(label, m) for label, m in found if m is not None]
    if not found:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, metrics in found:
        ax.plot(*test_curve(metrics), marker=".", label=f"{label}: {100 * metrics['test_accuracy']:.2f} %")
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", title=title)
    if ylim:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


CIFAR_RUNS = (("AdderNet", "cifar10-resnet20-adder-30ep"), ("CNN", "cifar10-resnet20-cnn-30ep"))
CIFAR_TESTS = (("1,000 exact", "test_batch_first1000_exact", "-"), ("10,000 JPEG", "test_batch", ":"))


def run_metrics(folder):
    path = HERE / folder / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def cifar_figure(path):
    """Test accuracy on both CIFAR-10 test sets against epochs, for both networks."""
    found = [(label, run_metrics(folder)) for label, folder in CIFAR_RUNS]
    found = [(label, m) for label, m in found if m is not None]
    if not found:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for (label, metrics), color in zip(found, ("C0", "C1")):
        epochs = [r["epoch"] for r in metrics["epochs"]]
        for name, key, style in CIFAR_TESTS:
            ax.plot(epochs, [100 * r["tests"][key]["accuracy"] for r in metrics["epochs"]], style,
                    color=color, marker=".", label=f"{label}, {name}")
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", ylim=(0, 100),
           title=f"CIFAR-10 ResNet-20, {found[0][1]['config']['epochs']}-epoch cosine schedule")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def cifar_table():
    """The per-epoch rows of the 30-epoch CIFAR-10 runs, as a Markdown table."""
    lines = ["| run | epoch | train acc | test, 1,000 exact | test, 10,000 JPEG | epoch time | images/s |",
             "|---|---|---|---|---|---|---|"]
    for label, folder in CIFAR_RUNS:
        metrics = run_metrics(folder)
        for r in (metrics or {}).get("epochs", []):
            lines.append(f"| {label} | {r['epoch']} / {metrics['config']['epochs']} | "
                         f"{100 * r['train_accuracy']:.2f} % | "
                         f"{100 * r['tests']['test_batch_first1000_exact']['accuracy']:.1f} % | "
                         f"{100 * r['tests']['test_batch']['accuracy']:.2f} % | "
                         f"{r['time_s']:.0f} s | {r['images_per_s']:.0f} |")
    return "\n".join(lines)


def main():
    if "--table" in sys.argv[1:]:
        print(cifar_table())
        return
    if "--cifar-table" in sys.argv[1:]:
        print(cifar_runs.table())
        return
    for suffix, epochs in (("", 10), ("-50ep", 50)):
        figure([(f"{g} gradient, {s} scaling", f"ablation-{g}-{s}{suffix}")
                for g in ("full", "sign") for s in ("adaptive", "fixed", "none")],
               f"MNIST LeNet-5-BN AdderNet: ablation (Fig. 3), {epochs} epochs", HERE / f"ablation{suffix}.png")
    figure([(f"eta = {e}", "ablation-full-adaptive" if e == "0.1" else f"eta-{e}")
            for e in ("1", "0.5", "0.2", "0.1", "0.05")],
           "MNIST LeNet-5-BN AdderNet: eta (Table 4)", HERE / "eta.png", ylim=(97, 100))
    figure([("AdderNet", "cifar10-resnet20-adder"), ("CNN", "cifar10-resnet20-cnn")],
           "CIFAR-10 ResNet-20 (JPEG-decoded test set)", HERE / "cifar10.png")
    cifar_figure(HERE / "cifar10-30ep.png")
    cifar_runs.figure(HERE / "cifar10-runs.png")


if __name__ == "__main__":
    main()
