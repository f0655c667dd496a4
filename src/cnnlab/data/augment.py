"""Batched data augmentation on the device: whole uint8 batches in, whole batches out, with independent
random parameters per image and no per-image Python (airbench's way).

A policy is a short string, as in the run config: `"flip,translate=2"`. Operations, applied in this order:
    translate=N  shift each image by up to N pixels in x and y, the border filled by reflection
                 (the usual "random crop with padding N")
    flip         mirror each image left-right with probability 1/2
    altflip      alternating flip: each image is mirrored in every other epoch (which half is random per
                 image), so each epoch sees the view the previous one did not; less redundancy than `flip`
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import CnnlabError


@dataclass(frozen=True)
class Policy:
    translate: int = 0
    flip: str = "none"  # none, random or alternate

    @property
    def active(self) -> bool:
        return self.translate > 0 or self.flip != "none"


def parse_policy(spec: str | None) -> Policy:
    """`"flip,translate=2"` -> Policy; a one-line CnnlabError names what is wrong."""
    translate, flip = 0, "none"
    for item in filter(None, (s.strip() for s in (spec or "").split(","))):
        name, _, value = item.partition("=")
        if name == "translate":
            if not value.isdigit():
                raise CnnlabError(f"--augment: translate needs a whole number of pixels, as in translate=2; "
                                  f"got '{item}'")
            translate = int(value)
        elif name in ("flip", "altflip") and not value:
            if flip != "none":
                raise CnnlabError("--augment: choose one of flip and altflip")
            flip = "random" if name == "flip" else "alternate"
        else:
            raise CnnlabError(f"--augment: unknown operation '{item}'; known: translate=N, flip, altflip")
    return Policy(translate, flip)


def random_translate(x: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image of (N, C, H, W) by its own (dy, dx) in [-pad, pad], reflecting at the border.
    One gather over the padded batch instead of a loop over images or over shifts."""
    if pad <= 0 or len(x) == 0:
        return x
    n, c, h, w = x.shape
    if pad >= min(h, w):
        raise CnnlabError(f"--augment: translate={pad} needs images larger than {pad} pixels, these are {h}x{w}")
    # reflect padding is not implemented for uint8, so pad in float16, exact for values 0..255
    padded = F.pad(x.to(torch.float16) if x.dtype == torch.uint8 else x, (pad,) * 4, mode="reflect").to(x.dtype)
    wp = w + 2 * pad
    offsets = torch.randint(0, 2 * pad + 1, (2, n), device="cpu", generator=generator).to(x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1) + offsets[0].view(n, 1, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w) + offsets[1].view(n, 1, 1)
    index = (rows * wp + cols).view(n, 1, h * w).expand(n, c, h * w)
    return padded.reshape(n, c, -1).gather(2, index).view(n, c, h, w).contiguous(
        memory_format=torch.channels_last)


def flip_mask(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    return torch.rand(n, generator=generator) < 0.5


def apply_flip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror the images where `mask` is true; `torch.where` keeps it one batched op."""
    mask = mask.to(x.device).view(-1, 1, 1, 1)
    return torch.where(mask, x.flip(3), x)


class Augmenter:
    """Applies a policy to batches of the training set. `image_ids` (positions in the training set) lets
    `altflip` flip the same images in even epochs and the others in odd epochs."""

    def __init__(self, policy: Policy, num_images: int, seed: int) -> None:
        self.policy = policy
        self.seed = seed
        self.parity = flip_mask(num_images, torch.Generator().manual_seed(seed + 7))

    def __call__(self, x: torch.Tensor, image_ids: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
        if not self.policy.active:
            return x
        # the randomness depends only on (seed, epoch, step): a resumed run draws the same augmentations
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 10_007 + step)
        if self.policy.translate:
            x = random_translate(x, self.policy.translate, gen)
        if self.policy.flip == "random":
            x = apply_flip(x, flip_mask(len(x), gen))
        elif self.policy.flip == "alternate":
            self.parity = self.parity.to(image_ids.device)  # once: no host round trip per step
            x = apply_flip(x, self.parity[image_ids] ^ bool(epoch % 2))
        return x
