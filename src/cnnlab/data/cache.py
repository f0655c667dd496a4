"""Decoded images cached as .npy files that later runs memory-map: decode once, load in milliseconds.

The cache lives in `$CNNLAB_CACHE/arrays` (default `~/.cache/cnnlab/arrays`). An entry's key covers the
loading options and what the source holds: for an archive, the SHA-256 of its bytes; for a folder, a
manifest of every image file's path, size, mtime_ns, ctime_ns, inode and device (ctime changes on every
write and cannot be set back, so `cp -p` or a restored mtime still changes the key) and of its folders.

An entry is written into a hidden temporary folder named after its writer (`.KEY.HOST.PID.XXXX.tmp`) and
renamed into place, so an interrupted write never leaves a half-written entry; the temporary folders of
writers that died are removed at the next write. An entry read back is checked (meta.json, array files,
dtypes, shapes, labels in range) and so are its bytes: meta.json holds its key and the SHA-256 of every array
file and of its own other fields, so a changed pixel or label, a reordered class list or another entry's files
moved in are found (sorting damage from deliberate edits is not the point: whoever can write the cache can
write those too). A damaged entry is rebuilt from the source with a warning. A cache folder
that cannot be written (a file, read-only, a full disk) costs a warning, not the run.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import CnnlabError
from ..runtime.files import read_text_capped
from .dataset import ImageDataset, printable, reason, validate
from .download import digest
from .folder import walk_folder

FORMAT_VERSION = 6  # part of every key: raised whenever decoding changes, so older decodings are not served
_ARRAYS = ("train_x", "train_y", "test_x", "test_y")
_HOST = socket.gethostname()
_TEMP = re.compile(r"^\.[0-9a-f]{20}\.(?P<host>.+)\.(?P<pid>\d+)\.[^.]+\.tmp$")
_KEY = re.compile(r"^[0-9a-f]{20}$")
_FILES = ("meta.json", *(f"{k}.npy" for k in _ARRAYS))


def cache_root() -> Path:
    return Path(os.environ.get("CNNLAB_CACHE") or Path.home() / ".cache" / "cnnlab").expanduser() / "arrays"


def _stat(path: Path) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:  # a broken link: decoding will name it
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def cache_key(source: Path, **options) -> str:
    if source.is_dir():
        folders, files = walk_folder(source)
        content = [folders, [[name, _stat(path)] for name, path in files.items()]]
    else:
        content = digest(source, "sha256")
    ident = json.dumps([FORMAT_VERSION, str(source.resolve()), content, options], sort_keys=True)
    return hashlib.sha256(ident.encode()).hexdigest()[:20]


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _read_meta(entry: Path) -> dict:
    """meta.json, once every file of the entry is known to be a regular file, not a link (a pipe would be
    waited on; cnnlab writes no links) and read up to a cap (a huge one would fill the memory)."""
    for name in _FILES:
        if not (entry / name).is_file() or (entry / name).is_symlink():
            raise CnnlabError(f"{name} is missing, a link or not a regular file")
    return json.loads(read_text_capped(entry / "meta.json"))


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _sealed(meta: dict) -> dict:
    """`meta` with the SHA-256 of its own fields added as `seal`."""
    return {**meta, "seal": hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()}


def _check_bytes(entry: Path, meta: dict) -> None:
    """That the entry's files are those written under its key: meta.json unchanged, each array file too."""
    fields = {k: v for k, v in meta.items() if k != "seal"}
    if meta.get("seal") != _sealed(fields)["seal"]:
        raise CnnlabError("meta.json does not match its seal (edited or damaged)")
    if meta.get("key") != entry.name:
        raise CnnlabError(f"meta.json is that of entry {printable(str(meta.get('key')))[:40]}")
    sums = meta.get("sha256")
    for k in _ARRAYS:
        if not isinstance(sums, dict) or sums.get(k) != _sha256(entry / f"{k}.npy"):
            raise CnnlabError(f"{k}.npy does not match its SHA-256 in meta.json (changed or damaged)")


def _read(entry: Path) -> ImageDataset:
    """The entry's arrays, memory-mapped, after checking everything a damaged or tampered entry could break."""
    meta = _read_meta(entry)
    if not isinstance(meta, dict):
        raise CnnlabError("meta.json is not an object")
    _check_bytes(entry, meta)
    if not isinstance(meta.get("name"), str) or not isinstance(meta.get("notes"), list) \
            or not isinstance(meta.get("held_out"), bool):
        raise CnnlabError("meta.json lacks name, classes, notes or held_out")
    size = meta.get("default_image_size")
    if size is not None and (not isinstance(size, int) or size < 1):
        raise CnnlabError(f"meta.json: default_image_size {size!r}")
    arrays = {k: np.load(entry / f"{k}.npy", mmap_mode="r", allow_pickle=False) for k in _ARRAYS}
    ds = ImageDataset(meta["name"], meta.get("classes"), **arrays, default_image_size=size,
                      notes=[str(n) for n in meta["notes"]], held_out=meta["held_out"])
    return validate(ds, "the entry")


def _temporary(entry: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix=f".{entry.name}.{_HOST}.{os.getpid()}.", suffix=".tmp", dir=entry.parent))


def _remove(entry: Path) -> None:
    """Move aside (atomic), then delete: a reader never sees a half-deleted entry."""
    try:
        trash = _temporary(entry)
        os.replace(entry, trash / entry.name)
    except OSError:
        trash = entry
    shutil.rmtree(trash, ignore_errors=True)


def _writer_alive(name: str) -> bool:
    """Whether the temporary folder `name` belongs to a live process, or may (another host's). Folders named
    otherwise (left by older versions) have no live writer."""
    m = _TEMP.match(name)
    if m is None:
        return False
    if m["host"] != _HOST:
        return True
    try:
        os.kill(int(m["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def clean_stale(root: Path | None = None) -> int:
    """Remove the temporary folders of writers on this host that died (killed mid-write); returns how many."""
    root = root or cache_root()
    stale = [p for p in root.iterdir() if _TEMP.match(p.name) and not _writer_alive(p.name)] if root.is_dir() else []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return len(stale)


def _write(entry: Path, ds: ImageDataset, source: Path) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(entry.parent)
    tmp = _temporary(entry)
    try:
        for k in _ARRAYS:
            np.save(tmp / f"{k}.npy", np.ascontiguousarray(getattr(ds, k)))
        meta = {"name": ds.name, "classes": ds.classes, "default_image_size": ds.default_image_size,
                "notes": ds.notes, "held_out": ds.held_out, "source": str(source), "key": entry.name,
                "sha256": {k: _sha256(tmp / f"{k}.npy") for k in _ARRAYS}}
        (tmp / "meta.json").write_text(json.dumps(_sealed(meta)))  # written last: its presence marks a complete entry
        os.replace(tmp, entry)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (entry / "meta.json").exists():  # a concurrent writer may have won the race
            raise


def cached(source: Path, build: Callable[[], ImageDataset], **options) -> ImageDataset:
    """Return the cached arrays for `source`, building and storing them on the first call."""
    entry = cache_root() / cache_key(source, **options)
    if entry.is_dir():
        try:
            return _read(entry)
        except (OSError, ValueError, TypeError, KeyError) as exc:  # CnnlabError and JSON errors are ValueErrors
            _warn(f"cache entry {entry} is damaged ({reason(exc)}); it is rebuilt from {source}")
            _remove(entry)
    ds = build()
    try:
        _write(entry, ds, source)
    except OSError as exc:
        _warn(f"cannot write the cache in {entry.parent} ({reason(exc)}); continuing without the cache "
              f"(set CNNLAB_CACHE to a writable folder)")
    return ds


def _size(folder: Path) -> int:
    """The bytes of the files below `folder`, links not followed (one could lead anywhere)."""
    return sum(os.lstat(os.path.join(top, name)).st_size for top, _, names in os.walk(folder) for name in names)


def _entry_info(path: Path) -> dict:
    info = {"key": path.name, "path": str(path), "bytes": _size(path)}
    if path.name.startswith("."):
        return {**info, "kind": "temporary", "writer_alive": _writer_alive(path.name)}
    try:
        meta = _read_meta(path)
        images = sum(len(np.load(path / f"{k}.npy", mmap_mode="r", allow_pickle=False)) for k in ("train_y", "test_y"))
        return {**info, "kind": "entry", "source": meta["source"], "name": meta["name"],
                "classes": len(meta["classes"]), "images": images}
    except (OSError, ValueError, TypeError, KeyError) as exc:  # CnnlabError is a ValueError
        return {**info, "kind": "damaged", "problem": reason(exc)}


def list_entries(root: Path | None = None) -> list[dict]:
    """Every entry (source, images, classes, bytes), damaged entry and temporary folder in the cache: the
    folders named as cnnlab names them, not links; anything else there is not the cache's to list or remove."""
    root = root or cache_root()
    if not root.is_dir():
        return []
    return [_entry_info(p) for p in sorted(root.iterdir())
            if (_KEY.match(p.name) or _TEMP.match(p.name)) and p.is_dir() and not p.is_symlink()]


def clear(root: Path | None = None) -> tuple[int, int]:
    """Remove every entry and every temporary folder not being written by a live process; (count, bytes)."""
    removed = [e for e in list_entries(root) if e["kind"] != "temporary" or not e["writer_alive"]]
    for e in removed:
        shutil.rmtree(e["path"], ignore_errors=True)
    return len(removed), sum(e["bytes"] for e in removed)
