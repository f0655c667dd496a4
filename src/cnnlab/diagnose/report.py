"""`cnnlab diagnose RUN_DIR`: read what the monitor wrote to metrics.jsonl, print the diagnoses with their
evidence and remedies, and draw a heatmap of gradient norms per layer and the loss curve with each
diagnosis marked where it fired."""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import CnnlabError
from ..text import plural
from .rules import THRESHOLDS


def load_health(run_dir: Path) -> dict:
    """The monitor's records of a run: per-layer samples, the loss per logged step, the diagnoses."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        raise CnnlabError(f"{run_dir}: not a cnnlab run folder (no metrics.jsonl)")
    samples, losses, diagnoses = [], {}, []
    for n, line in enumerate(metrics.read_text().splitlines(), 1):
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            raise CnnlabError(f"{metrics}: line {n} is not JSON; the file is damaged") from None
        kind = r.get("type")
        if kind == "layers":
            samples.append(r)
            losses[r["step"]] = r["loss"]
        elif kind == "step":
            losses[r["step"]] = r["loss"]
        elif kind == "diagnosis":
            diagnoses.append({k: r[k] for k in ("kind", "step", "layers", "evidence", "remedies")})
    return {"run_dir": str(run_dir), "samples": samples, "loss": sorted(losses.items()), "diagnoses": diagnoses}


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
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt
    import numpy as np

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    samples = health["samples"]
    if samples:
        names = list(samples[0]["grad_norm"])
        grid = np.array([[math.log10(max(s["grad_norm"].get(n, float("nan")), 1e-30)) for s in samples]
                         for n in names])
        fig, ax = plt.subplots(figsize=(min(14, 4 + len(samples) / 8), min(12, 2 + len(names) / 4)))
        im = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest",
                       extent=(samples[0]["step"], samples[-1]["step"], len(names) - 0.5, -0.5))
        ax.set_yticks(range(len(names)), names, fontsize=6)
        ax.set_xlabel("step")
        ax.set_title("gradient norm per layer (log10); input at the top")
        fig.colorbar(im, ax=ax, label="log10 gradient norm")
        fig.tight_layout()
        paths.append(str(out_dir / "grad_norms.png"))
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    if health["loss"]:
        steps, loss = zip(*health["loss"])
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.plot(steps, [v if math.isfinite(v) else np.nan for v in loss], lw=1, label="training loss")
        for d in health["diagnoses"]:
            ax.axvline(d["step"], color="red", ls="--", lw=1)
            ax.annotate(d["kind"], (d["step"], 1), xycoords=("data", "axes fraction"), rotation=90, va="top",
                        ha="right", color="red", fontsize=8)
        finite = [v for v in loss if math.isfinite(v)]
        if finite and min(finite) > 0 and max(finite) / min(finite) > 100:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title("training loss; dashed: where a diagnosis fired")
        fig.tight_layout()
        paths.append(str(out_dir / "loss.png"))
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths
