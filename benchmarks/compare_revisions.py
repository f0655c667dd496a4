"""The trainer of another git revision against this checkout's, side by side in one run: the same job (the
main job by default: resnet20 on digits) trained alternately by each, with the gradient monitor on and off,
each run in a fresh process; medians of training seconds and images per second, and their ratios.

    python benchmarks/compare_revisions.py --rev a60e6f6 [--epochs 15] [--runs 3] [--model resnet20]

The other revision is unpacked with `git archive` into a temporary folder; nothing in the checkout changes.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOB = ("import json, sys; from cnnlab.train import TrainConfig, train; "
       "s = train(TrainConfig(**json.loads(sys.argv[1]))); "
       "print(json.dumps({k: s[k] for k in ('train_seconds', 'images_per_second', 'test_accuracy', 'precision')}))")


def run(src: Path, settings: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, "-c", JOB, json.dumps(settings)], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"compare_revisions: the run failed under {src}:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", required=True, help="the git revision to compare against")
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--runs", type=int, default=3, help="runs of each (revision, monitor) pair, alternated")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        old.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.rev, "src"], capture_output=True)
        if archive.returncode != 0:
            sys.exit(f"compare_revisions: git archive {args.rev} failed: {archive.stderr.decode()[-300:]}")
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
        sources = {args.rev: old / "src", "this checkout": ROOT / "src"}
        times: dict[tuple[str, int], list[dict]] = {}
        for i in range(args.runs):
            for monitor in (10, 0):
                for label, src in sources.items():
                    settings = {"model": args.model, "data": "digits", "epochs": args.epochs, "quiet": True,
                                "monitor_every": monitor, "out": f"{tmp}/{label.replace(' ', '_')}-{monitor}-{i}"}
                    r = run(src, settings)
                    times.setdefault((label, monitor), []).append(r)
                    print(f"{label:<14} monitor_every={monitor:<3} {r['train_seconds']:7.2f} s training, "
                          f"{r['images_per_second']:7.1f} img/s, test accuracy {r['test_accuracy']:.4f} "
                          f"({r['precision']})", flush=True)
    print()
    for monitor in (10, 0):
        med = {label: statistics.median(r["train_seconds"] for r in times[(label, monitor)]) for label in sources}
        a, b = med[args.rev], med["this checkout"]
        print(f"monitor_every={monitor}: {args.rev} {a:.2f} s, this checkout {b:.2f} s of training (medians of "
              f"{args.runs}): this checkout takes {b / a:.3f}x the time")
    for label in sources:
        on = statistics.median(r["train_seconds"] for r in times[(label, 10)])
        off = statistics.median(r["train_seconds"] for r in times[(label, 0)])
        print(f"monitor overhead, {label}: {(on / off - 1) * 100:+.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
