"""A folder of class subfolders of PNG/JPEG images, on disk or inside a .tar.gz, read without unpacking.

Layouts: `root/train/<class>/*` with an optional `root/test/<class>/*`, or `root/<class>/*`. Leading
folders with a single child (as archives often have) are skipped. Without a test split, the last
`holdout` images of each class (by file name) are held out as the test split.
"""
from __future__ import annotations

import io
import os
import tarfile
from collections import defaultdict
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import CnnlabError
from .dataset import ImageDataset

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith((".tar.gz", ".tgz", ".tar"))


def _list_files(path: Path) -> dict[str, bytes | Path]:
    """Relative POSIX path -> bytes (archive member) or Path (file on disk), images only."""
    files: dict[str, bytes | Path] = {}
    if is_archive(path):
        try:
            with tarfile.open(path, "r:*") as tar:
                for member in tar:
                    if member.isfile() and PurePosixPath(member.name).suffix.lower() in IMAGE_EXTENSIONS:
                        files[member.name.lstrip("./")] = tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise CnnlabError(f"{path}: not a readable tar archive ({exc})") from None
        return files
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for f in filenames:
            if Path(f).suffix.lower() in IMAGE_EXTENSIONS:
                full = Path(dirpath) / f
                files[full.relative_to(path).as_posix()] = full
    return files


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _layout(path: Path, files: dict[str, bytes | Path]) -> dict[str, dict[str, list[str]]]:
    """{'train': {class: [relpaths]}, 'test': {...}}. Also sees empty class folders on disk."""
    parts = [PurePosixPath(f).parts for f in files]
    prefix: tuple[str, ...] = ()
    while parts and all(len(p) > len(prefix) + 2 for p in parts) and len({p[len(prefix)] for p in parts}) == 1:
        prefix += (parts[0][len(prefix)],)
    top = {p[len(prefix)] for p in parts}
    split_names = {"train", "test"} if {"train", "test"} <= top or top == {"train"} else set()
    tree: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for f, p in zip(files, parts):
        rest = p[len(prefix):]
        split, rest = (rest[0], rest[1:]) if split_names else ("train", rest)
        if split in ("train", "test") and len(rest) >= 2:
            tree[split][rest[0]].append(f)
    if path.is_dir():  # an empty class folder is a mistake worth naming
        base = path.joinpath(*prefix)
        for split in sorted(split_names) or [""]:
            d = base / split if split else base
            for cls in _class_dirs(d) if d.is_dir() else []:
                if cls.name not in tree[split or "train"]:
                    raise CnnlabError(f"{cls}: class folder holds no images")
    if not tree.get("train"):
        raise CnnlabError(f"{path}: no class folders of images found (expected <class>/<image>.png or "
                          f"train/<class>/...)")
    return tree


def _decode(name: str, src: bytes | Path, size: int | None) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(src) if isinstance(src, bytes) else src) as im:
            im.load()  # decodes now, so a truncated file fails here
            im = im.convert("L") if im.mode in ("1", "L", "I", "I;16", "F") else im.convert("RGB")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise _BadImage(f"{name}: not a readable image ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")


class _BadImage(Exception):
    pass


def load_folder(path: Path, holdout: float = 0.2, image_size: int | None = None,
                skip_bad: bool = False) -> ImageDataset:
    """Decode every image. `holdout` is a fraction per class (<1) or a count per class (>=1)."""
    files = _list_files(path)
    tree = _layout(path, files)
    classes = sorted(tree["train"])
    unknown = sorted(set(tree.get("test", {})) - set(classes))
    if unknown:
        raise CnnlabError(f"{path}: test class '{unknown[0]}' has no train folder")
    skipped = 0
    arrays: dict[str, list] = {"train": [], "test": []}
    for split in ("train", "test"):
        for label, cls in enumerate(classes):
            for name in sorted(tree.get(split, {}).get(cls, [])):
                display = str(files[name]) if isinstance(files[name], Path) else f"{path}:{name}"
                try:
                    arrays[split].append((_decode(display, files[name], image_size), label, display))
                except _BadImage as exc:
                    if not skip_bad:
                        raise CnnlabError(f"{exc} (pass --skip-bad to skip such files)") from None
                    skipped += 1
    x_train, y_train = _stack(arrays["train"])
    if arrays["test"]:
        x_test, y_test = _stack(arrays["test"])
    else:
        x_train, y_train, x_test, y_test = _hold_out(x_train, y_train, holdout, path)
    notes = [f"skipped {skipped} unreadable image{'s' * (skipped != 1)}"] if skipped else []
    return ImageDataset(path.name.split(".")[0], classes, x_train, y_train, x_test, y_test, notes=notes)


def _stack(items: list[tuple[np.ndarray, int, str]]) -> tuple[np.ndarray, np.ndarray]:
    if not items:
        raise CnnlabError("no readable images found")
    first_shape = items[0][0].shape[:2]
    for img, _, name in items:
        if img.shape[:2] != first_shape:
            raise CnnlabError(f"{name} is {img.shape[1]}x{img.shape[0]} but {items[0][2]} is "
                              f"{first_shape[1]}x{first_shape[0]}; pass --image-size N to resize all images")
    rgb = any(img.ndim == 3 for img, _, _ in items)
    imgs = [np.repeat(i[..., None], 3, axis=2) if rgb and i.ndim == 2 else (i if i.ndim == 3 else i[..., None])
            for i, _, _ in items]
    return np.stack(imgs), np.array([lab for _, lab, _ in items], dtype=np.int64)


def _hold_out(x: np.ndarray, y: np.ndarray, holdout: float, path: Path):
    """The last images of each class (in file-name order) become the test split."""
    test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        n = int(holdout) if holdout >= 1 else int(round(len(idx) * holdout))
        if n >= len(idx):
            raise CnnlabError(f"{path}: holding out {n} images per class leaves none to train on "
                              f"(class {c} has {len(idx)})")
        test[idx[len(idx) - n:]] = True
    return x[~test], y[~test], x[test], y[test]
