"""Named, batched camera-view and light parameters shared by the renderer, the models and the
benchmark. Fields are named rather than packed into anonymous vectors so that no module depends
on another's ordering.

Conventions (see :mod:`digan.render` for the full camera model)
----------------------------------------------------------------
* Camera at the origin looking down +z; image x to the right, image y down; depth = z.
* ``View.rotation`` is (pitch, yaw, roll) in **degrees** about the camera x, y, z axes, applied
  as ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)`` about the pivot (0, 0, 1), then ``translation`` is
  added. Positive yaw turns the face so that its nose moves toward image +x (right).
* ``Light``: Lambertian shading ``ambient + diffuse * max(0, n . l)`` with
  ``l = normalize(dx, dy, 1)`` pointing from the surface toward the light, in the canonical frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["View", "Light"]


@dataclass
class View:
    """Batched rigid view change. ``rotation``: (B,3) degrees (pitch, yaw, roll); ``translation``: (B,3)."""

    rotation: torch.Tensor
    translation: torch.Tensor

    @property
    def batch(self) -> int:
        return self.rotation.shape[0]

    @classmethod
    def identity(cls, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> "View":
        z = torch.zeros(batch, 3, device=device, dtype=dtype)
        return cls(z, z.clone())

    @classmethod
    def from_angles(
        cls,
        yaw: float | torch.Tensor,
        pitch: float | torch.Tensor = 0.0,
        roll: float | torch.Tensor = 0.0,
        batch: int = 1,
        device: torch.device | str = "cpu",
    ) -> "View":
        """A view with the given angles in degrees (scalars broadcast to ``batch``) and no translation."""
        def col(v: float | torch.Tensor) -> torch.Tensor:
            t = torch.as_tensor(v, dtype=torch.float32, device=device).reshape(-1)
            return t.expand(batch) if t.numel() == 1 else t

        rot = torch.stack([col(pitch), col(yaw), col(roll)], dim=1)
        return cls(rot, torch.zeros_like(rot))

    @property
    def yaw(self) -> torch.Tensor:
        return self.rotation[:, 1]

    @property
    def pitch(self) -> torch.Tensor:
        return self.rotation[:, 0]

    def to(self, device: torch.device | str) -> "View":
        return View(self.rotation.to(device), self.translation.to(device))


@dataclass
class Light:
    """Batched Lambertian light: ``ambient`` (B,), ``diffuse`` (B,), ``direction`` (B,2) = (dx, dy)."""

    ambient: torch.Tensor
    diffuse: torch.Tensor
    direction: torch.Tensor

    @property
    def batch(self) -> int:
        return self.ambient.shape[0]

    @classmethod
    def uniform(cls, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> "Light":
        """Ambient 1, diffuse 0: the render shows the albedo unchanged."""
        return cls(
            torch.ones(batch, device=device, dtype=dtype),
            torch.zeros(batch, device=device, dtype=dtype),
            torch.zeros(batch, 2, device=device, dtype=dtype),
        )

    @classmethod
    def make(
        cls,
        ambient: float,
        diffuse: float,
        dx: float = 0.0,
        dy: float = 0.0,
        batch: int = 1,
        device: torch.device | str = "cpu",
    ) -> "Light":
        t = lambda v: torch.full((batch,), float(v), device=device)  # noqa: E731
        return cls(t(ambient), t(diffuse), torch.stack([t(dx), t(dy)], dim=1))

    def unit_direction(self) -> torch.Tensor:
        """(B,3) unit vector toward the light: normalize(dx, dy, 1)."""
        d = torch.cat([self.direction, torch.ones_like(self.direction[:, :1])], dim=1)
        return d / d.norm(dim=1, keepdim=True)

    def to(self, device: torch.device | str) -> "Light":
        return Light(self.ambient.to(device), self.diffuse.to(device), self.direction.to(device))
