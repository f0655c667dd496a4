"""Optimisers and learning-rate schedules, built from the run config."""
from __future__ import annotations

import fnmatch
import math
import re

import torch
import torch.nn as nn

from ..errors import CnnlabError
from .config import TrainConfig

LR_SCALE_RANGE = (1e-4, 1e4)  # a factor outside it overflows the decay coefficient it divides, or is a typo
NUMBER = re.compile(r"[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?|\.[0-9]+([eE][-+]?[0-9]+)?")  # ASCII, unsigned


def parse_lr_scale(text: str) -> list[tuple[str, float]]:
    """'whiten.bias=64,fc.*=0.5' -> [('whiten.bias', 64.0), ('fc.*', 0.5)]: rate multipliers by parameter name."""
    scales = []
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        pattern, sep, factor = (t.strip() for t in item.partition("="))
        value = float(factor) if NUMBER.fullmatch(factor) else math.nan
        low, high = LR_SCALE_RANGE
        if not (sep and pattern and low <= value <= high):
            raise CnnlabError(f"--lr-scale: expected PATTERN=FACTOR items with a factor from {low:g} to {high:g}, "
                              f"such as whiten.bias=64; got '{item}'")
        scales.append((pattern, value))
    return scales


def param_groups(model: nn.Module, cfg: TrainConfig, pretrained: set[int] = frozenset()) -> list[dict]:
    """Weight decay on conv and linear weights only (unless asked): decaying BN scales and biases
    only shrinks them without regularising anything useful. With `norm_lr_scale`, batch-norm parameters
    get their own group whose learning rate is scaled and whose decay coefficient is divided by the same
    factor, so the decay per step (lr x coefficient) stays that of the other weights (airbench's choice).
    Parameters whose ids are in `pretrained` (loaded by --init-from) have their rate scaled by
    `pretrained_lr_scale` on top. With the muon optimiser, conv filters form groups of their own (`muon`:
    orthogonalised steps at `muon_lr`, no decay: their norm is fixed). With `freeze_from`, the layers that
    freeze at epoch E form groups whose schedule ends at E - 1 (`epochs`): their rate reaches the schedule's
    end as they freeze, as in FreezeOut, instead of stopping them mid-stride."""
    from .finetune import parameter_layers
    from .progressive import parse_freezing

    norm_ids = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)
                for p in m.parameters(recurse=False)}
    freezing, layers = parse_freezing(cfg.freeze_from, cfg.epochs), parameter_layers(model)
    scales = parse_lr_scale(cfg.lr_scale)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    for pattern, _ in scales:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in trainable):
            raise CnnlabError(f"--lr-scale {pattern}: no trainable parameter of {cfg.model} has that name (they are "
                              f"named like {', '.join(trainable[:3])})")
    groups: dict[str, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        layer = layers[name]
        epochs = min((e - 1 for e, n in freezing if layer <= n), default=cfg.epochs)
        decays = cfg.decay_bn_and_bias or p.ndim > 1
        scale = cfg.norm_lr_scale if id(p) in norm_ids and cfg.norm_lr_scale != 1 else 1.0
        scale *= math.prod(factor for pattern, factor in scales if fnmatch.fnmatchcase(name, pattern))
        if not LR_SCALE_RANGE[0] <= scale <= LR_SCALE_RANGE[1]:
            raise CnnlabError(f"--lr-scale and --norm-lr-scale multiply the rate of {name} by {scale:g} in all; "
                              f"keep it from {LR_SCALE_RANGE[0]:g} to {LR_SCALE_RANGE[1]:g}")
        loaded = cfg.pretrained_lr_scale if id(p) in pretrained else 1.0
        muon = cfg.optimizer == "muon" and p.ndim == 4
        key = f"{decays}-{scale}-{loaded}-{muon}-{epochs}"
        if key not in groups:
            lr = (cfg.muon_lr if muon else cfg.lr) * scale * loaded
            groups[key] = {"params": [], "lr": lr, "initial_lr": lr,
                           "weight_decay": cfg.weight_decay / scale if decays and not muon else 0.0}
            if cfg.optimizer == "muon":
                momentum = cfg.muon_momentum if muon else cfg.momentum
                groups[key].update(muon=muon, momentum=momentum, nesterov=cfg.nesterov and momentum > 0)
            if epochs < cfg.epochs:
                groups[key]["epochs"] = epochs
        groups[key]["params"].append(p)
    # the groups that train to the end first: the first group's rate is the one the metrics log records
    return sorted(groups.values(), key=lambda g: -g.get("epochs", cfg.epochs))


def build_optimizer(model: nn.Module, cfg: TrainConfig, pretrained: set[int] = frozenset()) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg, pretrained)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    if cfg.optimizer == "muon":
        from .muon import Muon

        return Muon(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


def lr_factor(cfg: TrainConfig, step: int, steps_per_epoch: int, epochs: int | None = None) -> float:
    """Multiplier of the base learning rate at optimiser step `step` (0-based), for a schedule over `epochs`
    (default: the run's; a layer that freezes earlier has a shorter one, and stays at its end after it)."""
    total = (cfg.epochs if epochs is None else epochs) * steps_per_epoch
    warmup = int(min(cfg.warmup_epochs * steps_per_epoch, total - 1))  # (a float above the run: no overflow)
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.gamma ** (step // (cfg.step_size * steps_per_epoch))
    if step < warmup:
        start = cfg.warmup_from if cfg.schedule == "onecycle" else 0.0
        return start + (1 - start) * (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    return max(0.0, 1.0 - (1 - cfg.decay_to) * progress)  # onecycle: linear decay after the warm-up


def set_lr(optimizer: torch.optim.Optimizer, cfg: TrainConfig, step: int, steps_per_epoch: int,
           halvings: int = 0) -> float:
    """Set every group's learning rate for optimiser step `step` (0-based), as nanoGPT's get_lr: its own
    peak times the schedule's factor, halved once for each recovery from a non-finite step. Returns the
    first group's rate."""
    for group in optimizer.param_groups:
        factor = lr_factor(cfg, step, steps_per_epoch, group.get("epochs"))
        group["lr"] = group["initial_lr"] * factor * 0.5 ** halvings
    return optimizer.param_groups[0]["lr"]


def lr_at(optimizer: torch.optim.Optimizer, cfg: TrainConfig, step: int, steps_per_epoch: int,
          halvings: int = 0) -> float:
    """The first group's learning rate for step `step`, without setting it: after N steps, what the
    metrics log records as the rate at that point."""
    first = optimizer.param_groups[0]
    return first["initial_lr"] * lr_factor(cfg, step, steps_per_epoch, first.get("epochs")) * 0.5 ** halvings
