"""Architecture search on Optuna, end to end on digits with tiny budgets."""
import json
import os

import optuna
import pytest
import torch
import yaml

from cnnlab import CnnlabError
from cnnlab.cli import main
from cnnlab.models import create_model
from cnnlab.search.space import load_space, sample

SMALL = ["--data", "digits", "--epochs", "1", "--image-size", "16", "--strategy", "random"]


def test_ready_spaces_load_and_bad_spaces_are_named(tmp_path):
    for name in ("vgg-like", "resnet-like", "mixed"):
        assert "stages" in load_space(name)
    bad = tmp_path / "bad.yaml"
    for text, message in (("depth: [1, 2]", "unknown key 'depth'"), ("width: []", "lists no choices"),
                          ("lr: {min: 1, max: 0}", "min <= max"), ("[1, 2]", "expected a mapping"),
                          # sizes past which a draw could not be built, or would take minutes to check
                          ("stages: {min: 1000000, max: 1000000}", "from 1 to 16"),
                          ("blocks: {min: 100000, max: 100000}", "from 1 to 100"),
                          ("width: [1000000000000]", "from 1 to 16384"), ("kernel: [65]", "from 1 to 63")):
        bad.write_text(text)
        with pytest.raises(CnnlabError, match=message):
            load_space(str(bad))
    with pytest.raises(CnnlabError, match="no such file, nor a ready space"):
        load_space("nowhere.yaml")


def test_choices_are_conditional_on_the_stages_and_head_drawn():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space = {"stages": {"min": 1, "max": 3}, "width": [8, 16], "head": ["gap", "fc"], "fc_layers": {"min": 1, "max": 2},
             "fc_width": [32], "lr": {"min": 0.01, "max": 0.1, "log": True}, "group": ["none", "p4m"],
             "padding": ["same", "valid"]}
    for _ in range(20):
        trial = study.ask()
        arch, settings = sample(trial, space)
        n = len(arch["stages"])
        assert {f"stage{i}_width" for i in range(n)} <= set(trial.params)
        assert f"stage{n}_width" not in trial.params  # a width exists only if its stage does
        assert ("fc_layers" in trial.params) == (arch["head"]["type"] == "fc")
        assert 0.01 <= settings["lr"] <= 0.1
        assert arch["group"] == trial.params["group"]  # equivariant layers on or off
        assert arch["padding"] == trial.params["padding"]
        model = create_model("cnn", num_classes=10, arch=arch)  # every draw builds, at its minimum input size
        model.eval()(torch.zeros(1, 3, model.min_input_size, model.min_input_size))
        study.tell(trial, 0.5)


def test_search_trains_rejects_restarts_without_retraining_and_exports_a_trainable_best(tmp_path, capsys):
    out = tmp_path / "search"
    assert main(["search", "--space", "mixed", "--trials", "4", "--out", str(out), "--max-params", "1000000",
                 *SMALL]) == 0
    printed = capsys.readouterr()
    assert "4 trained" in printed.out and "rejected before training" in printed.out  # rejections are not in the 4
    progress = printed.err.splitlines()  # no long silence: trials done / total, the best so far, the architecture
    assert any(line.startswith("search: trial #") and "(0/4 trained" in line and (" relu " in line or " gelu " in line)
               for line in progress), progress
    assert any("(4/4 trained, best 0." in line for line in progress), progress
    result_dirs = sorted((out / "trials").iterdir())
    stamps = [(d / "summary.json").stat().st_mtime for d in result_dirs]
    assert main(["search", "--space", "mixed", "--trials", "4", "--out", str(out), "--max-params", "1000000",
                 *SMALL, "-q", "--json"]) == 0  # restarted: the study is complete, nothing trains again
    assert [(d / "summary.json").stat().st_mtime for d in result_dirs] == stamps
    printed = capsys.readouterr()
    assert printed.err == "" and len(json.loads(printed.out)["leaderboard"]) == 4  # -q: the result, no progress
    assert main(["search", "report", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["leaderboard"]) == 4 and report["trials"] == 4 + len(report["rejected"])
    assert all(r["params"] <= 1000000 for r in report["leaderboard"]) and report["rejected"]
    reasons = [r["reason"] for r in report["rejected"]]  # too big, or too small an input for unpadded convs
    assert all("more than --max-params" in r or "need inputs of at least" in r for r in reasons), reasons
    assert any("more than --max-params" in r for r in reasons), reasons
    accs = [r["val_accuracy"] for r in report["leaderboard"]]
    assert accs == sorted(accs, reverse=True) and any(r["pareto"] for r in report["leaderboard"])
    best = yaml.safe_load((out / "best_model.yaml").read_text())
    assert best["model"] == "cnn" and best["model_kwargs"]["arch"] == report["leaderboard"][0]["arch"]
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["train", "--model-config", str(out / "best_model.yaml"), "--epochs", "1", "--image-size", "16",
                 "--out", str(tmp_path / "retrain"), "-q"]) == 0
    summary = json.loads((tmp_path / "retrain" / "summary.json").read_text())
    assert summary["model_kwargs"]["arch"] == best["model_kwargs"]["arch"]


def test_architectures_impossible_for_the_input_are_rejected_with_the_reason(tmp_path, capsys):
    space = tmp_path / "deep.yaml"
    space.write_text("stages: 4\nwidth: [8]\n")
    assert main(["search", "--space", str(space), "--trials", "1", "--out", str(tmp_path / "s"), "--data", "digits",
                 "--image-size", "4", "--epochs", "1"]) == 2  # nothing in this space can be trained: one line
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "100 architectures in a row were rejected" in err
    assert "3 downsamplings need inputs of at least 8x8, the data is 4x4" in err
    assert not (tmp_path / "s" / "trials").exists()
    assert main(["search", "report", str(tmp_path / "s")]) == 0
    assert "rejected #0: 3 downsamplings need inputs of at least 8x8" in capsys.readouterr().out


def test_search_errors_are_one_line(tmp_path, capsys):
    assert main(["search", "--space", "mixed", "--trials", "0", "--out", str(tmp_path)]) == 2
    assert main(["search", "--space", "mixed", "--trials", "2", "--out", str(tmp_path), "--max-latency", "0"]) == 2
    assert "--max-latency must be positive" in capsys.readouterr().err
    cores = len(os.sched_getaffinity(0))
    for workers in ("0", str(cores + 1), str(2 ** 70)):  # each worker needs a core of its own
        assert main(["search", "--space", "mixed", "--trials", "2", "--out", str(tmp_path / "w"),
                     "--workers", workers]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--workers must be between 1 and {cores}" in err, err
    assert not (tmp_path / "w").exists()
    assert main(["search", "report", str(tmp_path / "none")]) == 2
    assert "no study.db here" in capsys.readouterr().err
    assert main(["train", "--model-config", str(tmp_path / "missing.yaml")]) == 2
    assert "--model-config" in capsys.readouterr().err
    endless = "/dev/zero"  # read as a space, it would fill the memory: the reading stops at a cap
    assert main(["search", "--space", endless, "--trials", "1", "--out", str(tmp_path / "z")]) == 2
    assert "/dev/zero: over 16 MiB, too large for a file of settings" in capsys.readouterr().err


def _search_then_report(out, capsys, *options) -> dict:
    assert main(["search", "--space", "resnet-like", "--out", str(out), "--data", "digits", "--image-size", "16",
                 *options]) == 0
    capsys.readouterr()
    assert main(["search", "report", str(out), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_multi_objective_search_returns_a_pareto_front_and_refuses_a_pruner(tmp_path, capsys):
    report = _search_then_report(tmp_path / "mo", capsys, "--trials", "4", "--strategy", "nsga2",
                                 "--objectives", "accuracy,params", "--epochs", "1")
    assert report["objectives"] == 2
    front = [r for r in report["leaderboard"] if r["pareto"]]
    for r in report["leaderboard"]:  # nothing off the front beats a front member on both objectives
        if not r["pareto"]:
            assert any(f["val_accuracy"] >= r["val_accuracy"] and f["params"] <= r["params"] for f in front)
    assert main(["search", "--space", "resnet-like", "--trials", "2", "--out", str(tmp_path / "x"),
                 "--objectives", "accuracy,params", "--pruner", "hyperband"]) == 2
    assert "Optuna cannot prune several objectives" in capsys.readouterr().err


def test_hyperband_stops_unpromising_trials_early(tmp_path, capsys):
    report = _search_then_report(tmp_path / "hb", capsys, "--trials", "6", "--pruner", "hyperband", "--epochs", "4",
                                 "--strategy", "random", "--image-size", "8")  # the last --image-size counts
    assert report["pruned"] and all(p["epochs"] < 4 for p in report["pruned"])
    assert len(report["pruned"]) + len(report["leaderboard"]) == 6


@pytest.mark.all_cores  # a worker per core
def test_two_workers_share_one_study(tmp_path, capsys):
    out = tmp_path / "two"
    # --work=2: any spelling argparse accepts (an abbreviation, with "="); the helper is started from the parsed
    # options, not from the command line as typed
    assert main(["search", "--space", "resnet-like", "--trials", "4", "--out", str(out), "--work=2",
                 "--data", "digits", "--epochs", "1", "--image-size", "16", "--strategy", "random"]) == 0
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{out / 'study.db'}")
    states = [t.state for t in study.trials]
    assert 4 <= len(states) <= 5 and all(s == optuna.trial.TrialState.COMPLETE for s in states)
    assert len(list((out / "trials").iterdir())) == len(states)  # both processes wrote trials into one study
    choices = [t.params for t in study.trials]
    assert all(a != b for i, a in enumerate(choices) for b in choices[i + 1:])  # no architecture trained twice
    threads = [json.loads(s.read_text())["threads"] for s in (out / "trials").glob("*/summary.json")]
    cores = len(os.sched_getaffinity(0))
    assert len(threads) == len(states) and max(threads) == max(1, -(-cores // 2))  # each worker: half the cores


def test_regularized_evolution_mutates_one_choice_of_a_good_recent_parent():
    from cnnlab.search.evolution import RegularizedEvolutionSampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize",
                                sampler=RegularizedEvolutionSampler(population=4, sample_size=2, seed=0))
    study.optimize(lambda t: t.suggest_int("a", 0, 10) + t.suggest_float("c", 0, 1) +
                   (t.suggest_categorical("b", ["x", "y", "z"]) == "z"), n_trials=24)
    children = [t for t in study.trials if "evolution" in t.system_attrs]
    assert len(children) == 20  # the first 4 are random
    for child in children:
        plan = child.system_attrs["evolution"]
        parent = study.trials[plan["parent"]]
        assert child.number - 4 <= plan["parent"] < child.number  # one of the newest 4 (aging)
        assert {k for k in child.params if child.params[k] != parent.params[k]} <= {plan["mutated"]}
    random_best = max(t.value for t in study.trials[:4])
    assert study.best_value > random_best  # evolution improved on the random start


def test_a_diverging_trial_fails_with_its_diagnosis_and_the_search_goes_on(tmp_path, capsys):
    space = tmp_path / "hot.yaml"  # no batch norm and a learning rate far too high: NaN within an epoch
    space.write_text("stages: 2\nwidth: [16]\nbn: false\nskip: false\nlr: 30.0\n")
    assert main(["search", "--space", str(space), "--trials", "2", "--out", str(tmp_path / "s"), "--data", "digits",
                 "--image-size", "16", "--epochs", "2"]) == 0
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}")
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed and "training stopped at step" in failed[0].user_attrs["stopped"]
    assert "diverged: training stopped" in capsys.readouterr().out


def test_latency_is_measured_before_training_and_bounds_the_search(tmp_path, capsys):
    from cnnlab.models.summary import measure_latency_ms

    space = tmp_path / "wide.yaml"
    space.write_text("stages: 2\nblocks: 2\nwidth: [4, 256]\nkernel: 3\n")
    arch = lambda w: {"stages": [{"blocks": 2, "width": w, "kernel": 3}] * 2}  # noqa: E731
    fast, slow = (measure_latency_ms(create_model("cnn", num_classes=10, in_channels=1, arch=arch(w)), (1, 16, 16))
                  for w in (4, 256))
    assert slow > 5 * fast  # 4,000 times the multiply-adds
    limit = (fast * slow) ** 0.5
    report = _search_then_report(tmp_path / "lat", capsys, "--space", str(space), "--trials", "3", "--epochs", "1",
                                 "--strategy", "nsga2", "--objectives", "accuracy,latency", "--max-latency",
                                 f"{limit:.4f}")
    assert report["pareto_against"] == "latency_ms" and len(report["leaderboard"]) == 3
    assert all(r["latency_ms"] <= limit for r in report["leaderboard"])
    assert report["rejected"] and all("more than --max-latency" in r["reason"] for r in report["rejected"])
    assert all(r["arch"]["stages"] != arch(256)["stages"] for r in report["leaderboard"])


def test_tpe_models_only_after_enough_architectures_were_trained():
    from cnnlab.search.run import make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = make_sampler("tpe", seed=0, budget=16)  # 4 random start-up trials for a budget of 16
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def objective(t):
        x = t.suggest_float("x", 0, 1)
        if x > 0.3:  # most of the space is rejected before training
            t.set_user_attr("rejected", "too big")
            raise optuna.TrialPruned()
        return x

    warm = []
    for _ in range(40):
        study.optimize(objective, n_trials=1)
        warm.append(sampler._random_now)  # how that trial was sampled
    trained = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    # random until 4 trials were trained, however many were rejected meanwhile; then TPE
    assert len(study.trials) - len(trained) > 10  # many rejected
    assert warm.index(False) == trained[3].number + 1
