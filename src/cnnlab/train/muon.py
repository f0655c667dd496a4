"""Muon: momentum whose update is orthogonalised before it is applied (Keller Jordan, 2024), as airbench94_muon
uses it for the conv filters of a CIFAR-10 net (94% in 8 epochs where SGD needs 9.9).

A conv filter bank's update G (out x in*k*k after flattening) is replaced by the nearest semi-orthogonal
matrix, approximately U V^T of its SVD U S V^T, computed by a few Newton-Schulz iterations: every direction
of the update moves by about the same amount, so the rarely-seen directions a plain gradient step leaves
behind are learned as fast as the common ones. The filters are renormalised to a fixed norm each step (the
batch norm after them makes the layer indifferent to their scale), so the learning rate is a relative step.

`Muon` holds both kinds of parameters in one optimiser, so the trainer's schedule, checkpoints and resume
treat it as any other: groups marked `muon=True` take the orthogonalised step, the others plain SGD with
(Nesterov) momentum and coupled weight decay, as `torch.optim.SGD` does."""
from __future__ import annotations

import torch

# the quintic iteration's coefficients: chosen to maximise the slope at zero, so small singular values grow
# fast; the result has singular values in about (0.5, 1.5) rather than exactly 1, which trains as well
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(g: torch.Tensor, steps: int = 3, eps: float = 1e-7) -> torch.Tensor:
    """An approximately semi-orthogonal matrix with the singular vectors of the 2-D `g`. In bf16 on a GPU
    (as airbench), in fp32 elsewhere: on a CPU without native bf16 the matmuls would be emulated."""
    if g.ndim != 2:
        raise ValueError(f"newton_schulz takes a matrix, got shape {tuple(g.shape)}")
    a, b, c = NS_COEFFICIENTS
    x = g.to(torch.bfloat16 if g.is_cuda else torch.float32)
    x = x / (x.norm() + eps)  # the largest singular value at most 1: inside the iteration's basin
    wide = g.size(0) > g.size(1)
    if wide:
        x = x.T  # iterate on the smaller Gram matrix
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if wide else x


class Muon(torch.optim.Optimizer):
    """Groups with `muon=True`: orthogonalised Nesterov momentum for matrices and conv filters (weight
    decay is not used: the renormalisation fixes their scale). Other groups: SGD with momentum."""

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.9, nesterov: bool = True,
                 weight_decay: float = 0.0, ns_steps: int = 3) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0 or ns_steps < 1:
            raise ValueError("Muon: lr, momentum and weight_decay must not be negative, ns_steps at least 1")
        defaults = {"lr": lr, "momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay,
                    "ns_steps": ns_steps, "muon": False}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, nesterov = group["lr"], group["momentum"], group["nesterov"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if not group["muon"] and group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(momentum).add_(g)
                update = g.add(buf, alpha=momentum) if nesterov else buf
                if group["muon"]:
                    p.mul_(len(p) ** 0.5 / p.norm().clamp(min=1e-12))
                    update = newton_schulz(update.reshape(len(update), -1), group["ns_steps"]).view_as(p)
                p.add_(update.to(p.dtype), alpha=-lr)
        return loss
