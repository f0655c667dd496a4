"""The run configuration: one flat dataclass, written to the run folder as `config.yaml`.

Each setting's help text lives beside it (the field's metadata) and is what `cnnlab train --help` prints.
Settings come in layers, each holding only the keys it sets, merged in this order (later wins):
    1. the recipe (`recipe: cifar10-fast`, see recipes.py)
    2. the model config file (`model_config: best_model.yaml`: model and model_kwargs)
    3. the `--config run.yaml` file
    4. the command line's options
A resumed run puts its own `config.yaml` under all of these, so `--resume` alone continues it."""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import CnnlabError
from .recipes import recipe_settings

MAX_EPOCHS = 100_000


def setting(default: Any, help: str, **choices: Any) -> Any:  # noqa: A002  (argparse's word)
    """A config field with its help text (and, for a few, the values it may take)."""
    kw = {"default_factory": default} if callable(default) else {"default": default}
    return field(metadata={"help": help, **choices}, **kw)


@dataclass
class TrainConfig:
    # a named set of settings under everything given alongside
    recipe: str | None = setting(None, "a named set of settings, e.g. cifar10-fast (airbench94's recipe); "
                                       "options given override it")
    variant: str | None = setting(None, "the recipe's variant, e.g. sgd or muon for cifar10-fast (default: "
                                        "the recipe's pick for the machine, sgd for cifar10-fast; the run "
                                        "records which)")
    # what to train, on what
    model_config: str | None = setting(None, "YAML file with model and model_kwargs (e.g. best_model.yaml of "
                                             "`cnnlab search report`)")
    model: str = setting("resnet20", "model name (see `cnnlab models`)")
    model_kwargs: dict = setting(dict, "model switches, e.g. bn=false kernel_size=7 activation=sigmoid")
    data: str = setting("digits", "registered data set or a path (folder, .tar.gz, CIFAR batches, MNIST IDX)")
    download: bool = setting(False, "fetch a registered data set (cifar10, cifar100, mnist, fashion-mnist) if "
                                    "absent")
    image_size: int | None = setting(None, "size models see (default: the data's own; digits: 32); also "
                                           "resizes images of mixed sizes")
    holdout: float = setting(0.2, "folders without test/: fraction (<1) or whole count (>=1) per class held out "
                                  "as the test split")
    val_fraction: float = setting(0.1, "fraction of the training split per class used to pick the best epoch "
                                       "(0: use the test split)")
    skip_bad: bool = setting(False, "skip unreadable images and report how many")
    progressive: str = setting("", "progressive resizing: SIZE:EPOCHS,... trains the first epochs on downscaled "
                                   "images, e.g. 16:2,24:3 (2 epochs at 16x16, 3 at 24x24, the rest at full size); "
                                   "16:20%,24:40% gives shares of --epochs")
    progressive_crop: bool = setting(False, "progressive epochs take a random SIZE x SIZE crop of each image "
                                            "instead of downscaling it, so objects keep their size")
    prune: float = setting(0.0, "dynamic data pruning (InfoBatch): each epoch but the first and the last eighth "
                                "leaves out this share of the training images, drawn from those with the lower "
                                "half of the losses, and weights the rest of that half up (below 0.5; e.g. 0.25)")
    augment: str = setting("", "batched augmentation, e.g. flip,translate=4 or crop=0.35,rotate=15:reflect,"
                               "color=0.4,cutout=8,mixup=0.2 (see `cnnlab augment`)")
    # fine-tuning
    init_from: str | None = setting(None, "start from pretrained weights: a torchvision-format state dict (.pth, "
                                          ".safetensors) or a cnnlab run folder (its best weights); the classifier "
                                          "head is replaced when the class count differs")
    freeze: int | str = setting(0, "N: freeze the first N conv/linear layers (with their norms); backbone: every "
                                   "layer but the classifier head (0: none)")
    freeze_from: str = setting("", "progressive freezing: EPOCH:N,... from that epoch (1-based) on, the first N "
                                   "conv/linear layers stop training, and the backward pass skips them (e.g. 7:3,9:5; "
                                   "PERCENT%:N freezes them after that share of the epochs, e.g. 28%:1)")
    pretrained_lr_scale: float = setting(1.0, "lr multiplier for the weights --init-from loaded (the new head "
                                              "keeps the full lr)")
    # how long
    epochs: int = setting(15, "passes over the training split (with --resume: a larger number extends a run)")
    batch_size: int = setting(128, "images per step")
    early_stop: int = setting(0, "stop after N evaluations without a better validation accuracy (0: never)")
    # optimisation
    optimizer: str = setting("sgd", "sgd (Nesterov momentum), adamw, or muon (orthogonalised momentum for the conv "
                                    "filters, SGD for the rest)", choices=("sgd", "adamw", "muon"))
    lr: float = setting(0.1, "peak learning rate")
    momentum: float = setting(0.9, "SGD momentum")
    nesterov: bool = setting(True, "Nesterov momentum")
    weight_decay: float = setting(5e-4, "L2 penalty (decoupled for adamw; muon: on the SGD parameters only)")
    muon_lr: float = setting(0.24, "muon: peak rate of the conv filters, a step relative to their norm")
    muon_momentum: float = setting(0.6, "muon: momentum of the conv filters")
    decay_bn_and_bias: bool = setting(False, "also decay batch-norm and bias parameters (exempt by default)")
    schedule: str = setting("onecycle", "learning-rate schedule: onecycle (linear warm-up, then linear decay), "
                                        "cosine, step or constant",
                            choices=("constant", "step", "cosine", "onecycle"))
    warmup_epochs: float = setting(1.0, "linear warm-up length in epochs (cosine, onecycle)")
    warmup_from: float = setting(0.0, "onecycle: start the warm-up at this fraction of the peak lr")
    decay_to: float = setting(0.0, "onecycle: end at this fraction of the peak lr")
    step_size: int = setting(30, "step schedule: epochs per decay")
    gamma: float = setting(0.1, "step schedule: decay factor")
    label_smoothing: float = setting(0.0, "label smoothing of the cross-entropy")
    grad_clip: float = setting(0.0, "clip the global gradient norm to this (0: off)")
    norm_lr_scale: float = setting(1.0, "lr multiplier for batch-norm parameters (their decay per step kept)")
    lr_scale: str = setting("", "lr multipliers by parameter name: PATTERN=FACTOR,... with shell-style patterns, "
                                "e.g. whiten.bias=64 (the decay per step kept, as with --norm-lr-scale)")
    lookahead: bool = setting(False, "airbench's lookahead: every 5 steps pull the weights toward a slow average")
    # gradient health (see diagnose/)
    monitor_every: int = setting(10, "steps between per-layer gradient-health samples, after dense sampling in "
                                     "the first 10 steps (0: monitor off; NaN checks stay on)")
    on_nonfinite: str = setting("stop", "a NaN/inf loss or gradient: stop (with the diagnosis), skip the step, or "
                                        "rollback to the last checkpoint; skip and rollback halve the lr",
                                choices=("stop", "skip", "rollback"))
    # evaluation
    eval_every: int = setting(1, "epochs between validation passes (0: after the last epoch only)")
    eval_train: bool = setting(False, "also test the final weights on the training images without augmentation "
                                      "(as many as the test split has, spread evenly): the summary's "
                                      "train_eval_accuracy, for an honest train/test gap")
    tta: int = setting(0, "test-time augmentation: 0 none, 1 mirror, 2 mirror + 1-pixel translations",
                       choices=(0, 1, 2))
    # where and how
    device: str = setting("auto", "auto, cpu or cuda", choices=("auto", "cpu", "cuda"))
    precision: str = setting("auto", "auto, fp32, bf16 or fp16 (auto: bf16 where the hardware does it natively, "
                                     "else fp32; fp16 is emulated on CPUs)",
                             choices=("auto", "fp32", "bf16", "fp16"))
    loss_scaling: bool = setting(True, "fp16: dynamic loss scaling (off only to watch gradients underflow)")
    compile: bool = setting(False, "torch.compile the model (slow start; helps most on GPUs)")
    keep_freed_memory: bool = setting(True, "CPU on Linux: keep freed memory for the next step (faster; the "
                                            "process keeps its peak memory until it exits)")
    sync_bn: bool = setting(False, "distributed runs: batch-norm statistics over all ranks")
    seed: int = setting(0, "random seed, 0 to 2^32-1 (same seed, same machine: identical weights)")
    out: str | None = setting(None, "run folder (default: runs/<model>-<data>-<time>)")
    checkpoint_every: int = setting(0, "also checkpoint every N steps (0: at the end of each epoch only)")
    log_every: int = setting(10, "steps between metric lines and progress-bar refreshes")
    tensorboard: bool = setting(False, "also write TensorBoard event files to <out>/tensorboard "
                                       "(pip install 'cnnlab[tensorboard]')")
    quiet: bool = setting(False, "no progress bar (the result is still printed)")
    report: bool = setting(True, "write <out>/report.html at the end: learning curves, confusion matrix, the "
                                 "most confidently wrong images, model summary, gradient health, config")

    def validate(self) -> "TrainConfig":
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            allowed = f.metadata.get("choices")
            if allowed and value not in allowed:
                raise CnnlabError(f"{flag(f.name)} must be one of {', '.join(map(str, allowed))}, got {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise CnnlabError(f"{flag(f.name)} must be a finite number, got {value}")
        for key in ("epochs", "batch_size", "log_every", "step_size"):
            if getattr(self, key) < 1:
                raise CnnlabError(f"{flag(key)} must be at least 1, got {getattr(self, key)}")
        if self.epochs > MAX_EPOCHS:  # the schedules and the FLOP count hold a number per epoch
            raise CnnlabError(f"--epochs must be at most {MAX_EPOCHS:,}, got {self.epochs}")
        for key in ("lr", "weight_decay", "label_smoothing", "grad_clip", "warmup_epochs", "momentum",
                    "checkpoint_every", "early_stop", "eval_every", "monitor_every", "norm_lr_scale",
                    "warmup_from", "decay_to", "step_size", "gamma", "pretrained_lr_scale", "muon_lr",
                    "muon_momentum"):
            if getattr(self, key) < 0:
                raise CnnlabError(f"{flag(key)} must not be negative, got {getattr(self, key)}")
        if isinstance(self.freeze, str) and self.freeze.strip().isdecimal():
            self.freeze = int(self.freeze)
        if self.freeze != "backbone" and not (isinstance(self.freeze, int) and self.freeze >= 0):
            raise CnnlabError(f"--freeze must be a number of layers or backbone, got {self.freeze!r}")
        if self.pretrained_lr_scale != 1 and not self.init_from:
            raise CnnlabError("--pretrained-lr-scale scales the weights --init-from loads; give --init-from too")
        if not 0 <= self.seed < 2 ** 32:
            raise CnnlabError(f"--seed must be between 0 and 2^32-1, got {self.seed}")
        if not 0 <= self.val_fraction < 1:
            raise CnnlabError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if not 0 <= self.prune < 0.5:
            raise CnnlabError(f"--prune must be in [0, 0.5): the share of the images a pruned epoch leaves out, "
                              f"all from the lower-loss half; got {self.prune}")
        if self.progressive_crop and not self.progressive:
            raise CnnlabError("--progressive-crop crops the epochs --progressive plans at a smaller size; give "
                              "--progressive too")
        if self.variant is not None and self.recipe is None:
            raise CnnlabError(f"--variant {self.variant} chooses among a recipe's variants; give --recipe too")
        if self.early_stop and not self.eval_every:
            raise CnnlabError(f"--early-stop {self.early_stop} counts validation passes, and --eval-every 0 makes "
                              f"only the last; give --eval-every 1 (or more) too")
        if self.gamma > 1:
            raise CnnlabError(f"--gamma must be in [0, 1]: the factor the step schedule decays by, got {self.gamma}")
        if self.label_smoothing >= 1:
            raise CnnlabError(f"--label-smoothing must be below 1, got {self.label_smoothing}")
        from ..data import check_holdout  # here, not at the top: `cnnlab --help` reads the help without torch
        from ..data.augment import parse_policy

        from .optim import LR_SCALE_RANGE, parse_lr_scale
        from .progressive import parse_freezing, parse_plan

        check_holdout(self.holdout)
        if parse_freezing(self.freeze_from, self.epochs) and self.freeze == "backbone":
            raise CnnlabError("--freeze-from freezes the first layers as epochs go by; --freeze backbone has frozen "
                              "all but the head already: give one of them")
        parse_policy(self.augment)
        parse_lr_scale(self.lr_scale)
        if not LR_SCALE_RANGE[0] <= self.norm_lr_scale <= LR_SCALE_RANGE[1]:
            raise CnnlabError(f"--norm-lr-scale must be from {LR_SCALE_RANGE[0]:g} to {LR_SCALE_RANGE[1]:g}, got "
                              f"{self.norm_lr_scale:g}")
        if sum(e for _, e in parse_plan(self.progressive, self.epochs)) >= self.epochs:
            raise CnnlabError(f"--progressive {self.progressive} covers all {self.epochs} epochs; leave at least the "
                              f"last at full size")
        if self.image_size is not None and self.image_size < 1:
            raise CnnlabError(f"--image-size must be positive, got {self.image_size}")
        if not self.data:
            raise CnnlabError("--data is empty: name a data set or a path")
        return self

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> "TrainConfig":
        """A config from the keys `values` sets, over the recipe and model config it names."""
        return resolve([values], [source])

    @classmethod
    def from_yaml(cls, path: Path) -> "TrainConfig":
        return resolve([read_settings(path)], [str(path)])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_TYPES = typing.get_type_hints(TrainConfig)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def resolve(layers: list[dict], sources: list[str]) -> TrainConfig:
    """Merge layers of settings (each only the keys it sets; later layers win) over the recipe and the model
    config file that any of them names, check every value's type, and validate the result."""
    for values, source in zip(layers, sources):
        check_types(values, source)
    merged: dict = {}
    for values in layers:
        merged.update(values)
    below: list[dict] = []
    if merged.get("recipe") is not None:
        below.append(check_types(recipe_settings(merged["recipe"], merged.get("variant"), merged.get("device", "auto"),
                                                 merged.get("precision", "auto")),
                                 f"recipe {merged['recipe']}"))
    if merged.get("model_config") is not None:
        below.append(read_model_config(merged["model_config"]))
    values = {}
    for layer in [*below, *layers]:
        values.update(layer)
    return TrainConfig(**values).validate()


def check_types(values: dict, source: str) -> dict:
    """Refuse unknown keys and values of the wrong type in one line; ints are accepted for floats."""
    if not isinstance(values, dict):
        raise CnnlabError(f"{source}: expected a mapping of settings, got {type(values).__name__}")
    for key, value in list(values.items()):
        if key not in FIELDS:
            raise CnnlabError(f"{source}: unknown setting '{key}'")
        kinds = typing.get_args(_TYPES[key]) or (_TYPES[key],)
        if value is None and type(None) in kinds:
            continue
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            values[key] = float(value)
            continue
        if not any(isinstance(value, k) and not (k is int and isinstance(value, bool)) for k in kinds
                   if k is not type(None)):
            wanted = " or ".join(k.__name__ for k in kinds if k is not type(None))
            # YAML 1.1 reads an unquoted 7:3 as the base-60 number 423
            hint = " (quote it: YAML reads unquoted text such as 7:3 as a number)" if str in kinds else ""
            raise CnnlabError(f"{source}: '{key}' must be {_article(wanted)} {wanted}, got {value!r}{hint}")
    return values


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def read_settings(path: Path) -> dict:
    """The settings a YAML file sets, and nothing else."""
    from ..runtime.files import read_text_capped  # here: `cnnlab --help` imports this module without torch
    from ..runtime.yaml_text import load_yaml

    path = Path(path)
    if path.is_dir():
        raise CnnlabError(f"{path}: is a folder, not a YAML file of settings")
    try:
        values = load_yaml(read_text_capped(path))
    except FileNotFoundError:
        raise CnnlabError(f"{path}: config file not found") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise CnnlabError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except OSError as exc:
        raise CnnlabError(f"{path}: cannot read ({exc.strerror})") from None
    return check_types({} if values is None else values, str(path))


def read_model_config(path: str) -> dict:
    values = read_settings(Path(path)) if Path(path).exists() else None
    if values is None:
        raise CnnlabError(f"--model-config {path}: file not found")
    if "model" not in values or {"recipe", "model_config"} & set(values):
        raise CnnlabError(f"--model-config {path}: expected a mapping with 'model' (and 'model_kwargs', and "
                          f"training settings such as lr), naming no recipe or other model config")
    return values
