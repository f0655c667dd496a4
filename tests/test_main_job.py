"""The README's main job: a ResNet on the embedded digits, at least 98% test accuracy. (Its time is the README's
figure from benchmarks/compare_revisions.py, not a bound here: a test on one core of a loaded machine cannot time it.)"""
import json
import subprocess
import sys


def test_readme_main_job_reaches_98_percent(tmp_path):
    out = tmp_path / "digits-run"
    subprocess.run([sys.executable, "-m", "cnnlab", "train", "--out", str(out), "-q"], check=True, timeout=300)
    s = json.loads((out / "summary.json").read_text())
    assert s["model"] == "resnet20" and s["dataset"] == "digits"
    assert s["test_accuracy"] >= 0.98, s
