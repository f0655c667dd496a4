"""`cnnlab augment`: a grid of augmented training images, so a user sees what the model will see.
The first row holds the originals, each with its class, set apart by a rule; each further row, the same images
through the policy with fresh draws. Under a mixup or cutmix image: the two labels it now carries, with the
weights the loss gives them. Each row is named in a margin on the left."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..data import load_dataset
from ..data.augment import Augmenter, parse_policy
from ..errors import CnnlabError
from ..runtime.files import check_output, publish, temporary_beside
from ..runtime.tensors import to_device

MAX_GRID, MAX_CELL_IMAGE = 64, 1024  # rows or columns, and the side of one image, that a grid can show
GAP, RULE, MARGIN, FONT_SIZE = 2, 10, 70, 11  # pixels: between cells, around the rule, row names, text
BACKGROUND, INK, RULE_COLOUR = (255, 255, 255), (20, 20, 20), (200, 30, 30)


def augment_views(data: str, policy: str, rows: int = 4, cols: int = 8, seed: int = 0,
                  image_size: int | None = None, skip_bad: bool = False) -> tuple[torch.Tensor, list[list[str]]]:
    """(rows, cols, C, H, W) uint8 images, the originals first, and a caption per image: the class of each
    original; for a mixed image, its two labels with their weights in the loss ('3: 0.62\\n7: 0.38'); else ''."""
    if not (2 <= rows <= MAX_GRID and 1 <= cols <= MAX_GRID):
        raise CnnlabError(f"--rows must be from 2 to {MAX_GRID} and --cols from 1 to {MAX_GRID}, got {rows} and {cols}")
    if not 0 <= seed < 2 ** 32:
        raise CnnlabError(f"--seed must be between 0 and 2^32-1, got {seed}")
    if image_size is not None and not 1 <= image_size <= MAX_CELL_IMAGE:
        raise CnnlabError(f"--image-size must be from 1 to {MAX_CELL_IMAGE} pixels for a grid, got {image_size}")
    augment = Augmenter(parse_policy(policy), cols, seed)
    ds = load_dataset(data, image_size=image_size, skip_bad=skip_bad)
    size = image_size or ds.default_image_size or ds.image_size[0]
    pick = np.sort(np.random.default_rng(seed).choice(len(ds.train_x), size=min(cols, len(ds.train_x)),
                                                      replace=False))
    x, y = to_device(ds.train_x[pick], ds.train_y[pick], size, torch.device("cpu"))
    names = [str(ds.classes[int(c)]) for c in y]
    ids = torch.arange(len(x))
    views, captions = [x.float()], [names]
    for r in range(1, rows):
        mixed, partner, own = augment.mix(augment(x, ids, epoch=r - 1, step=r), epoch=r - 1, step=r)
        views.append(mixed.float())
        captions.append([""] * len(x) if partner is None else
                        [_weights(names[i], names[int(j)], float(w)) for i, (j, w) in enumerate(zip(partner, own))])
    return torch.stack(views).round().clamp(0, 255).to(torch.uint8), captions


def _weights(own: str, partner: str, weight: float) -> str:
    """The labels the loss sees for a mixed image, the heavier first; one where they agree or one is ~all."""
    pairs = sorted([(weight, own), (1 - weight, partner)], reverse=True)
    if own == partner or pairs[0][0] >= 0.995:
        return f"{pairs[0][1]}: 1.00"
    return "\n".join(f"{name}: {w:.2f}" for w, name in pairs)


def augment_grid(data: str, policy: str, out: Path, rows: int = 4, cols: int = 8, seed: int = 0,
                 image_size: int | None = None, cell: int = 96, skip_bad: bool = False) -> Path:
    out = Path(out)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise CnnlabError(f"--out {out}: give a .png or .jpg file name")
    if not out.parent.exists():
        raise CnnlabError(f"--out {out}: folder {out.parent} does not exist")
    check_output(out)
    views, captions = augment_views(data, policy, rows, cols, seed, image_size, skip_bad)
    mixes = any(any(row) for row in captions[1:])
    title = f"{data}, policy {policy}" + ("; under a mixed image: its labels, each with its weight in the loss"
                                           if mixes else "")
    image = compose(views, captions, ["original"] + [f"draw {r}" for r in range(1, rows)], cell, title)
    tmp = temporary_beside(out, out.suffix)
    try:
        image.save(tmp)
        publish(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def compose(views: torch.Tensor, captions: list[list[str]], row_names: list[str], cell: int = 96,
            title: str = "") -> Image.Image:
    """The grid: a title line, row names in a left margin, images upscaled by whole pixels (nearest
    neighbour), each caption under its image, and a rule between the first row (the originals) and the rest."""
    rows, cols, channels, size, _ = views.shape
    scale = max(1, cell // size)
    side = size * scale
    font = ImageFont.load_default(size=FONT_SIZE)
    caption_height = [(FONT_SIZE + 2) * max((c.count("\n") + 1 for c in row if c), default=0) for row in captions]
    heights = [side + h + GAP for h in caption_height]
    head = FONT_SIZE + 8 if title else 0
    tops = [head + sum(heights[:r]) + (2 * RULE if r else 0) for r in range(rows)]
    width = max(MARGIN + cols * (side + GAP), int(font.getlength(title)) + 8)
    canvas = Image.new("RGB", (width, tops[-1] + heights[-1]), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if channels == 1:
        views = views.expand(-1, -1, 3, -1, -1)
    draw.text((4, 3), title, fill=INK, font=font)
    for r in range(rows):
        draw.text((4, tops[r] + side // 2), row_names[r], fill=INK, font=font, anchor="lm")
        for c in range(cols):
            pixels = np.kron(views[r, c].permute(1, 2, 0).numpy(), np.ones((scale, scale, 1), dtype=np.uint8))
            left = MARGIN + c * (side + GAP)
            canvas.paste(Image.fromarray(pixels), (left, tops[r]))
            if captions[r][c]:
                draw.multiline_text((left + side // 2, tops[r] + side + 1), captions[r][c], fill=INK, font=font,
                                    anchor="ma", align="center", spacing=2)
    rule_y = tops[1] - RULE
    draw.line([(4, rule_y), (canvas.width - 4, rule_y)], fill=RULE_COLOUR, width=2)
    return canvas
