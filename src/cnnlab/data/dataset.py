"""The in-memory form every loader returns: uint8 images (N, H, W, C) and int64 labels, split in two."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import CnnlabError


@dataclass
class ImageDataset:
    name: str
    classes: list[str]
    train_x: np.ndarray  # uint8, (N, H, W, C)
    train_y: np.ndarray  # int64, (N,)
    test_x: np.ndarray
    test_y: np.ndarray
    default_image_size: int | None = None  # size models see, when it differs from the stored size
    notes: list[str] = field(default_factory=list)  # e.g. "skipped 3 unreadable images"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[3])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train_x.shape[1]), int(self.train_x.shape[2])


def check_labels(labels: np.ndarray, num_classes: int, source: str) -> np.ndarray:
    """Labels must lie in [0, num_classes); name the file that broke the rule."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(labels[(labels < 0) | (labels >= num_classes)][0])
        raise CnnlabError(f"{source}: label {bad} is out of range for {num_classes} classes")
    return labels


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out): `fraction` of each class held out, chosen by a seeded shuffle."""
    if not 0.0 <= fraction < 1.0:
        raise CnnlabError(f"a held-out fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n = int(round(len(idx) * fraction))
        held.append(idx[:n])
        keep.append(idx[n:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))
