"""`cnnlab search` and `cnnlab search report` on hostile and odd input: one line on stderr, exit 2, and no
study.db left behind by a search that was refused (issue 13); a clean `cnnlab --help` (issue 15)."""
import sqlite3

import optuna
import pytest
import torch

from cnnlab import CnnlabError
from cnnlab.cli import main

BASE = ["search", "--space", "resnet-like", "--trials", "2", "--data", "digits", "--epochs", "1"]


def _one_line_error(capsys, argv, *expected) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cnnlab: error: "), err
    for text in expected:
        assert text in err, err
    return err


@pytest.mark.parametrize("option, expected", [(["--strategy", "bayes"], "--strategy"),
                                              (["--pruner", "median"], "--pruner"),
                                              (["--objectives", "accuracy,size"], "--objectives")])
def test_a_bad_choice_is_named_and_leaves_no_study_behind(tmp_path, capsys, option, expected):
    err = _one_line_error(capsys, [*BASE, "--out", str(tmp_path / "s"), *option], expected, option[1])
    assert "storage" not in err
    assert not (tmp_path / "s").exists()


def _space(tmp_path, text: str | bytes) -> str:
    path = tmp_path / "space.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


@pytest.mark.parametrize("case, options, expected", [
    ("zero epochs", ["--epochs", "0"], "--epochs must be at least 1"),
    ("negative epochs", ["--epochs", "-2"], "--epochs must be at least 1"),
    ("negative seed", ["--seed", "-1"], "--seed"),
    ("huge seed", ["--seed", str(2 ** 70)], "--seed"),
    ("zero image size", ["--image-size", "0"], "--image-size"),
    ("space is a folder", ["--space", "{tmp}"], "is a folder"),
    ("space is empty", ["--space", "@"], "is empty"),
    ("space is a list", ["--space", "@- 1\n- 2\n"], "expected a mapping"),
    ("space is not YAML", ["--space", "@width: [1, 2\n"], "not valid YAML"),
    ("space is binary", ["--space", b"@\xff\xfe\x00\x01"], "not a text file"),
    ("space has an unknown key", ["--space", "@depth: [1, 2]\n"], "unknown key 'depth'"),
    ("width not a number", ["--space", "@width: [a, 8]\n"], "'width'"),
    ("stages a float range", ["--space", "@stages: {min: 1.5, max: 3}\n"], "'stages'"),
    ("stages a word", ["--space", "@stages: many\n"], "'stages'"),
    ("log range from zero", ["--space", "@lr: {min: 0, max: 0.1, log: true}\n"], "'lr'"),
    ("range ends of mixed types", ["--space", "@lr: {min: 0.1, max: fast}\n"], "'lr'"),
    ("a range of words", ["--space", "@downsample: {min: pool, max: stride}\n"], "'downsample'"),
    ("unknown activation", ["--space", "@activation: [relu, swish2]\n"], "'activation'"),
    ("fc width a mapping", ["--space", "@head: fc\nfc_width: [{a: 1}]\n"], "'fc_width'"),
    ("negative lr", ["--space", "@lr: -0.1\n"], "'lr'"),
    ("batch size zero", ["--space", "@batch_size: [0, 64]\n"], "'batch_size'"),
    ("out is a file", ["--out", "{file}"], "--out"),
    ("out under a file", ["--out", "{file}/s"], "--out"),
])
def test_hostile_options_are_one_line_and_leave_no_study(tmp_path, capsys, case, options, expected):
    (tmp_path / "afile").write_text("x")
    options = list(options)
    for i, value in enumerate(options):
        if isinstance(value, bytes) or value.startswith("@"):
            options[i] = _space(tmp_path, value[1:])
        elif "{" in value:
            options[i] = value.format(tmp=tmp_path, file=tmp_path / "afile")
    out = ["--out", str(tmp_path / "s")] if "--out" not in options else []
    _one_line_error(capsys, [*BASE, *out, *options], expected)
    assert not list(tmp_path.rglob("study.db"))


def test_search_report_on_something_that_is_not_a_study(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    _one_line_error(capsys, ["search", "report", str(tmp_path / "notes.txt")], "not a folder")
    _one_line_error(capsys, ["search", "report", str(tmp_path)], "no study.db here")
    (tmp_path / "bytes").mkdir()
    (tmp_path / "bytes" / "study.db").write_bytes(bytes(range(256)) * 8)
    _one_line_error(capsys, ["search", "report", str(tmp_path / "bytes")], "not a study database")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "study.db").write_bytes(b"")
    _one_line_error(capsys, ["search", "report", str(tmp_path / "empty")], "not a study database")
    other = tmp_path / "other"
    other.mkdir()
    with sqlite3.connect(other / "study.db") as db:  # an SQLite database of something else: read, never changed
        db.execute("create table notes (text)")
    before = (other / "study.db").read_bytes()
    _one_line_error(capsys, ["search", "report", str(other)], "not a study database")
    assert (other / "study.db").read_bytes() == before
    _one_line_error(capsys, ["search", "--space", "vgg-like", "--trials", "1", "--epochs", "1", "--image-size", "8",
                             "--out", str(other), "-q"], "not a study database")
    assert (other / "study.db").read_bytes() == before  # a search does not write its tables into it either


def test_help_lists_search_report_with_a_help_line(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "SUPPRESS" not in text and "search-report" not in text
    assert "search report" in text
    with pytest.raises(SystemExit):
        main(["search", "report", "--help"])
    assert "usage: cnnlab search report" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    text = capsys.readouterr().out
    assert "-q, --quiet" in text and "--json" in text


def test_an_architecture_too_big_for_memory_is_rejected_before_anything_is_allocated():
    from cnnlab.models import create_model
    from cnnlab.search.run import _check_fits, summarize  # summarize wherever the search takes it from

    with torch.device("meta"):  # as the search checks a draw: shapes only
        stats = [summarize(create_model("cnn", num_classes=10, in_channels=1, arch={"stages": [
                 {"blocks": blocks, "width": width, "kernel": 3}] * 4}), (1, 8, 8)) for blocks, width in
                 ((1, 8), (100, 16384))]  # the most the arch's bounds allow per stage: far past any memory
    _check_fits(stats[0], 128)
    with pytest.raises(CnnlabError, match=r"GiB to train \([\d,]{17} parameters, batch 128\), more than"):
        _check_fits(stats[1], 128)


def test_search_report_names_a_missing_study(tmp_path, capsys):
    optuna.create_study(study_name="search", storage=f"sqlite:///{tmp_path / 'study.db'}")
    _one_line_error(capsys, ["search", "report", str(tmp_path), "--study", "other"], "--study other: not in")


@pytest.mark.parametrize("attrs, culprit", [
    ({"arch": {"stages": [], "downsample": "pool", "skip": False, "bn": False, "activation": "relu",
               "head": {"type": "gap"}}}, "trial 0's 'arch'"),
    ({"params": "abc"}, "trial 0's 'params'"),
    ({"train_seconds": [1]}, "trial 0's 'train_seconds'"),
])
def test_a_tampered_trial_record_is_one_line_for_both_reports(tmp_path, capsys, attrs, culprit):
    good = {"arch": {"stages": [{"blocks": 1, "width": 8, "kernel": 3}], "downsample": "pool", "skip": False,
                     "bn": True, "activation": "relu", "head": {"type": "gap"}},
            "params": 1000, "macs": 5000, "train_seconds": 1.5, "run_dir": str(tmp_path / "trials" / "0")}
    study = optuna.create_study(study_name="search", storage=f"sqlite:///{tmp_path / 'study.db'}",
                                direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={**good, **attrs}))
    _one_line_error(capsys, ["search", "report", str(tmp_path)], culprit, "is not what `cnnlab search` records")
    _one_line_error(capsys, ["report", str(tmp_path)], culprit)
    assert not (tmp_path / "best_model.yaml").exists()
