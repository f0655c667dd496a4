"""Recipes: named sets of training settings, applied under whatever the user gives alongside them
(`cnnlab train --recipe cifar10-fast --epochs 12` keeps the recipe but trains 12 epochs)."""
from __future__ import annotations

from ..errors import CnnlabError

RECIPES: dict[str, dict] = {
    # airbench94's recipe (Keller Jordan, 2024) in cnnlab's terms. airbench sums the loss over a batch of
    # 1024 and states lr 11.5 and weight decay 0.0153 "per 1024 examples", decoupled by its kilostep scale
    # 1024 * (1 + 1 / (1 - momentum)); with a mean loss the same steps are lr 11.5 / (1 + 1 / 0.15) = 1.5 and
    # a decay coefficient 0.0153 / 11.5. Batch-norm shifts learn 64x faster with the same decay per step.
    # On CPUs, batches of 512 train 15% more images per second than 1024 and reached higher accuracy in
    # the same epochs (benchmarks/time_to_accuracy.py); the per-example learning rate is airbench's, so lr
    # halves with the batch (on a GPU: --batch-size 1024 --lr 1.5).
    "cifar10-fast": {
        "model": "airbench94", "augment": "altflip,translate=2", "epochs": 11, "batch_size": 512,
        "optimizer": "sgd", "lr": 0.75, "momentum": 0.85, "nesterov": True, "weight_decay": 0.0153 / 11.5,
        "decay_bn_and_bias": True, "norm_lr_scale": 64.0, "schedule": "onecycle", "warmup_epochs": 2.3,
        "warmup_from": 0.2, "decay_to": 0.07, "label_smoothing": 0.2, "lookahead": True, "tta": 2,
        "val_fraction": 0.0, "eval_every": 0,
    },
}


def recipe_settings(name: str) -> dict:
    if name not in RECIPES:
        raise CnnlabError(f"unknown recipe '{name}'; known: {', '.join(RECIPES)}")
    return dict(RECIPES[name])
