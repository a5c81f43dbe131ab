"""Small randomly initialised teachers for tests and benchmarks (no checkpoint needed).

:func:`random_teacher` builds a narrow StyleGAN2 generator (:mod:`digan.teacher.model`) and wraps
it with the teacher API the student uses (``size``, ``style_dim``, ``n_latent``, ``w_mean``,
``mapping``, ``truncate``, ``synthesis(w, noise='fixed', return_features=True)``), preferring
:class:`digan.teacher.api.Teacher` when that module provides a way to wrap a generator.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

__all__ = ["GeneratorTeacher", "random_teacher"]


class GeneratorTeacher:
    """Minimal teacher API over a :class:`digan.teacher.model.Generator` (frozen, fixed noise)."""

    def __init__(self, generator: Any, w_mean: torch.Tensor | None = None):
        self.generator = generator.eval()
        for p in self.generator.parameters():
            p.requires_grad_(False)
        self.size = int(generator.size)
        self.style_dim = int(generator.style_dim)
        self.n_latent = int(generator.n_latent)
        self.w_mean = (w_mean if w_mean is not None else generator.mean_latent(4096, seed=0)).reshape(1, -1)

    def to(self, device: torch.device | str) -> "GeneratorTeacher":
        self.generator.to(device)
        self.w_mean = self.w_mean.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.w_mean.device

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator.mapping(z)

    def truncate(self, w: torch.Tensor, psi: float) -> torch.Tensor:
        m = self.w_mean if w.dim() == 2 else self.w_mean[:, None]
        return m + psi * (w - m)

    def synthesis(self, w: torch.Tensor, noise: str | Sequence[torch.Tensor] | None = "fixed", return_features: bool = False):
        nz = self.generator.fixed_noise() if noise == "fixed" else (None if noise in (None, "random") else noise)
        return self.generator.synthesis(w, noise=nz, return_features=return_features)

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, psi: float = 1.0) -> torch.Tensor:
        z = torch.randn(n, self.style_dim, generator=torch.Generator().manual_seed(seed)).to(self.device)
        w = self.mapping(z)
        return self.synthesis(self.truncate(w, psi) if psi < 1 else w)


def random_teacher(size: int = 32, style_dim: int = 32, width: int = 16, n_mlp: int = 2, seed: int = 0) -> Any:
    """A randomly initialised, narrow StyleGAN2 teacher (channels ``width`` at every resolution),
    as a :class:`digan.teacher.api.Teacher` (falls back to :class:`GeneratorTeacher`)."""
    from digan.teacher.model import Generator, StyleGAN2Config

    torch.manual_seed(seed)
    res = [2**i for i in range(2, int(size).bit_length())]
    cfg = StyleGAN2Config(size=size, style_dim=style_dim, n_mlp=n_mlp, channels={r: width for r in res})
    gen = Generator(cfg)
    try:
        from digan.teacher.api import Teacher
    except ImportError:  # pragma: no cover
        return GeneratorTeacher(gen)
    return Teacher(gen, n_mean=2048, source=f"random_teacher(size={size}, seed={seed})")


def save_random_teacher(path, size: int = 32, style_dim: int = 32, width: int = 16, n_mlp: int = 2, seed: int = 0) -> Any:
    """Write :func:`random_teacher` as a teacher checkpoint (loadable by ``load_teacher``); returns the teacher."""
    from digan.teacher.checkpoint import make_checkpoint, save_checkpoint

    t = random_teacher(size, style_dim, width, n_mlp, seed)
    gen = t.generator
    save_checkpoint(path, make_checkpoint(gen, gen.cfg, latent_avg=t.w_mean))
    return t
