"""What `predict`, `eval` and `summary` show for a trained run: predict takes folders, writes CSV and survives
an unreadable file; eval heads the confusion matrix with the class labels and draws it; summary describes a
run folder or a model file."""
import csv
import json

import pytest
from PIL import Image

from cnnlab.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run trained for one short epoch: enough for the commands that read a run folder."""
    out = tmp_path_factory.mktemp("run") / "r"
    assert main(["train", "--model", "resnet20", "--model-kwargs", "width=0.25", "--image-size", "8", "--epochs",
                 "1", "--monitor-every", "0", "-q", "--out", str(out)]) == 0
    return out


def test_predict_takes_folders_writes_csv_and_reports_a_bad_file(run, tmp_path, capsys):
    from cnnlab.data import load_dataset

    ds = load_dataset("digits")
    (tmp_path / "photos" / "more").mkdir(parents=True)
    for i, sub in enumerate(["photos", "photos", "photos/more"]):
        Image.fromarray(ds.test_x[i, :, :, 0]).save(tmp_path / sub / f"{i}.png")
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "photos" / "notes.txt").write_text("not an image, not read")
    single = tmp_path / "single.png"
    Image.fromarray(ds.test_x[5, :, :, 0]).save(single)
    table = tmp_path / "preds.csv"
    code = main(["predict", "--checkpoint", str(run), "--top-k", "2", "--csv", str(table), "-q",
                 str(tmp_path / "photos"), str(single)])
    out, err = capsys.readouterr()
    assert code == 2  # one file failed; the others were predicted
    assert err.count("\n") == 1 and "broken.jpg" in err and "not a readable image" in err
    assert len(out.splitlines()) == 4 and "more/2.png" in out
    rows = list(csv.DictReader(table.open()))
    assert [r["image"].rsplit("/", 1)[1] for r in rows] == ["0.png", "1.png", "2.png", "single.png"]
    assert set(rows[0]) == {"image", "class_1", "probability_1", "class_2", "probability_2"}
    assert float(rows[0]["probability_1"]) >= float(rows[0]["probability_2"])

    assert main(["predict", "--checkpoint", str(run), "--json", str(single)]) == 0
    assert len(json.loads(capsys.readouterr().out)[0]["top"]) == 5


def test_eval_heads_the_confusion_matrix_with_labels_and_draws_it(run, tmp_path, capsys):
    png = tmp_path / "cm.png"
    assert main(["eval", "--checkpoint", str(run), "--data", "digits", "--confusion-png", str(png)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if "true \\ predicted" in line)
    assert lines[head].split()[-10:] == [str(c) for c in range(10)]  # a column per class, headed
    assert [line.split()[0] for line in lines[head + 1:head + 11]] == [str(c) for c in range(10)]  # rows
    assert png.read_bytes()[:4] == b"\x89PNG" and str(png) in out
    assert main(["eval", "--checkpoint", str(run), "--data", "digits", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["confusion_png"] == str(run / "confusion_matrix.png")


def test_summary_of_a_run_folder_and_of_a_model_file(run, tmp_path, capsys):
    assert main(["summary", str(run), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["model"] == "resnet20" and s["input"] == [1, 8, 8] and s["layers"][-1]["output"] == [10]
    model_file = tmp_path / "best_model.yaml"  # as `cnnlab search report` writes it
    model_file.write_text("model: cnn\nmodel_kwargs:\n  arch:\n    stages:\n    - {blocks: 1, width: 8, kernel: 3}\n"
                          "    head: {type: gap}\nlr: 0.05\n")
    assert main(["summary", "--model-config", str(model_file), "--input", "1x16x16", "--classes", "3"]) == 0
    assert "cnn  (input 1x16x16)" in capsys.readouterr().out
    assert main(["summary", "resnet20", "--model-config", str(model_file)]) == 2
