"""Where the trainer's records go. A record is a dict with a "type": "step" (every --log-every steps),
"epoch", "layers" (a gradient-health sample) or "diagnosis". Sinks are chosen once, on rank 0 (callbacks on
every rank); the trainer hands each record to each sink and closes them however training ends."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Callable

import torch.nn as nn

from ..errors import CnnlabError


class Sink:
    def log(self, record: dict) -> None:
        """One record, as it is produced."""

    def after_step(self, step: int, model: nn.Module) -> None:
        """After every optimiser step (no record: most steps log nothing)."""

    def close(self) -> None:
        pass


class MetricsLog(Sink):
    """metrics.jsonl. A resumed run first truncates it to the bytes its checkpoint had seen, dropping the
    lines the killed run logged after its last checkpoint, so the file equals an uninterrupted run's."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = open(path, "a")

    def rewind(self, offset: int) -> None:
        """Cut the file back to `offset` bytes, which must end a line of it: a checkpoint's offset past the end,
        or inside a line, belongs to another log, and cutting there would damage this one."""
        self.file.flush()
        last = b"\n"  # offset 0 ends no line but cuts none either
        if offset:
            with open(self.path, "rb") as f:
                f.seek(offset - 1)
                last = f.read(1)  # b"" past the end
        if last != b"\n":
            raise CnnlabError(f"{self.path}: the checkpoint's log position {offset} is not the end of one of its "
                              f"{self.path.stat().st_size} bytes' lines; the checkpoint is not this run's")
        os.truncate(self.path, offset)

    def log(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")

    def offset(self) -> int:
        """Bytes written so far (flushed): what a checkpoint records."""
        self.file.flush()
        return self.file.tell()

    def close(self) -> None:
        self.file.close()


class ProgressBar(Sink):
    """A tqdm bar in images, refreshed only when a step record arrives; diagnoses become warnings."""

    def __init__(self, total_steps: int, images_per_step: int, desc: str, epochs: int, quiet: bool) -> None:
        from tqdm import tqdm

        self.per_step, self.epochs = images_per_step, epochs
        self.bar = tqdm(total=total_steps * images_per_step, unit="img", unit_scale=True, disable=quiet,
                        dynamic_ncols=True, desc=desc, file=sys.stderr)

    def start_at(self, step: int) -> None:
        """A resumed run: the images before `step` were trained by the run that was killed."""
        self.bar.n = self.bar.initial = self.bar.last_print_n = step * self.per_step

    def log(self, record: dict) -> None:
        kind = record["type"]
        if kind == "step":
            self.bar.update(min(record["step"] * self.per_step, self.bar.total) - self.bar.n)
            self.bar.set_postfix(epoch=f"{record['epoch']}/{self.epochs}", loss=f"{record['loss']:.3f}",
                                 refresh=False)
        elif kind == "epoch":
            self.bar.update(min(record["step"] * self.per_step, self.bar.total) - self.bar.n)
            post = {"epoch": f"{record['epoch']}/{self.epochs}", "loss": f"{record['train_loss']:.3f}"}
            if "val_accuracy" in record:
                post["val_acc"] = f"{record['val_accuracy']:.4f}"
            self.bar.set_postfix(post, refresh=False)
        elif kind == "diagnosis":
            self.write(f"warning: {record['message']}")

    def write(self, line: str) -> None:
        self.bar.write(line, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


class TensorBoard(Sink):
    """Scalars (loss, accuracy, learning rate, gradient norms per layer) as TensorBoard event files."""

    def __init__(self, folder: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise CnnlabError("--tensorboard needs the tensorboard package: pip install 'cnnlab[tensorboard]'") \
                from None
        self.writer = SummaryWriter(str(folder))

    def log(self, record: dict) -> None:
        step, kind = record.get("step", 0), record["type"]
        if kind == "step":
            self.writer.add_scalar("train/loss", record["loss"], step)
            self.writer.add_scalar("train/lr", record["lr"], step)
        elif kind == "epoch":
            for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
                if key in record:
                    self.writer.add_scalar(f"epoch/{key}", record[key], step)
        elif kind == "layers":
            for layer, value in record["grad_norm"].items():
                self.writer.add_scalar(f"grad_norm/{layer}", value, step)
        elif kind == "diagnosis":
            self.writer.add_text("diagnosis", record["message"], step)

    def close(self) -> None:
        self.writer.close()


class Callbacks(Sink):
    """The Python API's `on_step(model, step)` and `on_epoch(record)` (e.g. the search's pruning)."""

    def __init__(self, on_step: Callable[[nn.Module, int], None] | None,
                 on_epoch: Callable[[dict], None] | None) -> None:
        self.on_step, self.on_epoch = on_step, on_epoch

    def log(self, record: dict) -> None:
        if self.on_epoch is not None and record["type"] == "epoch":
            self.on_epoch(record)

    def after_step(self, step: int, model: nn.Module) -> None:
        if self.on_step is not None:
            self.on_step(model, step)


class Sinks(Sink):
    """All of a run's sinks as one."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks

    def log(self, record: dict) -> None:
        for s in self.sinks:
            s.log(record)

    def after_step(self, step: int, model: nn.Module) -> None:
        for s in self.sinks:
            s.after_step(step, model)

    def first(self, kind: type) -> Sink | None:
        return next((s for s in self.sinks if isinstance(s, kind)), None)

    def warn(self, line: str) -> None:
        """A warning line on stderr, above the progress bar if there is one."""
        bar = self.first(ProgressBar)
        if bar is not None:
            bar.write(line)
        elif os.environ.get("RANK", "0") == "0":
            print(line, file=sys.stderr)

    def close(self) -> None:
        for s in self.sinks:
            try:
                s.close()
            except Exception:  # noqa: BLE001  (closing the others matters more than one failure)
                pass
