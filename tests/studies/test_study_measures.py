"""Each study's measures read one tiny run folder through RunFolder: figures of the right kind and range."""
import math

import pytest

from cnnlab.studies import get
from cnnlab.studies.harness import COMMON
from cnnlab.train.run_folder import RunFolder


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from cnnlab.train import TrainConfig, train

    out = tmp_path_factory.mktemp("m") / "run"
    train(TrainConfig(model="cnn", model_kwargs={"arch": {"stages": [{"blocks": 1, "width": 8, "kernel": 3},
                                                                    {"blocks": 1, "width": 16, "kernel": 3}]}},
                      data="digits", image_size=8, epochs=2, out=str(out), quiet=True, monitor_every=2))
    return RunFolder(out)


def test_measures_of_every_study_read_a_run(run):
    ctx = {"budget": "tiny"}
    read = {m.name: m.read(run, ctx) for name in ("filters", "depth", "vanishing", "batchnorm", "augmentation",
                                                  "residual") for m in COMMON + get(name).measures}
    assert 0 <= read["test_accuracy"] <= 1 and 0 <= read["train_accuracy"] <= 1 and read["params"] > 1000
    assert read["depth"] == 6 and read["receptive_field"] > 3 and read["macs"] > read["params"]
    assert math.isfinite(read["log_grad_ratio"]) and read["vanishing"] in (0.0, 1.0)
    assert list(read["grad_profile"])[0] == "features.0" and "bn" not in "".join(read["grad_profile"])
    assert read["steps_to_target"] in (10.0, 20.0, 40.0)  # 10 steps an epoch; never reached: twice the run
    assert read["lr"] == 0.1 and read["act_std_range"] >= 0 and read["train_error"] == 1 - read["train_accuracy"]
    assert read["gap"] == pytest.approx(read["train_accuracy"] - read["test_accuracy"])
    rotation = {m.name: m.read(run, {}) for m in get("rotation").measures}
    assert all(0 <= v <= 1 for v in rotation.values()) and len(rotation) == 5


def test_gap_compares_clean_training_accuracy_when_the_run_has_it_and_damaged_figures_give_none(run, tmp_path):
    import json
    import shutil

    from cnnlab.studies.harness import _safe

    copy = tmp_path / "run"
    shutil.copytree(run.path, copy)
    summary = json.loads((copy / "summary.json").read_text())
    gap = next(m for m in get("augmentation").measures if m.name == "gap")
    for value, expected in ((0.75, 0.75 - summary["test_accuracy"]), ("damaged", None)):
        (copy / "summary.json").write_text(json.dumps({**summary, "train_eval_accuracy": value}))
        assert _safe(gap, RunFolder(copy), {}) == (pytest.approx(expected) if expected is not None else None)
