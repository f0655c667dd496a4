"""Measures and helpers several studies share (all reading runs through `RunFolder`)."""
from __future__ import annotations

import statistics

from ..train.run_folder import RunFolder
from .harness import Measure, build_model


def cnn(blocks: int | list[int], kernel: int = 3, widths: tuple[int, ...] = (16, 32), skip: bool = False,
        bn: bool = True, activation: str = "relu") -> dict:
    """Overrides for the data-described `cnn` model: a stage per width, `blocks` basic blocks (two convs
    each) per stage, 2x2 max-pool between stages, a global-average-pool head."""
    per_stage = blocks if isinstance(blocks, list) else [blocks] * len(widths)
    return {"model": "cnn", "model_kwargs": {"arch": {
        "stages": [{"blocks": b, "width": w, "kernel": kernel} for b, w in zip(per_stage, widths)],
        "downsample": "pool", "skip": skip, "bn": bn, "activation": activation, "head": {"type": "gap"}}}}


def _model_summary(folder: RunFolder):
    from ..models.summary import summarize

    model, spec = build_model(folder, weights=None)
    return summarize(model, (spec["in_channels"], spec["image_size"], spec["image_size"]))


def weighted_layers(folder: RunFolder, ctx: dict) -> float:
    """Conv and linear layers on the main path, the depth as papers count it (not the shortcuts' projections)."""
    import torch.nn as nn

    model, _ = build_model(folder, weights=None)
    return float(sum(isinstance(m, (nn.Conv2d, nn.Linear)) and "downsample" not in name
                     for name, m in model.named_modules()))


MACS = Measure("macs", "multiply-adds per image", lambda f, ctx: float(_model_summary(f).macs))
RECEPTIVE_FIELD = Measure("receptive_field", "receptive field (pixels)",
                          lambda f, ctx: float(_model_summary(f).receptive_field))
DEPTH = Measure("depth", "depth (conv + linear layers)", weighted_layers)


def layer_samples(folder: RunFolder) -> list[dict]:
    return [r for r in folder.read_metrics() if r["type"] == "layers"]


def weighted(names) -> list[str]:
    """The monitored layers that hold weights a gradient flows through (not the norms)."""
    return [n for n in names if "bn" not in n.rsplit(".", 1)[-1] and "norm" not in n]


def grad_profile(folder: RunFolder, ctx: dict) -> dict | None:
    """Per weighted layer, the median gradient norm over the sampled steps (input first)."""
    samples = layer_samples(folder)
    if not samples:
        return None
    names = weighted(samples[0]["grad_norm"])
    return {n: statistics.median(s["grad_norm"][n] for s in samples if n in s["grad_norm"]) for n in names}


def log10_first_over_last(folder: RunFolder, ctx: dict) -> float | None:
    import math

    profile = grad_profile(folder, ctx)
    if not profile:
        return None
    first, last = list(profile.values())[0], list(profile.values())[-1]
    return math.log10(max(first, 1e-30) / max(last, 1e-30))


def diagnosed(kind: str):
    def read(folder: RunFolder, ctx: dict) -> float:
        return float(any(r.get("kind") == kind for r in folder.read_metrics() if r["type"] == "diagnosis"))
    return read


def gap(folder: RunFolder, ctx: dict) -> float | None:
    """Training minus test accuracy of the final weights, both on clean images (a run with --eval-train);
    the last epoch's accuracy on augmented batches otherwise, which strong augmentation pushes below test."""
    summary = folder.read_summary()
    if summary.get("status") != "finished":
        return None
    if summary.get("train_eval_accuracy") is not None:
        return summary["train_eval_accuracy"] - summary["test_accuracy"]
    epochs = [r for r in folder.read_metrics() if r["type"] == "epoch"]
    return epochs[-1]["train_accuracy"] - summary["test_accuracy"] if epochs else None


def train_eval_accuracy(folder: RunFolder, ctx: dict) -> float | None:
    return folder.read_summary().get("train_eval_accuracy")
