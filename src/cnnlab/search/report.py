"""`cnnlab search report DIR`: the leaderboard of a search, the accuracy-against-parameters plot with its
Pareto front, and the best architecture exported as a model config `cnnlab train --model-config` reads."""
from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import optuna
import yaml

from ..errors import CnnlabError
from ..runtime.files import atomic_write_text
from .space import TRAIN_KEYS


PARETO_COST = {"params": "params", "macs": "macs", "latency": "latency_ms"}  # objective -> leaderboard column


def describe(arch: dict) -> str:
    stages = "-".join(f"{s['blocks']}x{s['width']}k{s['kernel']}" for s in arch["stages"])
    head = arch["head"]["type"] + ("[" + ",".join(map(str, arch["head"].get("widths", []))) + "]"
                                   if arch["head"]["type"] == "fc" else "")
    valid = " valid" if arch.get("padding", "same") == "valid" else ""
    group = f" {arch['group']}" if arch.get("group", "none") != "none" else ""
    return (f"{stages} {arch['downsample']}{valid} {'skip' if arch['skip'] else 'plain'} "
            f"{'bn' if arch['bn'] else 'nobn'} {arch['activation']} {head}{group}")


def check_study_file(out: Path) -> None:
    """`out` holds a study.db that is an Optuna database, checked read-only: Optuna itself would write its
    tables into any SQLite file it is given, and raise on anything else."""
    if out.exists() and not out.is_dir():
        raise CnnlabError(f"{out}: not a folder; give the folder passed to `cnnlab search --out`")
    db = out / "study.db"
    if not db.is_file():
        raise CnnlabError(f"{out}: no study.db here; give the folder passed to `cnnlab search --out`")
    try:
        with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as con:
            tables = {row[0] for row in con.execute("select name from sqlite_master where type = 'table'")}
    except sqlite3.Error:  # random bytes, a truncated file
        tables = set()
    if not {"studies", "trials", "version_info"} <= tables:
        raise CnnlabError(f"{db}: not a study database (`cnnlab search --out` writes one)")


def load_results(out: Path, study: str | None = None, storage: str | None = None) -> dict:
    out = Path(out)
    if storage is None:
        check_study_file(out)
    url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        names = optuna.get_all_study_names(url)
        if not names:
            raise CnnlabError(f"{url}: holds no study")
        if study is None and len(names) > 1:
            raise CnnlabError(f"{url} holds several studies ({', '.join(names)}); choose one with --study")
        if study is not None and study not in names:
            raise CnnlabError(f"--study {study}: not in {url}, which holds {', '.join(names)}")
        s = optuna.load_study(study_name=study or names[0], storage=url)
        return _results(s)
    except CnnlabError:
        raise
    except _BadTrial as exc:
        raise CnnlabError(f"{url}: {exc}") from None
    except KeyError as exc:  # a study, or a trial's record, without what `cnnlab search` writes
        raise CnnlabError(f"{url}: not a study of `cnnlab search` (no {exc})") from None
    except Exception as exc:  # noqa: BLE001 - a bad URL, a damaged database, a server that does not answer
        raise CnnlabError(f"{url}: cannot read the study ({str(exc).splitlines()[0]})") from None


class _BadTrial(Exception):
    pass


def _arch_ok(arch) -> bool:
    """An architecture as `cnnlab search` records it: each value within its search space's bounds."""
    from .space import VALUES

    ok = {k: check for k, (_, check, _) in VALUES.items()}
    try:
        head = arch["head"]
        return (isinstance(arch["stages"], list) and ok["stages"](len(arch["stages"]))
                and all(ok[k](stage[k]) for stage in arch["stages"] for k in ("blocks", "width", "kernel"))
                and all(ok[k](arch[k]) for k in ("downsample", "skip", "bn", "activation"))
                and ok["padding"](arch.get("padding", "same")) and ok["group"](arch.get("group", "none"))
                and ok["head"](head["type"])
                and (head["type"] != "fc" or all(ok["fc_width"](w) for w in head["widths"])))
    except (KeyError, TypeError):
        return False


def _check_trial(t: optuna.trial.FrozenTrial, keys: tuple[str, ...]) -> None:
    """The user attributes a trial's row is drawn from, as `cnnlab search` records them."""
    def count(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    checks = {"arch": _arch_ok, "params": count, "macs": count, "pruned_after_epochs": count,
              "train_seconds": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0,
              "run_dir": lambda v: isinstance(v, str),
              "latency_ms": lambda v: v is None or isinstance(v, (int, float)) and not isinstance(v, bool)}
    for key in keys:
        if not checks[key](t.user_attrs.get(key) if key == "latency_ms" else t.user_attrs[key]):
            raise _BadTrial(f"trial {t.number}'s '{key}' is not what `cnnlab search` records "
                            f"({str(t.user_attrs[key])[:60]})")


def _results(s: optuna.Study) -> dict:
    rows, rejected, pruned, failed = [], [], [], []
    for t in s.trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            _check_trial(t, ("arch", "params", "macs", "train_seconds", "run_dir", "latency_ms"))
            rows.append({"trial": t.number, "architecture": describe(t.user_attrs["arch"]), "arch": t.user_attrs["arch"],
                         "settings": {k: v for k, v in t.params.items() if k in TRAIN_KEYS},
                         "val_accuracy": t.values[0], "params": t.user_attrs["params"], "macs": t.user_attrs["macs"],
                         "latency_ms": t.user_attrs.get("latency_ms"),
                         "train_seconds": t.user_attrs["train_seconds"], "run_dir": t.user_attrs["run_dir"]})
        elif "rejected" in t.user_attrs:
            rejected.append({"trial": t.number, "reason": t.user_attrs["rejected"]})
        elif "stopped" in t.user_attrs:
            failed.append({"trial": t.number, "reason": "diverged: " + t.user_attrs["stopped"]})
        elif "pruned_after_epochs" in t.user_attrs:
            _check_trial(t, ("arch", "pruned_after_epochs"))
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
    try:
        return _write(results, out)
    except OSError as exc:
        raise CnnlabError(f"{out}: cannot write the report's files ({exc.strerror or exc})") from None


def _write(results: dict, out: Path) -> dict:
    files = {}
    if results["leaderboard"]:
        best = results["leaderboard"][0]
        config = {"model": "cnn", "model_kwargs": {"arch": best["arch"]}, **best["settings"]}
        atomic_write_text(out / "best_model.yaml", yaml.safe_dump(config, sort_keys=False))
        files["best_model"] = str(out / "best_model.yaml")
        title = (f"search '{results['study']}': accuracy against {_cost_name(results['pareto_against'])}, "
                 f"{len(results['leaderboard'])} trained trials")
        files["pareto_plot"] = _plot(results["leaderboard"], results["pareto_against"], out / "pareto.png", title,
                                     results["objectives"] > 1)
    return files


COST_AXIS = {"params": "parameters (count)", "macs": "multiply-adds per image (count)",
             "latency_ms": "latency (ms per image, batch 1)"}


def _cost_name(cost: str) -> str:
    return COST_AXIS[cost].split(" (")[0]


def _plot(rows: list[dict], cost: str, path: Path, title: str, multi_objective: bool) -> str:
    fig = _figure(rows, cost, title, multi_objective)
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return str(path)


def _count(value: float, _position=None) -> str:
    """Tick labels a person reads at a glance: 20k, 1.5M, 0.8 (never 2 x 10^4)."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _figure(rows: list[dict], cost: str, title: str, multi_objective: bool):
    """Validation accuracy against the cost of every trained trial, the best marked, and the front (the best
    accuracy reached at or below each cost) drawn as steps: between two of its points nothing better exists."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter, PercentFormatter

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [r[cost] for r in rows]
    ax.scatter(xs, [r["val_accuracy"] for r in rows], s=18, color="tab:blue", alpha=0.7, label="trained trials")
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: r[cost])
    if front:
        fx, fy = [r[cost] for r in front], [r["val_accuracy"] for r in front]
        ax.step([*fx, max(xs)], [*fy, fy[-1]], where="post", color="tab:red", linewidth=1.5,
                label="Pareto front" if multi_objective else "best accuracy at this size or less")
        ax.scatter(fx, fy, s=26, color="tab:red", zorder=3)
    best = max(rows, key=lambda r: r["val_accuracy"])
    ax.scatter([best[cost]], [best["val_accuracy"]], s=180, marker="*", color="gold", edgecolor="black", zorder=4,
               label=f"best: #{best['trial']}, {best['val_accuracy']:.1%}")
    lo, hi = min(xs), max(xs)
    if hi > 10 * lo > 0:  # a log axis only where the costs span a decade or more
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
        pad = (hi - lo) * 0.05 or max(hi * 0.05, 1e-3)
        ax.set_xlim(lo - pad, hi + pad)
    ax.xaxis.set_major_formatter(FuncFormatter(_count))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel(COST_AXIS[cost] + (", log scale" if ax.get_xscale() == "log" else ""))
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    return fig


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
    against = _cost_name(results["pareto_against"])
    lines.append(f"*: on the Pareto front of accuracy against {against}")
    lines.extend(f"{k.replace('_', ' ')}: {v}" for k, v in files.items())
    return "\n".join(lines)


def report(out: Path, study: str | None = None, storage: str | None = None, as_json: bool = False) -> str:
    results = load_results(out, study, storage)
    files = write_outputs(results, out)
    return json.dumps({**results, **files}) if as_json else format_results(results, files)
