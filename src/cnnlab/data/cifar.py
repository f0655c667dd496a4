"""CIFAR-10 and CIFAR-100 in their "python version" batches (pickled dicts of uint8 rows).

The batches are pickles, so they are read with an unpickler that accepts only NumPy arrays and plain
containers: a tampered file cannot run code."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ..errors import CnnlabError
from .dataset import ImageDataset, check_labels, reason

_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}
_ROW = 3 * 32 * 32


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"forbidden object {module}.{name}")
        return super().find_class(module, name)


def _read_batch(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            raw = _SafeUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise CnnlabError(f"{path}: file not found") from None
    except Exception as exc:  # noqa: BLE001 - any corruption is the user's file, not our bug
        raise CnnlabError(f"{path}: not a readable CIFAR batch ({reason(exc)})") from None
    if not isinstance(raw, dict):
        raise CnnlabError(f"{path}: not a CIFAR batch (a pickled {type(raw).__name__}, expected a dict)")
    return {(k.decode(errors="replace") if isinstance(k, bytes) else k): v for k, v in raw.items()}


def _images(batch: dict, path: Path) -> np.ndarray:
    """The batch's rows as (N, 32, 32, 3) uint8, after checking what the pickle declares against the file: a
    list that repeats one row many times is refused before an array is built from it."""
    data = batch.get("data")
    if isinstance(data, (list, tuple)):
        size = path.stat().st_size
        if len(data) * _ROW > size:
            raise CnnlabError(f"{path}: 'data' declares {len(data)} rows of {_ROW} bytes in a file of {size} bytes "
                              f"(rows repeated by reference); refusing to build it")
    elif not isinstance(data, np.ndarray):
        raise CnnlabError(f"{path}: 'data' is {type(data).__name__}, expected an array of uint8 rows")
    try:
        data = np.asarray(data)
    except (ValueError, TypeError) as exc:
        raise CnnlabError(f"{path}: 'data' is not an array of rows ({reason(exc)})") from None
    if data.dtype.kind not in "ui":
        raise CnnlabError(f"{path}: 'data' holds {data.dtype.name} values, expected uint8 pixels")
    if data.ndim != 2 or data.shape[1] != _ROW:
        raise CnnlabError(f"{path}: expected rows of 3072 bytes (3x32x32), got shape {data.shape}")
    if data.dtype != np.uint8 and data.size and (data.min() < 0 or data.max() > 255):
        raise CnnlabError(f"{path}: pixel values must lie in 0..255, found {data.min()}..{data.max()}")
    return data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()


def _class_names(path: Path, key: str) -> list[str]:
    names = _read_batch(path).get(key)
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(c, (bytes, str)) for c in names):
        raise CnnlabError(f"{path}: no {key} (a list of class names)")
    return [c.decode(errors="replace") if isinstance(c, bytes) else c for c in names]


def is_cifar_dir(root: Path) -> bool:
    return (root / "data_batch_1").exists() or ((root / "train").is_file() and (root / "meta").exists())


def load_cifar(root: Path) -> ImageDataset:
    if (root / "data_batch_1").exists():
        files, key, meta_file, names_key, name = [f"data_batch_{i}" for i in range(1, 6)], "labels", \
            "batches.meta", "label_names", "cifar10"
    else:
        files, key, meta_file, names_key, name = ["train"], "fine_labels", "meta", "fine_label_names", "cifar100"
    classes = _class_names(root / meta_file, names_key)

    def read(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for n in names:
            b = _read_batch(root / n)
            x = _images(b, root / n)
            y = check_labels(b.get(key, []), len(classes), str(root / n))
            if len(y) != len(x):
                raise CnnlabError(f"{root / n}: {len(x)} images but {len(y)} labels")
            xs.append(x), ys.append(y)
        return np.concatenate(xs), np.concatenate(ys)

    train_x, train_y = read(files)
    test_x, test_y = read(["test_batch" if name == "cifar10" else "test"])
    return ImageDataset(name, classes, train_x, train_y, test_x, test_y)
