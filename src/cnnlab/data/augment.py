"""Batched data augmentation on the device: whole batches in, whole batches out, with independent random
parameters per image and no per-image Python (airbench's way). The operations live in `transforms.py`.

A policy is a short string, as in the run config: `"flip,translate=4,color=0.3"`. Each operation is declared
once, in OPS below (its syntax, help, parser and function); that table drives parsing, the order in which
operations apply (the table's, whatever the order written), the help of `cnnlab augment` and its grid.
`python -c "from cnnlab.data.augment import policy_help; print(policy_help())"` lists them.
"""
from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import CnnlabError
from .transforms import (FILLS, affine, apply_flip, auto_augment, colour, cutout, flip_mask, mix,
                         random_affine_theta, random_translate)

__all__ = ["OPS", "Augmenter", "Policy", "apply_flip", "parse_policy", "policy_help", "random_translate"]


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


def _number(kind: type, low: float = 0.0, high: float = float("inf"), high_inclusive: bool = True,
            low_inclusive: bool = True) -> Callable[[str, str], float]:
    """A parser of `name=V`: V of `kind` within [low, high] (bounds as said)."""
    def parse(name: str, value: str) -> float:
        try:
            number = kind(value)
        except ValueError:
            raise CnnlabError(f"--augment: {name} needs {'a whole number' if kind is int else 'a number'}, as in "
                              f"{name}={'2' if kind is int else '0.5'}; got '{name}={value}'") from None
        if not math.isfinite(number):  # NaN passes every range check, and infinity turns images black
            raise CnnlabError(f"--augment: {name} needs a finite number, got '{name}={value}'")
        above = number > high if high_inclusive else number >= high
        below = number < low if low_inclusive else number <= low
        if below or above:
            bounds = f"{'(' if not low_inclusive else '['}{low:g}, {high:g}{']' if high_inclusive else ')'}"
            raise CnnlabError(f"--augment: {name}={value} is out of range {bounds}")
        return number
    return parse


def _flag(field: str, setting) -> Callable[[str, str], dict]:
    return lambda name, value: {field: setting}


def _rotate(name: str, value: str) -> dict:
    degrees, _, fill = value.partition(":")
    if fill and fill not in FILLS:
        raise CnnlabError(f"--augment: rotate fill must be one of {', '.join(FILLS)}, got '{fill}'")
    return {"rotate": _number(float, high=360.0)(name, degrees), "fill": fill or "zeros"}


def _randaugment(name: str, value: str) -> dict:
    n_ops, _, mag = (value or "2:9").partition(":")
    if not (n_ops.isdecimal() and mag.isdecimal() and int(n_ops) <= MAX_AUTO_OPS and int(mag) <= 30):
        raise CnnlabError(f"--augment: '{name}={value}': use randaugment=N:M (N from 0 to {MAX_AUTO_OPS}, M from 0 "
                          f"to 30) or a bare randaugment")
    return {"auto": "rand", "auto_ops": int(n_ops), "auto_magnitude": int(mag)}


MAX_AUTO_OPS = 16  # randaugment's operations per image: its table holds 14 kinds
MAX_FACTOR = 1.0  # colour scaling: factors in [1-V, 1+V]; past 1, negative factors turn images black
MAX_MIX = 100.0  # Beta(A, A) of mixup and cutmix: past it, all but exactly half and half; far past it, overflow


def _colour(name: str, value: str) -> dict:
    v = _number(float, high=MAX_FACTOR)(name, value)
    return {"brightness": v, "contrast": v, "saturation": v}


# The stages of a batch's augmentation. Operations that share a kernel share a stage (crop and rotate one
# affine warp, the colour operations one colour transform), which runs once, where its first operation stands.
def _translate(a: "Augmenter", x, ids, epoch, gen):
    return random_translate(x, a.policy.translate, gen)


def _warp(a: "Augmenter", x, ids, epoch, gen):
    p = a.policy
    return affine(x, random_affine_theta(len(x), gen, (p.crop, 1.0), degrees=p.rotate), p.fill)


def _flip(a: "Augmenter", x, ids, epoch, gen):
    return apply_flip(x, flip_mask(len(x), gen))


def _altflip(a: "Augmenter", x, ids, epoch, gen):
    a.parity = a.parity.to(ids.device)  # once: no host round trip per step
    return apply_flip(x, a.parity[ids] ^ bool(epoch % 2))


def _vflip(a: "Augmenter", x, ids, epoch, gen):
    return apply_flip(x, flip_mask(len(x), gen), dim=2)


def _auto(a: "Augmenter", x, ids, epoch, gen):
    p = a.policy
    return auto_augment(x, gen, p.auto, p.auto_ops, p.auto_magnitude / 30)


def _colour_stage(a: "Augmenter", x, ids, epoch, gen):
    p = a.policy
    return colour(x, gen, p.brightness, p.contrast, p.saturation, p.hue)


def _cutout(a: "Augmenter", x, ids, epoch, gen):
    return cutout(x, a.policy.cutout, gen)


@dataclass(frozen=True)
class Op:
    name: str  # as written in a policy (also its aliases)
    syntax: str
    help: str
    parse: Callable[[str, str], dict]  # (name, value after '=') -> Policy fields
    active: Callable[["Policy"], bool]  # whether a policy uses it
    stage: Callable | None  # what it does to a batch (None: mixing, applied with the labels)
    takes_value: bool = True
    group: str = ""  # at most one operation of a group in a policy
    aliases: tuple[str, ...] = ()


def _field(field: str, kind: type, **bounds) -> Callable[[str, str], dict]:
    number = _number(kind, **bounds)
    return lambda name, value: {field: number(name, value)}


# Every operation, in the order they apply to a batch.
OPS = [
    Op("translate", "translate=N", "shift each image by up to N pixels in x and y, the border filled by reflection "
       "(the usual random crop with padding N)", _field("translate", int), lambda p: p.translate > 0, _translate),
    Op("crop", "crop=S", "random resized crop: a part of S..100% of the area, aspect 3/4..4/3, resized back",
       _field("crop", float, low=0.0, low_inclusive=False, high=1.0), lambda p: p.crop < 1, _warp),
    Op("rotate", "rotate=D[:FILL]", f"rotate by up to +-D degrees; FILL: {', '.join(FILLS)} (default zeros)",
       _rotate, lambda p: p.rotate > 0, _warp),
    Op("flip", "flip", "mirror left-right with probability 1/2", _flag("flip", "random"), lambda p: p.flip == "random", _flip, False,
       "flip"),
    Op("altflip", "altflip", "alternating flip: each image mirrored in every other epoch (which half is random "
       "per image), so each epoch sees the view the previous one did not", _flag("flip", "alternate"),
       lambda p: p.flip == "alternate", _altflip, False, "flip"),
    Op("vflip", "vflip", "mirror up-down with probability 1/2", _flag("vflip", True), lambda p: p.vflip, _vflip, False),
    Op("randaugment", "randaugment[=N:M]", "N random operations per image at strength M of 30 (default 2:9; "
       "Cubuk et al. 2020)", _randaugment, lambda p: p.auto == "rand", _auto, True, "auto"),
    Op("trivialaugment", "trivialaugment", "one random operation per image at a random strength (Mueller and "
       "Hutter 2021)", _flag("auto", "trivial"), lambda p: p.auto == "trivial", _auto, False, "auto"),
    Op("color", "color=V", "brightness, contrast and saturation each scaled by a factor in [1-V, 1+V]", _colour,
       lambda p: p.brightness > 0 or p.contrast > 0 or p.saturation > 0, _colour_stage, aliases=("colour",)),
    Op("brightness", "brightness=V", "scale brightness by a factor in [1-V, 1+V]",
       _field("brightness", float, high=MAX_FACTOR),
       lambda p: p.brightness > 0, _colour_stage),
    Op("contrast", "contrast=V", "scale contrast by a factor in [1-V, 1+V]", _field("contrast", float, high=MAX_FACTOR),
       lambda p: p.contrast > 0, _colour_stage),
    Op("saturation", "saturation=V", "scale saturation by a factor in [1-V, 1+V]",
       _field("saturation", float, high=MAX_FACTOR),
       lambda p: p.saturation > 0, _colour_stage),
    Op("hue", "hue=V", "rotate the hue by up to +-V turns (V <= 0.5)", _field("hue", float, high=0.5),
       lambda p: p.hue > 0, _colour_stage),
    Op("cutout", "cutout=K", "blank a KxK square per image", _field("cutout", int), lambda p: p.cutout > 0, _cutout),
    Op("mixup", "mixup=A", "blend a partner image, weight ~ Beta(A, A); the loss mixes both labels by the weight",
       _field("mixup", float, high=MAX_MIX), lambda p: p.mixup > 0, None),
    Op("cutmix", "cutmix=A", "paste a box of a partner image, area ~ Beta(A, A); the loss mixes both labels "
       "likewise", _field("cutmix", float, high=MAX_MIX), lambda p: p.cutmix > 0, None),
]
_BY_NAME = {n: op for op in OPS for n in (op.name, *op.aliases)}


def policy_help() -> str:
    return "\n".join(f"  {op.syntax:<20} {op.help}" for op in OPS)


def parse_policy(spec: str | None) -> Policy:
    """`"flip,translate=2"` -> Policy; a one-line CnnlabError names what is wrong."""
    values: dict = {}
    groups: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in (spec or "").split(","))):
        name, has_value, value = item.partition("=")
        op = _BY_NAME.get(name)
        if op is None:
            raise CnnlabError(f"--augment: unknown operation '{item}'; known: "
                              f"{', '.join(o.syntax for o in OPS)}")
        if has_value and not op.takes_value:
            raise CnnlabError(f"--augment: '{item}': {op.name} takes no value")
        if not has_value and op.takes_value and op.name != "randaugment":
            raise CnnlabError(f"--augment: {op.name} needs a number, as in {op.syntax}")
        if op.group:
            if op.group in groups and groups[op.group] != op.name:
                others = [o.name for o in OPS if o.group == op.group]
                raise CnnlabError(f"--augment: choose one of {' and '.join(others)}")
            groups[op.group] = op.name
        parsed = op.parse(name, value)
        twice = [k for k in parsed if k in values and k != "fill"]
        if twice:  # `translate=4,translate=2` or `color=0.4,brightness=0.1`: the later would silently win
            raise CnnlabError(f"--augment: '{item}' sets {twice[0]} a second time; give each setting once")
        values.update(parsed)
    return Policy(**values)


class Augmenter:
    """Applies a policy to batches of the training set. `image_ids` (positions in the training set) lets
    `altflip` flip the same images in even epochs and the others in odd epochs. The randomness depends only
    on (seed, epoch, step): a resumed run draws the same augmentations."""

    def __init__(self, policy: Policy, num_images: int, seed: int) -> None:
        self.policy = policy
        self.seed = seed
        self.stages: list[Callable] = []
        for op in OPS:
            if op.stage is not None and op.active(policy) and op.stage not in self.stages:
                self.stages.append(op.stage)
        self.parity = flip_mask(num_images, torch.Generator().manual_seed(seed + 7))

    def generator(self, epoch: int, step: int, salt: int = 0) -> torch.Generator:
        """The randomness of one step, from (seed, epoch, step) alone; `salt` gives a use of its own."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 10_007 + step + salt * 7_919)

    def __call__(self, x: torch.Tensor, image_ids: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
        """The policy's stages, in the order of OPS, each once."""
        if not self.policy.active:
            return x
        gen = self.generator(epoch, step)
        for stage in self.stages:
            x = stage(self, x, image_ids, epoch, gen)
        return x

    def mix(self, x: torch.Tensor, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                    torch.Tensor | None]:
        """Mixup/CutMix: (images, partner index, own-label weight), or (images, None, None) without them."""
        if not self.policy.mixes:
            return x, None, None
        return mix(x, self.generator(epoch, step, salt=1), self.policy.mixup, self.policy.cutmix)
