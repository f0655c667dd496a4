"""Dynamic data pruning (--prune): which epochs are pruned, which images an epoch leaves out and how it weights
the rest, the FLOPs it saves, and that a pruned run resumes exactly."""
import pytest
import torch
from safetensors.torch import load_file

from cnnlab.models import create_model
from cnnlab.models.summary import summarize
from cnnlab.train import TrainConfig, train
from cnnlab.train.pruning import Epochs, dropped_count, epoch_lengths, epoch_order, pruned


def test_the_first_epoch_and_the_last_eighth_train_on_every_image():
    assert [pruned(e, 16) for e in range(16)] == [False] + [True] * 13 + [False] * 2
    assert [pruned(e, 9) for e in range(9)] == [False] + [True] * 7 + [False]
    assert not any(pruned(e, 2) for e in range(2))
    # 1,000 images, 0.3 pruned: 300 left out; 100-image batches
    assert epoch_lengths(1000, 100, 4, 0.3) == [10, 7, 7, 10]
    assert epoch_lengths(1000, 100, 4) == [10] * 4
    assert dropped_count(10, 0.49) == 4 and dropped_count(3, 0.49) == 0  # one low-loss image always stays


def test_epochs_of_different_lengths_are_located_by_their_steps():
    epochs = Epochs([10, 7, 7, 10])
    assert epochs.total == 34
    assert epochs.locate(0) == (0, 0) and epochs.locate(9) == (0, 9) and epochs.locate(10) == (1, 0)
    assert epochs.locate(23) == (2, 6) and epochs.locate(24) == (3, 0)
    assert [s for s in range(35) if epochs.is_end(s)] == [10, 17, 24, 34]
    assert [epochs.completed(s) for s in (0, 9, 10, 33, 34)] == [0, 0, 1, 3, 4]


def test_a_pruned_epoch_leaves_out_only_low_loss_images_and_keeps_the_expected_weight():
    n = 1000
    losses = torch.rand(n, generator=torch.Generator().manual_seed(1))
    losses[:10] = float("inf")  # never trained on yet
    order, weight = epoch_order(n, 1, 8, seed=0, prune=0.3, losses=losses)
    kept = set(order.tolist())
    assert len(order) == len(kept) == 700
    left_out = torch.tensor(sorted(set(range(n)) - kept))
    median = losses.sort().values[n // 2 - 1]
    assert (losses[left_out] <= median).all()  # only from the lower half
    assert set(range(10)) <= kept
    low_kept = [i for i in kept if losses[i] <= median]
    assert torch.allclose(weight[low_kept], torch.full((len(low_kept),), 500 / 200))
    assert (weight[left_out] == 0).all()
    assert weight.sum().item() == pytest.approx(n)  # every image counts once in expectation
    again, _ = epoch_order(n, 1, 8, seed=0, prune=0.3, losses=losses)
    assert torch.equal(order, again)  # the same draw on a resumed run and on every rank
    full, none = epoch_order(n, 7, 8, seed=0, prune=0.3, losses=losses)  # the last eighth: every image
    assert none is None and sorted(full.tolist()) == list(range(n))


def _pruned_run(tmp_path, name, **extra):
    return TrainConfig(model="resnet20", model_kwargs={"width": 0.25}, data="digits", image_size=12,
                       batch_size=64, epochs=4, prune=0.3, quiet=True, report=False, precision="fp32",
                       out=str(tmp_path / name), **extra)


class Crash(Exception):
    pass


def test_a_pruned_run_spends_fewer_flops_and_resumes_mid_epoch_to_the_same_weights(tmp_path):
    whole = train(_pruned_run(tmp_path, "whole"))
    lengths = epoch_lengths(whole["train_images"], 64, 4, 0.3)
    assert lengths[0] > lengths[1] == lengths[2] and whole["steps"] == sum(lengths) and whole["epochs"] == 4
    stem = summarize(create_model("resnet20", num_classes=10, in_channels=1, width=0.25), (1, 12, 12)).layers[0]
    per_image = 6 * whole["macs"] - 2 * stem.macs  # the first conv computes no gradient for the data
    assert whole["train_flops"] == per_image * 64 * sum(lengths)  # only the images trained on
    assert whole["test_accuracy"] > 0.8

    crash_at = lengths[0] + 3  # inside the first pruned epoch, after a checkpoint: the second one's draw
    # depends on the per-image losses the checkpoint kept

    def crash(model, step):
        if step == crash_at:
            raise Crash

    with pytest.raises(Crash):
        train(_pruned_run(tmp_path, "crashed", checkpoint_every=crash_at - 1), on_step=crash)
    resumed = train(_pruned_run(tmp_path, "crashed", checkpoint_every=crash_at - 1), resume=True)
    assert resumed["steps"] == whole["steps"] and resumed["test_accuracy"] == whole["test_accuracy"]
    a, b = (load_file(str(tmp_path / name / "last.safetensors")) for name in ("whole", "crashed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
