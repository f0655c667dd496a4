"""A gradient-health monitor for any `nn.Module` and optimiser, inside cnnlab's trainer or outside it:

    monitor = GradientMonitor(model, every=10)
    for step, (x, y) in enumerate(batches, 1):
        with monitor.forward(step):              # on sampled steps, records activation statistics
            loss = loss_fn(model(x), y)
        loss.backward()
        problem = monitor.after_backward(step, loss, optimizer)   # a Diagnosis if anything is not finite
        if problem: ...                          # stop, skip the step, or roll back
        optimizer.step()
        monitor.after_step(step)                 # update-to-weight ratios on sampled steps
        for d in monitor.new_diagnoses(): print(d.message())

Every step costs one fused norm over the gradients (and, on a GPU, one synchronisation to see whether they
are finite); on each of the first DENSE_STEPS steps and then every `every` steps the monitor also records
per layer the weight norm, the update-to-weight ratio, and mean, standard deviation and dead-unit fraction
of each activation's output. cnnlab's trainer computes the gradient norms and checks finiteness itself, and
hands the norms to `observe`: there the monitor only watches.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator

import torch
from torch import nn

from . import rules
from .rules import Diagnosis

WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Sigmoid, nn.Tanh)
RELU_FAMILY = (nn.ReLU, nn.ReLU6)
ACTIVATION_IMAGES = 32  # activation statistics use the first images of a sampled batch: cheaper, as telling
DENSE_STEPS = 10  # every step is sampled at first, so that a short run is judged too


def gradient_norms(params: list[torch.Tensor], scale: float = 1.0) -> torch.Tensor:
    """Each parameter's gradient norm (0 where it has none), divided by the loss scale: one fused kernel."""
    grads = [p.grad if p.grad is not None else torch.zeros((), device=p.device) for p in params]
    if not grads:
        return torch.zeros(0)
    norms = torch.stack(torch._foreach_norm(grads)).float()
    return norms / scale if scale != 1.0 else norms


def first_nonfinite_output(model: nn.Module, run_forward: Callable[[], object]) -> str | None:
    """Re-run a forward pass (no gradients, batch-norm statistics restored after) and return the first
    module whose output is not finite."""
    first: list[str] = []

    def hook(name):
        def fn(_m, _i, out):
            if not first and isinstance(out, torch.Tensor) and not torch.isfinite(out).all():
                first.append(name)
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        with buffers_kept(model), torch.no_grad():
            run_forward()
    finally:
        for h in handles:
            h.remove()
    return first[0] if first else None


@contextlib.contextmanager
def buffers_kept(model: nn.Module) -> Iterator[None]:
    """A diagnostic re-run of the model must not move its BN running statistics: restore them after."""
    saved = [b.clone() for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, old in zip(model.buffers(), saved):
                b.copy_(old)


class GradientMonitor:
    def __init__(self, model: nn.Module, every: int = 10, precision: str = "fp32") -> None:
        self.model, self.every, self.precision = model, every, precision
        # the monitored layers, in definition order (for the usual nets, the order of the forward pass)
        self.layers: list[tuple[str, list[nn.Parameter]]] = []
        self.weighted: list[str] = []
        for name, m in model.named_modules():
            params = [p for p in m.parameters(recurse=False) if p.requires_grad]
            if params and isinstance(m, WEIGHTED + NORMS):
                self.layers.append((name, params))
                if isinstance(m, WEIGHTED):
                    self.weighted.append(name)
        self.params = [p for _, ps in self.layers for p in ps]
        self.excluded: set[str] = set()  # layers frozen while training: no gradient, no update, by design
        # where the monitored parameters sit among all trainable ones (the order of the trainer's norms)
        trainable = {id(p): i for i, p in enumerate(p for p in model.parameters() if p.requires_grad)}
        self.index = torch.tensor([trainable[id(p)] for p in self.params], dtype=torch.long)
        self.low_precision_weights = any(p.dtype in (torch.bfloat16, torch.float16) for p in self.params)
        self.owner = torch.tensor([i for i, (_, ps) in enumerate(self.layers) for _ in ps], dtype=torch.long)
        # what the rules read: (step, loss, global grad norm) of the first finite steps and of the latest ones,
        # and the latest per-layer samples; the full record goes to the caller through new_samples()
        self.steps: list[tuple[int, float, float]] = []
        self.samples: list[dict] = []  # the latest samples at the rules' pace (step 1, then every `every`)
        self.early: list[dict] = []  # the samples of the first DENSE_STEPS steps
        self._pending: list[dict] = []
        self.diagnoses: list[Diagnosis] = []
        self._reported = 0
        self._baseline: torch.Tensor | None = None  # per-layer gradient norms of the first steps
        self._layer_grads: torch.Tensor | None = None
        self._sample: dict | None = None
        self._before: list[torch.Tensor] = []
        self._acts: dict[str, dict] = {}
        self._calls: dict[str, int] = {}
        self._armed = False
        self.peak_lr = 0.0
        self.scaler_skips = 0  # fp16: steps the loss scaler skipped for overflowing gradients
        self._hooks = [m.register_forward_hook(self._activation_hook(name or type(m).__name__,
                                                                     isinstance(m, RELU_FAMILY)))
                       for name, m in model.named_modules() if isinstance(m, ACTIVATIONS)]

    def exclude(self, layers: set[str]) -> None:
        """Layers frozen while training (--freeze-from): their gradients are absent by design, not vanishing."""
        self.excluded |= layers
        self.weighted = [name for name in self.weighted if name not in layers]

    def close(self) -> None:
        """Remove the monitor's hooks from the model."""
        for h in self._hooks:
            h.remove()

    # -- the four calls of a training step ---------------------------------------------------------------
    def sampled(self, step: int) -> bool:
        return step <= DENSE_STEPS or step % self.every == 0

    @contextlib.contextmanager
    def forward(self, step: int) -> Iterator[None]:
        self._armed = self.sampled(step)
        self._acts, self._calls = {}, {}
        try:
            yield
        finally:
            self._armed = False

    def after_backward(self, step: int, loss: torch.Tensor, optimizer: torch.optim.Optimizer | None = None,
                       grad_scale: float | None = None) -> Diagnosis | None:
        """Measure the gradients. Returns a `nonfinite` Diagnosis, without recording the step, when the loss
        or any gradient is NaN or infinite. Under fp16 loss scaling pass the scale (`scaler.get_scale()`):
        gradients are divided by it, and infinite gradients of a finite loss are the scaler's to handle
        (it skips the step and lowers the scale), so they are counted, not reported."""
        norms = gradient_norms([p for p in self.model.parameters() if p.requires_grad], grad_scale or 1.0)
        loss_value, total = float(loss.detach()), float(norms.square().sum())  # the one synchronisation
        lr = optimizer.param_groups[0]["lr"] if optimizer is not None else 0.0
        if not (math.isfinite(loss_value) and math.isfinite(total)) and \
                not (grad_scale is not None and math.isfinite(loss_value)):
            return self.nonfinite(step, loss_value, norms)
        self.observe(step, loss_value, norms, lr, grad_scale)
        return None

    def observe(self, step: int, loss_value: float, norms: torch.Tensor, lr: float,
                grad_scale: float | None = None) -> None:
        """A finite step's loss and per-parameter gradient norms (all trainable parameters, in the model's
        order, already divided by any loss scale): the exploding rule, and on sampled steps a sample."""
        layer_sq = self._per_layer(norms[self.index] ** 2)
        total_value = float(layer_sq.sum())
        self.peak_lr = max(self.peak_lr, lr)
        if grad_scale is not None and not math.isfinite(total_value):
            self.scaler_skips += 1
            return
        grads = layer_sq.sqrt()
        self._layer_grads = grads
        self.steps.append((step, loss_value, math.sqrt(total_value)))
        b, k = rules.THRESHOLDS["baseline_steps"], rules.THRESHOLDS["diverging_steps"]
        if len(self.steps) > b + k:
            del self.steps[b]
        if len(self.steps) <= b:
            self._baseline = grads if self._baseline is None else self._baseline + (grads - self._baseline) / len(self.steps)
        exploding = rules.exploding(self.steps)
        if exploding is not None:
            grow = self._fastest_growing()
            exploding.layers = [grow] if grow else []
            self._add(exploding)
        if self.sampled(step):
            self._sample = {"type": "layers", "step": step, "loss": loss_value, "lr": lr, "peak_lr": self.peak_lr,
                            "grad_norm": dict(zip(self.names, grads.tolist()))}
            if grad_scale is not None:  # the fp16 loss scale's history, and how often it overflowed
                self._sample.update(loss_scale=grad_scale, scaler_skips=self.scaler_skips)
            self._before = [p.detach().clone() for p in self.params]

    def measure_underflow(self, rerun: Callable[[], torch.Tensor]) -> None:
        """On a sampled fp16 step, between backward and the optimiser step: recompute this batch's gradients
        in fp32 (`rerun` returns the loss, scaled as the fp16 one was) and record per layer the fraction of
        gradient entries that fp16 flushed to zero while fp32 kept them. Everything is restored after."""
        if self._sample is None:
            return
        params = list(self.model.parameters())
        kept = {id(p): p.grad for p in params}
        rng = torch.get_rng_state()
        for p in params:
            p.grad = None
        with buffers_kept(self.model), torch.autocast(params[0].device.type, enabled=False):
            rerun().backward()
        lost, total = [], []
        for p in self.params:
            ref = p.grad if p.grad is not None else torch.zeros_like(p)
            low = kept[id(p)] if kept[id(p)] is not None else torch.zeros_like(p)
            lost.append(((low == 0) & (ref != 0)).sum().float())
            total.append(torch.tensor(float(p.numel())))
        for p in params:
            p.grad = kept[id(p)]
        torch.set_rng_state(rng)
        fraction = self._per_layer(lost) / self._per_layer(total)
        self._sample["underflow_fraction"] = dict(zip(self.names, fraction.tolist()))

    def after_step(self, step: int) -> None:
        """After the optimiser step: on sampled steps, weight norms and update-to-weight ratios."""
        if self._sample is None or self._sample["step"] != step:
            return
        with torch.no_grad():
            weights = [p.detach() for p in self.params]
            new_sq = self._per_layer(torch.stack(torch._foreach_norm(weights)).float() ** 2)
            deltas = torch._foreach_sub(weights, self._before)
            delta_sq = self._per_layer(torch.stack(torch._foreach_norm(deltas)).float() ** 2)
            if self.low_precision_weights:
                # entries the step left exactly as they were although their gradient was not zero: an update
                # below the precision of bf16 or fp16 weights (fp32 weights, as under autocast, never do this)
                moved = [(p.grad != 0) if p.grad is not None else torch.zeros_like(p, dtype=torch.bool)
                         for p in self.params]
                unchanged = self._per_layer([((d == 0) & m).sum() for d, m in zip(deltas, moved)])
                pushed = self._per_layer([m.sum() for m in moved])
        w = new_sq.sqrt()
        s = self._sample
        s["weight_norm"] = dict(zip(self.names, w.tolist()))
        s["update_ratio"] = {k: v for k, v in zip(self.names, (delta_sq.sqrt() / w.clamp(min=1e-30)).tolist())
                             if k not in self.excluded}  # a frozen layer does not move by design
        if self.low_precision_weights:
            s["unchanged_fraction"] = dict(zip(self.names, (unchanged / pushed.clamp(min=1)).tolist()))
            s["weight_dtype"] = {n: str(ps[0].dtype).replace("torch.", "") for n, ps in self.layers}
        acts = dict(zip(self._acts, torch.stack([v for v, _ in self._acts.values()]).tolist())) if self._acts else {}
        s["act_mean"] = {k: v[0] for k, v in acts.items()}
        s["act_std"] = {k: v[1] for k, v in acts.items()}
        s["dead_fraction"] = {k: v[2] for k, v in acts.items() if self._acts[k][1]}  # ReLU family only
        s["act_absmax"] = {k: v[3] for k, v in acts.items()}
        self._pending.append(s)
        self._sample, self._before = None, []
        window = rules.THRESHOLDS["persist_samples"]
        if s["step"] <= DENSE_STEPS:  # the dense start: only evidence beyond doubt is diagnosed this early
            self.early.append(s)
            self._add(rules.overwhelming_vanishing(self.early, self.weighted, window))
        if s["step"] == 1 or s["step"] % self.every == 0:  # the rules' own pace: conditions that persist
            self.samples.append(s)
            del self.samples[:-window]
            for rule in rules.SAMPLED_RULES:
                self._add(rule(self.samples, self.weighted, window))

    def finish(self) -> None:
        """At the end of a run too short to fill a rule's window: judge it on the samples it has."""
        window = rules.THRESHOLDS["persist_samples"]
        if 0 < len(self.early) < window:
            self._add(rules.overwhelming_vanishing(self.early, self.weighted, len(self.early)))
        if 0 < len(self.samples) < window:
            for rule in rules.SAMPLED_RULES:
                self._add(rule(self.samples, self.weighted, len(self.samples)))

    def new_samples(self) -> list[dict]:
        """Per-layer samples taken since the last call (for metrics.jsonl)."""
        out, self._pending = self._pending, []
        return out

    def new_diagnoses(self) -> list[Diagnosis]:
        """Diagnoses that fired since the last call (each kind fires once per run)."""
        out = self.diagnoses[self._reported:]
        self._reported = len(self.diagnoses)
        return out

    def locate_nonfinite_forward(self, run_forward: Callable[[], object]) -> str | None:
        """Re-run a forward pass (no gradients) and return the first module whose output is not finite; under
        fp16 that is an overflow, diagnosed as such."""
        first = first_nonfinite_output(self.model, run_forward)
        if first and self.precision == "fp16" and self.diagnoses and self.diagnoses[-1].kind == "nonfinite":
            self._add(Diagnosis("overflow", self.diagnoses[-1].step, [first],
                                f"the output of {first} exceeds fp16's largest value, 65504"))
        return first

    # -- helpers ----------------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.layers]

    def state_dict(self) -> dict:
        """What a checkpoint needs so that a resumed run diagnoses as an uninterrupted one."""
        return {"steps": self.steps, "samples": self.samples, "early": self.early, "diagnoses": [d.to_dict() for d in self.diagnoses],
                "reported": self._reported, "peak_lr": self.peak_lr, "scaler_skips": self.scaler_skips,
                "baseline": self._baseline, "layer_grads": self._layer_grads}

    def load_state_dict(self, state: dict) -> None:
        self.steps = [tuple(x) for x in state["steps"]]
        self.samples, self.early = state["samples"], state["early"]
        self.diagnoses = [Diagnosis(**d) for d in state["diagnoses"]]
        self._reported, self.peak_lr, self.scaler_skips = state["reported"], state["peak_lr"], state["scaler_skips"]
        self._baseline, self._layer_grads = state["baseline"], state["layer_grads"]

    def _add(self, d: Diagnosis | None) -> None:
        if d is not None and all(x.kind != d.kind for x in self.diagnoses):
            self.diagnoses.append(d)

    def _per_layer(self, values: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """Per-parameter values -> per-layer sums, on the CPU (a few dozen numbers)."""
        if not len(values):
            return torch.zeros(0)
        v = (torch.stack(list(values)) if isinstance(values, (list, tuple)) else values).float().cpu()
        return torch.zeros(len(self.layers)).index_add_(0, self.owner, v)

    def _fastest_growing(self) -> str | None:
        if self._baseline is None or self._layer_grads is None or not len(self.layers):
            return None
        growth = self._layer_grads / self._baseline.clamp(min=1e-30)
        return self.names[int(growth.argmax())]

    def nonfinite(self, step: int, loss: float, norms: torch.Tensor) -> Diagnosis:
        """The diagnosis of a non-finite step (and, if gradients grew fast before it, of exploding first)."""
        layer_sq = self._per_layer(norms[self.index] ** 2)
        bad_weights = [n for n, ps in self.layers if not all(torch.isfinite(p).all() for p in ps)]
        d = rules.nonfinite(step, loss, self.names, layer_sq.tolist(), bad_weights)
        # a run whose gradients grew fast before the NaN is exploding, named at the latest here
        if self.steps and (self.steps[-1][2] > 10 * self.steps[0][2] or self.steps[-1][1] > 1.5 * self.steps[0][1]):
            grow = self._fastest_growing()
            self._add(Diagnosis("exploding", step, [grow] if grow else d.layers,
                                f"the loss became {loss} after the gradient norm reached "
                                f"{self.steps[-1][2]:.2g} (from {self.steps[0][2]:.2g} at the start)"))
        self._add(d)
        return d

    def _activation_hook(self, name: str, relu: bool):
        def hook(_m, _inputs, out):
            if not self._armed or not isinstance(out, torch.Tensor) or out.dim() < 2:
                return
            calls = self._calls[name] = self._calls.get(name, 0) + 1
            key = name if calls == 1 else f"{name}@{calls}"  # a module used twice in a forward pass
            with torch.no_grad():
                self._acts[key] = (_activation_stats(out.detach()[:ACTIVATION_IMAGES], relu), relu)
        return hook


def _activation_stats(out: torch.Tensor, relu: bool) -> torch.Tensor:
    """[mean, std, fraction of channels that are zero for every image, largest magnitude], as one tensor.
    Reductions over all but the channel dimension are slow on CPUs, so per-channel sums are a matrix product."""
    channels = out.shape[1]
    x = (out.permute(0, 2, 3, 1) if out.dim() == 4 else out.movedim(1, -1)).reshape(-1, channels).float()
    n = x.numel()
    mean = x.sum() / n
    std = ((x * x).sum() / n - mean * mean).clamp(min=0).sqrt()
    low, high = torch.aminmax(x)
    absmax = torch.maximum(-low, high)
    if not relu:
        return torch.stack([mean, std, torch.zeros_like(mean), absmax])
    per_channel = torch.ones(1, x.shape[0], device=x.device) @ x  # ReLU outputs: zero sum = all zero
    return torch.stack([mean, std, (per_channel == 0).float().mean(), absmax])
