"""The network of airbench94 (Keller Jordan, 2024), the fastest known CIFAR-10 trainer, rebuilt as a
cnnlab model: a frozen 2x2 *whitening* convolution fitted to the data's patch covariance, then three
conv-pool-norm-act-conv-norm-act groups (64, 256, 256 channels) and a scaled linear head.

The whitening layer is what makes a few epochs enough: the first layer starts decorrelated instead of
learning to be. `init_from_data` fits it; cnnlab's trainer calls it before the first step."""
from __future__ import annotations

import re

import torch
import torch.nn as nn

from ..errors import CnnlabError
from .builder import MAX_WIDTH
from .layers import check_kernel_size, make_activation, scaled
from .registry import register_model


def shift_only_batchnorm(channels: int) -> nn.BatchNorm2d:
    """airbench's batch norm: running statistics with momentum 0.6 (torch's 0.4), a learned shift and no
    learned scale, since the scale of a GELU net's layer is redundant with the next conv's. A plain
    BatchNorm2d (not a subclass), so tracers and exporters treat it as the standard layer."""
    norm = nn.BatchNorm2d(channels, eps=1e-12, momentum=0.4)
    norm.weight.requires_grad_(False)
    return norm


DEFAULT_WIDTHS = "64,256,256"


def parse_widths(text: str) -> list[int]:
    """'32,256,256' -> [32, 256, 256]: the channels of the three groups."""
    parts = text.split(",") if isinstance(text, str) else []
    if len(parts) != 3 or not all(re.fullmatch(r" *[0-9]{1,6} *", p) and 1 <= int(p) <= MAX_WIDTH for p in parts):
        raise CnnlabError(f"widths must be three channel counts from 1 to {MAX_WIDTH}, one per group, as in "
                          f"'{DEFAULT_WIDTHS}'; got {text!r}")
    return [int(p) for p in parts]


class ConvGroup(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, bn: bool, activation: str, pool_first: bool = False) -> None:
        super().__init__()
        self.pool_first = pool_first  # pool, then conv: the conv's work falls 4x, and so does what it can see
        self.conv1 = nn.Conv2d(cin, cout, k, padding=k // 2, bias=not bn)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = shift_only_batchnorm(cout) if bn else nn.Identity()
        self.conv2 = nn.Conv2d(cout, cout, k, padding=k // 2, bias=not bn)
        self.norm2 = shift_only_batchnorm(cout) if bn else nn.Identity()
        self.act = make_activation(activation)
        for conv in (self.conv1, self.conv2):  # start each conv as a partial identity: signal flows at once
            nn.init.dirac_(conv.weight.data[:conv.in_channels])
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.conv1(self.pool(x)) if self.pool_first else self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class AirbenchNet(nn.Module):
    min_input_size = 9  # 2x2 valid conv, then three 2x2 max-pools

    def __init__(self, num_classes: int = 10, in_channels: int = 3, bn: bool = True, kernel_size: int = 3,
                 width: float = 1.0, activation: str = "gelu", pool_first: int = 0,
                 widths: str = DEFAULT_WIDTHS) -> None:
        super().__init__()
        k = check_kernel_size(kernel_size)
        if not isinstance(pool_first, int) or isinstance(pool_first, bool) or not 0 <= pool_first <= 3:
            raise CnnlabError(f"pool_first must be 0, 1, 2 or 3 (how many of the last groups pool before their "
                              f"first conv), got {pool_first!r}")
        channels = [scaled(c, width) for c in parse_widths(widths)]
        self.whiten = nn.Conv2d(in_channels, 2 * in_channels * 4, 2, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)  # fitted to the data, never trained
        nn.init.zeros_(self.whiten.bias)
        self.act = make_activation(activation)
        self.layer1 = ConvGroup(self.whiten.out_channels, channels[0], k, bn, activation, pool_first >= 3)
        self.layer2 = ConvGroup(channels[0], channels[1], k, bn, activation, pool_first >= 2)
        self.layer3 = ConvGroup(channels[1], channels[2], k, bn, activation, pool_first >= 1)
        self.pool = nn.AdaptiveMaxPool2d(1)  # at 32x32 the same as airbench's MaxPool2d(3) on a 3x3 map
        self.fc = nn.Linear(channels[2], num_classes, bias=False)
        self.head_scale = 1 / 9  # small logits at the start; keeps label-smoothed training stable

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, eps: float = 5e-4) -> None:
        """Fit the whitening filters to normalised images `x` (N, C, H, W): the eigenvectors of the 2x2
        patch covariance scaled by 1/sqrt(eigenvalue), each with its negation (so a GELU passes both signs)."""
        c = x.shape[1]
        patches = x.float().unfold(2, 2, 1).unfold(3, 2, 1).transpose(1, 3).reshape(-1, c * 4)
        cov = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov.double())
        filters = (eigenvectors.T / torch.sqrt(eigenvalues.clamp(min=0) + eps)[:, None]).flip(0)
        filters = filters.reshape(c * 4, c, 2, 2).to(self.whiten.weight)
        self.whiten.weight.copy_(torch.cat((filters, -filters)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.whiten(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1)) * self.head_scale


@register_model("airbench")
def airbench94(num_classes: int = 10, in_channels: int = 3, bn: bool = True, kernel_size: int = 3,
               width: float = 1.0, activation: str = "gelu", pool_first: int = 0,
               widths: str = DEFAULT_WIDTHS) -> AirbenchNet:
    """airbench94's network (whitening conv, widths 64/256/256: `widths` sets each group's, `width` scales all
    three). `pool_first` N: the last N groups max-pool before their first conv instead of after it (1: 0.80 of
    the work, 2: 0.58)."""
    return AirbenchNet(num_classes, in_channels, bn, kernel_size, width, activation, pool_first, widths)


@register_model("airbench")
def airbench94_narrow(num_classes: int = 10, in_channels: int = 3, bn: bool = True, kernel_size: int = 3,
                      width: float = 1.0, activation: str = "gelu", pool_first: int = 0,
                      widths: str = "32,256,256") -> AirbenchNet:
    """airbench94 with a first group of 32 channels instead of 64 (`widths=32,256,256`): 0.75 of the MACs,
    since the first group's convs and the second group's first conv, which reads its output, halve. The
    recipe's `half` variant trains it (docs/speed.md)."""
    return AirbenchNet(num_classes, in_channels, bn, kernel_size, width, activation, pool_first, widths)
