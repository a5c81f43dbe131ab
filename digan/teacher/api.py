"""The teacher (G2D) as the student and the tools see it: one class, :class:`Teacher`, and one
loader, :func:`load_teacher`.

Typical use (DIGAN's data flow, step 1)::

    from digan.teacher import load_teacher
    T = load_teacher("teacher.pt", device="cuda")        # or load_teacher("tiny"): bundled 64 px
    z = torch.randn(8, T.style_dim)
    w = T.truncate(T.mapping(z), psi=0.7)                # w = w_mean + 0.7 (w - w_mean)
    img, feats = T.synthesis(w, noise="fixed", return_features=True)
    # img (8, 3, S, S) in about [-1, 1]; feats[-1] (8, C, S, S) is the last feature map

Conventions
-----------
* ``w`` is (B, D); ``w+`` is (B, n_latent, D) with one row per style input
  (n_latent = 2 log2(S) - 2). :meth:`Teacher.synthesis` accepts both.
* ``noise="fixed"`` uses the generator's registered noise buffers (stored in the checkpoint),
  so the same w always gives the same image, across processes and after save/load;
  ``noise="random"`` draws fresh noise from the global torch RNG; a list of tensors is used as is.
* The teacher is frozen (``requires_grad=False``, eval mode) but differentiable with respect to
  its inputs: gradients flow from the image back to w (the student trains through G(w0)).
* ``w_mean`` is the checkpoint's ``latent_avg`` when it has one (converted official weights,
  files written by digan-bench), else the mean of w over ``n_mean`` z drawn with a fixed seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn

from digan.errors import DiganError, MissingAssetError
from digan.teacher.checkpoint import TeacherCheckpoint, build_generator, read_checkpoint
from digan.teacher.model import Generator, StyleGAN2Config

__all__ = ["Teacher", "load_teacher", "bundled_teacher_path", "W_MEAN_SEED"]

W_MEAN_SEED = 20240317  # seed of the z used for w_mean when a checkpoint has no latent_avg

NoiseSpec = Union[str, Sequence[torch.Tensor], None]


def bundled_teacher_path() -> Path:
    """Path of the bundled tiny 64x64 teacher (``digan/assets/tiny_teacher_64.pt``)."""
    return Path(__file__).resolve().parents[1] / "assets" / "tiny_teacher_64.pt"


class Teacher(nn.Module):
    """Frozen StyleGAN2 generator with the sampling API used by the DIGAN student.

    Attributes: ``size`` (output resolution S), ``style_dim`` (D), ``n_latent`` (rows of w+),
    ``num_layers`` (noise inputs), ``w_mean`` (D,), ``config`` (:class:`StyleGAN2Config`),
    ``generator`` (the underlying :class:`Generator`, rosinality-compatible), ``source``.
    """

    def __init__(self, generator: Generator, w_mean: Optional[torch.Tensor] = None, n_mean: int = 10000,
                 source: str = "", w_mean_source: str = ""):
        super().__init__()
        self.generator = generator.eval().requires_grad_(False)
        self.config: StyleGAN2Config = generator.cfg
        self.size = generator.size
        self.style_dim = generator.style_dim
        self.n_latent = generator.n_latent
        self.num_layers = generator.num_layers
        self.source = source
        if w_mean is None:
            w_mean = generator.mean_latent(n_mean, seed=W_MEAN_SEED).reshape(-1)
            w_mean_source = w_mean_source or f"mean of w over {n_mean} z (seed {W_MEAN_SEED})"
        self.w_mean_source = w_mean_source or "latent_avg"
        self.register_buffer("w_mean", w_mean.detach().float().reshape(-1).to(self.device))

    # -- properties ----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.generator.input.input.device

    @property
    def channels(self) -> dict[int, int]:
        """Resolution -> channel width of the feature maps returned by ``return_features``."""
        return dict(self.generator.channels)

    def train(self, mode: bool = True) -> "Teacher":  # the teacher never leaves eval mode
        return super().train(False)

    # -- latents -------------------------------------------------------------------------------
    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, D) -> w (B, D) through the mapping network."""
        if z.ndim != 2 or z.shape[1] != self.style_dim:
            raise DiganError(f"z has shape {tuple(z.shape)}; expected (B, {self.style_dim})")
        return self.generator.mapping(z)

    def truncate(self, w: torch.Tensor, psi: float = 0.7) -> torch.Tensor:
        """``w_mean + psi (w - w_mean)`` for w (B, D) or w+ (B, n_latent, D); psi=1 is identity."""
        if psi == 1.0:
            return w
        return self.w_mean + psi * (w - self.w_mean)

    def to_wplus(self, w: torch.Tensor) -> torch.Tensor:
        """w (B, D) -> w+ (B, n_latent, D) (a view); w+ is returned unchanged."""
        return self.generator.broadcast(w)

    def noise(self, kind: NoiseSpec = "fixed") -> Optional[list[torch.Tensor]]:
        """The noise list for ``kind`` ('fixed': registered buffers, 'random': None = fresh)."""
        if kind is None or kind == "random":
            return None
        if kind == "fixed":
            return self.generator.fixed_noise()
        if isinstance(kind, str):
            raise DiganError(f"noise must be 'fixed', 'random' or a list of tensors, got {kind!r}")
        noise = list(kind)
        if len(noise) != self.num_layers:
            raise DiganError(f"noise list has {len(noise)} maps; the teacher needs {self.num_layers}")
        return noise

    # -- synthesis -----------------------------------------------------------------------------
    def synthesis(self, w: torch.Tensor, noise: NoiseSpec = "fixed", return_features: bool = False):
        """w (B, D) or w+ (B, n_latent, D) -> image (B, 3, S, S), about [-1, 1].

        With ``return_features=True`` returns ``(image, features)`` where ``features`` lists the
        feature map after the last convolution at each resolution 4, 8, ..., S (the last one at
        output resolution, ``channels[S]`` channels).
        """
        if w.ndim not in (2, 3) or w.shape[-1] != self.style_dim:
            raise DiganError(f"w has shape {tuple(w.shape)}; expected (B, {self.style_dim}) or (B, {self.n_latent}, {self.style_dim})")
        return self.generator.synthesis(w, noise=self.noise(noise), return_features=return_features)

    def forward(self, z: torch.Tensor, psi: float = 1.0, noise: NoiseSpec = "fixed") -> torch.Tensor:
        """z -> image (mapping, truncation, synthesis)."""
        return self.synthesis(self.truncate(self.mapping(z), psi), noise=noise)

    @torch.no_grad()
    def sample_w(self, n: int, seed: int = 0, psi: float = 1.0, start: int = 0) -> torch.Tensor:
        """w for samples ``start .. start+n-1`` of ``seed`` (each depends only on seed and index)."""
        from digan.utils.seeding import latents

        z = latents(n, self.style_dim, seed, start=start).to(self.device, self.generator.input.input.dtype)
        return self.truncate(self.mapping(z), psi)

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, psi: float = 1.0, noise: NoiseSpec = "fixed", batch_size: int = 16,
               start: int = 0, return_w: bool = False):
        """``n`` images (n, 3, S, S) on the teacher's device; sample i depends only on (seed, start+i).

        With ``return_w=True`` returns ``(images, w)``.
        """
        imgs, ws = [], []
        for s in range(0, n, batch_size):
            m = min(batch_size, n - s)
            w = self.sample_w(m, seed=seed, psi=psi, start=start + s)
            imgs.append(self.synthesis(w, noise=noise))
            ws.append(w)
        img = torch.cat(imgs) if imgs else torch.empty(0, 3, self.size, self.size, device=self.device)
        if return_w:
            return img, (torch.cat(ws) if ws else torch.empty(0, self.style_dim, device=self.device))
        return img

    def extra_repr(self) -> str:
        return f"size={self.size}, style_dim={self.style_dim}, n_latent={self.n_latent}, source={self.source!r}"


def load_teacher(path: Union[str, Path, None] = "tiny", device: Union[str, torch.device] = "cpu", which: str = "g_ema",
                 config: Optional[StyleGAN2Config] = None, n_mean: int = 10000) -> Teacher:
    """Load a teacher checkpoint (rosinality ``.pt``, digan-bench ``.pt``, NVIDIA ADA state dict or
    ``.pkl``; see :mod:`digan.teacher.checkpoint`) as a frozen :class:`Teacher` on ``device``.

    ``path`` ``"tiny"`` (or None) is the bundled 64x64 teacher. ``which`` picks ``g_ema``
    (default) or ``g``. ``config`` forces an architecture; a mismatch raises a one-line
    :class:`DiganError` naming the first bad key and both shapes. Missing and corrupt files
    also raise one-line errors.
    """
    if path is None or str(path) == "tiny":
        p = bundled_teacher_path()
        if not p.is_file():
            raise MissingAssetError("bundled tiny teacher", str(p),
                                    "reinstall digan-bench or train one: digan-bench train-teacher --preset tiny --data DIR")
        path = p
    ckpt: TeacherCheckpoint = read_checkpoint(path, config=config)
    g = build_generator(ckpt, which=which, label=f"teacher checkpoint {path}")
    g = g.to(device)
    w_mean = ckpt.latent_avg.to(device) if ckpt.latent_avg is not None else None
    return Teacher(g, w_mean=w_mean, n_mean=n_mean, source=str(path),
                   w_mean_source="latent_avg from the checkpoint" if w_mean is not None else "")
