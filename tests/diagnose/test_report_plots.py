"""`cnnlab diagnose` plots of runs that stopped after a sample or two draw what there is: a visible heatmap
column and loss point, whole-step axes, diagnosis labels that do not overprint, and no matplotlib warning."""
import json
import warnings

import pytest

from cnnlab.cli import main
from cnnlab.diagnose.report import grad_norm_figure, load_health, loss_figure

LAYERS = ["conv1", "layer1.0.conv1", "fc"]


def write_run(path, steps, diagnosis_steps):
    lines = [{"type": "layers", "step": s, "loss": 2.3 - 0.1 * i, "grad_norm": {n: 10.0 ** -k for k, n in
              enumerate(LAYERS)}} for i, s in enumerate(steps)]
    lines += [{"type": "diagnosis", "kind": kind, "step": s, "layers": ["conv1"], "evidence": "e", "remedies": ["r"]}
              for kind, s in zip(("exploding", "nonfinite"), diagnosis_steps)]
    path.mkdir()
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


@pytest.mark.parametrize("steps,diagnosis_steps", [([1], [4, 4]), ([1, 11], [18, 19]), ([1, 11, 21], []),
                                                   (list(range(1, 500, 10)), [180, 190])])
def test_short_runs_draw_what_they_have(tmp_path, steps, diagnosis_steps):
    health = load_health(write_run(tmp_path / "run", steps, diagnosis_steps))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "identical low and high xlims" among them
        heat, loss = grad_norm_figure(health), loss_figure(health)
        for fig in (heat, loss):
            fig.canvas.draw()
    heat_ax, loss_ax = heat.axes[0], loss.axes[0]
    lo, hi = heat_ax.get_xlim()
    assert lo < steps[0] and hi > steps[-1] and hi - lo >= 1  # every column has a width
    assert heat_ax.collections[0].get_array().count() == len(steps) * len(LAYERS)  # no cell left blank
    line = loss_ax.lines[0]
    assert len(steps) > 30 or line.get_marker() == "o"  # a lone step is a visible point
    lo, hi = loss_ax.get_xlim()
    assert lo < steps[0] and hi > max(steps + diagnosis_steps) and hi - lo >= 1
    assert all(float(t).is_integer() for t in loss_ax.get_xticks() if lo <= t <= hi)
    labels = [t.get_window_extent() for t in loss_ax.texts]
    assert len(labels) == len(diagnosis_steps)
    assert not any(a.overlaps(b) for i, a in enumerate(labels) for b in labels[i + 1:])


def test_diagnose_command_on_a_one_sample_run(tmp_path, capsys):
    run = write_run(tmp_path / "run", [1], [4, 4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["diagnose", str(run)]) == 0
    out = capsys.readouterr().out
    assert "1 sample of 3 layers" in out
    assert (run / "diagnose" / "grad_norms.png").stat().st_size > 0 and (run / "diagnose" / "loss.png").exists()
