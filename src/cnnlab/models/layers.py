"""Small building blocks shared by every family, so each switch (bn, activation, kernel size, width)
means the same thing everywhere."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import CnnlabError

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise CnnlabError(f"unknown activation '{name}'; choose one of {', '.join(ACTIVATIONS)}")
    return nn.ReLU(inplace=True) if name == "relu" else ACTIVATIONS[name]()


def make_norm(channels: int, bn: bool) -> nn.Module:
    """BatchNorm2d when the `bn` switch is on, else an Identity that keeps the layer names stable."""
    return nn.BatchNorm2d(channels) if bn else nn.Identity()


def check_kernel_size(k: int) -> int:
    if not isinstance(k, int) or k < 1 or k % 2 == 0:
        raise CnnlabError(f"kernel_size must be an odd positive integer (3, 5, 7, 11...), got {k!r}")
    return k


def scaled(channels: int, width: float) -> int:
    """Apply the width multiplier; never fewer than one channel."""
    if not isinstance(width, (int, float)) or not width > 0:  # (`not >` refuses NaN too)
        raise CnnlabError(f"width must be a positive number, got {width!r}")
    return max(1, int(round(channels * width)))


def init_weights(model: nn.Module, activation: str = "relu") -> None:
    """torchvision's initialisation: Kaiming-normal (fan_out) convs, N(0, 0.01) linears, BN at 1/0.
    Saturating activations get Xavier instead, the classic choice for sigmoid/tanh."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            if activation in ("sigmoid", "tanh"):
                nn.init.xavier_normal_(m.weight)
            else:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def center_crop(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The middle of `x` with `like`'s height and width: a skip connection around unpadded ("valid")
    convolutions, whose output is smaller than their input."""
    dh, dw = x.shape[-2] - like.shape[-2], x.shape[-1] - like.shape[-1]
    if dh == 0 and dw == 0:
        return x
    return x[..., dh // 2:dh // 2 + like.shape[-2], dw // 2:dw // 2 + like.shape[-1]]
