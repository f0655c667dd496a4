"""Decoded images cached as .npy files that later runs memory-map: decode once, load in milliseconds.

A cache entry is a folder written under a temporary name and renamed into place, so an interrupted
write never leaves a half-written entry behind; the key covers the source's path, size and mtime."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from .dataset import ImageDataset

FORMAT_VERSION = 1
_ARRAYS = ("train_x", "train_y", "test_x", "test_y")


def cache_root() -> Path:
    return Path(os.environ.get("CNNLAB_CACHE", Path.home() / ".cache" / "cnnlab")) / "arrays"


def cache_key(source: Path, **options) -> str:
    stat = source.stat()
    newest = stat.st_mtime_ns
    if source.is_dir():  # a folder changes when any file in it does
        newest = max([newest] + [p.stat().st_mtime_ns for p in source.rglob("*")])
    ident = json.dumps([FORMAT_VERSION, str(source.resolve()), stat.st_size, newest, options], sort_keys=True)
    return hashlib.sha256(ident.encode()).hexdigest()[:20]


def cached(source: Path, build: Callable[[], ImageDataset], **options) -> ImageDataset:
    """Return the cached arrays for `source`, building and storing them on the first call."""
    entry = cache_root() / cache_key(source, **options)
    if (entry / "meta.json").exists():
        meta = json.loads((entry / "meta.json").read_text())
        arrays = {k: np.load(entry / f"{k}.npy", mmap_mode="r") for k in _ARRAYS}
        return ImageDataset(meta["name"], meta["classes"], **arrays, default_image_size=meta["default_image_size"],
                            notes=meta["notes"])
    ds = build()
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        for k in _ARRAYS:
            np.save(tmp / f"{k}.npy", np.ascontiguousarray(getattr(ds, k)))
        meta = {"name": ds.name, "classes": ds.classes, "default_image_size": ds.default_image_size,
                "notes": ds.notes, "source": str(source)}
        (tmp / "meta.json").write_text(json.dumps(meta))  # written last: its presence marks a complete entry
        os.replace(tmp, entry)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (entry / "meta.json").exists():  # a concurrent writer may have won the race
            raise
    return ds
