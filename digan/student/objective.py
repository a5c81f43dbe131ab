"""DIGAN's training objective: one ``forward`` that samples teacher images, runs G3D and returns
the weighted total loss with its parts (so that DistributedDataParallel wraps a single module and
sees a single forward per backward).

Per step (LiftedGAN's ``train_step``, with DIGAN's KAN/partial-conv networks):

* z ~ N(0, I) -> w = truncate(mapping(z), 0.7) -> I_2D = G(w) (no gradient).
* G3D estimate; render I_3D at the predicted view/light, and the flipped render.
* ``rec`` (x ``loss.rec``): symmetric reconstruction L1 + perc, flip weight ``loss.flip``
  (``loss.rec_depth_grad="none"`` keeps both off the depth, ``loss.flip_depth_grad="none"``
  only the flip term; experimental, docs/shape-history.md).
* Perturbation: L' = (a, b) and (dx, dy) of two random permutations of the batch's lights
  (``loss.perturb_light="permute"``, LiftedGAN) or (a, b) permuted and (dx, dy) ~ U(+-
  ``loss.perturb_light_range``) (``"direction"``: the tiny preset; see LossConfig); V' =
  pitch ~ U(+-15), yaw ~ U(+-45) deg, roll 0, tx = ``loss.perturb_translation`` (0.2) x sin(yaw)
  raw units; w' = M(w, L', V').
  ``perturb`` (x ``loss.perturb``) = image loss of the render at DV/DL(w') vs G(w') (G detached)
  + image loss of G(w') vs the render at (L', V') (render detached): LiftedGAN computes the
  two halves with two backward passes; their sum in one backward gives the same gradients.
  ``loss.perturb_depth_grad="none"`` keeps the first half's gradient off the depth.
* ``cycle`` (x ``loss.cycle``): MSE(DL(w'), L') + MSE(DV(w')[:3], V'[:3]); it trains DV, DL
  and M (``loss.cycle_grad="all"``, LiftedGAN) or M only (``"compose"``: DV/DL weights held,
  see LossConfig).
* ``cycle_image`` (x ``loss.cycle_image``, 0 in the paper): the image reader R fits
  R(G(w)) to (DV(w)[:3], DL(w)) (targets detached), and, with R's weights held,
  MSE(R(G(w')), (V'[:3], L')) trains M through the teacher: M must turn and relight the image,
  not only the code DV/DL read (see LossConfig). Not in DIGAN or LiftedGAN (experimental).
* ``loss.perturb_view="image"`` (experimental; "code" in the paper): the first half of
  ``perturb`` renders at the view and light R reads from G(w') (R fitted as above, its reading
  detached; translation stays DV's), so G(w') is compared with a render at the pose it shows.
  ``loss.perturb_view="detector"`` (experimental): pitch and yaw of that render are DV(w)'s plus
  the change the face detector reads from G(w) to G(w') (``train.pose_detector``; held), so the
  render turns as far as the teacher's image did, judged by a reader independent of the model.
* ``identity`` (x ``loss.identity``): face embedding of G(w0) vs the perturbed render, for
  samples with |yaw'| < 25 deg (skipped when no recogniser is configured).
* ``w_reg`` (x ``loss.w_reg``): w' stays near the teacher's w distribution.
* ``albedo`` (x ``loss.albedo``): nuclear norm of filtered grey albedos (foreground, pooled).
* ``canonical_symmetry`` (x ``loss.canonical_symmetry``, 0 in the paper): image loss between
  G(w0) and its mirror image. Not in DIGAN or LiftedGAN. Without it, M can leave the pose in
  w0 (the canonical face is then the posed face and DV learns no yaw: "M adds V'" is as
  consistent with the perturbation loss as "M sets V'"); the flip loss alone escapes that
  state only slowly, which short CPU runs never see. The tiny preset turns it on.

* ``canonical_cycle`` (x ``loss.canonical_cycle``, 0 in the paper): the cycle loss on w0 itself,
  DL(w0) = (a, b, 0, 0) and DV(w0) rotation = 0. Not in DIGAN or LiftedGAN (experimental).

* ``landmark_parallax_shared`` (x ``loss.landmark_parallax_shared``, 0 in the paper): the
  landmark parallax term again, its gradient reaching ``model.shared_relief``'s map alone (DS's
  per-face output, the view and the T map held). Not in DIGAN or LiftedGAN (experimental).

* ``view_shift`` (x ``loss.view_shift``, 0 in the paper): mean squared raw (tx, ty) of DV's
  view of every code; keeps DV from shifting a face sideways where the render needs relief
  (see LossConfig). Not in DIGAN or LiftedGAN (experimental).

A term whose weight is 0 is not computed (this is how the ablations switch terms off).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from digan.errors import DiganError
from digan.render import MeshRenderer
from digan.render.types import View
from digan.student import losses as L
from digan.student.config import StudentConfig
from digan.student.model import G3D, Estimate, teacher_synthesis

__all__ = ["DistillationObjective", "sample_teacher", "perturbation"]


@torch.no_grad()
def sample_teacher(teacher: Any, z: torch.Tensor, psi: float, code_noise: float = 0.0,
                   w_std: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(w (B,D), I_2D (B,3,S,S) clamped to [-1,1]) for latents z with truncation psi; with
    ``code_noise`` > 0 (``train.code_noise``), Gaussian noise of that many ``w_std`` (per
    dimension) is added to w after the truncation, before the teacher draws I_2D."""
    w = teacher.mapping(z)
    if w.dim() == 3:  # some teachers return w+ with identical rows
        w = w[:, 0]
    if psi < 1:
        w = teacher.truncate(w, psi)
    if code_noise > 0:
        w = w + float(code_noise) * (w_std if w_std is not None else 1.0) * torch.randn_like(w)
    img, _ = teacher_synthesis(teacher, w, features=False)
    return w, img.clamp(-1, 1)


def perturbation(light_raw: torch.Tensor, view_raw: torch.Tensor, cfg: StudentConfig, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(perturbed light raw (B,4), perturbed view raw (B,6), sampled angles (B,3) in degrees)."""
    b, dev = light_raw.shape[0], light_raw.device
    i1 = torch.randperm(b, generator=generator).to(dev)
    i2 = torch.randperm(b, generator=generator).to(dev)
    if cfg.loss.perturb_light == "direction":
        r = float(cfg.loss.perturb_light_range)
        direction = (torch.rand(b, 2, generator=generator) * 2 - 1).mul(r).to(dev, light_raw.dtype)
    else:  # "permute" (LiftedGAN)
        direction = light_raw[i2, 2:]
    if not cfg.model.light_vertical:
        direction = torch.stack([direction[:, 0], torch.zeros_like(direction[:, 1])], 1)
    light = torch.cat([light_raw[i1, :2], direction], 1).detach()
    lo = torch.tensor([-cfg.loss.perturb_pitch, -cfg.loss.perturb_yaw, 0.0])
    hi = -lo
    angles = (torch.rand(b, 3, generator=generator) * (hi - lo) + lo).to(dev)
    tx = torch.sin(angles[:, 1:2] * math.pi / 180) * cfg.loss.perturb_translation
    view = torch.cat([angles / cfg.model.rotation_range, tx, torch.zeros(b, 2, device=dev)], 1).detach()
    return light, view, angles


class DistillationObjective(nn.Module):
    """``forward(z) -> (total_loss, {name: detached value})``; holds G3D as ``self.g3d``.

    ``teacher`` (frozen), ``renderer``, ``perceptual`` and ``recognizer`` are not trained.
    """

    def __init__(self, g3d: G3D, teacher: Any, renderer: MeshRenderer, cfg: StudentConfig,
                 perceptual: nn.Module | None = None, recognizer: nn.Module | None = None):
        super().__init__()
        self.g3d = g3d
        self.cfg = cfg
        self.perceptual = perceptual
        self.recognizer = recognizer
        self._teacher = [teacher]  # not a sub-module: frozen, not saved, not synchronised
        self.renderer = renderer
        self.last: dict[str, Any] = {}
        #: (N,D) style codes of inverted real images (train.inverted_data), set by the training loop
        self.code_bank: torch.Tensor | None = None
        #: (N,2) detector-read (pitch, yaw) in degrees of those images (loss.pose_anchor), or None
        self.code_pose: torch.Tensor | None = None
        #: (N,5,2) the detector's keypoints of those images, NaN where none (loss.landmark_parallax)
        self.code_kps: torch.Tensor | None = None
        #: images (B,3,S,S) in [-1,1] -> (B,2) detector-read (pitch, yaw) in degrees, NaN where
        #: no face is found (loss.pose_anchor_samples; a face pipeline's read_pose), or None
        self.pose_reader: Any = None

    def _read_pose(self, images: torch.Tensor) -> torch.Tensor:
        """(B,2) the detector's (pitch, yaw) in degrees of ``images`` (B,3,S,S), NaN where it
        finds no face (``pose_reader``)."""
        if self.pose_reader is None:
            raise DiganError("this objective has no pose reader (loss.pose_anchor_samples or "
                             "loss.perturb_view=detector; set train.pose_detector=PATH)")
        read = self.pose_reader(images.detach().clamp(-1, 1).cpu())
        return torch.as_tensor(read, dtype=images.dtype).to(images.device)

    def _detector_view(self, view_raw: torch.Tensor, view_raw_p: torch.Tensor, read: torch.Tensor) -> torch.Tensor:
        """``loss.perturb_view="detector"``: the raw view of the perturbed render, from ``read``
        (2B,2), the detector's readings of G(w) (first B rows) and G(w'). Pitch and yaw are DV's
        reading of the unperturbed code plus the change the detector reads between the two
        images (so the detector's own bias per face cancels); roll and translation are DV's
        reading of w'. Rows where either image has no detected face keep DV(w'). Detached: the
        view is given, the render teaches depth, albedo, light."""
        n = view_raw.shape[0]
        delta = (read[n:] - read[:n]) / float(self.cfg.model.rotation_range)
        turned = view_raw[:, :2] + delta
        ok = torch.isfinite(turned)
        rot = torch.where(ok, torch.nan_to_num(turned), view_raw_p[:, :2])
        return torch.cat([rot, view_raw_p[:, 2:]], 1).detach()

    @property
    def teacher(self) -> Any:
        return self._teacher[0]

    def _img(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return L.image_loss(a, b, self.perceptual, self.cfg.loss.perc)

    def forward(self, z: torch.Tensor, keep: bool = False,
                batch: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss for the teacher's samples of latents ``z``, or, with ``batch`` = (w, images),
        for given style codes and target images (``z`` unused; e.g. inversions of real heads,
        :func:`digan.student.recoverability.objective_fit`)."""
        cfg, lc = self.cfg, self.cfg.loss
        g3d, teacher, renderer = self.g3d, self.teacher, self.renderer
        det_read = None  # (2B,2) the detector's readings of G(w) and G(w') (perturb_view=detector)
        anchor = None  # (k,2) detector-read pitch, yaw of the first k codes (loss.pose_anchor)
        kps = None  # (k,5,2) detector keypoints of the first k codes' images (loss.landmark_parallax)
        if batch is not None:
            w, target = batch
        else:
            bank = self.code_bank  # train.inverted_data: the first k codes come from inverted real images
            k = int(round(float(cfg.train.inverted_fraction) * z.shape[0])) if bank is not None else 0
            parts = [sample_teacher(teacher, z[k:], cfg.model.truncation, cfg.train.code_noise, g3d.w_std)] if k < z.shape[0] else []
            if k > 0:  # only the codes kept are drawn by the teacher
                pick = torch.randint(bank.shape[0], (k,))
                wb = bank[pick].to(z)
                if self.code_pose is not None:
                    anchor = self.code_pose[pick.to(self.code_pose.device)].to(z)
                if self.code_kps is not None:
                    kps = self.code_kps[pick.to(self.code_kps.device)].to(z)
                with torch.no_grad():
                    tb, _ = teacher_synthesis(teacher, wb, features=False)
                parts.insert(0, (wb, tb.clamp(-1, 1)))
            w, target = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        est = g3d.estimate(w, teacher)
        held: list[Estimate] = []

        def depth_held() -> Estimate:
            """The estimate with its depth detached (and the albedo de-lit with that depth): the
            terms the ``*_depth_grad="none"`` switches keep off the depth render this one."""
            if not held:
                d = est.depth.detach()
                held.append(dataclasses.replace(est, depth=d, albedo=g3d.albedo(est.canonical, d, est.light)))
            return held[0]

        # rec and flip teach albedo, light, view, M; not depth
        est_rec = depth_held() if lc.rec_depth_grad == "none" else est
        out = g3d.render(est_rec, renderer)
        est_flip = depth_held() if lc.flip_depth_grad == "none" else est_rec  # flip alone kept off the depth
        flip = g3d.render(est_flip, renderer, flip=True) if lc.flip > 0 else None
        total = w.new_zeros(())
        logs: dict[str, torch.Tensor] = {}
        rec, parts = L.symmetric_reconstruction(out.image, flip.image if flip is not None else None, target,
                                                self.perceptual, lc.perc, lc.flip)
        total = total + lc.rec * rec
        logs.update(parts)

        need_perturb = lc.perturb > 0 or lc.cycle > 0 or lc.identity > 0 or lc.w_reg > 0 or lc.cycle_image > 0
        pert_img = None
        if need_perturb:
            light_p, view_p, angles = perturbation(est.light_raw, est.view_raw, cfg)
            w_p = g3d.compose(w.detach(), light_p, view_p)
            view_raw_p, light_raw_p = g3d.decompose(w_p)
            regen = None
            if lc.perturb > 0 or lc.cycle_image > 0:
                regen, _ = teacher_synthesis(teacher, w_p, features=False)
            if lc.perturb > 0 or lc.identity > 0:
                # "none": the perturbed render teaches DV, DL, M; not depth
                est_p = depth_held() if lc.perturb_depth_grad == "none" else est
                view_r, light_r = view_raw_p, light_raw_p
                if lc.perturb_view == "image" and regen is not None:
                    # render at the view and light G(w') shows (R's reading), not the code's
                    with torch.no_grad():
                        rv, rl = g3d.reader(regen.clamp(-1, 1))
                    view_r, light_r = torch.cat([rv, view_raw_p[:, 3:]], 1), rl
                elif lc.perturb_view == "detector" and regen is not None:
                    # render at DV(w) turned by the turn the detector reads between G(w) and
                    # G(w'), not at the turn DV reads in the code w'
                    det_read = self._read_pose(torch.cat([target, regen]))
                    view_r = self._detector_view(est.view_raw, view_raw_p, det_read)
                pert_img = g3d.render(est_p, renderer, view=g3d.view_net.to_view(view_r),
                                      light=g3d.light_net.to_light(light_r)).image
            if lc.perturb > 0:
                with torch.no_grad():
                    target_p = g3d.render(est.detach(), renderer, view=g3d.view_net.to_view(view_p),
                                          light=g3d.light_net.to_light(light_p), filter_grads=False).image
                pert = self._img(pert_img, regen.detach()) + self._img(regen, target_p)
                total = total + lc.perturb * pert
                logs["perturb"] = pert.detach()
            if lc.cycle > 0:
                if lc.cycle_grad == "compose":  # M learns to turn and relight; DV/DL are held
                    view_raw_c, light_raw_c = g3d.decompose_held(w_p)
                else:  # LiftedGAN: DV, DL and M
                    view_raw_c, light_raw_c = view_raw_p, light_raw_p
                cl, cv = L.cycle_loss(light_raw_c, light_p, view_raw_c, view_p)
                total = total + lc.cycle * (cl + cv)
                logs["cycle"] = (cl + cv).detach()
            if g3d.reader is not None:
                # R learns to read the teacher's images as DV/DL read their codes (it trains R
                # only: the targets and the images are detached) ...
                r_view, r_light = g3d.reader(target)
                fit = (F.mse_loss(r_view, est.view_raw[:, :3].detach())
                       + F.mse_loss(r_light, est.light_raw.detach()))
                total = total + (lc.cycle_image if lc.cycle_image > 0 else 1.0) * fit
                logs["reader_fit"] = fit.detach()
            if lc.cycle_image > 0:
                # ... and, held, tells M whether G(w') shows the asked turn and light
                h_view, h_light = g3d.read_held(regen.clamp(-1, 1))
                ci = F.mse_loss(h_view, view_p[:, :3]) + F.mse_loss(h_light, light_p)
                total = total + lc.cycle_image * ci
                logs["cycle_image"] = ci.detach()
            if lc.identity > 0 and self.recognizer is not None:
                idl = L.identity_loss(self.recognizer, est.canonical, pert_img, angles[:, 1], lc.identity_max_yaw)
                total = total + lc.identity * idl
                logs["identity"] = idl.detach()
            if lc.w_reg > 0:
                wr = L.w_regularizer(w_p, g3d.w_mean, g3d.w_sigma_inv)
                total = total + lc.w_reg * wr
                logs["w_reg"] = wr.detach()
        if lc.pose_anchor_samples > 0 and self.pose_reader is not None:
            k0 = anchor.shape[0] if anchor is not None else 0  # those codes have their cached anchors
            preds, imgs = [est.view_raw[k0:, :2]], [target[k0:]]
            if need_perturb and regen is not None:
                preds.append(g3d.decompose(w_p.detach())[0][:, :2])
                imgs.append(regen)
            # perturb_view=detector has read G(w) and G(w') already: those readings, the anchored rows left out
            read = det_read[k0:] if det_read is not None else self._read_pose(torch.cat(imgs))
            ps = lc.pose_anchor_samples * L.pose_anchor_loss(torch.cat(preds), read / float(cfg.model.rotation_range), (1.0, 1.0))
            total = total + ps
            logs["pose_anchor_samples"] = ps.detach()
        if anchor is not None and (lc.pose_anchor > 0 or lc.pose_anchor_pitch > 0):
            pa = L.pose_anchor_loss(est.view_raw[:anchor.shape[0], :2], anchor / float(cfg.model.rotation_range),
                                    (lc.pose_anchor_pitch, lc.pose_anchor))
            total = total + pa
            logs["pose_anchor"] = pa.detach()
        if kps is not None and lc.landmark_parallax > 0:
            # a term on the depth alone: the view and the T map that carry the keypoints are held
            # (else DV and T bend to fit them: measured, MAD 24.7 -> 38-39 deg in training)
            k = kps.shape[0]
            on_depth = dataclasses.replace(est.detach(), depth=est.depth).index(slice(0, k))
            lo = g3d.render(on_depth, renderer)
            lp = L.landmark_parallax_loss(lo.grid, lo.mask, kps)
            total = total + lc.landmark_parallax * lp
            logs["landmark_parallax"] = lp.detach()
        if kps is not None and lc.landmark_parallax_shared > 0:
            # the same, through the shared relief map alone: DS's per-face output held
            k = kps.shape[0]
            if est.depth_raw is None or getattr(g3d.depth_net, "shared_relief", None) is None:
                raise DiganError("loss.landmark_parallax_shared needs model.shared_relief=true (the map it trains)")
            on_map = dataclasses.replace(est.detach(), depth=g3d.depth_from_raw(est.depth_raw[:k].detach())).index(slice(0, k))
            ls = g3d.render(on_map, renderer)
            lps = L.landmark_parallax_loss(ls.grid, ls.mask, kps)
            total = total + lc.landmark_parallax_shared * lps
            logs["landmark_parallax_shared"] = lps.detach()
        if lc.view_shift > 0:
            vs = est.view_raw[:, 3:5].pow(2).sum(1).mean()
            total = total + lc.view_shift * vs
            logs["view_shift"] = vs.detach()
        if lc.canonical_cycle > 0:
            # DV/DL read the neutral code as what it was made for: frontal, light straight on
            v0, l0 = g3d.decompose(est.w0)
            cl0, cv0 = L.cycle_loss(l0, g3d.neutral_light(est.light_raw.detach()), v0, torch.zeros_like(v0))
            cc = cl0 + cv0
            total = total + lc.canonical_cycle * cc
            logs["canonical_cycle"] = cc.detach()
        if lc.canonical_symmetry > 0:
            cs = self._img(est.canonical, est.canonical.flip(3))
            total = total + lc.canonical_symmetry * cs
            logs["canonical_symmetry"] = cs.detach()
        if lc.albedo > 0:
            ar = L.albedo_rank_loss(est.albedo, g3d.foreground(est.depth), lc.albedo_pool, lc.albedo_filter)
            total = total + lc.albedo * ar
            logs["albedo"] = ar.detach()
        logs["total"] = total.detach()
        if keep:
            self.last = {"target": target, "est": est.detach(), "image": out.image.detach(),
                         "perturbed": pert_img.detach() if pert_img is not None else None}
        return total, logs

    @torch.no_grad()
    def preview(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Rows of the training grid: I_2D, I_3D, canonical G(w0), albedo, depth, shading, and
        renders at yaw -30 / +30 deg (predicted light)."""
        g3d, r = self.g3d, self.renderer
        w, target = sample_teacher(self.teacher, z, self.cfg.model.truncation)
        est = g3d.estimate(w, self.teacher)
        out = g3d.render(est, r, filter_grads=False)
        m = self.cfg.model
        depth = (est.depth - m.min_depth) / (m.max_depth - m.min_depth) * 2 - 1
        rows = {"teacher": target, "student": out.image, "canonical": est.canonical, "albedo": est.albedo.clamp(-1, 1),
                "depth": depth.expand(-1, 3, -1, -1), "shading": (out.shading.clamp(0, 2) - 1).expand(-1, 3, -1, -1)}
        b = z.shape[0]
        for yaw in (-30.0, 30.0):
            rows[f"yaw{yaw:+.0f}"] = g3d.render(est, r, view=View.from_angles(yaw, batch=b, device=z.device), filter_grads=False).image
        return rows
