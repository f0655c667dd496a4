"""Networks built from group-equivariant layers (equivariant.py): invariant to 90-degree rotations (p4) or
to rotations and mirrors (p4m) by construction, as long as every stride-2 layer gets an odd input size and
every 2x2 max-pool an even one (see `equivariance_warnings`).

p4cnn / p4mcnn: all-convolutional (Cohen and Welling's P4CNN for rotated MNIST): seven 3x3 group convs, a
max-pool after the second, a last group conv to one feature per class, pooled over orientations and space.
p4m_resnetN: the CIFAR ResNets with p4m convs, widths divided by sqrt(8) to keep about their parameters."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .equivariant import GroupBatchNorm, GroupConv, GroupPool, LiftingConv, group_width
from .layers import center_crop, check_kernel_size, make_activation, scaled
from .registry import register_model

torch.fx.wrap("center_crop")  # a leaf for tracing (summaries): its shape arithmetic is not traceable


def _norm(channels: int, group: str, bn: bool) -> nn.Module:
    return GroupBatchNorm(channels, group) if bn else nn.Identity()


class GroupCNN(nn.Module):
    """`group` None: the same network with ordinary convolutions (Cohen and Welling's Z2CNN baseline)."""
    min_input_size = 2  # one 2x2 max-pool

    def __init__(self, group: str | None, num_classes: int = 10, in_channels: int = 3, bn: bool = True,
                 kernel_size: int = 3, width: float = 1.0, activation: str = "relu") -> None:
        super().__init__()
        k = check_kernel_size(kernel_size)
        c = group_width(20, width, group) if group else scaled(20, width)

        def conv(cin: int, cout: int, first: bool = False, bias: bool = True) -> nn.Module:
            if group is None:
                return nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias)
            return (LiftingConv if first else GroupConv)(cin, cout, k, group, bias=bias)

        def norm(channels: int) -> nn.Module:
            return (nn.BatchNorm2d(channels) if group is None else GroupBatchNorm(channels, group)) if bn \
                else nn.Identity()

        layers: list[nn.Module] = [conv(in_channels, c, first=True, bias=not bn), norm(c), make_activation(activation)]
        for i in range(5):
            layers += [conv(c, c, bias=not bn), norm(c), make_activation(activation)]
            if i == 0:
                layers.append(nn.MaxPool2d(2))
        layers += [conv(c, num_classes), GroupPool(group) if group else nn.Identity(), nn.AdaptiveAvgPool2d(1),
                   nn.Flatten()]
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


@register_model("equivariant")
def z2cnn(num_classes: int = 10, in_channels: int = 3, bn: bool = True, kernel_size: int = 3, width: float = 1.0,
          activation: str = "relu") -> GroupCNN:
    """p4cnn's architecture with ordinary convolutions and 20 channels: about its parameters, no invariance."""
    return GroupCNN(None, num_classes, in_channels, bn, kernel_size, width, activation)


@register_model("equivariant")
def p4cnn(num_classes: int = 10, in_channels: int = 3, bn: bool = True, kernel_size: int = 3, width: float = 1.0,
          activation: str = "relu") -> GroupCNN:
    """All-convolutional p4 CNN: invariant to rotations by 90 degrees."""
    return GroupCNN("p4", num_classes, in_channels, bn, kernel_size, width, activation)


@register_model("equivariant")
def p4mcnn(num_classes: int = 10, in_channels: int = 3, bn: bool = True, kernel_size: int = 3, width: float = 1.0,
           activation: str = "relu") -> GroupCNN:
    """All-convolutional p4m CNN: invariant to rotations by 90 degrees and mirrors."""
    return GroupCNN("p4m", num_classes, in_channels, bn, kernel_size, width, activation)


class Subsample(nn.Module):
    """Option-A shortcut of a group ResNet: take every other pixel (stride 2) and zero-pad whole features."""

    def __init__(self, cin: int, cout: int, order: int, stride: int = 2) -> None:
        super().__init__()
        self.extra, self.stride = (cout - cin) * order, stride
        self.subsamples = stride == 2  # equivariance_warnings: then it needs an odd input size

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # new features appended, all orientations
        return F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, 0, self.extra))


class GroupBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, k: int, group: str, bn: bool, activation: str,
                 residual: bool, padding: int | None = None) -> None:
        super().__init__()
        self.conv1 = GroupConv(cin, cout, k, group, stride, bias=not bn, padding=padding)
        self.bn1 = _norm(cout, group, bn)
        self.relu = make_activation(activation)
        self.conv2 = GroupConv(cout, cout, k, group, bias=not bn, padding=padding)
        self.bn2 = _norm(cout, group, bn)
        self.residual = residual
        self.shortcut = Subsample(cin, cout, self.conv1.group.order, stride) \
            if residual and (stride != 1 or cin != cout) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        if self.residual:  # center-cropped around unpadded convs (crop whole pixels: equivariance is kept)
            out = out + center_crop(x if self.shortcut is None else self.shortcut(x), out)
        return self.relu(out)


class GroupResNet(nn.Module):
    min_input_size = 1

    def __init__(self, depth: int, group: str, num_classes: int = 10, in_channels: int = 3, bn: bool = True,
                 kernel_size: int = 3, width: float = 1.0, activation: str = "relu", residual: bool = True) -> None:
        super().__init__()
        n = (depth - 2) // 6
        k = check_kernel_size(kernel_size)
        widths = [group_width(c, width, group) for c in (16, 32, 64)]
        self.conv1 = LiftingConv(in_channels, widths[0], k, group, bias=not bn)
        self.bn1 = _norm(widths[0], group, bn)
        self.act = make_activation(activation)
        cin = widths[0]
        for i, cout in enumerate(widths):
            blocks = [GroupBlock(cin if j == 0 else cout, cout, 2 if (i > 0 and j == 0) else 1, k, group, bn,
                                 activation, residual) for j in range(n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = cout
        self.pool = GroupPool(group)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(self.pool(x)), 1))


def _register(depth: int) -> None:
    def build(num_classes: int = 10, in_channels: int = 3, bn: bool = True, kernel_size: int = 3,
              width: float = 1.0, activation: str = "relu", residual: bool = True) -> GroupResNet:
        return GroupResNet(depth, "p4m", num_classes, in_channels, bn, kernel_size, width, activation, residual)

    build.__name__ = f"p4m_resnet{depth}"
    build.__doc__ = f"CIFAR ResNet-{depth} with p4m group convolutions (exact at odd sizes such as 33x33)."
    register_model("equivariant")(build)


for _d in (20, 44, 56):
    _register(_d)
