"""`cnnlab augment`: a grid of augmented training images, so a user sees what the model will see.
The first row holds the originals; each further row, the same images through the policy with fresh draws."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data import load_dataset
from ..data.augment import Augmenter, parse_policy
from ..errors import CnnlabError
from ..runtime.tensors import to_device


def augment_grid(data: str, policy: str, out: Path, rows: int = 4, cols: int = 8, seed: int = 0,
                 image_size: int | None = None, cell: int = 96) -> Path:
    if rows < 2 or cols < 1:
        raise CnnlabError(f"--rows must be at least 2 and --cols at least 1, got {rows} and {cols}")
    out = Path(out)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise CnnlabError(f"--out {out}: give a .png or .jpg file name")
    if not out.parent.exists():
        raise CnnlabError(f"--out {out}: folder {out.parent} does not exist")
    augment = Augmenter(parse_policy(policy), cols, seed)
    ds = load_dataset(data, image_size=image_size)
    size = image_size or ds.default_image_size or ds.image_size[0]
    pick = np.random.default_rng(seed).choice(len(ds.train_x), size=min(cols, len(ds.train_x)), replace=False)
    x, _ = to_device(ds.train_x[np.sort(pick)], ds.train_y[np.sort(pick)], size, torch.device("cpu"))
    ids = torch.arange(len(x))
    views = [x.float()]
    for r in range(1, rows):
        aug = augment(x, ids, epoch=r - 1, step=r)
        views.append(augment.mix(aug, epoch=r - 1, step=r)[0].float())
    grid = torch.stack(views)  # (rows, cols, C, H, W)
    if grid.shape[2] == 1:
        grid = grid.expand(-1, -1, 3, -1, -1)
    scale = max(1, cell // size)
    grid = grid.round().clamp(0, 255).to(torch.uint8).permute(0, 3, 1, 4, 2)  # rows, H, cols, W, C
    image = grid.reshape(rows * size, len(x) * size, 3).numpy()
    image = np.kron(image, np.ones((scale, scale, 1), dtype=np.uint8))  # nearest-neighbour upscaling
    tmp = out.with_name(f".{out.name}.tmp{out.suffix}")
    Image.fromarray(image).save(tmp)
    os.replace(tmp, out)
    return out
