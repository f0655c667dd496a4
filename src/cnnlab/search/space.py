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

import math
from pathlib import Path

import yaml

from ..errors import CnnlabError
from ..models.builder import MAX_BLOCKS, MAX_FC_WIDTH, MAX_KERNEL, MAX_STAGES, MAX_WIDTH
from ..models.equivariant import GROUPS
from ..models.layers import ACTIVATIONS
from ..runtime.files import read_text_capped
from ..runtime.yaml_text import load_yaml

ARCH_KEYS = ("stages", "blocks", "width", "kernel", "downsample", "padding", "skip", "bn", "activation", "group",
             "head", "fc_layers", "fc_width")
TRAIN_KEYS = ("lr", "weight_decay", "batch_size", "label_smoothing")
READY = Path(__file__).with_name("spaces")


def _whole(lo: int, hi: float = math.inf, odd: bool = False):
    def ok(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi and (not odd or v % 2 == 1)
    return ok


def _number(lo: float, hi: float = math.inf, above: bool = False):
    def ok(v) -> bool:
        return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                and (v > lo if above else v >= lo) and v < hi)
    return ok


def _one_of(*allowed):
    return lambda v: isinstance(v, (str, bool)) and v in allowed


# each key: what its values must be (in words), the check, and the kind of {min, max} range it takes (None: none)
VALUES = {
    # the upper bounds: past them the model could not be built, or each draw would take minutes to check
    "stages": (f"a whole number from 1 to {MAX_STAGES}", _whole(1, MAX_STAGES), int),
    "blocks": (f"a whole number from 1 to {MAX_BLOCKS}", _whole(1, MAX_BLOCKS), int),
    "width": (f"a whole number from 1 to {MAX_WIDTH}", _whole(1, MAX_WIDTH), int),
    "kernel": (f"an odd whole number from 1 to {MAX_KERNEL}", _whole(1, MAX_KERNEL, odd=True), None),
    "downsample": ("pool or stride", _one_of("pool", "stride"), None),
    "padding": ("same or valid", _one_of("same", "valid"), None),
    "skip": ("true or false", _one_of(True, False), None),
    "bn": ("true or false", _one_of(True, False), None),
    "activation": (" or ".join(ACTIVATIONS), _one_of(*ACTIVATIONS), None),
    "group": (" or ".join(("none", *GROUPS)), _one_of("none", *GROUPS), None),
    "head": ("gap or fc", _one_of("gap", "fc"), None),
    "fc_layers": ("1, 2 or 3", _whole(1, 3), int),
    "fc_width": (f"a whole number from 1 to {MAX_FC_WIDTH}", _whole(1, MAX_FC_WIDTH), int),
    "lr": ("a positive number", _number(0, above=True), float),
    "weight_decay": ("a number of at least 0", _number(0), float),
    "batch_size": ("a whole number of at least 1", _whole(1), int),
    "label_smoothing": ("a number in [0, 1)", _number(0, 1), float),
}


def load_space(name_or_path: str) -> dict:
    """A ready space by name (vgg-like, resnet-like, mixed) or a YAML file; every value is checked here, so a
    bad space is refused in one line before the study is opened."""
    path = READY / f"{name_or_path}.yaml" if (READY / f"{name_or_path}.yaml").exists() else Path(name_or_path)
    if not path.exists():
        ready = ", ".join(sorted(p.stem for p in READY.glob("*.yaml")))
        raise CnnlabError(f"--space {name_or_path}: no such file, nor a ready space ({ready})")
    if path.is_dir():
        raise CnnlabError(f"--space {path}: is a folder; give a YAML file or a ready space")
    try:
        space = load_yaml(read_text_capped(path))
    except UnicodeDecodeError:
        raise CnnlabError(f"--space {path}: not a text file") from None
    except OSError as exc:
        raise CnnlabError(f"--space {path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise CnnlabError(f"--space {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if space is None:
        raise CnnlabError(f"--space {path}: is empty; expected a mapping of choices (see `cnnlab search --help`)")
    if not isinstance(space, dict):
        raise CnnlabError(f"--space {path}: expected a mapping of choices")
    unknown = set(space) - set(ARCH_KEYS) - set(TRAIN_KEYS)
    if unknown:
        raise CnnlabError(f"--space {path}: unknown key '{sorted(map(str, unknown))[0]}'; known: "
                          f"{', '.join(ARCH_KEYS + TRAIN_KEYS)}")
    for key, spec in space.items():
        _check(path, key, spec)
    return space


def _check(path, key: str, spec) -> None:
    words, ok, ranged = VALUES[key]
    if spec is None:  # `key:` with nothing after it: the builder's default
        return
    if isinstance(spec, list) and not spec:
        raise CnnlabError(f"--space {path}: '{key}' lists no choices")
    if isinstance(spec, dict):
        if not ranged or set(spec) - {"min", "max", "log"} or not {"min", "max"} <= set(spec):
            form = "a list, a value, or {min, max[, log]}" if ranged else "a list or a value"
            raise CnnlabError(f"--space {path}: '{key}' must be {form}; got {spec}")
        values = [spec["min"], spec["max"]]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) and values[0] > values[1]:
            raise CnnlabError(f"--space {path}: '{key}' must be {{min, max[, log]}} with min <= max; got {spec}")
    else:
        values = spec if isinstance(spec, list) else [spec]
    bad = [v for v in values if not ok(v)]
    if bad:
        raise CnnlabError(f"--space {path}: '{key}' must be {words}; got {bad[0]!r}")
    if isinstance(spec, dict):
        if spec.get("log", False) not in (True, False):
            raise CnnlabError(f"--space {path}: '{key}': log must be true or false; got {spec['log']!r}")
        if spec.get("log") and spec["min"] <= 0:
            raise CnnlabError(f"--space {path}: '{key}': a log range needs min > 0; got {spec}")


def sample(trial, space: dict) -> tuple[dict, dict]:
    """Draw (arch for the `cnn` model, training settings) from `space` through an Optuna trial."""

    def pick(key: str, default=None, name: str | None = None):
        spec = space.get(key)
        if spec is None:
            return default
        name = name or key
        if isinstance(spec, list):
            return trial.suggest_categorical(name, spec)
        if isinstance(spec, dict):
            suggest = trial.suggest_int if VALUES[key][2] is int else trial.suggest_float
            return suggest(name, spec["min"], spec["max"], log=bool(spec.get("log", False)))
        return spec

    stages = [{"blocks": pick("blocks", 1, f"stage{i}_blocks"), "width": pick("width", 32 * 2 ** i, f"stage{i}_width"),
               "kernel": pick("kernel", 3, f"stage{i}_kernel")} for i in range(pick("stages", 2))]
    head = pick("head", "gap")
    arch = {"stages": stages, "downsample": pick("downsample", "pool"), "padding": pick("padding", "same"),
            "skip": pick("skip", True), "bn": pick("bn", True), "activation": pick("activation", "relu"),
            "head": {"type": head}, "group": pick("group", "none")}
    if head == "fc":
        arch["head"]["widths"] = [pick("fc_width", 128, f"fc{i}_width") for i in range(pick("fc_layers", 1))]
    train = {k: pick(k) for k in TRAIN_KEYS if space.get(k) is not None}
    return arch, train
