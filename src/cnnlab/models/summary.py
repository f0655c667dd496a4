"""Per-layer summary of a model: output shape, parameters, multiply-adds and receptive field.

The model is traced with torch.fx and run once on a zero input of batch 1, so the figures follow the real
dataflow graph: a residual add takes the larger receptive field of its two branches. MACs count the
multiply-accumulates of convolutions and linear layers only, as torchvision's "GFLOPS" and timm's GMACs do.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.fx as fx
import torch.nn as nn

from ..errors import CnnlabError
from ..runtime.device import autocast, resolve_device, resolve_precision, to_channels_last

_WINDOWED = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
_GLOBAL = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Linear, nn.Flatten)


@dataclass
class LayerRow:
    name: str
    type: str
    output: list[int]
    params: int
    macs: int
    receptive_field: int | None  # None once a layer mixes the whole image (global pooling, flatten, linear)


@dataclass
class ModelSummary:
    input: list[int]
    params: int
    trainable_params: int
    macs: int
    receptive_field: int
    layers: list[LayerRow] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class _Tracer(fx.Interpreter):
    """Runs the graph, recording shapes and propagating (receptive field, jump) per node."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.rf: dict[fx.Node, tuple[int, int] | None] = {}
        self.rows: list[LayerRow] = []

    def run_node(self, n: fx.Node):
        try:
            out = super().run_node(n)
        except Exception as exc:  # noqa: BLE001 - reported to the user with the layer that failed
            where = n.target if n.op == "call_module" else n.name
            raise _LayerFailed(str(where), str(exc).splitlines()[0]) from None
        self.rf[n] = self._propagate(n, out)
        if n.op == "call_module":
            mod = self.module.get_submodule(n.target)
            if not isinstance(mod, nn.Identity) and isinstance(out, torch.Tensor):
                self.rows.append(LayerRow(str(n.target), type(mod).__name__, list(out.shape[1:]),
                                          sum(p.numel() for p in mod.parameters(recurse=False)),
                                          _macs(mod, out), self.rf[n][0] if self.rf[n] else None))
        return out

    def _propagate(self, n: fx.Node, out) -> tuple[int, int] | None:
        if n.op == "placeholder":
            return (1, 1)
        inputs = [self.rf[a] for a in n.all_input_nodes if a in self.rf]
        if any(r is None for r in inputs):
            return None
        rf, jump = max(r[0] for r in inputs) if inputs else 1, max(r[1] for r in inputs) if inputs else 1
        if n.op == "call_module":
            mod = self.module.get_submodule(n.target)
            if isinstance(mod, _GLOBAL):
                return None
            if isinstance(mod, _WINDOWED) or getattr(mod, "fx_leaf", False) and hasattr(mod, "kernel_size"):
                k, s, d = (_first(getattr(mod, a, 1)) for a in ("kernel_size", "stride", "dilation"))
                return rf + (k - 1) * d * jump, jump * s
        elif n.op in ("call_function", "call_method"):
            name = getattr(n.target, "__name__", str(n.target))
            if name in ("flatten", "adaptive_avg_pool2d", "linear", "mean"):
                return None
            if name == "getitem" and isinstance(n.args[1], tuple):  # x[:, :, ::2, ::2] subsamples
                steps = [s.step for s in n.args[1][2:] if isinstance(s, slice) and s.step]
                return rf, jump * (steps[0] if steps else 1)
        return rf, jump


class _LeafTracer(fx.Tracer):
    """Keeps modules marked `fx_leaf` (e.g. group convolutions, which build their filters from shapes) whole."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return getattr(m, "fx_leaf", False) or super().is_leaf_module(m, qualname)


class _LayerFailed(Exception):
    def __init__(self, layer: str, reason: str) -> None:
        super().__init__(layer, reason)
        self.layer, self.reason = layer, reason


def _first(v) -> int:
    return int(v[0] if isinstance(v, (tuple, list)) else v)


def _macs(mod: nn.Module, out: torch.Tensor) -> int:
    if hasattr(mod, "macs"):  # layers that know their own count (group convolutions)
        return mod.macs(out)
    if isinstance(mod, nn.Conv2d):
        kh, kw = mod.kernel_size
        return out.numel() * (mod.in_channels // mod.groups) * kh * kw
    if isinstance(mod, nn.Linear):
        return out.numel() * mod.in_features
    return 0


def parse_input_shape(text: str) -> tuple[int, int, int]:
    """'3x32x32' -> (3, 32, 32); a bare '32' means 3x32x32."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = [3, parts[0], parts[0]]
    if len(parts) != 3 or min(parts) < 1:
        raise CnnlabError(f"--input must look like 3x32x32 (channels x height x width), got '{text}'")
    return parts[0], parts[1], parts[2]


def dataflow(model: nn.Module, name: str | None = None) -> fx.GraphModule:
    """`model` traced by torch.fx into its dataflow graph, with the layers the summary has rows for as nodes."""
    try:
        return fx.GraphModule(model, _LeafTracer().trace(model))
    except Exception as exc:  # noqa: BLE001
        raise CnnlabError(f"{name or type(model).__name__}: cannot trace the model for a summary ({exc})") from None


def summarize(model: nn.Module, input_shape: tuple[int, int, int], name: str | None = None) -> ModelSummary:
    """Trace `model` on one zero image of `input_shape` (C, H, W). Raises CnnlabError if it cannot run."""
    label = name or type(model).__name__
    tracer = _Tracer(dataflow(model, label))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            tracer.run(torch.zeros(1, *input_shape))
    except _LayerFailed as exc:
        hint = getattr(model, "min_input_size", None)
        extra = f"; its minimum input is {hint}x{hint}" if hint and min(input_shape[1:]) < hint else ""
        shape = "x".join(map(str, input_shape))
        raise CnnlabError(f"{label} cannot take a {shape} input: layer '{exc.layer}' failed ({exc.reason}){extra}") from None
    except (RuntimeError, MemoryError) as exc:  # the zero image itself too large to allocate
        shape = "x".join(map(str, input_shape))
        raise CnnlabError(f"{label}: a {shape} input is too large to trace here ({str(exc).splitlines()[0][:80]})"
                          ) from None
    finally:
        model.train(was_training)
    spatial = [r.receptive_field for r in tracer.rows if r.receptive_field is not None]
    return ModelSummary(
        input=list(input_shape),
        params=sum(p.numel() for p in model.parameters()),
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        macs=sum(r.macs for r in tracer.rows),
        receptive_field=max(spatial) if spatial else 1,
        layers=tracer.rows,
    )


def format_summary(s: ModelSummary, title: str) -> str:
    """A fixed-width table: one row per layer, then the totals."""
    header = f"{'layer':<28} {'type':<18} {'output':<14} {'params':>12} {'MACs':>15} {'RF':>6}"
    lines = [f"{title}  (input {'x'.join(map(str, s.input))})", header, "-" * len(header)]
    for r in s.layers:
        rf = str(r.receptive_field) if r.receptive_field is not None else "all"
        lines.append(f"{r.name:<28.28} {r.type:<18.18} {'x'.join(map(str, r.output)):<14} "
                     f"{r.params:>12,} {r.macs:>15,} {rf:>6}")
    lines += ["-" * len(header),
              f"params {s.params:,} (trainable {s.trainable_params:,})   MACs {s.macs:,} "
              f"({_si(s.macs)})   receptive field {s.receptive_field}x{s.receptive_field}"]
    return "\n".join(lines)


def _si(n: int) -> str:
    if n == 0:
        return "0"
    exp = min(4, int(math.log10(n) // 3))
    return f"{n / 10 ** (3 * exp):.3f}{['', 'K', 'M', 'G', 'T'][exp]}"


def measure_latency_ms(model: nn.Module, input_shape: tuple[int, int, int], device: str = "auto",
                       precision: str = "auto", batch: int = 1, budget_s: float = 0.3) -> float:
    """Measured inference latency: the median wall time of one forward pass of `batch` random images, in
    milliseconds, in eval mode with the precision and memory layout training would use on this device.
    Runs repeat for about `budget_s` after two warm-up passes (the first call pays for kernel selection)."""
    import copy
    import statistics
    import time


    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    net = to_channels_last(copy.deepcopy(model).to(dev).eval())
    x = torch.randn(batch, *input_shape, device=dev).contiguous(memory_format=torch.channels_last)
    times: list[float] = []
    with torch.no_grad(), autocast(dev, prec):
        for i in range(1000):
            start = time.perf_counter()
            net(x)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if i >= 2:
                times.append(time.perf_counter() - start)
                if sum(times) > budget_s and len(times) >= 5:
                    break
    return 1000.0 * statistics.median(times)
