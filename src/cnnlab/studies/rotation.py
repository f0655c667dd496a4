"""Invariance by construction against augmentation, on digits: train on upright digits only, then test on
digits rotated by 0/90/180/270 degrees and by a random angle per image. A plain CNN, the same CNN trained
with rotation augmentation, and a P4 CNN of about the same parameter count that never sees a rotated digit.

    cnnlab study rotation --out studies/rotation
"""
from __future__ import annotations

import math

import torch

from ..data.transforms import affine, rotation_theta
from .harness import Compare, Measure, Study, build_model

PLAIN, AUGMENTED, P4 = ("plain CNN (z2cnn)", "plain CNN + rotation augmentation", "P4 CNN (p4cnn), no augmentation")
ANGLES = (0, 90, 180, 270)
KEYS = [str(a) for a in ANGLES] + ["random"]


def contenders(budget: str) -> dict:
    return {PLAIN: {"model": "z2cnn"}, AUGMENTED: {"model": "z2cnn", "augment": "rotate=180"},
            P4: {"model": "p4cnn"}}


def rotated_test_sets(x: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    sets = {f"{a}": torch.rot90(x, a // 90, dims=(2, 3)) for a in ANGLES}
    angles = torch.rand(len(x), generator=torch.Generator().manual_seed(seed)) * 2 * math.pi
    sets["random"] = affine(x, rotation_theta(angles))  # each its own angle; black corners, like the digits
    return sets


def rotated_accuracies(folder, ctx) -> dict:
    """Test accuracy of the run's best weights on each rotation of the test split (fp32, eval mode)."""
    from ..inference import load_test_split, stats
    from ..runtime.evaluate import predict_logits

    model, spec = build_model(folder)
    config = folder.read_config()
    split = load_test_split(folder.path, spec)  # the run's own test split
    x, y = split.x, split.y
    mean, std = stats(spec)
    return {name: float((predict_logits(model, images, mean, std, "fp32").argmax(1) == y).float().mean())
            for name, images in rotated_test_sets(x, config["seed"]).items()}


def _angle(key: str):
    def read(folder, ctx):
        cache = ctx.setdefault("rotated", {})
        if folder.path not in cache:
            cache[folder.path] = rotated_accuracies(folder, ctx)
        return cache[folder.path][key]
    return read


def comparisons(budget: str) -> list[Compare]:
    return [Compare("acc_90", P4, AUGMENTED, what="accuracy on digits turned 90°, P4 CNN against augmentation"),
            Compare("acc_90", P4, PLAIN, what="accuracy on digits turned 90°, P4 CNN against plain CNN")]


def draw(results: dict, out) -> list[tuple[str, str]]:
    table = {label: {"accuracy": {k: c["mean"].get(f"acc_{k}", 0.0) for k in KEYS}}
             for label, c in results["contenders"].items()}
    accuracy_figure(table, 0.1).savefig(out / "accuracy.png", dpi=100)
    return [("accuracy.png", "Test accuracy (mean over seeds) on digits turned by each angle; trained upright.")]


def accuracy_figure(results: dict, chance: float = 0.1):
    """Grouped bars: test accuracy per rotation of the test digits, a bar per contender, each bar's value
    above it, the legend below the axes (never over a bar) and a dotted line at chance (`chance`: 1/classes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    fig, ax = plt.subplots(figsize=(8, 5))
    width = 0.8 / len(results)
    for i, (label, r) in enumerate(results.items()):
        bars = ax.bar([k + i * width for k in range(len(KEYS))], [r["accuracy"][k] for k in KEYS], width,
                      label=label)
        ax.bar_label(bars, [f"{r['accuracy'][k]:.0%}" for k in KEYS], fontsize=7, padding=1)
    ax.axhline(chance, color="0.3", ls=":", lw=1.2, label=f"chance ({chance:.0%})")
    ax.set_xticks([k + width * (len(results) - 1) / 2 for k in range(len(KEYS))],
                  [f"{k}°" if k != "random" else "random angle" for k in KEYS])
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


def plot(results: dict, path, chance: float = 0.1) -> None:
    accuracy_figure(results, chance).savefig(path, dpi=110)


STUDY = Study("rotation", "invariance by construction beats augmentation on transformations never seen",
              "Cohen and Welling 2016 (group equivariant CNNs)", contenders, comparisons,
              [Measure(f"acc_{k}", f"{k}° (%)" if k != "random" else "random angle (%)", _angle(k), percent=True)
               for k in KEYS], draw, ["params"] + [f"acc_{k}" for k in KEYS], __doc__.split("\n\n")[0])
