"""Checkpoints that survive a kill at any moment and load without unpickling.

Layout inside the run folder:
    checkpoints/step-000120/{model.safetensors, tensors.safetensors, state.json}
    checkpoints/latest       (a one-line file naming the newest complete checkpoint folder)
Each checkpoint is written to a fresh folder, then `latest` is replaced atomically, then older folders
are removed: until the rename the previous checkpoint stays the current one. Tensors (weights, optimiser
buffers, RNG states) go to safetensors; everything else (step counters, scheduler state) to JSON.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..errors import CnnlabError


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_weights(model: torch.nn.Module, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, path)


def load_weights(model: torch.nn.Module, path: Path) -> None:
    if not path.exists():
        raise CnnlabError(f"{path}: weights file not found")
    try:
        model.load_state_dict(load_file(str(path)))
    except Exception as exc:  # noqa: BLE001
        raise CnnlabError(f"{path}: cannot load weights ({str(exc).splitlines()[0]})") from None


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
    folder = root / f"step-{step:09d}"
    if folder.exists():  # left by a run killed while writing it: never current, safe to replace
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    save_weights(model, folder / "model.safetensors")
    tensors: dict[str, torch.Tensor] = {}
    skeleton = split_tensors(state, tensors)
    save_file(tensors, str(folder / "tensors.safetensors"))
    (folder / "state.json").write_text(json.dumps(skeleton))
    for f in folder.iterdir():  # make the bytes durable before pointing at them
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    atomic_write_text(root / "latest", folder.name)
    for old in root.glob("step-*"):
        if old != folder:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def load_checkpoint(run_dir: Path, model: torch.nn.Module) -> dict:
    """Load the newest complete checkpoint into `model`; return its state."""
    latest = run_dir / "checkpoints" / "latest"
    if not latest.exists():
        raise CnnlabError(f"{run_dir}: no checkpoint to resume from")
    folder = latest.parent / latest.read_text().strip()
    load_weights(model, folder / "model.safetensors")
    tensors = load_file(str(folder / "tensors.safetensors"))
    return join_tensors(json.loads((folder / "state.json").read_text()), tensors)
