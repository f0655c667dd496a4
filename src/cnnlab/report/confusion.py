"""The confusion matrix of `cnnlab eval`, as text with the class labels as headings and as an image."""
from __future__ import annotations

from pathlib import Path

from ..errors import CnnlabError

CORNER = "true \\ predicted"


def format_confusion(matrix: list[list[int]], classes: list[str], label_width: int = 10) -> str:
    """Rows: true class, columns: predicted class, each headed by its label (cut to `label_width`)."""
    labels = [str(c) for c in classes]
    width = max(len(str(max(map(max, matrix), default=0))), min(label_width, max(map(len, labels))))
    head = max(len(CORNER), min(2 * label_width, max(map(len, labels))))
    lines = [f"{CORNER:<{head}}  " + " ".join(f"{c[:width]:>{width}}" for c in labels)]
    for label, row in zip(labels, matrix):
        lines.append(f"{label[:head]:<{head}}  " + " ".join(f"{v:>{width}d}" for v in row))
    return "\n".join(lines)


def confusion_figure(matrix: list[list[int]], classes: list[str], title: str = ""):
    """A heatmap of the counts, each cell's count written in it where there are at most 20 classes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.array(matrix)
    n = len(classes)
    side = min(16, max(4.5, 0.45 * n + 2))
    fig, ax = plt.subplots(figsize=(side + 1, side))
    image = ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(n), [str(c) for c in classes], rotation=90 if n > 10 else 0, fontsize=8 if n <= 30 else 5)
    ax.set_yticks(range(n), [str(c) for c in classes], fontsize=8 if n <= 30 else 5)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if n <= 20:
        for (i, j), v in np.ndenumerate(counts):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=8,
                        color="white" if v > counts.max() / 2 else "black")
    fig.colorbar(image, ax=ax, label="test images", shrink=0.8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    plt.close(fig)  # pyplot lets go of it; it can still be drawn and saved
    return fig


def write_confusion_png(matrix: list[list[int]], classes: list[str], path: Path, title: str = "") -> Path:
    path = Path(path)
    if path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".pdf", ".svg"):
        raise CnnlabError(f"--confusion-png {path}: give a .png (or .jpg, .pdf, .svg) file name")
    if not path.parent.is_dir():
        raise CnnlabError(f"--confusion-png {path}: folder {path.parent} does not exist")
    confusion_figure(matrix, classes, title).savefig(path, dpi=110)
    return path
