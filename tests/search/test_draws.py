"""Each trial draws its own choices: a restarted search, a retried trial and concurrent workers never replay
another trial's draws, and the same seed gives the same draws (issues 13.6 and 15.2)."""
import warnings

import optuna
import pytest
import yaml

from cnnlab.cli import main
from cnnlab.search.run import make_sampler
from cnnlab.search.space import sample

SPACE = {"stages": {"min": 1, "max": 3}, "width": [8, 16, 32, 64], "kernel": [3, 5, 7], "head": ["gap", "fc"],
         "fc_layers": {"min": 1, "max": 2}, "fc_width": [32, 64], "lr": {"min": 0.01, "max": 0.3, "log": True},
         "weight_decay": {"min": 1.0e-5, "max": 1.0e-3, "log": True}}
STRATEGIES = ["random", "tpe", "evolution", "nsga2"]


@pytest.fixture(autouse=True)
def quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def _process(storage, strategy, seed=3):
    """A new `cnnlab search` process joining the study in `storage`: a fresh sampler, as after a restart."""
    return optuna.create_study(study_name="s", storage=storage, sampler=make_sampler(strategy, seed, budget=8),
                               load_if_exists=True)


def _draw(study) -> optuna.Trial:
    trial = study.ask()
    sample(trial, SPACE)
    return trial


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_restarted_search_does_not_replay_the_draws_of_its_first_run(strategy):
    storage = optuna.storages.InMemoryStorage()
    first = _process(storage, strategy)
    t0 = _draw(first)
    first.tell(t0, 0.5)
    t1 = _draw(_process(storage, strategy))  # `--trials 2` after `--trials 1`
    assert t1.number == 1 and t1.params != t0.params


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_retried_trial_and_the_next_new_one_differ(strategy):
    storage = optuna.storages.InMemoryStorage()
    study = _process(storage, strategy)
    killed = _draw(study)
    study.tell(killed, state=optuna.trial.TrialState.FAIL)  # its heartbeat stopped
    with warnings.catch_warnings():  # "experimental" in Optuna
        warnings.simplefilter("ignore")
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback()  # what `cnnlab search` registers
    retry(study, study.trials[0])  # queued again, with its choices
    restarted = _process(storage, strategy)
    retried = _draw(restarted)
    assert retried.params == killed.params  # the retry trains the same architecture again ...
    restarted.tell(retried, 0.5)
    new = _draw(restarted)
    assert new.params != killed.params  # ... and the next new trial is another one


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_concurrent_workers_draw_distinct_trials(strategy):
    storage = optuna.storages.InMemoryStorage()
    a, b = _process(storage, strategy, seed=0), _process(storage, strategy, seed=0)  # same command line
    ta, tb = _draw(a), _draw(b)  # both running at once
    assert ta.params != tb.params


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_same_seed_gives_the_same_draws(strategy):
    runs = []
    for _ in range(2):
        study = _process(optuna.storages.InMemoryStorage(), strategy)
        draws = []
        for _ in range(3):
            t = _draw(study)
            study.tell(t, t.params["lr"])
            draws.append(t.params)
        runs.append(draws)
    assert runs[0] == runs[1] and runs[0][0] != runs[0][1]


def test_search_trials_2_after_trials_1_trains_a_new_architecture(tmp_path, capsys):
    space = tmp_path / "tiny.yaml"
    space.write_text(yaml.safe_dump({"stages": 1, "width": [4, 8, 12, 16], "lr": {"min": 0.01, "max": 0.2}}))
    options = ["search", "--space", str(space), "--out", str(tmp_path / "s"), "--data", "digits", "--epochs", "1",
               "--image-size", "8", "--strategy", "random", "--seed", "3", "-q"]
    assert main([*options, "--trials", "1"]) == 0
    assert main([*options, "--trials", "2"]) == 0
    trials = optuna.load_study(study_name="search", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}").trials
    assert len(trials) == 2 and trials[0].params != trials[1].params
