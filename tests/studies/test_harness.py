"""The harness's verdict on made-up measurements: supported, not supported and inconclusive, each way round;
the table and the plots drawn from results alone."""
import json

import pytest

from cnnlab.errors import CnnlabError
from cnnlab.studies import NAMES, get
from cnnlab.studies.harness import (BUDGETS, INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Compare, combine, judge, table,
                                    verdict)

HIGH = Compare("test_accuracy", "a", "b")
LOW = Compare("steps", "a", "b", higher=False)


@pytest.mark.parametrize("compare, a, b, expected", [
    (HIGH, [0.90, 0.91, 0.92], [0.80, 0.81, 0.82], SUPPORTED),
    (HIGH, [0.80, 0.81, 0.82], [0.90, 0.91, 0.92], NOT_SUPPORTED),
    (HIGH, [0.80, 0.90, 0.85], [0.84, 0.86, 0.82], INCONCLUSIVE),  # 1 point apart, seeds 5 points apart
    (LOW, [100, 110, 105], [300, 310, 290], SUPPORTED),              # fewer steps is better
    (LOW, [300, 310, 290], [100, 110, 105], NOT_SUPPORTED),
    (HIGH, [0.9], [0.1], INCONCLUSIVE),                              # one seed: no spread to judge against
    (HIGH, [5.0, 5.0], [3.0, 3.0], SUPPORTED),                       # no spread at all (e.g. parameter counts)
])
def test_judge_each_way(compare, a, b, expected):
    assert judge(compare, a, b)["verdict"] == expected


def test_the_difference_is_judged_against_the_spread_of_both_contenders():
    e = judge(HIGH, [0.90, 0.92], [0.80, 0.82])
    assert e["difference"] == pytest.approx(0.10) and e["spread"] == pytest.approx(0.02)  # hypot of two sds of 0.0141
    assert e["mean_better"] == pytest.approx(0.91) and e["seeds"] == 2


def test_a_run_without_a_figure_counts_as_missing_says():
    diverged = Compare("test_accuracy", "a", "b", missing=0.1)
    assert judge(diverged, [0.9, 0.92, 0.91], [None, None, 0.15])["verdict"] == SUPPORTED
    assert judge(HIGH, [0.9, 0.92], [None, None])["verdict"] == INCONCLUSIVE


def test_a_claim_of_several_comparisons():
    assert combine([{"verdict": SUPPORTED}, {"verdict": SUPPORTED}]) == SUPPORTED
    assert combine([{"verdict": SUPPORTED}, {"verdict": INCONCLUSIVE}]) == INCONCLUSIVE
    assert combine([{"verdict": INCONCLUSIVE}, {"verdict": NOT_SUPPORTED}]) == NOT_SUPPORTED
    values = {"a": {"test_accuracy": [0.9, 0.91, 0.92]}, "b": {"test_accuracy": [0.5, 0.52, 0.51]}}
    out = verdict([HIGH, Compare("test_accuracy", "b", "a")], values)
    assert out["verdict"] == NOT_SUPPORTED and [e["verdict"] for e in out["evidence"]] == [SUPPORTED, NOT_SUPPORTED]
    with pytest.raises(CnnlabError, match="not a contender"):
        verdict([Compare("test_accuracy", "a", "c")], values)


def fake_results(study_name="filters"):
    """results.json as the harness writes it, for two contenders and three seeds, without training."""
    from cnnlab.studies.harness import _aggregate, evidence_text

    runs = {"a": [0.9, 0.91, 0.92], "b": [0.8, 0.81, 0.82]}
    contenders = {}
    for label, accs in runs.items():
        rs = [{"seed": s, "run_dir": f"runs/{label}-s{s}", "status": "finished", "diagnoses": [],
               "measures": {"test_accuracy": a, "params": 1000.0},
               "curve": [{"epoch": e, "val_accuracy": a * e / 3, "train_accuracy": a * e / 3} for e in (1, 2, 3)]}
              for s, a in enumerate(accs)]
        contenders[label] = {"overrides": {"model": label}, "runs": rs, **_aggregate(rs)}
    out = verdict([HIGH], {k: {"test_accuracy": v} for k, v in runs.items()})
    return {"study": study_name, "claim": "a beats b", "reference": "none", "notes": "", "budget": "small",
            "seeds": [0, 1, 2], "base_settings": {"data": "digits"},
            "measures": {"test_accuracy": {"label": "test accuracy (%)", "percent": True},
                         "params": {"label": "parameters", "percent": False}},
            "columns": ["test_accuracy", "params"], "contenders": contenders, **out,
            "evidence_text": [evidence_text(e, True) for e in out["evidence"]], "plots": [], "seconds": 1.0}


def test_table_gives_mean_and_spread_and_the_verdict_with_its_figure():
    text = table(fake_results())
    assert "| a | 91.0% ± 1.0 | 1,000 |" in text and "**Verdict: supported**" in text
    assert "difference +10.0 points in the claim's favour" in text


def test_plots_have_titles_labelled_axes_and_legends_outside_the_data():
    from cnnlab.studies import plots

    results = fake_results()
    for fig in (plots.bars(results, "test_accuracy", "accuracy"),
                plots.curves(results, "val_accuracy", "validation accuracy (%)", "curves")):
        plots.layout(fig)
        fig.canvas.draw()
        ax = fig.axes[0]
        assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
        legend = fig.legends[0].get_window_extent()
        # below the axes, their tick labels and axis label: it hides nothing
        assert not legend.overlaps(ax.get_tightbbox(fig.canvas.get_renderer()))


def test_every_study_is_declared_with_contenders_its_comparisons_name():
    from cnnlab.train import TrainConfig

    for name in NAMES:
        study = get(name)
        for budget in ("tiny", "small", "full"):
            contenders = study.contenders(budget)
            for c in study.comparisons(budget):
                assert c.better in contenders and c.worse in contenders, (name, budget, c)
            for overrides in contenders.values():
                if "search" not in overrides:
                    TrainConfig.from_dict(dict(overrides))  # every override is a valid training setting
        assert study.claim and study.reference and set(study.columns) <= \
            {m.name for m in study.measures} | {"test_accuracy", "train_accuracy", "params", "train_seconds"}


def test_study_report_is_written_from_results_alone(tmp_path):
    from cnnlab.report.html import write_report

    (tmp_path / "results.json").write_text(json.dumps(fake_results()))
    page = write_report(tmp_path).read_text()
    assert "a beats b" in page and 'class="verdict supported"' in page and "91.0% ± 1.0" in page


def test_a_finished_run_is_reused_only_with_the_same_settings(tmp_path):
    from cnnlab.studies.harness import train_one

    run = tmp_path / "a-s0"
    run.mkdir()
    (run / "summary.json").write_text('{"status": "finished"}')
    (run / "config.yaml").write_text("model: cnn\ndata: digits\nepochs: 1\nseed: 0\n")
    assert train_one({"model": "cnn"}, {"data": "digits", "epochs": 1}, 0, run).path == run  # not trained again
    with pytest.raises(CnnlabError, match="other settings \\(epochs: 1, not 2\\)"):
        train_one({"model": "cnn"}, {"data": "digits", "epochs": 2}, 0, run)


def test_an_interrupted_run_of_a_study_continues_from_its_checkpoint(tmp_path):
    from cnnlab.studies.harness import train_one
    from cnnlab.train import TrainConfig, train

    base = {**BUDGETS["tiny"]["train"], "epochs": 2}
    run = tmp_path / "a-s0"

    def interrupt(model, step):
        if (run / "checkpoints" / "latest").exists():  # in the second epoch, after the first one's checkpoint
            raise KeyboardInterrupt

    settings = {**base, "model": "cnn", "seed": 0, "out": str(run), "quiet": True, "report": False}
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig.from_dict(settings), on_step=interrupt)
    assert (run / "checkpoints").is_dir() and not (run / "summary.json").exists()
    summary = train_one({"model": "cnn"}, base, 0, run).read_summary()
    assert summary["status"] == "finished" and summary["epochs"] == 2


@pytest.mark.parametrize("argv, match", [
    (["tour", "--seeds", "99999999999999999999"], "--seeds must be from 1 to 100, got 99999999999999999999"),
    (["study", "filters", "--seeds", "0"], "--seeds must be from 1 to 100, got 0"),
    (["study", "filters", "--data", ""], "--data is empty"),
    (["study", "filters", "--data", "/nonexistent"], "--data /nonexistent: no such file or folder"),
])
def test_a_bad_study_option_is_one_line_of_its_own_and_leaves_no_folder(tmp_path, capsys, argv, match):
    from cnnlab.cli import main

    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("cnnlab: error:") and match in err[-1], err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, holds, culprit", [
    (["study", "filters"], {"model.json": "{}"}, "holds a cnnlab run (model.json)"),
    (["study", "residual"], {"results.json": '{"study": "filters", "claim": "c"}'}, "the study 'filters'"),
    (["tour", "--only", "filters"], {"results.json": '{"study": "filters", "claim": "c"}'},
     "holds a cnnlab study (results.json)"),
    (["search", "--space", "vgg-like", "--trials", "1", "--epochs", "1"], {"tour.json": "{}"},
     "holds a cnnlab tour (tour.json)"),
])
def test_an_out_folder_of_another_kind_is_refused_untouched(tmp_path, capsys, argv, holds, culprit):
    from cnnlab.cli import main

    out = tmp_path / "out"
    out.mkdir()
    for name, text in holds.items():
        (out / name).write_text(text)
    assert main([*argv, "--budget" if argv[0] != "search" else "--image-size",
                 "tiny" if argv[0] != "search" else "8", "--out", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("cnnlab: error:") and culprit in err[-1], err
    assert sorted(p.name for p in out.iterdir()) == sorted(holds)
