"""The rotation study end to end at the tests' tiny budget, through the command line: the harness trains each
contender with the ordinary trainer, and the P4 CNN, invariant to quarter turns by construction, answers
the same on digits turned by 0, 90, 180 and 270 degrees however little it trained."""
import json

from cnnlab.cli import main


def test_rotation_study_writes_results_plots_verdict_and_report(tmp_path, capsys):
    assert main(["study", "rotation", "--budget", "tiny", "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    shown = [line for line in err.splitlines() if line.startswith("[")]  # one line per contender and seed
    assert len(shown) == 3 and shown[0].startswith("[1/3] rotation: plain CNN (z2cnn), seed 0 ... test ")
    assert "| P4 CNN (p4cnn), no augmentation |" in out and "**Verdict: inconclusive**" in out  # one seed
    results = json.loads((tmp_path / "results.json").read_text())
    p4 = results["contenders"]["P4 CNN (p4cnn), no augmentation"]["runs"][0]["measures"]
    assert p4["acc_0"] == p4["acc_90"] == p4["acc_180"] == p4["acc_270"]
    assert results["verdict"] == "inconclusive" and results["evidence"][0]["reason"].startswith("one seed")
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "p4-cnn-p4cnn-no-augmentation-s0", "plain-cnn-rotation-augmentation-s0", "plain-cnn-z2cnn-s0"]
    assert (tmp_path / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert "data:image/png;base64," in (tmp_path / "report.html").read_text()
