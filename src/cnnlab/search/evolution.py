"""Regularized evolution (Real et al. 2019, "aging evolution") as an Optuna sampler: until `population`
trials are complete, architectures are random; after that, each new trial copies the best of `sample_size`
trials drawn from the newest `population` (older ones age out) and changes one of its choices at random."""
from __future__ import annotations

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState


class RegularizedEvolutionSampler(optuna.samplers.BaseSampler):
    def __init__(self, population: int = 16, sample_size: int = 4, seed: int | None = None) -> None:
        self.population, self.sample_size = population, sample_size
        self._rng = np.random.RandomState(seed)
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self._plans: dict[int, tuple[dict, str]] = {}  # trial number -> (parent's params, the one to mutate)

    def infer_relative_search_space(self, study, trial) -> dict:
        return {}

    def sample_relative(self, study, trial, search_space) -> dict:
        return {}

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(complete) < self.population:
            return
        newest = sorted(complete, key=lambda t: t.number)[-self.population:]
        picks = self._rng.choice(len(newest), size=min(self.sample_size, len(newest)), replace=False)
        parent = max((newest[i] for i in picks), key=lambda t: t.values[0])
        self._plans[trial.number] = (dict(parent.params), str(self._rng.choice(sorted(parent.params))))
        trial_attrs = {"parent": parent.number, "mutated": self._plans[trial.number][1]}
        # recorded with the trial (Optuna offers samplers no public setter for this)
        study._storage.set_trial_system_attr(trial._trial_id, "evolution", trial_attrs)

    def sample_independent(self, study, trial, param_name: str, param_distribution: BaseDistribution):
        plan = self._plans.get(trial.number)
        if plan is not None and param_name != plan[1] and param_name in plan[0]:
            value = plan[0][param_name]
            if param_distribution._contains(param_distribution.to_internal_repr(value)):
                return value
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._plans.pop(trial.number, None)
