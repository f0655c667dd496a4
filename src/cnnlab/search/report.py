"""`cnnlab search report DIR`: the leaderboard of a search, the accuracy-against-parameters plot with its
Pareto front, and the best architecture exported as a model config `cnnlab train --model-config` reads."""
from __future__ import annotations

import json
from pathlib import Path

import optuna
import yaml

from ..errors import CnnlabError
from ..train.checkpoint import atomic_write_text


PARETO_COST = {"params": "params", "macs": "macs", "latency": "latency_ms"}  # objective -> leaderboard column


def describe(arch: dict) -> str:
    stages = "-".join(f"{s['blocks']}x{s['width']}k{s['kernel']}" for s in arch["stages"])
    head = arch["head"]["type"] + ("[" + ",".join(map(str, arch["head"].get("widths", []))) + "]"
                                   if arch["head"]["type"] == "fc" else "")
    valid = " valid" if arch.get("padding", "same") == "valid" else ""
    group = f" {arch['group']}" if arch.get("group", "none") != "none" else ""
    return (f"{stages} {arch['downsample']}{valid} {'skip' if arch['skip'] else 'plain'} "
            f"{'bn' if arch['bn'] else 'nobn'} {arch['activation']} {head}{group}")


def load_results(out: Path, study: str | None = None, storage: str | None = None) -> dict:
    out = Path(out)
    url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    if storage is None and not (out / "study.db").exists():
        raise CnnlabError(f"{out}: no study.db here; give the folder passed to `cnnlab search --out`")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = optuna.get_all_study_names(url)
    if not names:
        raise CnnlabError(f"{url}: holds no study")
    if study is None and len(names) > 1:
        raise CnnlabError(f"{url} holds several studies ({', '.join(names)}); choose one with --study")
    s = optuna.load_study(study_name=study or names[0], storage=url)
    rows, rejected, pruned, failed = [], [], [], []
    for t in s.trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            rows.append({"trial": t.number, "architecture": describe(t.user_attrs["arch"]), "arch": t.user_attrs["arch"],
                         "settings": {k: v for k, v in t.params.items() if k in ("lr", "weight_decay", "batch_size")},
                         "val_accuracy": t.values[0], "params": t.user_attrs["params"], "macs": t.user_attrs["macs"],
                         "latency_ms": t.user_attrs.get("latency_ms"),
                         "train_seconds": t.user_attrs["train_seconds"], "run_dir": t.user_attrs["run_dir"]})
        elif "rejected" in t.user_attrs:
            rejected.append({"trial": t.number, "reason": t.user_attrs["rejected"]})
        elif "stopped" in t.user_attrs:
            failed.append({"trial": t.number, "reason": "diverged: " + t.user_attrs["stopped"]})
        elif "pruned_after_epochs" in t.user_attrs:
            pruned.append({"trial": t.number, "architecture": describe(t.user_attrs["arch"]),
                           "epochs": t.user_attrs["pruned_after_epochs"]})
    rows.sort(key=lambda r: -r["val_accuracy"])
    objectives = s.user_attrs.get("objectives", ["accuracy"])
    cost = PARETO_COST[objectives[1] if len(objectives) > 1 else "params"]
    for r in rows:  # Pareto front of (accuracy up, cost down): the second objective, else parameters
        r["pareto"] = not any(o["val_accuracy"] >= r["val_accuracy"] and o[cost] < r[cost] or
                              o["val_accuracy"] > r["val_accuracy"] and o[cost] <= r[cost] for o in rows)
    return {"study": s.study_name, "objectives": len(s.directions), "pareto_against": cost, "trials": len(s.trials),
            "leaderboard": rows, "rejected": rejected, "pruned": pruned, "failed": failed}


def write_outputs(results: dict, out: Path) -> dict:
    """best_model.yaml (for --model-config) and pareto.png, next to the study."""
    out = Path(out)
    files = {}
    if results["leaderboard"]:
        best = results["leaderboard"][0]
        config = {"model": "cnn", "model_kwargs": {"arch": best["arch"]}, **best["settings"]}
        atomic_write_text(out / "best_model.yaml", yaml.safe_dump(config, sort_keys=False))
        files["best_model"] = str(out / "best_model.yaml")
        files["pareto_plot"] = _plot(results["leaderboard"], results["pareto_against"], out / "pareto.png")
    return files


def _plot(rows: list[dict], cost: str, path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([r[cost] for r in rows], [r["val_accuracy"] for r in rows], s=14, label="trials")
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: r[cost])
    ax.plot([r[cost] for r in front], [r["val_accuracy"] for r in front], "r.-", label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel({"params": "parameters", "macs": "multiply-adds", "latency_ms": "ms per image (batch 1)"}[cost])
    ax.set_ylabel("validation accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def format_results(results: dict, files: dict) -> str:
    lines = [f"study {results['study']}: {results['trials']} trials, {len(results['leaderboard'])} trained, "
             f"{len(results['pruned'])} stopped early by the pruner, {len(results['failed'])} diverged, "
             f"{len(results['rejected'])} rejected before training"]
    timed = any(r["latency_ms"] is not None for r in results["leaderboard"])
    lines.append(f"{'#':>4} {'val acc':>8} {'params':>10} {'MACs':>12} {'time':>7}" + (" latency" if timed else "")
                 + "  architecture")
    for r in results["leaderboard"]:
        latency = f" {r['latency_ms']:5.2f}ms" if timed and r["latency_ms"] is not None else " " * 8 * timed
        lines.append(f"{r['trial']:>4} {r['val_accuracy']:8.4f} {r['params']:10,} {r['macs']:12,} "
                     f"{r['train_seconds']:6.1f}s{latency}  {r['architecture']}{'  *' if r['pareto'] else ''}")
    lines.extend(f"pruned #{r['trial']} after {r['epochs']} epochs: {r['architecture']}" for r in results["pruned"])
    lines.extend(f"rejected #{r['trial']}: {r['reason']}" for r in results["rejected"])
    lines.extend(f"failed #{r['trial']}: {r['reason']}" for r in results["failed"])
    against = {"params": "parameters", "macs": "multiply-adds", "latency_ms": "latency"}[results["pareto_against"]]
    lines.append(f"*: on the Pareto front of accuracy against {against}")
    lines.extend(f"{k.replace('_', ' ')}: {v}" for k, v in files.items())
    return "\n".join(lines)


def report(out: Path, study: str | None = None, storage: str | None = None, as_json: bool = False) -> str:
    results = load_results(out, study, storage)
    files = write_outputs(results, out)
    return json.dumps({**results, **files}) if as_json else format_results(results, files)
