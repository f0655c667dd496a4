"""Checkpoints that survive a kill at any moment and load without unpickling.

Layout inside the run folder:
    checkpoints/step-000000120-1/{model.safetensors, tensors.safetensors, state.json}
    checkpoints/latest       (a one-line file naming the newest complete checkpoint folder)
Each checkpoint is written to a folder of a name never used before in the run (two checkpoints at one step
get two), then `latest` is replaced atomically, then older folders are removed: until the rename the
previous checkpoint stays the current one, and no write ever touches it. Tensors (weights, optimiser
buffers, RNG states) go to safetensors; everything else (step counters, scheduler state) to JSON.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from ..errors import CnnlabError
from ..runtime.files import atomic_write_text, load_weights, read_tensors, read_text_capped, save_tensors, save_weights


def split_tensors(obj: Any, tensors: dict[str, torch.Tensor], path: str = "t") -> Any:
    """Replace every tensor in a nested dict/list by {"__tensor__": key}, collecting it in `tensors`."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().contiguous()
        return {"__tensor__": path}
    if isinstance(obj, dict):
        return {"__dict__": [[split_tensors(k, tensors, f"{path}.k{i}"), split_tensors(v, tensors, f"{path}.{i}")]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, (list, tuple)):
        return [split_tensors(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]
    return obj


def join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        return {join_tensors(k, tensors): join_tensors(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [join_tensors(v, tensors) for v in obj]
    return obj


def save_checkpoint(run_dir: Path, step: int, model: torch.nn.Module, state: dict) -> Path:
    """Write a complete checkpoint of `model` plus `state` (any nesting of tensors and JSON values)."""
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    serial = 1 + max((_serial(f.name) for f in root.glob("step-*")), default=0)
    folder = root / f"step-{step:09d}-{serial}"
    folder.mkdir()
    save_weights(model, folder / "model.safetensors")
    tensors: dict[str, torch.Tensor] = {}
    skeleton = split_tensors(state, tensors)
    save_tensors(tensors, folder / "tensors.safetensors")
    atomic_write_text(folder / "state.json", json.dumps(skeleton))
    atomic_write_text(root / "latest", folder.name)
    for old in root.glob("step-*"):  # the previous checkpoint and any left half-written by a killed run
        if old != folder:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def _serial(name: str) -> int:
    tail = name.rsplit("-", 1)[-1]
    return int(tail) if name.count("-") >= 2 and tail.isdecimal() else 0


def _current(root: Path) -> str | None:
    latest = root / "latest"
    try:
        return read_text_capped(latest).strip() if latest.is_file() else None
    except (UnicodeDecodeError, OSError) as exc:
        raise CnnlabError(f"{latest}: unreadable ({exc.__class__.__name__}); it should name a checkpoint "
                          f"folder") from None


def check_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Raise ValueError unless `saved`, an optimiser state from a checkpoint, is `optimizer`'s kind: groups
    with the same settings and parameter counts, and each parameter's buffers of its shape (a scalar only as
    a step count). torch's own load takes another optimiser's state and fails steps later."""
    groups, state = saved.get("param_groups"), saved.get("state")
    if not isinstance(groups, list) or not isinstance(state, dict) or len(groups) != len(optimizer.param_groups):
        raise ValueError("not this optimiser's parameter groups")
    params = {}
    for old, new in zip(groups, optimizer.param_groups):
        if not isinstance(old, dict) or set(old) != set(new) or len(old["params"]) != len(new["params"]):
            raise ValueError(f"a parameter group with the settings {sorted(old)[:6]}, not {sorted(new)[:6]}")
        params.update(zip(old["params"], new["params"]))
    for index, buffers in state.items():
        if index not in params or not isinstance(buffers, dict):
            raise ValueError(f"a state for parameter {str(index)[:20]}, which the optimiser does not have")
        for key, value in buffers.items():
            scalar_step = key == "step" and isinstance(value, torch.Tensor) and value.dim() == 0
            if isinstance(value, torch.Tensor) and not scalar_step and value.shape != params[index].shape:
                raise ValueError(f"'{key}' of shape {tuple(value.shape)} for a parameter of shape "
                                 f"{tuple(params[index].shape)}")


def load_checkpoint(run_dir: Path, model: torch.nn.Module) -> dict:
    """Load the newest complete checkpoint into `model`; return its state. A damaged checkpoint is refused
    in one line naming the file."""
    root = run_dir / "checkpoints"
    name = _current(root)
    if not name:
        raise CnnlabError(f"{run_dir}: no checkpoint to resume from")
    folder = root / name
    if "/" in name or name.startswith(".") or not folder.is_dir():
        raise CnnlabError(f"{root / 'latest'}: names '{name[:60]}', which is not a checkpoint folder of this run")
    load_weights(model, folder / "model.safetensors")
    tensors = read_tensors(folder / "tensors.safetensors")
    try:
        return join_tensors(json.loads(read_text_capped(folder / "state.json")), tensors)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CnnlabError(f"{folder / 'state.json'}: damaged checkpoint state ({exc})") from None
