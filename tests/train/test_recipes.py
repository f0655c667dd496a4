"""A recipe's variants: the recipe's default unless --variant names one, recorded in config.yaml, and said
on stderr when the run starts."""
import pytest
import yaml

from cnnlab.cli import build_parser, main, train_config
from cnnlab.train.recipes import RECIPES, VARIANTS, pick_variant


def cli_config(argv):
    return train_config(build_parser(train_options=True).parse_args(["train", *argv]))


def test_the_recipe_picks_a_variant_and_an_option_overrides_it():
    picked, why = pick_variant("cifar10-fast")
    assert picked in VARIANTS and why
    cfg = cli_config(["--recipe", "cifar10-fast", "--data", "digits"])
    assert cfg.variant == picked
    assert cfg.optimizer == {**RECIPES["cifar10-fast"], **VARIANTS[picked]}["optimizer"]
    sgd = cli_config(["--recipe", "cifar10-fast", "--variant", "sgd", "--data", "digits"])
    assert (sgd.variant, sgd.optimizer, sgd.epochs, sgd.lookahead) == ("sgd", "sgd", 11, True)
    muon = cli_config(["--recipe", "cifar10-fast", "--variant", "muon", "--epochs", "3", "--data", "digits"])
    assert (muon.variant, muon.optimizer, muon.epochs, muon.progressive) == \
        ("muon", "muon", 3, VARIANTS["muon"].get("progressive", ""))


@pytest.mark.parametrize("options, native_bf16, gpu, reason", [
    ([], True, False, "native bf16"), ([], False, False, "trains in fp32"),
    (["--precision", "fp32"], True, False, "trains in fp32"), (["--precision", "bf16"], False, False, "trains in fp32"),
    (["--precision", "fp16"], True, False, "trains in fp32"), ([], False, True, "on a GPU"),
    (["--device", "cpu"], False, True, "trains in fp32"), (["--device", "cpu"], True, True, "native bf16"),
])
def test_the_pick_and_its_reason_follow_the_hardware_and_the_precision(monkeypatch, options, native_bf16, gpu,
                                                                       reason):
    import torch

    from cnnlab.runtime import device
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: native_bf16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    cfg = cli_config(["--recipe", "cifar10-fast", "--data", "digits", *options])
    picked, why = pick_variant("cifar10-fast", cfg.device, cfg.precision)
    assert cfg.variant == picked == "sgd" and reason in why


def test_a_cpu_without_native_bf16_is_told_what_the_cheaper_variant_costs(tmp_path, monkeypatch, capsys):
    from cnnlab.runtime import device
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    out = tmp_path / "run"
    assert main(["train", "--recipe", "cifar10-fast", "--data", "digits", "--epochs", "1", "--image-size", "16",
                 "--model-kwargs", "width=0.25", "--batch-size", "256", "--no-report", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "recipe cifar10-fast, variant sgd (the default: " in err and "trains in fp32" in err
    assert "--variant half spends under half the FLOPs" in err


def test_a_run_records_its_variant_and_says_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--recipe", "cifar10-fast", "--variant", "sgd", "--data", "digits", "--epochs", "1",
                 "--image-size", "16", "--model-kwargs", "width=0.25", "--batch-size", "256", "--no-report",
                 "--out", str(out)]) == 0
    assert "recipe cifar10-fast, variant sgd" in capsys.readouterr().err
    assert yaml.safe_load((out / "config.yaml").read_text())["variant"] == "sgd"


def test_a_resumed_run_keeps_its_variant_whatever_this_machine_would_pick(tmp_path):
    (tmp_path / "run.yaml").write_text("recipe: cifar10-fast\nvariant: sgd\n")
    cfg = cli_config(["--config", str(tmp_path / "run.yaml")])
    assert cfg.variant == "sgd" and cfg.optimizer == "sgd"


def test_bad_variants_are_one_line_and_exit_2(tmp_path, capsys):
    for argv, culprit in ([["--recipe", "cifar10-fast", "--variant", "adam"], "has the variants sgd, muon, half"],
                          [["--variant", "muon"], "give --recipe too"]):
        assert main(["train", *argv, "--data", "digits", "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--variant" in err and culprit in err, err


def test_the_half_variant_counts_at_most_half_the_sgd_recipe_s_flops_and_fits_short_runs():
    from cnnlab.train.progressive import parse_plan
    from cnnlab.train.recipes import settings_flops

    def flops(variant: str) -> float:  # on CIFAR-10's 40,000 training images, as benchmarks/work_to_accuracy.py
        return settings_flops({**RECIPES["cifar10-fast"], **VARIANTS[variant]}, 40_000)

    assert 0.47 < flops("half") / flops("sgd") <= 0.5
    assert flops("muon") / flops("sgd") == pytest.approx(8 / 11)
    short = cli_config(["--recipe", "cifar10-fast", "--variant", "half", "--epochs", "3", "--data", "digits"])
    assert parse_plan(VARIANTS["half"]["progressive"], 13) == [(10, 5), (24, 3)]  # the plan measured
    assert parse_plan(short.progressive, short.epochs) == [(10, 1)]  # the plan's shares fit a 3-epoch run

