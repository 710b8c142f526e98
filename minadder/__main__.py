"""The command line: ``python -m minadder train | evaluate | quantize | count | download`` (also the
``minadder`` script).

    python -m minadder train                          # AdderNet LeNet-5-BN on the built-in digits
    python -m minadder download mnist && python -m minadder train --dataset mnist --epochs 1
    python -m minadder train --resume runs/<run>      # continue after Ctrl-C
    python -m minadder evaluate runs/<run> [--json]   # test accuracy of a run's checkpoint
    python -m minadder quantize runs/<run>            # its int8 AdderNet, runs/<run>/int8.npz
    python -m minadder evaluate runs/<run> --int8     # the int8 model's accuracy and images/s
    python -m minadder count --model resnet20 --kind adder [--json]
    python -m minadder download mnist [--root DIR]

Every choice is taken from its registry (models, kinds, datasets, backends, gradient
modes, schedules), so a new entry there appears here. Paths (``--output-dir ~/runs/$RUN``)
are expanded as a shell expands them. Exit status: 0 done, 1 training diverged, 2 bad
options, data or a run folder in use, 128 + the signal's number when stopped by one (130
Ctrl-C, 143 SIGTERM, 129 SIGHUP, 138 SIGUSR1; see ``train/interrupts.py``).
"""
import argparse
import json
import sys

from . import backend, models, optim
from .data import registry
from .kernels.contract import DISTANCES, GRAD_MODES
from .train import (AUGMENTS, INTEGER_RANGES, LR_STEPS, FolderInUse, StopSignals, Stopped, TrainConfig,
                    TrainingDiverged, TrainingInterrupted, exit_status, expand_path, field_names)

DEFAULTS = TrainConfig()


def path_arg(text):
    """A path option, expanded as a shell would (train.expand_path); an empty one, or one
    naming an unset variable, is an error that names the option."""
    try:
        return expand_path(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def datasets():
    """Every dataset name of the registry (the synthetic digits first)."""
    return tuple(registry.DATASET_NAMES)


def downloadable():
    """The datasets that ``download`` fetches: all but the generated synthetic digits."""
    return tuple(registry.DATASETS)


def _add_train_parser(sub):
    p = sub.add_parser(
        "train", help="train a model and write metrics.json, curves.png and checkpoints",
        description="Train an AdderNet (or its CNN twin). Defaults follow the paper's MNIST recipe "
                    "(NAG, momentum 0.9, weight decay 5e-4, cosine decay from lr 0.1, batch 256, eta 0.1) "
                    "with few epochs: with no options it trains an AdderNet LeNet-5-BN on the built-in "
                    "synthetic digits in about a minute.")

    def opt(flag, help, **kw):  # every default is None: only options the user gives are applied
        name = flag.lstrip("-").replace("-", "_")
        default = getattr(DEFAULTS, name, None)
        suffix = f" (default: {default})" if default is not None else ""
        p.add_argument(flag, default=None, help=help + suffix, **kw)

    opt("--model", "network", choices=tuple(models.MODELS))
    opt("--kind", "adder layers, ordinary convolutions (cnn) or binary ones (bnn)", choices=models.KINDS)
    opt("--dataset", "dataset (28x28 sets are padded to 32x32)", choices=datasets())
    opt("--data-dir", "folder holding the dataset's files (else $MINADDER_DATA, then ~/.cache/minadder); "
                      "both splits are read from the one folder where the training files are found",
        type=path_arg)
    opt("--test-file", "CIFAR: the test batch file to use instead of the usual one, e.g. "
                       "test_batch_first1000_exact.bin (a name in the dataset's folder, or a path)", type=path_arg)
    opt("--extra-test-file", "CIFAR: a second test batch file, also evaluated after every epoch "
                             "(metrics.json names each test set by its file)", type=path_arg)
    opt("--epochs", "number of epochs", type=int)
    opt("--batch-size", "images per batch", type=int)
    opt("--lr", "initial learning rate", type=float)
    opt("--schedule", "learning-rate decay", choices=tuple(optim.SCHEDULES))
    opt("--lr-step", "decay the learning rate every batch (SGDR) or every epoch (the reference code)",
        choices=LR_STEPS)
    opt("--momentum", "SGD momentum", type=float)
    p.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None,
                   help=f"Nesterov momentum (default: {DEFAULTS.nesterov})")
    opt("--weight-decay", "L2 weight decay", type=float)
    opt("--binary-weight-decay", "--kind bnn: the weight decay of the binary layers' real weights "
                                 "(default: --weight-decay)", type=float)
    opt("--grad-mode", "adder gradients: full precision (Eq. 5, 6) or sign (Eq. 4)", choices=GRAD_MODES)
    opt("--distance", "adder layers' distance: l1 (Eq. 2) or l2 (Eq. 27, Appendix B)", choices=DISTANCES)
    opt("--adder-scaling", "adder learning-rate scaling: adaptive (Eq. 13), fixed factor, or none",
        choices=optim.ADDER_SCALINGS)
    opt("--eta", "eta of the adaptive scaling (Eq. 13)", type=float)
    opt("--adder-factor", "factor of --adder-scaling fixed", type=float)
    opt("--augment", "random crop + flip: auto (on for CIFAR), cifar, none", choices=AUGMENTS)
    opt("--backend", "kernel backend (default: the fastest that runs here)", choices=tuple(backend.BACKENDS))
    opt("--seed", "seed of initialisation, shuffling and augmentation", type=int)
    opt("--output-dir", "where outputs go (default: runs/<model>-<kind>-<dataset>-<time>)", type=path_arg)
    opt("--resume", "continue from an output directory or a checkpoint file; the outputs go to "
                    "that directory unless --output-dir is given", type=path_arg)
    p.add_argument("--overwrite", action="store_true", default=None,
                   help="replace the run in --output-dir if it holds one (refused otherwise)")
    opt("--limit-train", "train on a random subset of this many images", type=int)
    opt("--limit-test", "test on a random subset of this many images", type=int)
    p.add_argument("--keep-checkpoints", action="store_true", default=None,
                   help="also keep checkpoint-epochNNN.npz (and its optimizer file) for every epoch")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bar")


def _add_count_parser(sub):
    p = sub.add_parser("count", help="count multiplications and additions of one forward pass",
                       description="Per-layer multiplications and additions of one forward pass, with and "
                                   "without the first and last layers, as in the paper's Tables 2 and 3, "
                                   "and the latency estimate of Sec. 4.1 (mul 4 cycles, add 2).")
    p.add_argument("--model", default="resnet20", choices=tuple(models.MODELS), help="network (default: resnet20)")
    p.add_argument("--kind", default="adder", choices=models.KINDS, help="adder, cnn or bnn (default: adder)")
    p.add_argument("--distance", default="l1", choices=DISTANCES,
                   help="the adder layers' distance: l1, or l2 with a multiplication per term (default: l1)")
    p.add_argument("--num-classes", type=int, default=10, help="classes, 2 to 100,000 (default: 10)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _add_evaluate_parser(sub):
    p = sub.add_parser("evaluate", help="test accuracy of a trained checkpoint",
                       description="Evaluate a checkpoint's model on a dataset's test split with the "
                                   "preprocessing it was trained with, and print the accuracy.")
    p.add_argument("target", metavar="RUN_DIR_OR_CHECKPOINT", type=path_arg,
                   help="a run's output directory or a checkpoint file")
    p.add_argument("--dataset", default=None, choices=datasets(),
                   help="dataset to test on (default: the one it was trained on; the image shape and "
                        "number of classes must match)")
    p.add_argument("--data-dir", default=None, type=path_arg, help="folder holding the dataset's files")
    p.add_argument("--test-file", default=None, type=path_arg,
                   help="CIFAR: the test batch file, e.g. test_batch_first1000_exact.bin")
    p.add_argument("--limit-test", type=int, default=None, help="test on a random subset of this many images")
    p.add_argument("--backend", default=None, choices=tuple(backend.BACKENDS),
                   help="kernel backend (default: the fastest that runs here)")
    p.add_argument("--batch-size", type=int, default=500, help="images per forward pass (default: 500)")
    p.add_argument("--int8", action="store_true",
                   help="evaluate the run's int8 model (int8.npz beside the checkpoint; made with the "
                        "quantize command's defaults when there is none)")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of a line")


def _add_quantize_parser(sub):
    from .int8 import DEFAULT_CALIBRATION_BATCHES, DEFAULT_METHOD, DEFAULT_PERCENTILE, METHODS
    p = sub.add_parser("quantize", help="post-training int8 quantization of a trained AdderNet",
                       description="Quantize a trained AdderNet's l1 adder layers to 8 bits (one scale per layer "
                                   "for its inputs and filters, calibrated on a few training batches; batch norm "
                                   "folded in) and write int8.npz beside its checkpoint.")
    p.add_argument("target", metavar="RUN_DIR_OR_CHECKPOINT", type=path_arg,
                   help="a run's output directory or a checkpoint file")
    p.add_argument("--calibration-batches", type=int, default=DEFAULT_CALIBRATION_BATCHES,
                   help=f"training batches (of the run's batch size) the scales are calibrated on "
                        f"(default: {DEFAULT_CALIBRATION_BATCHES})")
    p.add_argument("--method", default=DEFAULT_METHOD, choices=METHODS,
                   help=f"each layer's range: the extremes of its inputs, or their {DEFAULT_PERCENTILE}th percentiles "
                        f"(default: {DEFAULT_METHOD})")
    p.add_argument("--bits", type=int, default=8,
                   help="bits per code, 2 to 8 (each code still takes one byte; default: 8)")
    p.add_argument("--data-dir", default=None, type=path_arg, help="folder holding the dataset's files")
    p.add_argument("--backend", default=None, choices=tuple(backend.BACKENDS),
                   help="kernel backend of the float passes and the integer kernel (default: the fastest "
                        "that runs here)")


def _add_download_parser(sub):
    p = sub.add_parser("download", help="download datasets into the cache, checking their checksums")
    p.add_argument("names", nargs="+", choices=downloadable(), metavar="NAME",
                   help=f"datasets: {', '.join(downloadable())}")
    p.add_argument("--root", default=None, type=path_arg,
                   help="target folder (default: $MINADDER_DATA or ~/.cache/minadder)")


def build_parser():
    parser = argparse.ArgumentParser(prog="minadder", description="Train and inspect AdderNets (Chen et al., "
                                     "CVPR 2020) with a small NumPy autograd engine.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,evaluate,quantize,count,download}")
    _add_train_parser(sub)
    _add_evaluate_parser(sub)
    _add_quantize_parser(sub)
    _add_count_parser(sub)
    _add_download_parser(sub)
    return parser


# ============================================================================ commands
def _run_train(args):
    from .memory import keep_freed_memory
    from .train import config_from_checkpoint, train
    from .train.report import network_label

    backend.configure()   # the process-wide kernel settings (threads), before any kernel runs
    keep_freed_memory()   # large temporaries reuse warm pages: 10-20 % per step (memory.py)
    fields = field_names()
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if args.resume:
        given.pop("resume")
        config = config_from_checkpoint(args.resume, **given)
    else:
        config = TrainConfig(**given)
    result = train(config)
    m = result["metrics"]
    epochs = m["epochs"]
    total = sum(r["time_s"] for r in epochs)  # time_s is per epoch, training only
    kind = network_label(config.kind, config.distance)
    if m["test_accuracy"] is not None:
        print(f"final test accuracy: {100 * m['test_accuracy']:.2f} % ({config.model} {kind} on {config.dataset}, "
              f"{len(epochs)} epoch{'s' * (len(epochs) != 1)}, {total:.1f} s training, backend {m['backend']})")
        tests = epochs[-1].get("tests", {}) if epochs else {}
        if list(tests) not in ([], ["test"]):  # chosen test files: each one by name
            for name, result_of in tests.items():
                print(f"  {name}: {100 * result_of['accuracy']:.2f} %")
    else:
        print("no epoch was trained (the checkpoint had already finished all epochs)")
    print(f"outputs: {result['output_dir']}/ (metrics.json, curves.png, checkpoint.npz and its optimizer file)")
    return 0


def _check_range(flag, value, low, high, optional=False):
    """Refuse an integer option outside [low, high], naming its flag (None passes when ``optional``)."""
    if value is None and optional:
        return
    if not low <= value <= high:
        raise ValueError(f"{flag} must be an integer from {low} to {high:,}"
                         f"{' (or left out for all)' if optional else ''}; got {value}")


def _run_evaluate(args):
    from .train import evaluate_checkpoint

    backend.configure()   # the process-wide kernel settings (threads), before any kernel runs
    _check_range("--limit-test", args.limit_test, *INTEGER_RANGES["limit_test"], optional=True)
    _check_range("--batch-size", args.batch_size, 1, INTEGER_RANGES["batch_size"][1])   # (evaluation: 1 works)
    if args.backend:
        backend.set_backend(args.backend)
    result = evaluate_checkpoint(args.target, dataset=args.dataset, data_dir=args.data_dir,
                                 test_file=args.test_file, limit_test=args.limit_test, batch_size=args.batch_size,
                                 int8=args.int8)
    if args.json:
        print(json.dumps(result, indent=1, allow_nan=False))
        return 0
    for note in result["notes"]:
        print(f"note: {note}", file=sys.stderr)
    speed = result["images_per_s"]
    print(f"test accuracy: {100 * result['test_accuracy']:.2f} % on {result['images']} images of "
          f"{result['dataset']} ({result['test_set']}, from {result['source']}); {result['model']} "
          f"{result['network']} after {result['epoch']} epoch{'s' * (result['epoch'] != 1)}, {result['precision']}"
          f"{' (' + result['int8_file'] + ')' if args.int8 else ''} at "
          f"{'?' if speed is None else f'{speed:,.0f}'} images/s, backend {result['backend']}")
    return 0


def _run_quantize(args):
    from .int8 import BITS_RANGE, CALIBRATION_BATCHES_RANGE, quantize_run

    backend.configure()   # the process-wide kernel settings (threads), before any kernel runs
    _check_range("--calibration-batches", args.calibration_batches, *CALIBRATION_BATCHES_RANGE)
    _check_range("--bits", args.bits, *BITS_RANGE)
    if args.backend:
        backend.set_backend(args.backend)
    file, network, notes = quantize_run(args.target, args.calibration_batches, args.method, args.data_dir,
                                        bits=args.bits)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    c = network.calibration
    print(f"int8 model: {file} ({network.architecture.name}: {len(network.adder_names)} adder layers in {network.bits} bits, "
          f"float32 layers: {', '.join(network.float_names) or 'none'}; scales by {c['method']} over "
          f"{c['images']} training images in {c['batches']} batch{'es' * (c['batches'] != 1)})")
    return 0


def _run_count(args):
    from .count import count, format_report

    if args.distance != "l1" and args.kind != "adder":
        raise ValueError(f"--distance {args.distance} applies to --kind adder only, not {args.kind}")
    report = count(args.model, args.kind, num_classes=args.num_classes, distance=args.distance)
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0


def _run_download(args):
    from .data import download

    for name in args.names:
        folder = download(name, args.root)
        print(f"{name}: {folder}")
    return 0


def main(argv=None):
    """Entry point of ``python -m minadder`` and the ``minadder`` script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command = {"train": _run_train, "evaluate": _run_evaluate, "quantize": _run_quantize, "count": _run_count,
               "download": _run_download}[args.command]
    try:
        with StopSignals():  # SIGTERM, SIGHUP, SIGUSR1 end a command as Ctrl-C does, cleaning up
            return command(args)
    except (TrainingInterrupted, Stopped) as exc:
        print(f"minadder {args.command}: {exc}", file=sys.stderr)
        return exit_status(exc.signum)
    except KeyboardInterrupt:
        print(f"minadder {args.command}: interrupted", file=sys.stderr)
        return 130
    except TrainingDiverged as exc:
        print(f"minadder {args.command}: {exc}", file=sys.stderr)
        return 1
    except (ValueError, OSError, FolderInUse) as exc:  # bad options, missing or corrupt data, failed downloads
        print(f"minadder {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
