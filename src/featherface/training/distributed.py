"""Multi-process training: ``torchrun`` environment, process group set-up and data sharding."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler


def world_from_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` of this process: the process group if one exists, else the
    ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` variables ``torchrun`` sets, else ``(0, 1, 0)``."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), local_rank
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), local_rank


@dataclass(frozen=True)
class Distributed:
    """Where this process stands: rank, world size, its device, and whether it created the group."""

    rank: int
    world_size: int
    device: torch.device
    owns_group: bool

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and shows progress."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str | torch.device | None = None, timeout_s: float = 1800.0) -> Distributed:
    """Pick the device and, under ``torchrun`` (``WORLD_SIZE`` > 1), join the process group.

    The backend is NCCL on CUDA and gloo on CPU. ``device=None`` means ``cuda:LOCAL_RANK`` when
    CUDA is available, else the CPU. An existing process group is reused and left open.
    """
    rank, world_size, local_rank = world_from_env()
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size == 1 or dist.is_initialized():
        return Distributed(rank, world_size, device, owns_group=False)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout_s))
    return Distributed(rank, world_size, device, owns_group=True)


def teardown(state: Distributed) -> None:
    """Leave the process group if :func:`setup` created it."""
    if state.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def shard_loader(loader: DataLoader, state: Distributed, seed: int) -> DataLoader:
    """``loader`` with a :class:`DistributedSampler` for this rank (unchanged on one process or when it
    already has one for this rank and world size)."""
    sampler = loader.sampler
    if not state.enabled or (
        isinstance(sampler, DistributedSampler)
        and sampler.num_replicas == state.world_size
        and sampler.rank == state.rank
    ):
        return loader
    if loader.batch_size is None:
        raise ValueError(
            "multi-process training needs a DataLoader built with batch_size= (not a custom batch_sampler) "
            "so that it can be sharded; use featherface.training.make_loader"
        )
    shuffle = isinstance(sampler, RandomSampler) or (
        isinstance(sampler, DistributedSampler) and sampler.shuffle
    )
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=DistributedSampler(
            loader.dataset,
            state.world_size,
            state.rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=loader.drop_last,
        ),
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        worker_init_fn=loader.worker_init_fn,
    )


def all_sum(values: torch.Tensor, state: Distributed) -> torch.Tensor:
    """Element-wise sum of ``values`` over all processes (the tensor itself on one process)."""
    if not state.enabled:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values


def gather_objects(obj: object, state: Distributed) -> list[object]:
    """``obj`` from every rank, in rank order (``[obj]`` on one process)."""
    if not state.enabled:
        return [obj]
    gathered: list[object] = [None] * state.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(state: Distributed) -> None:
    """Wait for every process (no-op on one process)."""
    if state.enabled:
        dist.barrier()
