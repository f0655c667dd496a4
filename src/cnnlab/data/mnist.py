"""MNIST and Fashion-MNIST in their IDX files, raw or gzip-compressed."""
from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import CnnlabError
from . import limits
from .dataset import ImageDataset, check_labels, reason

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
    """An IDX file: magic (0, 0, 0x08 = uint8, ndim), big-endian int32 dims, then the bytes. The dims are checked
    (none negative, their product within the cap on one decompressed file) before the body is read."""
    header = 4 + 4 * ndim
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            head = f.read(header)
            if len(head) < 4 or head[:3] != b"\0\0\x08" or head[3] != ndim:
                raise CnnlabError(f"{path}: not a uint8 IDX file with {ndim} dimensions")
            if len(head) < header:
                raise CnnlabError(f"{path}: header ends after {len(head)} bytes, before its {ndim} dimensions")
            dims = struct.unpack(f">{ndim}i", head[4:])
            if min(dims) < 0:
                raise CnnlabError(f"{path}: negative dimension in the header {dims}")
            size = math.prod(dims)
            cap = limits.limit(limits.TOTAL)
            if path.suffix != ".gz" and path.stat().st_size - header != size:
                found = path.stat().st_size - header
                raise CnnlabError(f"{path}: {'truncated' if found < size else 'extra bytes'}: header says {dims}, "
                                  f"found {found} bytes of data")
            if size > cap:
                raise limits.over(f"{path}: the data its header declares {dims}", size, limits.TOTAL)
            body = f.read(size + 1)
    except CnnlabError:
        raise
    except (OSError, EOFError, zlib.error) as exc:
        raise CnnlabError(f"{path}: cannot read ({reason(exc)})") from None
    if len(body) != size:
        raise CnnlabError(f"{path}: {'truncated' if len(body) < size else 'extra bytes'}: header says {dims}, "
                          f"found {len(body)}{'+' * (len(body) > size)} bytes of data")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


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
