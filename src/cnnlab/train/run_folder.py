"""A run folder and every file in it, for the trainer that writes it and for every command that reads it
(`eval`, `predict`, `diagnose`, `invariance`, `search`, the studies):

    config.yaml       the settings that trained, every one of them
    model.json        how to rebuild the model: name, switches, classes, channels, image size, normalisation
    metrics.jsonl     a JSON line per logged step, per epoch, per gradient-health sample and per diagnosis
    checkpoints/      the newest complete checkpoint (see checkpoint.py)
    best.safetensors, last.safetensors   the weights chosen on validation, and the last ones
    summary.json      the result, written when training ends (or stops)
    .lock             held by the training process that writes the folder

Everything read back is checked: a damaged or tampered file is refused in one line naming it."""
from __future__ import annotations

import fcntl
import json
import math
import os
from pathlib import Path

import torch
import yaml

from ..errors import CnnlabError
from ..models.registry import FROM_THE_DATA
from ..runtime.files import atomic_write_text, load_weights, read_text_capped, resolved, save_weights
from ..runtime.yaml_text import load_yaml
from .checkpoint import load_checkpoint, save_checkpoint

# metrics.jsonl: the longest record (a gradient-health sample names every layer) and the whole file
MAX_RECORD_BYTES = 16 << 20
MAX_METRICS_BYTES = 1 << 30

# model.json: each key and the check its value must pass
_SPEC = {
    "model": lambda v: isinstance(v, str) and 0 < len(v) < 100,
    "model_kwargs": lambda v: isinstance(v, dict),
    "num_classes": lambda v: _int(v) and 2 <= v <= 100_000,
    "in_channels": lambda v: _int(v) and 1 <= v <= 64,
    "image_size": lambda v: _int(v) and 1 <= v <= 4096,
    # in [0, 1] units; the trainer writes a std of at least 1e-3 (a constant channel), so nothing divides to inf
    "mean": lambda v: isinstance(v, list) and all(_real(x) and 0 <= x <= 1 for x in v),
    "std": lambda v: isinstance(v, list) and all(_real(x) and 1e-3 <= x <= 1 for x in v),
    "classes": lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v) and len(set(v)) == len(v),
}
# keys model.json may lack (runs written before they were recorded), checked where present
_OPTIONAL_SPEC = {
    "tta": lambda v: _int(v) and 0 <= v <= 2,
    "precision": lambda v: v in ("fp32", "bf16", "fp16"),
}

# metrics.jsonl: what each type of record must hold for the commands that read it (other types pass as they are)
_RECORDS = {
    "step": {"step": lambda v: _count(v), "loss": lambda v: _number(v)},
    "epoch": {"epoch": lambda v: _count(v), "step": lambda v: _count(v), "train_loss": lambda v: _number(v),
              "train_accuracy": lambda v: _number(v), "lr": lambda v: _number(v)},
    "layers": {"step": lambda v: _count(v), "loss": lambda v: _number(v),
               "grad_norm": lambda v: _per_layer(v) and len(v) > 0},
    "diagnosis": {"kind": lambda v: isinstance(v, str), "step": lambda v: _count(v),
                  "layers": lambda v: _texts(v), "evidence": lambda v: isinstance(v, str),
                  "remedies": lambda v: _texts(v)},
}

# ... and the keys a record may have, checked where present
_OPTIONAL_RECORDS = {
    "layers": {key: lambda v: _per_layer(v) for key in ("update_ratio", "weight_norm", "unchanged_fraction")},
}


def _per_layer(v) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and _number(x) for k, x in v.items())


# summary.json: the keys its readers use, checked where present; a finished run's must all be there
_SUMMARY_ANY = {
    "status": lambda v: isinstance(v, str),
    "diagnoses": lambda v: v is None or isinstance(v, list) and all(
        isinstance(d, dict) and isinstance(d.get("kind"), str) for d in v),
    "train_eval_accuracy": lambda v: v is None or _real(v) and 0 <= v <= 1,
}
_SUMMARY_FINISHED = {
    "test_accuracy": lambda v: _real(v) and 0 <= v <= 1,
    "best_epoch": lambda v: _count(v), "epochs": lambda v: _count(v), "params": lambda v: _count(v),
    "train_seconds": lambda v: _real(v) and v >= 0,
    "precision": lambda v: isinstance(v, str),
}


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v) -> bool:
    """A JSON number, NaN and infinities included (a loss that diverged is recorded as it was), that a float
    holds (JSON's integers have no limit; 10**400 would overflow where it is plotted)."""
    return isinstance(v, float) or _int(v) and abs(v) < 2 ** 1000


def _count(v) -> bool:
    """A step or epoch count: a whole number that a float holds exactly."""
    return _int(v) and 0 <= v < 2 ** 53


def _texts(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _check_keys(path: Path, values: dict, required: dict, optional: dict) -> None:
    """Each key of `required` present in `values`, and every key of either mapping that is present passing
    its check; else one line naming `path` and the key."""
    for key, ok in {**required, **optional}.items():
        if key not in values and key in required:
            raise CnnlabError(f"{path}: '{key}' is missing")
        if key in values and not ok(values[key]):
            raise CnnlabError(f"{path}: '{key}' has an impossible value {str(values[key])[:60]}")


def _real(v) -> bool:
    return _number(v) and math.isfinite(v)


class RunFolder:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config = self.path / "config.yaml"
        self.spec = self.path / "model.json"
        self.metrics = self.path / "metrics.jsonl"
        self.summary = self.path / "summary.json"
        self._lock = None

    def __str__(self) -> str:
        return str(self.path)

    def owns(self, path: Path) -> bool:
        """Whether writing `path` would overwrite one of the run's own files (or anything in its checkpoints)."""
        path = resolved(path)
        own = {resolved(f) for f in (self.spec, self.config, self.summary, self.metrics, self.weights("best"),
                                     self.weights("last"), self.path / ".lock", self.path / "report.html")}
        return path in own or resolved(self.path / "checkpoints") in path.parents

    def weights(self, which: str = "best") -> Path:
        if which not in ("best", "last"):
            raise CnnlabError(f"--weights must be best or last, got '{which}'")
        return self.path / f"{which}.safetensors"

    # -- the trainer's side ---------------------------------------------------------------------------------
    @property
    def has_checkpoint(self) -> bool:
        return (self.path / "checkpoints" / "latest").is_file()

    @property
    def holds_a_run(self) -> bool:
        return self.has_checkpoint or self.summary.exists()

    def claim(self) -> None:
        """Take the folder for one training process: a second writer is refused while the first lives; the
        lock of a dead process is released by the kernel, so it is taken over."""
        if self.path.exists() and not self.path.is_dir():
            raise CnnlabError(f"--out {self.path}: is a file, not a folder")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            handle = open(self.path / ".lock", "a+")
        except OSError as exc:
            raise CnnlabError(f"--out {self.path}: cannot write there ({exc.strerror})") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise CnnlabError(f"--out {self.path}: another training ({owner}) is writing this folder; wait for "
                              f"it or choose another folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._lock = handle

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing drops the flock
            self._lock = None

    def create(self, config: dict, spec: dict) -> None:
        atomic_write_text(self.config, yaml.safe_dump(config, sort_keys=False))
        atomic_write_text(self.spec, json.dumps(spec, indent=1))
        self.metrics.write_text("")

    def write_summary(self, summary: dict) -> None:
        atomic_write_text(self.summary, json.dumps(summary, indent=1))

    def save_weights(self, model: torch.nn.Module, which: str) -> None:
        save_weights(model, self.weights(which))

    def save_checkpoint(self, step: int, model: torch.nn.Module, state: dict) -> None:
        save_checkpoint(self.path, step, model, state)

    def load_checkpoint(self, model: torch.nn.Module) -> dict:
        return load_checkpoint(self.path, model)

    # -- the readers' side ----------------------------------------------------------------------------------
    def require(self, what: str = "--checkpoint") -> "RunFolder":
        if not self.path.is_dir() or not self.spec.is_file():
            raise CnnlabError(f"{what} {self.path}: not a cnnlab run folder (no model.json)")
        return self

    def read_config(self) -> dict:
        """config.yaml as a mapping (its values are checked by the config's own rules)."""
        try:
            values = load_yaml(read_text_capped(self.config))
        except FileNotFoundError:
            raise CnnlabError(f"{self.config}: missing; the run folder is incomplete") from None
        except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
            raise CnnlabError(f"{self.config}: not a valid run config ({str(exc).splitlines()[0]})") from None
        if not isinstance(values, dict):
            raise CnnlabError(f"{self.config}: expected a mapping of settings, got {type(values).__name__}")
        return values

    def read_spec(self) -> dict:
        """model.json, each value checked; `classes` must name every class."""
        self.require()
        try:
            spec = json.loads(read_text_capped(self.spec))
        except (ValueError, OSError) as exc:
            raise CnnlabError(f"{self.spec}: not valid JSON ({exc})") from None
        if not isinstance(spec, dict):
            raise CnnlabError(f"{self.spec}: expected a JSON object, got {type(spec).__name__}")
        _check_keys(self.spec, spec, _SPEC, _OPTIONAL_SPEC)
        if len(spec["classes"]) != spec["num_classes"] or \
                not len(spec["mean"]) == len(spec["std"]) == spec["in_channels"]:
            raise CnnlabError(f"{self.spec}: classes, mean and std do not match num_classes and in_channels")
        given_twice = sorted(set(spec["model_kwargs"]) & set(FROM_THE_DATA))
        if given_twice:
            raise CnnlabError(f"{self.spec}: model_kwargs sets {given_twice[0]}, which the file gives as a key of "
                              f"its own; the file is damaged")
        return spec

    def read_data(self) -> dict:
        """The data the run trained and was tested on, as `load_dataset` takes it: `data` (a registered name, or a
        path as the trainer resolved it), `holdout`, `image_size` (as given to the loader: None for the data's
        own) and `skip_bad`. `data` and `holdout` are model.json's; runs written before it recorded them have
        them from config.yaml (a relative path there is taken from the current folder)."""
        spec, config = self.read_spec(), self.read_config()
        source = {key: spec[key] if key in spec else config.get(key) for key in ("data", "holdout")}
        source.update(image_size=config.get("image_size"), skip_bad=config.get("skip_bad", False))
        checks = {"data": lambda v: isinstance(v, str) and v.strip(), "holdout": _number,
                  "image_size": lambda v: v is None or _int(v), "skip_bad": lambda v: isinstance(v, bool)}
        for key, ok in checks.items():
            if not ok(source[key]):
                raise CnnlabError(f"{self.path}: the run's '{key}' has an impossible value {str(source[key])[:60]}")
        return source

    def read_summary(self) -> dict:
        try:
            summary = json.loads(read_text_capped(self.summary))
        except FileNotFoundError:
            raise CnnlabError(f"{self.path}: no summary.json; the run has not finished") from None
        except (ValueError, OSError) as exc:
            raise CnnlabError(f"{self.summary}: not valid JSON ({exc})") from None
        if not isinstance(summary, dict):
            raise CnnlabError(f"{self.summary}: expected a JSON object")
        finished = summary.get("status") == "finished"
        _check_keys(self.summary, summary, _SUMMARY_FINISHED if finished else {}, _SUMMARY_ANY)
        return summary

    def read_metrics(self) -> list[dict]:
        """Every record of metrics.jsonl, each a JSON object with a type."""
        if not self.metrics.is_file():
            raise CnnlabError(f"{self.path}: not a cnnlab run folder (no metrics.jsonl)")
        records = []
        for n, line in enumerate(self._metrics_lines(), 1):
            try:
                record = json.loads(line)
            except ValueError:
                raise CnnlabError(f"{self.metrics}: line {n} is not JSON; the file is damaged") from None
            if not isinstance(record, dict) or not isinstance(record.get("type"), str):
                raise CnnlabError(f"{self.metrics}: line {n} is not a metrics record")
            required = _RECORDS.get(record["type"], {})
            for key, ok in {**required, **_OPTIONAL_RECORDS.get(record["type"], {})}.items():
                if key not in record:
                    if key in required:
                        raise CnnlabError(f"{self.metrics}: line {n}, a '{record['type']}' record, has no '{key}'")
                    continue
                if not ok(record[key]):
                    raise CnnlabError(f"{self.metrics}: line {n}: '{key}' has an impossible value "
                                      f"{str(record[key])[:60]}")
            records.append(record)
        return records

    def _metrics_lines(self):
        """metrics.jsonl line by line, each read up to a cap: a damaged file of one endless line, or a file
        larger than any run writes, is refused at the cap instead of read into memory whole."""
        read = 0
        with open(self.metrics, "rb") as fh:
            for n, line in enumerate(iter(lambda: fh.readline(MAX_RECORD_BYTES + 1), b""), 1):
                read += len(line)
                if len(line) > MAX_RECORD_BYTES:
                    raise CnnlabError(f"{self.metrics}: line {n} is over {MAX_RECORD_BYTES >> 20} MiB; "
                                      f"the file is damaged")
                if read > MAX_METRICS_BYTES:
                    raise CnnlabError(f"{self.metrics}: over {MAX_METRICS_BYTES >> 20} MiB, more than a run writes")
                yield line.decode("utf-8", errors="replace").rstrip("\r\n")

    def load_weights(self, model: torch.nn.Module, which: str = "best") -> None:
        load_weights(model, self.weights(which))
