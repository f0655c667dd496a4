"""One harness for every study. A study is a declaration: the claim, its contenders (each a set of
`TrainConfig` overrides over the budget's base settings), what is measured in each run, and the comparisons
its verdict rests on. The harness trains each contender over K seeds with the ordinary trainer (each run in
`OUT/runs/<contender>-s<seed>`), reads every run back through `RunFolder` only, and writes

    results.json   every figure of every run, per seed, the means and spreads, the verdict and its evidence
    *.png          the study's plots
    report.html    the claim, contenders, plots, verdict and evidence, one self-contained page

The verdict is computed, never written: each comparison says which contender the claim expects to do better
on which measure; the difference of the means is judged against the spread of the seeds,
sqrt(sd_a^2 + sd_b^2) (the standard deviation of the difference of one run of each):

    supported       the difference favours the claim by more than the spread
    not supported   it goes against the claim by more than the spread
    inconclusive    it lies within the spread (or one seed only: no spread to judge against)

A claim of several comparisons is supported when all are, not supported when any is not."""
from __future__ import annotations

import contextlib
import io

import json
import math
import re
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import CnnlabError, TrainingStopped
from ..train.run_folder import RunFolder

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
CIFAR10 = "../shared/data/cifar10-train-jpeg.tar.gz"

# The base settings of each budget; a study's contenders override them. `tiny` is for tests only.
BUDGETS = {
    "tiny": {"seeds": 1, "train": {"data": "digits", "image_size": 8, "epochs": 1, "batch_size": 128,
                                   "monitor_every": 5}},
    "small": {"seeds": 3, "train": {"data": "digits", "image_size": 16, "epochs": 6, "batch_size": 64}},
    "full": {"seeds": 3, "train": {"data": CIFAR10, "holdout": 1000, "epochs": 15, "batch_size": 128}},
}


@dataclass
class Measure:
    """A figure taken from each run: `read(folder, ctx)` returns a number (or None where it does not apply)."""
    name: str
    label: str  # with its unit, e.g. "test accuracy (%)"
    read: Callable[[RunFolder, dict], float | None]
    percent: bool = False


@dataclass
class Compare:
    """The claim expects `better` to beat `worse` on `measure` (higher is better unless `higher=False`).
    `missing`: the figure given to a run that produced none (e.g. 0.1, chance, for a run that diverged)."""
    measure: str
    better: str
    worse: str
    higher: bool = True
    missing: float | None = None
    what: str = ""


@dataclass
class Study:
    name: str
    claim: str
    reference: str
    contenders: Callable[[str], dict[str, dict]]  # budget -> {label: TrainConfig overrides}
    comparisons: Callable[[str], list[Compare]]
    measures: list[Measure] = field(default_factory=list)
    plots: Callable[[dict, Path], list[tuple[str, str]]] | None = None  # -> [(file, caption)]
    columns: list[str] = field(default_factory=list)  # measures shown in the table (default: all)
    notes: str = ""
    runner: Callable[..., dict | None] | None = None  # (label, overrides, seed, run_dir, base, ctx) -> measures,
    # or None to train the contender as usual


# ---- measures every study takes ------------------------------------------------------------------------------
def _epochs(folder: RunFolder) -> list[dict]:
    return [r for r in folder.read_metrics() if r["type"] == "epoch"]


def _summary_value(key: str) -> Callable[[RunFolder, dict], float | None]:
    def read(folder: RunFolder, ctx: dict) -> float | None:
        s = folder.read_summary()
        return s.get(key) if s.get("status") == "finished" else None
    return read


def final_train_accuracy(folder: RunFolder, ctx: dict) -> float | None:
    epochs = _epochs(folder)
    return epochs[-1]["train_accuracy"] if epochs else None


COMMON = [
    Measure("test_accuracy", "test accuracy (%)", _summary_value("test_accuracy"), percent=True),
    Measure("train_accuracy", "training accuracy, last epoch (%)", final_train_accuracy, percent=True),
    Measure("params", "parameters", _summary_value("params")),
    Measure("train_seconds", "training time (s)", _summary_value("train_seconds")),
]


def build_model(folder: RunFolder, weights: str | None = "best"):
    """The run's model rebuilt from its model.json (through the run folder), with its weights if asked."""
    from ..inference import load_run

    return load_run(folder.path, weights)


# ---- the verdict -------------------------------------------------------------------------------------------
def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def judge(compare: Compare, a: list[float | None], b: list[float | None]) -> dict:
    """One comparison on the per-seed figures of the expected winner `a` and loser `b`."""
    fill = [compare.missing if v is None else v for v in a], [compare.missing if v is None else v for v in b]
    a, b = ([v for v in side if v is not None] for side in fill)
    out = {"measure": compare.measure, "better": compare.better, "worse": compare.worse,
           "higher_is_better": compare.higher, "what": compare.what}
    if not a or not b:
        return {**out, "verdict": INCONCLUSIVE, "difference": None, "spread": None,
                "reason": "a contender produced no figure"}
    (ma, sa), (mb, sb) = mean_sd(a), mean_sd(b)
    diff = (ma - mb) if compare.higher else (mb - ma)  # > 0: as the claim expects
    spread = math.hypot(sa, sb)
    out.update(mean_better=ma, mean_worse=mb, difference=diff, spread=spread, seeds=min(len(a), len(b)))
    if min(len(a), len(b)) < 2:
        return {**out, "verdict": INCONCLUSIVE, "reason": "one seed: no spread to judge the difference against"}
    if diff > spread:
        return {**out, "verdict": SUPPORTED, "reason": "the difference favours the claim by more than the spread"}
    if diff < -spread:
        return {**out, "verdict": NOT_SUPPORTED, "reason": "the difference goes against the claim by more than "
                                                           "the spread"}
    return {**out, "verdict": INCONCLUSIVE, "reason": "the difference lies within the spread of the seeds"}


def combine(judged: list[dict]) -> str:
    kinds = [j["verdict"] for j in judged]
    if kinds and all(k == SUPPORTED for k in kinds):
        return SUPPORTED
    return NOT_SUPPORTED if NOT_SUPPORTED in kinds else INCONCLUSIVE


def verdict(comparisons: list[Compare], values: dict[str, dict[str, list]]) -> dict:
    """`values[contender][measure]`: the per-seed figures. Returns the verdict and each comparison's evidence."""
    judged = []
    for c in comparisons:
        for label in (c.better, c.worse):
            if label not in values:
                raise CnnlabError(f"comparison names '{label}', which is not a contender")
        judged.append(judge(c, values[c.better].get(c.measure, []), values[c.worse].get(c.measure, [])))
    return {"verdict": combine(judged), "evidence": judged}


def evidence_text(e: dict, percent: bool = False) -> str:
    """One line a person reads: the two means, the difference and the spread it was judged against."""
    if e["difference"] is None:
        return f"{e['better']} vs {e['worse']} on {e['measure']}: {e['reason']} ({e['verdict']})"
    f = (lambda v: f"{100 * v:.1f}%") if percent else (lambda v: f"{v:.3g}")
    d = (lambda v: f"{100 * v:+.1f} points") if percent else (lambda v: f"{v:+.3g}")
    direction = "higher" if e["higher_is_better"] else "lower"
    return (f"{e['what'] or e['measure']}: {e['better']} {f(e['mean_better'])} vs {e['worse']} "
            f"{f(e['mean_worse'])} ({direction} is better): difference " +
            (f"{d(e['difference'])} in the claim's favour" if e["difference"] >= 0 else
             f"{d(-e['difference']).lstrip('+')} against the claim") +
            f", spread {d(e['spread']).lstrip('+')} over {e['seeds']} seed{'s' if e['seeds'] > 1 else ''}"
            f" -> {e['verdict']}")


# ---- running a study ---------------------------------------------------------------------------------------
def slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:60]


def check_budget(budget: str) -> None:
    if budget not in BUDGETS:
        raise CnnlabError(f"--budget must be one of small, full, got '{budget}'")


def base_settings(budget: str, data: str | None = None) -> dict:
    check_budget(budget)
    base = dict(BUDGETS[budget]["train"])
    if data is not None:  # an empty --data is the trainer's to refuse, not a silent default
        base["data"] = data
        if data != CIFAR10:
            base.pop("holdout", None)
    return base


def train_one(overrides: dict, base: dict, seed: int, run_dir: Path) -> RunFolder:
    """One contender, one seed, through the ordinary trainer; a run the trainer stopped (NaN) still has its
    folder and summary, and its measures say so. A finished run folder is reused, not trained again, and an
    interrupted one resumed."""
    from ..train import TrainConfig, train

    folder = RunFolder(run_dir)
    # the study writes one report of its own; its runs' reports are `cnnlab report RUN` away
    settings = {**base, **overrides, "seed": seed, "out": str(run_dir), "quiet": True, "report": False}
    if folder.summary.exists():
        saved = folder.read_config()
        differ = [k for k, v in settings.items() if k not in ("out", "quiet", "report") and saved.get(k) != v]
        if differ:
            raise CnnlabError(f"{run_dir} holds a run with other settings ({differ[0]}: {saved.get(differ[0])!r}, "
                              f"not {settings[differ[0]]!r}); choose another --out or remove that folder")
        return folder
    cfg = TrainConfig.from_dict(settings, f"contender {run_dir.name}")
    # an interrupted study left this run unfinished: it continues from its checkpoint (the trainer refuses one
    # whose settings differ)
    resume = folder.has_checkpoint
    # the run's warnings (a study provokes vanishing gradients on purpose) stay in its metrics log, which the
    # study's measures and report read; on stderr they would bury the study's own lines
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            train(cfg, resume=resume)
        except TrainingStopped:
            pass
    return folder


MAX_SEEDS = 100


def check_seeds(seeds: int | None, budget: str) -> int:
    """--seeds, or the budget's count when not given."""
    check_budget(budget)
    if seeds is None:
        return BUDGETS[budget]["seeds"]
    if not 1 <= seeds <= MAX_SEEDS:
        raise CnnlabError(f"--seeds must be from 1 to {MAX_SEEDS}, got {seeds}")
    return seeds


def _check_out(out: Path, name: str) -> None:
    """A study's --out holds nothing of another kind, nor another study's results (its runs would mix)."""
    from ..report.html import refuse_other_kind
    from ..runtime.files import read_text_capped

    refuse_other_kind(out, "study")
    if not (out / "results.json").is_file():
        return
    try:
        other = json.loads(read_text_capped(out / "results.json")).get("study")
    except (ValueError, OSError, AttributeError):
        other = None
    if other != name:
        whose = f"the study '{other}'" if isinstance(other, str) else "something else (results.json)"
        raise CnnlabError(f"--out {out}: holds the results of {whose}; choose another folder")


def run_study(study: Study, out: Path, budget: str = "small", seeds: int | None = None, data: str | None = None,
              quiet: bool = False, report: bool = True) -> dict:
    out = Path(out)
    base = base_settings(budget, data)
    seeds = check_seeds(seeds, budget)
    _check_out(out, study.name)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _run_contenders(study, out, budget, seeds, base, quiet, report)
    except CnnlabError:
        if created and not any(p.is_file() for p in out.rglob("*")):  # refused before any run wrote a file
            shutil.rmtree(out, ignore_errors=True)
        raise


def _run_contenders(study: Study, out: Path, budget: str, seeds: int, base: dict, quiet: bool,
                    report: bool) -> dict:
    contenders = study.contenders(budget)
    measures = COMMON + study.measures
    ctx = {"budget": budget, "base": base, "out": out}
    results = {"study": study.name, "claim": study.claim, "reference": study.reference,
               "notes": " ".join(study.notes.split()),
               "budget": budget, "seeds": list(range(seeds)), "base_settings": base,
               "measures": {m.name: {"label": m.label, "percent": m.percent} for m in measures},
               "columns": study.columns or [m.name for m in measures], "contenders": {}}
    total, n, started = len(contenders) * seeds, 0, time.perf_counter()
    for label, overrides in contenders.items():
        runs = []
        for seed in range(seeds):
            n += 1
            run_dir = out / "runs" / f"{slug(label)}-s{seed}"
            t0 = time.perf_counter()
            if not quiet:
                print(f"[{n}/{total}] {study.name}: {label}, seed {seed} ...", end=" ", file=sys.stderr, flush=True)
            try:
                figures = study.runner(label, overrides, seed, run_dir, base, ctx) if study.runner else None
                folder = train_one(overrides, base, seed, run_dir) if figures is None else None
            except CnnlabError:
                if not quiet:  # the error's line starts on its own, not after the progress line
                    print(file=sys.stderr, flush=True)
                raise
            if folder is None:
                status, diagnoses, curve = "finished", [], []
            else:
                summary = folder.read_summary()
                status = summary.get("status", "finished")
                diagnoses = sorted({d["kind"] for d in summary.get("diagnoses") or []})
                figures = {m.name: _safe(m, folder, ctx) for m in measures}
                curve = [{k: r.get(k) for k in CURVE_KEYS} for r in _safe_epochs(folder)]
            runs.append({"seed": seed, "run_dir": str(run_dir), "status": status, "diagnoses": diagnoses,
                         "measures": figures, "curve": curve})
            if not quiet:
                acc = figures.get("test_accuracy")
                print(f"{'test ' + format(acc, '.1%') if acc is not None else status}"
                      f"{', ' + ', '.join(diagnoses) if diagnoses else ''} ({time.perf_counter() - t0:.1f} s)",
                      file=sys.stderr, flush=True)
        results["contenders"][label] = {"overrides": overrides, "runs": runs, **_aggregate(runs)}
    values = {label: {m: [r["measures"].get(m) for r in c["runs"]] for m in _measure_names(c)}
              for label, c in results["contenders"].items()}
    results.update(verdict(study.comparisons(budget), values))
    results["evidence_text"] = [evidence_text(e, results["measures"].get(e["measure"], {}).get("percent", False))
                                for e in results["evidence"]]
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["plots"] = []
    for file, caption in (study.plots(results, out) if study.plots else []):
        results["plots"].append({"file": file, "caption": caption})
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "table.md").write_text(table(results) + "\n")
    if report:
        from ..report.html import write_report

        write_report(out)
    return results


CURVE_KEYS = ("epoch", "step", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")


def _safe_epochs(folder: RunFolder) -> list[dict]:
    try:
        return _epochs(folder)
    except CnnlabError:
        return []


def _measure_names(contender: dict) -> set[str]:
    return {k for r in contender["runs"] for k in r["measures"]}


def _safe(m: Measure, folder: RunFolder, ctx: dict) -> float | None:
    try:
        return m.read(folder, ctx)
    except (CnnlabError, KeyError, IndexError, TypeError, ValueError, ZeroDivisionError):
        return None  # a run stopped before its first epoch has no epoch figures; a damaged one, no numbers


def _aggregate(runs: list[dict]) -> dict:
    mean, sd = {}, {}
    for name in {k for r in runs for k in r["measures"]}:
        vals = [r["measures"][name] for r in runs if isinstance(r["measures"].get(name), (int, float))]
        if vals:
            mean[name], sd[name] = mean_sd([float(v) for v in vals])
    return {"mean": mean, "sd": sd}


def fmt(value: float | None, percent: bool = False, sd: float | None = None) -> str:
    if value is None:
        return "—"
    if percent:
        return f"{100 * value:.1f}%" + (f" ± {100 * sd:.1f}" if sd else "")
    if abs(value) >= 1000 and float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.3g}" + (f" ± {sd:.2g}" if sd else "")


def table(results: dict) -> str:
    """The Markdown table: a row per contender, the mean ± standard deviation over seeds of each column."""
    cols = results["columns"]
    ms = results["measures"]
    lines = ["| contender | " + " | ".join(ms[c]["label"] for c in cols) + " |", "|---|" + "---|" * len(cols)]
    for label, c in results["contenders"].items():
        cells = [fmt(c["mean"].get(k), ms[k]["percent"], c["sd"].get(k) if len(c["runs"]) > 1 else None)
                 for k in cols]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"**Verdict: {results['verdict']}** ({len(results['seeds'])} seed"
                 f"{'s' if len(results['seeds']) > 1 else ''}, mean ± standard deviation)")
    lines.extend(f"- {t}" for t in results["evidence_text"])
    return "\n".join(lines)
