"""Can DIGAN's depth parameterisation and losses recover a head's shape at all? (no teacher)

``digan-bench bench recover`` and :func:`recover_shape` answer the question behind a student
whose learnt depth is worse than its own prior: *is the shape lost in the losses, the normals
or the renderer, or only in the teacher/distillation?* On synthetic heads whose images at any
view and light are exact (:func:`digan.data.synth.render_views`), a per-identity depth (and,
optionally, albedo, view and light) is fitted directly by gradient descent through the same
pieces DIGAN trains with:

* depth = :func:`digan.student.model.raw_to_depth` of a free residual map (the student's depth
  head output is replaced by a free tensor): same convex prior, same ``model.depth_smooth``
  low-pass, same [min, max] mapping and border;
* the same edge-gradient filter (``model.grad_filter``) on the way into the same
  :class:`~digan.render.MeshRenderer` (normals, Lambertian shading, rasterizer gradients);
* the same image loss (L1 + ``loss.perc`` x the configured perceptual term) for the
  reconstruction at every view (DIGAN's rec and, with several views, the role of its perturbed
  views), plus the flip loss (``loss.flip`` x the image loss of the mirrored depth and albedo).

Settings (:data:`SETTINGS`): ``true`` view/light given or ``predicted`` (free per-view pose and
light, initialised frontal/uniform); ``true`` albedo given or ``free`` (initialised from the
frontal image, as DIGAN's texture starts from the teacher's image). The true silhouette is
given (``vertex_mask``): the question is the relief, not the outline.

Reported against steps: SIDE and MAD of the fitted canonical depth against the true canonical
depth over the eroded canonical mask (Unsup3d protocol, :mod:`evaluate.metrics.depth3d`), and
the depth roughness (:func:`evaluate.metrics.depth3d.depth_roughness`) beside the truth's, and
the inner face's detail correlation with the truth (``detail_corr``:
:func:`evaluate.metrics.depth3d.depth_detail_agreement` on the prior's ellipse, as ``bench
shape`` measures a trained student) and the nose's protrusion over the truth's (``nose_ratio``:
:func:`evaluate.metrics.depth3d.nose_protrusion`, as ``bench shape``'s). If depth does not
approach the truth in the ``true``/``true`` setting, the renderer, the normals or the loss is at
fault; if it does there but not with free albedo or predicted pose, the ambiguity is what the
model's priors must resolve.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from digan.errors import DiganError

__all__ = ["RecoverConfig", "SETTINGS", "recover_shape", "recover_report", "objective_fit", "objective_fit_report"]

#: name -> (pose, albedo, use flip)
SETTINGS: dict[str, tuple[str, str, bool]] = {
    "true_pose_true_albedo": ("true", "true", False),
    "true_pose_free_albedo": ("true", "free", False),
    "true_pose_free_albedo_flip": ("true", "free", True),
    "pred_pose_free_albedo_flip": ("predicted", "free", True),
}


@dataclass
class RecoverConfig:
    n_identities: int = 8
    first_identity: int = 0
    yaws: tuple[float, ...] = (-30.0, -15.0, 0.0, 15.0, 30.0)
    steps: int = 300
    lr: float = 0.01  # Adam, on the raw residual (tanh units), albedo and pose/light
    eval_every: int = 25
    seed: int = 0
    settings: tuple[str, ...] = tuple(SETTINGS)
    # > 0: fit to the teacher's reproductions of the views instead of the exact renders, each
    # view inverted into the teacher with this many steps (bench shape's inversion): what the
    # teacher's images still carry of the head. The views are then rendered over the data set's
    # backdrops (the teacher never saw a white one)
    through_teacher: int = 0
    supersample: int = 2


def _views_lights(cfg: RecoverConfig, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per (identity, yaw): views (pitch, yaw, roll, t) and lights (ambient, diffuse, dx, dy)."""
    rng = np.random.default_rng(cfg.seed)
    k = len(cfg.yaws)
    views = np.zeros((n * k, 6), np.float32)
    views[:, 1] = np.tile(np.asarray(cfg.yaws, np.float32), n)
    lights = np.stack([rng.uniform(0.35, 0.65, n * k), rng.uniform(0.35, 0.75, n * k),
                       rng.uniform(-0.8, 0.8, n * k), rng.uniform(-0.8, 0.8, n * k)], 1).astype(np.float32)
    return views, lights


def _laplacian_abs(depth: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean over images of :func:`evaluate.metrics.depth3d.depth_roughness` (the one owner)."""
    from evaluate.metrics.depth3d import depth_roughness

    return float(torch.nanmean(depth_roughness(depth, mask)))


def recover_shape(synth_dir: str | Path, student_cfg: Any = None, cfg: RecoverConfig | None = None,
                  log: Optional[Callable[[str, int, dict[str, float]], None]] = None, teacher: Any = None) -> dict[str, Any]:
    """Fit depth (and per setting albedo/pose/light) to exact renders of ``synth_dir``'s identities.

    ``student_cfg``: a :class:`~digan.student.config.StudentConfig` (default: the ``tiny`` preset)
    whose model (prior, smoothing, depth range, gradient filter), renderer and loss (perceptual,
    flip weight) are used. With ``cfg.through_teacher`` > 0 the targets are ``teacher``'s
    reproductions of the views (``teacher`` required) and ``"teacher"`` holds the inversion steps
    and the reproductions' PSNR inside the head. Returns ``{"config", "truth": {...},
    "settings": {name: {"curve": [{step, side, mad, roughness, detail_corr}], "final",
    "seconds"}}}``.
    """
    from digan.data.heads import head_maps
    from digan.data.synth import identity_backdrops, read_synth_config, render_views
    from digan.data.synthetic import load_synth
    from digan.render.shading import normals_from_depth
    from digan.render.types import Light, View
    from digan.student.config import make_config
    from digan.student.gradfilter import edge_gradient_filter
    from digan.student.losses import image_loss
    from digan.student.model import G3D, make_renderer, raw_to_depth
    from digan.student.perceptual import build_perceptual
    from digan.student.diagnostics import DETAIL_SIGMA_64
    from evaluate.metrics.depth3d import depth_detail_agreement, erode_mask, mad_per_image, nose_protrusion, nose_summary, side_per_image

    cfg = cfg or RecoverConfig()
    scfg = student_cfg or make_config("tiny")
    unknown = [s for s in cfg.settings if s not in SETTINGS]
    if unknown:
        raise DiganError(f"unknown recoverability setting {unknown[0]!r}; choose from: {', '.join(SETTINGS)}")
    if not (0 < cfg.lr < float("inf")):
        raise DiganError(f"recoverability fit needs a learning rate > 0, got {cfg.lr}; pass e.g. --lr 0.01")
    if cfg.steps < 1 or cfg.eval_every < 1:
        raise DiganError(f"recoverability fit needs steps >= 1 and eval_every >= 1, got {cfg.steps} and {cfg.eval_every}")
    bad = [y for y in cfg.yaws if not (-90.0 < float(y) < 90.0)]
    if not cfg.yaws or bad:
        raise DiganError(f"recoverability views need yaws strictly between -90 and 90 degrees (a head seen from behind shows no face), got {list(cfg.yaws)}; pass e.g. --yaws -30,0,30")
    ds = load_synth(synth_dir)
    n_ids = int(np.asarray(ds.arrays["identity"]).max()) + 1
    ids = list(range(cfg.first_identity, min(n_ids, cfg.first_identity + cfg.n_identities)))
    if not ids:
        raise DiganError(f"{synth_dir} holds {n_ids} identities; lower --first-identity")
    size = int(ds.arrays["images"].shape[1])
    params = [ds.identity_params(i) for i in ids]
    n, k = len(ids), len(cfg.yaws)
    views_np, lights_np = _views_lights(cfg, n)
    per_view = [p for p in params for _ in range(k)]
    backdrops = (identity_backdrops(read_synth_config(synth_dir), ds.arrays["identity"], [i for i in ids for _ in range(k)])
                 if cfg.through_teacher > 0 else None)
    if cfg.through_teacher > 0 and teacher is None:
        raise DiganError("recoverability through the teacher needs a teacher; pass --teacher (e.g. tiny)")
    gt = render_views(per_view, views_np, lights_np, size, fov=scfg.renderer.fov, supersample=cfg.supersample, backdrops=backdrops)
    maps = [head_maps(p, size) for p in params]
    c_depth = torch.stack([m.depth for m in maps]).float()
    c_albedo = torch.stack([m.albedo for m in maps]).float()
    c_mask = torch.stack([m.mask for m in maps]).float()
    c_normal = normals_from_depth(c_depth, scfg.renderer.fov)
    eval_mask = erode_mask(c_mask)
    m = scfg.model
    prior = G3D.model_prior(m, size, m.depth_prior_smooth)
    renderer = make_renderer(scfg, size)
    perceptual = None
    if scfg.loss.perc > 0:
        perceptual, _ = build_perceptual(scfg.loss.perceptual, scfg.loss.perceptual_path, scfg.loss.perceptual_scales)
    view_true = View(torch.from_numpy(views_np[:, :3]), torch.from_numpy(views_np[:, 3:]))
    li = torch.from_numpy(lights_np)
    light_true = Light(li[:, 0], li[:, 1], li[:, 2:4])
    frontal = int(np.argmin(np.abs(np.asarray(cfg.yaws))))
    target = gt["image"]
    through = None
    if cfg.through_teacher > 0:
        target, through = _teacher_reproductions(teacher, target, gt["mask"], scfg, int(cfg.through_teacher))

    prior_depth = raw_to_depth(torch.zeros(n, 1, size, size), prior, m)
    inner_face = c_mask * (prior_depth <= m.border_depth - 0.01).float()  # the prior's ellipse, as bench shape's inner face

    def score(depth: torch.Tensor) -> dict[str, float]:
        n_ = normals_from_depth(depth, scfg.renderer.fov)
        detail, _ = depth_detail_agreement(depth, c_depth, inner_face, DETAIL_SIGMA_64 * size / 64)
        # the nose: its tip's protrusion out of its flanks over the truth's (bench shape's nose_ratio)
        nose_ratio = nose_summary(nose_protrusion({"fit": depth}, c_depth, c_mask))["fit_ratio"]
        return {"side": float(side_per_image(depth, c_depth, eval_mask).mean()),
                "mad": float(mad_per_image(n_, c_normal, eval_mask).mean()),
                "roughness": _laplacian_abs(depth, eval_mask),
                "detail_corr": float(np.nanmean(detail.numpy())) if bool(torch.isfinite(detail).any()) else float("nan"),
                "nose_ratio": nose_ratio}

    out: dict[str, Any] = {
        "config": {**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__}, "synth_dir": str(synth_dir), "identities": ids,
                   "size": size, "model": {"depth_prior": m.depth_prior, "depth_smooth": m.depth_smooth,
                                           "grad_filter": m.grad_filter, "perceptual": type(perceptual).__name__ if perceptual is not None else None,
                                           "flip_weight": scfg.loss.flip}},
        "truth": {"roughness": _laplacian_abs(c_depth, eval_mask)},
        "references": {"prior_only": score(prior_depth),
                       "flat_plane": score(torch.ones_like(c_depth))},
        "settings": {},
    }
    if through is not None:
        out["teacher"] = through
    for name in cfg.settings:
        pose, alb, use_flip = SETTINGS[name]
        t0 = time.perf_counter()
        raw = torch.zeros(n, 1, size, size, requires_grad=True)
        opt_params = [raw]
        if alb == "free":
            albedo = target.view(n, k, 3, size, size)[:, frontal].clone().requires_grad_(True)
            opt_params.append(albedo)
        else:
            albedo = c_albedo
        if pose == "predicted":
            rot = torch.zeros(n * k, 3, requires_grad=True)
            trans = torch.zeros(n * k, 3, requires_grad=True)
            lraw = torch.zeros(n * k, 4, requires_grad=True)  # ambient, diffuse around 0.5; direction
            opt_params += [rot, trans, lraw]
        opt = torch.optim.Adam(opt_params, lr=cfg.lr)
        curve = []
        for step in range(cfg.steps + 1):
            depth = raw_to_depth(raw, prior, m)
            if step % cfg.eval_every == 0 or step == cfg.steps:
                with torch.no_grad():
                    row = {"step": step, **score(depth)}
                curve.append(row)
                if log is not None:
                    log(name, step, row)
            if step == cfg.steps:
                break
            if pose == "predicted":
                view = View(rot * 60.0, trans * 0.1)
                light = Light(0.5 + 0.5 * torch.tanh(lraw[:, 0]), 0.5 + 0.5 * torch.tanh(lraw[:, 1]), torch.tanh(lraw[:, 2:4]))
            else:
                view, light = view_true, light_true
            d = depth.repeat_interleave(k, 0)
            a = albedo.repeat_interleave(k, 0)
            vm = c_mask.repeat_interleave(k, 0)
            if m.grad_filter in ("depth", "both"):
                d = edge_gradient_filter(d, m.grad_filter_eps)
            img = renderer.render(d, a, view, light, vertex_mask=vm).image
            loss = image_loss(img, target, perceptual, scfg.loss.perc)
            if use_flip and scfg.loss.flip > 0:
                img_f = renderer.render(d.flip(3), a.flip(3), view, light, vertex_mask=vm.flip(3)).image
                loss = loss + scfg.loss.flip * image_loss(img_f, target, perceptual, scfg.loss.perc)
            if not torch.isfinite(loss):
                raise DiganError(f"recoverability fit '{name}' diverged at step {step}; lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        out["settings"][name] = {"curve": curve, "final": curve[-1], "seconds": round(time.perf_counter() - t0, 2)}
    return out


def _teacher_reproductions(teacher: Any, images: torch.Tensor, mask: torch.Tensor, scfg: Any, steps: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """``images`` inverted into ``teacher`` (:func:`digan.student.method.invert_teacher`, ``steps``
    steps, the teacher's w spread from ``scfg.train``'s sample count and seed) and re-synthesised;
    with the mean PSNR of the reproductions inside ``mask``."""
    from digan.student.build import teacher_w_stats
    from digan.student.diagnostics import masked_psnr
    from digan.student.method import invert_teacher
    from digan.student.model import teacher_synthesis

    size = int(getattr(teacher, "size", images.shape[-1]))
    if size != images.shape[-1]:
        raise DiganError(f"the teacher makes {size} px images but the synthetic set is {images.shape[-1]} px; use a set made with --size {size}")
    _, w_std = teacher_w_stats(teacher, int(scfg.train.w_stats_samples), int(scfg.train.seed))
    w = invert_teacher(teacher, images, w_std, steps)
    with torch.no_grad():
        rep, _ = teacher_synthesis(teacher, w, features=False)
    rep = rep.detach().clamp(-1, 1).cpu()
    psnr = masked_psnr(rep, images, mask)
    return rep, {"inversion_steps": int(steps), "psnr_db": float(psnr[torch.isfinite(psnr)].mean())}


def _signed(v: float) -> str:
    """``+0.81``; ``n/a`` where undefined (a flat plane has no curvature to correlate)."""
    return f"{v:+.2f}" if np.isfinite(v) else "n/a"


def _ratio(v: Any) -> str:
    """``0.54x``; ``n/a`` where no nose tip could be scored."""
    return f"{v:.2f}x" if v is not None and np.isfinite(v) else "n/a"


def recover_report(result: dict[str, Any]) -> list[list[str]]:
    """Table rows (setting, SIDE x1e-2 start -> end, MAD start -> end, roughness/truth, the inner
    face's detail correlation with the truth at the end, the nose's protrusion over the truth's
    at the end) for printing."""
    rows = []
    truth = result["truth"]["roughness"]
    for name in ("prior_only", "flat_plane"):
        r = result["references"][name]
        rows.append([name, f"{r['side'] * 100:.3f}", f"{r['mad']:.1f}", f"{r['roughness'] / truth:.2f}", _signed(r["detail_corr"]), _ratio(r.get("nose_ratio"))])
    for name, s in result["settings"].items():
        a, b = s["curve"][0], s["final"]
        rows.append([name, f"{a['side'] * 100:.3f}->{b['side'] * 100:.3f}", f"{a['mad']:.1f}->{b['mad']:.1f}",
                     f"{b['roughness'] / truth:.2f}", _signed(b["detail_corr"]), _ratio(b.get("nose_ratio"))])
    return rows


class _OffsetDepthNet(torch.nn.Module):
    """A trained depth net plus one free residual map per fitted face (for :func:`objective_fit`):
    ``net(w0, feat) + offset`` for a batch of exactly those faces, the net alone otherwise."""

    def __init__(self, net: torch.nn.Module, n: int, size: int):
        super().__init__()
        self.net = net
        self.offset = torch.nn.Parameter(torch.zeros(n, 1, size, size))

    def forward(self, w0: torch.Tensor, feat: torch.Tensor | None = None) -> torch.Tensor:
        out = self.net(w0, feat)
        return out + self.offset if out.shape[0] == self.offset.shape[0] else out

    @property
    def inject(self) -> Any:
        return self.net.inject


#: what :func:`objective_fit` records at each evaluation: name -> (report path)
_FIT_SCORES = {"side": ("student", "side"), "mad": ("student", "mad"), "face_mad": ("face", "student", "mad"),
               "detail_corr": ("detail", "corr"), "detail_size": ("detail", "std_ratio"), "roughness_ratio": ("roughness", "ratio"),
               "nose_ratio": ("nose", "student_ratio")}


def objective_fit(student: Any, synth_dir: str | Path, n_faces: int = 16, steps: int = 100, lr: float = 0.01,
                  inversion_steps: int = 60, overrides: list[str] | None = None, targets: str = "teacher",
                  eval_every: int | None = None, seed: int = 0,
                  log: Optional[Callable[[int, dict[str, float]], None]] = None) -> dict[str, Any]:
    """Does a trained student's own objective, for each face, point at that face's true shape?

    The heads of ``synth_dir`` are inverted into the teacher as ``bench shape`` inverts them
    (``inversion_steps``); every network of the student is held, and one free residual map per
    face is added to the depth net's output (before the prior, the low-pass and the mapping, as
    in :func:`recover_shape`). That residual is fitted by Adam (``lr``, ``steps``) to the
    student's training objective (:class:`~digan.student.objective.DistillationObjective`, with
    ``overrides`` such as ``loss.flip=0``: every term with its weight, random perturbed views and
    lights each step) on the inverted codes, with the teacher's images of them as targets
    (``targets="teacher"``, what training sees) or the exact heads (``"exact"``). The scores of
    ``bench shape`` (SIDE, MAD, inner face, detail, roughness; :func:`~digan.student.diagnostics.
    reconstruction_report`) are recorded every ``eval_every`` steps.

    A trained depth net is a smooth function of the code, fitted over many faces; this fit is
    what the objective asks of each face on its own. If the scores get worse as the loss falls,
    the objective's optimum lies away from the truth and the student's shape owes what it has to
    the net's smoothness and the prior, not to the losses.
    Returns JSON-ready: ``curve`` (step, the loss terms averaged over the steps since the last
    evaluation, scores), ``final``, ``references`` (SIDE, MAD of a flat plane and of the prior at
    DV's pose on the student's pixels at step 0), ``seconds``, ``config``.
    """
    import copy

    from digan.config import apply_overrides
    from digan.student.diagnostics import load_eval_faces, reconstruction_report
    from digan.student.inference import Student
    from digan.student.method import invert_teacher
    from digan.student.registry import get_builder
    from digan.student.train import attach_pose_reader

    if targets not in ("teacher", "exact"):
        raise DiganError(f"targets must be 'teacher' or 'exact', got {targets!r}")
    if steps < 1 or not (0 < lr < float("inf")):
        raise DiganError(f"objective fit needs steps >= 1 and lr > 0 (got {steps}, {lr})")
    g = student.g3d
    dev = student.device
    gt, true_yaw = load_eval_faces(synth_dir, n_faces, g.size)
    n = gt["image"].shape[0]
    cfg = apply_overrides(copy.deepcopy(student.cfg), list(overrides or []))
    # the codes are inverted below as the objective's targets are (no fitted image shift), and the
    # reports' mirror inversions alike: every estimate of a face then comes from the same kind of code
    cfg.model.inversion_shift_lr = 0.0
    torch.manual_seed(seed)
    built = get_builder(cfg.model.name)(cfg, student.teacher, dev)
    obj, g3d = built.objective, built.core
    attach_pose_reader(obj, cfg)  # the terms that read the teacher's images' pose, as in training
    try:
        g3d.load_state_dict(g.state_dict())
    except RuntimeError as e:
        raise DiganError(f"--set {' '.join(overrides or [])} changes the student's networks; only loss and non-structural model settings can be changed here ({str(e).splitlines()[0]})") from None
    g3d.eval()
    for p in g3d.parameters():
        p.requires_grad_(False)
    g3d.depth_net = _OffsetDepthNet(g3d.depth_net, n, g3d.size).to(dev)
    held = Student(g3d, student.teacher, cfg, dev)
    imgs = gt["image"].to(dev)
    with torch.enable_grad():
        w = invert_teacher(student.teacher, imgs, g.w_std, inversion_steps)
    target = held.teacher_image(w).clamp(-1, 1) if targets == "teacher" else imgs.clamp(-1, 1)
    opt = torch.optim.Adam([g3d.depth_net.offset], lr=lr)
    every = eval_every or max(1, steps // 4)

    def report() -> dict[str, Any]:
        return reconstruction_report(held, gt, true_yaw, inversion_steps, w=w, render_fit=False)

    def score(rep: dict[str, Any]) -> dict[str, float]:
        row = {}
        for k, path in _FIT_SCORES.items():
            v: Any = rep
            for part in path:
                v = v.get(part, float("nan")) if isinstance(v, dict) else float("nan")
            row[k] = float(v)  # NaN where the report lacks it (the nose needs the set's canonical masks)
        return row

    t0 = time.perf_counter()
    rep0 = report()
    # on the student's pixels at step 0 (bench shape's references)
    refs = {k: {"side": float(rep0[k]["side"]), "mad": float(rep0[k]["mad"])} for k in ("flat_plane", "prior_posed")}
    curve = [{"step": 0, **score(rep0)}]
    if log:
        log(0, curve[-1])
    dummy = torch.zeros(n, 1, device=dev)
    sums: dict[str, float] = {}
    since = 0
    for step in range(1, steps + 1):
        loss, parts = obj(dummy, batch=(w, target))
        if not torch.isfinite(loss):
            raise DiganError(f"objective fit: the loss became {loss.item()} at step {step}; lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        since += 1
        if step % every == 0 or step == steps:
            # the loss terms averaged over the steps since the last evaluation (each step draws
            # its own perturbed views and lights), before each step's update
            curve.append({"step": step, "loss": {k: v / since for k, v in sums.items()}, **score(report())})
            sums, since = {}, 0
            if log:
                log(step, curve[-1])
    return {"curve": curve, "final": curve[-1], "references": refs, "seconds": round(time.perf_counter() - t0, 2),
            "config": {"n_faces": int(n), "steps": int(steps), "lr": float(lr), "inversion_steps": int(inversion_steps),
                       "targets": targets, "overrides": list(overrides or []), "seed": int(seed), "synth": str(synth_dir)}}


def objective_fit_report(result: dict[str, Any]) -> list[list[str]]:
    """Table rows of :func:`objective_fit`'s curve for printing (step, the loss averaged since
    the last evaluation, SIDE x1e-2, MAD, inner-face MAD, detail correlation and size,
    roughness / truth, the nose's protrusion over the truth's)."""
    return [[str(r["step"]), f"{r['loss']['total']:.4f}" if "loss" in r else "-", f"{r['side'] * 100:.3f}", f"{r['mad']:.1f}",
             f"{r['face_mad']:.1f}", f"{r['detail_corr']:+.2f}", f"{r['detail_size']:.2f}x", f"{r['roughness_ratio']:.2f}x",
             _ratio(r.get("nose_ratio"))]
            for r in result["curve"]]
