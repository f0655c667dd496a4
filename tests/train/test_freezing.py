"""Progressive freezing (--freeze-from EPOCH:LAYERS,...): which layers stop training and when, that the backward
pass really skips them, the FLOPs counted, the monitor and resume, and bad schedules in one line."""
import copy

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.cli import main
from cnnlab.models import create_model
from cnnlab.models.summary import summarize
from cnnlab.train import TrainConfig, train
from cnnlab.train.finetune import freeze
from cnnlab.train.progressive import epoch_flops, frozen_at, parse_freezing


def test_the_schedule_gives_each_epoch_its_frozen_layers():
    schedule = parse_freezing("3:2, 5:4", 6)
    assert schedule == [(3, 2), (5, 4)]
    assert [frozen_at(schedule, e) for e in range(6)] == [0, 0, 2, 2, 4, 4]
    assert parse_freezing("", 6) == [] and frozen_at([], 3) == 0


def test_a_share_of_the_run_freezes_after_that_many_epochs_at_any_length():
    assert parse_freezing("28%:1", 11) == [(4, 1)]  # 3.08 epochs of 11 train the layer: frozen from the 4th
    assert parse_freezing("28%:1, 60%:3", 10) == [(3, 1), (7, 3)]
    assert parse_freezing("28%:1", 2) == parse_freezing("28%:1", 1) == [(1, 1)]  # short runs: frozen throughout


def reference_flops_per_image(model, size: int, frozen: int, channels: int = 3) -> float:
    """torch's own count (FlopCounterMode) of one training step's convolution and matmul FLOPs, forward and
    backward as autograd runs them, with the first `frozen` layers frozen by the trainer's `freeze`."""
    model = copy.deepcopy(model).train()
    freeze(model, frozen)
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(4, channels, size, size)).sum().backward()
    return counter.get_total_flops() / 4


@pytest.mark.parametrize("name", ["airbench94", "resnet20"])
def test_flops_counted_are_the_work_autograd_does_with_the_first_layers_frozen(name):
    """airbench94: the whitening filters never train (no weight gradient) and its input is the data; once the
    whitening bias freezes, the first group's conv computes no input gradient either. resnet20: its skips
    carry gradients around the frozen layers of a block."""
    model = create_model(name, num_classes=10, in_channels=3)
    rows_at = {size: summarize(model, (3, size, size)).layers for size in (16, 32)}
    flops = epoch_flops(model, rows_at, [(16, 1)], 32, [(2, 1), (3, 3), (4, 5)], 4)
    expected = [reference_flops_per_image(model, 16, 0)] + [reference_flops_per_image(model, 32, n) for n in (1, 3, 5)]
    assert flops == pytest.approx(expected, rel=1e-9)
    assert flops[1] > flops[2] > flops[3]


def small_run(tmp_path, name="run", **kw) -> TrainConfig:
    return TrainConfig(**{"model": "airbench94", "model_kwargs": {"width": 0.25}, "data": "digits", "epochs": 3,
                          "batch_size": 128, "out": str(tmp_path / name), "quiet": True, "report": False,
                          "eval_every": 0, "precision": "fp32", "seed": 1, **kw})


def test_frozen_layers_stop_changing_get_no_gradients_and_the_rest_trains(tmp_path):
    snapshots, grads = {}, {}

    def watch(model, step):
        snapshots[step] = {k: v.detach().clone() for k, v in model.named_parameters()}
        grads[step] = {k for k, v in model.named_parameters() if v.grad is not None}

    s = train(small_run(tmp_path, freeze_from="2:3", monitor_every=1), on_step=watch)
    spe = s["steps"] // 3
    first3 = {"whiten.bias", "layer1.norm1.bias", "layer1.norm2.bias", "layer1.conv1.weight", "layer1.conv2.weight"}
    assert first3 <= grads[spe]  # trained in epoch 1
    for step in (spe + 1, s["steps"]):  # epoch 2 on: no gradient at all, so no backward work in them
        assert not grads[step] & first3 and "layer2.conv1.weight" in grads[step]
    for name in first3:
        assert torch.equal(snapshots[spe][name], snapshots[s["steps"]][name]), name
    assert not torch.equal(snapshots[spe]["layer2.conv1.weight"], snapshots[s["steps"]]["layer2.conv1.weight"])
    assert not torch.equal(snapshots[spe - 1]["layer1.conv1.weight"], snapshots[spe]["layer1.conv1.weight"])
    assert not s["diagnoses"], s["diagnoses"]  # absent gradients of frozen layers are not vanishing ones
    assert s["train_flops"] < 6 * s["macs"] * s["steps"] * 128  # what the same steps cost with nothing frozen


class Crash(Exception):
    pass


def test_a_run_resumed_where_the_freeze_begins_ends_with_the_same_weights(tmp_path):
    """Crashed one step into epoch 2, resumed from the checkpoint of epoch 1: the freeze starts all the same."""
    whole = train(small_run(tmp_path, "whole", freeze_from="2:3"))
    spe = whole["steps"] // 3

    def crash(model, step):
        if step == spe + 1:
            raise Crash

    with pytest.raises(Crash):
        train(small_run(tmp_path, "crashed", freeze_from="2:3"), on_step=crash)
    resumed = train(small_run(tmp_path, "crashed", freeze_from="2:3"), resume=True)
    assert resumed["test_accuracy"] == whole["test_accuracy"] and resumed["train_flops"] == whole["train_flops"]
    a, b = (load_file(str(tmp_path / run / "last.safetensors")) for run in ("whole", "crashed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("value, culprit", [("3", "EPOCH:LAYERS"), ("x:2", "EPOCH:LAYERS"), ("2:-1", "EPOCH:LAYERS"), ("²:3", "EPOCH:LAYERS"),
                                            ("0:2", "1..3"), ("4:2", "1..3"), ("2:0", "at least 1 layer"),
                                            ("2:3,2:4", "later epoch"), ("2:3,3:3", "more layers"),
                                            ("2:8", "all of the model's 8")])
def test_a_bad_schedule_is_one_line_and_exit_2(tmp_path, capsys, value, culprit):
    argv = ["train", "--model", "airbench94", "--model-kwargs", "width=0.25", "--epochs", "3",
            f"--freeze-from={value}", "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--freeze-from" in err and culprit in err, err
    assert not (tmp_path / "run" / "summary.json").exists()


def test_freezing_the_backbone_and_freezing_by_epochs_do_not_mix(tmp_path, capsys):
    argv = ["train", "--epochs", "3", "--freeze", "backbone", "--freeze-from", "2:1", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--freeze-from" in err and "backbone" in err, err


def test_under_torchrun_the_schedule_is_refused_before_training():
    from cnnlab import CnnlabError
    from cnnlab.train.setup import check_freezing

    model = create_model("airbench94", num_classes=10, in_channels=3)
    check_freezing([(2, 3)], model, distributed_run=False)
    with pytest.raises(CnnlabError, match="one process"):
        check_freezing([(2, 3)], model, distributed_run=True)


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_a_layer_s_rate_reaches_zero_as_it_freezes_while_the_rest_keeps_the_run_s_schedule(schedule):
    from cnnlab.train.optim import build_optimizer, lr_factor, set_lr

    cfg = TrainConfig(model="airbench94", epochs=10, freeze_from="7:3,9:5", schedule=schedule, optimizer="muon",
                      warmup_epochs=1)
    model = create_model("airbench94", num_classes=10, in_channels=3)
    optimizer = build_optimizer(model, cfg)
    ends = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            ends[next(n for n, q in model.named_parameters() if q is p)] = group.get("epochs", 10)
    assert ends["layer1.conv2.weight"] == ends["whiten.bias"] == 6 and ends["layer2.norm2.bias"] == 8
    assert ends["layer3.conv1.weight"] == ends["fc.weight"] == 10
    spe = 5
    for step in range(10 * spe):
        first = set_lr(optimizer, cfg, step, spe)
        assert first == pytest.approx(optimizer.param_groups[0]["initial_lr"] * lr_factor(cfg, step, spe))
        for group in optimizer.param_groups:
            factor = group["lr"] / group["initial_lr"]
            end = group.get("epochs", 10) * spe
            if step >= end:
                assert factor == 0, (step, end)
            else:  # the run's schedule shape, compressed to end where the group freezes
                assert factor == pytest.approx(lr_factor(TrainConfig(**{**cfg.to_dict(), "freeze_from": "",
                                                                        "epochs": end // spe}), step, spe))
                assert step < spe or factor > 0


def test_freezing_from_the_first_epoch_is_freeze_n_in_weights_and_in_flops(tmp_path):
    static = train(small_run(tmp_path, "static", epochs=2, freeze=3))
    scheduled = train(small_run(tmp_path, "scheduled", epochs=2, freeze_from="1:3"))
    assert static["train_flops"] == scheduled["train_flops"] < 6 * static["macs"] * static["steps"] * 128
    a, b = (load_file(str(tmp_path / run / "last.safetensors")) for run in ("static", "scheduled"))
    assert all(torch.equal(a[k], b[k]) for k in a)
