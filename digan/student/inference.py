"""Inference with a trained student: load it with its teacher, render faces at chosen yaw/pitch
lists and lights, relight from the predicted normals, normal and shading maps, turntables.

Quick use::

    s = Student.load("run/student.pt")                  # teacher found from the checkpoint
    z = s.latents(4, seed=0)
    est = s.estimate(s.style(z))
    img = s.render(est, yaw=30, pitch=0).image         # (4,3,S,S) in [-1,1]
    relit = s.render(est, light=Light.make(0.3, 0.8, dx=0.6, batch=4)).image

``sample_faces`` writes a folder of PNGs (and optional GIF/MP4 turntables) for the CLI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from digan.errors import DiganError
from digan.render.types import Light, View
from digan.student.config import StudentConfig
from digan.student.model import G3D, Estimate, make_renderer
from digan.utils.seeding import latents as seeded_latents

__all__ = ["ASSETS", "Reconstruction", "Student", "resolve_teacher_path", "sample_faces", "SampleResult", "normal_to_rgb"]

ASSETS = Path(__file__).resolve().parents[1] / "assets"


def resolve_teacher_path(ckpt: dict[str, Any], ckpt_path: Path, teacher_path: str | Path | None) -> Path:
    """The teacher for a checkpoint: the given path, else the recorded path, else a file of the
    same name next to the checkpoint or in ``digan/assets``."""
    if teacher_path is not None:
        return Path(teacher_path)
    rec = (ckpt.get("teacher") or {}).get("path")
    if rec:
        for cand in (Path(rec), ckpt_path.parent / Path(rec).name, ASSETS / Path(rec).name):
            if cand.is_file():
                return cand
    raise DiganError(f"cannot find the teacher of {ckpt_path} (recorded: {rec}); pass --teacher PATH")


@dataclass
class Reconstruction:
    """:meth:`Student.reconstruct`'s result: the ``estimate`` of the images, their teacher codes
    ``w`` and, with mirror averaging, the codes ``w_mirror`` of their mirror images (else None)."""

    estimate: Estimate
    w: torch.Tensor
    w_mirror: torch.Tensor | None
    #: (B,2) pixels: the translation of the teacher's image the inversion fitted to each image
    #: (``model.inversion_shift_lr``; zeros without it): ``shift_images(G(w), shift)`` is what was
    #: fitted to the image; ``model.inversion_shift_view`` times it is in the estimate's view
    shift: torch.Tensor | None = None


class Student:
    """A loaded student: G3D + frozen teacher + renderer on one device."""

    def __init__(self, g3d: G3D, teacher: Any, cfg: StudentConfig, device: torch.device | str = "cpu", info: dict | None = None):
        self.g3d = g3d.to(device).eval()
        self.teacher = teacher
        self.cfg = cfg
        self.device = torch.device(device)
        self.renderer = make_renderer(cfg, g3d.size)
        self.info = info or {}

    @classmethod
    def load(cls, path: str | Path, teacher: Any = None, teacher_path: str | Path | None = None,
             device: torch.device | str | None = None, check_teacher: bool = True) -> "Student":
        """Load a ``student.pt``/``checkpoint.pt``; the teacher must be the one it was trained with."""
        from digan.student.build import build_g3d
        from digan.student.train import load_config_from_checkpoint, load_state_checked, load_teacher, read_student_checkpoint, teacher_matches

        p = Path(path)
        ck = read_student_checkpoint(p)
        dev = torch.device(device) if device else (torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
        cfg = load_config_from_checkpoint(ck, p)
        tpath = None
        if teacher is None:
            tpath = resolve_teacher_path(ck, p, teacher_path)
            teacher = load_teacher(tpath, dev)
        elif hasattr(teacher, "to"):
            teacher = teacher.to(dev) or teacher
        if check_teacher:
            if not teacher_matches(ck.get("teacher") or {}, teacher, tpath):
                raise DiganError(f"teacher {tpath or '(object)'} is not the one {p} was trained with; pass the matching --teacher")
        if ck.get("model", "digan") != "digan":
            raise DiganError(f"{p} holds a '{ck.get('model')}' model; load it through its own method")
        g3d = build_g3d(cfg, teacher, dev, w_stats=False)
        load_state_checked(g3d, ck["state"], p)
        g3d.use_inference_prior()  # model.inference_prior_smooth: a trained student's prior
        s = cls(g3d, teacher, cfg, dev, info={"path": str(p), "step": ck.get("step"), "teacher": ck.get("teacher"), "meta": ck.get("meta", {})})
        return s

    # ------------------------------------------------------------------ sampling
    def latents(self, n: int, seed: int = 0, start: int = 0) -> torch.Tensor:
        """z for faces ``start..start+n-1`` of ``seed`` (pure function of seed and index)."""
        return seeded_latents(n, self.g3d.style_dim, seed, start)

    @torch.no_grad()
    def style(self, z: torch.Tensor, psi: float | None = None) -> torch.Tensor:
        """z -> w with truncation ``psi`` (default: the training truncation)."""
        w = self.teacher.mapping(z.to(self.device))
        if w.dim() == 3:
            w = w[:, 0]
        psi = self.cfg.model.truncation if psi is None else psi
        return self.teacher.truncate(w, psi) if psi < 1 else w

    @torch.no_grad()
    def estimate(self, w: torch.Tensor) -> Estimate:
        return self.g3d.estimate(w.to(self.device), self.teacher)

    def reconstruct(self, images: torch.Tensor, steps: int, lr: float = 0.05, flip_average: bool | None = None,
                    w: torch.Tensor | None = None, shift_lr: float | None = None) -> "Reconstruction":
        """The estimate of each image (B,3,S,S in [-1,1], the teacher's size): invert it into the
        teacher (:func:`~digan.student.method.invert_teacher`, ``steps`` Adam steps at ``lr``), then
        :meth:`estimate`. With ``flip_average`` (default: ``model.flip_average``) the image's
        left-right mirror is inverted too, its estimate mirrored back (:meth:`G3D.mirror_estimate`)
        and the two averaged (:meth:`G3D.average_estimates`): swapping an image for its mirror then
        gives exactly the mirrored result. ``shift_lr`` (default: ``model.inversion_shift_lr``; 0 =
        none): the inversion also fits a translation d of the teacher's image, and each estimate's
        view is moved by ``model.inversion_shift_view`` times it (:meth:`shifted_estimate`) before
        the mirror averaging. ``w``: the images' codes when already inverted (then only the mirror
        is inverted, and no shift is fitted for the images themselves)."""
        from digan.student.method import invert_teacher

        size = int(self.g3d.size)
        if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != (size, size):
            raise DiganError(f"reconstruct expects images (B,3,{size},{size}) in [-1,1] at the teacher's size, got "
                             f"{tuple(images.shape)}; resize them to {size}x{size} px first")
        if w is not None and (w.dim() != 2 or w.shape[0] != images.shape[0]):
            raise DiganError(f"reconstruct: w must hold one code per image, (B,D) with B = {images.shape[0]}, got {tuple(w.shape)}")
        flip = self.cfg.model.flip_average if flip_average is None else bool(flip_average)
        slr = float(self.cfg.model.inversion_shift_lr if shift_lr is None else shift_lr)
        if not slr >= 0 or slr == float("inf"):
            raise DiganError(f"inversion_shift_lr must be a finite number >= 0 (0 = no shift), got {slr}")
        if slr > 0 and not 0 <= float(self.cfg.model.inversion_shift_view) < float("inf"):
            raise DiganError(f"model.inversion_shift_view must be a finite number >= 0 (the fraction of the fitted image "
                             f"shift the view takes), got {self.cfg.model.inversion_shift_view}")
        imgs = images.to(self.device, torch.float32)
        with torch.enable_grad():
            if w is None:
                wi, d = invert_teacher(self.teacher, imgs, self.g3d.w_std, steps, lr, shift_lr=slr, return_shift=True)
            else:
                wi, d = w.to(self.device), torch.zeros(imgs.shape[0], 2, device=self.device)
            wm, dm = (invert_teacher(self.teacher, imgs.flip(3), self.g3d.w_std, steps, lr, shift_lr=slr, return_shift=True)
                      if flip else (None, None))
        k = float(self.cfg.model.inversion_shift_view)
        est = self.shifted_estimate(self.estimate(wi), k * d)
        if flip:
            g = self.g3d
            est = g.average_estimates([est, g.mirror_estimate(self.shifted_estimate(self.estimate(wm), k * dm))])
        return Reconstruction(estimate=est, w=wi.detach(), w_mirror=None if wm is None else wm.detach(),
                              shift=d.detach())

    def shifted_estimate(self, est: Estimate, shift: torch.Tensor) -> Estimate:
        """``est`` with its view translated so that its render moves by ``shift`` (B,2) pixels
        (x right, y down): d px -> d / f scene units in x and y, f the renderer's focal length in
        pixels, which moves a point at the pivot's depth (1) by exactly d px. No shift: ``est``."""
        if shift is None or not bool((shift != 0).any()):
            return est
        import dataclasses

        from digan.render.camera import focal_length

        f = focal_length(self.g3d.size, float(self.cfg.renderer.fov))
        view = est.view
        t = view.translation.clone()
        t[:, :2] = t[:, :2] + shift.to(t) / f
        view = dataclasses.replace(view, translation=t)
        raw = self.g3d.view_net.from_view(view)
        if not torch.isfinite(raw).all():
            raise DiganError("the inversion's image shift cannot be expressed: the student's model.xy_translation_range "
                             "is 0; set model.inversion_shift_lr=0")
        return dataclasses.replace(est, view=view, view_raw=raw)

    @torch.no_grad()
    def teacher_image(self, w: torch.Tensor) -> torch.Tensor:
        from digan.student.model import teacher_synthesis

        return teacher_synthesis(self.teacher, w.to(self.device), features=False)[0].clamp(-1, 1)

    @torch.no_grad()
    def render(self, est: Estimate, yaw: float | None = None, pitch: float | None = None, light: Light | None = None, roll: float = 0.0,
               **kwargs):
        """Render at absolute ``yaw``/``pitch`` degrees (None for both: the predicted view) and
        ``light`` (None: the predicted light); ``kwargs`` go to the renderer (e.g. ``extra``).
        Returns the renderer's ``RenderResult``."""
        b = est.depth.shape[0]
        view = None
        if yaw is not None or pitch is not None:
            view = View.from_angles(yaw or 0.0, pitch or 0.0, roll, batch=b, device=self.device)
        return self.g3d.render(est, self.renderer, view=view, light=light.to(self.device) if light is not None else None,
                               filter_grads=False, **kwargs)

    @torch.no_grad()
    def turntable(self, est: Estimate, n_frames: int = 36, max_yaw: float = 45.0, pitch: float = 0.0, light: Light | None = None) -> torch.Tensor:
        """(T,B,3,S,S) renders for yaw = max_yaw * sin(2 pi t / T)."""
        frames = []
        for t in range(n_frames):
            yaw = max_yaw * math.sin(2 * math.pi * t / n_frames)
            frames.append(self.render(est, yaw=yaw, pitch=pitch, light=light).image.cpu())
        return torch.stack(frames)


def normal_to_rgb(n: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Unit normals (B,3,H,W) -> image in [-1,1] (x right -> red, y up -> green, toward camera -> blue).

    The renderer's normals point into the surface with y down (Unsup3d convention); we show the
    usual outward, y-up colouring: ``(-nx, ny, nz)`` mapped from [-1,1].
    """
    rgb = torch.stack([-n[:, 0], n[:, 1], n[:, 2]], 1)
    if mask is not None:
        rgb = rgb * mask + (1 - mask)
    return rgb.clamp(-1, 1)


@dataclass
class SampleResult:
    out_dir: Path
    n_faces: int
    n_images: int
    seconds: float


def sample_faces(
    student: Student,
    out_dir: str | Path,
    n: int = 8,
    seed: int = 0,
    yaws: Sequence[float] = (-30.0, 0.0, 30.0),
    pitches: Sequence[float] = (0.0,),
    lights: Sequence[tuple[float, float, float, float]] = (),
    psi: float | None = None,
    maps: bool = True,
    turntable: str | None = None,
    n_frames: int = 36,
    batch: int = 8,
    force: bool = False,
    finish: Callable[[Path], None] | None = None,
) -> SampleResult:
    """Write renders of ``n`` faces to ``out_dir`` (atomically, as one folder).

    Per face ``i``: ``face_i/teacher.png`` (I_2D), ``yaw{Y}_pitch{P}.png`` for every pair, with
    ``maps``: ``albedo.png``, ``depth.png``, ``normal.png`` and ``shading.png`` (canonical frame);
    ``relit_{k}.png`` for each light ``(ambient, diffuse, dx, dy)``; ``turntable.gif|mp4``. Also
    ``grid.png`` (faces x views) at the top level.

    ``finish(tmp)``, when given, runs on the complete staging folder before it is swapped in: the
    caller's provenance (``config.json``, ``run.json``) and touch-ups are part of the atomic write,
    so a kill never leaves a folder without them.
    """
    import time

    from digan.utils.images import make_grid, save_png
    from digan.utils.io import atomic_dir

    if not yaws or not pitches:
        raise DiganError(f"no views to render (yaws {list(yaws)}, pitches {list(pitches)}); give at least one of each, "
                         "e.g. --yaws -30,0,30 --pitches 0")
    numbers = [*yaws, *pitches, *(x for light in lights for x in light)] + ([] if psi is None else [psi])
    if not all(math.isfinite(float(x)) for x in numbers):
        raise DiganError("yaws, pitches, lights and psi must be finite numbers (no nan or inf)")
    t0 = time.time()
    count = 0
    grid_rows = []
    with atomic_dir(out_dir, force=force) as tmp:
        for s0 in range(0, n, batch):
            m = min(batch, n - s0)
            z = student.latents(m, seed, s0)
            w = student.style(z, psi)
            est = student.estimate(w)
            teach = student.teacher_image(w).cpu()
            views = {}
            for p in pitches:
                for y in yaws:
                    views[(y, p)] = student.render(est, yaw=y, pitch=p).image.cpu()
            for j in range(m):
                d = tmp / f"face_{s0 + j:04d}"
                save_png(d / "teacher.png", teach[j])
                count += 1
                row = [teach[j]]
                for (y, p), img in views.items():
                    save_png(d / f"yaw{y:+g}_pitch{p:+g}.png", img[j])
                    row.append(img[j])
                    count += 1
                grid_rows.append(torch.stack(row))
            if maps:
                cfg = student.cfg.model
                base = student.render(est)
                dep = ((est.depth - cfg.min_depth) / (cfg.max_depth - cfg.min_depth) * 2 - 1).clamp(-1, 1).cpu()
                fg = student.g3d.foreground(est.depth)
                nrm = normal_to_rgb(base.canonical_normal, fg).cpu()
                shd = (base.shading.clamp(0, 2) - 1).cpu()
                for j in range(m):
                    d = tmp / f"face_{s0 + j:04d}"
                    save_png(d / "albedo.png", est.albedo[j].clamp(-1, 1).cpu())
                    save_png(d / "depth.png", dep[j])
                    save_png(d / "normal.png", nrm[j])
                    save_png(d / "shading.png", shd[j])
                    count += 4
            for k, (a, dif, dx, dy) in enumerate(lights):
                img = student.render(est, light=Light.make(a, dif, dx, dy, batch=m, device=student.device)).image.cpu()
                for j in range(m):
                    save_png(tmp / f"face_{s0 + j:04d}" / f"relit_{k}.png", img[j])
                    count += 1
            if turntable:
                _write_turntables(student, est, tmp, s0, turntable, n_frames)
        save_png(tmp / "grid.png", make_grid(torch.cat(grid_rows), nrow=grid_rows[0].shape[0]))
        if finish is not None:
            finish(tmp)
    return SampleResult(Path(out_dir), n, count, time.time() - t0)


def _write_turntables(student: Student, est: Estimate, tmp: Path, s0: int, fmt: str, n_frames: int) -> None:
    import imageio.v2 as imageio

    from digan.utils.images import to_uint8
    from digan.utils.io import write_bytes

    if fmt not in ("gif", "mp4"):
        raise DiganError(f"turntable format {fmt!r} is not supported; use gif or mp4")
    frames = student.turntable(est, n_frames)
    for j in range(frames.shape[1]):
        arr = to_uint8(frames[:, j])
        path = tmp / f"face_{s0 + j:04d}" / f"turntable.{fmt}"
        if fmt == "gif":
            import io

            buf = io.BytesIO()
            imageio.mimsave(buf, list(arr), format="GIF", duration=1000 / 24, loop=0)
            write_bytes(path, buf.getvalue())
        else:
            try:
                imageio.mimsave(str(path), list(arr), fps=24)
            except Exception as e:
                raise DiganError(f"writing MP4 needs imageio-ffmpeg ({type(e).__name__}); pip install imageio-ffmpeg or use --turntable gif") from e
