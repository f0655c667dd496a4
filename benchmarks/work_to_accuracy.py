"""Work to accuracy: the training FLOPs `--recipe cifar10-fast` spends to reach 90% validation accuracy on the
CIFAR-10 JPEG split, against the SGD recipe's 11 epochs (airbench94 with SGD and lookahead).

Trains on the first 4,000 images of each class, validates on the last 1,000 (`--holdout 1000`). FLOPs are
counted, not timed: per image, at the size each epoch trained at, 2 per multiply-add of every conv and linear
layer forward and 2 more for each gradient autograd computes (its weights', its input's: the summary's
`train_flops`), so the ratio is the same on any machine. The SGD recipe's FLOPs are counted from its
settings by the same rule (`--train-baseline` also trains it, side by side). In fp32 the same runs give the
fp32 efficiency: achieved training FLOP/s over the FLOP/s of a 2048x2048 fp32 matmul in the same process.

    python benchmarks/work_to_accuracy.py [--seeds 0 1 2] [--precision fp32|bf16|auto] [--variant NAME]
        [--set KEY=VALUE ...] [--train-baseline]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from cnnlab.data import load_dataset
from cnnlab.runtime.device import cpu_name
from cnnlab.train import TrainConfig, train
from cnnlab.train.recipes import RECIPES, VARIANTS, settings_flops

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-train-jpeg.tar.gz"
TRAIN_IMAGES = 40_000  # 4,000 per class


def matmul_flops_per_second(dtype=torch.float32, n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    tick = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - tick)


def value(text: str):
    """--set epochs=8 -> 8, lookahead=false -> False, progressive=16:2 -> '16:2'."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    ap.add_argument("--variant", default=None, help=f"the recipe's variant (default: the one it picks); one of "
                                                    f"{', '.join(VARIANTS)}")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    ap.add_argument("--train-baseline", action="store_true", help="also train the SGD recipe (11 epochs)")
    ap.add_argument("--accuracy", type=float, default=0.90)
    ap.add_argument("--ratio", type=float, default=0.5, help="FLOPs target against the SGD recipe")
    args = ap.parse_args()
    if not Path(args.data).exists():
        print(f"work_to_accuracy: {args.data} not found (pass --data)", file=sys.stderr)
        return 2
    overrides = {k: value(v) for k, _, v in (s.partition("=") for s in args.set)}
    load_dataset(args.data, holdout=1000)  # decode once into the cache, outside the timed runs
    baseline = {**RECIPES["cifar10-fast"], **VARIANTS["sgd"]}
    base_flops = settings_flops(baseline, TRAIN_IMAGES)  # counted from its settings, without training
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}; SGD recipe: "
          f"{base_flops / 1e12:.1f} TFLOP (counted)")
    contenders = [("sgd", {"variant": "sgd"})] if args.train_baseline else []
    contenders.append((args.variant or "picked", {**({"variant": args.variant} if args.variant else {}), **overrides}))
    failed = False
    for name, settings in contenders:
        accs, ratios, efficiencies = [], [], []
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                cfg = TrainConfig.from_dict({"recipe": "cifar10-fast", "data": args.data, "holdout": 1000,
                                             "seed": seed, "precision": args.precision, "out": f"{tmp}/run",
                                             "quiet": True, "report": False, **settings})
                peak_before = matmul_flops_per_second()
                tick = time.perf_counter()
                s = train(cfg)
                wall = time.perf_counter() - tick
                peak = (peak_before + matmul_flops_per_second()) / 2
            achieved = s["train_flops"] / s["train_seconds"]
            accs.append(s["test_accuracy"])
            ratios.append(s["train_flops"] / base_flops)
            efficiencies.append(achieved / peak)
            fp32 = s["precision"] == "fp32"
            print(f"{name} ({s.get('variant')}), seed {seed}: val accuracy {s['test_accuracy']:.4f}, "
                  f"{s['train_flops'] / 1e12:.1f} TFLOP ({ratios[-1]:.3f}x the SGD recipe), "
                  f"{s['precision']}, wall {wall / 60:.2f} min (training {s['train_seconds']:.0f} s), "
                  f"{achieved / 1e9:.0f} GFLOP/s achieved, fp32 matmul {peak / 1e9:.0f} GFLOP/s"
                  + (f": fp32 efficiency {efficiencies[-1]:.2f}" if fp32 else ""), flush=True)
        ok = min(accs) >= args.accuracy and max(ratios) <= args.ratio
        failed |= name != "sgd" and not ok
        print(f"{name}: val accuracy {', '.join(f'{a:.4f}' for a in accs)} (mean {statistics.mean(accs):.4f}, "
              f"target >= {args.accuracy}), FLOPs {max(ratios):.3f}x (target <= {args.ratio})"
              + (f", fp32 efficiency {statistics.mean(efficiencies):.2f} (target >= 0.8)" if fp32 else "")
              + f": {'PASS' if ok else 'FAIL'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
