"""The command line takes its choices from the registries, and the notebooks' training
loop (analysis.train_steps, analysis.evaluate) runs the trainer's own step and evaluation."""
import numpy as np
import pytest

import minadder as ma
from minadder import analysis as A
from minadder import backend, models, optim
from minadder import train as T
from minadder.__main__ import build_parser
from minadder.data import DataLoader, registry, synthetic_digits
from minadder.kernels.contract import GRAD_MODES


def choices(command, flag):
    """The choices of ``flag`` in the subcommand ``command`` of a freshly built parser."""
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    return tuple(next(a for a in sub._actions if flag in a.option_strings).choices)


def test_choices_are_the_registries():
    assert choices("train", "--model") == tuple(models.MODELS) == choices("count", "--model")
    assert choices("train", "--kind") == models.KINDS
    assert choices("train", "--dataset") == registry.DATASET_NAMES == choices("evaluate", "--dataset")
    assert choices("train", "--backend") == tuple(backend.BACKENDS) == choices("evaluate", "--backend")
    assert choices("train", "--grad-mode") == GRAD_MODES
    assert choices("train", "--schedule") == tuple(optim.SCHEDULES)
    assert choices("train", "--adder-scaling") == optim.ADDER_SCALINGS


def test_the_grad_mode_is_checked_by_the_kernel_contract(monkeypatch):
    from minadder.kernels import contract
    seen = []
    monkeypatch.setattr(T.config, "check_grad_mode", lambda mode, op: seen.append((mode, op)) or mode)
    T.TrainConfig(grad_mode="full").validate()
    assert seen == [("full", "--grad-mode")]
    with pytest.raises(ValueError, match=r"--grad-mode: grad_mode must be one of \('full', 'sign'\)"):
        contract.check_grad_mode("exact", "--grad-mode")
    monkeypatch.undo()
    with pytest.raises(ValueError, match="--grad-mode"):
        T.TrainConfig(grad_mode="exact").validate()


def test_a_new_registry_entry_appears_on_the_command_line(monkeypatch):
    monkeypatch.setitem(backend.BACKENDS, "tpu", "minadder.kernels.tpu")
    monkeypatch.setitem(models.MODELS, "tiny_net", models.lenet5_bn)
    monkeypatch.setitem(optim.SCHEDULES, "step", optim.CosineLR)
    monkeypatch.setattr(registry, "DATASET_NAMES", registry.DATASET_NAMES + ("svhn",))
    assert "tpu" in choices("train", "--backend") and "tiny_net" in choices("train", "--model")
    assert "step" in choices("train", "--schedule") and "svhn" in choices("evaluate", "--dataset")


def test_notebook_training_runs_the_trainers_step_and_schedule(monkeypatch):
    train, test = synthetic_digits(n_train=64, n_test=32, cache=False)
    calls, lrs = [], []
    real_step = T.train_step

    def step(model, optimizer, x, y, **kw):
        calls.append(len(y))
        lrs.append(optimizer.lr)
        return real_step(model, optimizer, x, y, **kw)

    monkeypatch.setattr(T, "train_step", step)
    with ma.use_backend("numpy"):
        ma.manual_seed(0)
        net = models.lenet5_bn("cnn")
        opt = optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        curves = A.train_steps(net, opt, DataLoader(train, 16, seed=0, pad_to=32), 4,
                               test=A.dataset_arrays(test, 32))
        assert calls == [16] * 4
        np.testing.assert_allclose(lrs, [optim.cosine_lr(0.1, s, 4) for s in range(4)])
        x, y = A.dataset_arrays(test, 32)
        assert A.evaluate(net, x, y, batch_size=8) == pytest.approx(T.evaluate(net, [(x, y)]))
    assert len(curves["loss"]) == 4 and opt.lr == 0.1
