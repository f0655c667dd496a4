"""The in-memory form every loader returns: uint8 images (N, H, W, C) and int64 labels, split in two."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

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
    held_out: bool = False  # the test split was held out of the training images (--holdout): no test/ of its own

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[3])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train_x.shape[1]), int(self.train_x.shape[2])


def printable(text: str) -> str:
    """A name fit for a one-line message: control characters (a newline in a file name) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def reason(exc: BaseException) -> str:
    """An exception as a short clause for a one-line message: its first line, or its type."""
    text = str(exc).strip()
    return printable(text.splitlines()[0]) if text else type(exc).__name__


def check_labels(labels, num_classes: int, source: str) -> np.ndarray:
    """Labels must be integers in [0, num_classes); name the file that broke the rule."""
    try:
        arr = np.asarray(labels)
    except (ValueError, TypeError):  # a ragged or odd object
        arr = np.asarray(None)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise CnnlabError(f"{source}: labels must be a list of integers, got {type(labels).__name__} "
                          f"of {arr.dtype.name} {tuple(arr.shape)}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        bad = int(arr[(arr < 0) | (arr >= num_classes)][0])
        raise CnnlabError(f"{source}: label {bad} is out of range for {num_classes} classes")
    return arr


def validate(ds: ImageDataset, source: str) -> ImageDataset:
    """What every loader returns and the cache serves: uint8 images (N, H, W, 1 or 3), as many int64 labels in
    range as images, a non-empty training split, and test images of the training images' shape."""
    if not isinstance(ds.classes, list) or not ds.classes or not all(isinstance(c, str) for c in ds.classes):
        raise CnnlabError(f"{source}: class names must be a non-empty list of strings")
    for split in ("train", "test"):
        x, y = getattr(ds, f"{split}_x"), getattr(ds, f"{split}_y")
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] not in (1, 3):
            raise CnnlabError(f"{source}: {split} images are {x.dtype} {tuple(x.shape)}, expected uint8 "
                              f"(N, H, W, 1 or 3)")
        if y.dtype != np.int64 or y.ndim != 1 or len(y) != len(x):
            raise CnnlabError(f"{source}: {split} has {len(x)} images but {y.dtype} labels of shape {y.shape}")
        check_labels(y, len(ds.classes), source)
    if len(ds.train_y) == 0:
        raise CnnlabError(f"{source}: no training images")
    if len(ds.test_y) and ds.test_x.shape[1:] != ds.train_x.shape[1:]:
        raise CnnlabError(f"{source}: test images are {ds.test_x.shape[1:]}, training images {ds.train_x.shape[1:]}")
    return ds


def refuse_ignored_holdout(ds: ImageDataset, holdout: float | int, source: str) -> None:
    """A --holdout the user gave for data whose test split is its own (a test/ folder, a built-in test set)
    would be silently ignored: refuse it in one line."""
    if not ds.held_out:
        where = " (test/)" if Path(source).exists() else ""
        raise CnnlabError(f"--holdout {holdout:g}: {source} has a test split of its own{where}, which is what is "
                          f"tested on; --holdout chooses the split of data without one")


def check_holdout(holdout) -> float | int:
    """`--holdout`: a fraction in (0, 1) of each class, or a whole count >= 1 of images per class (returned as
    an int). Anything else (0, negative, 2.5, NaN, a string) is refused in one line."""
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float, np.integer, np.floating)):
        raise CnnlabError(f"--holdout must be a number, got {holdout!r}")
    if not math.isfinite(holdout) or holdout <= 0:
        raise CnnlabError(f"--holdout must be a fraction in (0, 1) or a count of at least 1 image per class, "
                          f"got {holdout}")
    if holdout >= 1:
        if holdout != int(holdout):
            raise CnnlabError(f"--holdout {holdout}: a count of images per class must be a whole number")
        return int(holdout)
    return float(holdout)


def check_trainable(ds: ImageDataset) -> None:
    """Refuse, in one line, a data set no classifier can be trained and tested on: a single class, a class with
    fewer than 2 training images, or an empty test split."""
    if ds.num_classes < 2:
        raise CnnlabError(f"{ds.name}: only one class ({', '.join(ds.classes) or 'none'}); a classifier needs at "
                          f"least 2")
    counts = np.bincount(np.asarray(ds.train_y, dtype=np.int64), minlength=ds.num_classes)
    for cls, n in zip(ds.classes, counts.tolist()):
        if n < 2:
            raise CnnlabError(f"{ds.name}: class '{cls}' has {n} training image{'s' * (n != 1)}; each class needs "
                              f"at least 2")
    if len(ds.test_y) == 0:
        raise CnnlabError(f"{ds.name}: the test split has no test images")


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
