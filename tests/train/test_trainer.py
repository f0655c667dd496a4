"""The training loop on real data (digits): outputs, determinism, exact resume after a kill, options."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cnnlab import CnnlabError
from cnnlab.train import TrainConfig, train
from cnnlab.train.optim import lr_factor, param_groups

FAST = dict(model="resnet20", model_kwargs={"width": 0.5}, image_size=16, epochs=2, batch_size=64, quiet=True,
            report=False)  # reports: tests/report/


def run(tmp_path, name="run", **overrides):
    cfg = TrainConfig(**{**FAST, "out": str(tmp_path / name), **overrides})
    return train(cfg), tmp_path / name


def weights(folder, which="last"):
    return load_file(str(folder / f"{which}.safetensors"))


def test_run_folder_holds_config_metrics_summary_and_weights(tmp_path):
    s, out = run(tmp_path)
    for key in ("model", "dataset", "params", "macs", "epochs", "seed", "train_seconds", "images_per_second",
                "best_val_accuracy", "test_accuracy"):
        assert key in json.loads((out / "summary.json").read_text())
    assert s["dataset"] == "digits" and s["image_size"] == "8x8 resized to 16x16" and 0 <= s["test_accuracy"] <= 1
    assert s["train_eval_accuracy"] is None  # only with --eval-train
    assert s["params"] == sum(v.numel() for k, v in weights(out).items() if "running" not in k and "num_batches" not in k)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [x for x in lines if x["type"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2] and sum(x["type"] == "step" for x in lines) == 40 // 10
    assert epochs[1]["train_loss"] < epochs[0]["train_loss"]
    assert (out / "config.yaml").exists() and (out / "best.safetensors").exists()


def test_same_seed_gives_bit_identical_weights(tmp_path):
    _, a = run(tmp_path, "a")
    _, b = run(tmp_path, "b")
    _, c = run(tmp_path, "c", seed=1)
    wa, wb, wc = weights(a), weights(b), weights(c)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
    args = ["--model", "resnet20", "--model-kwargs", "width=0.5", "--image-size", "16", "--epochs", "3",
            "--batch-size", "64", "--checkpoint-every", "7", "-q", "--no-report"]  # reports: tests/report/
    cmd = [sys.executable, "-m", "cnnlab", "train", *args]
    subprocess.run(cmd + ["--out", str(tmp_path / "whole")], check=True, timeout=300)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--out", str(killed)])
    latest = killed / "checkpoints" / "latest"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:  # kill once a mid-epoch checkpoint exists
        if latest.exists() and int(latest.read_text().split("-")[1]) >= 28:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "summary.json").exists()
    subprocess.run(cmd + ["--out", str(killed), "--resume"], check=True, timeout=300)
    a, b = weights(tmp_path / "whole"), weights(killed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda p: [{k: v for k, v in json.loads(x).items() if k != "train_seconds"}  # noqa: E731
                       for x in (p / "metrics.jsonl").read_text().splitlines()]
    assert strip(tmp_path / "whole") == strip(killed)


def test_resume_refuses_changed_settings_and_reuse_of_a_run_folder(tmp_path):
    run(tmp_path, epochs=1)
    with pytest.raises(CnnlabError, match="already holds a run"):
        run(tmp_path, epochs=1)
    with pytest.raises(CnnlabError, match="'lr' was 0.1 .* now 0.2"):
        train(TrainConfig(**{**FAST, "epochs": 1, "out": str(tmp_path / "run"), "lr": 0.2}), resume=True)


def test_early_stopping(tmp_path):
    # lr 0 and no BN statistics: the weights never change, so nothing improves after epoch 1
    s, _ = run(tmp_path, epochs=6, lr=0.0, early_stop=2, model_kwargs={"width": 0.5, "bn": False})
    assert s["epochs"] == 3 and s["best_epoch"] == 1


def test_adamw_cosine_label_smoothing_and_clipping_train(tmp_path):
    s, out = run(tmp_path, optimizer="adamw", lr=3e-3, schedule="cosine", label_smoothing=0.1, grad_clip=1.0,
                 epochs=3, val_fraction=0.0)
    assert s["val_images"] == 0 and s["test_accuracy"] > 0.5


def test_schedules():
    cfg = TrainConfig(epochs=10, warmup_epochs=1, schedule="onecycle")
    f = [lr_factor(cfg, s, 10) for s in range(100)]
    assert f[0] < f[5] < f[9] < f[10] == 1.0 and f[-1] < 0.02 and all(a > b for a, b in zip(f[10:], f[11:]))
    cfg.schedule = "cosine"
    assert lr_factor(cfg, 10, 10) == 1.0 and abs(lr_factor(cfg, 55, 10) - 0.5) < 0.01
    cfg.schedule, cfg.step_size, cfg.gamma = "step", 3, 0.1
    assert [round(lr_factor(cfg, s, 10), 6) for s in (0, 29, 30, 60)] == [1.0, 1.0, 0.1, 0.01]
    # a warm-up longer than the run (even 1e308 epochs) rises over the whole run, to the peak at its last step
    cfg.schedule, cfg.warmup_epochs = "onecycle", 1e308
    f = [lr_factor(cfg, s, 10) for s in range(100)]
    assert all(0 < a < b <= 1 for a, b in zip(f, f[1:])) and f[-1] == 1.0


def test_bn_and_bias_exempt_from_weight_decay():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    decay, no_decay = param_groups(model, TrainConfig(weight_decay=5e-4))
    assert [p.shape for p in decay["params"]] == [(4, 1, 3, 3)] and len(no_decay["params"]) == 3
    assert no_decay["weight_decay"] == 0.0
    assert len(param_groups(model, TrainConfig(weight_decay=5e-4, decay_bn_and_bias=True))) == 1


def test_norm_lr_scale_keeps_the_decay_per_step():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    cfg = TrainConfig(lr=0.5, weight_decay=1e-3, decay_bn_and_bias=True, norm_lr_scale=64)
    conv, norm = param_groups(model, cfg)
    assert len(conv["params"]) == 2 and len(norm["params"]) == 2  # conv weight+bias; BN weight+bias
    assert norm["lr"] == 32.0 and norm["lr"] * norm["weight_decay"] == conv["lr"] * conv["weight_decay"]


def test_lr_scale_multiplies_the_named_parameters_rate_and_keeps_their_decay_per_step():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    cfg = TrainConfig(lr=0.5, weight_decay=1e-3, decay_bn_and_bias=True, norm_lr_scale=64, lr_scale="0.bias=8,1.*=0.5")
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {tuple(names[id(p)] for p in g["params"]): g for g in param_groups(model, cfg)}
    assert set(groups) == {("0.weight",), ("0.bias",), ("1.weight", "1.bias")}
    assert groups[("0.bias",)]["lr"] == 4.0 and groups[("1.weight", "1.bias")]["lr"] == 16.0  # 0.5 x 64 x 0.5
    assert len({g["lr"] * g["weight_decay"] for g in groups.values()}) == 1


def test_onecycle_starts_and_ends_where_asked():
    cfg = TrainConfig(epochs=10, warmup_epochs=2, warmup_from=0.2, decay_to=0.07)
    factors = [lr_factor(cfg, s, 10) for s in range(100)]
    assert abs(factors[0] - 0.2) < 0.05 and max(factors) == factors[20] == 1.0
    assert abs(factors[-1] - 0.07) < 0.02 and min(factors) >= 0.07


def test_impossible_model_shape_is_refused_before_training(tmp_path):
    with pytest.raises(CnnlabError, match="alexnet needs inputs of at least 63x63.*--image-size"):
        run(tmp_path, model="alexnet", model_kwargs={})
    assert not (tmp_path / "run").exists()


def test_eval_train_tests_the_final_weights_on_clean_training_images(tmp_path):
    from cnnlab.data import load_dataset
    from cnnlab.inference import load_run, stats
    from cnnlab.runtime.evaluate import metrics_from_logits, predict_logits
    from cnnlab.runtime.tensors import to_device

    s, out = run(tmp_path, "clean", val_fraction=0.0, image_size=8, eval_train=True)
    model, spec = load_run(out, "last")
    ds = load_dataset("digits")
    index = np.linspace(0, len(ds.train_x) - 1, len(ds.test_x)).round().astype(int)  # as many as the test split
    assert len(set(index)) == len(ds.test_x)
    x, y = to_device(ds.train_x[index], ds.train_y[index], 8, torch.device("cpu"))
    expected = metrics_from_logits(predict_logits(model, x, *stats(spec), spec["precision"]), y, ds.num_classes)
    assert abs(s["train_eval_accuracy"] - expected["accuracy"]) < 1e-6
    assert 0 < s["train_eval_accuracy"] <= 1
