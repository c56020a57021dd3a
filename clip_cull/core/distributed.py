"""Running under torchrun: which share of the files this process embeds, and waiting for the
others. torch is imported only when a process group is really needed."""

from __future__ import annotations

import os


def torchrun_shard(env: dict | None = None) -> tuple[int, int] | None:
    """(rank, world size) when started by torchrun with more than one process, else None."""
    env = os.environ if env is None else env
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    except (KeyError, ValueError):
        return None
    return (rank, world) if world > 1 and 0 <= rank < world else None


def local_rank(env: dict | None = None) -> int | None:
    env = os.environ if env is None else env
    try:
        return int(env["LOCAL_RANK"])
    except (KeyError, ValueError):
        return None


def wait_for_all() -> None:
    """Barrier across the torchrun processes (gloo works on CPU and GPU machines alike)."""
    import torch.distributed as dist

    dist.init_process_group(backend="gloo")
    try:
        dist.barrier()
    finally:
        dist.destroy_process_group()
