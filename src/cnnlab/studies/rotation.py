"""Invariance by construction against augmentation, on digits: train on upright digits only, then test on
digits rotated by 0/90/180/270 degrees and by random angles. A plain CNN, the same CNN trained with rotation
augmentation, and a P4 CNN of about the same parameter count that never sees a rotated digit.

    cnnlab study rotation --out studies/rotation [--epochs 15]
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ..data.transforms import affine, rotation_theta
from ..inference import load_run, load_test_split, stats
from ..train import TrainConfig, train
from ..runtime.evaluate import predict_logits

CONTENDERS = {  # label -> (model, augmentation)
    "plain CNN (z2cnn)": ("z2cnn", ""),
    "plain CNN + rotation augmentation": ("z2cnn", "rotate=180"),
    "P4 CNN (p4cnn), no augmentation": ("p4cnn", ""),
}
ANGLES = (0, 90, 180, 270)


def rotated_test_sets(x: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    sets = {f"{a}": torch.rot90(x, a // 90, dims=(2, 3)) for a in ANGLES}
    angles = torch.rand(len(x), generator=torch.Generator().manual_seed(seed)) * 2 * math.pi
    sets["random"] = affine(x, rotation_theta(angles))  # each its own angle; black corners, like the digits
    return sets


def accuracy(model: torch.nn.Module, spec: dict, images: torch.Tensor, labels: torch.Tensor) -> float:
    mean, std = stats(spec)
    return float((predict_logits(model, images, mean, std, "fp32").argmax(1) == labels).float().mean())


def run(out: Path, epochs: int = 15, seed: int = 0, quiet: bool = True) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for label, (model, augment) in CONTENDERS.items():
        run_dir = out / f"{model}{'-' + augment.replace('=', '') if augment else ''}"
        summary = train(TrainConfig(model=model, data="digits", augment=augment, epochs=epochs, seed=seed,
                                    out=str(run_dir), quiet=quiet))
        net, spec = load_run(run_dir)
        chance = 1 / spec["num_classes"]
        split = load_test_split(run_dir, spec)  # the run's own: digits
        x, y = split.x, split.y
        sets = rotated_test_sets(x, seed)
        results[label] = {"model": model, "augment": augment, "params": summary["params"],
                          "train_seconds": summary["train_seconds"],
                          "accuracy": {name: accuracy(net, spec, images, y) for name, images in sets.items()}}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "table.md").write_text(table(results) + "\n")
    plot(results, out / "accuracy.png", chance)
    return results


def table(results: dict) -> str:
    cols = [f"{a}°" for a in ANGLES] + ["random angle"]
    lines = ["| model | params | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for label, r in results.items():
        acc = [r["accuracy"][k] for k in [str(a) for a in ANGLES] + ["random"]]
        lines.append(f"| {label} | {r['params']:,} | " + " | ".join(f"{a:.1%}" for a in acc) + " |")
    return "\n".join(lines)


def plot(results: dict, path: Path, chance: float = 0.1) -> None:
    accuracy_figure(results, chance).savefig(path, dpi=110)


def accuracy_figure(results: dict, chance: float = 0.1):
    """Grouped bars: test accuracy per rotation of the test digits, a bar per contender, each bar's value
    above it, the legend below the axes (never over a bar) and a dotted line at chance (`chance`: 1/classes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    keys = [str(a) for a in ANGLES] + ["random"]
    fig, ax = plt.subplots(figsize=(8, 5))
    width = 0.8 / len(results)
    for i, (label, r) in enumerate(results.items()):
        bars = ax.bar([k + i * width for k in range(len(keys))], [r["accuracy"][k] for k in keys], width,
                      label=label)
        ax.bar_label(bars, [f"{r['accuracy'][k]:.0%}" for k in keys], fontsize=7, padding=1)
    ax.axhline(chance, color="0.3", ls=":", lw=1.2, label=f"chance ({chance:.0%})")
    ax.set_xticks([k + width * (len(results) - 1) / 2 for k in range(len(keys))],
                  [f"{k}°" if k != "random" else "random angle" for k in keys])
    ax.set_xlabel("rotation of the test digits (degrees)")
    ax.set_ylabel("test accuracy (%)")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylim(0, 1.08)  # room for the value over a bar at 100%
    ax.set_title("digits, trained upright, tested rotated")
    handles, labels = ax.get_legend_handles_labels()  # the contenders first, chance last
    ax.legend(handles[1:] + handles[:1], labels[1:] + labels[:1], fontsize=8, loc="upper center",
              bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    fig.tight_layout()
    plt.close(fig)  # pyplot lets go of it; it can still be drawn and saved
    return fig
