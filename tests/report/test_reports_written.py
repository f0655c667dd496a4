"""`train` and `search` end by writing their folder's report.html, and say where it is; a report that cannot be
written leaves a finished run finished."""
import json

from cnnlab import CnnlabError
from cnnlab.cli import main

TINY = ["--model", "resnet20", "--model-kwargs", "width=0.25", "--image-size", "8", "--epochs", "1",
        "--batch-size", "128"]


def test_train_writes_the_run_report_and_prints_its_path(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    page = (out / "report.html").read_text()
    assert f"report:     {out / 'report.html'}" in printed
    assert all(h in page for h in ("Learning curves", "Test set", "Per-class accuracy", "Gradient health", "Config"))
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"


def test_no_report_writes_none(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--no-report", "--out", str(out)]) == 0
    assert "report:" not in capsys.readouterr().out
    assert (out / "summary.json").is_file() and not (out / "report.html").exists()


def test_a_report_that_fails_is_a_warning_and_the_run_stays_finished(tmp_path, capsys, monkeypatch):
    import cnnlab.report.html

    def broken(folder, *args):
        raise CnnlabError("the plot could not be drawn")

    monkeypatch.setattr(cnnlab.report.html, "write_report", broken)
    out = tmp_path / "run"
    assert main(["train", *TINY, "-q", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "report.html not written (the plot could not be drawn)" in captured.err
    assert f"cnnlab report {out}" in captured.err and "Traceback" not in captured.err
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"
    assert not (out / "report.html").exists()


def test_search_writes_its_report_and_prints_its_path(tmp_path, capsys):
    from tests.data.writers import write_folder

    out = tmp_path / "search"
    write_folder(tmp_path / "imgs", per_class=10, size=8)  # no test/: --holdout makes the test split
    assert main(["search", "--space", "resnet-like", "--trials", "2", "--data", str(tmp_path / "imgs"), "--epochs",
                 "1", "--image-size", "8", "--holdout", "0.3", "--out", str(out)]) == 0
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out
    page = (out / "report.html").read_text()
    assert "Leaderboard" in page and "Best architecture" in page
    # its trials are runs the search report covers: none writes a report of its own
    assert not list((out / "trials").glob("*/report.html"))
    import yaml  # and each trial splits the data as the search was told

    configs = [yaml.safe_load(p.read_text()) for p in (out / "trials").glob("*/config.yaml")]
    assert configs and all(c["holdout"] == 0.3 and c["report"] is False for c in configs)
