"""Builder of the ``digan`` model for the trainer registry (:mod:`digan.student.registry`)."""

from __future__ import annotations

from typing import Any

import torch

from digan.student.config import StudentConfig
from digan.student.identity import build_recognizer
from digan.student.model import G3D, make_renderer, teacher_info
from digan.student.objective import DistillationObjective
from digan.student.perceptual import build_perceptual
from digan.student.registry import Built, register_model

__all__ = ["teacher_w_stats", "build_g3d", "build_digan"]


@torch.no_grad()
def teacher_w_stats(teacher: Any, n: int = 10_000, seed: int = 0, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std of the teacher's w (untruncated) over ``n`` seeded samples."""
    g = torch.Generator().manual_seed(int(seed))
    ws = []
    done = 0
    while done < n:
        m = min(2048, n - done)
        z = torch.randn(m, int(teacher.style_dim), generator=g).to(device)
        w = teacher.mapping(z)
        ws.append((w[:, 0] if w.dim() == 3 else w).double().cpu())
        done += m
    allw = torch.cat(ws)
    return allw.mean(0).float(), allw.std(0).float()


def build_g3d(cfg: StudentConfig, teacher: Any, device: torch.device | str = "cpu", w_stats: bool = True) -> G3D:
    """A G3D sized for ``teacher`` (w statistics computed unless ``w_stats=False``, e.g. before loading a checkpoint)."""
    info = teacher_info(teacher, device)
    g3d = G3D(cfg, info["style_dim"], info["size"], info["inject_dim"]).to(device)
    if w_stats:
        mean, std = teacher_w_stats(teacher, cfg.train.w_stats_samples, cfg.train.seed, device)
        g3d.set_w_stats(mean, std)
    return g3d


@register_model("digan", help="DIGAN student: KAN view/light nets, partial-conv depth net, compose net, edge-gradient filter")
def build_digan(cfg: StudentConfig, teacher: Any, device: torch.device | str = "cpu") -> Built:
    g3d = build_g3d(cfg, teacher, device)
    lc = cfg.loss
    perceptual, pinfo = build_perceptual(lc.perceptual, lc.perceptual_path, lc.perceptual_scales) if lc.perc > 0 else (None, {"perceptual": "none"})
    recognizer, rinfo = build_recognizer(lc.recognizer, teacher, tuple(lc.recognizer_crop)) if lc.identity > 0 else (None, {"recognizer": "none (loss.identity=0)"})
    if perceptual is not None:
        perceptual = perceptual.to(device)
    if recognizer is not None:
        recognizer = recognizer.to(device)
    renderer = make_renderer(cfg, g3d.size)
    obj = DistillationObjective(g3d, teacher, renderer, cfg, perceptual, recognizer)
    return Built(objective=obj, core=g3d, info={"perceptual": pinfo, "recognizer": rinfo, "style_dim": g3d.style_dim, "size": g3d.size, "inject_dim": g3d.inject_dim})
