"""Files written so that a kill at any moment leaves either the old file or the new one, never half of
one, and weights that load without unpickling anything (safetensors)."""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import CnnlabError


MAX_SETTINGS_BYTES = 16 << 20  # a YAML or JSON file of settings; /dev/zero or a huge file is no such thing


def read_text_capped(path: Path, limit: int = MAX_SETTINGS_BYTES) -> str:
    """A text file's contents, refused in one line (CnnlabError) when it is over `limit` bytes; reading stops
    there, so an endless file costs nothing; a pipe or socket, which opening would wait on, is refused.
    UnicodeDecodeError and OSError pass to the caller's message."""
    mode = os.stat(path).st_mode
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        raise CnnlabError(f"{path}: a pipe or socket, not a file")
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise CnnlabError(f"{path}: over {limit >> 20} MiB, too large for a file of settings")
    return data.decode("utf-8")


def resolved(path: Path) -> Path:
    """`path` with every link followed; a loop of links is refused in one line."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as exc:  # Python 3.11 raises RuntimeError for a loop
        raise CnnlabError(f"{path}: cannot be followed ({exc})") from None


def check_output(path: Path, option: str = "--out") -> None:
    """An output path must name a regular file or nothing yet: a file written beside it and renamed over it
    would replace a device (/dev/null), a pipe or a folder's place instead of writing through it."""
    path = Path(path)
    if path.exists() and not path.is_file():
        what = "a folder" if path.is_dir() else "not a regular file (a device, pipe or socket)"
        raise CnnlabError(f"{option} {path}: {what}; name a file to write")


def temporary_beside(path: Path, suffix: str = "") -> Path:
    """A new, uniquely named hidden file in `path`'s folder to write before renaming it over `path` (a fixed
    name could be a file of the user's, overwritten and then removed)."""
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    except OSError as exc:  # named as the file asked for, not the temporary one
        raise CnnlabError(f"{path}: cannot write in {path.parent} ({exc.strerror})") from None
    os.close(fd)
    return Path(name)


def publish(tmp: Path, path: Path) -> None:
    """Give the finished temporary file the mode an ordinary new file gets here, make its bytes durable,
    then rename it over `path` (safetensors creates its files 0600; the rest of a run folder is not)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = temporary_beside(path)
    try:
        tmp.write_text(text)
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # after a failed write or rename; after a good one it is gone already


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Tensors to a safetensors file, atomically. Each tensor is copied to the CPU on its own, so that two
    entries that share memory (safetensors refuses those) are saved as two."""
    path = Path(path)
    tmp = temporary_beside(path)
    try:
        save_file({k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}, str(tmp))
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CnnlabError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0]})") from None


def save_weights(model: torch.nn.Module, path: Path) -> None:
    save_tensors(model.state_dict(), path)


def check_values(source: str, key: str, stored: torch.Tensor, held: torch.Tensor) -> None:
    """Refuse in one line stored weights of another kind of number than the model's tensor `held` (integer or
    floating point: an int32 filter would load as truncated values, mostly zeros) or with non-finite values."""
    if stored.is_floating_point() != held.is_floating_point():
        raise CnnlabError(f"{source}: '{key}' is stored as {str(stored.dtype).removeprefix('torch.')}, the model "
                          f"holds {str(held.dtype).removeprefix('torch.')}; the weights are damaged")
    if stored.is_floating_point() and not torch.isfinite(stored).all():
        raise CnnlabError(f"{source}: '{key}' holds NaN or infinite values; the weights are damaged")


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load a weights file into `model`, refusing in one line a file whose keys, shapes or kinds of number
    (integer or floating point) do not fit it, or whose values are not finite (a damaged or tampered file
    would otherwise predict NaN)."""
    path = Path(path)
    if not path.exists():
        raise CnnlabError(f"{path}: weights file not found")
    state = read_tensors(path)
    expected = model.state_dict()
    for key, value in expected.items():
        if key not in state:
            raise CnnlabError(f"{path}: no weights for '{key}' (the model expects shape {tuple(value.shape)})")
        if tuple(state[key].shape) != tuple(value.shape):
            raise CnnlabError(f"{path}: '{key}' has shape {tuple(state[key].shape)}, the model expects "
                              f"{tuple(value.shape)}")
        check_values(str(path), key, state[key], value)
    extra = sorted(set(state) - set(expected))
    if extra:
        raise CnnlabError(f"{path}: '{extra[0]}' is not a weight of this model")
    model.load_state_dict(state)
