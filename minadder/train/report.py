"""What a run reports: the metrics.json record (strict JSON) and the curves.png plot of loss and accuracy.

``metrics.json`` holds the configuration, the dataset and where it was read from, one
record per epoch (learning rate, train loss and accuracy, test loss and accuracy on every
test set, seconds, images/s, the CPU it ran on), the per-batch training loss and accuracy, and the final
``test_accuracy``. It is strict JSON: a value that is not finite is written as null.

The per-batch log is kept small: its numbers are rounded (``step_value``) and each of its
three lists takes one line, so that a long run's record stays readable and a few MB at most
(100 epochs of CIFAR-10 are 39,100 batches).
"""
import dataclasses
import functools
import math

from .. import backend
from .files import atomic_write, to_json

METRICS = "metrics.json"
CURVES = "curves.png"


def new_metrics(config, data, model):
    """The metrics record of a run before its first epoch."""
    train_set = data.train_set
    return {"config": dataclasses.asdict(config), "backend": backend.get_backend(),
            "dataset": {"name": train_set.name, "source": train_set.source, "train_images": len(train_set),
                        "test_images": len(data.tests[0].dataset), "num_classes": train_set.num_classes,
                        "mean": list(train_set.mean), "std": list(train_set.std), "pad_to": data.pad_to,
                        "image": list(data.image),
                        "notes": list(data.notes)},
            "test_sets": [{"name": t.name, "source": t.dataset.source, "images": len(t.dataset)}
                          for t in data.tests],
            "model": {"name": config.model, "kind": config.kind,
                      "parameters": int(sum(p.size for p in model.parameters()))},
            "epochs": [], "steps": {"epoch": [], "loss": [], "accuracy": []},
            "test_accuracy": None, "completed": False}


@functools.lru_cache(maxsize=1)
def host_cpu():
    """The CPU this process runs on, as the benchmarks name it (lscpu's model name and its
    widest vector ISA): each epoch records it, since a resumed run may change machines."""
    from ..kernels.target import cpu_model
    return cpu_model()


def epoch_record(epoch, lr, progress, results, main):
    """The metrics record of a finished epoch: ``progress`` holds the epoch's training sums,
    ``results`` the loss and accuracy on every test set, ``main`` the name of the main one."""
    return {"epoch": epoch + 1, "lr": lr,
            "train_loss": progress.loss_sum / progress.seen,
            "train_accuracy": progress.correct / progress.seen,
            "test_loss": results[main]["loss"], "test_accuracy": results[main]["accuracy"], "tests": results,
            "time_s": progress.seconds, "images_per_s": progress.seen / max(progress.seconds, 1e-9),
            "cpu": host_cpu()}


def epoch_line(record, epochs):
    """The line logged after an epoch: learning rate, training and test results, speed."""
    tests = ", ".join(f"{'test' if name == 'test' else name} acc {100 * r['accuracy']:.2f}%"
                      for name, r in record["tests"].items())
    return (f"epoch {record['epoch']}/{epochs}: lr {record['lr']:.4g}, train loss {record['train_loss']:.4f}, "
            f"train acc {100 * record['train_accuracy']:.2f}%, {tests}, "
            f"{record['time_s']:.1f}s ({record['images_per_s']:.0f} img/s)")


STEP_DIGITS = 5          # significant digits of a batch's loss and accuracy in the log


def step_value(value):
    """A batch's loss or accuracy as the per-batch log keeps it: 5 significant digits,
    which a curve cannot tell from the full float and which halves the record's size."""
    return float(f"{value:.{STEP_DIGITS}g}")


def metrics_text(metrics):
    """The metrics record as JSON text: indented, except that each per-batch list is one line."""
    text = to_json(dict(metrics, steps=None), indent=1)
    steps = ",\n".join(f'  "{name}": {to_json(values)}' for name, values in metrics["steps"].items())
    return text.replace('\n "steps": null', '\n "steps": {\n' + steps + '\n }', 1)


def write_outputs(out_dir, metrics):
    """metrics.json (strict JSON) and curves.png, each written atomically."""
    text = metrics_text(metrics)
    atomic_write(out_dir / METRICS, lambda tmp: tmp.write_text(text))
    plot_curves(metrics, out_dir / CURVES)


def plot_curves(metrics, path):
    """Loss and accuracy against epochs: per batch (thin) and per epoch (markers), one
    line per test set."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: no global state
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    loss_ax, acc_ax = fig.subplots(1, 2)
    steps, epochs = metrics["steps"], metrics["epochs"]
    e = [r["epoch"] for r in epochs]
    loss_ax.plot(steps["epoch"], steps["loss"], lw=0.7, alpha=0.45, color="tab:blue", label="train (batch)")
    acc_ax.plot(steps["epoch"], [100 * a for a in steps["accuracy"]], lw=0.7, alpha=0.45, color="tab:blue",
                label="train (batch)")
    if epochs:
        loss_ax.plot(e, [r["train_loss"] for r in epochs], "o-", color="tab:blue", label="train (epoch)")
        acc_ax.plot(e, [100 * r["train_accuracy"] for r in epochs], "o-", color="tab:blue", label="train (epoch)")
        for name, color in zip(_test_results(epochs[-1]), ("tab:orange", "tab:green", "tab:red")):
            results = [_test_results(r)[name] for r in epochs]
            label = "test" if name == "test" else f"test ({name})"
            loss_ax.plot(e, [_nan_if_none(t["loss"]) for t in results], "s-", color=color, label=label)
            acc_ax.plot(e, [100 * _nan_if_none(t["accuracy"]) for t in results], "s-", color=color, label=label)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    loss_ax.set_yscale("log")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    final = metrics.get("test_accuracy")
    if final is not None:
        acc_ax.annotate(f"test {100 * final:.2f} %", xy=(e[-1], 100 * final), xytext=(-10, -18),
                        textcoords="offset points", ha="right", color="tab:orange")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    c = metrics["config"]
    fig.suptitle(f"{c['model']} ({network_label(c['kind'], c.get('distance', 'l1'))}) on {c['dataset']}, "
                 f"backend {metrics['backend']}")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def network_label(kind, distance="l1"):
    """What a learner calls a network of ``kind``: AdderNet, l2-AdderNet, CNN or BNN."""
    if kind == "adder":
        return "l2-AdderNet" if distance == "l2" else "AdderNet"
    return {"cnn": "CNN", "bnn": "BNN"}.get(kind, kind)


def _test_results(record):
    """{test set name: {"loss", "accuracy"}} of an epoch record (records written before
    there could be several test sets hold only test_loss and test_accuracy)."""
    return record.get("tests") or {"test": {"loss": record["test_loss"], "accuracy": record["test_accuracy"]}}


def _nan_if_none(value):
    """metrics.json writes a value that is not finite as null; matplotlib wants NaN (a gap)."""
    return math.nan if value is None else value
