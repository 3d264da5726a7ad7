"""Distributed data parallel helpers (PyTorch DDP, launched by ``torchrun``).

``torchrun --nproc_per_node N -m rnnlab <command> ...`` sets ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``;
:func:`init_from_env` then joins the process group (gloo on CPU, nccl on GPU) and the trainer
shards every global batch across the ranks.
"""
from __future__ import annotations

import atexit
import os

import torch
import torch.distributed as dist
from torch import nn


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group described by torchrun's environment; False when not under torchrun."""
    if not launched_by_torchrun():
        return False
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend)
        # Leave the group before the interpreter tears down: a group still alive at exit can abort
        # the process ("terminate called without an active exception", seen once in make test).
        atexit.register(_leave)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return True


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def wrap(model: nn.Module) -> nn.Module:
    """DistributedDataParallel around ``model`` (gradients all-reduced after backward)."""
    device_ids = [torch.cuda.current_device()] if next(model.parameters()).is_cuda else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def all_reduce_sums(sums: dict[str, float]) -> dict[str, float]:
    """Sum each value across ranks (the keys must be the same on every rank)."""
    keys = sorted(sums)
    t = torch.tensor([sums[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def global_mean(value: torch.Tensor, share: float) -> torch.Tensor:
    """The mean over the whole global batch of a per-rank mean ``value`` taken over this rank's
    ``share`` of it (NaN/Inf on any rank makes it NaN/Inf on every rank)."""
    total = (value.detach().double() * share).reshape(1)
    dist.all_reduce(total)
    return total[0]
