"""Batch norm keeps activations in range and speeds training: the same VGG-like `cnn` (no skips) with and
without batch norm, over a sweep of learning rates. Steps to reach a target validation accuracy (a run that
never reaches it counts as twice its steps), the largest learning rate that still trains (mean test accuracy
at least 50%), and the standard deviation of each layer's activations. BN paper (Ioffe and Szegedy 2015):
the same accuracy in 14x fewer steps, and far higher learning rates."""
from __future__ import annotations

import statistics

from . import plots
from .common import cnn
from .harness import Compare, Measure, Study

TARGET = {"tiny": 0.2, "small": 0.8, "full": 0.6}


def _lrs(budget: str) -> tuple[float, ...]:
    return (0.05, 0.8) if budget == "tiny" else (0.05, 0.2, 0.8)


def _label(bn: bool, lr: float) -> str:
    return f"{'BN' if bn else 'no BN'}, lr {lr:g}"


def contenders(budget: str) -> dict:
    widths = (8, 16) if budget == "tiny" else (16, 32, 64)
    return {_label(bn, lr): {**cnn(2, 3, widths, bn=bn), "lr": lr}
            for bn in (True, False) for lr in _lrs(budget)}


def steps_to_target(folder, ctx) -> float | None:
    epochs = [r for r in folder.read_metrics() if r["type"] == "epoch"]
    if not epochs:
        return None
    hit = next((r["step"] for r in epochs if r.get("val_accuracy", 0) >= TARGET[ctx["budget"]]), None)
    return float(hit if hit is not None else 2 * epochs[-1]["step"])


def act_profile(folder, ctx) -> dict | None:
    samples = [r for r in folder.read_metrics() if r["type"] == "layers" and "act_std" in r]
    return samples[-1]["act_std"] if samples else None


def act_std_range(folder, ctx) -> float | None:
    """How far apart the layers' activation scales are: log10(largest / smallest std), at the last sample."""
    import math

    p = act_profile(folder, ctx)
    vals = [v for v in (p or {}).values() if v and v > 0]
    return math.log10(max(vals) / min(vals)) if vals else None


def comparisons(budget: str) -> list[Compare]:
    lrs = _lrs(budget)
    return [Compare("steps_to_target", _label(True, lrs[0]), _label(False, lrs[0]), higher=False,
                    what=f"steps to {TARGET[budget]:.0%} validation accuracy at lr {lrs[0]:g}"),
            Compare("test_accuracy", _label(True, lrs[-1]), _label(False, lrs[-1]), missing=0.1,
                    what=f"test accuracy at the highest learning rate, {lrs[-1]:g}")]


def draw(results: dict, out) -> list[tuple[str, str]]:
    largest = {}
    for bn in (True, False):
        ok = [lr for lr in _lrs(results["budget"])
              if results["contenders"][_label(bn, lr)]["mean"].get("test_accuracy", 0) >= 0.5]
        largest["BN" if bn else "no BN"] = max(ok) if ok else None
    results["derived"] = {"largest learning rate that trains (mean test accuracy >= 50%)": largest}
    groups = {kind: [k for k in results["contenders"] if k.startswith(kind + ",")] for kind in ("BN", "no BN")}
    plt = plots._plt()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for i, (label, c) in enumerate(results["contenders"].items()):
        profiles = [r["measures"].get("act_profile") for r in c["runs"] if r["measures"].get("act_profile")]
        if profiles:
            names = list(profiles[0])
            ax.plot(range(len(names)), [statistics.fmean(p.get(n, float("nan")) for p in profiles) for n in names],
                    marker="o", ms=3, color=f"C{i}", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("activation, input (0) to output")
    ax.set_ylabel("activation standard deviation (log scale)")
    ax.set_title("activation scale per layer at the last sample, mean over seeds", fontsize=10)
    plots._legend_below(ax, 3)
    return [(plots.save(plots.lines(results, "lr", "test_accuracy", groups, "test accuracy against learning rate",
                                    logx=True), out, "lr.png"), "Test accuracy against the learning rate."),
            (plots.save(plots.curves(results, "val_accuracy", "validation accuracy (%)", "validation accuracy"),
                        out, "curves.png"), "Validation accuracy per epoch: batch norm gets there in fewer steps."),
            (plots.save(fig, out, "activations.png"), "Standard deviation of each layer's activations.")]


STUDY = Study("batchnorm", "batch norm keeps activations in range and speeds training",
              "Ioffe and Szegedy 2015 (batch normalization), sec. 4.2", contenders, comparisons,
              [Measure("steps_to_target", "steps to the target validation accuracy", steps_to_target),
               Measure("lr", "learning rate", lambda f, ctx: float(f.read_config()["lr"])),
               Measure("act_std_range", "activation std range, log10(max/min)", act_std_range),
               Measure("act_profile", "activation std per layer", act_profile)],
              draw, ["test_accuracy", "steps_to_target", "act_std_range", "train_seconds"], __doc__)
