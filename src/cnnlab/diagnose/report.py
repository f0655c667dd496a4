"""`cnnlab diagnose RUN_DIR`: read what the monitor wrote to metrics.jsonl, print the diagnoses with their
evidence and remedies, and draw a heatmap of gradient norms per layer and the loss curve with each
diagnosis marked where it fired."""
from __future__ import annotations

import math
from pathlib import Path

from ..errors import CnnlabError
from ..text import plural
from ..train.run_folder import RunFolder
from .rules import THRESHOLDS


def load_health(run_dir: Path) -> dict:
    """The monitor's records of a run: per-layer samples, the loss per logged step, the diagnoses (each record
    checked by `RunFolder.read_metrics`)."""
    folder = RunFolder(run_dir)
    samples, losses, diagnoses = [], {}, []
    for r in folder.read_metrics():
        kind = r["type"]
        if kind == "layers":
            samples.append(r)
            losses[r["step"]] = r["loss"]
        elif kind == "step":
            losses[r["step"]] = r["loss"]
        elif kind == "diagnosis":
            diagnoses.append({k: r[k] for k in ("kind", "step", "layers", "evidence", "remedies")})
    return {"run_dir": str(folder), "samples": samples, "loss": sorted(losses.items()), "diagnoses": diagnoses}


def format_report(health: dict, plots: list[str]) -> str:
    samples, lines = health["samples"], [f"run: {health['run_dir']}"]
    if not samples:
        lines.append("no gradient samples: the run was trained with monitor_every=0 or stopped at once")
    else:
        lines.append(f"{plural(len(samples), 'sample')} of {plural(len(samples[0]['grad_norm']), 'layer')}, steps "
                     f"{samples[0]['step']}..{samples[-1]['step']}")
    if health["diagnoses"]:
        lines.append("diagnoses:")
        for d in health["diagnoses"]:
            where = f" in {', '.join(d['layers'][:6])}{' ...' if len(d['layers']) > 6 else ''}" if d["layers"] else ""
            lines.append(f"  step {d['step']}: {d['kind']}{where}")
            lines.append(f"    evidence: {d['evidence']}")
            lines.append(f"    remedies: {'; '.join(d['remedies'])}")
    else:
        lines.append("no diagnosis: gradients, updates and activations stayed within the thresholds")
    if samples:
        first, last = samples[0], samples[-1]
        width = max(len(n) for n in first["grad_norm"])
        lines.append(f"{'layer':<{width}}  grad norm (first -> last sample)  update/weight (last)")
        for name in first["grad_norm"]:
            ratio = last.get("update_ratio", {}).get(name, float("nan"))
            lines.append(f"{name:<{width}}  {first['grad_norm'][name]:9.2e} -> {last['grad_norm'].get(name, float('nan')):9.2e}"
                         f"{'':15}{ratio:9.2e}")
    lines.append("thresholds: " + ", ".join(f"{k}={v:g}" for k, v in THRESHOLDS.items()))
    lines.extend(f"plot: {p}" for p in plots)
    return "\n".join(lines)


def write_plots(health: dict, out_dir: Path) -> list[str]:
    """grad_norms.png (log10 gradient norm, layers x sampled steps) and loss.png (diagnoses marked)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CnnlabError(f"--plots {out_dir}: is a file; name a folder for the plots")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, figure in (("grad_norms.png", grad_norm_figure), ("loss.png", loss_figure)):
        fig = figure(health)
        if fig is not None:
            paths.append(str(out_dir / name))
            fig.savefig(paths[-1], dpi=110)
    return paths


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    return plt


def grad_norm_figure(health: dict):
    """The heatmap of log10 gradient norm per layer (input at the top) over the sampled steps, a column per
    sample, so that a run that stopped after one sample still shows it; None without samples."""
    import numpy as np

    samples = health["samples"]
    if not samples:
        return None
    plt = _pyplot()
    names = list(samples[0]["grad_norm"])
    steps = [s["step"] for s in samples]
    grid = np.array([[math.log10(max(s["grad_norm"].get(n, float("nan")), 1e-30)) for s in samples]
                     for n in names])
    fig, ax = plt.subplots(figsize=(min(14, max(7, 4 + len(samples) / 8)), min(12, 2.5 + len(names) / 4)))
    mesh = ax.pcolormesh(_cell_edges(steps), np.arange(len(names) + 1) - 0.5, np.ma.masked_invalid(grid),
                         cmap="viridis", shading="flat")
    ax.set_ylim(len(names) - 0.5, -0.5)  # input at the top
    ax.set_yticks(range(len(names)), names, fontsize=6)
    _step_ticks(ax, steps)
    ax.set_xlabel("training step (a column per sampled step)")
    ax.set_title(f"gradient norm per layer, log10; input at the top ({plural(len(samples), 'sample')})",
                 fontsize=10)
    fig.colorbar(mesh, ax=ax, label="log10 gradient norm")
    fig.tight_layout()
    plt.close(fig)  # pyplot lets go of it; it can still be drawn and saved
    return fig


def loss_figure(health: dict):
    """The training loss per logged step (each a marker where there are few) with a dashed line and a label
    where each diagnosis fired; None without logged losses."""
    import numpy as np

    if not health["loss"]:
        return None
    plt = _pyplot()
    steps, loss = zip(*health["loss"])
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(steps, [v if math.isfinite(v) else np.nan for v in loss], lw=1, marker="o" if len(steps) <= 30 else None,
            ms=4, label="training loss")
    finite = [v for v in loss if math.isfinite(v)]
    if finite and min(finite) > 0 and max(finite) / min(finite) > 100:
        ax.set_yscale("log")
    _step_ticks(ax, [*steps, *(d["step"] for d in health["diagnoses"])])
    _mark_diagnoses(ax, health["diagnoses"])
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (cross-entropy)")
    ax.set_title("training loss; dashed: where a diagnosis fired")
    fig.tight_layout()
    plt.close(fig)
    return fig


def _cell_edges(steps: list[int]) -> list[float]:
    """Column edges halfway between sampled steps (the ends half a gap out; a lone step, half a step)."""
    if len(steps) == 1:
        return [steps[0] - 0.5, steps[0] + 0.5]
    mids = [(a + b) / 2 for a, b in zip(steps, steps[1:])]
    return [2 * steps[0] - mids[0], *mids, 2 * steps[-1] - mids[-1]]


def _step_ticks(ax, steps: list[int]) -> None:
    """Whole steps on the x axis, a margin either side (a lone step is not a range of 0.95-1.05), and every
    step a tick where there are few."""
    from matplotlib.ticker import MaxNLocator

    lo, hi = min(steps), max(steps)
    pad = max(0.5, (hi - lo) * 0.04)
    ax.set_xlim(lo - pad, hi + pad)
    if len(set(steps)) <= 8:
        ax.set_xticks(sorted(set(steps)))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _mark_diagnoses(ax, diagnoses: list[dict]) -> None:
    """A dashed line at each diagnosis' step, its name beside it; names whose lines are close are stacked."""
    lo, hi = ax.get_xlim()
    placed: list[float] = []
    for d in sorted(diagnoses, key=lambda d: d["step"]):
        ax.axvline(d["step"], color="red", ls="--", lw=1)
        row = sum(1 for x in placed if abs(d["step"] - x) < 0.2 * (hi - lo))
        placed.append(d["step"])
        right = d["step"] > lo + 0.75 * (hi - lo)  # near the right edge: the name goes left of its line
        ax.annotate(f"{d['kind']} (step {d['step']})", (d["step"], 0.97 - 0.09 * row),
                    xycoords=("data", "axes fraction"), xytext=(-4 if right else 4, 0), textcoords="offset points",
                    ha="right" if right else "left", va="top", color="red", fontsize=8,
                    bbox={"boxstyle": "square,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
