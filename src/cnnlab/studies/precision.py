"""Finite precision: fp16's narrow range flushes small gradients to zero (underflow) unless the loss is
scaled up first, and large values overflow; bf16 keeps fp32's range. One deep sigmoid net without batch norm
(plain-20: its first layers' gradients are tiny, the case where underflow bites; it barely trains at this
budget whatever the precision) in fp32, bf16, and fp16 without and with dynamic loss scaling. The lost
fraction is measured by the gradient monitor under fp16 only: on each sampled step it recomputes the batch's
gradients in fp32 and counts the entries fp16 flushed to zero (mean over layers and samples). fp16 is
emulated on CPUs (slow); a non-finite step is skipped (--on-nonfinite skip) and counted."""
from __future__ import annotations

import statistics

from . import plots
from .harness import Compare, Measure, Study

FP32, BF16, FP16, FP16S = "fp32", "bf16", "fp16, no loss scaling", "fp16 + loss scaling"


def contenders(budget: str) -> dict:
    model = {"model": "plain20", "model_kwargs": {"width": 0.25 if budget == "tiny" else 0.5,
                                                  "activation": "sigmoid", "bn": False}, "on_nonfinite": "skip"}
    return {FP32: {**model, "precision": "fp32"}, BF16: {**model, "precision": "bf16"},
            FP16: {**model, "precision": "fp16", "loss_scaling": False},
            FP16S: {**model, "precision": "fp16", "loss_scaling": True}}


def lost_fraction(folder, ctx) -> float | None:
    fractions = [v for r in folder.read_metrics() if r["type"] == "layers"
                 for v in r.get("underflow_fraction", {}).values()]
    return statistics.fmean(fractions) if fractions else None


def overflow_events(folder, ctx) -> float:
    records = folder.read_metrics()
    skips = max([r.get("scaler_skips", 0) for r in records if r["type"] == "layers"], default=0)
    return float(skips + sum(r.get("kind") in ("nonfinite", "overflow") for r in records if r["type"] == "diagnosis"))


def comparisons(budget: str) -> list[Compare]:
    return [Compare("lost_fraction", FP16S, FP16, higher=False, what="gradient entries lost to underflow")]


def draw(results: dict, out) -> list[tuple[str, str]]:
    return [(plots.save(plots.bars(results, "test_accuracy", "test accuracy per precision"), out, "accuracy.png"),
             "Test accuracy per precision; bars: mean over seeds, dots: each seed."),
            (plots.save(plots.bars(results, "lost_fraction", "gradient entries flushed to zero by fp16",
                                   [FP16, FP16S]), out, "underflow.png"),
             "Share of gradient entries that were zero in fp16 but not in an fp32 recompute of the same batch.")]


STUDY = Study("precision", "finite precision: gradients can underflow to zero or overflow; loss scaling (or "
              "bf16's range) prevents it", "Micikevicius et al. 2018 (mixed precision training)", contenders,
              comparisons,
              [Measure("lost_fraction", "gradient entries lost to underflow (%)", lost_fraction, percent=True),
               Measure("overflow_events", "overflow events (skipped steps)", overflow_events)],
              draw, ["test_accuracy", "lost_fraction", "overflow_events", "train_seconds"],
              __doc__)
