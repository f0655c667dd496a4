"""The run configuration: one flat dataclass, written to the run folder as `config.yaml`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..data.augment import parse_policy
from ..errors import CnnlabError
from .recipes import recipe_settings


@dataclass
class TrainConfig:
    # a named set of defaults (see train/recipes.py); settings given alongside override it
    recipe: str | None = None
    # what to train, on what
    model_config: str | None = None  # a YAML model spec (model, model_kwargs), e.g. `cnnlab search report`'s
    model: str = "resnet20"
    model_kwargs: dict = field(default_factory=dict)
    data: str = "digits"
    download: bool = False
    image_size: int | None = None  # None: the data set's own size (digits: upscaled to 32)
    holdout: float = 0.2  # folders without test/: fraction (or count, if >= 1) per class held out as test
    val_fraction: float = 0.1  # of the training split, per class, used to pick the best epoch; 0: use test
    skip_bad: bool = False
    augment: str = ""  # batched on the device, e.g. "flip,translate=2" (see data/augment.py)
    # how long
    epochs: int = 15
    batch_size: int = 128
    early_stop: int = 0  # stop after this many epochs without a better validation accuracy; 0: never
    # optimisation
    optimizer: str = "sgd"  # sgd (Nesterov momentum) or adamw
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    decay_bn_and_bias: bool = False  # by default BN and bias parameters are exempt from weight decay
    schedule: str = "onecycle"  # constant, step, cosine or onecycle (linear warm-up, then linear decay)
    warmup_epochs: float = 1.0
    warmup_from: float = 0.0  # onecycle: the learning rate starts at this fraction of its peak ...
    decay_to: float = 0.0  # ... and ends at this fraction
    step_size: int = 30  # step schedule: epochs between decays
    gamma: float = 0.1  # step schedule: decay factor
    label_smoothing: float = 0.0
    grad_clip: float = 0.0  # max global gradient norm; 0: no clipping
    norm_lr_scale: float = 1.0  # learning-rate multiplier for batch-norm parameters (their decay per step kept)
    lookahead: bool = False  # airbench's lookahead: every 5 steps pull the weights toward a slow average
    # gradient health (see diagnose/)
    monitor_every: int = 10  # steps between per-layer samples of the gradient monitor; 0: off
    on_nonfinite: str = "stop"  # a NaN/inf loss or gradient: stop (with the diagnosis), skip the step, or roll
    # back to the last checkpoint; skip and rollback also halve the learning rate
    # evaluation
    eval_every: int = 1  # epochs between validation passes; 0: only after the last epoch
    tta: int = 0  # test-time augmentation: 0 none, 1 mirror, 2 mirror and 1-pixel translations
    # where and how
    device: str = "auto"  # auto, cpu or cuda
    precision: str = "auto"  # auto, fp32, bf16 or fp16 (fp16: fast on CUDA; emulated and slow on CPUs)
    loss_scaling: bool = True  # fp16: dynamic loss scaling (off only to watch gradients underflow)
    compile: bool = False  # torch.compile the model (slow start; helps most on GPUs)
    keep_freed_memory: bool = True  # CPU on Linux: reuse freed memory instead of page-faulting it in each step
    sync_bn: bool = False  # distributed runs: batch-norm statistics over the global batch
    seed: int = 0
    out: str | None = None  # run folder; None: runs/<model>-<data>-<time>
    checkpoint_every: int = 0  # also checkpoint every N steps (0: at the end of each epoch only)
    log_every: int = 10  # steps between metrics lines and progress-bar refreshes
    quiet: bool = False

    def validate(self) -> "TrainConfig":
        choices = {"optimizer": ("sgd", "adamw"), "schedule": ("constant", "step", "cosine", "onecycle"),
                   "device": ("auto", "cpu", "cuda"), "precision": ("auto", "fp32", "bf16", "fp16"),
                   "on_nonfinite": ("stop", "skip", "rollback")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise CnnlabError(f"--{key.replace('_', '-')} must be one of {', '.join(allowed)}, "
                                  f"got '{getattr(self, key)}'")
        for key in ("epochs", "batch_size", "log_every"):
            if getattr(self, key) < 1:
                raise CnnlabError(f"--{key.replace('_', '-')} must be at least 1, got {getattr(self, key)}")
        for key in ("lr", "weight_decay", "label_smoothing", "grad_clip", "warmup_epochs", "momentum",
                    "checkpoint_every", "early_stop", "eval_every", "monitor_every", "norm_lr_scale", "warmup_from", "decay_to"):
            if getattr(self, key) < 0:
                raise CnnlabError(f"--{key.replace('_', '-')} must not be negative, got {getattr(self, key)}")
        if not 0 <= self.val_fraction < 1:
            raise CnnlabError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.label_smoothing >= 1:
            raise CnnlabError(f"--label-smoothing must be below 1, got {self.label_smoothing}")
        if self.tta not in (0, 1, 2):
            raise CnnlabError(f"--tta must be 0 (none), 1 (mirror) or 2 (mirror and translations), got {self.tta}")
        parse_policy(self.augment)
        if self.image_size is not None and self.image_size < 1:
            raise CnnlabError(f"--image-size must be positive, got {self.image_size}")
        return self

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> "TrainConfig":
        known = {f.name: f for f in dataclasses.fields(cls)}
        if values.get("model_config") is not None:  # the model file's settings under those given
            values = {**_read_model_config(values["model_config"], known), **values}
        if values.get("recipe") is not None:  # the recipe's settings first, then everything given
            values = {**recipe_settings(values["recipe"]), **values}
        for key in values:
            if key not in known:
                raise CnnlabError(f"{source}: unknown setting '{key}'")
        cfg = cls()
        for key, value in values.items():
            default = getattr(cfg, key)
            try:
                if isinstance(default, bool):
                    if not isinstance(value, bool):
                        raise ValueError
                elif isinstance(default, float) and isinstance(value, (int, float)):
                    value = float(value)
                elif isinstance(default, int) and not isinstance(value, int):
                    raise ValueError
            except ValueError:
                raise CnnlabError(f"{source}: '{key}' must be a {type(default).__name__}, got {value!r}") from None
            setattr(cfg, key, value)
        return cfg.validate()

    @classmethod
    def from_yaml(cls, path: Path) -> "TrainConfig":
        try:
            values = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise CnnlabError(f"{path}: config file not found") from None
        except yaml.YAMLError as exc:
            raise CnnlabError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(values, dict):
            raise CnnlabError(f"{path}: expected a mapping of settings")
        return cls.from_dict(values, str(path))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _read_model_config(path: str, known: dict) -> dict:
    try:
        values = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise CnnlabError(f"--model-config {path}: file not found") from None
    except yaml.YAMLError as exc:
        raise CnnlabError(f"--model-config {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(values, dict) or "model" not in values:
        raise CnnlabError(f"--model-config {path}: expected a mapping with 'model' (and 'model_kwargs')")
    unknown = set(values) - set(known)
    if unknown:
        raise CnnlabError(f"--model-config {path}: unknown setting '{sorted(unknown)[0]}'")
    return values
