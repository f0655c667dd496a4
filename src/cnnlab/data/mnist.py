"""MNIST and Fashion-MNIST in their IDX files, raw or gzip-compressed."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ..errors import CnnlabError
from .dataset import ImageDataset, check_labels

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
         "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}


def _find(root: Path, stem: str) -> Path:
    for candidate in (root / stem, root / f"{stem}.gz", root / stem.replace("-idx", ".idx")):
        if candidate.exists():
            return candidate
    raise CnnlabError(f"{root / stem}: file not found (nor with .gz)")


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file: magic (0, 0, 0x08 = uint8, ndim), big-endian int32 dims, then the bytes."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise CnnlabError(f"{path}: cannot read ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] != ndim:
        raise CnnlabError(f"{path}: not a uint8 IDX file with {ndim} dimensions")
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4).astype(int)
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise CnnlabError(f"{path}: truncated: header says {tuple(dims)}, found {body.size} bytes of data")
    return body.reshape(tuple(dims))


def is_mnist_dir(root: Path) -> bool:
    return any((root / (FILES["train_x"] + s)).exists() for s in ("", ".gz"))


def load_mnist(root: Path, name: str | None = None) -> ImageDataset:
    name = name or ("fashion-mnist" if "fashion" in str(root).lower() else "mnist")
    classes = FASHION_CLASSES if name == "fashion-mnist" else [str(i) for i in range(10)]
    arrays = {}
    for key, stem in FILES.items():
        path = _find(root, stem)
        arr = read_idx(path, 3 if key.endswith("x") else 1)
        arrays[key] = arr[..., None] if key.endswith("x") else check_labels(arr, 10, str(path))
    for split in ("train", "test"):
        if len(arrays[f"{split}_x"]) != len(arrays[f"{split}_y"]):
            raise CnnlabError(f"{root}: {split} has {len(arrays[f'{split}_x'])} images but "
                              f"{len(arrays[f'{split}_y'])} labels")
    return ImageDataset(name, classes, arrays["train_x"], arrays["train_y"], arrays["test_x"], arrays["test_y"])
