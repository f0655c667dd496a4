"""A search space in YAML, over `models/builder.py`'s switches and the training hyperparameters.

Each key takes a list (a categorical choice), a mapping {min, max[, log]} (an integer range if both ends
are integers, else a float range), or a single value (fixed):

    stages: {min: 2, max: 4}        # number of stages; the per-stage keys below exist only for stages drawn
    blocks: [1, 2]                  # per stage
    width: [16, 32, 64]             # per stage
    kernel: [3, 5, 7]               # per stage
    downsample: [pool, stride]
    padding: [same, valid]          # valid: no zero padding, each conv shrinks the map by kernel - 1
    skip: [true, false]
    bn: [true, false]
    activation: [relu, gelu]
    group: [none, p4]               # equivariant layers on or off: invariance to 90-degree turns (p4m: and mirrors)
    head: [gap, fc]
    fc_layers: {min: 1, max: 3}     # only when head is fc
    fc_width: [64, 128, 256]        # per fc layer
    lr: {min: 0.01, max: 0.3, log: true}
    weight_decay: {min: 1.0e-5, max: 1.0e-3, log: true}
    batch_size: [64, 128]
"""
from __future__ import annotations

from pathlib import Path

import yaml

from ..errors import CnnlabError

ARCH_KEYS = ("stages", "blocks", "width", "kernel", "downsample", "padding", "skip", "bn", "activation", "group",
             "head", "fc_layers", "fc_width")
TRAIN_KEYS = ("lr", "weight_decay", "batch_size", "label_smoothing")
READY = Path(__file__).with_name("spaces")


def load_space(name_or_path: str) -> dict:
    """A ready space by name (vgg-like, resnet-like, mixed) or a YAML file."""
    path = READY / f"{name_or_path}.yaml" if (READY / f"{name_or_path}.yaml").exists() else Path(name_or_path)
    if not path.exists():
        ready = ", ".join(sorted(p.stem for p in READY.glob("*.yaml")))
        raise CnnlabError(f"--space {name_or_path}: no such file, nor a ready space ({ready})")
    try:
        space = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CnnlabError(f"--space {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(space, dict):
        raise CnnlabError(f"--space {path}: expected a mapping of choices")
    unknown = set(space) - set(ARCH_KEYS) - set(TRAIN_KEYS)
    if unknown:
        raise CnnlabError(f"--space {path}: unknown key '{sorted(unknown)[0]}'; known: "
                          f"{', '.join(ARCH_KEYS + TRAIN_KEYS)}")
    for key, spec in space.items():
        _check(path, key, spec)
    return space


def _check(path, key: str, spec) -> None:
    if isinstance(spec, list) and not spec:
        raise CnnlabError(f"--space {path}: '{key}' lists no choices")
    if isinstance(spec, dict) and (set(spec) - {"min", "max", "log"} or not {"min", "max"} <= set(spec)
                                   or spec["min"] > spec["max"]):
        raise CnnlabError(f"--space {path}: '{key}' must be a list, a value, or {{min, max[, log]}} with "
                          f"min <= max; got {spec}")


def _suggest(trial, name: str, spec, default=None):
    if spec is None:
        return default
    if isinstance(spec, list):
        return trial.suggest_categorical(name, spec)
    if isinstance(spec, dict):
        lo, hi = spec["min"], spec["max"]
        if isinstance(lo, int) and isinstance(hi, int):
            return trial.suggest_int(name, lo, hi, log=bool(spec.get("log", False)))
        return trial.suggest_float(name, float(lo), float(hi), log=bool(spec.get("log", False)))
    return spec


def sample(trial, space: dict) -> tuple[dict, dict]:
    """Draw (arch for the `cnn` model, training settings) from `space` through an Optuna trial."""
    n_stages = _suggest(trial, "stages", space.get("stages"), 2)
    stages = [{"blocks": _suggest(trial, f"stage{i}_blocks", space.get("blocks"), 1),
               "width": _suggest(trial, f"stage{i}_width", space.get("width"), 32 * 2 ** i),
               "kernel": _suggest(trial, f"stage{i}_kernel", space.get("kernel"), 3)} for i in range(n_stages)]
    head = _suggest(trial, "head", space.get("head"), "gap")
    arch = {"stages": stages, "downsample": _suggest(trial, "downsample", space.get("downsample"), "pool"),
            "padding": _suggest(trial, "padding", space.get("padding"), "same"),
            "skip": _suggest(trial, "skip", space.get("skip"), True), "bn": _suggest(trial, "bn", space.get("bn"), True),
            "activation": _suggest(trial, "activation", space.get("activation"), "relu"), "head": {"type": head},
            "group": _suggest(trial, "group", space.get("group"), "none")}
    if head == "fc":
        layers = _suggest(trial, "fc_layers", space.get("fc_layers"), 1)
        arch["head"]["widths"] = [_suggest(trial, f"fc{i}_width", space.get("fc_width"), 128) for i in range(layers)]
    train = {k: _suggest(trial, k, space[k]) for k in TRAIN_KEYS if k in space}
    return arch, train
