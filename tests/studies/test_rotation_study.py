"""The rotation study, shortened: a P4 CNN trained on upright digits answers the same for every 90-degree
rotation, and beats a plain CNN, with or without rotation augmentation, on digits turned by 90 degrees."""
import json

from cnnlab.cli import main


def test_p4_cnn_is_as_good_on_quarter_turned_digits_as_on_upright_ones(tmp_path, capsys):
    assert main(["study", "rotation", "--out", str(tmp_path), "--epochs", "6"]) == 0
    assert "| P4 CNN (p4cnn), no augmentation |" in capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    plain, augmented, p4 = (results[k]["accuracy"] for k in results)
    assert p4["0"] == p4["90"] == p4["180"] == p4["270"] and p4["0"] > 0.5  # 68% here after 6 epochs
    assert p4["90"] > plain["90"] + 0.4 and p4["90"] > augmented["90"] + 0.1
    assert plain["0"] > 0.8 and plain["90"] < 0.3  # upright only: a plain CNN fails on turned digits
    assert (tmp_path / "accuracy.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "table.md").exists()
