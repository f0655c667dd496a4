"""Gradient health on real training runs on digits: each diagnosis fires where it should and nowhere else."""
import json

import pytest
import torch
from torch import nn

from cnnlab.cli import main
from cnnlab.diagnose.monitor import GradientMonitor
from cnnlab.errors import TrainingStopped
from cnnlab.models import register_model
from cnnlab.train import TrainConfig, train
from cnnlab.train.optim import lr_factor


def _run(tmp_path, name, model, **kw):
    kw = {"data": "digits", "image_size": 16, "epochs": 3, "batch_size": 64, "quiet": True, **kw}
    return train(TrainConfig(model=model, out=str(tmp_path / name), **{"report": False, **kw}))


def _kinds(summary):
    return [d["kind"] for d in summary["diagnoses"]]


def test_deep_sigmoid_plain_net_vanishes_and_batch_norm_or_clean_skips_cure_it(tmp_path):
    plain = _run(tmp_path, "plain", "plain20", model_kwargs={"bn": False, "activation": "sigmoid", "width": 0.5})
    assert _kinds(plain) == ["vanishing"]
    d = plain["diagnoses"][0]
    assert d["step"] <= 60 and d["layers"][0] == "conv1" and "bn=true" in d["remedies"][0]
    with_bn = _run(tmp_path, "bn", "plain20", model_kwargs={"bn": True, "activation": "sigmoid", "width": 0.5})
    assert "vanishing" not in _kinds(with_bn)
    # residual connections whose skip path passes through no sigmoid (pre-activation blocks)
    residual = _run(tmp_path, "res", "resnet20", model_kwargs={"bn": False, "activation": "sigmoid", "width": 0.5,
                                                                "preact": True})
    assert "vanishing" not in _kinds(residual)


def test_learning_rate_far_too_high_is_exploding_before_the_nan_and_training_stops(tmp_path):
    with pytest.raises(TrainingStopped, match="nonfinite"):
        # fp32 pinned: the path to the NaN is chaotic, and bf16 is native on some CPUs and emulated on others
        _run(tmp_path, "hot", "resnet20", model_kwargs={"bn": False, "width": 0.5}, lr=3.0, precision="fp32")
    summary = json.loads((tmp_path / "hot" / "summary.json").read_text())
    exploding, nonfinite = summary["diagnoses"]
    assert summary["status"] == "stopped" and exploding["kind"] == "exploding" and nonfinite["kind"] == "nonfinite"
    assert exploding["step"] < nonfinite["step"] and exploding["layers"] and "lower the learning rate" in exploding["remedies"][0]


def test_healthy_resnet_raises_no_alarm(tmp_path):
    assert _run(tmp_path, "ok", "resnet20", model_kwargs={"width": 0.5})["diagnoses"] == []


@register_model("test-only")
def flaky_net(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """A small CNN whose output is NaN on its 6th training batch only (step 6): a transient fault."""

    class Flaky(nn.Sequential):
        calls = 0

        def forward(self, x):
            out = super().forward(x)
            # training batches only: not the symbolic passes torch.fx makes for the summary and the FLOP count
            if self.training and torch.is_grad_enabled() and isinstance(out, torch.Tensor):
                Flaky.calls += 1
                if Flaky.calls == 6:
                    out = out * float("nan")
            return out

    return Flaky(nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(),
                 nn.Linear(32 * 16, num_classes))


def _logged_lr(run_dir, step):
    records = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    return next(r["lr"] for r in records if r["type"] == "step" and r["step"] == step)


def test_skip_policy_drops_a_transient_nan_step_halves_the_lr_and_finishes(tmp_path):
    s = _run(tmp_path, "skip", "flaky_net", on_nonfinite="skip", lr=0.2)
    assert _kinds(s) == ["nonfinite"] and s["diagnoses"][0]["step"] == 6 and s["test_accuracy"] > 0.5
    assert s["steps"] == 3 * 20  # the skipped step still used up its batch
    cfg = TrainConfig(epochs=3, lr=0.2)
    assert _logged_lr(tmp_path / "skip", 30) == pytest.approx(0.5 * 0.2 * lr_factor(cfg, 30, 20))


def test_rollback_policy_returns_to_the_last_checkpoint_with_half_the_lr(tmp_path, capsys):
    s = _run(tmp_path, "rollback", "flaky_net", on_nonfinite="rollback", lr=0.2)
    assert _kinds(s) == ["nonfinite"] and s["steps"] == 3 * 20 and s["test_accuracy"] > 0.5
    assert "step 6 rolled back to step 0, learning rate halved" in capsys.readouterr().err
    cfg = TrainConfig(epochs=3, lr=0.2)
    assert _logged_lr(tmp_path / "rollback", 30) == pytest.approx(0.5 * 0.2 * lr_factor(cfg, 30, 20))


def test_diagnose_command_prints_json_and_writes_the_plots(tmp_path, capsys):
    _run(tmp_path, "plain", "plain20", model_kwargs={"bn": False, "activation": "sigmoid", "width": 0.5}, epochs=2)
    assert main(["diagnose", str(tmp_path / "plain"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [d["kind"] for d in out["diagnoses"]] == ["vanishing"]
    assert set(out["diagnoses"][0]) == {"kind", "step", "layers", "evidence", "remedies"}
    for plot in out["plots"]:
        assert open(plot, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert main(["diagnose", str(tmp_path / "plain")]) == 0
    assert "vanishing in conv1" in capsys.readouterr().out
    assert main(["diagnose", str(tmp_path / "nothing")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err


def test_fp16_gradients_that_underflow_are_diagnosed_and_healthy_fp16_is_not(tmp_path):
    sigmoid = {"bn": False, "activation": "sigmoid", "width": 0.5}
    s = _run(tmp_path, "fp16", "plain20", model_kwargs=sigmoid, precision="fp16", loss_scaling=False)
    underflow = next(d for d in s["diagnoses"] if d["kind"] == "underflow")
    assert underflow["layers"][0] == "conv1" and "zero in fp16 but not in fp32" in underflow["evidence"]
    samples = [json.loads(x) for x in (tmp_path / "fp16" / "metrics.jsonl").read_text().splitlines()
               if '"layers"' in x]
    assert samples[-1]["underflow_fraction"]["conv1"] > 0.5
    healthy = _run(tmp_path, "fp16ok", "resnet20", model_kwargs={"width": 0.5}, precision="fp16", epochs=2)
    assert healthy["diagnoses"] == [] and healthy["test_accuracy"] > 0.8
    scales = [json.loads(x).get("loss_scale") for x in (tmp_path / "fp16ok" / "metrics.jsonl").read_text().splitlines()
              if '"layers"' in x]
    assert scales and all(v and v >= 1 for v in scales)  # the loss-scale history is recorded


def test_fp16_activation_overflow_is_named_with_its_layer():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight.fill_(300.0)  # 4 inputs of about 100 x 300: beyond fp16's 65504
    monitor = GradientMonitor(model, every=1, precision="fp16")
    x = torch.full((8, 4), 100.0)
    with torch.autocast("cpu", dtype=torch.float16), monitor.forward(1):
        loss = model(x).float().square().mean()
    loss.backward()
    problem = monitor.after_backward(1, loss)
    assert problem.kind == "nonfinite"
    with torch.autocast("cpu", dtype=torch.float16):
        assert monitor.locate_nonfinite_forward(lambda: model(x)) == "0"
    overflow = next(d for d in monitor.diagnoses if d.kind == "overflow")
    assert overflow.layers == ["0"] and "65504" in overflow.evidence


def test_activations_fp16_could_not_hold_are_flagged_in_any_precision():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight.fill_(300.0)
    monitor = GradientMonitor(model, every=1)  # fp32: finite, but fp16 could not represent the ReLU's output
    with monitor.forward(1):
        loss = model(torch.full((8, 4), 100.0)).square().mean() * 1e-12
    loss.backward()
    assert monitor.after_backward(1, loss) is None
    monitor.after_step(1)
    overflow = next(d for d in monitor.diagnoses if d.kind == "overflow")
    assert overflow.layers == ["1"] and "fp16 would overflow" in overflow.evidence


def test_updates_lost_to_bf16_weights_are_underflow_and_fp32_weights_are_not():
    def train_steps(dtype):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2)).to(dtype)
        opt = torch.optim.SGD(model.parameters(), lr=1e-4)
        monitor = GradientMonitor(model, every=1)
        for step in range(1, 8):
            x, y = torch.randn(32, 16, dtype=dtype), torch.randint(0, 2, (32,))
            with monitor.forward(step):
                loss = nn.functional.cross_entropy(model(x).float(), y)
            opt.zero_grad()
            loss.backward()
            assert monitor.after_backward(step, loss, opt) is None
            opt.step()
            monitor.after_step(step)
        return monitor

    lost = [d for d in train_steps(torch.bfloat16).diagnoses if d.kind == "underflow"]
    assert lost and "bfloat16 weights unchanged" in lost[0].evidence and lost[0].layers[0] == "0"
    assert "underflow" not in [d.kind for d in train_steps(torch.float32).diagnoses]  # (stalled, at this lr)


class Blowup(nn.Module):
    def forward(self, x):
        return x * torch.where(x.abs() > 3, torch.tensor(float("inf")), torch.tensor(1.0))


def test_monitor_works_on_any_module_and_names_the_layer_that_went_nonfinite():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), Blowup(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = GradientMonitor(model, every=1)
    for step in (1, 2):
        x = torch.randn(16, 4) * (0.1 if step == 1 else 100)
        with monitor.forward(step):
            loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        problem = monitor.after_backward(step, loss, opt)
        if problem:
            break
        opt.step()
        monitor.after_step(step)
    assert step == 2 and problem.kind == "nonfinite"
    assert monitor.locate_nonfinite_forward(lambda: model(x)) == "3"
    sample = monitor.samples[0]
    assert list(sample["grad_norm"]) == ["0", "2", "4"] and sample["update_ratio"]["0"] > 0
    assert set(sample["dead_fraction"]) == {"1"}
    monitor.close()
    assert not model[1]._forward_hooks
