"""Architecture search on digits with a fixed budget (issue 6), measured in one run:

1. TPE (or --strategy evolution) trains N architectures of the `mixed` space (<= --max-params), each for
   --search-epochs; its best is retrained for --full-epochs. N random architectures from the same space are
   each trained for --full-epochs; so is a hand-picked VGG-style baseline with no more parameters than the
   best found. Target: the searched architecture beats the median random one and the baseline (test
   accuracy; the searched one and the baseline are retrained with --seeds seeds and compared by their mean,
   since one run on digits' 360 test images moves by about a point from seed to seed).
2. Throughput: the same search with one single-threaded worker, then with two (each pinned to its own
   core), for --workers-trials trials each. Target: two workers >= 1.8x the trials per hour of one.

    python benchmarks/search_quality.py [--trials 20] [--search-epochs 5] [--full-epochs 10] [--seeds 3]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

from cnnlab.errors import TrainingStopped
from cnnlab.models import create_model
from cnnlab.models.summary import summarize
from cnnlab.search.report import describe
from cnnlab.search.run import open_study, run_search
from cnnlab.search.space import load_space, sample
from cnnlab.train import TrainConfig, train

SIZE = 16


def full_accuracy(arch: dict, epochs: int, out: Path, settings: dict | None = None, seeds: int = 1) -> float:
    """Mean test accuracy over `seeds` trainings from scratch (seeds 0, 1, ...). A training that diverges
    scores chance (0.1): a random architecture that cannot be trained is a real outcome of random search."""
    accuracies = []
    for seed in range(seeds):
        cfg = TrainConfig(model="cnn", model_kwargs={"arch": arch}, data="digits", image_size=SIZE, epochs=epochs,
                          out=str(out / str(seed)), quiet=True, seed=seed, **(settings or {}))
        try:
            accuracies.append(train(cfg)["test_accuracy"])
        except TrainingStopped as exc:
            print(f"  {describe(arch)} {settings or ''}: diverged ({str(exc).split(';')[0]}); scored 0.1")
            accuracies.append(0.1)
    return statistics.mean(accuracies)


def params_of(arch: dict) -> int:
    return summarize(create_model("cnn", num_classes=10, in_channels=1, arch=arch), (1, SIZE, SIZE)).params


def baseline_arch(max_params: int) -> dict:
    """VGG-style: 3 pooled stages of plain conv blocks with BN (widths w, 2w, 4w) and a 64-wide fc head, with
    the largest w whose parameters do not exceed `max_params`."""
    def arch(w: int) -> dict:
        return {"stages": [{"blocks": 1, "width": w * 2 ** i, "kernel": 3} for i in range(3)],
                "downsample": "pool", "skip": False, "bn": True, "activation": "relu",
                "head": {"type": "fc", "widths": [64]}}
    return arch(max([w for w in range(2, 129) if params_of(arch(w)) <= max_params], default=1))


def trials_per_hour(tmp: Path, cores: list[int], trials: int) -> float:
    url = f"sqlite:///{tmp / f'w{len(cores)}.db'}"
    cmd = [sys.executable, "-m", "cnnlab", "search", "--space", "resnet-like", "--data", "digits", "--image-size",
           str(SIZE), "--epochs", "1", "--strategy", "random", "--study", "w", "--storage", url,
           "--trials", str(trials * len(cores)), "--out", str(tmp / f"w{len(cores)}")]
    open_study(tmp / f"w{len(cores)}", "w", url, "random")  # storage and study exist before the workers race
    start = time.perf_counter()
    procs = [subprocess.Popen(["taskset", "-c", str(c), *cmd], stdout=subprocess.DEVNULL) for c in cores]
    for p in procs:
        p.wait()
    elapsed = time.perf_counter() - start
    done = len(optuna.load_study(study_name="w", storage=url).get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
    return done / elapsed * 3600


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--search-epochs", type=int, default=5)
    ap.add_argument("--full-epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=3, help="retrainings of the searched and baseline architectures")
    ap.add_argument("--strategy", default="tpe")
    ap.add_argument("--seed", type=int, default=0, help="the search's seed")
    ap.add_argument("--max-params", type=int, default=300_000)
    ap.add_argument("--workers-trials", type=int, default=6, help="trials per worker in the throughput part")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        study = run_search("mixed", "digits", args.trials, "q", tmp / "search", strategy=args.strategy,
                           epochs=args.search_epochs, image_size=SIZE, max_params=args.max_params, seed=args.seed)
        best = study.best_trial
        arch, settings = best.user_attrs["arch"], {k: v for k, v in best.params.items()
                                                   if k in ("lr", "weight_decay", "batch_size")}
        searched = full_accuracy(arch, args.full_epochs, tmp / "best", settings, args.seeds)
        best_params = best.user_attrs["params"]
        print(f"{args.strategy}, {args.trials} trials x {args.search_epochs} epochs: best {describe(arch)} "
              f"({best_params:,} params), retrained {args.full_epochs} epochs: {searched:.4f} "
              f"(mean of {args.seeds} seeds)")

        space, rng_study = load_space("mixed"), optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
        randoms = []
        while len(randoms) < args.trials:
            trial = rng_study.ask()
            r_arch, r_settings = sample(trial, space)
            rng_study.tell(trial, 0.0)
            if create_model("cnn", num_classes=10, in_channels=1, arch=r_arch).min_input_size > SIZE or \
                    params_of(r_arch) > args.max_params:
                continue  # the same constraints the search applied
            randoms.append(full_accuracy(r_arch, args.full_epochs, tmp / f"random{len(randoms)}", r_settings))
        median = statistics.median(randoms)
        print(f"random: {len(randoms)} architectures x {args.full_epochs} epochs: median {median:.4f} "
              f"(min {min(randoms):.4f}, max {max(randoms):.4f})")
        base = baseline_arch(best_params)
        baseline = full_accuracy(base, args.full_epochs, tmp / "baseline", seeds=args.seeds)
        print(f"VGG-style baseline {describe(base)} ({params_of(base):,} params): {baseline:.4f} "
              f"(mean of {args.seeds} seeds)")
        ok = searched > median and searched > baseline
        print(f"searched {searched:.4f} vs random median {median:.4f} and baseline {baseline:.4f}: "
              f"{'PASS' if ok else 'FAIL'}", flush=True)

        one = trials_per_hour(tmp, [0], args.workers_trials)
        two = trials_per_hour(tmp, [0, 1], args.workers_trials)
        print(f"single-threaded workers: one {one:.0f} trials/h, two {two:.0f} trials/h: {two / one:.2f}x "
              f"(target >= 1.8x): {'PASS' if two / one >= 1.8 else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
