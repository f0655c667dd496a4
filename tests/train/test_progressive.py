"""Progressive resizing (--progressive SIZE:EPOCHS,...): the plan, the sizes the model sees, the FLOPs counted."""
import pytest
import torch

from cnnlab.cli import main
from cnnlab.train import TrainConfig, train
from cnnlab.train.progressive import crop, parse_plan, size_at, training_flops


def test_the_plan_gives_each_epoch_its_size():
    plan = parse_plan("16:2, 24:1", 5)
    assert plan == [(16, 2), (24, 1)]
    assert [size_at(plan, e, 32) for e in range(5)] == [16, 16, 24, 32, 32]
    assert size_at([], 0, 32) == 32


def test_shares_of_the_run_end_where_their_running_total_does_rounded_down():
    assert parse_plan("16:20%,24:40%", 10) == [(16, 2), (24, 4)]
    assert parse_plan("16:20%,24:40%", 4) == [(24, 2)]  # 0.8 epochs at 16: none; 2.4 in all: 2 at 24
    assert parse_plan("16:20%,24:40%", 1) == []  # a one-epoch run trains at full size


def test_flops_count_each_epoch_at_its_size():
    macs = {16: 10, 24: 20, 32: 40}
    # 3 epochs of 4 steps of 8 images, the last one cut after 2 steps: 6 FLOPs per MAC per image
    flops = training_flops([4, 4, 4], 10, 8, [6 * macs[16], 6 * macs[24], 6 * macs[32]])
    assert flops == 6 * 8 * (4 * 10 + 4 * 20 + 2 * 40)


def test_a_crop_is_a_random_window_of_each_image_the_same_for_the_same_generator():
    x = torch.randn(64, 3, 8, 8)
    y = crop(x, 5, torch.Generator().manual_seed(3))
    assert y.shape == (64, 3, 5, 5) and y.is_contiguous()
    assert torch.equal(y, crop(x, 5, torch.Generator().manual_seed(3)))
    windows = set()
    for image, window in zip(x, y):  # each output is one 5x5 window of its own image, unscaled
        found = [(t, left) for t in range(4) for left in range(4)
                 if torch.equal(image[:, t:t + 5, left:left + 5], window)]
        assert len(found) == 1
        windows.add(found[0])
    assert len(windows) > 8  # each image draws its own window
    assert crop(x, 8, torch.Generator()) is x


@pytest.mark.parametrize("crops", [False, True])
def test_the_model_sees_the_planned_sizes_and_the_summary_counts_them(tmp_path, monkeypatch, crops):
    from cnnlab.train import loop

    seen, made_by = {}, []
    for name in ("crop", "resize"):  # which of the two makes each small batch
        monkeypatch.setattr(loop, name, lambda x, size, *a, _f=getattr(loop, name), _n=name: (
            made_by.append(_n) if size < x.shape[-1] else None) or _f(x, size, *a))

    def watch(model, step):
        if not seen:
            model.register_forward_pre_hook(lambda m, args: seen.setdefault(step_now[0], args[0].shape[-1]) and None)
        step_now[0] = step + 1

    step_now = [1]
    cfg = TrainConfig(model="resnet20", model_kwargs={"width": 0.25}, data="digits", image_size=16, epochs=3,
                      batch_size=256, progressive="8:1,12:1", progressive_crop=crops, out=str(tmp_path / "run"),
                      quiet=True, report=False, eval_every=0)
    s = train(cfg, on_step=watch)
    spe = s["steps"] // 3
    sizes = [seen[k] for k in sorted(seen) if k <= s["steps"]]
    assert sizes[:spe - 1] == [8] * (spe - 1)  # the hook is in place from the second step on
    assert sizes[spe - 1:2 * spe - 1] == [12] * spe and set(sizes[2 * spe - 1:]) == {16}
    assert made_by == ["crop" if crops else "resize"] * (2 * spe)
    from cnnlab.models import create_model
    from cnnlab.models.summary import summarize

    model = create_model("resnet20", num_classes=10, in_channels=1, width=0.25)
    per_image = {}
    for size in (8, 12, 16):  # 6 FLOPs per multiply-add, but the first conv computes no gradient for the data
        rows = summarize(model, (1, size, size)).layers
        per_image[size] = 6 * sum(r.macs for r in rows) - 2 * rows[0].macs
    assert s["train_flops"] == 256 * spe * (per_image[8] + per_image[12] + per_image[16])


@pytest.mark.parametrize("value, culprit", [("16", "SIZE:EPOCHS"), ("16:x", "SIZE:EPOCHS"), ("16:1.5", "SIZE:EPOCHS"),
                                            ("²:1", "SIZE:EPOCHS"), ("٣:1", "SIZE:EPOCHS"),
                                            ("16:٣%", "SIZE:EPOCHS"), ("0:1", "must be positive"), ("16:0", "must be positive"),
                                            ("8:2,12:1", "covers all 3 epochs"), ("40:1", "outside")])
def test_a_bad_plan_is_one_line_and_exit_2(tmp_path, capsys, value, culprit):
    argv = ["train", "--model", "resnet20", "--model-kwargs", "width=0.25", "--image-size", "16", "--epochs", "3",
            f"--progressive={value}", "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--progressive" in err and culprit in err, err
    assert not (tmp_path / "run" / "summary.json").exists()


def test_crops_without_a_plan_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["train", "--progressive-crop", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--progressive-crop" in err and "--progressive too" in err, err
