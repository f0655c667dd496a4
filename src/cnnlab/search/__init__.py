"""Neural architecture search on Optuna: a YAML space over the model builder's switches, strategies from
Optuna's samplers, each trial an ordinary cnnlab training run, the study in SQLite or PostgreSQL."""
