"""The training loop: SGD and backpropagation over device-resident batches, evaluation every epoch,
atomic checkpoints, exact resume. Read `train` top to bottom; the helpers below it are small."""
from __future__ import annotations

import gc
import json
import os
import sys
import time
from contextlib import nullcontext
from typing import Callable
from datetime import datetime
from pathlib import Path

import torch
import torch.nn as nn
import yaml
from tqdm import tqdm

from ..data import load_dataset, stratified_split
from ..data.augment import Augmenter, parse_policy
from ..diagnose.monitor import GradientMonitor
from ..errors import CnnlabError, TrainingStopped
from ..models import create_model
from ..models.equivariant import equivariance_note
from ..report.summary import summarize
from .checkpoint import atomic_write_text, load_checkpoint, save_checkpoint, save_weights, load_weights
from . import distributed
from .config import TrainConfig
from .device import (autocast, keep_freed_memory, resolve_device, resolve_precision, to_channels_last,
                     use_all_cores)
from .evaluate import metrics_from_logits, predict_logits
from .lookahead import Lookahead
from .optim import build_optimizer, build_scheduler, lr_factor
from .tensors import channel_stats, normalize, to_device


def train(cfg: TrainConfig, resume: bool = False,
          on_step: Callable[[nn.Module, int], None] | None = None,
          on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train as `cfg` says; returns the summary (also written to `<out>/summary.json`). Under torchrun,
    every rank calls this; rank 0 alone writes. `on_step(model, step)` runs after every optimiser step,
    `on_epoch(record)` after every epoch with its metrics line (an exception from either ends training)."""
    cfg.validate()
    wall_start = time.perf_counter()
    ranks = distributed.start(cfg.device)
    threads = use_all_cores(ranks.local_world)
    device = resolve_device(cfg.device, ranks.local_rank)
    precision = resolve_precision(cfg.precision, device)
    if device.type == "cpu" and cfg.keep_freed_memory:
        keep_freed_memory()
    run_dir = Path(cfg.out or f"runs/{cfg.model}-{Path(cfg.data).name.split('.')[0]}-{datetime.now():%Y%m%d-%H%M%S}")
    if cfg.sync_bn and ranks.distributed and device.type != "cuda":
        raise CnnlabError("--sync-bn needs CUDA GPUs (torch's SyncBatchNorm); on CPUs each rank normalises "
                          "its own share of the batch")
    if ranks.distributed and not cfg.out:
        raise CnnlabError("distributed runs need --out: each process would otherwise pick its own folder")
    _check_run_dir(run_dir, cfg, resume)

    # Data: decoded once, moved to the device as uint8, split into train / val / test. Rank 0 loads first
    # (downloading and filling the cache); the other ranks then read the cache.
    if not ranks.main:
        distributed.barrier(ranks)
    ds = load_dataset(cfg.data, download=cfg.download, holdout=cfg.holdout, image_size=cfg.image_size,
                      skip_bad=cfg.skip_bad)
    if ranks.main:
        distributed.barrier(ranks)
    size = cfg.image_size or ds.default_image_size or ds.image_size[0]
    if ds.image_size[0] != ds.image_size[1] and cfg.image_size is None:
        raise CnnlabError(f"{cfg.data}: images are {ds.image_size[1]}x{ds.image_size[0]}, not square; "
                          f"pass --image-size N")
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, num_classes=ds.num_classes, in_channels=ds.channels, **cfg.model_kwargs)
    _check_input_size(model, cfg.model, size)
    note = equivariance_note(model, size, ds.channels, cfg.model)
    if note:
        ds.notes.append(note)
        if ranks.main:
            print(f"warning: {note}", file=sys.stderr)
    stats = summarize(model, (ds.channels, size, size), cfg.model)
    if cfg.val_fraction > 0:
        fit_idx, val_idx = stratified_split(ds.train_y, cfg.val_fraction, cfg.seed)
    else:
        fit_idx, val_idx = slice(None), None
    mean, std = channel_stats(ds.train_x[fit_idx])
    x_train, y_train = to_device(ds.train_x[fit_idx], ds.train_y[fit_idx], size, device)
    x_test, y_test = to_device(ds.test_x, ds.test_y, size, device)
    x_val, y_val = to_device(ds.train_x[val_idx], ds.train_y[val_idx], size, device) if val_idx is not None \
        else (x_test, y_test)  # no separate validation split: the best epoch is chosen on the test split
    mean_t = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)
    augment = Augmenter(parse_policy(cfg.augment), len(x_train), cfg.seed)

    model = to_channels_last(model.to(device))
    if hasattr(model, "init_from_data"):  # e.g. airbench's whitening layer, fitted to the training images
        model.init_from_data(normalize(x_train[:5000], mean_t, std_t))
    batch = min(cfg.batch_size, len(x_train))
    if batch % ranks.world:
        raise CnnlabError(f"--batch-size {batch} must be divisible by the {ranks.world} processes")
    steps_per_epoch = len(x_train) // batch  # the ragged last batch is dropped: BN needs full batches
    total_steps = cfg.epochs * steps_per_epoch
    net = distributed.wrap(model, ranks, cfg.sync_bn)  # what a training step calls
    if cfg.sync_bn and ranks.distributed:
        model = net.module  # SyncBatchNorm replaced the norm layers: train and save that model
    if cfg.compile:
        net = torch.compile(net)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16" and cfg.loss_scaling)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    lookahead = Lookahead(model) if cfg.lookahead else None
    monitor = GradientMonitor(model, cfg.monitor_every, precision) if cfg.monitor_every else None
    skipped = rollbacks = 0  # non-finite steps skipped in a row; rollbacks so far

    st = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_accuracy": -1.0, "best_epoch": 0,
          "bad_epochs": 0, "train_seconds": 0.0, "images_seen": 0, "metrics_bytes": 0,
          "lr_halvings": 0, "loss_sum": torch.zeros((), device=device),
          "correct": torch.zeros((), device=device, dtype=torch.long)}
    metrics_path = run_dir / "metrics.jsonl"
    base_lrs = list(scheduler.base_lrs)

    def restore(rollback: bool = False) -> None:
        """Load the newest checkpoint: weights, optimiser, schedule, RNG, counters (and, unless rolling back
        from a fault the monitor must remember, the monitor's history)."""
        saved = load_checkpoint(run_dir, model)
        optimizer.load_state_dict(saved.pop("optimizer"))
        scheduler.load_state_dict(saved.pop("scheduler"))
        scaler.load_state_dict(saved.pop("scaler"))
        torch.set_rng_state(saved.pop("rng"))
        slow, health = saved.pop("lookahead", None), saved.pop("monitor", None)
        if lookahead is not None:
            lookahead.load_state_dict(slow)
        if monitor is not None and health is not None and not rollback:
            monitor.load_state_dict(health)
        st.update({k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in saved.items()})

    def halve_lr() -> None:
        """After a non-finite step (on_nonfinite skip or rollback): half the learning rate from now on."""
        st["lr_halvings"] += 1
        scheduler.base_lrs = [lr * 0.5 ** st["lr_halvings"] for lr in base_lrs]
        for group, lr in zip(optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = lr * lr_factor(cfg, scheduler.last_epoch, steps_per_epoch)

    if resume:
        restore()
        if ranks.main:
            with open(metrics_path, "r+b") as f:  # drop lines logged after the checkpoint by the killed run
                f.truncate(st["metrics_bytes"])
    elif ranks.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        spec = {"model": cfg.model, "model_kwargs": cfg.model_kwargs, "num_classes": ds.num_classes,
                "in_channels": ds.channels, "image_size": size, "mean": mean, "std": std, "classes": ds.classes,
                "precision": precision, "tta": cfg.tta}
        atomic_write_text(run_dir / "model.json", json.dumps(spec, indent=1))
        metrics_path.write_text("")

    def checkpoint() -> None:
        if not ranks.main:
            return
        st["metrics_bytes"] = metrics_path.stat().st_size
        extra = {"lookahead": lookahead.state_dict()} if lookahead else {}
        if monitor:
            extra["monitor"] = monitor.state_dict()
        save_checkpoint(run_dir, st["global_step"], model, {
            **st, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng": torch.get_rng_state(), **extra})

    def evaluate(x: torch.Tensor, y: torch.Tensor) -> dict:
        """Each rank predicts every world-th image; the logits are gathered so all ranks agree."""
        distributed.broadcast_buffers(model, ranks)
        local = predict_logits(model, x[ranks.rank::ranks.world], mean_t, std_t, precision, tta=cfg.tta)
        return metrics_from_logits(distributed.gather_rows(local, len(x), ranks), y, ds.num_classes)

    bar = tqdm(total=total_steps * batch, initial=st["global_step"] * batch, unit="img", unit_scale=True,
               disable=cfg.quiet or not ranks.main, dynamic_ncols=True, desc=f"{cfg.model} on {ds.name}")
    log = open(metrics_path, "a") if ranks.main else open(os.devnull, "w")
    if cfg.on_nonfinite == "rollback" and not resume:
        checkpoint()  # something to roll back to before the first epoch ends
    model.train()
    val = None
    while st["epoch"] < cfg.epochs:
        epoch = st["epoch"]
        # The order of an epoch depends only on (seed, epoch): a resumed run, and every rank, draws the
        # same global batches; each rank trains on its own share of each.
        order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
        order = order.to(device)
        tick = time.perf_counter()
        problem = None
        for s in range(st["step_in_epoch"], steps_per_epoch):
            idx = order[s * batch:(s + 1) * batch][ranks.rank::ranks.world]
            xb, partner, own = augment.mix(augment(x_train[idx], idx, epoch, s), epoch, s)
            xb, yb = normalize(xb, mean_t, std_t), y_train[idx]
            step = st["global_step"] + 1
            with autocast(device, precision), monitor.forward(step) if monitor else nullcontext():
                logits = net(xb)
            loss = _loss(logits, yb, partner, own, criterion)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            problem = monitor.after_backward(step, loss, optimizer, scaler.get_scale() if scaler.is_enabled()
                                             else None) if monitor else None
            if monitor and problem is None and precision == "fp16" and monitor.sampled(step):
                # what fp16 lost: the same batch's gradients in fp32, compared entry by entry
                monitor.measure_underflow(lambda: _loss(model(xb), yb, partner, own, criterion)
                                          * (scaler.get_scale() if scaler.is_enabled() else 1.0))
            if problem is not None:
                if not problem.layers:  # the loss: find the layer where the forward pass first went wrong
                    where = monitor.locate_nonfinite_forward(lambda: _forward(model, xb, device, precision))
                    problem.layers = [where] if where else []
                    problem.evidence += (f"; the first layer whose output is not finite: {where}" if where else
                                         "; every layer's output is finite, so the loss itself overflowed")
                _report(monitor, log, bar, ranks.main)
                if cfg.on_nonfinite == "stop" or max(skipped, rollbacks) >= MAX_RECOVERIES:
                    log.close()
                    _stop(run_dir, ranks, monitor, problem)
                optimizer.zero_grad(set_to_none=True)
                if cfg.on_nonfinite == "rollback":
                    rollbacks += 1
                    break  # below: back to the last checkpoint, with half the learning rate
                skipped += 1  # skip: drop this step's gradients, go on with half the learning rate
                halve_lr()
                if ranks.main:
                    bar.write(f"warning: step {step} skipped, learning rate halved ({skipped} of {MAX_RECOVERIES})",
                              file=sys.stderr)
            else:
                skipped = 0
                if cfg.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                if monitor:
                    monitor.after_step(step)
                    _report(monitor, log, bar, ranks.main)
            scheduler.step()
            st["global_step"] += 1
            if lookahead is not None:
                lookahead.after_step(model, st["global_step"], total_steps)
            if problem is None:
                st["loss_sum"] += loss.detach()
                st["correct"] += (logits.detach().argmax(1) == yb).sum()
            st["step_in_epoch"] = s + 1
            st["images_seen"] += len(idx) * ranks.world
            if on_step is not None:
                on_step(model, st["global_step"])
            if st["global_step"] % cfg.log_every == 0:  # with the monitor off, the only wait for the device
                loss_value = float(loss.detach())  # rank 0's share of the batch
                _write(log, {"type": "step", "step": st["global_step"], "epoch": epoch + 1, "loss": loss_value,
                             "lr": optimizer.param_groups[0]["lr"]})
                bar.update(cfg.log_every * batch)
                bar.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
            if cfg.checkpoint_every and st["global_step"] % cfg.checkpoint_every == 0:
                st["train_seconds"] += time.perf_counter() - tick
                tick = time.perf_counter()
                log.flush()
                checkpoint()
        if problem is not None and cfg.on_nonfinite == "rollback":
            log.flush()
            halvings = st["lr_halvings"]
            restore(rollback=True)
            st["lr_halvings"] = halvings  # each rollback halves again, even back to the same checkpoint
            halve_lr()
            if ranks.main:
                bar.write(f"warning: step {step} rolled back to step {st['global_step']}, learning rate halved "
                          f"({rollbacks} of {MAX_RECOVERIES})", file=sys.stderr)
            continue
        if lookahead is not None and st["global_step"] == total_steps:
            lookahead.finish(model)
        st["train_seconds"] += time.perf_counter() - tick

        last = epoch + 1 == cfg.epochs
        record = {"type": "epoch", "epoch": epoch + 1, "step": st["global_step"],
                  "train_loss": float(distributed.all_sum(st["loss_sum"], ranks)) / ranks.world / steps_per_epoch,
                  "train_accuracy": float(distributed.all_sum(st["correct"], ranks)) / (steps_per_epoch * batch),
                  "lr": optimizer.param_groups[0]["lr"], "train_seconds": st["train_seconds"]}
        if last or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0):
            val = evaluate(x_val, y_val)
            record.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
            bar.set_postfix(loss=f"{record['train_loss']:.3f}", val_acc=f"{val['accuracy']:.4f}", refresh=False)
            if val["accuracy"] > st["best_accuracy"]:
                st.update(best_accuracy=val["accuracy"], best_epoch=epoch + 1, bad_epochs=0)
                if ranks.main:
                    save_weights(model, run_dir / "best.safetensors")
            else:
                st["bad_epochs"] += 1
        _write(log, record)
        if on_epoch is not None:
            on_epoch(record)
        bar.update(st["global_step"] * batch - bar.n)
        st.update(epoch=epoch + 1, step_in_epoch=0)
        st["loss_sum"].zero_()
        st["correct"].zero_()
        log.flush()
        checkpoint()
        if cfg.early_stop and st["bad_epochs"] >= cfg.early_stop:
            bar.write(f"early stop: no better validation accuracy for {cfg.early_stop} evaluations")
            break
    bar.close()
    log.close()

    if ranks.main:
        save_weights(model, run_dir / "last.safetensors")
    distributed.barrier(ranks)  # rank 0 has written best.safetensors
    if val_idx is not None:  # test the weights chosen on validation ...
        load_weights(model, run_dir / "best.safetensors")
        test = evaluate(x_test, y_test)
    else:  # ... without a val split, the last ones, which the last evaluation has just measured
        test = val if val is not None else evaluate(x_test, y_test)
    del net  # DDP's reducer must go before its process group, or gloo can abort the process at exit
    gc.collect()
    distributed.stop(ranks)
    summary = {
        "model": cfg.model, "model_kwargs": cfg.model_kwargs, "recipe": cfg.recipe, "dataset": ds.name,
        "image_size": f"{ds.image_size[0]}x{ds.image_size[1]}" + (f" resized to {size}x{size}"
                                                                  if ds.image_size != (size, size) else ""),
        "train_images": len(x_train), "val_images": len(x_val) if val_idx is not None else 0,
        "test_images": len(x_test), "params": stats.params, "macs": stats.macs, "epochs": st["epoch"],
        "steps": st["global_step"], "seed": cfg.seed, "device": str(device), "precision": precision,
        "processes": ranks.world, "threads": threads, "train_seconds": round(st["train_seconds"], 3),
        "wall_seconds": round(time.perf_counter() - wall_start, 3),
        "images_per_second": round(st["images_seen"] / max(st["train_seconds"], 1e-9), 1),
        "best_val_accuracy": st["best_accuracy"], "best_epoch": st["best_epoch"],
        "test_accuracy": test["accuracy"], "test_top5_accuracy": test["top5_accuracy"], "notes": ds.notes,
        "diagnoses": [d.to_dict() for d in monitor.diagnoses] if monitor else None, "run_dir": str(run_dir),
    }
    if monitor:
        monitor.close()
    if ranks.main:
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=1))
    return summary


def _write(log, record: dict) -> None:
    log.write(json.dumps(record) + "\n")


def _loss(logits: torch.Tensor, y: torch.Tensor, partner: torch.Tensor | None, own: torch.Tensor | None,
          criterion: nn.CrossEntropyLoss) -> torch.Tensor:
    """The training loss; under mixup / cutmix each image's loss weighs its own label by `own` and its
    partner's by the rest."""
    if partner is None:
        return criterion(logits.float(), y)
    smoothing = criterion.label_smoothing
    mine = nn.functional.cross_entropy(logits.float(), y, reduction="none", label_smoothing=smoothing)
    theirs = nn.functional.cross_entropy(logits.float(), y[partner], reduction="none", label_smoothing=smoothing)
    return (own * mine + (1 - own) * theirs).mean()


def _forward(model: nn.Module, x: torch.Tensor, device: torch.device, precision: str) -> torch.Tensor:
    with autocast(device, precision):  # the bare model: a re-run on one rank must not wait for the others
        return model(x)


MAX_RECOVERIES = 5  # on_nonfinite: stop after this many skips in a row, or this many rollbacks


def _report(monitor: GradientMonitor, log, bar, main: bool) -> None:
    """Write the monitor's newest sample and any new diagnosis to metrics.jsonl; warn once per diagnosis."""
    for sample in monitor.new_samples():
        _write(log, sample)
    for d in monitor.new_diagnoses():
        _write(log, {"type": "diagnosis", **d.to_dict()})
        if main:
            bar.write(f"warning: {d.message()}", file=sys.stderr)


def _stop(run_dir: Path, ranks, monitor: GradientMonitor, problem) -> None:
    if ranks.main:
        atomic_write_text(run_dir / "summary.json", json.dumps(
            {"status": "stopped", "step": problem.step, "diagnoses": [d.to_dict() for d in monitor.diagnoses],
             "run_dir": str(run_dir)}, indent=1))
    monitor.close()
    raise TrainingStopped(f"training stopped at step {problem.step}: {problem.kind.replace('_', ' ')}"
                          f"{' in ' + problem.layers[0] if problem.layers else ''}: {problem.evidence}; "
                          f"`cnnlab diagnose {run_dir}` explains (or --on-nonfinite skip)")


def _check_run_dir(run_dir: Path, cfg: TrainConfig, resume: bool) -> None:
    has_checkpoint = (run_dir / "checkpoints" / "latest").exists()
    if resume:
        if not has_checkpoint:
            raise CnnlabError(f"--resume: {run_dir} holds no checkpoint to continue from")
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
        for key, value in cfg.to_dict().items():
            if key not in ("quiet", "log_every", "compile", "keep_freed_memory") and saved.get(key) != value:
                raise CnnlabError(f"--resume: '{key}' was {saved.get(key)!r} in {run_dir}, now {value!r}; "
                                  f"resume with the same settings")
    elif has_checkpoint or (run_dir / "summary.json").exists():
        raise CnnlabError(f"--out {run_dir} already holds a run; add --resume to continue it or choose "
                          f"another folder")


def _check_input_size(model: nn.Module, name: str, size: int) -> None:
    minimum = getattr(model, "min_input_size", 1)
    if size < minimum:
        raise CnnlabError(f"{name} needs inputs of at least {minimum}x{minimum}, the data is {size}x{size}; "
                          f"pass --image-size {minimum} or larger")
