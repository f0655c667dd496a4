"""`cnnlab search`: each trial draws an architecture (and training settings) from the space, checks it
against the constraints before any training, and trains it as an ordinary cnnlab run in
`<out>/trials/<number>`; Optuna's storage (SQLite in `<out>/study.db` unless --storage says otherwise) holds
the study, so a restarted search continues where it stopped and never trains a finished trial again."""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import optuna
import torch

from ..data import load_dataset
from ..errors import CnnlabError, TrainingStopped
from ..models import create_model
from ..models.summary import measure_latency_ms, summarize
from ..runtime.device import core_shares, running_on, usable_cores
from ..runtime.memory import total_memory, training_bytes
from ..train import TrainConfig, train
from . import OBJECTIVES, PRUNERS, STRATEGIES
from .evolution import RegularizedEvolutionSampler
from .report import check_study_file, describe
from .space import load_space, sample

HEARTBEAT_SECONDS = int(os.environ.get("CNNLAB_SEARCH_HEARTBEAT", "10"))  # a dead worker's trial is retried
# after 3 missed heartbeats
MAX_REJECTED_IN_A_ROW = 100  # then the space or the constraints leave (almost) nothing to train


def trained(t: optuna.trial.FrozenTrial) -> bool:
    """A trial that spent training: complete, stopped early by the pruner, or diverged. Architectures
    rejected before training do not count against --trials, nor does a trial whose worker died (it is retried)."""
    if t.state == optuna.trial.TrialState.COMPLETE:
        return True
    if t.state == optuna.trial.TrialState.PRUNED:
        return "rejected" not in t.user_attrs
    return t.state == optuna.trial.TrialState.FAIL and "stopped" in t.user_attrs


def _infeasible(t: optuna.trial.FrozenTrial) -> tuple[float]:
    # a rejected architecture counts as infeasible, so TPE and NSGA-II learn to stay away from that region
    # instead of ranking it among the trials that were trained and merely did badly
    return (1.0 if "rejected" in t.user_attrs else 0.0,)


class WarmStartTPE(optuna.samplers.TPESampler):
    """TPE that samples at random until `start` trials were trained. Optuna's own start-up count includes
    the architectures rejected before training, and TPE fitted to one or two trained trials only copies them."""

    def __init__(self, start: int, seed: int, **kwargs) -> None:
        super().__init__(seed=seed, n_startup_trials=0, **kwargs)
        self._start, self._warm_up, self._random_now = start, optuna.samplers.RandomSampler(seed=seed), True

    def _warming_up(self, study: optuna.Study) -> bool:
        return sum(map(trained, study.get_trials(deepcopy=False))) < self._start

    def before_trial(self, study, trial) -> None:  # decided once per trial, not once per choice
        self._random_now = self._warming_up(study)
        super().before_trial(study, trial)

    def sample_relative(self, study, trial, search_space):
        return {} if self._random_now else super().sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        sampler = self._warm_up if self._random_now else super()
        return sampler.sample_independent(study, trial, param_name, param_distribution)


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial `number`'s draws: distinct for every trial of a study, the same for the same search."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class SeededPerTrial(optuna.samplers.BaseSampler):
    """Trial n draws from a sampler seeded with (seed, n), made afresh before the trial. A sampler seeded once
    per process replays its draws: a restarted search's new trials repeat the first run's, a retried trial
    (which keeps its choices) shifts the next new trial onto the killed one's draws, and workers started with
    the same seed train the same architectures. What the strategy learns comes from the study, not the object."""

    def __init__(self, make: Callable[[int], optuna.samplers.BaseSampler], seed: int) -> None:
        self._make, self._seed = make, seed
        self._sampler = make(seed)

    def __getattr__(self, name: str):  # the strategy's own state, e.g. WarmStartTPE._random_now
        if name == "_sampler":
            raise AttributeError(name)
        return getattr(self._sampler, name)

    def before_trial(self, study, trial) -> None:
        self._sampler = self._make(trial_seed(self._seed, trial.number))
        self._sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._sampler.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._sampler.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._sampler.reseed_rng()


def make_sampler(strategy: str, seed: int, budget: int = 40) -> optuna.samplers.BaseSampler:
    """`budget`: the trials the search will train. Optuna's defaults (TPE's 10 random start-up trials,
    evolution's population) assume hundreds; with a dozen, the search would be random search throughout.
    Each trial's draws are seeded from (seed, trial number): see `SeededPerTrial`."""
    if strategy not in STRATEGIES:
        raise CnnlabError(f"--strategy must be one of {', '.join(STRATEGIES)}, got '{strategy}'")
    start = min(10, max(4, budget // 4))

    def make(draw_seed: int) -> optuna.samplers.BaseSampler:
        with warnings.catch_warnings():  # multivariate/group TPE and constraints are "experimental" in Optuna
            warnings.simplefilter("ignore")
            if strategy == "random":
                return optuna.samplers.RandomSampler(seed=draw_seed)
            if strategy == "tpe":  # multivariate and grouped: it models choices jointly, within each conditional branch
                return WarmStartTPE(start, draw_seed, multivariate=True, group=True, constant_liar=True,
                                    constraints_func=_infeasible)
            if strategy == "evolution":
                return RegularizedEvolutionSampler(population=min(16, start), sample_size=max(2, start // 3),
                                                   seed=draw_seed)
            return optuna.samplers.NSGAIISampler(seed=draw_seed, constraints_func=_infeasible)

    return SeededPerTrial(make, seed)


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """Multi-fidelity: every trial reports its validation accuracy after each epoch, and the pruner stops
    the unpromising early (successive halving, or Hyperband's several brackets of it)."""
    if name not in PRUNERS:
        raise CnnlabError(f"--pruner must be one of {', '.join(PRUNERS)}, got '{name}'")
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)
    return optuna.pruners.HyperbandPruner(min_resource=1)


def _check_out(out: Path) -> None:
    """--out must be a folder or not exist yet (nor lie under a file): refused before anything is written."""
    for folder in (out, *out.parents):
        if folder.exists():
            if not folder.is_dir():
                raise CnnlabError(f"--out {out}: {'is' if folder == out else f'{folder} is'} a file, not a folder")
            return


def open_study(out: Path, study: str, storage: str | None, strategy: str = "tpe", seed: int = 0,
               objectives: tuple[str, ...] = ("accuracy",), pruner: str = "none", budget: int = 40) -> optuna.Study:
    sampler, stopper = make_sampler(strategy, seed, budget), make_pruner(pruner)  # bad choices: before any file
    from ..report.html import refuse_other_kind

    out = Path(out)
    _check_out(out)
    refuse_other_kind(out, "search")
    if storage is None:  # the default storage lives in --out; with a URL, --out is made once the study opened
        if (out / "study.db").exists():  # Optuna would write its tables into any SQLite file
            check_study_file(out)
        _make_folder(out)
    url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    where = f"--storage {url}" if storage else str(out / "study.db")
    optuna.logging.set_verbosity(logging.ERROR)  # a diverged trial is reported by `search report`, not as a traceback
    try:
        # heartbeats: a trial whose worker died stops beating, is marked failed and is queued again
        with warnings.catch_warnings():  # Optuna marks heartbeats "experimental"; they have been since 2.8
            warnings.simplefilter("ignore")
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)
            rdb = optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_SECONDS,
                                             grace_period=3 * HEARTBEAT_SECONDS,
                                             heartbeat_stale_trial_callback=retry)
        directions = ["maximize" if o == "accuracy" else "minimize" for o in objectives]
        opened = optuna.create_study(study_name=study, storage=rdb, sampler=sampler, directions=directions,
                                     pruner=stopper, load_if_exists=True)
    except Exception as exc:  # noqa: BLE001 - a bad URL, a missing driver, a server that does not answer
        raise CnnlabError(f"{where}: cannot open the study ({str(exc).splitlines()[0]})") from None
    _make_folder(out)
    return opened


def _make_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnlabError(f"--out {out}: cannot create the folder ({exc.strerror})") from None


def _trial_config(data: str, epochs: int, seed: int, image_size: int | None, run_dir: Path, arch: dict | None = None,
                  settings: dict | None = None, holdout: float | None = None) -> TrainConfig:
    if holdout is not None:
        settings = {"holdout": holdout, **(settings or {})}
    return TrainConfig(model="cnn", model_kwargs={"arch": arch} if arch else {}, data=data, epochs=epochs, seed=seed,
                       image_size=image_size, out=str(run_dir), quiet=True, report=False,
                       **(settings or {})).validate()


def _check_options(trials: int, workers: int, seed: int, objectives: tuple[str, ...], pruner: str,
                   limits: dict) -> None:
    if trials < 1:
        raise CnnlabError(f"--trials must be at least 1, got {trials}")
    cores = len(usable_cores())
    if not 1 <= workers <= cores:  # more would share cores, and slow each other more than they add
        raise CnnlabError(f"--workers must be between 1 and {cores} (a core each: the cores this process may "
                          f"use), got {workers}")
    if not 0 <= seed < 2 ** 32:
        raise CnnlabError(f"--seed must be between 0 and {2 ** 32 - 1}, got {seed}")
    for name, limit in limits.items():
        if limit is not None and not limit > 0:
            raise CnnlabError(f"--{name.replace('_', '-')} must be positive, got {limit}")
    if not objectives or objectives[0] != "accuracy" or len(set(objectives)) != len(objectives) or \
            any(o not in OBJECTIVES for o in objectives):
        raise CnnlabError(f"--objectives: accuracy first, then any of params, macs, latency; got {','.join(objectives)}")
    if len(objectives) > 1 and pruner != "none":
        # Optuna cannot prune multi-objective studies. The fallback: every trial trains the short --epochs
        # budget, and the Pareto front that `search report` lists is what to retrain fully.
        raise CnnlabError("--pruner works for single-objective searches only (Optuna cannot prune several "
                          "objectives); for a multi-objective search give a short --epochs and retrain the "
                          "Pareto front of `cnnlab search report` with --model-config")


def _check_fits(stats, batch_size: int) -> None:
    """An architecture whose training would not fit in memory (see `runtime.memory.training_bytes`) is rejected
    before anything is allocated."""
    need = training_bytes(stats.params, sum(math.prod(row.output) for row in stats.layers if row.output), batch_size)
    have = total_memory(torch.device("cuda") if torch.cuda.is_available() else None)
    if need > have:
        raise CnnlabError(f"needs at least {need / 2 ** 30:,.1f} GiB to train ({stats.params:,} parameters, batch "
                          f"{batch_size}), more than the {have / 2 ** 30:,.1f} GiB here")


def _standing(study: optuna.Study, trials: int) -> str:
    """'(3/20 trained, best 0.9512 by #1, 4 rejected)': the progress line's view of the whole study."""
    seen = study.get_trials(deepcopy=False)
    done = [t for t in seen if t.state == optuna.trial.TrialState.COMPLETE]
    best = max(done, key=lambda t: t.values[0], default=None)
    rejected = sum("rejected" in t.user_attrs for t in seen)
    return (f"({sum(map(trained, seen))}/{trials} trained" + (f", best {best.values[0]:.4f} by #{best.number}"
            if best else "") + (f", {rejected} rejected" if rejected else "") + ")")


def _settings_text(settings: dict) -> str:
    return "".join(f", {k.replace('_', ' ')} {v:.3g}" if isinstance(v, float) else f", {k.replace('_', ' ')} {v}"
                   for k, v in settings.items())


def _start_helpers(shares: list[set[int]] | None, count: int, options: dict) -> list:
    """`count` more processes joining the study, each running `run_search(**options)` as one worker on its
    share of the cores (shares[1:]; shares[0] is this process's): they are started from the options as parsed,
    never from the command line as typed."""
    spec = json.dumps({**options, "out": str(Path(options["out"]).resolve()), "workers": 1, "quiet": True})
    helpers = []
    for i in range(1, count + 1):
        log = tempfile.TemporaryFile()  # what a helper says on stderr, reported if it fails
        pin = (lambda cores=shares[i]: os.sched_setaffinity(0, cores)) if shares else None
        helpers.append((subprocess.Popen([sys.executable, "-c", "import sys; from cnnlab.search.run import "
                                          "helper_main; sys.exit(helper_main(sys.argv[1]))", spec],
                                         stdout=subprocess.DEVNULL, stderr=log, preexec_fn=pin), log))
    return helpers


def _wait_for(helpers: list) -> None:
    for i, (process, log) in enumerate(helpers, 2):
        status = process.wait()
        log.seek(0)
        said = log.read().decode(errors="replace").strip().splitlines()
        log.close()
        if status not in (0, 130, -signal.SIGINT):
            print(f"cnnlab: warning: search worker {i} exited with status {status}"
                  + (f": {said[-1]}" if said else ""), file=sys.stderr)


def helper_main(spec: str) -> int:
    """A helper worker of `run_search(workers=K)`: one line on stderr and exit 2 for an error, as the CLI."""
    options = json.loads(spec)
    try:
        run_search(**{**options, "objectives": tuple(options["objectives"])})
    except CnnlabError as exc:
        print(f"cnnlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C reaches every worker; the first one says so
        return 130
    return 0


def run_search(space_name: str, data: str, trials: int, study: str, out: Path, storage: str | None = None,
               strategy: str = "tpe", epochs: int = 3, seed: int = 0, max_params: int | None = None,
               max_macs: int | None = None, image_size: int | None = None, quiet: bool = True,
               objectives: tuple[str, ...] = ("accuracy",), pruner: str = "none",
               max_latency: float | None = None, workers: int = 1, holdout: float | None = None) -> optuna.Study:
    """`max_latency` and the `latency` objective: milliseconds per image at batch 1, measured before training
    on this machine in the precision the trial trains in (see `models.summary.measure_latency_ms`).
    `quiet=False`: a line on stderr as each trial starts (the study's standing and the architecture) and ends;
    the trials themselves always train without progress bars. `workers`: processes on this machine sharing
    the study, this one included. `holdout`: each trial's test split where the data has none (see train's
    --holdout). Every option is checked before the study is opened."""
    options = dict(locals())  # what helper workers run
    objectives = tuple(objectives)
    _check_options(trials, workers, seed, objectives, pruner,
                   {"max_params": max_params, "max_macs": max_macs, "max_latency": max_latency})
    make_sampler(strategy, seed)  # a bad --strategy or --pruner is refused before the data is read
    make_pruner(pruner)
    space = load_space(space_name)
    out = Path(out)
    _check_out(out)
    _trial_config(data, epochs, seed, image_size, out / "trials" / "0000", holdout=holdout)
    ds = load_dataset(data, image_size=image_size)  # its shape and classes, for the checks before training
    size = image_size or ds.default_image_size or ds.image_size[0]
    s = open_study(out, study, storage, strategy, seed, objectives, pruner, trials)
    s.set_user_attr("objectives", list(objectives))  # for the report's Pareto front

    def say(line: str) -> None:
        if not quiet:
            print(f"search: {line}", file=sys.stderr, flush=True)

    def objective(trial: optuna.Trial) -> float:
        arch, settings = sample(trial, space)
        trial.set_user_attr("arch", arch)
        latency = None
        try:
            with torch.device("meta"):  # shapes only: an absurdly wide draw costs no memory
                shell = create_model("cnn", num_classes=ds.num_classes, in_channels=ds.channels, arch=arch)
                if size < shell.min_input_size:
                    valid = " and unpadded convs" if arch.get("padding") == "valid" else ""
                    raise CnnlabError(f"{len(arch['stages']) - 1} downsamplings{valid} need inputs of at least "
                                      f"{shell.min_input_size}x{shell.min_input_size}, the data is {size}x{size}")
                stats = summarize(shell, (ds.channels, size, size))
            if max_params and stats.params > max_params:
                raise CnnlabError(f"{stats.params:,} parameters, more than --max-params {max_params:,}")
            if max_macs and stats.macs > max_macs:
                raise CnnlabError(f"{stats.macs:,} MACs, more than --max-macs {max_macs:,}")
            _check_fits(stats, settings.get("batch_size", TrainConfig.batch_size))
            if max_latency or "latency" in objectives:
                model = create_model("cnn", num_classes=ds.num_classes, in_channels=ds.channels, arch=arch)
                latency = measure_latency_ms(model, (ds.channels, size, size))
                trial.set_user_attr("latency_ms", latency)
                if max_latency and latency > max_latency:
                    raise CnnlabError(f"{latency:.2f} ms per image measured, more than --max-latency {max_latency:g}")
        except CnnlabError as exc:  # rejected before training, with the reason kept in the study
            trial.set_user_attr("rejected", str(exc))
            raise optuna.TrialPruned(str(exc)) from None
        run_dir = out / "trials" / f"{trial.number:04d}"
        cfg = _trial_config(data, epochs, seed, image_size, run_dir, arch, settings, holdout)
        trial.set_user_attr("run_dir", str(run_dir))
        say(f"trial #{trial.number} {_standing(trial.study, trials)}: {describe(arch)}{_settings_text(settings)}")

        def report_epoch(record: dict) -> None:
            if len(objectives) == 1 and "val_accuracy" in record:
                trial.report(record["val_accuracy"], record["epoch"])
                if trial.should_prune():
                    trial.set_user_attr("pruned_after_epochs", record["epoch"])
                    raise optuna.TrialPruned(f"pruned after {record['epoch']} epochs")

        try:
            summary = train(cfg, on_epoch=report_epoch)
        except TrainingStopped as exc:  # diverged (NaN): the trial fails with the diagnosis, the search goes on
            trial.set_user_attr("stopped", str(exc))
            raise
        for key in ("params", "macs", "train_seconds", "test_accuracy"):
            trial.set_user_attr(key, summary[key])
        values = {"accuracy": summary["best_val_accuracy"], "params": summary["params"], "macs": summary["macs"],
                  "latency": latency}
        return tuple(values[o] for o in objectives) if len(objectives) > 1 else values["accuracy"]

    in_a_row, reason = 0, ""

    def stop_when_done(study: optuna.Study, last: optuna.trial.FrozenTrial) -> None:
        nonlocal in_a_row, reason
        in_a_row, reason = (in_a_row + 1, last.user_attrs["rejected"]) if "rejected" in last.user_attrs else (0, "")
        if last.state == optuna.trial.TrialState.COMPLETE:
            say(f"trial #{last.number} val accuracy {last.values[0]:.4f} in {last.user_attrs['train_seconds']:.1f}s "
                f"{_standing(study, trials)}")
        elif "pruned_after_epochs" in last.user_attrs:
            say(f"trial #{last.number} stopped by the pruner after {last.user_attrs['pruned_after_epochs']} epochs "
                f"{_standing(study, trials)}")
        elif "stopped" in last.user_attrs:
            say(f"trial #{last.number} diverged {_standing(study, trials)}")
        if in_a_row >= MAX_REJECTED_IN_A_ROW or sum(map(trained, study.get_trials(deepcopy=False))) >= trials:
            study.stop()

    # a restarted search runs only what is missing; other workers' trials count as they finish
    if sum(map(trained, s.get_trials(deepcopy=False))) < trials:
        # the study exists: helpers join it, each on its share of the cores (K workers of all-core threads thrash)
        shares = core_shares(workers) if workers > 1 else None
        helpers = _start_helpers(shares, workers - 1, options) if workers > 1 else []
        try:
            with running_on(shares[0] if shares else None):
                s.optimize(objective, callbacks=[stop_when_done], catch=(TrainingStopped,))
        finally:
            _wait_for(helpers)
    if in_a_row >= MAX_REJECTED_IN_A_ROW:
        raise CnnlabError(f"--space {space_name}: {in_a_row} architectures in a row were rejected before training "
                          f"(the last: {reason}); widen the space or the constraints")
    return s

