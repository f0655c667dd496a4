"""Batched image transforms: each takes a whole batch (N, C, H, W) and per-image random parameters drawn
from a torch.Generator, and works with batch operations only (a gather, one grid_sample, elementwise maths),
never a Python loop over images. Pixel values are in [0, 255], uint8 or float."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import CnnlabError

FILLS = {"zeros": "zeros", "border": "border", "reflect": "reflection"}  # rotation fill -> grid_sample's name


def _uniform(n: int, low: float, high: float, gen: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def random_translate(x: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image by its own (dy, dx) in [-pad, pad], reflecting at the border (a random crop of the
    reflect-padded image). One gather over the padded batch instead of a loop over images or shifts."""
    if pad <= 0 or len(x) == 0:
        return x
    n, c, h, w = x.shape
    if pad >= min(h, w):
        raise CnnlabError(f"--augment: translate={pad} needs images larger than {pad} pixels, these are {h}x{w}")
    # reflect padding is not implemented for uint8, so pad in float16, exact for values 0..255
    padded = F.pad(x.to(torch.float16) if x.dtype == torch.uint8 else x, (pad,) * 4, mode="reflect").to(x.dtype)
    wp = w + 2 * pad
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator).to(x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1) + offsets[0].view(n, 1, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w) + offsets[1].view(n, 1, 1)
    index = (rows * wp + cols).view(n, 1, h * w).expand(n, c, h * w)
    return padded.reshape(n, c, -1).gather(2, index).view(n, c, h, w).contiguous(
        memory_format=torch.channels_last)


def flip_mask(n: int, generator: torch.Generator | None = None, p: float = 0.5) -> torch.Tensor:
    return torch.rand(n, generator=generator) < p


def apply_flip(x: torch.Tensor, mask: torch.Tensor, dim: int = 3) -> torch.Tensor:
    """Mirror the images where `mask` is true (dim 3: left-right, 2: up-down); one `torch.where`."""
    mask = mask.to(x.device).view(-1, 1, 1, 1)
    return torch.where(mask, x.flip(dim), x)


def affine(x: torch.Tensor, theta: torch.Tensor, fill: str = "zeros") -> torch.Tensor:
    """Resample each image through its own 2x3 matrix `theta` (output -> input coordinates in [-1, 1]),
    bilinearly, in one grid_sample. Returns float images in [0, 255]."""
    if fill not in FILLS:
        raise CnnlabError(f"--augment: unknown fill '{fill}'; choose one of {', '.join(FILLS)}")
    xf = x.float()
    grid = F.affine_grid(theta.to(xf.device, xf.dtype), list(xf.shape), align_corners=False)
    return F.grid_sample(xf, grid, mode="bilinear", padding_mode=FILLS[fill], align_corners=False)


def random_affine_theta(n: int, gen: torch.Generator | None, scale: tuple[float, float] = (1.0, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3), degrees: float = 0.0) -> torch.Tensor:
    """Per-image matrices of a random resized crop (area fraction in `scale`, aspect ratio in `ratio`, placed
    anywhere inside the image) followed by a rotation of up to +-`degrees`."""
    area = _uniform(n, *scale, gen)
    log_ratio = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), gen)
    w = torch.sqrt(area * log_ratio.exp()).clamp(max=1.0)  # half-widths in [-1, 1] units: the crop's fraction
    h = torch.sqrt(area / log_ratio.exp()).clamp(max=1.0)
    cx = _uniform(n, -1, 1, gen) * (1 - w)
    cy = _uniform(n, -1, 1, gen) * (1 - h)
    theta = rotation_theta(_uniform(n, -degrees, degrees, gen) * math.pi / 180)
    theta[:, :, 0] *= w.view(n, 1)  # scale the crop's axes, then rotate: R @ diag(w, h)
    theta[:, :, 1] *= h.view(n, 1)
    theta[:, :, 2] = torch.stack([cx, cy], 1)
    return theta


def rotation_theta(angles: torch.Tensor) -> torch.Tensor:
    """(N,) angles in radians -> (N, 2, 3) matrices for `affine` rotating each image about its centre."""
    cos, sin, zero = angles.cos(), angles.sin(), torch.zeros_like(angles)
    return torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] != 3:
        return x.mean(1, keepdim=True)
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def colour(x: torch.Tensor, gen: torch.Generator | None, brightness: float = 0.0, contrast: float = 0.0,
           saturation: float = 0.0, hue: float = 0.0) -> torch.Tensor:
    """Per-image colour scaling, as torchvision's ColorJitter: factors drawn from [1-v, 1+v] (hue: a
    rotation of up to +-hue turns of the colour wheel). Float in [0, 255] out."""
    x = x.float()
    n = len(x)
    view = (n, 1, 1, 1)
    if brightness:
        x = x * _uniform(n, max(0, 1 - brightness), 1 + brightness, gen).to(x.device).view(view)
    if contrast:
        mean = _gray(x).mean((1, 2, 3), keepdim=True)
        x = mean + (x - mean) * _uniform(n, max(0, 1 - contrast), 1 + contrast, gen).to(x.device).view(view)
    if saturation and x.shape[1] == 3:
        gray = _gray(x)
        x = gray + (x - gray) * _uniform(n, max(0, 1 - saturation), 1 + saturation, gen).to(x.device).view(view)
    if hue and x.shape[1] == 3:
        x = _rotate_hue(x, _uniform(n, -hue, hue, gen).to(x.device) * 2 * math.pi)
    return x.clamp(0, 255)


def _rotate_hue(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate chroma about the gray axis in YIQ space, one 3x3 matrix per image."""
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                          device=x.device)
    cos, sin = angle.cos(), angle.sin()
    one, zero = torch.ones_like(cos), torch.zeros_like(cos)
    rot = torch.stack([torch.stack([one, zero, zero], 1), torch.stack([zero, cos, -sin], 1),
                       torch.stack([zero, sin, cos], 1)], 1)
    m = torch.linalg.inv(to_yiq) @ rot @ to_yiq  # (N, 3, 3)
    return torch.einsum("nij,njhw->nihw", m, x)


def cutout(x: torch.Tensor, size: int, gen: torch.Generator | None) -> torch.Tensor:
    """Blank one size x size square per image (centre anywhere, clipped at the border) with the batch's
    mean colour, which is what zero is after normalisation."""
    n, c, h, w = x.shape
    x = x.float()
    cy = torch.randint(0, h, (n,), generator=gen).to(x.device).view(n, 1, 1)
    cx = torch.randint(0, w, (n,), generator=gen).to(x.device).view(n, 1, 1)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    top, left = cy - size // 2, cx - size // 2
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    mean = x.mean((0, 2, 3), keepdim=True)
    return torch.where(inside.unsqueeze(1), mean, x)


def mix(x: torch.Tensor, gen: torch.Generator | None, mixup: float = 0.0,
        cutmix: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mixup or CutMix with a partner image from the same batch, a per-image mixing weight drawn from
    Beta(alpha, alpha). Returns (images, partner index, weight of the image's own label). With both
    switched on, each image uses one of the two at random."""
    n, _, h, w = x.shape
    x = x.float()
    perm = torch.randperm(n, generator=gen).to(x.device)
    lam = torch.ones(n)
    out = x
    use_cut = flip_mask(n, gen) if (mixup and cutmix) else torch.full((n,), bool(cutmix))
    if mixup:
        lam_m = _beta(n, mixup, gen)
        lam = torch.where(use_cut, lam, lam_m)
        lm = lam_m.to(x.device).view(n, 1, 1, 1)
        out = torch.where(use_cut.to(x.device).view(n, 1, 1, 1), out, lm * x + (1 - lm) * x[perm])
    if cutmix:
        lam_c = _beta(n, cutmix, gen)
        cut_h = (h * torch.sqrt(1 - lam_c)).round().long()
        cut_w = (w * torch.sqrt(1 - lam_c)).round().long()
        cy, cx = torch.randint(0, h, (n,), generator=gen), torch.randint(0, w, (n,), generator=gen)
        y0, y1 = (cy - cut_h // 2).clamp(0, h), (cy - cut_h // 2 + cut_h).clamp(0, h)
        x0, x1 = (cx - cut_w // 2).clamp(0, w), (cx - cut_w // 2 + cut_w).clamp(0, w)
        rows = torch.arange(h).view(1, h, 1)
        cols = torch.arange(w).view(1, 1, w)
        box = (rows >= y0.view(n, 1, 1)) & (rows < y1.view(n, 1, 1)) & (cols >= x0.view(n, 1, 1)) & \
              (cols < x1.view(n, 1, 1))
        box = box & use_cut.view(n, 1, 1)
        out = torch.where(box.unsqueeze(1).to(x.device), x[perm], out)
        lam_box = 1 - ((y1 - y0) * (x1 - x0)).float() / (h * w)  # the area actually kept
        lam = torch.where(use_cut, lam_box, lam)
    return out, perm, lam.to(x.device)


def _beta(n: int, alpha: float, gen: torch.Generator | None) -> torch.Tensor:
    """Beta(alpha, alpha) from the seeded generator (torch.distributions takes none): X / (X + Y) with X and
    Y drawn from Gamma(alpha)."""
    g = torch._standard_gamma(torch.full((2, n), float(alpha)), generator=gen)
    return g[0] / (g[0] + g[1])


# -- RandAugment and TrivialAugment, batched ---------------------------------------------------------------
# Each image draws its own operation (and, for TrivialAugment, its own strength). Every operation is run on
# the whole batch once, with identity parameters for the images that did not draw it, so the cost does
# not depend on which images drew what. Strengths: torchvision's ranges ("wide" for TrivialAugment).
AUTO_OPS = ("identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color",
            "contrast", "sharpness", "posterize", "solarize", "autocontrast")
_RANGES = {"rand": {"shear": 0.3, "translate": 0.45, "rotate": 30.0, "enhance": 0.9, "bits": 4},
           "trivial": {"shear": 0.99, "translate": 1.0, "rotate": 135.0, "enhance": 0.99, "bits": 6}}


def auto_augment(x: torch.Tensor, gen: torch.Generator | None, kind: str, num_ops: int = 2,
                 magnitude: float = 9 / 30) -> torch.Tensor:
    """kind 'rand': `num_ops` rounds, each image a random op at `magnitude` (0..1); kind 'trivial': one
    round, each image a random op at a random magnitude. Float images in [0, 255] out."""
    rng = _RANGES[kind]
    x = x.float()
    n = len(x)
    for _ in range(num_ops if kind == "rand" else 1):
        op = torch.randint(0, len(AUTO_OPS), (n,), generator=gen)
        m = torch.full((n,), float(magnitude)) if kind == "rand" else torch.rand(n, generator=gen)
        signed = m * torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
        chosen = {name: (op == i) for i, name in enumerate(AUTO_OPS)}

        def when(name: str, value: torch.Tensor, identity: float) -> torch.Tensor:
            return torch.where(chosen[name], value, torch.full_like(value, identity))

        # geometry: one affine per image (identity for the rest)
        shx, shy = when("shear_x", signed * rng["shear"], 0), when("shear_y", signed * rng["shear"], 0)
        tx, ty = when("translate_x", signed * rng["translate"], 0), when("translate_y", signed * rng["translate"], 0)
        angle = when("rotate", signed * rng["rotate"], 0) * math.pi / 180
        if bool((shx != 0).any() or (shy != 0).any() or (tx != 0).any() or (ty != 0).any() or (angle != 0).any()):
            cos, sin = angle.cos(), angle.sin()
            theta = torch.stack([torch.stack([cos + shx * sin, -sin + shx * cos, tx], 1),
                                 torch.stack([sin + shy * cos, cos - shy * sin, ty], 1)], 1)
            x = affine(x, theta, "zeros")
        view = (n, 1, 1, 1)
        dev = x.device
        x = x * when("brightness", 1 + signed * rng["enhance"], 1).to(dev).view(view)
        gray = _gray(x)
        x = gray + (x - gray) * when("color", 1 + signed * rng["enhance"], 1).to(dev).view(view)
        mean = _gray(x).mean((1, 2, 3), keepdim=True)
        x = mean + (x - mean) * when("contrast", 1 + signed * rng["enhance"], 1).to(dev).view(view)
        x = _sharpness(x.clamp(0, 255), when("sharpness", 1 + signed * rng["enhance"], 1).to(dev))
        bits = when("posterize", 8 - (m * rng["bits"]).round(), 8).to(dev).view(view)
        x = torch.where(bits < 8, torch.floor(x / 2 ** (8 - bits)) * 2 ** (8 - bits), x)
        threshold = when("solarize", 256 * (1 - m), 256).to(dev).view(view)
        x = torch.where(x >= threshold, 255 - x, x)
        x = torch.where(chosen["autocontrast"].to(dev).view(view), _autocontrast(x), x)
    return x.clamp(0, 255)


def _sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with a smoothed copy (PIL's kernel): factor 1 is the image, 0 the blur, 2 twice as sharp."""
    c = x.shape[1]
    kernel = torch.tensor([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]], device=x.device) / 13
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel.expand(c, 1, 3, 3), groups=c)
    return (blurred + (x - blurred) * factor.view(-1, 1, 1, 1)).clamp(0, 255)


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    low = x.amin((2, 3), keepdim=True)
    high = x.amax((2, 3), keepdim=True)
    scale = torch.where(high > low, 255 / (high - low).clamp(min=1e-6), torch.ones_like(high))
    return torch.where(high > low, (x - low) * scale, x)
