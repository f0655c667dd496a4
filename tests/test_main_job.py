"""The README's main job: a ResNet on the embedded digits, at least 98% test accuracy in under 2 minutes."""
import json
import subprocess
import sys


def test_readme_main_job_reaches_98_percent(tmp_path):
    out = tmp_path / "digits-run"
    subprocess.run([sys.executable, "-m", "cnnlab", "train", "--out", str(out), "-q"], check=True, timeout=300)
    s = json.loads((out / "summary.json").read_text())
    assert s["model"] == "resnet20" and s["dataset"] == "digits"
    assert s["test_accuracy"] >= 0.98, s
    assert s["wall_seconds"] < 120, s  # under pytest-xdist on one core (tests/conftest.py); the README means 2
