"""Augmentation improves generalisation when data is scarce. One small `cnn` (residual, batch norm) trained
with each policy on 10% and on 90% of the training split (the rest of it validates: --val-fraction 0.9 and
0.1), the scarce runs for proportionally more epochs so that every run takes about the same number of steps.
On digits a mirror image is another symbol or none: flip is expected to hurt."""
from __future__ import annotations

from . import plots
from .common import cnn, gap, train_eval_accuracy
from .harness import BUDGETS, Compare, Measure, Study

POLICIES = {"none": "", "crop (translate 2 px)": "translate=2", "flip": "flip", "rotate 15°": "rotate=15",
            "colour": "color=0.4", "crop + flip": "translate=2,flip", "TrivialAugment": "trivialaugment"}
FRACTIONS = {"10%": 0.9, "90%": 0.1}  # share of the training split trained on -> --val-fraction


def _policies(budget: str) -> dict:
    return {k: POLICIES[k] for k in ("none", "crop (translate 2 px)")} if budget == "tiny" else POLICIES


def contenders(budget: str) -> dict:
    epochs = BUDGETS[budget]["train"]["epochs"]
    out = {}
    for share, val in FRACTIONS.items():
        for name, policy in _policies(budget).items():
            out[f"{name}, {share} data"] = {**cnn(1, 3, (16, 32), skip=True), "augment": policy,
                                            "val_fraction": val, "eval_train": True,  # the gap on clean images
                                            "epochs": max(1, round(epochs * 0.9 / (1 - val)))}
    return out


def comparisons(budget: str) -> list[Compare]:
    return [Compare("test_accuracy", "crop (translate 2 px), 10% data", "none, 10% data",
                    what="test accuracy with 10% of the data, crop against none"),
            Compare("gap", "crop (translate 2 px), 10% data", "none, 10% data", higher=False,
                    what="train/test gap with 10% of the data, crop against none")]


def draw(results: dict, out) -> list[tuple[str, str]]:
    plt = plots._plt()
    fig, ax = plt.subplots(figsize=(9, 4.8))
    names = list(_policies(results["budget"]))
    width = 0.8 / len(FRACTIONS)
    for i, share in enumerate(FRACTIONS):
        means = [results["contenders"][f"{n}, {share} data"]["mean"].get("test_accuracy", 0) for n in names]
        sds = [results["contenders"][f"{n}, {share} data"]["sd"].get("test_accuracy", 0) for n in names]
        bars = ax.bar([k + i * width for k in range(len(names))], means, width, yerr=sds, capsize=2,
                      label=f"{share} of the training split")
        ax.bar_label(bars, [f"{m:.0%}" for m in means], fontsize=7, padding=2)
    ax.set_xticks([k + width / 2 for k in range(len(names))], [plots._wrap(n, 12) for n in names], fontsize=8)
    ax.set_xlabel("augmentation policy")
    ax.set_ylabel("test accuracy (%)")
    plots._percent_axis(ax)
    ax.set_ylim(0, 1.12)
    ax.set_title("test accuracy per policy and amount of data (error bars: one sd over seeds)", fontsize=10)
    plots._legend_below(ax)
    return [(plots.save(fig, out, "accuracy.png"), "Test accuracy per augmentation policy, with 10% and 90% of "
             "the training split."),
            (plots.save(plots.bars(results, "gap", "train/test accuracy gap"), out, "gap.png"),
             "Training accuracy minus test accuracy of the final weights, both on clean images: the "
             "generalisation gap.")]


STUDY = Study("augmentation", "augmentation improves generalisation when data is scarce",
              "Krizhevsky et al. 2012; Cubuk et al. 2020 (RandAugment); Müller and Hutter 2021 (TrivialAugment)",
              contenders, comparisons,
              [Measure("train_eval_accuracy", "training accuracy, clean images (%)", train_eval_accuracy, percent=True),
               Measure("gap", "train/test gap (points, %)", gap, percent=True)], draw,
              ["test_accuracy", "train_accuracy", "train_eval_accuracy", "gap", "train_seconds"], __doc__)
