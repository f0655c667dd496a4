"""The commands that read a run folder (eval, predict, invariance, diagnose, summary) read it through RunFolder:
eval and invariance take the run's own data and test split by default, a data set whose classes are not the
run's is refused, and a tampered run folder is one line naming the culprit, exit 2, never a traceback."""
import json
import os
import shutil
import signal
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from cnnlab.cli import main


def _image_folder(root, classes, per_class=20, offset=0):
    """Class folders of 8x8 digit images (class k of `classes` holds digits k+offset), in file-name order."""
    from cnnlab.data import load_dataset

    ds = load_dataset("digits")
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for n, i in enumerate(np.flatnonzero(ds.train_y == k + offset)[:per_class]):
            Image.fromarray(ds.train_x[i, :, :, 0]).save(root / name / f"{n:02d}.png")
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run trained for one short epoch on a folder of classes a, b, c with --holdout 0.1 (2 test images a
    class, where the default 0.2 would give 4), its data given as a path relative to where it trained."""
    home = tmp_path_factory.mktemp("trained-here")
    _image_folder(home / "imgs", "abc")
    before = os.getcwd()
    os.chdir(home)
    try:
        assert main(["train", "--model", "resnet20", "--model-kwargs", "width=0.25", "--image-size", "8",
                     "--epochs", "1", "--data", "imgs", "--holdout", "0.1", "-q", "--out", "run"]) == 0
    finally:
        os.chdir(before)
    return home / "run"


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """The commands run from another folder than the training did."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# -- the run's own test split, by default -------------------------------------------------------------------------
def test_eval_defaults_to_the_runs_own_data_and_split(run, elsewhere, capsys):
    summary = json.loads((run / "summary.json").read_text())
    assert main(["eval", "--checkpoint", str(run), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["count"] == summary["test_images"] == 6  # --holdout 0.1 of 20 a class; the default 0.2 gives 12
    assert sum(map(sum, r["confusion_matrix"])) == 6
    assert r["accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-6)
    assert r["holdout"] == 0.1 and r["data"] == str(run.parent / "imgs") and r["run_split"] is True
    # the same with the data named as it was at training, from where it trained; --weights last still works
    os.chdir(run.parent)
    assert main(["eval", "--checkpoint", "run", "--data", "imgs", "--weights", "last", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["count"] == 6 and r["holdout"] == 0.1
    assert main(["eval", "--checkpoint", "run"]) == 0
    assert "test split (6 images)" in capsys.readouterr().out


def test_eval_holdout_option_overrides_the_runs(run, elsewhere, capsys):
    assert main(["eval", "--checkpoint", str(run), "--holdout", "0.2", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["count"] == 12 and r["holdout"] == 0.2 and r["run_split"] is False


def test_eval_holdout_on_data_with_its_own_test_split_is_refused(run, elsewhere, capsys):
    """Such data is tested on its test/ folder whatever --holdout says: the option would be silently ignored."""
    other = _image_folder(elsewhere / "other" / "train", "abc", per_class=10)
    _image_folder(other.parent / "test", "abc", per_class=4, offset=0)
    assert main(["eval", "--checkpoint", str(run), "--data", str(other.parent), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 12
    assert main(["eval", "--checkpoint", str(run), "--data", str(other.parent), "--holdout", "0.5"]) == 2
    err = capsys.readouterr().err
    assert f"--holdout 0.5: {other.parent} has a test split of its own (test/)" in err, err


def test_eval_on_another_data_set_only_when_asked(run, elsewhere, capsys):
    other = _image_folder(elsewhere / "other", "abc", per_class=10)  # the same classes, other images
    assert main(["eval", "--checkpoint", str(run), "--data", str(other), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["count"] == 3 and r["holdout"] == 0.1 and r["data"] == str(other) and r["run_split"] is False


def test_invariance_defaults_to_the_runs_own_split(run, elsewhere, capsys):
    assert main(["invariance", "--checkpoint", str(run), "--transforms", "hflip,rot90", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert list(r) == ["hflip", "rot90"] and all(v["images"] == 6 for v in r.values())
    assert 0 <= r["hflip"]["prediction_change"] <= 1
    assert main(["invariance", "--checkpoint", str(run), "--transforms", "hflip", "--holdout", "0.2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hflip"]["images"] == 12


def test_a_data_set_with_other_classes_is_refused(run, elsewhere, capsys):
    """Trained on a, b, c; evaluated on b, c, z: refused naming the first class that differs (it once scored
    0.0, exit 0)."""
    other = _image_folder(elsewhere / "bcz", "bcz")
    for argv in (["eval", "--checkpoint", str(run), "--data", str(other)],
                 ["invariance", "--checkpoint", str(run), "--data", str(other)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "'b'" in err[0] and "'a'" in err[0] and str(other) in err[0], err
    two = _image_folder(elsewhere / "ab", "ab")
    assert main(["eval", "--checkpoint", str(run), "--data", str(two)]) == 2
    err = capsys.readouterr().err.strip()
    assert "'c'" in err and "\n" not in err


def test_eval_of_a_run_whose_data_is_gone(run, elsewhere, capsys):
    moved = elsewhere / "run"
    shutil.copytree(run, moved)
    spec = json.loads((moved / "model.json").read_text())
    spec["data"] = str(elsewhere / "no-such-folder")
    (moved / "model.json").write_text(json.dumps(spec))
    assert main(["eval", "--checkpoint", str(moved)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no-such-folder" in err and "--data" in err and "\n" not in err


def test_an_older_run_without_data_in_model_json_falls_back_to_config_yaml(run, elsewhere, capsys):
    old = elsewhere / "old"
    shutil.copytree(run, old)
    spec = json.loads((old / "model.json").read_text())
    del spec["data"], spec["holdout"]
    (old / "model.json").write_text(json.dumps(spec))
    os.chdir(run.parent)  # config.yaml's data is relative: read from where it trained
    assert main(["eval", "--checkpoint", str(old), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["count"] == 6 and r["holdout"] == 0.1


# -- tampered run folders: one line naming the culprit, exit 2 ---------------------------------------------------
def _json_edit(name, change):
    """A damage: the run folder's JSON file `name` changed in place."""
    def edit(folder):
        values = json.loads((folder / name).read_text())
        change(values)
        (folder / name).write_text(json.dumps(values))
    return edit


def _spec_edit(change):
    return _json_edit("model.json", change)


def _weights_edit(change):
    def edit(folder):
        tensors = load_file(str(folder / "best.safetensors"))
        change(tensors)
        save_file(tensors, str(folder / "best.safetensors"))
    return edit


def _truncate(folder):
    data = (folder / "best.safetensors").read_bytes()
    (folder / "best.safetensors").write_bytes(data[:len(data) // 2])


def _first_record(folder, kind, change):
    """metrics.jsonl with the first record of type `kind` changed."""
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    n = next(i for i, line in enumerate(lines) if json.loads(line)["type"] == kind)
    record = json.loads(lines[n])
    change(record)
    lines[n] = json.dumps(record)
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def _append(folder, record):
    with open(folder / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def _first_float(tensors):
    return next(k for k, v in tensors.items() if v.is_floating_point() and v.dim() > 1)


def _nan(tensors):
    tensors[_first_float(tensors)][0].fill_(float("nan"))


def _to_integers(tensors):
    key = _first_float(tensors)
    tensors[key] = tensors[key].to(torch.int32)  # the same shape, every filter truncated to whole numbers


def _reshape(tensors):
    key = _first_float(tensors)
    tensors[key] = torch.zeros(tensors[key].numel() + 1)


SPEC_CASES = {
    "invalid-json": (lambda f: (f / "model.json").write_text("{\"model\": "), "model.json"),
    "a-list": (lambda f: (f / "model.json").write_text("[1, 2]"), "model.json"),
    "missing-key": (_spec_edit(lambda s: s.pop("num_classes")), "num_classes"),
    "one-class": (_spec_edit(lambda s: s.update(num_classes=1, classes=["a"])), "num_classes"),
    "absurd-image-size": (_spec_edit(lambda s: s.update(image_size=10 ** 7)), "image_size"),
    "absurd-width": (_spec_edit(lambda s: s["model_kwargs"].update(width=1e7)), "width=10000000.0"),
    "large-width": (_spec_edit(lambda s: s["model_kwargs"].update(width=3000)), "parameters"),
    "classes-not-num-classes": (_spec_edit(lambda s: s.update(classes=["a", "b"])), "classes"),
    "a-class-twice": (_spec_edit(lambda s: s.update(classes=["a", "a", "c"])), "'classes'"),
    "unknown-model": (_spec_edit(lambda s: s.update(model="resnet21")), "resnet21"),
    "switch-as-list": (_spec_edit(lambda s: s.update(model_kwargs=[1])), "model_kwargs"),
    "unknown-tta": (_spec_edit(lambda s: s.update(tta=7)), "'tta'"),
    "tta-as-text": (_spec_edit(lambda s: s.update(tta="abc")), "'tta'"),
    "unknown-precision": (_spec_edit(lambda s: s.update(precision="xyz")), "'precision'"),
    "vanishing-std": (_spec_edit(lambda s: s.update(std=[1e-308] * len(s["std"]))), "'std'"),
    "mean-out-of-range": (_spec_edit(lambda s: s.update(mean=[1e300] * len(s["mean"]))), "'mean'"),
    "num-classes-among-switches": (_spec_edit(lambda s: s["model_kwargs"].update(num_classes=5)),
                                   "model_kwargs sets num_classes"),
    "huge": (lambda f: os.truncate(f / "model.json", 1 << 30), "model.json: over 16 MiB"),  # sparse: no disk
}
WEIGHT_CASES = {
    "missing": (lambda f: (f / "best.safetensors").unlink(), "best.safetensors"),
    "random-bytes": (lambda f: (f / "best.safetensors").write_bytes(os.urandom(4096)), "best.safetensors"),
    "truncated": (_truncate, "best.safetensors"),
    "nan": (_weights_edit(_nan), "NaN"),
    "wrong-shape": (_weights_edit(_reshape), "the model expects"),
    "integer-filters": (_weights_edit(_to_integers), "is stored as int32, the model holds float32"),
}
METRICS_CASES = {
    "no-loss": (lambda f: (f / "metrics.jsonl").write_text('{"type": "step", "step": 1, "epoch": 1}\n'), "loss"),
    "not-a-dict": (lambda f: (f / "metrics.jsonl").write_text('[1, 2]\n'), "line 1"),
    "layers-without-norms": (lambda f: (f / "metrics.jsonl").write_text(
        '{"type": "layers", "step": 1, "loss": 2.3}\n'), "grad_norm"),
    "diagnosis-without-kind": (lambda f: (f / "metrics.jsonl").write_text(
        '{"type": "diagnosis", "step": 1}\n'), "kind"),
    "missing": (lambda f: (f / "metrics.jsonl").unlink(), "metrics.jsonl"),
    "step-beyond-a-float": (lambda f: _first_record(f, "epoch", lambda r: r.update(step=10 ** 400)), "'step'"),
    "epoch-beyond-a-float": (lambda f: _first_record(f, "epoch", lambda r: r.update(epoch=10 ** 400)), "'epoch'"),
    "epoch-without-train-loss": (lambda f: _first_record(f, "epoch", lambda r: r.pop("train_loss")), "train_loss"),
    "norm-beyond-a-float": (lambda f: _first_record(f, "layers", lambda r: r["grad_norm"].update(
        {next(iter(r["grad_norm"])): 10 ** 400})), "grad_norm"),
    "update-ratio-a-list": (lambda f: _first_record(f, "layers", lambda r: r.update(update_ratio=[1, 2])),
                            "'update_ratio'"),
    "update-ratio-text": (lambda f: _first_record(f, "layers", lambda r: r.update(
        update_ratio={k: "x" for k in r["grad_norm"]})), "'update_ratio'"),
    "no-grad-norms": (lambda f: _first_record(f, "layers", lambda r: r.update(grad_norm={})), "grad_norm"),
    "remedies-not-text": (lambda f: _append(f, {"type": "diagnosis", "kind": "vanishing", "step": 1,
                                                "layers": ["fc"], "evidence": "e", "remedies": [None, 3]}),
                          "remedies"),
    # the file grown to 1 GiB by a line of NUL bytes (sparse: no disk), which read whole would fill the memory
    "a-line-over-16-mib": (lambda f: os.truncate(f / "metrics.jsonl", 1 << 30), "is over 16 MiB; the file is"),
}
def _endless(path):
    """A damage: the file replaced by a link to /dev/zero, which never ends."""
    path.unlink()
    path.symlink_to("/dev/zero")


def _pipe(path):
    """A damage: the file replaced by a named pipe, which opening would wait on for a writer."""
    path.unlink()
    os.mkfifo(path)


ALIAS_BOMB = "".join(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n" for i in range(1, 9))
CONFIG_CASES = {
    "alias-bomb": (lambda f: (f / "config.yaml").write_text("b0: &a0 [x, x, x, x, x, x, x, x, x]\n" + ALIAS_BOMB),
                   "an alias"),
    "a-key-twice": (lambda f: (f / "config.yaml").write_text((f / "config.yaml").read_text() + "holdout: 0.5\n"),
                    "the key 'holdout' is given twice"),
    "endless": (lambda f: _endless(f / "config.yaml"), "config.yaml: over 16 MiB"),
    "a-pipe": (lambda f: _pipe(f / "config.yaml"), "config.yaml: a pipe or socket, not a file"),
}


def _summary_edit(change):
    return _json_edit("summary.json", change)


SUMMARY_CASES = {
    "accuracy-as-text": (_summary_edit(lambda s: s.update(test_accuracy="x")), "'test_accuracy'"),
    "accuracy-missing": (_summary_edit(lambda s: s.pop("test_accuracy")), "'test_accuracy' is missing"),
    "diagnoses-not-records": (_summary_edit(lambda s: s.update(diagnoses=[1])), "'diagnoses'"),
    "endless": (lambda f: _endless(f / "summary.json"), "summary.json: over 16 MiB"),
    "a-pipe": (lambda f: _pipe(f / "summary.json"), "summary.json: a pipe or socket, not a file"),
}
COMMANDS = {
    "eval": lambda f, data, image: ["eval", "--checkpoint", str(f), "--data", data],
    "predict": lambda f, data, image: ["predict", "--checkpoint", str(f), str(image)],
    "invariance": lambda f, data, image: ["invariance", "--checkpoint", str(f), "--data", data,
                                          "--transforms", "hflip"],
    "summary": lambda f, data, image: ["summary", str(f)],
    "diagnose": lambda f, data, image: ["diagnose", str(f), "--plots", str(f / "plots")],
    "report": lambda f, data, image: ["report", str(f)],
}
CASES = [(c, name, *SPEC_CASES[name]) for c in ("eval", "predict", "invariance", "summary") for name in SPEC_CASES] + \
    [(c, name, *WEIGHT_CASES[name]) for c in ("eval", "predict", "invariance") for name in WEIGHT_CASES] + \
    [(c, name, *METRICS_CASES[name]) for c in ("diagnose", "report") for name in METRICS_CASES] + \
    [("report", name, *SUMMARY_CASES[name]) for name in SUMMARY_CASES] + \
    [(c, name, *CONFIG_CASES[name]) for c in ("eval", "invariance") for name in CONFIG_CASES]


@pytest.mark.parametrize("command,case,edit,culprit", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_a_tampered_run_folder_is_one_line_and_exit_2(run, tmp_path, capsys, command, case, edit, culprit):
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    edit(folder)
    image = next((run.parent / "imgs" / "a").iterdir())
    assert main(COMMANDS[command](folder, str(run.parent / "imgs"), image)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cnnlab: error:") and culprit in err[0], err


def test_metrics_larger_than_a_run_writes_are_refused_at_the_cap(run, tmp_path, capsys, monkeypatch):
    """Records that each pass their checks, but more of them than the cap: reading stops there."""
    monkeypatch.setattr("cnnlab.train.run_folder.MAX_METRICS_BYTES", 1 << 20)
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    record = (folder / "metrics.jsonl").read_text().splitlines()[0] + "\n"
    (folder / "metrics.jsonl").write_text(record * ((2 << 20) // len(record)))
    assert main(["diagnose", str(folder)]) == 2
    assert "metrics.jsonl: over 1 MiB, more than a run writes" in capsys.readouterr().err


def test_a_tampered_run_folder_through_the_command_line(run, tmp_path):
    """The same through a process of its own: one line on stderr, no traceback."""
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    SPEC_CASES["absurd-width"][0](folder)
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "predict", "--checkpoint", str(folder),
                           str(next((run.parent / "imgs" / "a").iterdir()))], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "width=10000000.0" in proc.stderr and "Traceback" not in proc.stderr


def test_predict_decodes_images_as_the_data_loaders_do(tmp_path, monkeypatch):
    """16-bit images scaled (not clipped at 255), transparency composited on white, grey or colour made to
    match the model, decompression bombs refused in one line."""
    import PIL.Image

    from cnnlab.errors import CnnlabError
    from cnnlab.inference import read_image

    Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(tmp_path / "deep.png")
    assert read_image(tmp_path / "deep.png", 1).shape == (8, 8, 1)
    assert (read_image(tmp_path / "deep.png", 1) == 40000 >> 8).all()
    assert (read_image(tmp_path / "deep.png", 3) == 40000 >> 8).all()
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert (read_image(tmp_path / "clear.png", 3) == 255).all() and read_image(tmp_path / "clear.png", 1).shape[2] == 1
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 100)
    Image.new("L", (20, 20)).save(tmp_path / "bomb.png")
    with pytest.raises(CnnlabError, match="decompression bomb"):
        read_image(tmp_path / "bomb.png", 1)


@pytest.mark.parametrize("name, text", [
    ("tour.json", '{"studies":'),
    ("tour.json", "null"),
    ("tour.json", '{"studies": [{"x": 1}]}'),
    ("results.json", '{"claim": "x"}'),
    ("results.json", "5"),
    ("results.json", "null"),
    ("tour.json", '{"studies": [], "budget": "tiny", "seconds": 1, "seeds": "<script>alert(1)</script>"}'),
])
def test_a_damaged_study_or_tour_file_is_one_line(tmp_path, capsys, name, text):
    (tmp_path / name).write_text(text)
    code = main(["report", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    if code == 0:  # a page can be drawn: the file's text is shown as text, never as markup
        assert "<script>" not in (tmp_path / "report.html").read_text()
        return
    assert code == 2 and len(err) == 1 and err[0].startswith("cnnlab: error:") and name in err[0], err


def test_a_study_plot_outside_its_folder_is_refused_not_embedded(tmp_path, capsys):
    (tmp_path / "secret.txt").write_text("TOP SECRET")
    study = tmp_path / "study"
    study.mkdir()
    results = {"study": "s", "claim": "c", "reference": "r", "verdict": "supported", "budget": "tiny", "seeds": [0],
               "evidence_text": [], "measures": {}, "columns": [], "contenders": {}, "base_settings": {},
               "plots": [{"file": str(tmp_path / "secret.txt"), "caption": "x"}]}
    for file in (str(tmp_path / "secret.txt"), "../secret.txt"):
        results["plots"][0]["file"] = file
        (study / "results.json").write_text(json.dumps(results))
        assert main(["report", str(study)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"plot '{file[:40]}" in err and "is not a PNG of the study's folder" in err, err
        assert not (study / "report.html").exists()


def test_outputs_never_overwrite_the_run_or_the_images_and_a_failed_export_leaves_nothing(run, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    image = next((run.parent / "imgs" / "a").iterdir())
    (folder / "report.html").write_text("<html>")
    before = {p: p.read_bytes() for p in (folder / "model.json", folder / "report.html", folder / ".lock", image)}
    for csv, culprit in ((folder / "model.json", "the run's own files"), (folder / "report.html", "the run's own"),
                         (image, "one of the images")):
        assert main(["predict", "--checkpoint", str(folder), str(image), "--csv", str(csv)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--csv {csv}" in err and culprit in err, err
    assert {p: p.read_bytes() for p in before} == before
    latest = folder / "checkpoints" / "latest"
    assert latest.is_file()
    for own in (latest, folder / ".lock"):  # the lock: a new file in its place would not hold the running trainer's
        assert main(["export", str(folder), "--format", "torchscript", "--out", str(own), "--no-check"]) == 2
        assert "would overwrite the run's own files" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in before} == before
    out = tmp_path / "exported"
    (out / "m.pt.json").mkdir(parents=True)  # where the description beside the model would go
    assert main(["export", str(folder), "--format", "torchscript", "--out", str(out / "m.pt"), "--no-check"]) == 2
    assert "m.pt.json is a folder" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["m.pt.json"]


def test_outputs_are_written_as_files_never_over_a_pipe_a_folder_or_through_a_loop(run, tmp_path, capsys):
    """A file written beside --out and renamed over it would take the place of a pipe or a device (such as
    /dev/null); a fixed temporary name would overwrite a file of the user's, a loop of links is one line."""
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "pipe.pt")
    os.mkfifo(out / "pipe.png")
    (out / "folder.png").mkdir()
    (out / "a").symlink_to(out / "b")
    (out / "b").symlink_to(out / "a")
    (out / ".m.pt.tmp").write_text("mine")
    imgs = str(run.parent / "imgs")
    image = next((run.parent / "imgs" / "a").iterdir())
    for argv, culprit in (
            (["export", str(run), "--format", "torchscript", "--no-check", "--out", str(out / "pipe.pt")],
             "pipe.pt: not a regular file (a device, pipe or socket)"),
            (["augment", "--data", imgs, "--policy", "flip", "--rows", "2", "--cols", "2", "--out",
              str(out / "pipe.png")], "pipe.png: not a regular file"),
            (["augment", "--data", imgs, "--policy", "flip", "--rows", "2", "--cols", "2", "--out",
              str(out / "folder.png")], "folder.png: a folder; name a file to write"),
            (["export", str(run), "--format", "torchscript", "--no-check", "--out", str(out / "a")],
             "a: cannot be followed"),
            (["predict", "--checkpoint", str(run), str(image), "--csv", str(out / "a")], "a: cannot be followed")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("cnnlab: error:") and culprit in err[0], (argv, err)
    assert stat.S_ISFIFO(os.stat(out / "pipe.pt").st_mode) and stat.S_ISFIFO(os.stat(out / "pipe.png").st_mode)
    assert sorted(p.name for p in out.iterdir()) == [".m.pt.tmp", "a", "b", "folder.png", "pipe.png", "pipe.pt"]
    assert main(["export", str(run), "--format", "torchscript", "--no-check", "--out", str(out / "m.pt")]) == 0
    assert (out / ".m.pt.tmp").read_text() == "mine" and (out / "m.pt").is_file()
    capsys.readouterr()
    assert main(["export", str(run), "--format", "torchscript", "--no-check", "--out", "/proc/m.pt"]) == 2
    assert "/proc/m.pt: cannot write in /proc" in capsys.readouterr().err  # the file asked for, not a temporary


def test_a_pipe_among_the_images_is_refused_or_skipped_never_waited_on(run, tmp_path, capsys):
    def expire(*_):  # opening a FIFO blocks until something writes to it
        raise TimeoutError("still waiting on the pipe after 60 s")

    signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    try:
        os.mkfifo(tmp_path / "pipe.png")
        assert main(["predict", "--checkpoint", str(run), str(tmp_path / "pipe.png")]) == 2
        assert "pipe.png: not a regular file" in capsys.readouterr().err
        data = _image_folder(tmp_path / "data", "ab", per_class=6)
        os.mkfifo(data / "a" / "pipe.png")
        train = ["train", "--data", str(data), "--holdout", "2", "--model", "resnet20", "--model-kwargs",
                 "width=0.25", "--image-size", "8", "--epochs", "1", "--val-fraction", "0", "--no-report", "-q"]
        assert main([*train, "--out", str(tmp_path / "r1")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "pipe.png: not a regular file" in err, err
        assert main([*train, "--skip-bad", "--out", str(tmp_path / "r2")]) == 0
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)


@pytest.mark.parametrize("transforms, culprit", [("translate8", "wholly out of view"), (",", "no transform named"),
                                                 ("hflip,translate99999999999999999999", "wholly out of view")])
def test_invariance_refuses_shifts_past_the_image_and_an_empty_list(run, capsys, transforms, culprit):
    assert main(["invariance", "--checkpoint", str(run), "--transforms", transforms]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and culprit in err, err


@pytest.mark.parametrize("shape", ["3x20000x20000", "3x99999999x99999999"])
def test_a_summary_of_an_input_too_large_for_memory_is_one_line(capsys, shape):
    assert main(["summary", "resnet20", "--input", shape]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"a summary of a {shape} input needs" in err, err


def test_diagnose_plots_onto_a_file_name_it_and_keep_it(run, tmp_path, capsys):
    (tmp_path / "notes").write_text("mine")
    assert main(["diagnose", str(run), "--plots", str(tmp_path / "notes")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--plots" in err and "is a file; name a folder" in err, err
    assert (tmp_path / "notes").read_text() == "mine"


def test_predict_prints_one_line_per_image_whatever_the_file_is_named(run, tmp_path, capsys):
    """A newline in a file name would print a line that reads as a prediction of another file."""
    image = next((run.parent / "imgs" / "a").iterdir())
    odd = tmp_path / "x.png\nfake.png: c 0.999"
    shutil.copy(image, odd)
    assert main(["predict", "--checkpoint", str(run), str(odd), "--top-k", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(str(tmp_path / "x.png\\nfake.png: c 0.999") + ": "), lines


def test_augment_skips_unreadable_images_when_asked_as_its_message_says(tmp_path, capsys):
    _image_folder(tmp_path / "d", "ab", per_class=3)
    (tmp_path / "d" / "a" / "99.png").write_bytes(b"not an image")
    argv = ["augment", "--data", str(tmp_path / "d"), "--policy", "flip", "--rows", "2", "--cols", "2"]
    assert main([*argv, "--out", str(tmp_path / "g.png")]) == 2
    assert "pass --skip-bad to skip such files" in capsys.readouterr().err
    assert main([*argv, "--skip-bad", "--out", str(tmp_path / "g.png")]) == 0 and (tmp_path / "g.png").is_file()
