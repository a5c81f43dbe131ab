"""The StyleGAN2 teacher (G2D) as a benchmark :class:`~evaluate.methods.Method` named ``teacher``.

It is the 2D upper bound of image quality for FID/KID and the reference for speed. It has no
pose, light or 3D output, and its capabilities say so with reasons, so pose-dependent metrics
(identity across yaw, pose accuracy) and 3D metrics (SIDE/MAD) are recorded as "n/a".

Spec: ``teacher`` (the bundled tiny 64 px teacher) or ``teacher:PATH`` (any checkpoint
:func:`digan.teacher.load_teacher` reads). Options (``--set method_options={teacher: {...}}``):

* ``truncation`` (psi, default 1.0: no truncation, the FID protocol); ``w = w_mean + psi (w - w_mean)``.
* ``noise``: ``"fixed"`` (default; the checkpoint's noise buffers, so face i is reproducible)
  or ``"random"``.

Latents are z ~ N(0, I) from :func:`digan.utils.seeding.latents` (face i depends only on
(seed, i)), the same z the DIGAN student maps through the teacher, so ``teacher`` and ``digan``
evaluated with one seed show the same identities.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from digan.errors import DiganError
from digan.render.types import Light
from digan.utils.seeding import latents as seeded_latents
from evaluate.methods import Capabilities, Method, Rendered, register_method

__all__ = ["TeacherMethod"]

_REASONS = {
    "pose": "2D GAN: no pose control",
    "light": "2D GAN: no light control",
    "depth": "2D GAN: no depth or normals",
    "mesh": "2D GAN: no 3D shape to export",
    "reconstruct": "2D GAN: cannot recover the 3D shape of an image",
}


class TeacherMethod(Method):
    """A loaded :class:`digan.teacher.Teacher` rendering frontal images from z."""

    name = "teacher"

    def __init__(self, path: str | Path | None = None, truncation: float = 1.0, noise: str = "fixed",
                 device: str | torch.device = "cpu"):
        from digan.teacher import load_teacher

        if noise not in ("fixed", "random"):
            raise DiganError(f"teacher option noise={noise!r} is not valid; choose fixed or random")
        self.path = str(path) if path else "tiny"
        self.truncation = float(truncation)
        self.noise = noise
        self.teacher = load_teacher(self.path, device=device)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(pose=False, light=False, depth=False, mesh=False, reconstruct=False, generate=True,
                            image_size=int(self.teacher.size), reasons=dict(_REASONS))

    @property
    def device(self) -> torch.device:
        return self.teacher.device

    def to(self, device: torch.device | str) -> "TeacherMethod":
        self.teacher.to(device)
        return self

    def latents(self, n: int, seed: int, start: int = 0) -> torch.Tensor:
        return seeded_latents(n, int(self.teacher.style_dim), seed, start)

    def render(self, latents: torch.Tensor, yaw: float = 0.0, pitch: float = 0.0, light: Light | None = None) -> Rendered:
        """Frontal images (B,3,S,S) in [-1,1]; any other view or a light is refused (2D GAN)."""
        if float(yaw) != 0.0 or float(pitch) != 0.0:
            raise DiganError(f"the teacher is a 2D GAN and renders the frontal view only (asked yaw={yaw}, pitch={pitch})")
        if light is not None:
            raise DiganError("the teacher is a 2D GAN and has no light control; render without a light")
        z = latents.to(self.device, torch.float32)
        with torch.no_grad():
            img = self.teacher(z, psi=self.truncation, noise=self.noise)
        return Rendered(image=img.clamp(-1, 1))

    def weights(self) -> dict[str, Any]:
        src = Path(self.teacher.source) if self.teacher.source else None
        return {"teacher": str(src) if src is not None and src.is_file() else self.teacher}

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name, "variant": self.variant, "checkpoint": self.teacher.source or self.path,
            "truncation": self.truncation, "noise": self.noise, "image_size": int(self.teacher.size),
            "style_dim": int(self.teacher.style_dim), "w_mean": self.teacher.w_mean_source,
        }


@register_method("teacher", help="StyleGAN2 teacher (2D; frontal only). teacher[:CHECKPOINT], default the bundled tiny 64 px one")
def _make_teacher(arg: str | None, truncation: float = 1.0, noise: str = "fixed", variant: str = "full",
                  **unknown: Any) -> Method:
    if unknown:
        raise DiganError(f"teacher has no option '{sorted(unknown)[0]}'; valid options: truncation, noise")
    if variant != "full":
        raise DiganError(f"the teacher has no variant '{variant}'; use plain 'teacher'")
    return TeacherMethod(arg, truncation=truncation, noise=noise)
