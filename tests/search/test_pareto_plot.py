"""pareto.png a person can read (issue 15): a title, axes with units, tick labels that do not collide, the
front drawn as steps, and the best trial marked, also for a single-objective search."""
import itertools

import pytest

from cnnlab.search.report import _figure


def _rows(costs, accuracies, cost="params"):
    rows = [{"trial": i, cost: c, "val_accuracy": a} for i, (c, a) in enumerate(zip(costs, accuracies))]
    for r in rows:
        r["pareto"] = not any(o["val_accuracy"] >= r["val_accuracy"] and o[cost] < r[cost] or
                              o["val_accuracy"] > r["val_accuracy"] and o[cost] <= r[cost] for o in rows)
    return rows


NARROW = ([21_000, 26_000, 33_000, 48_000, 61_000, 74_000, 89_000], [0.6, 0.91, 0.7, 0.95, 0.5, 0.97, 0.8])
WIDE = ([3_100, 12_000, 95_000, 410_000, 2_600_000], [0.4, 0.82, 0.9, 0.88, 0.96])


@pytest.mark.parametrize("costs, accuracies", [NARROW, WIDE])
@pytest.mark.parametrize("multi", [False, True])
def test_pareto_plot_is_readable(costs, accuracies, multi):
    fig = _figure(_rows(costs, accuracies), "params", "search 's': accuracy against parameters", multi)
    ax = fig.axes[0]
    assert ax.get_title() and "(count)" in ax.get_xlabel() and "(%)" in ax.get_ylabel()
    fig.canvas.draw()
    labels = [t for t in ax.get_xticklabels() if t.get_text() and t.get_visible()
              and ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]
    assert len(labels) >= 3 and not any("\\times" in t.get_text() for t in labels)  # 20k, not 2 x 10^4
    boxes = [t.get_window_extent() for t in labels]
    assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))
    steps = [line for line in ax.get_lines() if line.get_drawstyle().startswith("steps")]
    assert len(steps) == 1  # the front: nothing better between two of its points
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    best = max(range(len(costs)), key=lambda i: accuracies[i])
    assert f"best: #{best}, {accuracies[best]:.1%}" in legend
    assert ("Pareto front" in legend) == multi
