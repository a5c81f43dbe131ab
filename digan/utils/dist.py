"""Distributed helpers for ``torchrun``: training with DistributedDataParallel and sharded
evaluation. Single-process CPU is the default and needs none of this: every helper degrades to a
no-op when ``WORLD_SIZE`` is unset.

Usage under torchrun::

    torchrun --nproc_per_node 8 -m digan.cli train --teacher ckpt.pt
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "init_distributed",
    "is_distributed",
    "rank",
    "world_size",
    "local_rank",
    "is_main",
    "barrier",
    "device_for_rank",
    "check_device",
    "shard_range",
    "all_gather_tensor",
    "all_gather_objects",
    "reduce_mean",
    "cleanup",
]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    return rank() == 0


def init_distributed(backend: str | None = None) -> bool:
    """Initialise the process group when launched by torchrun (``WORLD_SIZE`` > 1).

    Uses NCCL with CUDA and gloo otherwise; ``DIGAN_BENCH_DIST_BACKEND=gloo`` overrides that, so
    that several processes can share one GPU (NCCL refuses two ranks on one device), e.g.
    ``scripts/gpu_check.sh``'s 2-process step on a 1-GPU machine with ``--device cuda:0``.
    Returns True when running distributed.
    """
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if backend is None:
        backend = os.environ.get("DIGAN_BENCH_DIST_BACKEND") or ("nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank() % torch.cuda.device_count())
    dist.init_process_group(backend=backend)
    return True


def check_device(name: str | torch.device, what: str = "--device") -> torch.device | None:
    """``name`` as a torch device, or None for ``auto``; a one-line :class:`DiganError` naming the
    fix for a string torch cannot parse (``gpu``, ``cuda:x``), for CUDA on a machine without a GPU
    and for a GPU index beyond the visible ones (which torch reports only at the first use)."""
    from digan.errors import DiganError

    if isinstance(name, torch.device):
        dev = name
    elif str(name).strip() in ("", "auto"):
        return None
    else:
        try:
            dev = torch.device(str(name).strip())
        except (RuntimeError, ValueError, TypeError) as e:
            raise DiganError(f"bad {what} {str(name)!r}: write auto, cpu, cuda or cuda:N") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DiganError(f"{what} {name} was requested but no CUDA GPU is visible; pass --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DiganError(f"{what} {name}: this machine has {torch.cuda.device_count()} visible GPU(s) "
                             f"(cuda:0..cuda:{torch.cuda.device_count() - 1}); pass one of those or auto")
    elif dev.type not in ("cpu", "mps", "meta"):
        raise DiganError(f"bad {what} {str(name)!r}: write auto, cpu, cuda or cuda:N")
    return dev


def device_for_rank(prefer: str | torch.device | None = None, what: str = "device") -> torch.device:
    """The device this process should use: ``prefer`` when given (checked by :func:`check_device`,
    ``what`` naming the option in its errors; an index-less ``cuda`` is this rank's GPU,
    ``cuda:LOCAL_RANK``), else (None, ``""`` or ``auto``) ``cuda:LOCAL_RANK`` when CUDA is present,
    else CPU."""
    dev = check_device(prefer, what) if prefer is not None else None
    if dev is None:
        return torch.device("cuda", local_rank()) if torch.cuda.is_available() else torch.device("cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank())
    return dev


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shard_range(n: int, r: int | None = None, w: int | None = None) -> range:
    """Contiguous slice of ``range(n)`` owned by rank ``r`` of ``w`` (balanced, covers everything)."""
    r = rank() if r is None else r
    w = world_size() if w is None else w
    base, extra = divmod(n, w)
    start = r * base + min(r, extra)
    return range(start, start + base + (1 if r < extra else 0))


def all_gather_tensor(t: torch.Tensor) -> torch.Tensor:
    """Concatenate along dim 0 the (possibly different-length) tensors of every rank, in rank order."""
    if not is_distributed():
        return t
    objs = all_gather_objects(t.detach().cpu())
    return torch.cat(objs, 0).to(t.device)


def all_gather_objects(obj: Any) -> list[Any]:
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if not is_distributed():
        return t
    t = t.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / world_size()


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()
