"""What `keep_freed_memory` (on by default in CPU training) gains and costs: the same short training runs,
one after another in one process, with the setting and without it (`--no-keep-freed-memory`), each mode in
a fresh process so that neither inherits the other's heap. Prints wall time and peak memory side by side.

    python benchmarks/kept_memory.py [--models resnet20,vgg11_bn,airbench94,resnet20,vgg11_bn] [--epochs 1]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

_RUNS = """
import json, resource, sys, tempfile, time
from cnnlab.train import TrainConfig, train
models, epochs, keep = sys.argv[1].split(","), int(sys.argv[2]), sys.argv[3] == "keep"
start = time.perf_counter()
with tempfile.TemporaryDirectory() as tmp:
    for i, model in enumerate(models):
        train(TrainConfig(model=model, data="digits", epochs=epochs, keep_freed_memory=keep, out=f"{tmp}/{i}",
                          device="cpu", quiet=True))
print(json.dumps({"seconds": time.perf_counter() - start,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(models: str, epochs: int, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _RUNS, models, str(epochs), mode], capture_output=True, text=True)
    if out.returncode:
        last = (out.stderr.strip().splitlines() or [f"exit status {out.returncode}"])[-1]
        raise SystemExit(f"the {mode} runs failed: {last}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet20,vgg11_bn,airbench94,resnet20,vgg11_bn",
                    help="trained one after another on digits, in one process per mode")
    ap.add_argument("--epochs", type=int, default=1)
    args = ap.parse_args()
    default, kept = run(args.models, args.epochs, "default"), run(args.models, args.epochs, "keep")
    print(f"{args.models}, {args.epochs} epoch(s) each on digits")
    print(f"{'':<22} {'wall s':>8} {'peak MiB':>9}")
    print(f"{'glibc as it is':<22} {default['seconds']:8.1f} {default['peak_mib']:9.0f}")
    print(f"{'freed memory kept':<22} {kept['seconds']:8.1f} {kept['peak_mib']:9.0f}")
    print(f"time {kept['seconds'] / default['seconds']:.2f}x, peak memory "
          f"{kept['peak_mib'] / default['peak_mib']:.2f}x with the setting")
    return 0


if __name__ == "__main__":
    sys.exit(main())
