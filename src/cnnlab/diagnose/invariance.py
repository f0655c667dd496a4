"""How invariant is a trained model, really? For each transform, the fraction of test predictions that
change and the relative change of the logits, ||f(Tx) - f(x)|| / ||f(x)|| averaged over images, in fp32
and eval mode so that exact invariance shows as float rounding (about 1e-7) and nothing else."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Callable

import torch

from ..data.transforms import affine, rotation_theta
from ..errors import CnnlabError
from ..inference import load_run, load_test_split, stats
from ..runtime.evaluate import predict_logits

KNOWN = "rotD (degrees, e.g. rot90, rot15), hflip, vflip, translateN (pixels, e.g. translate2)"


def parse_transform(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """'rot90' -> a function on uint8 or float batches (N, C, H, W) in [0, 255]."""
    if name == "hflip":
        return lambda x: x.flip(3)
    if name == "vflip":
        return lambda x: x.flip(2)
    if m := re.fullmatch(r"rot(-?[0-9]+(?:\.[0-9]+)?)", name):
        degrees = float(m.group(1))
        if degrees % 90 == 0:  # exact: a permutation of pixels, no resampling
            return lambda x: torch.rot90(x, int(degrees // 90) % 4, dims=(2, 3))
        angle = torch.tensor(math.radians(degrees))
        return lambda x: affine(x, rotation_theta(angle.expand(len(x))))
    if (k := translation(name)) is not None:
        return lambda x: torch.nn.functional.pad(x.float(), (k, 0, k, 0))[:, :, :x.shape[2], :x.shape[3]]
    raise CnnlabError(f"--transforms: unknown transform '{name}'; known: {KNOWN}")


def translation(name: str) -> int | None:
    """The pixels of 'translateN', or None for another transform."""
    m = re.fullmatch(r"translate([0-9]+)", name)
    return int(m.group(1)) if m else None


@torch.no_grad()
def measure_invariance(run_dir: Path, data: str | None, transforms: list[str], weights: str = "best",
                       holdout: float | int | None = None, batch_size: int = 256) -> dict:
    """{transform: {prediction_change, logit_change, images}} on the run's own test split (or on `data`,
    `holdout`, each defaulting to the run's; see `load_test_split`)."""
    fns = {name: parse_transform(name) for name in transforms}  # check names before loading anything
    model, spec = load_run(run_dir, weights)
    for name in transforms:
        if (translation(name) or 0) >= spec["image_size"]:
            raise CnnlabError(f"--transforms {name}: shifts the run's {spec['image_size']}x{spec['image_size']} "
                              f"images wholly out of view; give fewer pixels than that")
    x = load_test_split(run_dir, spec, data, holdout).x
    mean, std = stats(spec)

    def logits(images: torch.Tensor) -> torch.Tensor:
        return predict_logits(model, images, mean, std, "fp32", batch_size)

    base = logits(x)
    out = {}
    for name, fn in fns.items():
        moved = logits(fn(x))
        change = (moved - base).norm(dim=1) / base.norm(dim=1).clamp(min=1e-12)
        out[name] = {"prediction_change": float((moved.argmax(1) != base.argmax(1)).float().mean()),
                     "logit_change": float(change.mean()), "images": len(x)}
    return out
