"""Skip connections fix the degradation of deep plain nets. He et al. (2016) Fig. 6: plain-56 trains worse
than plain-20 (higher training error), while resnet-56 trains better than resnet-20. The CIFAR ResNets and
their plain twins (the same nets without skips), batch norm in all, the training error of the last epoch."""
from __future__ import annotations

from . import plots
from .harness import Compare, Measure, Study, final_train_accuracy


def _depths(budget: str) -> tuple[int, int]:
    return (20, 32) if budget == "tiny" else (20, 56)


def contenders(budget: str) -> dict:
    w = 0.25 if budget == "tiny" else 0.5
    return {f"{name}-{d}": {"model": f"{name}{d}", "model_kwargs": {"width": w}}
            for name in ("plain", "resnet") for d in _depths(budget)}


def train_error(folder, ctx) -> float | None:
    acc = final_train_accuracy(folder, ctx)
    return None if acc is None else 1 - acc


def comparisons(budget: str) -> list[Compare]:
    lo, hi = _depths(budget)
    return [Compare("train_error", f"plain-{lo}", f"plain-{hi}", higher=False,
                    what=f"training error, plain-{lo} against plain-{hi} (degradation)"),
            Compare("train_error", f"resnet-{hi}", f"resnet-{lo}", higher=False,
                    what=f"training error, resnet-{hi} against resnet-{lo}")]


def draw(results: dict, out) -> list[tuple[str, str]]:
    return [(plots.save(plots.curves(results, "train_accuracy", "training error (%)", "training error",
                                     transform=lambda a: 1 - a), out, "train_error.png"),
             "Training error per epoch (He et al. Fig. 6): plain nets get worse with depth, ResNets better."),
            (plots.save(plots.bars(results, "test_accuracy", "test accuracy"), out, "accuracy.png"),
             "Test accuracy; bars: mean over seeds, dots: each seed.")]


STUDY = Study("residual", "skip connections fix the degradation of deep plain nets",
              "He et al. 2016 (ResNet), sec. 4.2, Fig. 6", contenders, comparisons,
              [Measure("train_error", "training error, last epoch (%)", train_error, percent=True)],
              draw, ["train_error", "test_accuracy", "params", "train_seconds"], __doc__)
