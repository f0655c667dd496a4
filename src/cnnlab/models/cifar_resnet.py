"""CIFAR ResNets of depth 6n+2 (He et al. 2016, section 4.2): widths 16/32/64, 3x3 convs and option-A
shortcuts (stride-2 subsampling plus zero-padded channels, so shortcuts add no parameters). `plainN` are the
same nets without skip connections, the paper's evidence for the degradation problem. `preact=True` gives the
pre-activation variant (He et al. 2016b, "Identity mappings in deep residual networks"): norm and activation
come before each conv, so the skip path carries the signal and its gradient through no nonlinearity."""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import check_kernel_size, init_weights, make_activation, make_norm, scaled
from .registry import register_model
from .resnet import BasicBlock


class CifarResNet(nn.Module):
    min_input_size = 1  # global average pooling; built for 32x32

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, bn: bool = True,
                 kernel_size: int = 3, width: float = 1.0, activation: str = "relu", residual: bool = True,
                 preact: bool = False) -> None:
        super().__init__()
        self.preact = preact
        n = (depth - 2) // 6
        k = check_kernel_size(kernel_size)
        widths = [scaled(c, width) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], k, 1, k // 2, bias=not bn)
        self.bn1 = make_norm(widths[-1] if preact else widths[0], bn)  # pre-activation: after the last stage
        self.act = make_activation(activation)
        cin = widths[0]
        for i, cout in enumerate(widths):
            blocks = [BasicBlock(cin if j == 0 else cout, cout, 2 if (i > 0 and j == 0) else 1, k, bn, activation,
                                 residual, shortcut="pad", preact=preact) for j in range(n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = cout
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        init_weights(self, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact:
            x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
            x = self.act(self.bn1(x))
        else:
            x = self.act(self.bn1(self.conv1(x)))
            x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _register(depth: int, residual_default: bool) -> None:
    def build(num_classes: int = 10, in_channels: int = 3, bn: bool = True, kernel_size: int = 3,
              width: float = 1.0, activation: str = "relu", residual: bool = residual_default,
              preact: bool = False) -> CifarResNet:
        return CifarResNet(depth, num_classes, in_channels, bn, kernel_size, width, activation, residual, preact)

    kind = "resnet" if residual_default else "plain"
    build.__name__ = f"{kind}{depth}"
    build.__doc__ = f"CIFAR {'ResNet' if residual_default else 'plain net'}-{depth} ({(depth - 2) // 6} blocks a stage)."
    register_model("cifar-" + kind)(build)


for _d in (20, 32, 44, 56, 110, 1202):
    _register(_d, True)
for _d in (20, 32, 44, 56, 110):
    _register(_d, False)
