"""The training loop: SGD and backpropagation over device-resident batches, evaluation every epoch, atomic
checkpoints, exact resume. `train` reads top to bottom: setup, a flat loop over global steps, the summary."""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from typing import Callable

import torch
import torch.nn as nn

from ..diagnose.monitor import first_nonfinite_output
from ..diagnose.rules import Diagnosis, nonfinite
from ..errors import CnnlabError, TrainingStopped
from ..runtime import distributed
from ..runtime.device import autocast
from ..runtime.evaluate import metrics_from_logits, predict_logits
from ..runtime.tensors import normalize
from .checkpoint import check_optimizer_state
from .config import TrainConfig
from .finetune import freeze
from .optim import lr_at, set_lr
from .progressive import crop, frozen_at, resize, size_at, training_flops
from .pruning import epoch_order
from .setup import Run, Split, setup
from .sinks import Callbacks, MetricsLog, ProgressBar
from .step import Recovery, soft_targets


@dataclass
class TrainState:
    """The counters a checkpoint keeps. The epoch and the position in it follow from `step`."""
    step: int = 0  # optimiser steps taken (skipped non-finite steps count: they consumed their batch)
    best_accuracy: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0  # evaluations in a row without a better validation accuracy
    train_seconds: float = 0.0
    images_seen: int = 0
    metrics_bytes: int = 0  # length of metrics.jsonl at the checkpoint
    lr_halvings: int = 0
    loss_sum: torch.Tensor | None = None  # this epoch's, on the device: no synchronisation per step
    correct: torch.Tensor | None = None
    order_epoch: int = -1  # the epoch whose images `order` holds
    order: torch.Tensor | None = None  # that epoch's training images in the order they train
    weight: torch.Tensor | None = None  # each training image's loss weight in that epoch (None: all 1)
    sample_loss: torch.Tensor | None = None  # --prune: each image's loss when last trained on (inf: not yet)

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, saved: dict, device: torch.device, images: int) -> None:
        """The counters of a checkpoint, each checked (a state.json is as untrusted as any file); `images`:
        the size of the training split, which the per-image tensors must fit."""
        names = {f.name for f in fields(self)}
        if set(saved) != names:
            raise CnnlabError(f"the checkpoint's counters are {sorted(saved)[:4]}..., not this version's; "
                              f"it cannot be resumed")
        for k, v in saved.items():
            if not _counter_ok(k, v, images):
                raise CnnlabError(f"the checkpoint's counter '{k}' has an impossible value {str(v)[:60]}")
            setattr(self, k, v.to(device) if isinstance(v, torch.Tensor) else v)


def _counter_ok(key: str, v, images: int) -> bool:
    def whole(x, low: int = 0) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and x >= low

    def per_image(x, length: int | None = images) -> bool:
        return x is None or isinstance(x, torch.Tensor) and x.dim() == 1 and (length is None or len(x) == length)

    if key in ("loss_sum", "correct"):
        return isinstance(v, torch.Tensor) and v.dim() == 0
    if key in ("best_accuracy", "train_seconds"):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= -1
    if key == "order_epoch":
        return whole(v, -1)
    if key == "order":  # indices of training images
        return per_image(v, None) and (v is None or len(v) == 0 or (
            not v.is_floating_point() and 0 <= int(v.min()) and int(v.max()) < images))
    if key in ("weight", "sample_loss"):
        return per_image(v)
    return whole(v)


def _impossible_counter(st: TrainState, epochs_done: int, most_per_step: int) -> str | None:
    """What a checkpoint's counters claim that its step count rules out, or None (a tampered state.json would
    otherwise resume with a best accuracy of 5.0, or at a learning rate halved to zero)."""
    if not (st.best_accuracy == -1 or 0 <= st.best_accuracy <= 1):
        return f"best_accuracy is {st.best_accuracy}, not an accuracy"
    if not (st.best_epoch <= epochs_done and (st.best_epoch == 0) == (st.best_accuracy == -1)):
        return f"best_epoch is {st.best_epoch} after {epochs_done} epochs (best accuracy {st.best_accuracy})"
    if st.images_seen > st.step * most_per_step:
        return f"images_seen is {st.images_seen}, more than {st.step} steps of a batch take"
    # each skipped step halves the rate once, and up to Recovery.MAX rollbacks do before each checkpoint
    if st.lr_halvings > st.step + Recovery.MAX * (epochs_done + 1):
        return f"lr_halvings is {st.lr_halvings} after {st.step} steps"
    if st.bad_epochs > epochs_done:
        return f"bad_epochs is {st.bad_epochs} after {epochs_done} epochs"
    return None


def train(cfg: TrainConfig, resume: bool = False,
          on_step: Callable[[nn.Module, int], None] | None = None,
          on_epoch: Callable[[dict], None] | None = None, holdout_given: bool = False) -> dict:
    """Train as `cfg` says; returns the summary (also written to `<out>/summary.json`). Under torchrun,
    every rank calls this; rank 0 alone writes. `on_step(model, step)` runs after every optimiser step,
    `on_epoch(record)` after every epoch with its metrics line (an exception from either ends training,
    and the run is closed all the same). `holdout_given`: the user named `holdout` (as the command line does),
    so data with a test split of its own refuses it even at its default value."""
    wall_start = time.perf_counter()
    run = setup(cfg, resume, Callbacks(on_step, on_epoch), holdout_given)
    try:
        return _train(run, resume, wall_start)
    finally:
        run.close()


def _train(run: Run, resume: bool, wall_start: float) -> dict:
    cfg, model, sinks, epochs = run.cfg, run.model, run.sinks, run.epochs
    spe = epochs.total / cfg.epochs  # the schedule's steps per epoch: their mean, when pruned epochs are shorter
    metrics = sinks.first(MetricsLog)
    images = len(run.train.x)
    st = TrainState(loss_sum=torch.zeros((), device=run.device),
                    correct=torch.zeros((), device=run.device, dtype=torch.long),
                    sample_loss=torch.full((images,), math.inf, device=run.device) if cfg.prune else None)

    def checkpoint() -> None:
        if run.ranks.main:
            st.metrics_bytes = metrics.offset()
            extra = {"lookahead": run.lookahead.state_dict()} if run.lookahead else {}
            if run.monitor:
                extra["monitor"] = run.monitor.state_dict()
            run.folder.save_checkpoint(st.step, model, {
                **st.state_dict(), "optimizer": run.optimizer.state_dict(), "scaler": run.scaler.state_dict(),
                "rng": torch.get_rng_state(), **extra})

    def restore(rollback: bool = False) -> None:
        """The newest checkpoint: weights, optimiser, RNG, counters, and (unless rolling back from a fault the
        monitor must remember) the monitor's history."""
        saved = run.folder.load_checkpoint(model)
        try:
            slow, health = saved.pop("lookahead", None), saved.pop("monitor", None)
            check_optimizer_state(run.optimizer, saved["optimizer"])
            if run.lookahead is not None:
                run.lookahead.load_state_dict(slow)
            run.optimizer.load_state_dict(saved.pop("optimizer"))
            run.scaler.load_state_dict(saved.pop("scaler"))
            torch.set_rng_state(saved.pop("rng"))
        except (KeyError, ValueError, RuntimeError, TypeError, AttributeError) as exc:
            raise CnnlabError(f"{run.folder}: the checkpoint does not fit this run ({str(exc)[:200]})") from None
        if run.monitor is not None and health is not None and not rollback:
            run.monitor.load_state_dict(health)
        st.load_state_dict(saved, run.device, images)
        if st.step > epochs.total:
            raise CnnlabError(f"{run.folder}: its checkpoint is at step {st.step}, past the {epochs.total} steps of "
                              f"{cfg.epochs} epochs; resume with --epochs at least the epochs it trained")
        impossible = _impossible_counter(st, epochs.completed(st.step), run.batch + run.ranks.world)
        if impossible:
            raise CnnlabError(f"{run.folder}: the checkpoint's counter {impossible}; the checkpoint is damaged")

    def roll_back(problem: Diagnosis) -> None:
        """Back to the last checkpoint with the learning rate halved once more than before (each rollback
        halves again, even back to the same checkpoint). The checkpoint holds the epoch's batch order."""
        halvings = st.lr_halvings + 1
        restore(rollback=True)
        st.lr_halvings = halvings
        sinks.warn(f"warning: step {problem.step} rolled back to step {st.step}, learning rate halved "
                   f"({run.recovery.count()})")

    if resume:
        restore()
        if metrics:  # drop the lines the killed run logged after its checkpoint
            metrics.rewind(st.metrics_bytes)
        if (bar := sinks.first(ProgressBar)) is not None:
            bar.start_at(st.step)
    if cfg.on_nonfinite == "rollback" and not resume:
        checkpoint()  # something to roll back to before the first epoch ends

    # ---- the loop: one global step at a time; an epoch ends where the step count says -----------------------
    model.train()
    val = None
    tick = time.perf_counter()
    while st.step < epochs.total:
        epoch, s = epochs.locate(st.step)
        if st.order_epoch != epoch:  # a resumed run, and every rank, draws the same global batches
            order, weight = epoch_order(images, epoch, cfg.epochs, cfg.seed, cfg.prune, st.sample_loss)
            st.order_epoch, st.order = epoch, order.to(run.device)
            st.weight = weight.to(run.device) if weight is not None else None
            freeze_layers(run, frozen_at(run.freezing, epoch))
        batch_idx = st.order[s * run.batch:(s + 1) * run.batch]
        idx = batch_idx[run.ranks.rank::run.ranks.world]
        x, partner, own = run.augment.mix(run.augment(run.train.x[idx], idx, epoch, s), epoch, s)
        y = run.train.y[idx]
        target = soft_targets(y, run.dataset.num_classes, cfg.label_smoothing, partner, own)
        set_lr(run.optimizer, cfg, st.step, spe, st.lr_halvings)
        inputs = normalize(x, run.mean, run.std)
        if run.plan:
            size = size_at(run.plan, epoch, run.size)
            inputs = (crop(inputs, size, run.augment.generator(epoch, s, salt=2)) if cfg.progressive_crop
                      else resize(inputs, size))
        result = run.step(inputs, target, st.step + 1, st.weight[idx] if st.weight is not None else None)
        st.step += 1
        if not result.finite:
            problem = explain_nonfinite(run, st.step, result, x)
            log_health(run)
            action = run.recovery.decide()
            if action == "stop":
                stop(run, problem)
            if action == "rollback":
                roll_back(problem)
                continue
            st.lr_halvings += 1
            sinks.warn(f"warning: step {problem.step} skipped, learning rate halved ({run.recovery.count()})")
        else:
            run.recovery.ok()
            log_health(run)
            st.loss_sum += result.loss
            st.correct += (result.logits.argmax(1) == y).sum()
            if st.sample_loss is not None:
                st.sample_loss[batch_idx] = distributed.gather_rows(result.losses, len(batch_idx), run.ranks)
        if run.lookahead is not None:
            run.lookahead.after_step(model, st.step, epochs.total)
        st.images_seen += len(idx) * run.ranks.world
        sinks.after_step(st.step, model)
        lr = lr_at(run.optimizer, cfg, st.step, spe, st.lr_halvings)  # the rate from here on
        if st.step % cfg.log_every == 0:  # rank 0's share of the batch
            sinks.log({"type": "step", "step": st.step, "epoch": epoch + 1, "loss": result.loss_value, "lr": lr})
        if epochs.is_end(st.step):  # ---- the end of an epoch: evaluate, keep the best, checkpoint ----
            broken = nonfinite_state(run, st.step)  # e.g. BN statistics overflowed while the loss stayed finite
            if broken is not None:
                run.sinks.log({"type": "diagnosis", **broken.to_dict(), "message": broken.message()})
                if run.recovery.decide() != "rollback":
                    stop(run, broken)
                roll_back(broken)
                continue
            if run.lookahead is not None and st.step == epochs.total:
                run.lookahead.finish(model)
            st.train_seconds += time.perf_counter() - tick
            last, steps = st.step == epochs.total, epochs.lengths[epoch]
            record = {"type": "epoch", "epoch": epoch + 1, "step": st.step,
                      "train_loss": float(distributed.all_sum(st.loss_sum, run.ranks)) / run.ranks.world / steps,
                      "train_accuracy": float(distributed.all_sum(st.correct, run.ranks)) / (steps * run.batch),
                      "lr": lr, "train_seconds": st.train_seconds}
            if last or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0):
                val = evaluate(run, run.val or run.test)
                record.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
                if val["accuracy"] > st.best_accuracy:
                    st.best_accuracy, st.best_epoch, st.bad_epochs = val["accuracy"], epoch + 1, 0
                    if run.ranks.main:
                        run.folder.save_weights(model, "best")
                else:
                    st.bad_epochs += 1
            sinks.log(record)
            st.loss_sum.zero_()
            st.correct.zero_()
            checkpoint()
            tick = time.perf_counter()
            if cfg.early_stop and st.bad_epochs >= cfg.early_stop:
                sinks.warn(f"early stop: no better validation accuracy for {cfg.early_stop} evaluations")
                break
        elif cfg.checkpoint_every and st.step % cfg.checkpoint_every == 0:
            checkpoint()

    # ---- the result: test the weights chosen on validation (without a val split, the last ones) ----------
    if run.monitor is not None:
        run.monitor.finish()
        log_health(run)
    if run.ranks.main:
        run.folder.save_weights(model, "last")
    distributed.barrier(run.ranks)  # rank 0 has written best.safetensors
    if run.val is not None:
        run.folder.load_weights(model, "best")
        test = evaluate(run, run.test)
    else:
        test = val if val is not None else evaluate(run, run.test)
    train_eval = evaluate(run, spread(run.train, len(run.test.x)))["accuracy"] if cfg.eval_train else None
    ds, size = run.dataset, run.size
    top5 = ds.num_classes > 5
    summary = {
        "status": "finished", "model": cfg.model, "model_kwargs": cfg.model_kwargs, "recipe": cfg.recipe,
        "variant": cfg.variant,
        "dataset": ds.name, "image_size": f"{ds.image_size[0]}x{ds.image_size[1]}" + (
            f" resized to {size}x{size}" if ds.image_size != (size, size) else ""),
        "classes": ds.num_classes, "train_images": len(run.train.x),
        "val_images": len(run.val.x) if run.val is not None else 0, "test_images": len(run.test.x),
        "params": run.stats.params, "macs": run.stats.macs, "epochs": epochs.completed(st.step), "steps": st.step,
        "train_flops": training_flops(epochs.lengths, st.step, run.batch, run.flops_per_image),
        "seed": cfg.seed, "device": str(run.device), "precision": run.precision, "processes": run.ranks.world,
        "threads": run.threads, "train_seconds": round(st.train_seconds, 3),
        "wall_seconds": round(time.perf_counter() - wall_start, 3),
        "images_per_second": round(st.images_seen / max(st.train_seconds, 1e-9), 1),
        "best_val_accuracy": st.best_accuracy, "best_epoch": st.best_epoch,
        "test_accuracy": test["accuracy"], "test_top5_accuracy": test["top5_accuracy"] if top5 else None,
        "train_eval_accuracy": train_eval,
        "notes": ds.notes, "diagnoses": [d.to_dict() for d in run.monitor.diagnoses] if run.monitor else None,
        "environment": run.environment, "init": run.init, "run_dir": str(run.folder),
    }
    if run.ranks.main:
        run.folder.write_summary(summary)
        if run.cfg.report:
            write_run_report(run, summary)
    return summary


def freeze_layers(run: Run, count: int) -> None:
    """--freeze-from: the first `count` layers stop training (a no-op once they have); the gradient monitor
    stops expecting gradients from them."""
    if count:
        names = freeze(run.model, count)
        if run.monitor is not None:
            run.monitor.exclude({n.rpartition(".")[0] for n in names})


def write_run_report(run: Run, summary: dict) -> None:
    """report.html beside the summary. The run has finished and its files are whole, so a report that cannot
    be written is a warning, not a failed run."""
    from ..report.html import write_report

    try:
        summary["report"] = str(write_report(run.folder.path))
    except (CnnlabError, OSError, ValueError, RuntimeError) as exc:
        run.sinks.warn(f"report.html not written ({exc}); `cnnlab report {run.folder.path}` tries again")


def spread(split: Split, count: int) -> Split:
    """`count` images (at most all) spread evenly over a split: every class, when the split is sorted by class."""
    index = torch.linspace(0, len(split.x) - 1, min(count, len(split.x)), device=split.x.device).round().long()
    return Split(split.x[index], split.y[index])


def evaluate(run: Run, split) -> dict:
    """Each rank predicts every world-th image; the logits are gathered so all ranks agree."""
    ranks = run.ranks
    distributed.broadcast_buffers(run.model, ranks)
    local = predict_logits(run.model, split.x[ranks.rank::ranks.world], run.mean, run.std, run.precision,
                           tta=run.cfg.tta)
    return metrics_from_logits(distributed.gather_rows(local, len(split.x), ranks), split.y,
                               run.dataset.num_classes)


def explain_nonfinite(run: Run, step: int, result, x: torch.Tensor) -> Diagnosis:
    """Name where a non-finite step went wrong: through the monitor when it watches (it also knows whether
    the gradients were exploding first), from the parameters' gradient norms when it does not."""
    if run.monitor is not None:
        problem = run.monitor.nonfinite(step, result.loss_value, result.norms)
    else:
        named = [(n.rsplit(".", 1)[0], p) for n, p in run.model.named_parameters() if p.requires_grad]
        bad_weights = [n for n, p in named if not torch.isfinite(p).all()]
        problem = nonfinite(step, result.loss_value, [n for n, _ in named],
                            (result.norms ** 2).tolist(), bad_weights)
    if not problem.layers:  # the loss: find the layer where the forward pass first went wrong
        def forward() -> torch.Tensor:
            with autocast(run.device, run.precision):  # the bare model: no other rank waits for this
                return run.model(normalize(x, run.mean, run.std))

        where = (run.monitor.locate_nonfinite_forward(forward) if run.monitor is not None
                 else first_nonfinite_output(run.model, forward))
        problem.layers = [where] if where else []
        problem.evidence += (f"; the first layer whose output is not finite: {where}" if where else
                             "; every layer's output is finite, so the loss itself overflowed")
    if run.monitor is None:
        run.sinks.log({"type": "diagnosis", **problem.to_dict(), "message": problem.message()})
    return problem


def nonfinite_state(run: Run, step: int) -> Diagnosis | None:
    """Once an epoch, with one synchronisation: every weight and buffer finite? A loss can stay finite while
    batch-norm running statistics overflow, and evaluation would then be meaningless."""
    named = [(n, t) for n, t in run.model.state_dict().items() if t.is_floating_point()]
    if bool(torch.stack(torch._foreach_norm([t.float() for _, t in named])).isfinite().all()):
        return None
    name = next(n for n, t in named if not torch.isfinite(t).all())
    return Diagnosis("nonfinite", step, [name.rsplit(".", 1)[0]],
                     f"'{name}' is no longer finite after epoch {run.epochs.completed(step)}")


def log_health(run: Run) -> None:
    """The monitor's newest samples and diagnoses to the sinks (a diagnosis also warns, once)."""
    if run.monitor is None:
        return
    for sample in run.monitor.new_samples():
        run.sinks.log(sample)
    for d in run.monitor.new_diagnoses():
        run.sinks.log({"type": "diagnosis", **d.to_dict(), "message": d.message()})


def stop(run: Run, problem: Diagnosis) -> None:
    diagnoses = run.monitor.diagnoses if run.monitor is not None else [problem]
    if run.ranks.main:
        run.folder.write_summary({"status": "stopped", "step": problem.step,
                                  "diagnoses": [d.to_dict() for d in diagnoses], "run_dir": str(run.folder)})
    raise TrainingStopped(f"training stopped at step {problem.step}: {problem.kind.replace('_', ' ')}"
                          f"{' in ' + problem.layers[0] if problem.layers else ''}: {problem.evidence}; "
                          f"`cnnlab diagnose {run.folder}` explains (or --on-nonfinite skip)")
