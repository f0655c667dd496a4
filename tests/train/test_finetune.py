"""Fine-tuning: `--init-from` a torchvision-format file or a cnnlab run, `--freeze`, `--pretrained-lr-scale`.

torchvision's published files cannot be downloaded here: the files are built from fixed weights in
torchvision's keys and shapes (tests/models/reference_weights.py, the layout tests/models/test_zoo.py checks
against torchvision itself), saved as torchvision saves them."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from sklearn.datasets import load_digits

from cnnlab import CnnlabError, create_model
from cnnlab.cli import main
from cnnlab.train import TrainConfig, train
from cnnlab.train.finetune import freeze, head_keys, init_from
from cnnlab.train.optim import param_groups
from tests.models.reference_weights import reference_state

QUICK = dict(precision="fp32", quiet=True, monitor_every=0, eval_every=0)


def digit_folder(root: Path, classes, n_train: int, rgb: bool = False, n_test: int | None = None) -> Path:
    """The embedded 8x8 digits of `classes` as PNGs: the first `n_train` of each class in train/, the next
    `n_test` (default: all the others) in test/."""
    digits = load_digits()
    images = (digits.images * 255 / 16).round().astype(np.uint8)
    for c in classes:
        idx = np.flatnonzero(digits.target == c)
        end = None if n_test is None else n_train + n_test
        for split, part in (("train", idx[:n_train]), ("test", idx[n_train:end])):
            (root / split / str(c)).mkdir(parents=True, exist_ok=True)
            for i in part:
                image = Image.fromarray(images[i])
                (image.convert("RGB") if rgb else image).save(root / split / str(c) / f"{i:04d}.png")
    return root


def torchvision_file(path: Path, name: str = "resnet18", counters: bool = False) -> dict:
    """A state dict in torchvision's layout for `name` with 1000 ImageNet classes, fixed values; without the
    batch-norm step counters, as torchvision's published files are."""
    with torch.device("meta"):
        shapes = [(k, list(v.shape)) for k, v in create_model(name, num_classes=1000).state_dict().items()]
    state = {k: v for k, v in reference_state(shapes).items() if counters or not k.endswith("num_batches_tracked")}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return state


def test_fine_tune_resnet18_from_a_torchvision_file(tmp_path, capsys):
    weights = torchvision_file(tmp_path / "resnet18-f37072fd.pth")
    data = digit_folder(tmp_path / "digits", range(5), n_train=4, rgb=True, n_test=2)
    s = train(TrainConfig(model="resnet18", data=str(data), image_size=32, epochs=1, batch_size=10, val_fraction=0,
                          init_from=str(tmp_path / "resnet18-f37072fd.pth"), freeze="backbone",
                          out=str(tmp_path / "run"), **QUICK))
    line = capsys.readouterr().err.strip().splitlines()[0]
    assert line == (f"init from {tmp_path / 'resnet18-f37072fd.pth'}: loaded 100 tensors (11,176,512 parameters); "
                    f"replaced: fc.weight (1000, 512) -> (5, 512), fc.bias (1000,) -> (5,); left random: none; "
                    f"frozen: 60 tensors (every layer but the head)")
    assert s["init"] == {"from": str(tmp_path / "resnet18-f37072fd.pth"), "loaded": 100, "loaded_parameters": 11_176_512,
                         "replaced": {"fc.weight": [[1000, 512], [5, 512]], "fc.bias": [[1000], [5]]},
                         "left_random": [], "frozen": 60, "freeze": "backbone"}
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["init"] == s["init"]
    trained = load_file(str(tmp_path / "run" / "last.safetensors"))
    for key in ("conv1.weight", "layer4.1.conv2.weight", "layer4.1.bn2.bias"):  # frozen: the file's values
        assert torch.equal(trained[key], weights[key])
    assert not torch.equal(trained["layer1.0.bn1.running_mean"], weights["layer1.0.bn1.running_mean"])  # adapts
    assert trained["fc.weight"].shape == (5, 512)


def test_safetensors_file_with_counters_loads_and_the_head_is_kept_when_the_classes_match(tmp_path):
    weights = torchvision_file(tmp_path / "resnet18.safetensors", counters=True)
    model = create_model("resnet18", num_classes=1000)
    report = init_from(model, str(tmp_path / "resnet18.safetensors"))
    assert report["loaded"] == 122 and report["replaced"] == {} and report["left_random"] == []
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())


def test_a_file_that_does_not_fit_is_refused_in_one_line_naming_the_key_and_both_shapes(tmp_path, capsys):
    state = torchvision_file(tmp_path / "ok.pth")
    bad = {**state, "layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1)}
    torch.save(bad, tmp_path / "bad.pth")
    model = create_model("resnet18", num_classes=10)
    with pytest.raises(CnnlabError, match=r"^--init-from .*bad\.pth: 'layer1\.0\.conv1\.weight' has shape "
                                          r"\(64, 64, 1, 1\) in the file, the model expects \(64, 64, 3, 3\)$"):
        init_from(model, str(tmp_path / "bad.pth"))
    torchvision_file(tmp_path / "r34.pth", "resnet34")
    with pytest.raises(CnnlabError, match=r"'layer1\.2\.conv1\.weight' is not a weight of this model \(80 keys"):
        init_from(create_model("resnet18", num_classes=10), str(tmp_path / "r34.pth"))
    with pytest.raises(CnnlabError, match=r"no weights for 'layer1\.2\.conv1\.weight' \(the model expects shape "
                                          r"\(64, 64, 3, 3\)\)"):
        init_from(create_model("resnet34", num_classes=10), str(tmp_path / "ok.pth"))
    torch.save({"conv1.weight": tmp_path}, tmp_path / "code.pth")  # a pickled object weights_only refuses
    with pytest.raises(CnnlabError, match=r"code\.pth: not a weights file torch\.load reads safely"):
        init_from(model, str(tmp_path / "code.pth"))
    torch.save({**state, "conv1.weight": state["conv1.weight"].int()}, tmp_path / "ints.pth")  # would load as zeros
    with pytest.raises(CnnlabError, match=r"ints\.pth: 'conv1\.weight' is stored as int32, the model holds float32"):
        init_from(model, str(tmp_path / "ints.pth"))
    (tmp_path / "settings.yaml").write_text("epochs: 1\n")  # text, which the unpickler reads as opcodes
    with pytest.raises(CnnlabError, match=r"settings\.yaml: not a weights file torch\.load reads safely"):
        init_from(model, str(tmp_path / "settings.yaml"))
    # the command line: one line, exit status 2
    assert main(["train", "--model", "resnet18", "--init-from", str(tmp_path / "bad.pth"), "--data",
                 str(digit_folder(tmp_path / "d", range(2), 3, rgb=True, n_test=1)), "--val-fraction", "0",
                 "--epochs", "1", "--out", str(tmp_path / "run"), "-q"]) == 2  # 3 images a class: no validation
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'layer1.0.conv1.weight' has shape (64, 64, 1, 1) in the file" in err


def test_freeze_counts_conv_and_linear_layers_with_their_norms_and_the_head_keeps_its_rate():
    model = create_model("resnet20", num_classes=10)
    assert freeze(model, 2) == ["conv1.weight", "bn1.weight", "bn1.bias", "layer1.0.conv1.weight",
                                "layer1.0.bn1.weight", "layer1.0.bn1.bias"]
    with pytest.raises(CnnlabError, match=r"--freeze 20: the model has 20 layers; freezing them all leaves nothing"):
        freeze(create_model("resnet20", num_classes=10), 20)
    assert head_keys(create_model("p4cnn", num_classes=10)) == {"features.19.weight", "features.19.bias"}
    cfg = TrainConfig(init_from="x.pth", pretrained_lr_scale=0.1, lr=0.2)
    loaded = {id(p) for n, p in model.named_parameters() if not n.startswith("fc.")}
    rates = {}
    for group in param_groups(model, cfg, loaded):  # also split by weight decay: add up per rate
        rates[round(group["lr"], 6)] = rates.get(round(group["lr"], 6), 0) + len(group["params"])
    assert rates == {0.02: sum(p.requires_grad and id(p) in loaded for p in model.parameters()), 0.2: 2}
    with pytest.raises(CnnlabError, match="--freeze must be a number of layers or backbone, got 'head'"):
        TrainConfig(freeze="head").validate()
    assert TrainConfig(freeze="3").validate().freeze == 3
    with pytest.raises(CnnlabError, match="--freeze must be a number of layers or backbone, got '²'"):
        TrainConfig(freeze="²").validate()  # a digit to str.isdigit, not a number to int()


def test_freeze_without_init_from_trains_the_rest_from_scratch(tmp_path, capsys):
    argv = ["train", "--model", "resnet20", "--model-kwargs", "width=0.25", "--epochs", "1", "--freeze", "3",
            "--image-size", "16", "--out", str(tmp_path / "run"), "--quiet", "--no-report"]
    assert main(argv) == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["init"]["frozen"] == 9 and summary["init"]["from"] is None


def test_pretrained_on_digits_0_to_4_then_fine_tuned_beats_scratch_on_5_to_9(tmp_path):
    """Transfer to new classes with 5 images each: resnet20 pretrained on the digits 0-4, its head replaced
    (other classes), fine-tuned on 5-9 for 3 epochs, against the same model and budget from random weights.
    Two seeds each; fp32, so that CPUs with and without native bf16 train alike (measured here: scratch
    0.404 and 0.295, pretrained 0.501 and 0.466, of ~850 test images; seeds 2 and 3 gave 0.246/0.220 against
    0.315/0.567)."""
    common = dict(model="resnet20", model_kwargs={"width": 0.5}, image_size=16, val_fraction=0, **QUICK)
    pretrain = digit_folder(tmp_path / "0-4", range(5), n_train=150, n_test=20)
    s = train(TrainConfig(data=str(pretrain), epochs=6, batch_size=64, out=str(tmp_path / "pre"), **common))
    assert s["test_accuracy"] >= 0.9
    new = digit_folder(tmp_path / "5-9", range(5, 10), n_train=5, n_test=100)
    accuracy = {"scratch": [], "pretrained": []}
    for seed in (0, 1):
        for name, extra in (("scratch", {}), ("pretrained", {"init_from": str(tmp_path / "pre")})):
            out = tmp_path / f"{name}-{seed}"
            s = train(TrainConfig(data=str(new), epochs=3, batch_size=10, lr=0.02, seed=seed, out=str(out),
                                  **common, **extra))
            accuracy[name].append(s["test_accuracy"])
    print(f"\nfine-tuned on 5 images per class, 3 epochs: {accuracy}")
    assert s["init"]["replaced"] == {"fc.weight": [[5, 32], [5, 32]], "fc.bias": [[5], [5]]}  # classes 0-4 != 5-9
    gain = sum(accuracy["pretrained"]) / 2 - sum(accuracy["scratch"]) / 2
    assert gain >= 0.05, f"pretrained {accuracy['pretrained']} against scratch {accuracy['scratch']}"

    # a resumed fine-tuning run (here: extended by an epoch) needs its folder alone, and keeps its record
    shutil.rmtree(tmp_path / "pre")
    resumed = train(TrainConfig(data=str(new), epochs=4, batch_size=10, lr=0.02, seed=1, out=str(out), **common,
                                init_from=str(tmp_path / "pre")), resume=True)
    assert resumed["init"] == s["init"] and resumed["epochs"] == 4
