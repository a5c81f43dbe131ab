"""G3D: the DIGAN student assembled from DV, DL, M, DS, DT, the teacher's synthesis (texture) and
the mesh renderer (DIGAN-NOTES data flow steps 1-7).

Given a style code w (B,D) of the teacher:

1. ``view_raw = DV(w)``, ``light_raw = DL(w)`` (tanh units, see :mod:`digan.student.networks`).
2. ``w0 = M(w, L0, V=0)``: the neutral code, with ``L0`` = predicted ambient/diffuse and a zero
   (frontal) direction. w is detached on the way into M (LiftedGAN).
3. Texture (DW): ``I_c, feats = G.synthesis(w0)``, the canonical face through the teacher's
   StyleGAN2 synthesis (frozen weights, gradients flow to w0); with ``delight`` the albedo is
   ``I_c`` divided by the frontal shading ``a + b * max(0, n_z)`` of the canonical depth.
4. Depth (DS): ``raw = DS(w0, feats[-1])``; ``d = tanh(raw - mean_xy(raw) + P)`` with ``P`` the
   convex head prior (:meth:`G3D.depth_prior`, zero with ``depth_prior="none"``) mapped to
   [min_depth, max_depth] = [0.9, 1.1]; the ``border_width`` (2) leftmost and rightmost columns
   are set to ``border_depth`` (1.05). LiftedGAN sets only the left/right columns (its code pads
   the width only); we follow the code.
5. Transformation map (DT): ``T = sigmoid(DT(w0) + 5)``, forced to 1 on the foreground
   (``d <= border_depth - 0.01``), Gaussian-blurred (radius 10 / sigma 5.66 px at 256 px, scaled
   with the image size), then zeroed on the outermost border (1 row top/bottom, 2 columns
   left/right), as in LiftedGAN.
6. Render (:class:`digan.render.MeshRenderer`) with view V and light L; the edge-gradient filter
   (:mod:`digan.student.gradfilter`) is applied to the depth (and/or albedo) on the way in.

The frozen teacher is *not* a sub-module of :class:`G3D` (its weights are not in the student's
checkpoint); it is passed to :meth:`G3D.estimate`.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any, Iterator, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from digan.errors import DiganError
from digan.render import MeshRenderer, RendererConfig
from digan.render.shading import normals_from_depth
from digan.render.types import Light, View
from digan.student.config import StudentConfig
from digan.student.gradfilter import edge_gradient_filter
from digan.student.losses import gaussian_blur
from digan.student.networks import ComposeNet, DepthNet, ImageReader, LightNet, TransformNet, ViewNet

__all__ = ["Estimate", "G3D", "raw_to_depth", "depth_smooth_sigma", "teacher_synthesis", "teacher_info", "make_renderer"]


#: sign of each raw view unit (pitch, yaw, roll, tx, ty, tz) and raw light unit (ambient, diffuse,
#: dx, dy) under a left-right mirror of the image: x = -x turns a rotation R into S R S
#: (S = diag(-1, 1, 1)), which keeps pitch and negates yaw and roll
MIRROR_VIEW_SIGN = (1.0, -1.0, -1.0, -1.0, 1.0, 1.0)
MIRROR_LIGHT_SIGN = (1.0, 1.0, -1.0, 1.0)


@dataclass
class Estimate:
    """Canonical-frame outputs of G3D for a batch of style codes (maps are (B,C,S,S))."""

    depth: torch.Tensor  # (B,1) in [min_depth, max_depth]
    albedo: torch.Tensor  # (B,3) in [-1,1] (de-lit texture)
    canonical: torch.Tensor  # (B,3) G(w0), the canonical face before de-lighting
    transform_map: Optional[torch.Tensor]  # (B,1) in [0,1]
    view_raw: torch.Tensor  # (B,6) tanh units
    light_raw: torch.Tensor  # (B,4) tanh units
    w0: torch.Tensor  # (B,D) neutral code
    view: View
    light: Light
    #: (B,1) the depth net's raw output, before model.shared_relief's map and raw_to_depth (None
    #: where an estimate was not made by the depth net: mirrored or averaged estimates)
    depth_raw: Optional[torch.Tensor] = None

    def detach(self) -> "Estimate":
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                v = v.detach()
            elif isinstance(v, View):
                v = View(v.rotation.detach(), v.translation.detach())
            elif isinstance(v, Light):
                v = Light(v.ambient.detach(), v.diffuse.detach(), v.direction.detach())
            out[f.name] = v
        return Estimate(**out)

    def index(self, idx) -> "Estimate":
        """Select samples (slice or index tensor)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                v = v[idx]
            elif isinstance(v, View):
                v = View(v.rotation[idx], v.translation[idx])
            elif isinstance(v, Light):
                v = Light(v.ambient[idx], v.diffuse[idx], v.direction[idx])
            out[f.name] = v
        return Estimate(**out)


def teacher_synthesis(teacher: Any, w: torch.Tensor, features: bool = True) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Run the teacher's synthesis on w (B,D) or w+ (B,L,D) with fixed noise.

    Returns (image (B,3,S,S) in [-1,1], last feature map at output resolution or None).
    """
    if features:
        out = teacher.synthesis(w, noise="fixed", return_features=True)
        if isinstance(out, (tuple, list)):
            img, feats = out[0], out[1]
            last = feats[-1] if isinstance(feats, (list, tuple)) else feats
            return img, last
        return out, None
    out = teacher.synthesis(w, noise="fixed")
    return (out[0] if isinstance(out, (tuple, list)) else out), None


@torch.no_grad()
def teacher_info(teacher: Any, device: torch.device | str = "cpu") -> dict[str, int]:
    """``{"size", "style_dim", "inject_dim"}`` of a teacher (one probe synthesis for the features)."""
    w = teacher.w_mean.reshape(1, -1).to(device)
    _, feat = teacher_synthesis(teacher, w, features=True)
    return {"size": int(teacher.size), "style_dim": int(teacher.style_dim), "inject_dim": int(feat.shape[1]) if feat is not None else 0}


def make_renderer(cfg: StudentConfig, size: int) -> MeshRenderer:
    """The renderer of a student config at the teacher's image size."""
    m = cfg.model
    return MeshRenderer(RendererConfig(
        image_size=size, fov=cfg.renderer.fov, min_depth=m.min_depth, max_depth=m.max_depth,
        backend=cfg.renderer.backend, texture=cfg.renderer.texture, normal_norm=cfg.renderer.normal_norm,
    ))


def depth_smooth_sigma(m: Any, size: int) -> float:
    """Gaussian sigma (pixels at ``size``) of the residual smoothing: ``model.depth_smooth`` is
    given in pixels at 64 px and scales with the image size (same physical blur)."""
    return float(m.depth_smooth) * size / 64.0


def low_pass(x: torch.Tensor, sigma64: float) -> torch.Tensor:
    """Gaussian blur of ``x`` (B,C,S,S) with sigma ``sigma64`` px at 64 px, scaled to S (the same
    physical blur at every size; edges replicated); ``x`` itself when the sigma is 0. The one
    low-pass of the depth's parts: DS's residual, the prior's rim, the shared relief map."""
    sigma = float(sigma64) * x.shape[-1] / 64.0
    if sigma <= 0:
        return x
    return gaussian_blur(x, max(1, int(math.ceil(3 * sigma))), sigma, pad_mode="replicate")


def raw_to_depth(raw: torch.Tensor, prior: torch.Tensor, m: Any) -> torch.Tensor:
    """Depth net output (B,1,S,S) -> depth in [min_depth, max_depth] for a :class:`ModelConfig` ``m``.

    ``d = tanh(smooth(raw - mean_xy(raw)) + prior)`` (the residual averaged with its mirror image
    first when ``model.depth_symmetric``) mapped linearly to [min_depth, max_depth];
    the ``border_width`` leftmost and rightmost columns are set to ``border_depth``.

    ``smooth`` is a Gaussian blur of sigma ``model.depth_smooth`` px (at 64 px, scaled with the
    size; 0 = none, the paper and LiftedGAN). Why: with the renderer's 10 deg camera one pixel
    spans ~1/360 of the depth unit at 64 px, so a depth step of 0.001 between neighbours tilts a
    normal by ~20 deg, and 92-99 % of the depth gradient every photometric loss sends is
    high-frequency (measured: ../shared/design/DIGAN-NOTES.md). Unfiltered, the depth net turns
    that gradient into ripple (17 deg between adjacent normals vs 5 for a head). Blurring the
    residual is a fixed low-pass on the output and on its gradient (the blur is self-adjoint), so
    the net only learns shape at the scale the losses can actually constrain; blurring the true
    synthetic heads by 1.5 px costs ~12 deg MAD, far below what the ripple costs.
    """
    r = raw - raw.mean(dim=(2, 3), keepdim=True)
    if getattr(m, "depth_symmetric", False):  # mirror-symmetric canonical depth (see ModelConfig)
        r = (r + r.flip(3)) / 2
    r = low_pass(r, getattr(m, "depth_smooth", 0) or 0.0)
    d = torch.tanh(r + prior)
    d = (1 + d) / 2 * m.max_depth + (1 - d) / 2 * m.min_depth
    bw = m.border_width
    if bw > 0:
        border = torch.zeros_like(d[:1])
        border[..., :bw] = 1
        border[..., -bw:] = 1
        d = d * (1 - border) + border * m.border_depth
    return d


def _call_held(net: nn.Module, *inputs: torch.Tensor) -> Any:
    """``net(*inputs)`` with its parameters detached: the gradient reaches the inputs, not ``net``."""
    from torch.func import functional_call

    state = {k: v.detach() for k, v in net.named_parameters()}
    state.update(dict(net.named_buffers()))
    return functional_call(net, state, inputs)


class G3D(nn.Module):
    """The trainable part of the DIGAN student: DV, DL, M, DS, DT (see module docstring).

    Args:
        cfg: student config.
        style_dim, size, inject_dim: from the teacher (:func:`teacher_info`).
    """

    def __init__(self, cfg: StudentConfig, style_dim: int, size: int, inject_dim: int = 0):
        super().__init__()
        m = cfg.model
        self.cfg = cfg
        self.style_dim, self.size, self.inject_dim = style_dim, size, inject_dim
        kan = {"grid_size": m.kan_grid_size, "spline_order": m.kan_spline_order}
        self.view_net = ViewNet(style_dim, m.pose_layers, m.pose_hidden, m.use_kan, kan,
                                m.rotation_range, m.xy_translation_range, m.z_translation_range,
                                norm=m.pose_norm, standardize=m.pose_standardize)
        self.light_net = LightNet(style_dim, m.pose_layers, m.pose_hidden, m.use_kan, kan, norm=m.pose_norm, standardize=m.pose_standardize,
                                  diffuse_range=tuple(m.light_diffuse_range), vertical=m.light_vertical)
        self.compose = ComposeNet(style_dim, m.compose_hidden, m.compose_layers, m.compose_residual)
        self.depth_net = DepthNet(style_dim, size, inject_dim if m.use_inject else 0, m.depth_z, m.depth_nf, m.depth_mlp, m.partial_conv,
                                  norm_order=m.depth_norm, zero_init=m.depth_zero_init)
        if getattr(m, "shared_relief", False):  # inside DS: the warm-up hold and DS's lr apply to it
            self.depth_net.shared_relief = nn.Parameter(torch.zeros(1, 1, size, size))
        self.trans_net = TransformNet(style_dim, size, m.trans_z, m.trans_nf, m.trans_mlp) if m.use_transform_map else None
        # R, only for loss.cycle_image or loss.perturb_view=image (its weights are in the
        # checkpoint only then)
        self.reader = ImageReader(size) if cfg.loss.cycle_image > 0 or cfg.loss.perturb_view == "image" else None
        self.register_buffer("w_mean", torch.zeros(style_dim))
        self.register_buffer("w_std", torch.ones(style_dim))
        self.register_buffer("w_sigma_inv", torch.tensor(1.0))
        # the prior DS's residual is added to: the training prior (model.depth_prior_smooth), or in
        # a loaded student the inference prior (model.inference_prior_smooth; use_inference_prior)
        self.register_buffer("prior", self.model_prior(m, size, m.depth_prior_smooth), persistent=False)
        self.register_buffer("training_prior", self.prior.clone(), persistent=False)
        self.prior_smooth = float(m.depth_prior_smooth)  # the low-pass of the prior in use (px at 64)
        scale = size / 256.0
        self.blur_radius = m.trans_blur_radius if m.trans_blur_radius is not None else max(1, round(10 * scale))
        self.blur_sigma = m.trans_blur_sigma if m.trans_blur_sigma is not None else max(0.5, 5.66 * scale)

    @staticmethod
    def depth_prior(kind: str, size: int, apex: float = 0.96, rim: float = 1.05,
                    extent: tuple[float, float] = (0.5, 0.75), depth_range: tuple[float, float] = (0.9, 1.1),
                    smooth: float = 0.0) -> torch.Tensor:
        """(1,1,S,S) raw-depth prior: ``depth_from_raw(raw)`` adds it after the mean subtraction.

        Photometric losses cannot tell a convex face seen from one side from a concave (hollow)
        face seen from the other: mirrored yaw and inverted relief explain the same image (the
        bas-relief ambiguity). Which one training finds depends on the first parallax the
        renderer produces: when the face's centre is in front of the rotation pivot (depth 1.0)
        and its outline behind it, a positive yaw moves the features right and the outline left,
        as on a real head. LiftedGAN and the DIGAN paper start from a random or flat depth and let
        chance pick; in our CPU runs that settled on the hollow solution (predicted yaw
        anti-correlated with the true yaw). Like GAN2Shape's ellipsoid initialisation we start from
        a head-sized convex shape, as a fixed prior in tanh units, so the zero-initialised DS
        starts exactly at it and learns the residual: depth ``apex - (apex - rim) * (1 - sqrt(max(0,
        1 - (x/ex)^2 - (y/ey)^2)))`` on the [-1,1]^2 image grid, i.e. ``apex`` (0.96) at the centre
        rising to ``rim`` (1.05, the background level) at the ellipse (semi-axes ``extent`` =
        0.5 x 0.75 of the half image) and outside it. ``kind="none"`` gives zeros (paper / LiftedGAN).
        ``smooth`` > 0 low-passes the prior in tanh units with a Gaussian of that sigma (px at 64
        px, scaled with ``size``; ``model.depth_prior_smooth``): the cap's rim has a vertical
        tangent, which the low-passed residual (``model.depth_smooth``) cannot cancel.
        """
        if kind == "none":
            return torch.zeros(1, 1, size, size)
        if kind != "ellipsoid":
            raise DiganError(f"unknown model.depth_prior {kind!r}; choose ellipsoid or none")
        c = (torch.arange(size, dtype=torch.float64) + 0.5) / size * 2 - 1
        y, x = torch.meshgrid(c, c, indexing="ij")
        cap = (1 - (x / extent[0]) ** 2 - (y / extent[1]) ** 2).clamp(min=0).sqrt()
        depth = rim - (rim - apex) * cap
        lo, hi = depth_range
        u = ((depth - lo) / (hi - lo) * 2 - 1).clamp(-0.999, 0.999)
        prior = torch.atanh(u).float().view(1, 1, size, size)
        return low_pass(prior, smooth)

    @staticmethod
    def model_prior(m: Any, size: int, smooth: float = 0.0) -> torch.Tensor:
        """:meth:`depth_prior` with the settings of the model config ``m`` (``model.depth_prior``,
        its apex, rim, extent and the depth range) at ``size``, low-passed by ``smooth``."""
        return G3D.depth_prior(m.depth_prior, size, m.depth_prior_apex, m.depth_prior_rim, m.depth_prior_extent,
                               (m.min_depth, m.max_depth), smooth)

    def use_inference_prior(self, on: bool = True, smooth: float | None = None) -> None:
        """From now on add DS's residual to the inference prior: the convex prior low-passed by
        ``smooth`` px at 64 px (default ``model.inference_prior_smooth``; 0 there means the training
        prior). ``on=False``: back to the training prior. :meth:`Student.load` turns it on;
        training never does."""
        m = self.cfg.model
        sigma = (float(m.inference_prior_smooth) if smooth is None else float(smooth)) if on else None
        if sigma is not None and not (math.isfinite(sigma) and sigma >= 0):
            raise DiganError(f"inference_prior_smooth must be a finite number >= 0 (px at 64 px; 0 = the sharp prior), got {sigma}")
        if sigma is None or (smooth is None and sigma == 0) or sigma == float(m.depth_prior_smooth):
            self.prior.copy_(self.training_prior)
            self.prior_smooth = float(m.depth_prior_smooth)
        else:
            self.prior.copy_(self.model_prior(m, self.size, sigma).to(self.prior))
            self.prior_smooth = sigma

    @contextmanager
    def inference_prior_used(self) -> Iterator[None]:
        """Within the block the depth uses the inference prior; the prior in use before is back
        afterwards (the shape evaluation during training scores what a loaded student gives)."""
        before, smooth = self.prior.clone(), self.prior_smooth
        self.use_inference_prior(True)
        try:
            yield
        finally:
            self.prior.copy_(before)
            self.prior_smooth = smooth

    # ------------------------------------------------------------------ statistics
    @torch.no_grad()
    def set_w_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Teacher w statistics: DV/DL input standardisation and the w regulariser (LiftedGAN)."""
        mean, std = mean.reshape(-1).to(self.w_mean), std.reshape(-1).to(self.w_std)
        self.w_mean.copy_(mean)
        self.w_std.copy_(std)
        self.w_sigma_inv.fill_(0.5 / float(std.mean()) ** 2)
        self.view_net.set_input_stats(mean, std)
        self.light_net.set_input_stats(mean, std)

    # ------------------------------------------------------------------ pieces
    def decompose(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(view_raw (B,6), light_raw (B,4)) = (DV(w), DL(w))."""
        return self.view_net(w), self.light_net(w)

    def decompose_held(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`decompose` with DV's and DL's weights held (detached): the gradient reaches w
        (and whatever made it, e.g. the compose net M) but not DV or DL (``loss.cycle_grad``)."""
        return _call_held(self.view_net, w), _call_held(self.light_net, w)

    def read_held(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The image reader R (``loss.cycle_image``) with its weights held: (raw rotation (B,3),
        raw light (B,4)) of ``image``; the gradient reaches the image (and M through the teacher)
        but not R."""
        if self.reader is None:
            raise DiganError("this student has no image reader; it exists only with loss.cycle_image > 0 or loss.perturb_view=image")
        return _call_held(self.reader, image)

    @staticmethod
    def neutral_light(light_raw: torch.Tensor) -> torch.Tensor:
        """The neutral code's light (a, b, 0, 0): the same ambient/diffuse, straight-on direction."""
        return torch.cat([light_raw[:, :2], torch.zeros_like(light_raw[:, 2:])], 1)

    def neutral_code(self, w: torch.Tensor, light_raw: torch.Tensor, view_raw: torch.Tensor) -> torch.Tensor:
        """w0 = M(w, (a, b, 0, 0), 0)."""
        return self.compose(w.detach(), self.neutral_light(light_raw), torch.zeros_like(view_raw))

    def depth_from_raw(self, raw: torch.Tensor) -> torch.Tensor:
        """Depth net output -> depth (:func:`raw_to_depth` with this model's prior and config)."""
        relief = getattr(self.depth_net, "shared_relief", None)
        if relief is None:
            return raw_to_depth(raw, self.prior, self.cfg.model)
        relief = (relief + relief.flip(3)) / 2  # model.shared_relief: one mirror-symmetric map for every face
        sigma = getattr(self.cfg.model, "shared_relief_smooth", None)
        if sigma is None:  # added to DS's raw output: the mean subtraction and the low-pass apply to it
            return raw_to_depth(raw + relief, self.prior, self.cfg.model)
        # its own low-pass (0 = none), added beside the prior after DS's low-pass
        relief = low_pass(relief - relief.mean(dim=(2, 3), keepdim=True), sigma)
        return raw_to_depth(raw, self.prior + relief, self.cfg.model)

    def foreground(self, depth: torch.Tensor) -> torch.Tensor:
        """(B,1,S,S) 1 where the depth is nearer than the background plane."""
        return (depth <= self.cfg.model.border_depth - 0.01).to(depth.dtype)

    @staticmethod
    def view_foreground(result: Any, channel: int = 0) -> torch.Tensor:
        """(B,1,S,S) the head in the view of a render made with ``extra`` whose ``channel`` holds
        :meth:`foreground`: covered pixels where the interpolated foreground exceeds 0.5."""
        return (result.extra[:, channel:channel + 1] > 0.5).to(result.image.dtype) * result.mask

    def transform_map(self, raw: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        t = torch.sigmoid(raw + 5)
        fg = self.foreground(depth)
        t = fg + (1 - fg) * t
        t = gaussian_blur(t, self.blur_radius, self.blur_sigma)
        return F.pad(t[:, :, 1:-1, 2:-2], (2, 2, 1, 1), value=0.0)

    def albedo(self, canonical: torch.Tensor, depth: torch.Tensor, light: Light) -> torch.Tensor:
        """The texture the renderer shades: :meth:`delight` of G(w0) with ``model.delight``, else
        G(w0) itself."""
        return self.delight(canonical, depth, light) if self.cfg.model.delight else canonical

    def delight(self, canonical: torch.Tensor, depth: torch.Tensor, light: Light) -> torch.Tensor:
        """Albedo = canonical image / frontal shading ``a + b max(0, n_z)`` (in [0,1] colour units)."""
        n = normals_from_depth(depth, self.cfg.renderer.fov, normalize=self.cfg.renderer.normal_norm)
        shading = light.ambient.view(-1, 1, 1, 1) + light.diffuse.view(-1, 1, 1, 1) * n[:, 2:3].clamp(min=0)
        return (canonical / 2 + 0.5) / (shading + 1e-8) * 2 - 1

    # ------------------------------------------------------------------ mirror averaging
    def mirror_estimate(self, est: Estimate) -> Estimate:
        """The estimate of the left-right mirror image: canonical maps flipped, raw units signed by
        :data:`MIRROR_VIEW_SIGN` / :data:`MIRROR_LIGHT_SIGN`, so that rendering it gives the mirror
        of ``est``'s render (up to the mesh's triangulation). ``w0`` is kept: it has no mirror."""
        def flip(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
            return None if t is None else t.flip(3)

        vr = est.view_raw * est.view_raw.new_tensor(MIRROR_VIEW_SIGN)
        lr = est.light_raw * est.light_raw.new_tensor(MIRROR_LIGHT_SIGN)
        return Estimate(depth=flip(est.depth), albedo=flip(est.albedo), canonical=flip(est.canonical),
                        transform_map=flip(est.transform_map), view_raw=vr, light_raw=lr, w0=est.w0,
                        view=self.view_net.to_view(vr), light=self.light_net.to_light(lr))

    def average_estimates(self, ests: list[Estimate]) -> Estimate:
        """The mean of estimates of the same faces (maps and raw units averaged; view and light
        rebuilt from the mean raw units, which map to them linearly); ``w0`` is the first's."""
        if not ests:
            raise DiganError("average_estimates needs at least one estimate")

        def mean(name: str) -> Optional[torch.Tensor]:
            vals = [getattr(e, name) for e in ests]
            return None if vals[0] is None else torch.stack(vals).mean(0)

        vr, lr = mean("view_raw"), mean("light_raw")
        return Estimate(depth=mean("depth"), albedo=mean("albedo"), canonical=mean("canonical"),
                        transform_map=mean("transform_map"), view_raw=vr, light_raw=lr, w0=ests[0].w0,
                        view=self.view_net.to_view(vr), light=self.light_net.to_light(lr))

    # ------------------------------------------------------------------ main entry points
    def estimate(self, w: torch.Tensor, teacher: Any) -> Estimate:
        """Canonical depth/albedo/T map, view and light for style codes w (B,D)."""
        if w.dim() != 2 or w.shape[1] != self.style_dim:
            raise DiganError(f"G3D expects style codes (B,{self.style_dim}), got {tuple(w.shape)}; pass w, not z or w+")
        view_raw, light_raw = self.decompose(w)
        w0 = self.neutral_code(w, light_raw, view_raw)
        return self.estimate_from_w0(w0, view_raw, light_raw, teacher)

    def estimate_from_w0(self, w0: torch.Tensor, view_raw: torch.Tensor, light_raw: torch.Tensor, teacher: Any) -> Estimate:
        canonical, feat = teacher_synthesis(teacher, w0, features=self.depth_net.inject is not None)
        raw = self.depth_net(w0, feat)
        depth = self.depth_from_raw(raw)
        tmap = self.transform_map(self.trans_net(w0), depth) if self.trans_net is not None else None
        light = self.light_net.to_light(light_raw)
        albedo = self.albedo(canonical, depth, light)
        return Estimate(depth=depth, albedo=albedo, canonical=canonical, transform_map=tmap, view_raw=view_raw,
                        light_raw=light_raw, w0=w0, view=self.view_net.to_view(view_raw), light=light, depth_raw=raw)

    def render(self, est: Estimate, renderer: MeshRenderer, view: View | None = None, light: Light | None = None,
               flip: bool = False, filter_grads: bool = True, **kwargs):
        """Render an estimate at ``view``/``light`` (default: the predicted ones); ``flip`` mirrors
        depth and albedo horizontally (symmetry loss). Returns the renderer's ``RenderResult``."""
        depth, albedo = est.depth, est.albedo
        if flip:
            depth, albedo = depth.flip(3), albedo.flip(3)
        gf, eps = self.cfg.model.grad_filter, self.cfg.model.grad_filter_eps
        if filter_grads and gf in ("depth", "both") and depth.requires_grad:
            depth = edge_gradient_filter(depth, eps)
        if filter_grads and gf in ("texture", "both") and albedo.requires_grad:
            albedo = edge_gradient_filter(albedo, eps)
        return renderer.render(depth, albedo, view if view is not None else est.view,
                               light if light is not None else est.light, transform_map=est.transform_map, **kwargs)
