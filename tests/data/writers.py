"""Small files in each supported format, written by the tests themselves."""
from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def write_cifar10(root: Path, n_train: int = 20, n_test: int = 10, labels_max: int = 9) -> np.ndarray:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    data = rng.integers(0, 256, (n_train * 5 + n_test, 3072), dtype=np.uint8)
    labels = rng.integers(0, labels_max + 1, len(data)).tolist()
    for i in range(5):
        s = slice(i * n_train, (i + 1) * n_train)
        _dump(root / f"data_batch_{i + 1}", {b"data": data[s], b"labels": labels[s]})
    _dump(root / "test_batch", {b"data": data[5 * n_train:], b"labels": labels[5 * n_train:]})
    _dump(root / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    return data


def write_cifar100(root: Path, n: int = 30) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        _dump(root / split, {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                             b"fine_labels": rng.integers(0, 100, n).tolist()})
    _dump(root / "meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)]})


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def idx_bytes(array: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes()


def write_mnist(root: Path, gz: bool, n: int = 30, bad_label: bool = False) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for prefix in ("train", "t10k"):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        if bad_label and prefix == "train":
            labels[3] = 12
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            raw = idx_bytes(arr)
            name = f"{prefix}-{kind}-ubyte"
            (root / (name + ".gz" if gz else name)).write_bytes(gzip.compress(raw) if gz else raw)


def write_folder(root: Path, classes=("cat", "dog", "fox"), per_class: int = 6, size: int = 12,
                 splits=("",), mode: str = "RGB", ext: str = "png") -> None:
    rng = np.random.default_rng(0)
    for split in splits:
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                shape = (size, size, 3) if mode == "RGB" else (size, size)
                Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(d / f"{i:04d}.{ext}")


def image_bytes(array: np.ndarray, fmt: str = "PNG", mode: str | None = None, **save) -> bytes:
    buf = io.BytesIO()
    (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(buf, fmt, **save)
    return buf.getvalue()


def write_tar(archive: Path, members: dict[str, bytes], mode: str = "w") -> Path:
    """An archive whose member names are exactly the keys (hostile names included)."""
    with tarfile.open(archive, mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return archive


def class_members(classes=("a", "b", "c"), per_class: int = 8, size: int = 8, prefix: str = "") -> dict[str, bytes]:
    """{prefix<class>/NNNN.png: PNG bytes}, each class a distinct grey level."""
    return {f"{prefix}{c}/{i:04d}.png": image_bytes(np.full((size, size), 40 * k + i, np.uint8))
            for k, c in enumerate(classes) for i in range(per_class)}


def png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (a decompression bomb's header)."""
    raw = bytearray(image_bytes(np.zeros((1, 1), np.uint8)))
    ihdr = raw.index(b"IHDR")
    raw[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    raw[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(raw[ihdr:ihdr + 17])))
    return bytes(raw)
