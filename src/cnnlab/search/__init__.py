"""Neural architecture search on Optuna: a YAML space over the model builder's switches, strategies from
Optuna's samplers, each trial an ordinary cnnlab training run, the study in SQLite or PostgreSQL."""

# the choices, here so that the command line can offer them without importing Optuna or torch
STRATEGIES = ("random", "tpe", "evolution", "nsga2")
PRUNERS = ("none", "halving", "hyperband")
OBJECTIVES = ("accuracy", "params", "macs", "latency")
