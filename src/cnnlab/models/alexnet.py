"""AlexNet, torchvision's "one weird trick" variant (arXiv 1404.5997): large 11x11 and 5x5 filters early.
With default switches, the state_dict keys and shapes equal torchvision's `alexnet`."""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import check_kernel_size, init_weights, make_activation, make_norm, scaled
from .registry import register_model


class AlexNet(nn.Module):
    min_input_size = 63  # three 3x3/2 max-pools after a stride-4 stem need at least 63 pixels

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, bn: bool = False, kernel_size: int = 11,
                 width: float = 1.0, activation: str = "relu", dropout: float = 0.5) -> None:
        super().__init__()
        k = check_kernel_size(kernel_size)
        c = [scaled(n, width) for n in (64, 192, 384, 256, 256)]
        hidden = scaled(4096, width)

        def conv(cin: int, cout: int, kk: int, stride: int = 1, padding: int | None = None) -> list[nn.Module]:
            pad = kk // 2 if padding is None else padding
            layers = [nn.Conv2d(cin, cout, kk, stride=stride, padding=pad, bias=not bn)]
            return layers + ([make_norm(cout, True)] if bn else []) + [make_activation(activation)]

        self.features = nn.Sequential(
            *conv(in_channels, c[0], k, stride=4, padding=2 if k == 11 else k // 2), nn.MaxPool2d(3, 2),
            *conv(c[0], c[1], 5), nn.MaxPool2d(3, 2),
            *conv(c[1], c[2], 3), *conv(c[2], c[3], 3), *conv(c[3], c[4], 3), nn.MaxPool2d(3, 2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(c[4] * 36, hidden), make_activation(activation),
            nn.Dropout(dropout), nn.Linear(hidden, hidden), make_activation(activation),
            nn.Linear(hidden, num_classes),
        )
        if bn or activation != "relu":
            init_weights(self.features, activation)  # torchvision keeps PyTorch's default init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


@register_model("alexnet")
def alexnet(num_classes: int = 1000, in_channels: int = 3, bn: bool = False, kernel_size: int = 11,
            width: float = 1.0, activation: str = "relu", dropout: float = 0.5) -> AlexNet:
    """AlexNet; `kernel_size` sets the first (11x11) filter. Minimum input 63x63."""
    return AlexNet(num_classes, in_channels, bn, kernel_size, width, activation, dropout)
