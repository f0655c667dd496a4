"""Depth is the key to good performance, with the right tricks: accuracy against depth for plain and residual
`cnn` nets (batch norm in both), every depth trained for the same epochs."""
from __future__ import annotations

from . import plots
from .common import DEPTH, cnn
from .harness import Compare, Study


def _blocks(budget: str) -> tuple[int, ...]:
    return (1, 2) if budget == "tiny" else (1, 2, 4)


def _widths(budget: str) -> tuple[int, ...]:
    return (8, 16) if budget == "tiny" else (16, 32, 64)


def _label(kind: str, blocks: int, budget: str) -> str:
    return f"{kind}, {2 * blocks * len(_widths(budget)) + 2} layers"


def contenders(budget: str) -> dict:
    return {_label(kind, b, budget): cnn(b, 3, _widths(budget), skip=kind == "residual")
            for kind in ("plain", "residual") for b in _blocks(budget)}


def comparisons(budget: str) -> list[Compare]:
    lo, hi = _blocks(budget)[0], _blocks(budget)[-1]
    return [Compare("test_accuracy", _label("residual", hi, budget), _label("residual", lo, budget),
                    what="test accuracy, deepest against shallowest residual net")]


def draw(results: dict, out) -> list[tuple[str, str]]:
    groups = {kind: [k for k in results["contenders"] if k.startswith(kind)] for kind in ("plain", "residual")}
    return [(plots.save(plots.lines(results, "depth", "test_accuracy", groups, "test accuracy against depth"), out,
                        "depth.png"), "Test accuracy against depth, plain and residual; same epochs for every depth."),
            (plots.save(plots.curves(results, "val_accuracy", "validation accuracy (%)", "validation accuracy"),
                        out, "curves.png"), "Validation accuracy per epoch.")]


STUDY = Study("depth", "depth is the key to good performance (with the right tricks: batch norm, skips)",
              "He et al. 2016 (ResNet), sec. 4.1; Simonyan and Zisserman 2015", contenders, comparisons, [DEPTH],
              draw, ["depth", "test_accuracy", "train_accuracy", "params", "train_seconds"], __doc__)
