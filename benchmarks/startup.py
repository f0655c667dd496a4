"""How long the command line takes to answer when it has nothing to compute: `cnnlab --help`, `cnnlab models`
and `cnnlab train --help`, each started as a fresh process (`python -m cnnlab`, so the figure holds for the
code in this checkout), the median of several runs.

    python benchmarks/startup.py [--runs 5]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = (["--help"], ["models"], ["train", "--help"])


def seconds(argv: list[str]) -> float:
    """Wall time of `python ARGV...`, start-up and exit included."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise SystemExit(f"python {' '.join(argv)} failed: {last}")
    return elapsed


def median_seconds(argv: list[str], runs: int) -> float:
    seconds(argv)  # once unmeasured: the first start reads the files from disk
    return statistics.median(seconds(argv) for _ in range(runs))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="runs per command; the median is printed")
    args = ap.parse_args()
    bare = median_seconds(["-c", "pass"], args.runs)
    print(f"{'command':<22} {'median s':>9}   ({args.runs} runs each; python alone starts in {bare:.3f} s)")
    for argv in COMMANDS:
        print(f"{'cnnlab ' + ' '.join(argv):<22} {median_seconds(['-m', 'cnnlab', *argv], args.runs):9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
