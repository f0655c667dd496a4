"""DistributedDataParallel under torchrun with 2 CPU processes (gloo): ranks stay identical, the loss
falls, only rank 0 writes, and a killed distributed run resumes to the same weights."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from safetensors.torch import load_file

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
TRAIN = ["-m", "cnnlab", "train", "--data", "digits", "--model", "resnet20", "--model-kwargs", "width=0.5",
         "--epochs", "3", "--batch-size", "64", "--lr", "0.05", "--augment", "flip,translate=2", "--quiet"]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def test_ranks_hold_identical_weights_after_every_step_and_the_loss_falls(tmp_path):
    run = subprocess.run(TORCHRUN + [str(Path(__file__).with_name("ddp_worker.py")), str(tmp_path / "run"),
                                     str(tmp_path)], env=_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    rank0 = (tmp_path / "hashes-rank0.txt").read_text().split("\n")
    rank1 = (tmp_path / "hashes-rank1.txt").read_text().split("\n")
    assert len(rank0) > 50 and rank0 == rank1
    assert len({line.split(" ")[-1] for line in rank0 if line}) == len(rank0) - 1  # the weights do change
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["threads"] == 1
    epochs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if '"epoch"' in line and '"type": "epoch"' in line]
    assert epochs[-1]["train_loss"] < 0.5 * epochs[0]["train_loss"]
    assert summary["test_accuracy"] > 0.5  # chance: 0.1


def test_killed_distributed_run_resumes_to_the_uninterrupted_weights(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run = subprocess.run(TORCHRUN + TRAIN + ["--out", str(whole)], env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("test accuracy") == 0  # --quiet; and never printed twice
    proc = subprocess.Popen(TORCHRUN + TRAIN + ["--out", str(killed), "--checkpoint-every", "4"], env=_env(),
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = killed / "checkpoints" / "latest"
    deadline = time.time() + 240
    while time.time() < deadline:  # kill mid-epoch 2 (20 steps an epoch), just after a checkpoint
        if latest.exists() and int(latest.read_text().strip().split("-")[1]) >= 24:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "summary.json").exists()
    run = subprocess.run(TORCHRUN + TRAIN + ["--out", str(killed), "--checkpoint-every", "4", "--resume"],
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    a, b = load_file(str(whole / "last.safetensors")), load_file(str(killed / "last.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert (whole / "metrics.jsonl").read_text().count('"epoch"') == (killed / "metrics.jsonl").read_text().count('"epoch"')
