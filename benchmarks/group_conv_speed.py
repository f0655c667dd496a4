"""A p4 group convolution against a plain convolution with the same number of output channels (issue 5),
forward and backward, measured side by side in one run. Target: at most 1.3x the plain conv's time.

A p4 conv from C to C features reads and writes C x 4 channels, so the plain conv it is compared with maps
4C channels to 4C channels: the same multiply-adds. What the group conv adds is building its four
rotated filter banks each step.

    python benchmarks/group_conv_speed.py [--features 16] [--size 32] [--batch 128]
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from cnnlab.models.equivariant import GroupConv
from cnnlab.runtime.device import autocast, resolve_precision, use_all_cores


def seconds(layer: torch.nn.Module, x: torch.Tensor, precision: str, repeats: int = 10) -> float:
    def step():
        with autocast(x.device, precision):
            out = layer(x)
        out.float().square().mean().backward()

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=int, default=16)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()
    threads = use_all_cores()
    c = args.features
    x = torch.randn(args.batch, 4 * c, args.size, args.size).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    worst = 0.0
    for precision in ("fp32", resolve_precision("auto", torch.device("cpu"))):
        group = GroupConv(c, c, 3, "p4", bias=False)
        plain = torch.nn.Conv2d(4 * c, 4 * c, 3, padding=1, bias=False).to(memory_format=torch.channels_last)
        t_plain, t_group = seconds(plain, x, precision), seconds(group, x, precision)
        worst = max(worst, t_group / t_plain)
        print(f"{precision}: plain conv {4 * c}->{4 * c} {t_plain * 1e3:.1f} ms, p4 group conv {c}->{c} features "
              f"{t_group * 1e3:.1f} ms: {t_group / t_plain:.2f}x  (batch {args.batch}, {args.size}x{args.size}, "
              f"{threads} threads, forward + backward)")
        if precision == "bf16" or precision == "fp32" and resolve_precision("auto", torch.device("cpu")) == "fp32":
            break
    print(f"worst ratio {worst:.2f}x (target <= 1.3x): {'PASS' if worst <= 1.3 else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
