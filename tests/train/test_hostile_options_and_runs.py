"""Hostile options and tampered run folders: one line naming the culprit, exit status 2, never a traceback,
and nothing allocated that would not fit."""
import json
import shutil

import pytest

from cnnlab.cli import main

SMALL = ["--model", "resnet20", "--model-kwargs", "width=0.5", "--image-size", "16", "--epochs", "1", "-q"]


def one_line_error(capsys, argv, match):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("cnnlab: error:") and "Traceback" not in err[0], err
    assert match in err[0], err[0]


@pytest.mark.parametrize("extra, match", [
    (["--seed", "-1"], "--seed must be between 0 and 2^32-1"),
    (["--seed", str(2 ** 70)], "--seed must be between 0 and 2^32-1"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--holdout", "0"], "--holdout"),
    (["--holdout", "-1"], "--holdout"),
    (["--holdout", "2.5"], "--holdout"),
    (["--image-size", "100000"], "GiB"),
    (["--model-kwargs", "width=1e7"], "too large to build"),
    (["--model-kwargs", "width=1e30"], "too large to build"),
    (["--model-kwargs", "kernel_size=99999999999999999999"], "too large to build"),
    (["--model-kwargs", "width=nan"], "width must be a positive number"),
    (["--epochs", "99999999999999999999999"], "--epochs must be at most 100,000"),
    (["--schedule", "step", "--step-size", "0"], "--step-size must be at least 1"),
    (["--schedule", "step", "--gamma", "1e308"], "--gamma must be in [0, 1]"),
    (["--data", ""], "--data"),
    (["--config", "/dev/zero"], "/dev/zero: over 16 MiB, too large for a file of settings"),
    (["--prune", "0.5"], "--prune must be in [0, 0.5)"),
    (["--early-stop", "3", "--eval-every", "0"], "--early-stop 3 counts validation passes"),
    (["--prune", "-0.1"], "--prune must be in [0, 0.5)"),
    (["--prune", "0.3", "--epochs", "3", "--batch-size", "100000"], "--prune 0.3 leaves"),
    (["--lr-scale", "conv1.weight=0"], "--lr-scale: expected PATTERN=FACTOR items with a factor from 0.0001"),
    (["--lr-scale", "conv1.weight=nan"], "got 'conv1.weight=nan'"),
    (["--lr-scale", "conv1.weight=1e308"], "got 'conv1.weight=1e308'"),
    (["--lr-scale", "whiten.bias=64"], "--lr-scale whiten.bias: no trainable parameter of resnet20 has that name"),
    (["--freeze-from", "100%:1"], "needs a share below 100%"),
    (["--freeze-from", "1e3%:1"], "expected EPOCH:LAYERS or PERCENT%:LAYERS"),
    (["--freeze-from", "\u0663%:1"], "expected EPOCH:LAYERS or PERCENT%:LAYERS"),  # an Arabic-Indic 3
    (["--lr-scale", "*=\u0663"], "--lr-scale: expected PATTERN=FACTOR"),
    (["--lr-scale", "*=1_0"], "--lr-scale: expected PATTERN=FACTOR"),
    (["--lr-scale", "fc.weight=1e4,fc.weight=1e4"], "multiply the rate of fc.weight by 1e+08 in all"),
    (["--lr-scale", ",".join(["fc.weight=1e-4"] * 100)], "multiply the rate of fc.weight by 0 in all"),
    (["--norm-lr-scale", "0", "--decay-bn-and-bias"], "--norm-lr-scale must be from 0.0001 to 10000, got 0"),
    (["--warmup-epochs", "5"], "--warmup-epochs 5 is as long as the run's 1 epoch or longer"),
    (["--holdout", "0.1"], "--holdout 0.1: digits has a test split of its own, which is what is tested on"),
    (["--holdout", "0.2"], "--holdout 0.2: digits has a test split of its own"),  # the default's value, named
    (["--warmup-epochs", "1", "--schedule", "cosine"], "--warmup-epochs 1 is as long as the run's 1 epoch"),
])
def test_hostile_option_is_one_line(tmp_path, capsys, extra, match):
    one_line_error(capsys, ["train", *SMALL, *extra, "--out", str(tmp_path / "r")], match)
    assert not (tmp_path / "r" / "summary.json").exists()


def test_out_naming_a_file_and_config_naming_a_folder(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    one_line_error(capsys, ["train", *SMALL, "--out", str(tmp_path / "file")], "is a file, not a folder")
    one_line_error(capsys, ["train", *SMALL, "--config", str(tmp_path), "--out", str(tmp_path / "r")],
                   "is a folder, not a YAML file")


@pytest.mark.parametrize("text, match", [
    ("model_kwargs: [1, 2]\n", "'model_kwargs' must be a dict"),
    ("- epochs\n", "expected a mapping of settings"),
    ("epochs: !!python/object/apply:os.system ['true']\n", "not valid YAML"),
    ("lr: fast\n", "'lr' must be a float"),
    ("bogus: 1\n", "unknown setting 'bogus'"),
    ("freeze_from: 7:3\n", "got 423 (quote it: YAML reads unquoted text such as 7:3 as a number)"),
    # a few hundred bytes whose aliases expand to 10^9 values, which any message quoting the value would build
    ("data: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n" for i in range(1, 9)), "line 2: an alias"),
    ("lr: 0.1\nepochs: 1\nlr: 0.05\n", "line 3: the key 'lr' is given twice"),
])
def test_hostile_config_file_is_one_line(tmp_path, capsys, text, match):
    (tmp_path / "run.yaml").write_text(text)
    one_line_error(capsys, ["train", *SMALL, "--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "r")],
                   match)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "r"
    assert main(["train", *SMALL, "--out", str(out)]) == 0
    return out


def _copy(run, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(run, target)
    return target


def _latest(run):
    return run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()


def _counter(key, value):
    """A damage: one counter of the newest checkpoint's state.json set to `value`."""
    def damage(run):
        path = _latest(run) / "state.json"
        state = json.loads(path.read_text())
        for item in state["__dict__"]:
            if item[0] == key:
                item[1] = value(run) if callable(value) else value
        path.write_text(json.dumps(state))
    return damage


def _metrics_end(run):
    return (run / "metrics.jsonl").stat().st_size


def _foreign_checkpoint(*names):
    """A damage: files of the newest checkpoint replaced by those of a run trained with another optimiser."""
    def damage(run):
        other = run.parent / "adamw"
        assert main(["train", *SMALL, "--optimizer", "adamw", "--out", str(other)]) == 0
        for name in names:
            shutil.copy(_latest(other) / name, _latest(run) / name)
    return damage


@pytest.mark.parametrize("damage, match", [
    (lambda r: (r / "config.yaml").write_text("!!python/object/apply:os.system ['true']\n"), "config.yaml"),
    (lambda r: (r / "config.yaml").write_text("- a list\n"), "expected a mapping of settings"),
    (lambda r: (r / "config.yaml").unlink(), "config.yaml: missing"),
    (lambda r: (r / "checkpoints" / "latest").write_text("../../etc"), "not a checkpoint folder"),
    (lambda r: (_latest(r) / "model.safetensors").write_bytes(b"\x00junk" * 10), "model.safetensors"),
    (lambda r: (_latest(r) / "tensors.safetensors").write_bytes(b"junk"), "tensors.safetensors"),
    (lambda r: (_latest(r) / "state.json").write_text("{"), "state.json"),
    (lambda r: (r / "checkpoints" / "latest").write_bytes(b"\xff\xfe"), "latest"),
    (_counter("step", 10 ** 30), "step"),
    (_counter("step", -5), "'step'"),
    (_counter("step", "abc"), "'step'"),
    (_counter("best_accuracy", "x"), "'best_accuracy'"),
    (_counter("metrics_bytes", -1), "'metrics_bytes'"),
    (_counter("best_accuracy", 5.0), "best_accuracy is 5.0"),
    (_counter("best_epoch", 777), "best_epoch is 777"),
    (_counter("lr_halvings", 100_000), "lr_halvings is 100000"),
    (_counter("images_seen", 2 ** 62), "images_seen"),
    (_counter("bad_epochs", 50), "bad_epochs is 50"),
    (_counter("metrics_bytes", 10 ** 8), "metrics.jsonl"),
    (_counter("metrics_bytes", lambda r: _metrics_end(r) - 1), "metrics.jsonl"),  # mid-line: not its log
    (_foreign_checkpoint("state.json", "tensors.safetensors"), "does not fit"),
    (_foreign_checkpoint("tensors.safetensors"), "does not fit"),
])
def test_tampered_run_folder_refuses_resume_in_one_line(finished_run, tmp_path, capsys, damage, match):
    run = _copy(finished_run, tmp_path)
    damage(run)
    log = (run / "metrics.jsonl").read_bytes()
    one_line_error(capsys, ["train", "--resume", "--out", str(run), "--epochs", "2", "-q"], match)
    assert (run / "metrics.jsonl").read_bytes() == log  # refused before anything is written


def test_resuming_with_fewer_epochs_than_trained_is_refused(finished_run, tmp_path, capsys):
    run = _copy(finished_run, tmp_path)
    assert main(["train", "--resume", "--out", str(run), "--epochs", "2", "-q"]) == 0
    capsys.readouterr()
    one_line_error(capsys, ["train", "--resume", "--out", str(run), "--epochs", "1", "-q"], "--epochs")


def test_a_validation_fraction_that_holds_out_no_image_is_one_line_before_training(tmp_path, capsys):
    from PIL import Image

    for cls in ("a", "b"):  # 3 images a class: the default 10% rounds to none
        (tmp_path / "tiny" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (12, 12), (80 * i, 0, 0)).save(tmp_path / "tiny" / cls / f"{i}.png")
    one_line_error(capsys, ["train", "--data", str(tmp_path / "tiny"), "--model", "cnn", "--epochs", "1",
                            "--out", str(tmp_path / "run")], "--val-fraction 0.1 holds out no image")
    assert not (tmp_path / "run").exists()
