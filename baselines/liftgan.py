"""LiftGAN (LiftedGAN, Shi, Aggarwal and Jain, CVPR 2021): the native implementation, trainable
with ``digan-bench train --model liftgan``, and the benchmark method ``liftgan``.

LiftGAN is DIGAN's closest relative, so it is *not* a copy: it is the DIGAN student
(:class:`digan.student.model.G3D`, :class:`digan.student.objective.DistillationObjective`, the same
renderer and teacher) built with LiftedGAN's settings, :data:`LIFTGAN_DEFAULTS`:

============================  ==========================  ==================================
part                          DIGAN (paper)                LiftGAN (LiftedGAN's code)
============================  ==========================  ==================================
DV / DL                       KAN + GroupNorm, w standardised   plain Linear + LeakyReLU(0.2), width
                                                           512, no norm, raw w (``model.use_kan``,
                                                           ``pose_norm``, ``pose_standardize`` off)
DS convolutions               partial convolutions         plain ``nn.Conv2d`` (``partial_conv``)
DS normalisation order        GroupNorm before each conv   conv -> GroupNorm -> ReLU (``depth_norm=post``)
DS output conv init           zero (flat start depth)      PyTorch default, a random start field
                                                           (``depth_zero_init=false``)
compose net M                 plain MLP (paper); residual  plain MLP, w0 = M(w, L0, 0);
                              in the ``tiny`` preset       residual in ``tiny`` too (see
                                                           :data:`LIFTGAN_TINY`)
albedo regulariser filter     Laplacian (paper)            grey albedo minus Gaussian blur
                                                           (``loss.albedo_filter=blur_residual``)
normals from depth            exact unit normals           ``n / (|n| + 1e-7)``, 0.3 % short at
                                                           64 px, 5 % at 256 px
                                                           (``renderer.normal_norm=liftedgan``)
schedule                      30,000 steps                 50,000 steps (10 x 5,000), batch 8
w statistics                  10,000 samples               50,000 samples (LiftedGAN's ``get_statistics``)
============================  ==========================  ==================================

Shared with DIGAN because the two agree: compose net M (LiftedGAN's StyleComposeNet), depth
post-processing and border, transformation map (sigmoid(+5), blur size 10 / sigma 4 in
LiftedGAN's formula), gradient clipping on the depth (LiftedGAN's ContourGradientClip), de-lit
texture from G(w0), loss weights (rec 5, perc 1, flip 0.8, perturbation 2, cycle 4, identity 1
below 25 deg, w regulariser 0.5, albedo 0.01 with 4x pooling), Adam 1e-4, weight decay 5e-4,
truncation 0.7. The identity loss uses the project's recogniser (``loss.recognizer``):
LiftedGAN's LResNet-18 CASIA weights are not available here.

Benchmark method ``liftgan`` (the bundled tiny student :data:`BUNDLED_LIFTGAN`,
``digan/assets/tiny_liftgan_64.pt``) or ``liftgan:PATH``: ``PATH`` is a ``student.pt``/``checkpoint.pt`` trained with
``--model liftgan`` (its teacher is found as for ``digan``), a folder holding ``student.pt``, or
an official LiftedGAN ``checkpoint_XXX.pth`` (:mod:`baselines.liftgan_checkpoint`; the
``teacher`` option is then required: LiftedGAN's StyleGAN2 file). ``liftgan@VARIANT:PATH`` names
an ablation trained with ``--model liftgan --variant VARIANT``; the checkpoint must match. Options: ``teacher``,
``truncation`` (1.0), ``inversion_steps`` (150), ``inversion_lr`` (0.05), ``device``, ``flip_average``
(default the student's ``model.flip_average``: true, mirror averaging as for ``digan``),
``inversion_shift_lr`` (as for ``digan``). Capabilities,
rendering and reconstruction are those of the ``digan`` method (:class:`DiganMethod`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from digan.errors import DiganError
from digan.student.build import build_digan
from digan.student.config import StudentConfig
from digan.student.method import DiganMethod
from digan.student.registry import Built, register_model
from evaluate.methods import Method, register_method

__all__ = ["LIFTGAN_DEFAULTS", "build_liftgan", "load_liftgan", "LiftGANMethod", "BUNDLED_LIFTGAN"]

#: the bundled tiny LiftGAN student (``liftgan`` without a path): trained with
#: ``digan-bench train --model liftgan`` on the bundled tiny teacher, like ``tiny_student_64.pt``
BUNDLED_LIFTGAN = Path(__file__).resolve().parents[1] / "digan" / "assets" / "tiny_liftgan_64.pt"

#: config overrides that turn the DIGAN student into LiftGAN (applied by ``--model liftgan``)
LIFTGAN_DEFAULTS: list[str] = [
    "model.use_kan=false",
    "model.pose_hidden=512",
    "model.pose_layers=4",
    "model.pose_norm=false",
    "model.pose_standardize=false",
    "model.partial_conv=false",
    "model.depth_norm=post",
    "model.depth_zero_init=false",
    "model.depth_prior=none",
    "model.depth_smooth=0",
    "model.compose_residual=false",
    "model.grad_filter=depth",
    "loss.albedo_filter=blur_residual",
    "renderer.normal_norm=liftedgan",
    "train.steps=50000",
    "train.batch=8",
    "train.lr=1e-4",
    "train.weight_decay=5e-4",
    "train.w_stats_samples=50000",
]


#: on top of the ``tiny`` preset (narrow networks and the step budget, shared with DIGAN so the
#: two compare at equal budget): undo the preset's DIGAN-only schedule, so LiftGAN keeps
#: LiftedGAN's loss weights (flip 0.8, no canonical-symmetry loss), no depth warm-up, its diffuse
#: range [0, 1] and its perturbed lights (permuted batch lights). The data-dependent
#: perturbation ranges of ``tiny`` (|yaw| <= 30, no yaw-tied translation for the synthetic
#: crops) are kept: they describe the data, not the method. So is the preset's residual compose
#: net (``model.compose_residual=true``: M starts as the identity, w0 = w), since the twentieth
#: session: with LiftedGAN's plain M, 1,200 steps were too few for M to learn to pass a face
#: through, and every code came out as one face (neutral code spread 0.23x, 1 of 64 nearest its
#: own w; docs/shape-history.md, "The LiftGAN student's one face"). ``--set model.compose_residual=false`` gives
#: LiftedGAN's plain M back; the ``paper`` preset (50,000 steps) keeps it.
LIFTGAN_TINY: list[str] = [
    "loss.flip=0.8",
    "loss.canonical_symmetry=0",
    "train.depth_warmup=0",
    "model.light_diffuse_range=[0.0,1.0]",
    "loss.perturb_light=permute",
]


@register_model("liftgan", help="LiftGAN (LiftedGAN): plain-MLP view/light nets, plain-conv depth net, LiftedGAN losses and schedule",
                defaults=LIFTGAN_DEFAULTS, presets={"tiny": LIFTGAN_TINY})
def build_liftgan(cfg: StudentConfig, teacher: Any, device: torch.device | str = "cpu") -> Built:
    """The trainer's builder for ``liftgan``: DIGAN's G3D and objective with ``cfg`` (LiftGAN's
    settings come from :data:`LIFTGAN_DEFAULTS` through ``make_config(model="liftgan")``)."""
    if cfg.model.name != "liftgan":
        raise DiganError(f"build_liftgan got a config for model '{cfg.model.name}'; make it with make_config(model='liftgan')")
    built = build_digan(cfg, teacher, device)
    built.info = {**built.info, "model": "liftgan", "architecture": "LiftedGAN settings on the shared G3D (baselines.liftgan)"}
    return built


def load_liftgan(path: str | Path, teacher_path: str | Path | None = None, device: torch.device | str = "cpu",
                 w_stats_samples: int = 0):
    """A LiftGAN :class:`~digan.student.inference.Student` from a native checkpoint (trained with
    ``--model liftgan``) or an official LiftedGAN file (then ``teacher_path`` is required)."""
    from digan.student.build import build_g3d
    from digan.student.inference import Student, resolve_teacher_path
    from digan.student.train import CKPT_FORMAT, load_config_from_checkpoint, load_state_checked, load_teacher, teacher_matches
    from digan.utils.io import load_torch

    from baselines.liftgan_checkpoint import is_liftedgan_checkpoint, load_liftedgan_checkpoint

    p = Path(path).expanduser()
    if p.is_dir():
        cand = p / "student.pt"
        if not cand.is_file():
            raise DiganError(f"no student.pt in {p}; train one with 'digan-bench train --model liftgan --out {p}' or pass the file")
        p = cand
    ck = load_torch(p, what="LiftGAN checkpoint")
    dev = torch.device(device)
    if is_liftedgan_checkpoint(ck):
        if teacher_path is None:
            raise DiganError(f"{p} is an official LiftedGAN checkpoint, which holds no teacher; pass LiftedGAN's StyleGAN2 "
                             "(stylegan2-ffhq-cropped-300000.pt from the LiftedGAN README) with the method option teacher=PATH")
        teacher = load_teacher(teacher_path, dev)
        return load_liftedgan_checkpoint(p, teacher, dev, w_stats_samples=w_stats_samples)
    if not isinstance(ck, dict) or ck.get("format") != CKPT_FORMAT:
        raise DiganError(f"{p} is neither a digan-bench LiftGAN checkpoint nor an official LiftedGAN one (netD/netT/netSD/netSC); "
                         "train one with 'digan-bench train --model liftgan'")
    if ck.get("model") != "liftgan":
        raise DiganError(f"{p} holds a '{ck.get('model')}' model, not liftgan; use the method '{ck.get('model')}:{p}'")
    cfg = load_config_from_checkpoint(ck, p)
    tpath = resolve_teacher_path(ck, p, teacher_path)
    teacher = load_teacher(tpath, dev)
    if not teacher_matches(ck["teacher"], teacher, tpath):
        raise DiganError(f"teacher {tpath} is not the one {p} was trained with; pass the matching teacher option")
    g3d = build_g3d(cfg, teacher, dev, w_stats=False)
    load_state_checked(g3d, ck["state"], p, what="LiftGAN checkpoint")
    return Student(g3d, teacher, cfg, dev, info={"path": str(p), "step": ck.get("step"), "teacher": ck["teacher"],
                                                 "meta": ck.get("meta", {}), "source": "digan-bench liftgan checkpoint"})


class LiftGANMethod(DiganMethod):
    """A loaded LiftGAN (native or official weights) with the ``digan`` method's rendering,
    capabilities and teacher-inversion reconstruction."""

    name = "liftgan"

    def __init__(self, path: str | Path, truncation: float = 1.0, teacher: str | None = None, inversion_steps: int = 150,
                 inversion_lr: float = 0.05, device: str | torch.device | None = None, variant: str = "full",
                 flip_average: bool | None = None, inversion_shift_lr: float | str | None = None):
        self.student = load_liftgan(path, teacher, device or "cpu")
        self.path = Path(self.student.info["path"])
        trained_as = self.student.cfg.variant
        if trained_as != variant:
            raise DiganError(f"{self.path} was trained as liftgan@{trained_as}, not liftgan@{variant}; pass the matching checkpoint")
        self.variant = variant
        self._set_inference_options(truncation, inversion_steps, inversion_lr, flip_average, inversion_shift_lr)

    def info(self) -> dict[str, Any]:
        out = super().info()
        out.update({"name": self.name, "source": self.student.info.get("source"), "epoch": self.student.info.get("epoch")})
        return out


@register_method("liftgan", help="LiftGAN (LiftedGAN): the bundled tiny one, or liftgan:PATH, a 'train --model liftgan' "
                                 "student.pt or an official LiftedGAN checkpoint_XXX.pth with the teacher option")
def _make_liftgan(arg: str | None, variant: str = "full", truncation: float = 1.0, teacher: str | None = None,
                  inversion_steps: int = 150, inversion_lr: float = 0.05, device: str | None = None,
                  flip_average: bool | None = None, inversion_shift_lr: float | str | None = None, **unknown: Any) -> Method:
    if unknown:
        raise DiganError(f"liftgan has no option '{sorted(unknown)[0]}'; valid options: truncation, teacher, inversion_steps, "
                         "inversion_lr, device, flip_average, inversion_shift_lr")
    if not arg:
        if variant != "full":
            raise DiganError(f"liftgan@{variant} needs its checkpoint: liftgan@{variant}:PATH (train one with "
                             f"'digan-bench train --model liftgan --variant {variant} --teacher tiny --preset tiny --out DIR')")
        if not BUNDLED_LIFTGAN.is_file():
            raise DiganError(f"liftgan: the bundled tiny LiftGAN {BUNDLED_LIFTGAN.name} is not installed; pass liftgan:PATH, a "
                             "student.pt from 'digan-bench train --model liftgan --teacher tiny --preset tiny --out DIR'")
        arg = str(BUNDLED_LIFTGAN)
    return LiftGANMethod(arg, truncation, teacher, inversion_steps, inversion_lr, device, variant=variant, flip_average=flip_average,
                         inversion_shift_lr=inversion_shift_lr)
