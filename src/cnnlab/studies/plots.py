"""The studies' plots, drawn from results.json alone: a title, axes labelled with their units, every seed shown
(a dot per seed over the bar of the mean), and the legend below the axes so that it hides no data."""
from __future__ import annotations

import math
import statistics
from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _legend_below(ax, ncol: int = 2) -> None:
    """The legend under the whole axes, tick labels and axis label included (a figure legend; `save` leaves
    room for it), so that it hides neither data nor labels."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        rows = -(-len(labels) // ncol)
        ax.figure.legend(handles, labels, fontsize=8, loc="lower center", ncol=ncol, frameon=False)
        ax.figure._legend_rows = rows


def _percent_axis(ax, axis: str = "y") -> None:
    from matplotlib.ticker import PercentFormatter

    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(PercentFormatter(1.0))


def layout(fig) -> None:
    """tight_layout, leaving the bottom of the figure to the legend below the axes."""
    rows = getattr(fig, "_legend_rows", 0)
    fig.tight_layout(rect=(0, min(0.4, (0.3 + 0.28 * rows) / fig.get_figheight()) if rows else 0, 1, 1))


def save(fig, out: Path, name: str) -> str:
    layout(fig)
    fig.savefig(Path(out) / name, dpi=100)
    _plt().close(fig)
    return name


def bars(results: dict, measure: str, title: str, labels: list[str] | None = None, log: bool = False):
    """A bar per contender at the mean over seeds, its value above it, and a black dot per seed."""
    plt = _plt()
    info = results["measures"][measure]
    labels = labels or list(results["contenders"])
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(labels) + 2), 4.6))
    for i, label in enumerate(labels):
        c = results["contenders"][label]
        vals = [r["measures"].get(measure) for r in c["runs"]]
        vals = [v for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]
        if not vals:
            ax.text(i, 0, "no figure", ha="center", va="bottom", fontsize=7, rotation=90)
            continue
        m = statistics.fmean(vals)
        bar = ax.bar(i, m, 0.7, color=f"C{i % 10}", alpha=0.75)
        ax.bar_label(bar, [f"{100 * m:.1f}%" if info["percent"] else f"{m:.3g}"], fontsize=7, padding=2)
        ax.scatter([i + (k - (len(vals) - 1) / 2) * 0.08 for k in range(len(vals))], vals, s=12, color="black",
                   zorder=3, label="one seed" if i == 0 else None)
    ax.set_xticks(range(len(labels)), [_wrap(label) for label in labels], fontsize=7)
    ax.set_xlabel("contender")
    ax.set_ylabel(info["label"])
    if info["percent"]:
        _percent_axis(ax)
        ax.set_ylim(0, 1.1)
    elif log:
        ax.set_yscale("log")
    else:
        ax.set_ylim(0, ax.get_ylim()[1] * 1.12)  # room for the values over the bars
    ax.set_title(title, fontsize=10)
    _legend_below(ax, 1)
    return fig


def curves(results: dict, key: str, ylabel: str, title: str, labels: list[str] | None = None,
           transform=None, percent: bool = True):
    """Per contender, the mean over seeds of an epoch figure (e.g. val_accuracy) against epochs; a faint line
    per seed under it."""
    plt = _plt()
    labels = labels or list(results["contenders"])
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, label in enumerate(labels):
        per_seed = []
        for r in results["contenders"][label]["runs"]:
            pts = [(e["epoch"], e[key]) for e in r.get("curve", []) if e.get(key) is not None]
            if transform:
                pts = [(x, transform(y)) for x, y in pts]
            if pts:
                per_seed.append(dict(pts))
                ax.plot(*zip(*pts), color=f"C{i % 10}", alpha=0.25, lw=0.8)
        epochs = sorted({e for s in per_seed for e in s})
        if epochs:
            ax.plot(epochs, [statistics.fmean(s[e] for s in per_seed if e in s) for e in epochs], color=f"C{i % 10}",
                    lw=2, marker="o" if len(epochs) <= 20 else None, ms=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    if percent:
        _percent_axis(ax)
    ax.set_title(title + " (bold: mean over seeds; faint: each seed)", fontsize=10)
    _legend_below(ax)
    return fig


def lines(results: dict, x_measure: str, y_measure: str, groups: dict[str, list[str]], title: str,
          xlabel: str | None = None, logx: bool = False):
    """A line per group of contenders: the mean of `y_measure` against the mean of `x_measure`, with error
    bars of one standard deviation over seeds."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    yinfo = results["measures"][y_measure]
    for i, (name, members) in enumerate(groups.items()):
        pts = [(results["contenders"][m]["mean"].get(x_measure), results["contenders"][m]["mean"].get(y_measure),
                results["contenders"][m]["sd"].get(y_measure, 0.0)) for m in members]
        pts = [p for p in pts if p[0] is not None and p[1] is not None]
        if pts:
            xs, ys, sds = zip(*pts)
            ax.errorbar(xs, ys, yerr=sds, marker="o", capsize=3, label=name, color=f"C{i % 10}")
    ax.set_xlabel(xlabel or results["measures"][x_measure]["label"])
    ax.set_ylabel(yinfo["label"])
    if yinfo["percent"]:
        _percent_axis(ax)
    if logx:
        ax.set_xscale("log")
    ax.set_title(title + " (error bars: one standard deviation over seeds)", fontsize=10)
    _legend_below(ax)
    return fig


def _wrap(label: str, width: int = 16) -> str:
    words, rows, row = label.split(), [], ""
    for w in words:
        if row and len(row) + 1 + len(w) > width:
            rows.append(row)
            row = w
        else:
            row = f"{row} {w}".strip()
    return "\n".join(rows + [row])
