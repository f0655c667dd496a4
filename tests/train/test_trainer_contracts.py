"""What the trainer promises whatever the settings: layered settings that drop nothing, NaNs caught with the
monitor off, short runs diagnosed, cleanup however training ends, a run folder for one writer at a time."""
import json
import os
import stat
import subprocess
import sys

import pytest
import yaml

from cnnlab import CnnlabError
from cnnlab.cli import build_parser, main, train_config
from cnnlab.errors import TrainingStopped
from cnnlab.train import TrainConfig, train
from cnnlab.train.run_folder import RunFolder
from cnnlab.train.sinks import ProgressBar

FAST = dict(model="resnet20", model_kwargs={"width": 0.5}, image_size=16, epochs=1, batch_size=64, quiet=True,
            report=False)  # reports: tests/report/


def cli_config(argv):
    return train_config(build_parser(train_options=True).parse_args(["train", *argv]))


# ---- settings in layers: recipe, model config, --config file, options ------------------------------------
def test_a_config_file_keeps_the_recipe_it_does_not_mention(tmp_path):
    (tmp_path / "run.yaml").write_text("epochs: 1\n")
    cfg = cli_config(["--config", str(tmp_path / "run.yaml"), "--recipe", "cifar10-fast", "--variant", "sgd",
                      "--data", "digits"])
    assert (cfg.model, cfg.batch_size, cfg.lr, cfg.lookahead, cfg.tta, cfg.epochs) == \
        ("airbench94", 512, 0.75, True, 2, 1)


def test_layers_merge_in_the_documented_order(tmp_path):
    (tmp_path / "model.yaml").write_text("model: plain20\nmodel_kwargs: {width: 0.5}\nlr: 0.3\nbatch_size: 32\n")
    (tmp_path / "run.yaml").write_text("lr: 0.2\nepochs: 3\n")
    cfg = cli_config(["--recipe", "cifar10-fast", "--model-config", str(tmp_path / "model.yaml"),
                      "--config", str(tmp_path / "run.yaml"), "--epochs", "2"])
    # the model config over the recipe, the file over the model config, the options over the file
    assert (cfg.model, cfg.model_kwargs, cfg.batch_size, cfg.lr, cfg.epochs, cfg.label_smoothing) == \
        ("plain20", {"width": 0.5}, 32, 0.2, 2, 0.2)


def test_config_yaml_records_what_trained(tmp_path):
    (tmp_path / "run.yaml").write_text("epochs: 1\nimage_size: 16\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "run.yaml"), "--recipe", "cifar10-fast", "--variant", "sgd",
                 "--data", "digits", "--batch-size", "256", "-q", "--out", str(out)]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["model"], saved["batch_size"], saved["lookahead"], saved["tta"]) == ("airbench94", 256, True, 2)
    assert json.loads((out / "summary.json").read_text())["model"] == "airbench94"


# ---- non-finite values are the trainer's to catch, whatever the monitor does --------------------------------
def test_nan_is_caught_with_the_monitor_off(tmp_path):
    with pytest.raises(TrainingStopped, match="nonfinite"):
        train(TrainConfig(**{**FAST, "epochs": 2, "lr": 1000.0, "monitor_every": 0, "out": str(tmp_path / "r")}))
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["diagnoses"][0]["kind"] == "nonfinite"


def test_nan_with_the_monitor_off_exits_2_in_one_line(tmp_path, capsys):
    code = main(["train", "--model", "resnet20", "--lr", "1000", "--monitor-every", "0", "--epochs", "2",
                 "--image-size", "16", "-q", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("cnnlab: error: training stopped at step")


# ---- the gradient doctor judges short runs -------------------------------------------------------------------
def test_overwhelming_vanishing_is_diagnosed_within_ten_steps_of_a_short_run(tmp_path, capsys):
    out = tmp_path / "sig"
    train(TrainConfig(model="plain20", model_kwargs={"bn": False, "activation": "sigmoid"}, data="digits",
                      epochs=2, seed=1, quiet=True, out=str(out), precision="fp32"))
    assert main(["diagnose", str(out), "--json"]) == 0
    diagnoses = json.loads(capsys.readouterr().out)["diagnoses"]
    assert [d["kind"] for d in diagnoses] == ["vanishing"] and diagnoses[0]["step"] <= 10


def test_a_run_shorter_than_a_rule_window_is_judged_at_its_end(tmp_path):
    # 3 steps: fewer samples than the rules' window of 5
    s = train(TrainConfig(model="plain20", model_kwargs={"bn": False, "activation": "sigmoid", "width": 0.5},
                          image_size=16, epochs=1, batch_size=400, quiet=True, out=str(tmp_path / "r"),
                          precision="fp32"))
    assert s["steps"] == 3
    assert [d["kind"] for d in s["diagnoses"]] == ["vanishing"] and "3 samples" in s["diagnoses"][0]["evidence"]


# ---- cleanup however training ends ----------------------------------------------------------------------------
@pytest.mark.parametrize("ending", ["callback", "nonfinite"])
def test_sinks_monitor_lock_and_process_group_are_closed_however_training_ends(tmp_path, monkeypatch, ending):
    import cnnlab.diagnose.monitor as monitor_module
    import cnnlab.runtime.distributed as distributed

    closed = []
    real_close = monitor_module.GradientMonitor.close
    monkeypatch.setattr(monitor_module.GradientMonitor, "close", lambda self: (closed.append("monitor"),
                                                                               real_close(self)))
    monkeypatch.setattr(distributed, "stop", lambda ranks, barrier=True: closed.append("process group"))

    def fail(record):
        raise RuntimeError("pruned")

    cfg = TrainConfig(**{**FAST, "out": str(tmp_path / "r")})
    with pytest.raises((RuntimeError, TrainingStopped)):
        if ending == "callback":
            train(cfg, on_epoch=fail)
        else:
            train(TrainConfig(**{**FAST, "lr": 1000.0, "epochs": 3, "out": str(tmp_path / "r")}))
    assert closed == ["monitor", "process group"]
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert lines and all(json.loads(x) for x in lines)  # flushed and closed: every line whole
    RunFolder(tmp_path / "r").claim()  # the lock was released


# ---- one writer per run folder --------------------------------------------------------------------------------
def test_a_second_training_on_a_folder_in_use_is_refused(tmp_path):
    holder = RunFolder(tmp_path / "r")
    holder.claim()
    with pytest.raises(CnnlabError, match="another training .* is writing this folder"):
        train(TrainConfig(**{**FAST, "out": str(tmp_path / "r")}))
    holder.release()
    train(TrainConfig(**{**FAST, "out": str(tmp_path / "r")}))


def test_the_lock_of_a_killed_training_is_taken_over(tmp_path):
    folder = tmp_path / "r"
    code = f"from cnnlab.train.run_folder import RunFolder; RunFolder({str(folder)!r}).claim(); import os; os._exit(9)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    assert (folder / ".lock").exists()
    train(TrainConfig(**{**FAST, "out": str(folder)}))


# ---- checkpoints ----------------------------------------------------------------------------------------------
def test_every_step_can_be_checkpointed_and_one_batch_epochs_too(tmp_path):
    # step 1's monitor state holds one tensor under two names, which safetensors refuses unless copied
    s = train(TrainConfig(**{**FAST, "checkpoint_every": 1, "out": str(tmp_path / "a")}))
    assert s["steps"] > 1
    s = train(TrainConfig(**{**FAST, "batch_size": 4096, "epochs": 2, "out": str(tmp_path / "b")}))
    assert s["steps"] == 2


def test_weights_files_get_the_mode_of_the_other_files(tmp_path):
    train(TrainConfig(**{**FAST, "out": str(tmp_path / "r")}))
    mode = lambda name: stat.S_IMODE(os.stat(tmp_path / "r" / name).st_mode)  # noqa: E731
    assert mode("best.safetensors") == mode("last.safetensors") == mode("config.yaml") == mode("summary.json")


def test_resume_alone_continues_a_moved_run_and_more_epochs_extend_it(tmp_path):
    first = tmp_path / "first"
    assert main(["train", "--model", "resnet20", "--model-kwargs", "width=0.5", "--image-size", "16", "--epochs",
                 "1", "-q", "--out", str(first)]) == 0
    moved = tmp_path / "moved"
    first.rename(moved)
    assert main(["train", "--resume", "--out", str(moved), "--epochs", "2", "-q"]) == 0
    summary = json.loads((moved / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["model_kwargs"] == {"width": 0.5}
    epochs = [json.loads(x)["epoch"] for x in (moved / "metrics.jsonl").read_text().splitlines()
              if json.loads(x)["type"] == "epoch"]
    assert epochs == [1, 2]


def test_progress_bar_never_passes_its_total():
    bar = ProgressBar(total_steps=6, images_per_step=64, desc="t", epochs=2, quiet=False)
    for record in ({"type": "epoch", "epoch": 1, "step": 3, "train_loss": 1.0},
                   {"type": "step", "epoch": 2, "step": 4, "loss": 1.0},
                   {"type": "epoch", "epoch": 2, "step": 6, "train_loss": 1.0}):
        bar.log(record)
        assert bar.bar.n <= 6 * 64
    assert bar.bar.n == 6 * 64
    bar.close()


# ---- TensorBoard ----------------------------------------------------------------------------------------------
def test_tensorboard_event_files_hold_the_logged_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    s = train(TrainConfig(**{**FAST, "epochs": 2, "tensorboard": True, "out": str(tmp_path / "r")}))
    events = EventAccumulator(str(tmp_path / "r" / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "train/lr", "epoch/val_accuracy", "grad_norm/conv1"} <= set(tags)
    val = [e.value for e in events.Scalars("epoch/val_accuracy")]
    logged = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert val == pytest.approx([r["val_accuracy"] for r in logged if r["type"] == "epoch"])
    assert len(events.Scalars("train/loss")) == s["steps"] // 10


def test_bf16_on_a_cpu_without_native_bf16_warns_that_it_is_emulated(tmp_path, monkeypatch, capsys):
    import cnnlab.train.setup as setup

    monkeypatch.setattr(setup, "cpu_has_native_bf16", lambda: False)
    train(TrainConfig(**{**FAST, "precision": "bf16", "device": "cpu", "out": str(tmp_path / "r")}))
    assert capsys.readouterr().err.count("bf16 is emulated here and far slower than fp32") == 1


def test_a_kill_while_a_second_checkpoint_of_the_same_step_is_written_keeps_the_first(tmp_path, monkeypatch):
    import torch

    import cnnlab.train.checkpoint as checkpoint

    model = torch.nn.Linear(3, 2)
    checkpoint.save_checkpoint(tmp_path, 5, model, {"step": 5, "epoch": 0})
    real = checkpoint.atomic_write_text

    def killed_before_latest(path, text):
        if path.name == "latest":
            raise KeyboardInterrupt  # the process dies before `latest` names the new folder
        real(path, text)

    monkeypatch.setattr(checkpoint, "atomic_write_text", killed_before_latest)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint(tmp_path, 5, model, {"step": 5, "epoch": 1})
    monkeypatch.setattr(checkpoint, "atomic_write_text", real)
    assert checkpoint.load_checkpoint(tmp_path, model)["epoch"] == 0
    checkpoint.save_checkpoint(tmp_path, 5, model, {"step": 5, "epoch": 1})  # the next write cleans up
    assert checkpoint.load_checkpoint(tmp_path, model)["epoch"] == 1
    assert len(list((tmp_path / "checkpoints").glob("step-*"))) == 1


def test_a_stray_checkpoint_folder_with_a_non_ascii_digit_is_left_out_of_the_serial(tmp_path):
    import torch

    from cnnlab.train.checkpoint import save_checkpoint

    (tmp_path / "checkpoints" / "step-000000001-²").mkdir(parents=True)  # '²'.isdigit(), yet int('²') fails
    folder = save_checkpoint(tmp_path, 2, torch.nn.Linear(2, 2), {"step": 2})
    assert folder.name == "step-000000002-1"
