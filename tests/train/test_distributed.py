"""DistributedDataParallel under torchrun with 2 CPU processes (gloo): ranks stay identical, the loss
falls, only rank 0 writes, and a killed distributed run resumes to the same weights."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.all_cores  # 2 processes, a core each

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
TRAIN = ["-m", "cnnlab", "train", "--data", "digits", "--image-size", "16", "--model", "resnet20",
         "--model-kwargs", "width=0.5", "--epochs", "3", "--batch-size", "64", "--lr", "0.05",
         "--augment", "flip,translate=2", "--quiet", "--no-report"]  # reports: tests/report/


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


WORKER = str(Path(__file__).with_name("ddp_worker.py"))


def test_ranks_hold_identical_weights_after_every_step_and_the_loss_falls(tmp_path):
    run = subprocess.run(TORCHRUN + [WORKER, "hashes", str(tmp_path / "run"), str(tmp_path)], env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    rank0 = [line.split() for line in (tmp_path / "hashes-rank0.txt").read_text().splitlines()]
    rank1 = [line.split() for line in (tmp_path / "hashes-rank1.txt").read_text().splitlines()]
    assert len(rank0) == len(rank1) == 60
    assert [r[:2] for r in rank0] == [r[:2] for r in rank1]  # same weights after every step
    assert len({r[1] for r in rank0}) == 60  # which do change
    assert rank0[0][2] != rank1[0][2]  # BN statistics differ: each rank normalised its own share of the batch
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["threads"] == 1
    epochs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if '"type": "epoch"' in line]
    assert epochs[-1]["train_loss"] < 0.5 * epochs[0]["train_loss"]
    assert summary["test_accuracy"] > 0.5  # chance: 0.1


def test_two_ranks_take_the_step_one_process_takes_on_the_whole_batch(tmp_path):
    """Gradients averaged over two half batches equal the whole batch's (no BN: nothing else differs)."""
    subprocess.run([sys.executable, WORKER, "first-step", str(tmp_path / "one"), str(tmp_path / "one.pt")],
                   check=True, timeout=300)
    run = subprocess.run(TORCHRUN + [WORKER, "first-step", str(tmp_path / "two"), str(tmp_path / "two.pt")],
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    changes = [((two[k] - one[k]).norm() / one[k].norm()).item() for k in one if one[k].is_floating_point()]
    assert max(changes) < 1e-4  # float summation order only (measured: 6e-6)


def test_ranks_of_a_pruned_run_draw_the_same_images(tmp_path):
    """Each rank learns the losses of its own share of a batch; gathered, every rank prunes alike."""
    run = subprocess.run(TORCHRUN + [WORKER, "pruned", str(tmp_path / "run"), str(tmp_path)], env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    rank0, rank1 = ((tmp_path / f"orders-rank{r}.txt").read_text().splitlines() for r in (0, 1))
    assert rank0 == rank1 and len(rank0) == 3
    lengths = [int(line.split()[1]) for line in rank0]
    assert lengths[1] < lengths[0] == lengths[2]  # the middle epoch is pruned


def test_sync_bn_on_cpus_is_refused_in_one_line(tmp_path):
    run = subprocess.run(TORCHRUN + TRAIN + ["--sync-bn", "--out", str(tmp_path / "x")], env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "cnnlab: error: --sync-bn needs CUDA GPUs" in run.stderr


def test_killed_distributed_run_resumes_to_the_uninterrupted_weights(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    train = TRAIN + ["--epochs", "2"]  # the last --epochs counts
    run = subprocess.run(TORCHRUN + train + ["--out", str(whole)], env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("test accuracy") == 1  # --quiet prints the result alone, and rank 0 alone
    assert "Grad strides do not match" not in run.stderr  # grayscale digits: one input channel
    proc = subprocess.Popen(TORCHRUN + train + ["--out", str(killed), "--checkpoint-every", "4"], env=_env(),
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = killed / "checkpoints" / "latest"
    deadline = time.time() + 240
    while time.time() < deadline:  # kill mid-epoch 2 (20 steps an epoch, 40 in all), just after a checkpoint
        if latest.exists() and int(latest.read_text().strip().split("-")[1]) >= 24:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "summary.json").exists()
    run = subprocess.run(TORCHRUN + train + ["--out", str(killed), "--checkpoint-every", "4", "--resume"],
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    a, b = load_file(str(whole / "last.safetensors")), load_file(str(killed / "last.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert (whole / "metrics.jsonl").read_text().count('"epoch"') == (killed / "metrics.jsonl").read_text().count('"epoch"')


def test_two_nodes_meet_through_torchruns_c10d_rendezvous(tmp_path):
    """Two torchrun launches, one process each, as two machines would run them (here both on localhost)."""
    import socket

    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    node = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"localhost:{port}", "--rdzv-id", "cnnlab-test"]
    cores = sorted(os.sched_getaffinity(0))  # a core of its own for each "machine": a node uses all it has

    def own_core(i: int):
        return lambda: os.sched_setaffinity(0, {cores[i % len(cores)]})

    nodes = [subprocess.Popen(node + TRAIN + ["--out", str(tmp_path / "run")], env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, preexec_fn=own_core(i)) for i in range(2)]
    results = [p.communicate(timeout=300) for p in nodes]
    assert all(p.returncode == 0 for p in nodes), [err[-2000:] for _, err in results]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["threads"] == 1 and summary["test_accuracy"] > 0.5
    epochs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if '"type": "epoch"' in line]
    assert len(epochs) == 3  # written once, by the global rank 0 only
