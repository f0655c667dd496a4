"""Recipes: named sets of training settings, applied under whatever the user gives alongside them
(`cnnlab train --recipe cifar10-fast --epochs 12` keeps the recipe but trains 12 epochs). A recipe may come in
variants; without `--variant` it runs its default (`pick_variant`), and the run records which (config.yaml),
so a resumed run keeps it on any machine."""
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

# Each variant's settings over its recipe's. `sgd`: airbench94 as above. `muon`: airbench94_muon's optimiser
# (orthogonalised momentum for the conv filters at its rate and momentum, linear decay from the start, no
# lookahead) for 8 epochs instead of 11: 27% fewer training FLOPs for 90% (benchmarks/work_to_accuracy.py;
# docs/speed.md has the runs, and the progressive-resizing plans that halve the FLOPs but end below 90%).
MUON = {"optimizer": "muon", "muon_lr": 0.24, "muon_momentum": 0.6, "warmup_epochs": 0.0, "decay_to": 0.0,
        "lookahead": False}
VARIANTS: dict[str, dict] = {
    "sgd": {},
    "muon": {**MUON, "epochs": 8},
    # `half`: Muon for 13 epochs, the first 5 on 10x10 images (0.08 of the work each), 3 at 24x24, 5 at full
    # size, on airbench94 with a 32-channel first group (0.75 of its work): 0.474x the SGD recipe's FLOPs for
    # 89.79-90.15% on seeds 0-2 (sgd: 90.37-90.55%)
    "half": {**MUON, "model": "airbench94_narrow", "epochs": 13, "progressive": "10:39%,24:23%"},
}
RECIPE_VARIANTS = {"cifar10-fast": tuple(VARIANTS)}


def pick_variant(name: str, device: str = "auto", precision: str = "auto") -> tuple[str, str]:
    """The variant a recipe runs without --variant on this machine (`device` and `precision` as the run's
    options give them), and why. For cifar10-fast it is `sgd` everywhere: it reached 90.39%, 90.55% and 90.37%
    on seeds 0-2, and no cheaper variant has kept 90% on all three (docs/speed.md). Where the CPU trains in
    fp32, the reason says what the cheaper variants would cost in accuracy."""
    import torch

    from ..runtime.device import cpu_has_native_bf16

    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return "sgd", "on a GPU, the variant that keeps 90% on seeds 0-2"
    if precision in ("auto", "bf16") and cpu_has_native_bf16():
        return "sgd", "this CPU has native bf16; the variant that keeps 90% on seeds 0-2"
    return "sgd", ("the variant that keeps 90% on seeds 0-2; this CPU trains in fp32 (no native bf16), where "
                   "--variant half spends under half the FLOPs for about 89.9%")


def settings_flops(settings: dict, images: int, size: int = 32, channels: int = 3, classes: int = 10) -> float:
    """The training FLOPs a recipe's settings (`{**RECIPES[name], **VARIANTS[variant]}`) spend on `images`
    training images of size x size, counted without training by the rule of the trainer's `train_flops`."""
    from ..models import create_model
    from ..models.summary import summarize
    from .progressive import epoch_flops, parse_freezing, parse_plan, training_flops
    from .pruning import epoch_lengths

    model = create_model(settings["model"], num_classes=classes, in_channels=channels,
                         **settings.get("model_kwargs", {}))
    epochs = settings["epochs"]
    plan = parse_plan(settings.get("progressive", ""), epochs)
    rows_at = {s: summarize(model, (channels, s, s)).layers for s in {size, *(s for s, _ in plan)}}
    freezing = parse_freezing(settings.get("freeze_from", ""), epochs)
    per_image = epoch_flops(model, rows_at, plan, size, freezing, epochs)
    lengths = epoch_lengths(images, settings["batch_size"], epochs, settings.get("prune", 0.0))
    return training_flops(lengths, sum(lengths), settings["batch_size"], per_image)


def recipe_settings(name: str, variant: str | None = None, device: str = "auto", precision: str = "auto") -> dict:
    if name not in RECIPES:
        raise CnnlabError(f"unknown recipe '{name}'; known: {', '.join(RECIPES)}")
    known = RECIPE_VARIANTS.get(name, ())
    if variant is None and known:
        variant = pick_variant(name, device, precision)[0]
    if variant is not None and variant not in known:
        raise CnnlabError(f"--variant {variant}: recipe {name} has " + (
            f"the variants {', '.join(known)}" if known else "no variants"))
    return {**RECIPES[name], **(VARIANTS[variant] if variant else {}), **({"variant": variant} if variant else {})}
