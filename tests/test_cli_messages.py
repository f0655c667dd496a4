"""What the command line says when a user slips: the closest name for a mistyped command, option, data set,
model or switch; one line for switches the data set sets; counts in good grammar."""
import pytest

from cnnlab.cli import main
from cnnlab.text import did_you_mean, plural, with_article


@pytest.mark.parametrize("argv,suggestion", [
    (["trian"], "did you mean 'train'?"),
    (["summary", "resnet20", "--inptu", "3x8x8"], "did you mean '--input'?"),
    (["eval", "--checkpoint", "x", "--weights", "bets"], "did you mean 'best'?"),
    (["summary", "resnet2"], "did you mean 'resnet20'?"),
    (["summary", "resnet20", "--model-kwargs", "bm=false"], "did you mean 'bn'?"),
    (["augment", "--data", "digts", "--policy", "flip", "--out", "x.png"], "did you mean 'digits'?"),
    (["train", "--epohcs", "3"], "did you mean '--epochs'?"),
    (["train", "--model", "resnet2"], "did you mean 'resnet20'?"),
])
def test_a_slip_gets_the_closest_name_in_one_line(argv, suggestion, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert suggestion in err and err.count("\n") == 1 and "Traceback" not in err


def test_no_suggestion_where_nothing_is_close():
    assert did_you_mean("xyz", ["bn", "width"]) == ""
    assert did_you_mean("resnet2", ["resnet32", "resnet20"]) == "; did you mean 'resnet20'?"


@pytest.mark.parametrize("argv", [
    ["summary", "resnet20", "--model-kwargs", "num_classes=5"],
    ["summary", "resnet20", "--model-kwargs", "in_channels=3"],
    ["train", "--model-kwargs", "num_classes=5", "--epochs", "1"],
])
def test_switches_the_data_set_sets_are_one_line(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "the data set sets" in err and err.count("\n") == 1 and "Traceback" not in err


def test_counts_and_articles():
    assert [plural(1, "epoch"), plural(2, "epoch"), plural(1, "class"), plural(1797, "image")] == \
        ["1 epoch", "2 epochs", "1 class", "1,797 images"]
    assert with_article("int") == "an int" and with_article("float") == "a float"


def test_wrong_switch_type_reads_well(capsys):
    assert main(["summary", "resnet20", "--model-kwargs", "kernel_size=3.5"]) == 2
    assert "must be an int" in capsys.readouterr().err


def test_every_option_has_help_and_shows_its_default():
    import argparse

    from cnnlab.cli import build_parser

    parser = build_parser(train_options=False)
    assert "SUPPRESS" not in parser.format_help() and "search-report" not in parser.format_help()
    for name, command in parser._commands.items():
        if name == "train":  # its options carry their help and defaults in TrainConfig's fields
            continue
        formatter = command.formatter_class(command.prog)
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            shown = formatter._get_help_string(action)
            assert action.help and action.help != argparse.SUPPRESS, f"{name} {action.dest}: no help"
            if action.default not in (None, False):
                assert "default" in shown, f"{name} {action.dest}: default {action.default} not shown"
        command.format_help()  # every help string formats (no stray %)
    from cnnlab.train.config import FIELDS, flag

    train_help = build_parser(train_options=True)._commands["train"].format_help()  # "16:20%" formats too
    assert all(flag(name) in train_help for name in FIELDS)


LONG = "x" * 300  # a path component over the 255 bytes a file name may have


@pytest.mark.parametrize("argv", [
    ["train", "--model", "cnn", "--epochs", "1", "-q", "--out", f"o/{LONG}"],
    ["train", "--model", "cnn", "--epochs", "1", "-q", "--data", LONG, "--out", "o"],
    ["train", "--config", f"{LONG}.yaml", "--out", "o"],
    ["eval", "--checkpoint", LONG],
    ["report", LONG],
    ["diagnose", LONG],
    ["summary", LONG],
    ["augment", "--policy", "flip", "--out", f"o/{LONG}.png"],
])
def test_a_file_name_too_long_for_the_file_system_is_one_line(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cnnlab: error:") and "xxxx" in err[0], err


@pytest.mark.parametrize("argv,message", [
    # an unset shell variable: '' would be '.', every image below the current folder predicted
    (["predict", "--checkpoint", "run", ""], "argument IMAGE: an empty path"),
    (["summary", "resnet20", "--input", ""], "--input must look like 3x32x32"),  # not the default shape
    (["summary", "resnet20", "--model-kwargs", "width=1", "width=2"], "'width' is given twice"),  # 2 won
])
def test_an_empty_value_is_refused_not_read_as_a_default(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
