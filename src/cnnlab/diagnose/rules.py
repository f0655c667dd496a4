"""The diagnoses of gradient health: each a rule with its thresholds in THRESHOLDS, and the remedies a learner
can try. The rules read what `GradientMonitor` measured; they never touch the model."""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field

from ..text import plural

# Every threshold a rule uses, in one place. "samples" are the steps the monitor samples (every N steps).
THRESHOLDS = {
    "persist_samples": 5,       # a sampled condition must hold this many samples in a row
    "baseline_steps": 5,        # the first steps whose gradient norms and loss are the reference
    "vanishing_ratio": 1e-3,    # vanishing: median gradient norm of the first quarter of the weighted layers
                                # over that of the last quarter, below this
    "vanishing_floor": 1e-7,
    "overwhelming_ratio": 1e-6,  # vanishing within the first steps, sampled densely: the same ratio below this    # ... or every layer's gradient norm below this
    "exploding_growth": 1e3,    # exploding: global gradient norm above this times its baseline ...
    "diverging_loss": 3.0,      # ... or the loss above this times its baseline ...
    "diverging_steps": 3,       # ... for this many steps in a row
    "dead_fraction": 0.5,       # dead units: over this fraction of a ReLU's channels output zero for a whole batch
    "stalled_ratio": 1e-5,      # stalled: update / weight norm per step below this (healthy: about 1e-3) ...
    "stalled_lr_fraction": 0.1,  # ... while the learning rate is at least this fraction of its peak so far
    "underflow_fraction": 0.1,  # underflow (fp16): over this fraction of a layer's gradient entries are zero
                                # in fp16 but not in fp32, on the same batch
    "lost_update_fraction": 0.5,  # underflow (low-precision weights): over this fraction of a layer's entries
                                  # with a nonzero gradient left unchanged by the step
    "overflow_scale": 1.0,      # overflow (fp16): the dynamic loss scale fell below this, so gradients
                                # overflow fp16 even unscaled; or (any precision) an activation beyond ...
    "fp16_max": 65504.0,        # ... fp16's largest finite value
}

REMEDIES = {
    "vanishing": ["add batch norm (model switch bn=true)", "add residual connections (residual=true)",
                  "use a ReLU-family activation instead of sigmoid or tanh (activation=relu)",
                  "use a variance-preserving initialisation (Kaiming for ReLU, Xavier for tanh)",
                  "raise the learning rate"],
    "exploding": ["lower the learning rate (--lr)", "clip the gradient norm (--grad-clip 1.0)",
                  "add batch norm (bn=true)", "warm the learning rate up (--warmup-epochs 2)"],
    "nonfinite": ["lower the learning rate", "clip gradients (--grad-clip 1.0)",
                  "use fp32 or bf16 instead of fp16 (--precision)", "check the data for NaN or infinite values"],
    "dead_units": ["lower the learning rate", "use a leakier activation (activation=gelu)",
                   "add batch norm before the activation (bn=true)"],
    "underflow": ["turn fp16 loss scaling on (--loss-scaling)", "use bf16, which has fp32's range (--precision bf16)",
                  "use fp32 for this model (--precision fp32)"],
    "overflow": ["use bf16, which has fp32's range (--precision bf16)", "lower the learning rate",
                 "add batch norm to keep activations small (bn=true)", "clip gradients (--grad-clip 1.0)"],
    "stalled": ["raise the learning rate", "check the layer is meant to train (not frozen by mistake)",
                "add batch norm or residual connections if earlier layers also vanish"],
}


@dataclass
class Diagnosis:
    kind: str  # vanishing, exploding, nonfinite, dead_units, stalled, underflow, overflow
    step: int
    layers: list[str]
    evidence: str
    remedies: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.remedies:
            self.remedies = list(REMEDIES.get(self.kind, []))

    def message(self) -> str:
        where = f" in {', '.join(self.layers[:4])}{' ...' if len(self.layers) > 4 else ''}" if self.layers else ""
        return f"step {self.step}: {self.kind.replace('_', ' ')}{where}: {self.evidence}; try: {self.remedies[0]}"

    def to_dict(self) -> dict:
        return asdict(self)


def _persists(samples: list[dict], test, n: int) -> bool:
    return len(samples) >= n and all(test(s) for s in samples[-n:])


def vanishing(samples: list[dict], weighted: list[str], n: int,
              limit: float = THRESHOLDS["vanishing_ratio"]) -> Diagnosis | None:
    """Early layers' gradients orders of magnitude below late layers', sample after sample."""
    if len(weighted) < 4:
        return None
    q = max(1, len(weighted) // 4)
    early, late = weighted[:q], weighted[-q:]

    def ratio(s: dict) -> float:
        g = s["grad_norm"]
        return statistics.median(g[n] for n in early) / max(statistics.median(g[n] for n in late), 1e-30)

    if _persists(samples, lambda s: ratio(s) < limit, n):
        r = ratio(samples[-1])
        return Diagnosis("vanishing", samples[-1]["step"], early,
                         f"gradient norms in the first {plural(q, 'weighted layer')} are {r:.1e} of those in the "
                         f"last {q}, {plural(n, 'sample')} in a row")
    if _persists(samples, lambda s: max(s["grad_norm"].values()) < THRESHOLDS["vanishing_floor"], n):
        return Diagnosis("vanishing", samples[-1]["step"], weighted,
                         f"every layer's gradient norm is below {THRESHOLDS['vanishing_floor']:.0e}")
    return None


def exploding(steps: list[tuple[int, float, float]]) -> Diagnosis | None:
    """`steps`: (step, loss, global gradient norm) of the first and the latest finite steps. The caller names
    the layer (the one whose gradient grew most)."""
    b = THRESHOLDS["baseline_steps"]
    if len(steps) <= b:
        return None
    base_loss = statistics.median(s[1] for s in steps[:b])
    base_grad = statistics.median(s[2] for s in steps[:b])
    step, loss, grad = steps[-1]
    layers: list[str] = []
    if grad > THRESHOLDS["exploding_growth"] * max(base_grad, 1e-30):
        return Diagnosis("exploding", step, layers, f"the gradient norm grew from {base_grad:.2g} to {grad:.2g} "
                                                    f"({grad / max(base_grad, 1e-30):.0e}x)")
    k = THRESHOLDS["diverging_steps"]
    if len(steps) >= b + k and all(s[1] > THRESHOLDS["diverging_loss"] * base_loss for s in steps[-k:]):
        return Diagnosis("exploding", step, layers, f"the loss diverges: {loss:.3g} against {base_loss:.3g} at the "
                                                    f"start, {plural(k, 'step')} in a row")
    return None


def dead_units(samples: list[dict], weighted: list[str], n: int) -> Diagnosis | None:
    def dead_layers(s: dict) -> set[str]:
        return {n for n, f in s.get("dead_fraction", {}).items() if f > THRESHOLDS["dead_fraction"]}

    if len(samples) < n:
        return None
    persistent = set.intersection(*(dead_layers(s) for s in samples[-n:]))
    if not persistent:
        return None
    names = sorted(persistent, key=list(samples[-1]["dead_fraction"]).index)
    worst = max(samples[-1]["dead_fraction"][x] for x in names)
    return Diagnosis("dead_units", samples[-1]["step"], names,
                     f"up to {worst:.0%} of the channels output zero for every image of a batch, "
                     f"{plural(n, 'sample')} in a row")


def stalled(samples: list[dict], weighted: list[str], n: int) -> Diagnosis | None:
    if len(samples) < n:
        return None
    recent = samples[-n:]
    if any(s["lr"] < THRESHOLDS["stalled_lr_fraction"] * s["peak_lr"] for s in recent):
        return None
    persistent = set.intersection(*({k for k, v in s["update_ratio"].items() if v < THRESHOLDS["stalled_ratio"]}
                                    for s in recent))
    if not persistent:
        return None
    names = [k for k in recent[-1]["update_ratio"] if k in persistent]
    return Diagnosis("stalled", recent[-1]["step"], names,
                     f"each step changes these layers' weights by less than {THRESHOLDS['stalled_ratio']:.0e} "
                     f"of their norm (a healthy layer: about 1e-3)")


def underflow(samples: list[dict], weighted: list[str], n: int) -> Diagnosis | None:
    recent = samples[-n:]
    if len(recent) < n or any("underflow_fraction" not in s for s in recent):
        return None
    persistent = set.intersection(*({k for k, v in s["underflow_fraction"].items()
                                     if v > THRESHOLDS["underflow_fraction"]} for s in recent))
    if not persistent:
        return None
    names = [k for k in recent[-1]["underflow_fraction"] if k in persistent]
    worst = max(recent[-1]["underflow_fraction"][k] for k in names)
    return Diagnosis("underflow", recent[-1]["step"], names,
                     f"up to {worst:.0%} of a layer's gradient entries are zero in fp16 but not in fp32, "
                     f"{plural(n, 'sample')} in a row")


def overflow(samples: list[dict], weighted: list[str], n: int) -> Diagnosis | None:
    if not samples:
        return None
    s = samples[-1]
    big = {k: v for k, v in s.get("act_absmax", {}).items() if v > THRESHOLDS["fp16_max"]}
    if big:
        worst = max(big.values())
        return Diagnosis("overflow", s["step"], list(big),
                         f"activations reach {worst:.3g}, beyond fp16's largest value 65504: fp16 would overflow "
                         f"here (bf16 and fp32 hold it)")
    if s.get("loss_scale", float("inf")) >= THRESHOLDS["overflow_scale"]:
        return None
    return Diagnosis("overflow", s["step"], [], f"the fp16 loss scale fell to {s['loss_scale']:.2g} after "
                                                f"{s['scaler_skips']} overflowing steps: gradients exceed 65504 "
                                                f"even unscaled")


def lost_updates(samples: list[dict], weighted: list[str], n: int) -> Diagnosis | None:
    """Weights stored in bf16 (8 significant bits) or fp16 ignore updates smaller than their precision."""
    recent = samples[-n:]
    if len(recent) < n or any(s["lr"] < THRESHOLDS["stalled_lr_fraction"] * s["peak_lr"] for s in recent):
        return None
    persistent = set.intersection(*({k for k, v in s.get("unchanged_fraction", {}).items()
                                     if v > THRESHOLDS["lost_update_fraction"]} for s in recent))
    if not persistent:
        return None
    names = [k for k in recent[-1]["unchanged_fraction"] if k in persistent]
    dtype = recent[-1]["weight_dtype"][names[0]]
    worst = max(recent[-1]["unchanged_fraction"][k] for k in names)
    return Diagnosis("underflow", recent[-1]["step"], names,
                     f"each step leaves up to {worst:.0%} of these {dtype} weights unchanged although their "
                     f"gradients are not zero: the updates fall below the weights' precision",
                     ["keep fp32 master weights and compute in bf16 (autocast: --precision bf16 does this)",
                      "raise the learning rate", "use fp32 weights for this model"])


def overwhelming_vanishing(samples: list[dict], weighted: list[str], n: int) -> Diagnosis | None:
    """Vanishing beyond doubt (three orders of magnitude past the usual threshold) in the densely sampled first
    steps: a run this sick is diagnosed within them, however short it is."""
    return vanishing(samples, weighted, n, THRESHOLDS["overwhelming_ratio"])


# The sampled rules, in the order the monitor applies them after each sample (and once more when a run ends
# before their window fills). Each reads (samples, weighted layer names, samples the condition must persist).
SAMPLED_RULES = [vanishing, dead_units, stalled, underflow, lost_updates, overflow]


def nonfinite(step: int, loss: float, layers: list[str], grad_sq: list[float], bad_weights: list[str]) -> Diagnosis:
    """A NaN or infinite loss or gradient, named by the layer where it shows first: weights that are no longer
    finite, else a finite loss with non-finite gradients (backward overflowed: the deepest such layer is
    where it began), else the loss itself (the trainer then looks for the first layer whose output is not
    finite)."""
    bad = [name for name, v in zip(layers, grad_sq) if not math.isfinite(v)]
    if bad_weights:
        return Diagnosis("nonfinite", step, bad_weights[:1], f"the weights of {bad_weights[0]} are not finite")
    if not math.isfinite(loss):
        return Diagnosis("nonfinite", step, [], f"the loss is {loss}")
    return Diagnosis("nonfinite", step, bad[-1:],
                     f"the loss is finite but gradients are not, first in {bad[-1] if bad else '?'}")
