"""The training loop and `python -m minadder train`: outputs, exact resume, Ctrl-C."""
import hashlib
import json

import numpy as np
import pytest

import minadder
from minadder import train as T
from minadder.__main__ import main


pytestmark = pytest.mark.usefixtures("private_data_folder")   # the digits in this module's own folder


@pytest.fixture(autouse=True)
def keep_backend():
    with minadder.use_backend(minadder.get_backend()):
        yield


def tiny(tmp_path, name="run", **kw):
    """Three batches of 16 digits per epoch, 32 test digits, the reference backend."""
    options = dict(epochs=2, batch_size=16, limit_train=48, limit_test=32, backend="numpy",
                   output_dir=str(tmp_path / name), progress=False)
    options.update(kw)
    return T.TrainConfig(**options)


def quiet(_text):
    pass


def states_equal(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_tiny_run_writes_metrics_curves_and_checkpoint(tmp_path):
    result = T.train(tiny(tmp_path), log=quiet)
    out = tmp_path / "run"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["model"] == "lenet5_bn" and metrics["config"]["kind"] == "adder"
    assert [r["epoch"] for r in metrics["epochs"]] == [1, 2]
    first = metrics["epochs"][0]
    assert first["lr"] == 0.1 and metrics["epochs"][1]["lr"] == pytest.approx(0.05)  # cosine, T = 2
    for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "time_s", "images_per_s"):
        assert np.isfinite(first[key])
    from minadder.kernels.target import cpu_model
    assert first["cpu"] == cpu_model()            # the machine each epoch ran on (a run may resume elsewhere)
    assert metrics["test_accuracy"] == metrics["epochs"][-1]["test_accuracy"] and metrics["completed"]
    assert len(metrics["steps"]["loss"]) == 6 and metrics["dataset"]["train_images"] == 48
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with np.load(out / "checkpoint.npz", allow_pickle=False) as ckpt:
        assert int(ckpt["state.epoch"]) == 2 and int(ckpt["state.step"]) == 0
        assert not any(k.startswith("optim.") for k in ckpt.files)  # the momentum lives beside it
        state = {k[len("model."):]: ckpt[k] for k in ckpt.files if k.startswith("model.")}
        recorded = ckpt["meta.optimizer_sha256"].tobytes().decode()
    assert states_equal(state, result["model"].state_dict())
    side = out / f"checkpoint.optim-{recorded[:16]}.npz"  # named after its contents
    assert T.optimizer_file(out / "checkpoint.npz") == side and T.optimizer_files(out / "checkpoint.npz") == [side]
    assert recorded == hashlib.sha256(side.read_bytes()).hexdigest()
    with np.load(side, allow_pickle=False) as ckpt:
        assert any(k.startswith("optim.velocity.") for k in ckpt.files) and float(ckpt["optim.lr"]) > 0
        assert all(k.startswith("optim.") for k in ckpt.files)
    assert not list(out.glob(".*tmp*"))  # no temporary files left behind


def test_step_log_is_rounded_and_one_line_per_list(tmp_path):
    """A 100-epoch CIFAR-10 run logs 39,100 batches: the log keeps 5 significant digits and
    writes each list on one line, so the record stays a few MB and indented everywhere else."""
    T.train(tiny(tmp_path), log=quiet)
    text = (tmp_path / "run" / "metrics.json").read_text()
    steps = json.loads(text)["steps"]
    assert steps["epoch"] == pytest.approx([1 / 3, 2 / 3, 1, 4 / 3, 5 / 3, 2]) and len(steps["loss"]) == 6
    for value in steps["loss"] + steps["accuracy"]:
        assert value == float(f"{value:.5g}")
    assert any(value != float(f"{value:.4g}") for value in steps["loss"])   # rounded, not truncated further
    lines = {line.split(":")[0].strip(): line for line in text.splitlines()}
    for name in ("epoch", "loss", "accuracy"):
        line = lines[f'"{name}"']
        assert line[line.index("["):line.index("]")].count(",") == 5     # the whole list on the key's line
    assert '\n "config": {\n' in text                     # the rest keeps its indentation


@pytest.mark.parametrize("stop_at", [(0, 2), (1, 3)], ids=["mid-epoch", "before-evaluation"])
def test_resume_after_interruption_is_bit_exact(tmp_path, stop_at):
    full = T.train(tiny(tmp_path, "full", epochs=3), log=quiet)

    def interrupt(epoch, step):
        if (epoch, step) == stop_at:
            raise KeyboardInterrupt

    with pytest.raises(T.TrainingInterrupted) as info:
        T.train(tiny(tmp_path, "cut", epochs=3), callback=interrupt, log=quiet)
    saved = info.value.checkpoint
    assert saved == tmp_path / "cut" / "checkpoint.npz"
    with np.load(saved, allow_pickle=False) as ckpt:
        assert (int(ckpt["state.epoch"]), int(ckpt["state.step"])) == stop_at

    resumed = T.train(T.config_from_checkpoint(tmp_path / "cut", progress=False), log=quiet)
    assert states_equal(full["model"].state_dict(), resumed["model"].state_dict())
    a, b = (T.read_checkpoint(tmp_path / d / "checkpoint.npz") for d in ("full", "cut"))
    assert states_equal(a[1], b[1])  # momentum buffers and lr
    strip = [{k: v for k, v in r.items() if k not in ("time_s", "images_per_s")} for r in a[4]["epochs"]]
    assert strip == [{k: v for k, v in r.items() if k not in ("time_s", "images_per_s")} for r in b[4]["epochs"]]
    assert a[4]["steps"]["loss"] == b[4]["steps"]["loss"]


def _as_one_file(path, version):
    """Rewrite a checkpoint pair as formats 1 and 2 wrote it: one file holding the optimizer
    state too; format 2 compressed with the JSON as UTF-8 bytes, format 1 stored with the
    JSON as NumPy unicode."""
    side = T.optimizer_file(path)
    arrays = {**minadder.nn.load(path), **minadder.nn.load(side)}
    del arrays["meta.optimizer_sha256"], arrays["meta.optimizer_file"]
    side.unlink()
    arrays["meta.format_version"] = np.asarray(version)
    if version == 2:
        return minadder.nn.save(arrays, path, compress=True)
    for key in [k for k in arrays if k.startswith("meta.") and k != "meta.format_version"]:
        arrays[key] = np.asarray(arrays[key].tobytes().decode("utf-8"))
    np.savez(path, **arrays)


def test_checkpoint_json_is_utf8_bytes_in_a_compressed_archive(tmp_path):
    import zipfile
    T.train(tiny(tmp_path, epochs=1), log=quiet)
    path = tmp_path / "run" / "checkpoint.npz"
    with np.load(path, allow_pickle=False) as ckpt:
        metrics = ckpt["meta.metrics"]
        assert metrics.dtype == np.uint8 and int(ckpt["meta.format_version"]) == 4
        text = metrics.tobytes().decode("utf-8")
        assert json.loads(text)["epochs"][0]["epoch"] == 1
    with zipfile.ZipFile(path) as z:
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_DEFLATED}
        assert z.getinfo("meta.metrics.npy").compress_size < len(text)  # under a byte a character
    _as_one_file(path, 1)  # what format 1 spent on the same JSON: 4 bytes a character, stored
    with zipfile.ZipFile(path) as z:
        assert z.getinfo("meta.metrics.npy").compress_size > 4 * len(text)


@pytest.mark.parametrize("version", [1, 2])
def test_a_one_file_checkpoint_of_format_1_or_2_resumes_bit_exactly(tmp_path, version):
    full = T.train(tiny(tmp_path, "full", epochs=2), log=quiet)

    def interrupt(epoch, step):
        if (epoch, step) == (0, 2):
            raise KeyboardInterrupt

    with pytest.raises(T.TrainingInterrupted) as info:
        T.train(tiny(tmp_path, "cut", epochs=2), callback=interrupt, log=quiet)
    _as_one_file(info.value.checkpoint, version)
    old = T.read_checkpoint(info.value.checkpoint)
    assert old.progress.step == 2 and old.config["epochs"] == 2 and "steps" in old.metrics
    assert "lr" in old.optim and not T.optimizer_files(info.value.checkpoint)
    resumed = T.train(T.config_from_checkpoint(tmp_path / "cut", progress=False), log=quiet)
    assert states_equal(full["model"].state_dict(), resumed["model"].state_dict())
    with np.load(tmp_path / "cut" / "checkpoint.npz", allow_pickle=False) as ckpt:
        assert int(ckpt["meta.format_version"]) == 4  # rewritten in the new format, as a pair
    assert T.read_checkpoint(tmp_path / "cut" / "checkpoint.npz").optim.keys() == old.optim.keys()


def test_a_checkpoint_of_an_unknown_format_is_refused(tmp_path):
    T.train(tiny(tmp_path, epochs=1), log=quiet)
    path = tmp_path / "run" / "checkpoint.npz"
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["meta.format_version"] = np.asarray(5)
    np.savez(path, **arrays)
    with pytest.raises(T.CheckpointError, match="format 1, 2, 3 or 4"):
        T.read_checkpoint(path)


def test_the_model_file_alone_is_enough_to_read_the_model_not_to_resume(tmp_path):
    T.train(tiny(tmp_path, epochs=1), log=quiet)
    path = tmp_path / "run" / "checkpoint.npz"
    full = T.read_checkpoint(path)
    T.optimizer_file(path).unlink()
    alone = T.read_checkpoint(path, optimizer=False)
    assert alone.optim == {} and states_equal(alone.model, full.model) and alone.progress == full.progress
    with pytest.raises(T.CheckpointError, match=r"checkpoint\.optim-[0-9a-f]{16}\.npz is missing"):
        T.read_checkpoint(path)


def test_keep_checkpoints_keeps_a_pair_per_epoch_and_an_older_pair_resumes(tmp_path):
    full = T.train(tiny(tmp_path, "full", keep_checkpoints=True), log=quiet)
    out = tmp_path / "full"
    kept = sorted(p.name for p in out.glob("checkpoint-epoch*"))
    assert [name[:24] for name in kept] == ["checkpoint-epoch001.npz", "checkpoint-epoch001.opti",
                                            "checkpoint-epoch002.npz", "checkpoint-epoch002.opti"]
    assert T.optimizer_file(out / "checkpoint-epoch001.npz").name == kept[1]
    first = T.read_checkpoint(out / "checkpoint-epoch001.npz")
    assert first.progress.epoch == 1 and len(first.metrics["epochs"]) == 1 and "lr" in first.optim
    again = T.train(T.config_from_checkpoint(out / "checkpoint-epoch001.npz", progress=False,
                                             output_dir=str(tmp_path / "again")), log=quiet)
    assert states_equal(full["model"].state_dict(), again["model"].state_dict())


def test_an_optimizer_file_from_another_save_is_refused(tmp_path):
    """What a save cut between its two renames would leave: the new optimizer file beside
    the old checkpoint."""
    T.train(tiny(tmp_path, "a", epochs=1), log=quiet)
    T.train(tiny(tmp_path, "b", epochs=1, seed=1), log=quiet)
    path = tmp_path / "a" / "checkpoint.npz"
    T.optimizer_file(path).write_bytes(T.optimizer_file(tmp_path / "b" / "checkpoint.npz").read_bytes())
    with pytest.raises(T.CheckpointError, match="does not belong to checkpoint.npz"):
        T.read_checkpoint(path)
    with pytest.raises(T.CheckpointError, match="the optimizer state of a checkpoint, not a checkpoint"):
        T.read_checkpoint(T.optimizer_file(path))


def test_interrupt_inside_a_step_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    config = tiny(tmp_path, epochs=2)
    calls = []
    real_step = minadder.optim.SGD.step

    def step(self):
        calls.append(1)
        if len(calls) == 5:  # second batch of epoch 2, while the weights are being updated
            raise KeyboardInterrupt
        real_step(self)

    monkeypatch.setattr(minadder.optim.SGD, "step", step)
    with pytest.raises(T.TrainingInterrupted, match="inside a training step") as info:
        T.train(config, log=quiet)
    assert info.value.checkpoint == tmp_path / "run" / "checkpoint.npz"
    with np.load(info.value.checkpoint, allow_pickle=False) as ckpt:
        assert (int(ckpt["state.epoch"]), int(ckpt["state.step"])) == (1, 0)  # the end of epoch 1


def test_same_seed_same_result_other_seed_other_result(tmp_path):
    a = T.train(tiny(tmp_path, "a", epochs=1), log=quiet)["model"].state_dict()
    b = T.train(tiny(tmp_path, "b", epochs=1), log=quiet)["model"].state_dict()
    c = T.train(tiny(tmp_path, "c", epochs=1, seed=1), log=quiet)["model"].state_dict()
    assert states_equal(a, b) and not states_equal(a, c)


@pytest.mark.skipif("cpu" not in minadder.available_backends(), reason="the Numba cpu backend is not available")
def test_cpu_backend_is_repeatable(tmp_path):
    a = T.train(tiny(tmp_path, "a", epochs=1, backend="cpu"), log=quiet)["model"].state_dict()
    b = T.train(tiny(tmp_path, "b", epochs=1, backend="cpu"), log=quiet)["model"].state_dict()
    assert states_equal(a, b)


def test_cli_train_resume_and_errors(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["train", "--epochs", "1", "--batch-size", "16", "--limit-train", "32", "--limit-test", "16",
            "--backend", "numpy", "--kind", "cnn", "--no-nesterov", "--output-dir", str(out), "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "final test accuracy:" in printed and "lenet5_bn CNN" in printed
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert config["kind"] == "cnn" and config["nesterov"] is False and config["momentum"] == 0.9
    # resuming a finished run trains nothing more; changing what it computes is refused
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert main(["train", "--resume", str(out), "--lr", "0.5"]) == 2
    assert "lr cannot change" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nowhere")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["train", "--epochs", "0"]) == 2
    assert "--epochs must be an integer from 1 to 1,000,000; got 0" in capsys.readouterr().err


def test_cli_ctrl_c_saves_and_says_how_to_resume(tmp_path, capsys, monkeypatch):
    def evaluate(*args):
        raise KeyboardInterrupt  # Ctrl-C while the test set is being evaluated

    monkeypatch.setattr(T.loop, "evaluate", evaluate)  # the loop's own name for it
    out = tmp_path / "cli"
    code = main(["train", "--epochs", "2", "--batch-size", "16", "--limit-train", "32", "--limit-test", "16",
                 "--backend", "numpy", "--output-dir", str(out), "--no-progress"])
    assert code == 130
    err = capsys.readouterr().err
    assert "--resume" in err and (out / "checkpoint.npz").exists()
    with np.load(out / "checkpoint.npz", allow_pickle=False) as ckpt:
        assert (int(ckpt["state.epoch"]), int(ckpt["state.step"])) == (0, 2)


@pytest.mark.parametrize("kw, match", [({"epochs": 0}, "epochs"), ({"model": "alexnet"}, "model must be"),
                                       ({"lr": -1.0}, "lr must be"), ({"limit_train": 1}, "--limit-train"),
                                       ({"momentum": 0.0}, "--nesterov needs --momentum")])
def test_config_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        T.TrainConfig(**kw).validate()


def test_a_saved_config_is_rebuilt_ignoring_fields_no_longer_known():
    saved = {**T.TrainConfig(epochs=5, kind="cnn").__dict__, "a_field_of_an_older_version": 1}
    assert T.config_from_dict(saved) == T.TrainConfig(epochs=5, kind="cnn")
    assert T.config_from_dict({"lr": 0.5}) == T.TrainConfig(lr=0.5)  # missing fields take the default


def test_28x28_images_are_padded_to_32_as_in_the_paper_and_others_are_not():
    assert T.padding_for((1, 28, 28)) == 32
    assert T.padding_for((3, 32, 32)) is None and T.padding_for((1, 16, 16)) is None


def test_learning_rate_decays_per_batch_or_per_epoch():
    import math
    config = T.TrainConfig(epochs=2)
    assert T.learning_rate(config, 0, 0, 10) == 0.1
    assert T.learning_rate(config, 1, 0, 10) == pytest.approx(0.05)
    assert T.learning_rate(config, 0, 5, 10) == pytest.approx(0.05 * (1 + math.cos(math.pi / 4)))
    config.lr_step = "epoch"  # the reference code's schedule: constant within an epoch
    assert T.learning_rate(config, 0, 5, 10) == 0.1
    poly = T.TrainConfig(epochs=4, schedule="poly")
    assert T.learning_rate(poly, 1, 0, 10) == pytest.approx(0.075)
    assert T.learning_rate(poly, 3, 5, 10) == pytest.approx(0.1 * 0.125)
