"""One training step, and what to do when a step is not finite."""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..diagnose.monitor import GradientMonitor, gradient_norms
from ..runtime.device import autocast


def soft_targets(y: torch.Tensor, num_classes: int, smoothing: float, partner: torch.Tensor | None = None,
                 own: torch.Tensor | None = None) -> torch.Tensor:
    """Labels as probabilities: one-hot, smoothed, and under mixup / cutmix each image's own label weighted by
    `own` and its partner's by the rest. The loss is then one soft cross-entropy whatever the augmentation."""
    target = F.one_hot(y, num_classes).float() * (1 - smoothing) + smoothing / num_classes
    if partner is not None:
        target = own[:, None] * target + (1 - own[:, None]) * target[partner]
    return target


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return each_cross_entropy(logits, target).mean()


def each_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The soft cross-entropy of every image in the batch."""
    return -(target * F.log_softmax(logits.float(), dim=1)).sum(1)


@dataclass
class StepResult:
    loss: torch.Tensor  # on the device: summed per epoch without a synchronisation
    losses: torch.Tensor  # each image's, unweighted (data pruning ranks the images by it)
    logits: torch.Tensor
    loss_value: float
    norms: torch.Tensor  # per trainable parameter, unscaled
    finite: bool


class Stepper:
    """forward under autocast, soft cross-entropy, backward, the finiteness check, clipping, the optimiser
    step. The gradient monitor, if any, only watches: the check is the trainer's own."""

    def __init__(self, net: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, device: torch.device, precision: str, grad_clip: float,
                 monitor: GradientMonitor | None) -> None:
        self.net, self.model, self.optimizer, self.scaler = net, model, optimizer, scaler
        self.device, self.precision, self.grad_clip, self.monitor = device, precision, grad_clip, monitor
        self.params = [p for p in model.parameters() if p.requires_grad]

    def __call__(self, x: torch.Tensor, target: torch.Tensor, step: int,
                 weight: torch.Tensor | None = None) -> StepResult:
        """One step on batch `x`; `weight` scales each image's loss (data pruning's rescaling)."""
        monitor, scaler = self.monitor, self.scaler
        with autocast(self.device, self.precision), monitor.forward(step) if monitor else nullcontext():
            logits = self.net(x)
        losses = each_cross_entropy(logits, target)
        loss = (losses * weight).mean() if weight is not None else losses.mean()
        self.optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scale = scaler.get_scale() if scaler.is_enabled() else None
        norms = gradient_norms(self.params, scale or 1.0)
        loss_value, total = float(loss.detach()), float(norms.square().sum())  # the step's one synchronisation
        # under fp16 loss scaling, infinite gradients of a finite loss are the scaler's: it skips the step
        finite = math.isfinite(loss_value) and (math.isfinite(total) or scale is not None)
        result = StepResult(loss.detach(), losses.detach(), logits.detach(), loss_value, norms, finite)
        if not finite:
            self.optimizer.zero_grad(set_to_none=True)
            return result
        lr = self.optimizer.param_groups[0]["lr"]
        if monitor:
            monitor.observe(step, loss_value, norms, lr, scale)
            if self.precision == "fp16" and monitor.sampled(step):  # what fp16 lost, against fp32 on this batch
                monitor.measure_underflow(lambda: soft_cross_entropy(self.model(x), target) * (scale or 1.0))
        if self.grad_clip > 0:
            scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        scaler.step(self.optimizer)
        scaler.update()
        if monitor:
            monitor.after_step(step)
        return result


class Recovery:
    """--on-nonfinite: stop, skip the step (and halve the learning rate), or roll back to the last checkpoint
    (and halve it); after MAX skips in a row, or MAX rollbacks, stop."""
    MAX = 5

    def __init__(self, mode: str) -> None:  # TrainConfig.validate has checked the mode
        self.mode, self.skipped, self.rollbacks = mode, 0, 0

    def decide(self) -> str:
        if self.mode == "stop" or max(self.skipped, self.rollbacks) >= self.MAX:
            return "stop"
        if self.mode == "skip":
            self.skipped += 1
            return "skip"
        self.rollbacks += 1
        return "rollback"

    def ok(self) -> None:
        self.skipped = 0

    def count(self) -> str:
        return f"{max(self.skipped, self.rollbacks)} of {self.MAX}"
