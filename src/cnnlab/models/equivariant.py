"""Group-equivariant convolutions (Cohen and Welling 2016) for the 4 rotations by 90 degrees (p4) and the
rotations with mirrors (p4m): rotate or mirror the input and every feature map rotates or mirrors with it,
its orientation channels permuted, so pooling over the orientations gives features that cannot change.

A feature map with C features over a group of |G| elements is stored as (N, C * |G|, H, W), orientation
fastest, so pooling, dropout and the like work unchanged. Each layer builds its |G| transformed copies of
its filters and runs one ordinary convolution: the cost is that of a plain conv with C * |G| outputs."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CnnlabError


GROUPS = ("p4", "p4m")


class Group:
    """p4 or p4m. Element (m, r) maps the plane by a mirror m (left-right) then a rotation by r quarter turns;
    its index is m * 4 + r."""

    def __init__(self, name: str) -> None:
        if name not in GROUPS:
            raise CnnlabError(f"unknown group '{name}'; choose p4 or p4m")
        self.name = name
        self.elements = [(m, r) for m in range(2 if name == "p4m" else 1) for r in range(4)]
        self.order = len(self.elements)
        index = {e: i for i, e in enumerate(self.elements)}
        # mirror, then rotate: (m1, r1)(m2, r2) = (m1 ^ m2, r1 + (-1)^m1 r2), since a mirror reverses rotations
        self.compose = [[index[(m1 ^ m2, (r1 + (-r2 if m1 else r2)) % 4)] for (m2, r2) in self.elements]
                        for (m1, r1) in self.elements]
        self.inverse = [row.index(0) for row in self.compose]

    def transform(self, x: torch.Tensor, g: int) -> torch.Tensor:
        """Apply element g to the last two (spatial) dimensions."""
        m, r = self.elements[g]
        return torch.rot90(x.flip(-1) if m else x, r, dims=(-2, -1))

    def act_on_feature_map(self, x: torch.Tensor, g: int) -> torch.Tensor:
        """How g transforms a group feature map (N, C * |G|, H, W): spatially, and orientation h -> g h."""
        n, cg, h, w = x.shape
        y = self.transform(x, g).reshape(n, cg // self.order, self.order, h, w)
        perm = [self.compose[self.inverse[g]][k] for k in range(self.order)]  # new[h] = old[g^-1 h]
        return y[:, :, perm].reshape(n, cg, h, w)


class _OrientedConv(nn.Module):
    """What the lifting and the group convolution share: a base filter per (output, input) feature pair, from
    which `filters()` builds the bank of all |G| orientations that one ordinary conv2d applies."""
    fx_leaf = True  # the model summary traces it as one layer

    def __init__(self, cin: int, cout: int, kernel_size: int, group: str, stride: int, bias: bool,
                 padding: int | None, in_orientations: tuple[int, ...]) -> None:
        super().__init__()
        self.group, self.stride = Group(group), stride
        self.padding = kernel_size // 2 if padding is None else padding
        self.kernel_size = kernel_size  # read by the summary's receptive-field arithmetic
        self.weight = nn.Parameter(torch.empty(cout, cin, *in_orientations, kernel_size, kernel_size))
        # torchvision's conv init (Kaiming normal, fan_out) for the filter bank the layer really applies: each
        # input feature reaches every output feature in all |G| orientations. Counting the base filter's
        # fan-out instead makes each layer sqrt(|G|) too loud, and a deep group net without batch norm blow up.
        nn.init.normal_(self.weight, 0.0, math.sqrt(2.0 / (cout * self.group.order * kernel_size ** 2)))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None

    def filters(self) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.repeat_interleave(self.group.order) if self.bias is not None else None
        return F.conv2d(x, self.filters(), bias, self.stride, self.padding)

    def macs(self, out: torch.Tensor) -> int:  # one base filter's weights per output value
        return out.numel() // out.shape[0] * self.weight[0].numel()

    @torch.no_grad()
    def as_conv2d(self) -> nn.Conv2d:
        """The ordinary convolution this layer applies with its present weights, its filter bank built once:
        the same outputs, for a frozen model (export) that need not rebuild the bank on every call."""
        bank = self.filters()
        conv = nn.Conv2d(bank.shape[1], bank.shape[0], bank.shape[-1], self.stride, self.padding,
                         bias=self.bias is not None).to(bank.device, bank.dtype)
        conv.weight.copy_(bank)
        if self.bias is not None:
            conv.bias.copy_(self.bias.repeat_interleave(self.group.order))
        return conv


class LiftingConv(_OrientedConv):
    """Image (N, Cin, H, W) -> group feature map (N, Cout * |G|, H, W): each filter in every orientation."""

    def __init__(self, cin: int, cout: int, kernel_size: int, group: str, stride: int = 1, bias: bool = True,
                 padding: int | None = None) -> None:
        super().__init__(cin, cout, kernel_size, group, stride, bias, padding, in_orientations=())

    def filters(self) -> torch.Tensor:
        bank = torch.stack([self.group.transform(self.weight, g) for g in range(self.group.order)], 1)
        return bank.flatten(0, 1)  # (cout * |G|, cin, k, k), orientation fastest


class GroupConv(_OrientedConv):
    """Group feature map -> group feature map. The filter for output orientation g is the base filter
    transformed by g: spatially, and with its input orientations permuted h -> g^-1 h."""

    def __init__(self, cin: int, cout: int, kernel_size: int, group: str, stride: int = 1, bias: bool = True,
                 padding: int | None = None) -> None:
        n = Group(group).order
        super().__init__(cin, cout, kernel_size, group, stride, bias, padding, in_orientations=(n,))
        perms = [[self.group.compose[self.group.inverse[g]][h] for h in range(n)] for g in range(n)]
        self.register_buffer("perms", torch.tensor(perms), persistent=False)

    def filters(self) -> torch.Tensor:
        cout, cin, n, k, _ = self.weight.shape
        bank = torch.stack([self.group.transform(self.weight[:, :, self.perms[g]], g) for g in range(n)], 1)
        return bank.reshape(cout * n, cin * n, k, k)


class GroupBatchNorm(nn.Module):
    """Batch norm whose statistics and affine parameters are shared by a feature's orientations (a
    per-orientation norm would break equivariance)."""
    fx_leaf = True

    def __init__(self, channels: int, group: str) -> None:
        super().__init__()
        self.order = Group(group).order
        self.bn = nn.BatchNorm3d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, cg, h, w = x.shape
        return self.bn(x.reshape(n, cg // self.order, self.order, h, w)).reshape(n, cg, h, w)

    @torch.no_grad()
    def as_batchnorm2d(self) -> nn.BatchNorm2d:
        """The ordinary batch norm this layer applies in eval mode: each feature's statistics and affine
        parameters repeated for its orientations (for a frozen model: export)."""
        bn, k = self.bn, self.order
        plain = nn.BatchNorm2d(bn.num_features * k, bn.eps, affine=bn.affine).to(bn.running_mean.device)
        plain.running_mean.copy_(bn.running_mean.repeat_interleave(k))
        plain.running_var.copy_(bn.running_var.repeat_interleave(k))
        if bn.affine:
            plain.weight.copy_(bn.weight.repeat_interleave(k))
            plain.bias.copy_(bn.bias.repeat_interleave(k))
        return plain.eval()


class GroupPool(nn.Module):
    """Max over the orientations of each feature: (N, C * |G|, H, W) -> (N, C, H, W), unchanged when the
    input is rotated or mirrored (up to the spatial transform)."""
    fx_leaf = True

    def __init__(self, group: str) -> None:
        super().__init__()
        self.order = Group(group).order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, cg, h, w = x.shape
        return x.reshape(n, cg // self.order, self.order, h, w).amax(2)


def equivariance_warnings(model: nn.Module, size: int, channels: int) -> list[str]:
    """Layers whose input size breaks exact equivariance at `size`: a stride-2 conv or subsampling needs an
    odd input (its samples then sit symmetrically), a 2x2 max-pool an even one."""
    problems: list[str] = []

    def check(name: str, need_odd: bool):
        def hook(_m, inputs):
            h = inputs[0].shape[-1]
            if (h % 2 == 1) != need_odd:
                problems.append(f"{name} gets {h}x{h} inputs, needs {'odd' if need_odd else 'even'} sizes")
        return hook

    handles = []
    for name, m in model.named_modules():
        stride = getattr(m, "stride", 1)
        stride = stride[0] if isinstance(stride, tuple) else stride
        if isinstance(m, (LiftingConv, GroupConv)) and stride == 2 or getattr(m, "subsamples", False):
            handles.append(m.register_forward_pre_hook(check(name, need_odd=True)))
        elif isinstance(m, nn.MaxPool2d):
            handles.append(m.register_forward_pre_hook(check(name, need_odd=False)))
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, channels, size, size))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return problems


def nearest_good_sizes(model: nn.Module, size: int, channels: int, reach: int = 16) -> list[int]:
    good = [s for s in range(max(getattr(model, "min_input_size", 1), size - reach), size + reach + 1)
            if not equivariance_warnings(model, s, channels)]
    return sorted(good, key=lambda s: (abs(s - size), s))[:2]


def group_width(channels: int, width: float, group: str) -> int:
    """Features for a group net that keeps about the parameters of a plain net with `channels`: a group
    conv has |G| times the weights per feature pair, so divide by sqrt(|G|)."""
    return max(1, int(round(channels * width / math.sqrt(Group(group).order))))


def equivariance_note(model: nn.Module, size: int, channels: int, name: str) -> str | None:
    """One line for the user when `model` has group layers and `size` breaks their exact equivariance."""
    if not any(isinstance(m, (LiftingConv, GroupConv)) for m in model.modules()):
        return None
    problems = equivariance_warnings(model, size, channels)
    if not problems:
        return None
    good = " or ".join(str(s) for s in nearest_good_sizes(model, size, channels))
    return (f"{name} is not exactly equivariant at {size}x{size}: {'; '.join(problems[:2])}"
            f"{' ...' if len(problems) > 2 else ''}; nearest good sizes: {good} (--image-size)")
