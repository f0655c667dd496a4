"""The command line: a train -> eval -> predict round trip, configs, and one-line errors with exit 2."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main, parse_kwargs

FAST = ["--model", "resnet20", "--model-kwargs", "width=0.5", "--image-size", "16", "--epochs", "2",
        "--batch-size", "64"]


def test_train_eval_predict_round_trip(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *FAST, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and "8x8 resized to 16x16" in printed and f"run folder: {out}" in printed
    summary = json.loads((out / "summary.json").read_text())

    assert main(["eval", "--checkpoint", str(out), "--data", "digits", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-6)
    assert len(result["confusion_matrix"]) == 10 and sum(map(sum, result["confusion_matrix"])) == 359
    assert main(["eval", "--checkpoint", str(out), "--data", "digits"]) == 0
    assert "confusion matrix" in capsys.readouterr().out

    from cnnlab.data import load_dataset
    ds = load_dataset("digits")
    paths = []
    for i in range(20):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(ds.test_x[i, :, :, 0]).save(paths[-1])
    assert main(["predict", "--checkpoint", str(out), "--top-k", "3", "--json", *map(str, paths)]) == 0
    preds = json.loads(capsys.readouterr().out)
    assert all(len(p["top"]) == 3 and abs(sum(t["probability"] for t in p["top"]) - 1) < 0.5 for p in preds)
    hits = np.mean([p["top"][0]["class"] == str(y) for p, y in zip(preds, ds.test_y[:20])])
    assert hits >= 0.6  # the same images eval scores; a broken pre-processing would fall to chance


def test_config_file_with_command_line_override(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: resnet20\nmodel_kwargs: {width: 0.25}\nimage_size: 16\nepochs: 5\nbatch_size: 64\n")
    assert main(["train", "--config", str(cfg), "--epochs", "1", "-q", "--out", str(tmp_path / "r")]) == 0
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["epochs"] == 1 and s["model_kwargs"] == {"width": 0.25}


def test_models_and_summary_json(capsys):
    assert main(["models", "--json"]) == 0
    names = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert names["resnet50"]["params"] == 25_557_032 and "plain56" in names and "vgg19_bn" in names
    assert main(["summary", "resnet20", "--input", "1x28x28", "--classes", "7", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert isinstance(s["params"], int) and isinstance(s["macs"], int) and isinstance(s["receptive_field"], int)
    assert s["layers"][-1]["output"] == [7]
    assert main(["summary", "vgg11", "--model-kwargs", "bn=true", "kernel_size=5"]) == 0
    assert "BatchNorm2d" in capsys.readouterr().out


def test_parse_kwargs():
    assert parse_kwargs(["bn=false", "kernel_size=7", "width=0.5", "activation=sigmoid"]) == \
        {"bn": False, "kernel_size": 7, "width": 0.5, "activation": "sigmoid"}


@pytest.mark.parametrize("argv,culprit", [
    (["train", "--bogus"], "--bogus"),
    (["train", "--epochs", "many"], "--epochs"),
    (["train", "--optimizer", "rmsprop"], "--optimizer"),
    (["train", "--data", "/nonexistent/images"], "/nonexistent/images"),
    (["train", "--model", "alexnet", "--epochs", "1"], "alexnet"),
    (["train", "--model-kwargs", "bn"], "bn"),
    (["train", "--config", "/nonexistent.yaml"], "/nonexistent.yaml"),
    (["train", "--resume", "--out", "/tmp/cnnlab-no-such-run"], "/tmp/cnnlab-no-such-run"),
    (["summary", "alexnet", "--input", "3x32x32"], "features"),
    (["summary", "resnet19"], "resnet19"),
    (["eval", "--checkpoint", "/tmp/cnnlab-no-such-run", "--data", "digits"], "/tmp/cnnlab-no-such-run"),
])
def test_bad_input_is_one_line_and_exit_2(argv, culprit, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cnnlab", *argv], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnlab: error:") and culprit in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "runs").exists()


def test_broken_yaml_config(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1,\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "bad.yaml: not valid YAML" in capsys.readouterr().err
    bad.write_text("epochz: 3\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "unknown setting 'epochz'" in capsys.readouterr().err
