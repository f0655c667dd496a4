"""Cost of the gradient-health monitor (issue 4): the same training run with the monitor at its default
sampling rate and with it off, alternated in one process, training seconds compared.
Target: at most 3% more training time.

    python benchmarks/monitor_overhead.py [--model resnet20] [--epochs 15] [--repeats 2]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile

from cnnlab.train import TrainConfig, train


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--data", default="digits")
    ap.add_argument("--epochs", type=int, default=15, help="15: the main job (cnnlab train)")
    ap.add_argument("--repeats", type=int, default=2, help="pairs of runs (on, off), alternated")
    args = ap.parse_args()
    default_every = TrainConfig().monitor_every
    times: dict[int, list[float]] = {default_every: [], 0: []}
    for _ in range(args.repeats):
        for every in (default_every, 0):
            with tempfile.TemporaryDirectory() as tmp:
                s = train(TrainConfig(model=args.model, data=args.data, epochs=args.epochs, monitor_every=every,
                                      out=f"{tmp}/run", quiet=True))
            times[every].append(s["train_seconds"])
            print(f"monitor_every={every:<3} {s['train_seconds']:7.2f}s training ({s['steps']} steps, "
                  f"{s['precision']})", flush=True)
    on, off = statistics.median(times[default_every]), statistics.median(times[0])
    ratio = on / off
    print(f"median with the monitor (every {default_every} steps) {on:.2f}s, without {off:.2f}s: "
          f"{(ratio - 1) * 100:+.1f}% (target <= +3%): {'PASS' if ratio <= 1.03 else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
