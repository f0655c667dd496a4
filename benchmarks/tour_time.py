"""The learner's first hour in one command: `cnnlab tour` (every study at the small budget, 3 seeds) timed
end to end. Target: at most 10 minutes on 2 cores with native bf16, 15 without.

    python benchmarks/tour_time.py [--out DIR] [--seeds K]
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="folder for the tour (default: a temporary one)")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="cnnlab-tour-")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cnnlab", "tour", "--out", out, "--seeds", str(args.seeds), "-q"],
                   check=True)
    minutes = (time.perf_counter() - start) / 60
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cpu = platform.processor() or platform.machine()
    print(f"cnnlab tour, {args.seeds} seeds: {minutes:.1f} min on {os.cpu_count()} cores ({cpu}; "
          f"load average at the end {load:.1f}); target <= 10 min with native bf16, 15 without")
    print(f"index: {out}/report.html")


if __name__ == "__main__":
    main()
