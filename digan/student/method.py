"""The DIGAN student as the benchmark method ``digan`` (variants ``digan@no_flip`` etc.).

Spec: ``digan`` (the bundled tiny student ``digan/assets/tiny_student_64.pt``), ``digan:PATH``
(a ``student.pt``/``checkpoint.pt``, or a folder holding ``<variant>/student.pt`` or
``student.pt``), ``digan@VARIANT:PATH``. Each variant needs its own checkpoint: the option
``checkpoints`` (``{variant: path}``) maps variants to files when no PATH is given; a variant with
no checkpoint, or a checkpoint trained as another variant, is a one-line error.

Options: ``truncation`` (psi, default 1.0, the FID protocol; the student was trained at 0.7),
``teacher`` (path; default the one recorded in the checkpoint), ``inversion_steps`` (150),
``inversion_lr`` (0.05), ``device``, ``flip_average`` (true/false; default the student's
``model.flip_average``, true: the image's mirror is inverted too and the two estimates averaged),
``inference_prior_smooth`` (px at 64 px; default the student's ``model.inference_prior_smooth``;
0 = the sharp convex prior it was trained on), ``inversion_shift_lr`` (px per step; default the
student's ``model.inversion_shift_lr``, 0.15; 0 = the paper's inversion, no fitted image shift).

Capabilities: pose, light, depth, mesh and reconstruct. ``render`` maps z through the teacher's
mapping and truncation, runs G3D and renders at the requested absolute yaw/pitch (degrees) under
the requested light (default: the predicted one); depth, normals (renderer convention) and the
coverage mask come with the images.

``reconstruct(images)`` (for SIDE/MAD on synthetic data) inverts the teacher: w = w_mean +
s * u with s the mean per-dimension std of w, u optimised by Adam (``inversion_lr``,
``inversion_steps``, from u = 0) to minimise ``L1 + Laplacian-pyramid L1`` between G(w) and the
image plus ``1e-3 * |u|^2`` (with the student's ``model.inversion_shift_lr`` > 0 a per-image
translation of G(w) is fitted beside u, and added to the estimate's view); then G3D estimates the face from w (with ``flip_average``, the
mean of that estimate and the mirrored estimate of the mirrored image:
:meth:`~digan.student.inference.Student.reconstruct`) and renders it at its predicted view: the rendered depth and normals are the reconstruction, the mask is the face foreground
(canonical depth nearer than the backdrop) carried through the render.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from digan.errors import DiganError
from digan.render.types import Light
from digan.student.config import VARIANTS
from digan.student.inference import ASSETS, Student
from evaluate.methods import Capabilities, Method, Rendered, register_method

__all__ = ["DiganMethod", "resolve_checkpoint", "invert_teacher", "BUNDLED_STUDENT"]

BUNDLED_STUDENT = ASSETS / "tiny_student_64.pt"


def resolve_checkpoint(arg: str | None, variant: str, checkpoints: dict[str, str] | None = None) -> Path:
    """The checkpoint file of ``variant`` from the spec argument or the ``checkpoints`` table."""
    if variant not in VARIANTS:
        raise DiganError(f"unknown DIGAN variant '{variant}'; choose from: {', '.join(VARIANTS)}")
    if arg:
        p = Path(arg).expanduser()
        if p.is_dir():
            for cand in (p / variant / "student.pt", p / f"{variant}.pt", *( [p / "student.pt"] if variant == "full" else [] )):
                if cand.is_file():
                    return cand
            raise DiganError(f"no checkpoint for digan@{variant} in {p} (looked for {variant}/student.pt); train it with "
                             f"'digan-bench train --variant {variant} --out {p / variant}'")
        if not p.is_file():
            raise DiganError(f"student checkpoint {p} not found; check the path in the method spec")
        return p
    if checkpoints and variant in checkpoints:
        p = Path(checkpoints[variant]).expanduser()
        if not p.is_file():
            raise DiganError(f"student checkpoint {p} for digan@{variant} not found; fix the 'checkpoints' option")
        return p
    if variant == "full":
        if not BUNDLED_STUDENT.is_file():
            raise DiganError(f"bundled tiny student {BUNDLED_STUDENT} not found; pass digan:PATH to a trained student.pt")
        return BUNDLED_STUDENT
    raise DiganError(f"no checkpoint for digan@{variant}: train one with 'digan-bench train --variant {variant} --out DIR' "
                     f"and pass digan@{variant}:DIR/student.pt (or the 'checkpoints' option)")


def shift_images(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Translate each image (B,C,H,W) by ``shift`` (B,2) pixels (x right, y down), bilinear, the
    border pixels repeated into the uncovered margin: content at pixel p moves to p + shift."""
    b, _, h, w = images.shape
    ys = torch.linspace(-1, 1, h, device=images.device, dtype=images.dtype)
    xs = torch.linspace(-1, 1, w, device=images.device, dtype=images.dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx, gy], -1)[None].expand(b, h, w, 2)
    step = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], device=images.device, dtype=images.dtype)
    grid = grid - (shift.to(images) * step)[:, None, None, :]
    return torch.nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)


def invert_teacher(teacher: Any, images: torch.Tensor, w_std: torch.Tensor, steps: int = 150, lr: float = 0.05,
                   shift_lr: float = 0.0, return_shift: bool = False):
    """Style codes w (B,D) whose teacher images reproduce ``images`` (see the module docstring).

    ``shift_lr`` > 0 also fits a translation of the teacher's image per photo (2 numbers, in
    pixels, Adam at that learning rate beside the code's ``lr``): ``images ~ shift(G(w), d)``.
    A photo's face off the crop's centre is then drawn as a shifted face, not as a turned one (a
    code cannot tell the two apart well: model.inversion_shift_lr). ``return_shift``: return
    ``(w, d)`` with d (B,2) pixels (zeros without the shift)."""
    from digan.student.model import teacher_synthesis
    from digan.student.perceptual import LaplacianPyramidLoss

    dev = images.device
    b = images.shape[0]
    mean = teacher.w_mean.reshape(1, -1).to(dev)
    s = float(w_std.mean())
    u = torch.zeros(b, mean.shape[1], device=dev, requires_grad=True)
    d = torch.zeros(b, 2, device=dev, requires_grad=shift_lr > 0)
    groups = [{"params": [u], "lr": lr}] + ([{"params": [d], "lr": float(shift_lr)}] if shift_lr > 0 else [])
    opt = torch.optim.Adam(groups)
    lap = LaplacianPyramidLoss(3).to(dev)
    target = images.clamp(-1, 1)
    with torch.enable_grad():
        for _ in range(steps):
            img, _ = teacher_synthesis(teacher, mean + s * u, features=False)
            if shift_lr > 0:
                img = shift_images(img, d)
            loss = (img - target).abs().mean() + lap(img, target) + 1e-3 * u.pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    w = (mean + s * u).detach()
    return (w, d.detach()) if return_shift else w


def _as_bool(value: Any, name: str) -> bool:
    """A method option that must be a YAML boolean (``--set method_options.digan.NAME=false``)."""
    if isinstance(value, bool):
        return value
    raise DiganError(f"digan option {name} must be true or false, got {value!r}; write e.g. {name}=false")


class DiganMethod(Method):
    """A loaded DIGAN student (see the module docstring)."""

    name = "digan"

    def __init__(self, path: Path, variant: str = "full", truncation: float = 1.0, teacher: str | None = None,
                 inversion_steps: int = 150, inversion_lr: float = 0.05, device: str | torch.device | None = None,
                 flip_average: bool | None = None, inference_prior_smooth: float | str | None = None,
                 inversion_shift_lr: float | str | None = None):
        self.path = Path(path)
        self.variant = variant
        self.student = Student.load(self.path, teacher_path=teacher, device=device or "cpu")
        trained_as = self.student.cfg.variant
        if trained_as != variant:
            raise DiganError(f"{self.path} was trained as digan@{trained_as}, not digan@{variant}; pass the matching checkpoint")
        self._set_inference_options(truncation, inversion_steps, inversion_lr, flip_average, inversion_shift_lr)
        if inference_prior_smooth is not None:
            try:
                sigma = float(inference_prior_smooth)
            except ValueError:
                raise DiganError(f"digan option inference_prior_smooth must be a number (px at 64 px; 0 = the sharp "
                                 f"prior), got {inference_prior_smooth!r}") from None
            self.student.g3d.use_inference_prior(True, sigma)

    def _set_inference_options(self, truncation: float, inversion_steps: int, inversion_lr: float, flip_average: bool | None,
                               inversion_shift_lr: float | str | None = None) -> None:
        """The options of :meth:`render` and :meth:`reconstruct` (module docstring), for this
        method and the ones built on it (``liftgan``); needs ``self.student``."""
        self.truncation = float(truncation)
        self.inversion_steps = int(inversion_steps)
        self.inversion_lr = float(inversion_lr)
        self.flip_average = self.student.cfg.model.flip_average if flip_average is None else _as_bool(flip_average, "flip_average")
        if inversion_shift_lr is not None:
            try:
                v = float(inversion_shift_lr)
            except (TypeError, ValueError):
                v = float("nan")
            if isinstance(inversion_shift_lr, bool) or not 0 <= v < float("inf"):
                raise DiganError(f"{self.name} option inversion_shift_lr must be a number >= 0 (px per step; 0 = no image "
                                 f"shift, the paper's inversion), got {inversion_shift_lr!r}")
            self.student.cfg.model.inversion_shift_lr = v

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(pose=True, light=True, depth=True, mesh=True, reconstruct=True, generate=True,
                            image_size=int(self.student.g3d.size))

    @property
    def device(self) -> torch.device:
        return self.student.device

    def to(self, device: torch.device | str) -> "DiganMethod":
        s = self.student
        s.device = torch.device(device)
        s.g3d.to(device)
        s.teacher = s.teacher.to(device) or s.teacher
        return self

    def latents(self, n: int, seed: int, start: int = 0) -> torch.Tensor:
        return self.student.latents(n, seed, start)

    def _rendered(self, out) -> Rendered:
        """A render made with ``extra`` = the canonical foreground: its mask is the head (depth in
        front of the background plane, carried to the view), so shape views and SIDE/MAD see the
        head, not the still background plane around it; the image keeps the whole frame."""
        return Rendered(image=out.image.clamp(-1, 1), depth=out.depth, normal=out.normal, mask=self.student.g3d.view_foreground(out))

    @torch.no_grad()
    def render(self, latents: torch.Tensor, yaw: float = 0.0, pitch: float = 0.0, light: Light | None = None) -> Rendered:
        s = self.student
        est = s.estimate(s.style(latents.to(s.device, torch.float32), self.truncation))
        return self._rendered(s.render(est, yaw=float(yaw), pitch=float(pitch), light=light, extra=s.g3d.foreground(est.depth)))

    def reconstruct(self, images: torch.Tensor) -> Rendered:
        s = self.student
        imgs = images.to(s.device, torch.float32)
        if imgs.shape[-1] != s.g3d.size:
            imgs = torch.nn.functional.interpolate(imgs, size=(s.g3d.size, s.g3d.size), mode="bilinear", align_corners=False, antialias=True)
        est = s.reconstruct(imgs, self.inversion_steps, self.inversion_lr, flip_average=self.flip_average).estimate
        with torch.no_grad():
            return self._rendered(s.render(est, extra=s.g3d.foreground(est.depth)))

    def weights(self) -> dict[str, Any]:
        t = self.student.teacher
        src = Path(getattr(t, "source", "") or "")
        return {"student": str(self.path), "teacher": str(src) if src.is_file() else t}

    def info(self) -> dict[str, Any]:
        s = self.student
        return {"name": self.name, "variant": self.variant, "checkpoint": str(self.path), "step": s.info.get("step"),
                "truncation": self.truncation, "image_size": int(s.g3d.size), "preset": s.cfg.preset,
                "inversion": {"steps": self.inversion_steps, "lr": self.inversion_lr, "space": "w", "flip_average": self.flip_average,
                              "shift_lr": float(s.cfg.model.inversion_shift_lr), "shift_view": float(s.cfg.model.inversion_shift_view)},
                "prior_smooth": s.g3d.prior_smooth,
                "losses": s.info.get("meta", {})}


@register_method("digan", help="DIGAN student (G3D). digan[@variant][:student.pt or folder]; default the bundled tiny student")
def _make_digan(arg: str | None, variant: str = "full", truncation: float = 1.0, teacher: str | None = None,
                checkpoints: dict[str, str] | None = None, inversion_steps: int = 150, inversion_lr: float = 0.05,
                device: str | None = None, flip_average: bool | str | None = None, inference_prior_smooth: float | str | None = None,
                inversion_shift_lr: float | str | None = None, **unknown: Any) -> Method:
    if unknown:
        raise DiganError(f"digan has no option '{sorted(unknown)[0]}'; valid options: truncation, teacher, checkpoints, "
                         "inversion_steps, inversion_lr, device, flip_average, inference_prior_smooth, inversion_shift_lr")
    path = resolve_checkpoint(arg, variant, checkpoints)
    return DiganMethod(path, variant, truncation, teacher, inversion_steps, inversion_lr, device, flip_average, inference_prior_smooth,
                       inversion_shift_lr)
