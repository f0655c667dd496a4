"""Evaluation: accuracy, top-5, per-class accuracy and the confusion matrix."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .device import autocast
from .tensors import normalize


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, precision: str,
                   batch_size: int = 512, tta: int = 0) -> torch.Tensor:
    """Logits of uint8 images `x` in eval mode. `tta` 1 averages each image with its mirror image; 2 also
    with both views shifted by one pixel up-left and down-right (airbench's test-time augmentation)."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = normalize(x[i:i + batch_size], mean, std)
        with autocast(x.device, precision):
            out.append(tta_logits(model, xb, tta))
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def tta_logits(model: nn.Module, x: torch.Tensor, tta: int) -> torch.Tensor:
    def mirrored(v: torch.Tensor) -> torch.Tensor:
        return 0.5 * (model(v).float() + model(v.flip(3)).float())

    if tta == 0:
        return model(x).float()
    logits = mirrored(x)
    if tta == 1:
        return logits
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = 0.5 * (mirrored(padded[:, :, :h, :w]) + mirrored(padded[:, :, 2:, 2:]))
    return 0.5 * logits + 0.5 * shifted


def metrics_from_logits(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> dict:
    if len(y) == 0:
        return {"loss": float("nan"), "accuracy": float("nan"), "top5_accuracy": float("nan")}
    pred = logits.argmax(1)
    k = min(5, num_classes)
    top5 = (logits.topk(k, 1).indices == y[:, None]).any(1)
    confusion = torch.bincount(y * num_classes + pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)
    per_class = confusion.diag().float() / confusion.sum(1).clamp(min=1).float()
    return {"loss": float(F.cross_entropy(logits, y)), "accuracy": float((pred == y).float().mean()),
            "top5_accuracy": float(top5.float().mean()), "per_class_accuracy": per_class.tolist(),
            "confusion_matrix": confusion.tolist(), "count": int(len(y))}
