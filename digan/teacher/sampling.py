"""Writing teacher samples to disk (``digan-bench sample --teacher CKPT``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch

from digan.errors import DiganError

__all__ = ["TeacherSampleConfig", "write_teacher_samples"]


@dataclass
class TeacherSampleConfig:
    """What ``sample --teacher`` writes. Sample i depends only on (seed, i)."""

    teacher: str = "tiny"
    n: int = 16
    seed: int = 0
    psi: float = 1.0
    noise: Literal["fixed", "random"] = "fixed"
    batch: int = 16
    device: str = "cpu"
    grid: bool = True
    save_w: bool = True


def write_teacher_samples(cfg: TeacherSampleConfig, out: str | Path, force: bool = False, on_batch=None) -> dict:
    """Write ``images/NNNNNN.png`` (+ ``grid.png``, ``w.npy``, ``config.json``, ``run.json``) to ``out``.

    The folder appears complete or not at all (built in a temporary sibling); an existing one is
    replaced only with ``force``. Returns a summary dict.
    """
    from digan.config import save_config
    from digan.teacher.api import load_teacher
    from digan.utils.images import save_grid, save_png
    from digan.utils.io import atomic_dir
    from digan.utils.provenance import write_run_info

    if cfg.n < 1:
        raise DiganError(f"--n must be at least 1 (got {cfg.n})")
    if cfg.batch < 1:
        raise DiganError(f"--batch must be at least 1 (got {cfg.batch})")
    if not math.isfinite(cfg.psi):
        raise DiganError(f"--psi must be a finite number, e.g. 0.7 or 1 (none), got {cfg.psi}")
    from digan.utils.dist import check_device

    check_device(cfg.device)
    teacher = load_teacher(cfg.teacher, device=cfg.device)
    if cfg.noise == "random":
        torch.manual_seed(cfg.seed)
    ws, grid_imgs = [], []
    n_grid = min(cfg.n, 64)
    with atomic_dir(out, force=force) as tmp:
        (tmp / "images").mkdir()
        for s in range(0, cfg.n, cfg.batch):
            m = min(cfg.batch, cfg.n - s)
            img, w = teacher.sample(m, seed=cfg.seed, psi=cfg.psi, noise=cfg.noise, batch_size=m, start=s, return_w=True)
            for i in range(m):
                save_png(tmp / "images" / f"{s + i:06d}.png", img[i])
            ws.append(w.cpu())
            if len(grid_imgs) * cfg.batch < n_grid:
                grid_imgs.append(img[: max(0, n_grid - s)].cpu())
            if on_batch is not None:
                on_batch(s + m)
        if cfg.grid:
            g = torch.cat(grid_imgs)[:n_grid]
            save_grid(tmp / "grid.png", g, nrow=int(math.ceil(math.sqrt(len(g)))))
        if cfg.save_w:
            np.save(tmp / "w.npy", torch.cat(ws).numpy())
        save_config(cfg, tmp / "config.json")
        write_run_info(tmp / "run.json", "sample-teacher", config=cfg, seeds={"seed": cfg.seed},
                       weights={"teacher": teacher.source} if Path(teacher.source).is_file() else None,
                       extra={"teacher": {"size": teacher.size, "style_dim": teacher.style_dim, "w_mean": teacher.w_mean_source}})
    return {"out": str(out), "n": cfg.n, "size": teacher.size, "teacher": teacher.source, "psi": cfg.psi, "noise": cfg.noise}
