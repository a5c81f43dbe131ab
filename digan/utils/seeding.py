"""Seeding helpers: one place that turns a seed into reproducible generators."""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["seed_everything", "torch_generator", "latents"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def torch_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(seed) % 2**64)  # torch's own wrap for -2**63..2**64-1; any other int no longer overflows
    return g


def latents(n: int, dim: int, seed: int, start: int = 0) -> torch.Tensor:
    """Standard-normal latents for sample indices ``start .. start+n-1`` of a seed.

    Each sample's latent depends only on (seed, index), so a run sharded across processes or
    resumed half-way draws exactly the same faces as a single uninterrupted run.
    """
    out = torch.empty(n, dim)
    for i in range(n):
        g = torch_generator(int(seed) * 1_000_003 + start + i)
        out[i] = torch.randn(dim, generator=g)
    return out
