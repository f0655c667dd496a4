"""Measured studies: each claim of the CNN playbook as contenders trained over seeds by the ordinary trainer,
with a table, plots, a computed verdict and a report (harness.py)."""
from __future__ import annotations

import importlib

NAMES = ("filters", "depth", "vanishing", "precision", "batchnorm", "residual", "augmentation", "rotation", "search")


def get(name: str):
    """The study declared in `cnnlab.studies.<name>` (imported only when asked: each brings torch)."""
    return importlib.import_module(f"{__name__}.{name}").STUDY
