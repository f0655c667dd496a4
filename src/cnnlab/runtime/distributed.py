"""Data-parallel training across processes, as launched by `torchrun`: each process (rank) holds a full
copy of the model, trains on its own share of every global batch, and DistributedDataParallel averages the
gradients, so all ranks take the same step. gloo on CPUs, nccl on CUDA GPUs.

Outside torchrun (no WORLD_SIZE in the environment) everything here is a no-op for a single process."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0 alone writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def start(device_name: str) -> Ranks:
    """Join the process group torchrun describes in the environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    ranks = Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")),
                  int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(ranks.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return ranks


def stop(ranks: Ranks, barrier: bool = True) -> None:
    """Leave the process group. `barrier=False` after an error: the peers may never reach the barrier."""
    if ranks.distributed and dist.is_initialized():
        if barrier:
            dist.barrier()  # tearing gloo down while a peer is still in a collective aborts the process
        dist.destroy_process_group()


def wrap(model: nn.Module, ranks: Ranks, sync_bn: bool) -> nn.Module:
    """The model as the training step sees it: DDP-wrapped when distributed (the same object otherwise)."""
    if not ranks.distributed:
        return model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [model_device(model).index] if model_device(model).type == "cuda" else None
    # A filter bank with one input channel (a grayscale first layer) in channels-last layout has strides that
    # differ from the contiguous ones only in that size-1 dimension: the same memory order, which DDP's
    # reducer still reports as "grad strides do not match bucket view strides". Nothing is copied or slowed.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def broadcast_buffers(model: nn.Module, ranks: Ranks) -> None:
    """Give every rank rank 0's batch-norm running statistics (each rank updated its own copy on its own
    share of the batch), so that evaluation and checkpoints agree across ranks."""
    if ranks.distributed:
        for buf in unwrap(model).buffers():
            dist.broadcast(buf, 0)


def all_sum(value: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    if ranks.distributed:
        value = value.clone()
        dist.all_reduce(value)
    return value


def gather_rows(local: torch.Tensor, total: int, ranks: Ranks) -> torch.Tensor:
    """Rows computed as `rows[rank::world]` on each rank -> all `total` rows in order, on every rank."""
    if not ranks.distributed:
        return local
    per_rank = -(-total // ranks.world)
    padded = local.new_zeros((per_rank, *local.shape[1:]))
    padded[:len(local)] = local
    parts = [torch.empty_like(padded) for _ in range(ranks.world)]
    dist.all_gather(parts, padded)
    out = local.new_empty((total, *local.shape[1:]))
    for r, part in enumerate(parts):
        n = len(range(r, total, ranks.world))
        out[r::ranks.world] = part[:n]
    return out


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        dist.barrier()
