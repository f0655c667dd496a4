"""Small filters: stacks of 3x3 convs see as far as one large filter with fewer parameters, so a budget buys
more depth. VGG (Simonyan and Zisserman 2015, sec. 2.3 and 4.1): three 3x3 layers hold 27C^2 weights against
49C^2 for one 7x7; replacing pairs of 3x3 by one 5x5 raised top-1 error by 7%.

Each contender is a VGG-like `cnn` (batch norm, no skips, a stage per width); a block is two convs, so one
7x7 block per stage sees as far as three 3x3 blocks (6 convs), one 5x5 block as far as two 3x3 blocks."""
from __future__ import annotations

from . import plots
from .common import MACS, RECEPTIVE_FIELD, cnn
from .harness import Compare, Study

K7, S7, K5, S5, DEEP = ("7x7, 1 block/stage", "3x3, 3 blocks/stage (7x7's field)", "5x5, 1 block/stage",
                        "3x3, 2 blocks/stage (5x5's field)", "3x3, 5 blocks/stage (7x7's parameters)")


def contenders(budget: str) -> dict:
    widths = (8, 16) if budget == "tiny" else (16, 32)
    return {K7: cnn(1, 7, widths), S7: cnn(3, 3, widths), K5: cnn(1, 5, widths), S5: cnn(2, 3, widths),
            DEEP: cnn(5, 3, widths)}


def comparisons(budget: str) -> list[Compare]:
    return [Compare("params", S7, K7, higher=False, what="parameters, same receptive field"),
            Compare("test_accuracy", S7, K7, what="test accuracy, 3x3 stack against 7x7"),
            Compare("test_accuracy", S5, K5, what="test accuracy, 3x3 stack against 5x5"),
            Compare("test_accuracy", DEEP, K7, what="test accuracy, 7x7's parameters as 3x3 depth")]


def draw(results: dict, out) -> list[tuple[str, str]]:
    return [(plots.save(plots.bars(results, "test_accuracy", "test accuracy per filter layout"), out, "accuracy.png"),
             "Test accuracy of each filter layout; bars: mean over seeds, dots: each seed."),
            (plots.save(plots.bars(results, "params", "parameters per filter layout"), out, "params.png"),
             "Parameters: a 3x3 stack with a 7x7's receptive field holds about 27/49 of its weights.")]


STUDY = Study("filters", "small filters are better: 3x3 stacks give the receptive field of a large filter with "
              "fewer parameters, so more depth for the same budget",
              "Simonyan and Zisserman 2015 (VGG), sec. 2.3 and 4.1", contenders, comparisons,
              [MACS, RECEPTIVE_FIELD], draw,
              ["test_accuracy", "params", "macs", "receptive_field", "train_seconds"], __doc__)
