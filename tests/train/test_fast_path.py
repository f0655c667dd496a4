"""The pieces of the fast path and recipe: whitening, test-time augmentation, lookahead, the recipe itself,
an interrupted run of it resuming exactly, and the allocator setting that keeps freed memory."""
import platform
import resource
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from cnnlab import CnnlabError
from cnnlab.models import create_model
from cnnlab.train import TrainConfig, train
from cnnlab.runtime.evaluate import predict_logits
from cnnlab.train.lookahead import Lookahead


def test_whitening_layer_decorrelates_the_patches_it_was_fitted_to():
    model = create_model("airbench94", num_classes=10)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 3, 16, 16, generator=g) * torch.tensor([1.0, 3.0, 0.3]).view(1, 3, 1, 1)
    x = x + 0.8 * x.roll(1, 2) + 0.5 * x[:, :1]  # spatially and across channels correlated
    model.init_from_data(x)
    half = model.whiten(x)[:, :12].permute(1, 0, 2, 3).reshape(12, -1)
    cov = torch.cov(half)
    assert (cov - torch.eye(12)).abs().max() < 0.02
    assert not model.whiten.weight.requires_grad


def test_tta_averages_the_views_airbench_averages():
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, width=0.25).eval()
    x = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    mean, std = torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.25)
    norm = (x.float() / 255 - mean) / std
    with torch.no_grad():
        mirror = 0.5 * (model(norm) + model(norm.flip(3)))
    assert torch.allclose(predict_logits(model, x, mean, std, "fp32", tta=1), mirror, atol=1e-5)
    flat = torch.full((2, 3, 16, 16), 77, dtype=torch.uint8)  # every view of a flat image is the image
    assert torch.allclose(predict_logits(model, flat, mean, std, "fp32", tta=2),
                          predict_logits(model, flat, mean, std, "fp32", tta=0), atol=1e-5)


def test_lookahead_pulls_weights_toward_the_slow_average_and_ends_on_it():
    model = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    la = Lookahead(model)
    with torch.no_grad():
        model.weight.fill_(1.0)
    la.after_step(model, 4, 10)  # not a multiple of 5: untouched
    assert model.weight[0, 0] == 1.0
    la.after_step(model, 5, 10)
    decay = 0.95 ** 5 * 0.5 ** 3
    assert torch.allclose(model.weight, torch.full_like(model.weight, 1 - decay))
    with torch.no_grad():
        model.weight.fill_(5.0)
    la.finish(model)
    assert torch.allclose(model.weight, torch.full_like(model.weight, 1 - decay))


def _recipe(tmp_path, name, **extra):
    return TrainConfig.from_dict({"recipe": "cifar10-fast", "variant": "sgd", "data": "digits", "epochs": 3,
                                  "batch_size": 128, "model_kwargs": {"width": 0.25}, "out": str(tmp_path / name),
                                  "quiet": True, **extra})


def test_fast_recipe_trains_digits(tmp_path):
    cfg = _recipe(tmp_path, "run", epochs=4, lr=0.5)
    assert cfg.model == "airbench94" and cfg.lookahead and cfg.tta == 2 and cfg.epochs == 4  # given wins
    s = train(cfg)
    assert s["recipe"] == "cifar10-fast" and s["test_accuracy"] > 0.9


class Crash(Exception):
    pass


def test_interrupted_fast_recipe_resumes_bit_identically(tmp_path):
    whole = train(_recipe(tmp_path, "whole"))

    def crash(model, step):
        if step == 17:  # mid-epoch 2, one step after the checkpoint at step 16
            raise Crash

    with pytest.raises(Crash):
        train(_recipe(tmp_path, "crashed", checkpoint_every=8), on_step=crash)
    resumed = train(_recipe(tmp_path, "crashed", checkpoint_every=8), resume=True)
    assert resumed["test_accuracy"] == whole["test_accuracy"]
    a = load_file(str(tmp_path / "whole" / "last.safetensors"))
    b = load_file(str(tmp_path / "crashed" / "last.safetensors"))
    assert all((a[k] == b[k]).all() for k in a)


def test_unknown_recipe_and_bad_tta_are_refused():
    with pytest.raises(CnnlabError, match="unknown recipe 'cifar10-slow'"):
        TrainConfig.from_dict({"recipe": "cifar10-slow"})
    with pytest.raises(CnnlabError, match="--tta must be"):
        TrainConfig.from_dict({"tta": 3})


_REALLOCATE = """
import resource, sys, torch
import cnnlab.train.loop  # a training process's heap: with only torch imported, brk can meet a mapping and
# glibc then takes fresh memory with mmap however it was told, in some runs and not in others
from cnnlab.runtime.device import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def faults_to_fill_64_mib():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 * 2 ** 20)  # 64 MiB of float32, freed at once
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_to_fill_64_mib()
print(min(faults_to_fill_64_mib() for _ in range(4)))  # it can take a call or two to settle
"""


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_kept_memory_is_not_page_faulted_in_again_each_step():
    def faults(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", _REALLOCATE, mode], capture_output=True, text=True, check=True)
        return int(out.stdout)
    pages = 64 * 2 ** 20 // resource.getpagesize()
    assert faults("default") > pages // 2  # glibc gave the block back: every page faults in again
    assert faults("keep") < pages // 20


@pytest.mark.parametrize("keep", [True, False])
def test_trainer_keeps_freed_memory_on_a_cpu_unless_told_not_to(monkeypatch, tmp_path, keep):
    import cnnlab.train.setup as loop

    calls = []

    class Stop(Exception):
        pass

    def stop_before_data(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(loop, "keep_freed_memory", lambda: calls.append(True))
    monkeypatch.setattr(loop, "load_dataset", stop_before_data)
    with pytest.raises(Stop):
        train(TrainConfig(data="digits", device="cpu", keep_freed_memory=keep, out=str(tmp_path / "run")))
    assert calls == ([True] if keep else [])
