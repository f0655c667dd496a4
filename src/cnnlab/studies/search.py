"""Architectures can be searched instead of hand-crafted. Optuna's TPE and random search over the `mixed`
space (depth, width, kernel, stride or pool, padding, skips, batch norm, activation, head, learning rate),
both held to the hand-designed net's parameter count (--max-params) and to its training time in epochs:
each search trains N trials of E epochs, the hand-designed net N x E epochs. Each search's result is its best
trial by validation accuracy, measured on the test split; which choices mattered most is Optuna's parameter
importance (its default evaluator, PED-ANOVA) over each search's trials, averaged."""
from __future__ import annotations

import statistics
import warnings

from . import plots
from .harness import Compare, Measure, Study
from ..train.run_folder import RunFolder

TPE, RANDOM, HAND = "TPE search", "random search", "hand-designed (ResNet-like cnn)"
TRIALS = {"tiny": (2, 1), "small": (6, 2), "full": (12, 3)}  # trials, epochs per trial
HAND_ARCH = {"stages": [{"blocks": 1, "width": 32, "kernel": 3}, {"blocks": 1, "width": 64, "kernel": 3}],
             "downsample": "pool", "skip": True, "bn": True, "activation": "relu", "head": {"type": "gap"}}


def contenders(budget: str) -> dict:
    trials, epochs = TRIALS[budget]
    return {TPE: {"search": "tpe"}, RANDOM: {"search": "random"},
            HAND: {"model": "cnn", "model_kwargs": {"arch": HAND_ARCH}, "epochs": trials * epochs}}


def hand_params(base: dict) -> int:
    from ..data import load_dataset
    from ..models import create_model
    from ..models.summary import summarize

    ds = load_dataset(base["data"], image_size=base.get("image_size"))
    model = create_model("cnn", num_classes=ds.num_classes, in_channels=ds.channels, arch=HAND_ARCH)
    size = base.get("image_size") or ds.default_image_size or ds.image_size[0]
    return summarize(model, (ds.channels, size, size)).params


def run_search_contender(label, overrides, seed, run_dir, base, ctx) -> dict | None:
    """A search as one contender: the ordinary `cnnlab search`, each trial an ordinary run folder read back
    through RunFolder. Returns None for the hand-designed net: the harness trains it as any contender."""
    if "search" not in overrides:
        return None
    import optuna

    from ..search.run import run_search

    trials, epochs = TRIALS[ctx["budget"]]
    study = run_search("mixed", base["data"], trials, "search", run_dir, strategy=overrides["search"],
                       epochs=epochs, seed=seed, max_params=hand_params(base), image_size=base.get("image_size"),
                       holdout=base.get("holdout"))
    finished = [RunFolder(t.user_attrs["run_dir"]) for t in study.trials
                if t.state == optuna.trial.TrialState.COMPLETE]
    summaries = [f.read_summary() for f in finished]
    best = max(summaries, key=lambda s: s["best_val_accuracy"])
    try:
        with warnings.catch_warnings():  # Optuna warns of choices drawn fewer than twice: a small search
            warnings.simplefilter("ignore")
            importances = dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError):  # fewer than two finished trials, or nothing varied
        importances = {}
    return {"test_accuracy": best["test_accuracy"], "best_val_accuracy": best["best_val_accuracy"],
            "params": float(best["params"]), "train_seconds": sum(s["train_seconds"] for s in summaries),
            "trials": float(len(summaries)), "importances": importances}


def comparisons(budget: str) -> list[Compare]:
    return [Compare("test_accuracy", TPE, HAND, what="test accuracy, TPE search against the hand-designed net"),
            Compare("test_accuracy", TPE, RANDOM, what="test accuracy, TPE against random search")]


def draw(results: dict, out) -> list[tuple[str, str]]:
    totals: dict[str, list[float]] = {}
    for label in (TPE, RANDOM):
        for r in results["contenders"][label]["runs"]:
            for k, v in (r["measures"].get("importances") or {}).items():
                totals.setdefault(k, []).append(v)
    importance = sorted(((statistics.fmean(v), k) for k, v in totals.items()), reverse=True)
    results["derived"] = {"parameter importance (mean over searches)": {k: round(v, 3) for v, k in importance}}
    files = [(plots.save(plots.bars(results, "test_accuracy", "test accuracy at equal parameters and epochs"), out,
                         "accuracy.png"), "Test accuracy of each search's best trial and of the hand-designed net.")]
    if importance:
        plt = plots._plt()
        fig, ax = plt.subplots(figsize=(7, max(3, 0.3 * len(importance) + 1.5)))
        ax.barh([k for _, k in importance][::-1], [v for v, _ in importance][::-1], color="C0")
        ax.set_xlabel("importance (Optuna, PED-ANOVA; shares sum to 1)")
        ax.set_ylabel("searched choice")
        ax.set_title("which choices mattered most (mean over searches)", fontsize=10)
        files.append((plots.save(fig, out, "importance.png"), "Optuna's parameter importances: how much "
                      "each choice moves validation accuracy, as shares of 1."))
    return files


STUDY = Study("search", "architectures can be searched instead of hand-crafted",
              "Zoph and Le 2017; Bergstra et al. 2011 (TPE); Li and Talwalkar 2019 (random search baseline)",
              contenders, comparisons,
              [Measure("trials", "trials trained", lambda f, ctx: None),
               Measure("importances", "parameter importances", lambda f, ctx: None)],
              draw, ["test_accuracy", "params", "train_seconds", "trials"], __doc__,
              runner=run_search_contender)
