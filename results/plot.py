"""Draw the results page's figures from the metrics.json files in results/.

    python results/plot.py        # writes results/ablation.png (and ablation-50ep.png), results/eta.png, results/cifar10.png

Only the figures whose runs are present are drawn.
"""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

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


def main():
    for suffix, epochs in (("", 10), ("-50ep", 50)):
        figure([(f"{g} gradient, {s} scaling", f"ablation-{g}-{s}{suffix}")
                for g in ("full", "sign") for s in ("adaptive", "fixed", "none")],
               f"MNIST LeNet-5-BN AdderNet: ablation (Fig. 3), {epochs} epochs", HERE / f"ablation{suffix}.png")
    figure([(f"eta = {e}", "ablation-full-adaptive" if e == "0.1" else f"eta-{e}")
            for e in ("1", "0.5", "0.2", "0.1", "0.05")],
           "MNIST LeNet-5-BN AdderNet: eta (Table 4)", HERE / "eta.png", ylim=(97, 100))
    figure([("AdderNet", "cifar10-resnet20-adder"), ("CNN", "cifar10-resnet20-cnn")],
           "CIFAR-10 ResNet-20 (JPEG-decoded test set)", HERE / "cifar10.png")


if __name__ == "__main__":
    main()
