"""VGG: stacks of small 3x3 filters (Simonyan and Zisserman 2015). With default switches, state_dict keys
and shapes equal torchvision's `vgg11` ... `vgg19_bn`."""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import check_kernel_size, init_weights, make_activation, scaled
from .registry import register_model

# Channel plans; "M" is a 2x2 max-pool. Names follow the paper's configurations A, B, D, E.
CONFIGS: dict[int, list] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    min_input_size = 32  # five 2x2 max-pools

    def __init__(self, depth: int, num_classes: int = 1000, in_channels: int = 3, bn: bool = False,
                 kernel_size: int = 3, width: float = 1.0, activation: str = "relu", dropout: float = 0.5) -> None:
        super().__init__()
        k = check_kernel_size(kernel_size)
        layers: list[nn.Module] = []
        cin = in_channels
        for v in CONFIGS[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            cout = scaled(v, width)
            layers.append(nn.Conv2d(cin, cout, k, padding=k // 2))  # torchvision keeps the bias even with BN
            if bn:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(make_activation(activation))
            cin = cout
        hidden = scaled(4096, width)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(cin * 49, hidden), make_activation(activation), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), make_activation(activation), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        init_weights(self, activation)
        for m in self.classifier:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def _register(depth: int, bn_default: bool) -> None:
    def build(num_classes: int = 1000, in_channels: int = 3, bn: bool = bn_default, kernel_size: int = 3,
              width: float = 1.0, activation: str = "relu", dropout: float = 0.5) -> VGG:
        return VGG(depth, num_classes, in_channels, bn, kernel_size, width, activation, dropout)

    build.__name__ = f"vgg{depth}" + ("_bn" if bn_default else "")
    build.__doc__ = f"VGG-{depth}{' with batch norm' if bn_default else ''}. Minimum input 32x32."
    register_model("vgg")(build)


for _depth in CONFIGS:
    _register(_depth, False)
    _register(_depth, True)
