"""Gradients vanish in deep nets of saturating activations; batch norm and clean skip paths cure it, as does
ReLU with Kaiming initialisation. A plain 20-layer net with sigmoid and no batch norm, then each cure alone.
Measured from the gradient monitor's samples in metrics.jsonl: the median gradient norm per layer, and
log10(first layer / last layer); the gradient doctor's diagnoses are listed per run."""
from __future__ import annotations

from . import plots
from .common import diagnosed, grad_profile, log10_first_over_last
from .harness import Compare, Measure, Study

PLAIN, BN, SKIP, RELU = ("plain, sigmoid, no BN", "+ batch norm", "+ residual (pre-activation), no BN",
                         "ReLU + Kaiming init, no BN")


def contenders(budget: str) -> dict:
    w = {"width": 0.25 if budget == "tiny" else 0.5}
    return {PLAIN: {"model": "plain20", "model_kwargs": {**w, "bn": False, "activation": "sigmoid"}},
            BN: {"model": "plain20", "model_kwargs": {**w, "bn": True, "activation": "sigmoid"}},
            SKIP: {"model": "resnet20", "model_kwargs": {**w, "bn": False, "activation": "sigmoid", "preact": True}},
            RELU: {"model": "plain20", "model_kwargs": {**w, "bn": False, "activation": "relu"}}}


def comparisons(budget: str) -> list[Compare]:
    return [Compare("log_grad_ratio", cure, PLAIN, what=f"log10 first/last gradient norm, {cure}")
            for cure in (BN, SKIP, RELU)]


def draw(results: dict, out) -> list[tuple[str, str]]:
    plt = plots._plt()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for i, (label, c) in enumerate(results["contenders"].items()):
        profiles = [r["measures"].get("grad_profile") for r in c["runs"] if r["measures"].get("grad_profile")]
        if profiles:
            names = list(profiles[0])
            ax.plot(range(len(names)), [sum(p[n] for p in profiles) / len(profiles) for n in names],
                    marker="o", ms=3, color=f"C{i}", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("weighted layer, input (0) to output")
    ax.set_ylabel("median gradient norm (log scale)")
    ax.set_title("gradient norm per layer, mean over seeds", fontsize=10)
    plots._legend_below(ax)
    return [(plots.save(fig, out, "grad_profile.png"), "Median gradient norm of each conv/linear layer over the "
             "sampled steps: a line falling toward the input is a vanishing gradient."),
            (plots.save(plots.bars(results, "test_accuracy", "test accuracy"), out, "accuracy.png"),
             "Test accuracy; bars: mean over seeds, dots: each seed.")]


STUDY = Study("vanishing", "gradients vanish in deep nets; batch norm and skip connections cure it",
              "Glorot and Bengio 2010; Ioffe and Szegedy 2015; He et al. 2016 (identity mappings)", contenders,
              comparisons,
              [Measure("log_grad_ratio", "log10 first/last layer gradient norm", log10_first_over_last),
               Measure("vanishing", "vanishing diagnosed (share of seeds, %)", diagnosed("vanishing"), percent=True),
               Measure("grad_profile", "gradient norm per layer", grad_profile)],
              draw, ["log_grad_ratio", "vanishing", "test_accuracy", "train_seconds"], __doc__)
