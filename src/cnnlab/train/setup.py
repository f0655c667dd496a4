"""Everything a training run needs before its first step, built once and returned as one object: the
processes, device and precision, the run folder, the data as device tensors, the model (DDP-wrapped when
distributed), the optimiser, the step, the gradient monitor and the sinks."""
from __future__ import annotations

import functools
import gc
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn as nn

from .. import __version__
from ..data import check_trainable, data_location, load_dataset, refuse_ignored_holdout, stratified_split
from ..data.augment import Augmenter, parse_policy
from ..diagnose.monitor import GradientMonitor
from ..errors import CnnlabError
from ..models.equivariant import equivariance_note
from ..models.summary import ModelSummary, summarize
from ..runtime import distributed
from ..runtime.device import (cpu_has_native_bf16, cpu_name, keep_freed_memory, resolve_device, resolve_precision,
                              to_channels_last, use_all_cores)
from ..runtime.memory import create_model_within_memory, ensure_fits
from ..runtime.tensors import channel_stats, normalize, to_device
from .config import FIELDS, TrainConfig
from .finetune import describe_init, freeze, init_from, layer_names, pretrained_parameters
from .lookahead import Lookahead
from .optim import build_optimizer
from .progressive import check_sizes, epoch_flops, parse_freezing, parse_plan
from .pruning import Epochs, dropped_count, epoch_lengths
from .recipes import pick_variant
from .run_folder import RunFolder
from .sinks import Callbacks, MetricsLog, ProgressBar, Sink, Sinks, TensorBoard
from .step import Recovery, Stepper

# settings that may differ when a run is resumed: they change how it runs, not what it computes
RESUMABLE = ("quiet", "log_every", "compile", "keep_freed_memory", "tensorboard", "out", "epochs", "early_stop",
             "report")


@dataclass
class Split:
    x: torch.Tensor
    y: torch.Tensor


@dataclass
class Run:
    cfg: TrainConfig
    ranks: distributed.Ranks
    device: torch.device
    precision: str
    threads: int
    folder: RunFolder
    dataset: object
    size: int
    stats: ModelSummary
    train: Split
    val: Split | None  # None: the best epoch is chosen on the test split
    test: Split
    mean: torch.Tensor
    std: torch.Tensor
    augment: Augmenter
    model: nn.Module
    net: nn.Module  # what a step calls: the model, DDP-wrapped when distributed
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    lookahead: Lookahead | None
    monitor: GradientMonitor | None
    step: Stepper
    recovery: Recovery
    sinks: Sinks
    batch: int
    epochs: Epochs  # each epoch's steps: pruned epochs (--prune) are shorter
    environment: dict = field(default_factory=dict)
    init: dict | None = None  # what --init-from loaded and --freeze froze (finetune.py)
    plan: list = field(default_factory=list)  # progressive resizing: [(size, epochs), ...] before full size
    freezing: list = field(default_factory=list)  # progressive freezing: [(1-based epoch, first layers), ...]
    flops_per_image: list = field(default_factory=list)  # each epoch's training FLOPs per image

    def close(self) -> None:
        """However training ends: close the sinks and the monitor, release the folder and the process group."""
        self.sinks.close()
        if self.monitor is not None:
            self.monitor.close()
        self.folder.release()
        self.net = self.step = None  # DDP's reducer must go before its process group, or gloo can abort
        gc.collect()
        distributed.stop(self.ranks)


def setup(cfg: TrainConfig, resume: bool, callbacks: Callbacks, holdout_given: bool = False) -> Run:
    cfg.validate()
    ranks = distributed.start(cfg.device)
    try:
        return _setup(cfg, resume, callbacks, ranks, holdout_given)
    except BaseException:
        distributed.stop(ranks, barrier=False)
        raise


def _setup(cfg: TrainConfig, resume: bool, callbacks: Callbacks, ranks: distributed.Ranks,
           holdout_given: bool) -> Run:
    threads = use_all_cores(ranks.local_world)
    device = resolve_device(cfg.device, ranks.local_rank)
    precision = resolve_precision(cfg.precision, device)
    if device.type == "cpu" and precision == "bf16" and not cpu_has_native_bf16() and ranks.main:
        print("warning: this CPU has no native bf16 (AVX-512 BF16 or AMX): bf16 is emulated here and far slower "
              "than fp32 (--precision auto picks fp32)", file=sys.stderr)
    if cfg.variant is not None and ranks.main and not cfg.quiet:
        picked, why = pick_variant(cfg.recipe, cfg.device, cfg.precision)
        print(f"recipe {cfg.recipe}, variant {cfg.variant}" + (f" (the default: {why})" if picked == cfg.variant
                                                               else " (--variant)"), file=sys.stderr)
    if device.type == "cpu" and cfg.keep_freed_memory:
        keep_freed_memory()
    if cfg.sync_bn and ranks.distributed and device.type != "cuda":
        raise CnnlabError("--sync-bn needs CUDA GPUs (torch's SyncBatchNorm); on CPUs each rank normalises "
                          "its own share of the batch")
    if ranks.distributed and not cfg.out:
        raise CnnlabError("distributed runs need --out: each process would otherwise pick its own folder")
    folder = RunFolder(cfg.out or f"runs/{cfg.model}-{Path(cfg.data).name.split('.')[0]}-"
                                  f"{datetime.now():%Y%m%d-%H%M%S}")
    if resume and not folder.has_checkpoint:
        raise CnnlabError(f"--resume: {folder} holds no checkpoint to continue from")
    if not resume and folder.holds_a_run:
        raise CnnlabError(f"--out {folder} already holds a run; add --resume to continue it or choose "
                          f"another folder")
    if resume:
        check_resumable(folder, cfg)

    # Data: decoded once, split into train / val / test, moved to the device as uint8. Rank 0 loads first
    # (downloading and filling the cache); the other ranks then read the cache.
    if not ranks.main:
        distributed.barrier(ranks)
    ds = load_dataset(cfg.data, download=cfg.download, holdout=cfg.holdout, image_size=cfg.image_size,
                      skip_bad=cfg.skip_bad)
    if ranks.main:
        distributed.barrier(ranks)
    if holdout_given or cfg.holdout != FIELDS["holdout"].default:
        refuse_ignored_holdout(ds, cfg.holdout, cfg.data)
    if ds.image_size[0] != ds.image_size[1] and cfg.image_size is None:
        raise CnnlabError(f"{cfg.data}: images are {ds.image_size[1]}x{ds.image_size[0]}, not square; "
                          f"pass --image-size N")
    size = cfg.image_size or ds.default_image_size or ds.image_size[0]
    check_trainable(ds)
    ensure_fits((len(ds.train_y) + len(ds.test_y)) * ds.channels * size * size, device,
                f"the data at --image-size {size}")
    torch.manual_seed(cfg.seed)
    model = create_model_within_memory(cfg.model, device, num_classes=ds.num_classes, in_channels=ds.channels,
                                       **cfg.model_kwargs)
    minimum = getattr(model, "min_input_size", 1)
    if size < minimum:
        raise CnnlabError(f"{cfg.model} needs inputs of at least {minimum}x{minimum}, the data is {size}x{size}; "
                          f"pass --image-size {minimum} or larger")
    note = equivariance_note(model, size, ds.channels, cfg.model)
    if note:
        ds.notes.append(note)
        if ranks.main:
            print(f"warning: {note}", file=sys.stderr)
    stats = summarize(model, (ds.channels, size, size), cfg.model)
    plan = parse_plan(cfg.progressive, cfg.epochs)
    check_sizes(plan, size, minimum)
    freezing = parse_freezing(cfg.freeze_from, cfg.epochs)
    check_freezing(freezing, model, ranks.distributed)
    # the FLOPs counted leave out the backward work of what --freeze keeps frozen from the start, too
    static = len(layer_names(model)) - 1 if cfg.freeze == "backbone" else cfg.freeze
    rows_at = {size: stats.layers, **{s: summarize(model, (ds.channels, s, s), cfg.model).layers for s, _ in plan}}
    flops_per_image = epoch_flops(model, rows_at, plan, size, [(1, static)] * bool(static) + freezing, cfg.epochs)
    if cfg.val_fraction > 0:
        fit_idx, val_idx = stratified_split(ds.train_y, cfg.val_fraction, cfg.seed)
        if len(val_idx) == 0:  # no image to choose the best epoch on: it would never be chosen
            raise CnnlabError(f"--val-fraction {cfg.val_fraction} holds out no image of {ds.name} (its classes "
                              f"have {len(ds.train_y) // ds.num_classes} training images on average); pass a larger "
                              f"fraction, or --val-fraction 0 to keep the last epoch's weights")
    else:
        fit_idx, val_idx = slice(None), None
    mean, std = channel_stats(ds.train_x[fit_idx])
    train = Split(*to_device(ds.train_x[fit_idx], ds.train_y[fit_idx], size, device))
    test = Split(*to_device(ds.test_x, ds.test_y, size, device))
    val = Split(*to_device(ds.train_x[val_idx], ds.train_y[val_idx], size, device)) if val_idx is not None else None
    mean_t = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)

    model = to_channels_last(model.to(device))
    if hasattr(model, "init_from_data"):  # e.g. airbench's whitening layer, fitted to the training images
        model.init_from_data(normalize(train.x[:5000], mean_t, std_t))
    init = fine_tuning(model, cfg, folder, resume, ranks.main, ds.classes)
    batch = min(cfg.batch_size, len(train.x))
    if batch % ranks.world:
        raise CnnlabError(f"--batch-size {batch} must be divisible by the {ranks.world} processes")
    epochs = Epochs(epoch_lengths(len(train.x), batch, cfg.epochs, cfg.prune))
    if min(epochs.lengths) < 1:
        left = len(train.x) - dropped_count(len(train.x), cfg.prune)
        raise CnnlabError(f"--prune {cfg.prune} leaves {left} of the {len(train.x)} training images in a pruned "
                          f"epoch, fewer than a batch of {batch}: prune less or lower --batch-size")
    net = distributed.wrap(model, ranks, cfg.sync_bn)
    if cfg.sync_bn and ranks.distributed:
        model = net.module  # SyncBatchNorm replaced the norm layers: train and save that model
    if cfg.compile:
        net = torch.compile(net)
    optimizer = build_optimizer(model, cfg, pretrained_parameters(model, init))
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16" and cfg.loss_scaling)
    monitor = GradientMonitor(model, cfg.monitor_every, precision) if cfg.monitor_every else None

    environment = describe_environment(device, precision, ranks.world)
    if ranks.main:
        folder.claim()
    if ranks.main and not resume:
        spec = {"model": cfg.model, "model_kwargs": cfg.model_kwargs, "num_classes": ds.num_classes,
                "in_channels": ds.channels, "image_size": size, "mean": mean, "std": std, "classes": ds.classes,
                "precision": precision, "tta": cfg.tta, "data": data_location(cfg.data), "holdout": cfg.holdout,
                "environment": environment, "init": init}
        folder.create(cfg.to_dict(), spec)
    sinks: list[Sink] = [callbacks]
    if ranks.main:
        sinks = [MetricsLog(folder.metrics), *sinks,
                 ProgressBar(epochs.total, batch, f"{cfg.model} on {ds.name}", cfg.epochs,
                             cfg.quiet)]
        if cfg.tensorboard:
            sinks.append(TensorBoard(folder.path / "tensorboard"))
    return Run(cfg=cfg, ranks=ranks, device=device, precision=precision, threads=threads, folder=folder,
               dataset=ds, size=size, stats=stats, train=train, val=val, test=test, mean=mean_t, std=std_t,
               augment=Augmenter(parse_policy(cfg.augment), len(train.x), cfg.seed), model=model, net=net,
               optimizer=optimizer, scaler=scaler, lookahead=Lookahead(model) if cfg.lookahead else None,
               monitor=monitor, step=Stepper(net, model, optimizer, scaler, device, precision, cfg.grad_clip,
                                             monitor),
               recovery=Recovery(cfg.on_nonfinite), sinks=Sinks(sinks), batch=batch,
               epochs=epochs,
               environment=environment, init=init, plan=plan, freezing=freezing,
               flops_per_image=flops_per_image)


def check_freezing(freezing: list[tuple[int, int]], model: nn.Module, distributed_run: bool) -> None:
    """--freeze-from against the model and the processes."""
    if not freezing:
        return
    layers = len(layer_names(model))
    if freezing[-1][1] >= layers:
        raise CnnlabError(f"--freeze-from: {freezing[-1][1]} layers would freeze all of the model's {layers}; "
                          f"leave at least the last one to train")
    if distributed_run:  # DDP's reducer expects a gradient for every parameter it was built with
        raise CnnlabError("--freeze-from trains in one process; under torchrun, leave it out")


def fine_tuning(model: nn.Module, cfg: TrainConfig, folder: RunFolder, resume: bool, main: bool,
                classes: list[str]) -> dict | None:
    """--init-from and --freeze (finetune.py): what was loaded, replaced, left random and frozen, printed in one
    line and kept in model.json, where a resumed run finds it (its checkpoint then holds the weights)."""
    if resume:
        init = folder.read_spec().get("init")
        freeze(model, cfg.freeze)
        return init
    init = init_from(model, cfg.init_from, classes) if cfg.init_from else None
    frozen = freeze(model, cfg.freeze)
    if frozen:
        init = {**(init or {"from": None}), "frozen": len(frozen), "freeze": cfg.freeze}
    if init and main:
        print(describe_init(init), file=sys.stderr)
    return init


def check_resumable(folder: RunFolder, cfg: TrainConfig) -> None:
    saved = folder.read_config()
    defaults = TrainConfig().to_dict()  # a setting newer than the run's config.yaml ran at its default
    for key, value in cfg.to_dict().items():
        if key not in RESUMABLE and saved.get(key, defaults[key]) != value:
            raise CnnlabError(f"--resume: '{key}' was {saved.get(key)!r} in {folder}, now {value!r}; "
                              f"resume with the same settings")
    if cfg.epochs < saved.get("epochs", 0):
        raise CnnlabError(f"--resume: --epochs {cfg.epochs} is fewer than the run's {saved['epochs']}; a run can "
                          f"be extended, not shortened")


@functools.lru_cache(maxsize=1)
def code_commit() -> str | None:
    """The git commit of cnnlab's code, when it runs from a checkout. Asked once per process: the code a
    process runs is the code it imported, and a search's hundreds of trials need not each start git."""
    here = Path(__file__).resolve().parent
    try:
        return subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def describe_environment(device: torch.device, precision: str, processes: int) -> dict:
    """What ran the training: versions, the code's git commit (when it has one), hardware and precision."""
    commit = code_commit()
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        hardware = cpu_name()
    return {"cnnlab": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "git_commit": commit, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "hardware": hardware, "device": str(device), "precision": precision, "processes": processes,
            "host": platform.node() if os.environ.get("CNNLAB_RECORD_HOST", "1") == "1" else None}

