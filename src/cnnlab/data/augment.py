"""Batched data augmentation on the device: whole batches in, whole batches out, with independent random
parameters per image and no per-image Python (airbench's way). The operations live in `transforms.py`.

A policy is a short string, as in the run config: `"flip,translate=4,color=0.3"`. Operations, applied in
the order listed here whatever the order written:
    translate=N      shift each image by up to N pixels in x and y, the border filled by reflection
                     (the usual "random crop with padding N")
    crop=S           random resized crop: a part of S..100% of the area, aspect 3/4..4/3, resized back
    rotate=D[:FILL]  rotate by up to +-D degrees; FILL: zeros (default), border or reflect
    flip             mirror left-right with probability 1/2
    altflip          alternating flip: each image is mirrored in every other epoch (which half is random per
                     image), so each epoch sees the view the previous one did not
    vflip            mirror up-down with probability 1/2
    brightness=V, contrast=V, saturation=V  scale by a factor in [1-V, 1+V];  color=V sets all three
    hue=V            rotate the hue by up to +-V turns
    randaugment[=N:M]  N random operations per image at strength M of 30 (default 2:9; Cubuk et al. 2020)
    trivialaugment   one random operation per image at a random strength (Mueller and Hutter 2021)
    cutout=K         blank a KxK square per image
    mixup=A, cutmix=A  blend (mixup) or paste a box of (cutmix) a partner image, weight ~ Beta(A, A); the
                     loss mixes the two labels by the same weight
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import CnnlabError
from .transforms import (FILLS, affine, apply_flip, auto_augment, colour, cutout, flip_mask, mix,
                         random_affine_theta, random_translate)

__all__ = ["Augmenter", "Policy", "apply_flip", "parse_policy", "random_translate"]


@dataclass(frozen=True)
class Policy:
    translate: int = 0
    crop: float = 1.0  # smallest area fraction of a random resized crop; 1: no crop
    rotate: float = 0.0
    fill: str = "zeros"
    flip: str = "none"  # none, random or alternate
    vflip: bool = False
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    auto: str = "none"  # none, rand or trivial
    auto_ops: int = 2
    auto_magnitude: int = 9
    cutout: int = 0
    mixup: float = 0.0
    cutmix: float = 0.0

    @property
    def active(self) -> bool:
        return self != Policy()

    @property
    def mixes(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0


_NUMBERS = {"translate": int, "crop": float, "rotate": float, "brightness": float, "contrast": float,
            "saturation": float, "hue": float, "cutout": int, "mixup": float, "cutmix": float}
_KNOWN = "translate=N, crop=S, rotate=D[:fill], flip, altflip, vflip, color=V, brightness=V, contrast=V, " \
         "saturation=V, hue=V, randaugment[=N:M], trivialaugment, cutout=K, mixup=A, cutmix=A"


def parse_policy(spec: str | None) -> Policy:
    """`"flip,translate=2"` -> Policy; a one-line CnnlabError names what is wrong."""
    values: dict = {}
    for item in filter(None, (s.strip() for s in (spec or "").split(","))):
        name, has_value, value = item.partition("=")
        if name in ("randaugment", "trivialaugment"):
            if "auto" in values:
                raise CnnlabError("--augment: choose one of randaugment and trivialaugment")
            values["auto"] = "rand" if name == "randaugment" else "trivial"
            if has_value:
                n_ops, _, mag = value.partition(":")
                if name == "trivialaugment" or not (n_ops.isdigit() and mag.isdigit() and int(mag) <= 30):
                    raise CnnlabError(f"--augment: '{item}': use randaugment=N:M (M from 0 to 30) or a bare "
                                      f"randaugment / trivialaugment")
                values["auto_ops"], values["auto_magnitude"] = int(n_ops), int(mag)
            continue
        if name in ("flip", "altflip", "vflip") and not has_value:
            if name == "vflip":
                values["vflip"] = True
            elif "flip" in values:
                raise CnnlabError("--augment: choose one of flip and altflip")
            else:
                values["flip"] = "random" if name == "flip" else "alternate"
            continue
        if name == "rotate" and ":" in value:
            value, fill = value.split(":", 1)
            if fill not in FILLS:
                raise CnnlabError(f"--augment: rotate fill must be one of {', '.join(FILLS)}, got '{fill}'")
            values["fill"] = fill
        targets = ("brightness", "contrast", "saturation") if name in ("color", "colour") else (name,)
        if targets[0] not in _NUMBERS:
            raise CnnlabError(f"--augment: unknown operation '{item}'; known: {_KNOWN}")
        kind = _NUMBERS[targets[0]]
        try:
            number = kind(value)
        except ValueError:
            raise CnnlabError(f"--augment: {name} needs {'a whole number' if kind is int else 'a number'}, as in "
                              f"{name}={'2' if kind is int else '0.5'}; got '{item}'") from None
        if number < 0 or (name == "crop" and not 0 < number <= 1) or (name == "hue" and number > 0.5):
            raise CnnlabError(f"--augment: {item} is out of range" + (" (crop: 0 < S <= 1)" if name == "crop"
                                                                     else " (hue <= 0.5)" if name == "hue" else ""))
        for t in targets:
            values[t] = number
    return Policy(**values)


class Augmenter:
    """Applies a policy to batches of the training set. `image_ids` (positions in the training set) lets
    `altflip` flip the same images in even epochs and the others in odd epochs. The randomness depends only
    on (seed, epoch, step): a resumed run draws the same augmentations."""

    def __init__(self, policy: Policy, num_images: int, seed: int) -> None:
        self.policy = policy
        self.seed = seed
        self.parity = flip_mask(num_images, torch.Generator().manual_seed(seed + 7))

    def _generator(self, epoch: int, step: int, salt: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 10_007 + step + salt * 7_919)

    def __call__(self, x: torch.Tensor, image_ids: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
        p = self.policy
        if not p.active:
            return x
        gen = self._generator(epoch, step)
        if p.translate:
            x = random_translate(x, p.translate, gen)
        if p.crop < 1 or p.rotate:
            x = affine(x, random_affine_theta(len(x), gen, (p.crop, 1.0), degrees=p.rotate), p.fill)
        if p.flip == "random":
            x = apply_flip(x, flip_mask(len(x), gen))
        elif p.flip == "alternate":
            self.parity = self.parity.to(image_ids.device)  # once: no host round trip per step
            x = apply_flip(x, self.parity[image_ids] ^ bool(epoch % 2))
        if p.vflip:
            x = apply_flip(x, flip_mask(len(x), gen), dim=2)
        if p.auto != "none":
            x = auto_augment(x, gen, p.auto, p.auto_ops, p.auto_magnitude / 30)
        if p.brightness or p.contrast or p.saturation or p.hue:
            x = colour(x, gen, p.brightness, p.contrast, p.saturation, p.hue)
        if p.cutout:
            x = cutout(x, p.cutout, gen)
        return x

    def mix(self, x: torch.Tensor, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                    torch.Tensor | None]:
        """Mixup/CutMix: (images, partner index, own-label weight), or (images, None, None) without them."""
        if not self.policy.mixes:
            return x, None, None
        return mix(x, self._generator(epoch, step, salt=1), self.policy.mixup, self.policy.cutmix)
