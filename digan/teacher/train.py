"""Training a StyleGAN2 teacher (``digan-bench train-teacher``).

Objective and schedule (StyleGAN2, as in rosinality's ``train.py`` unless noted):

* non-saturating logistic loss: D minimises softplus(D(G(z))) + softplus(-D(x)), G minimises
  softplus(-D(G(z)));
* R1 on real images, gamma ``r1`` (10), lazily every ``d_reg_every`` (16) D steps and scaled by
  that interval; path-length regularisation is **optional** (``path_regularize``, off in the
  tiny preset, 2 in ``standard``) every ``g_reg_every`` (4) steps on a batch shrunk by
  ``path_batch_shrink``;
* Adam(lr, betas (0, 0.99)) with the lazy-regularisation correction: lr * c and betas ** c with
  c = k / (k + 1) for regularisation interval k;
* style mixing with probability ``mixing`` (0.9), one crossover per batch;
* EMA generator with a half-life of ``ema_kimg`` thousand images and ADA's ramp-up (the half-life
  is at most ``ema_rampup`` times the images seen so far) so short runs are not dominated by the
  random initialisation;
* differentiable augmentation of everything D sees (:mod:`digan.teacher.augment`; ADA-style
  adaptive p by default, DiffAugment as an option).

Run folder: ``config.json``, ``run.json``, ``losses.csv``, ``samples/step_XXXXXX.png`` (fixed z,
EMA generator, fixed noise), ``checkpoint.pt`` (rosinality layout plus optimiser, RNG and
augmentation state; written atomically every ``ckpt_every`` steps, at the end and on Ctrl-C or SIGTERM) and
``teacher.pt`` (``g_ema`` + ``d`` + ``latent_avg`` + config: what :func:`load_teacher` and the
student need). Rerunning the same command resumes from ``checkpoint.pt`` (bit-exact on CPU);
``steps`` may be raised on resume, other settings must match.

A NaN/Inf loss stops training with :class:`digan.errors.NonFiniteLossError` naming the step and
the last good checkpoint, which is left untouched.

Multi-GPU: launch under ``torchrun``; ``batch`` is the global batch, split evenly over processes;
G and D are wrapped in ``DistributedDataParallel`` for the passes that update them; rank 0
writes files; the ADA statistic is summed over processes; replicas are checked for identical
weights at every checkpoint.
"""

from __future__ import annotations

import copy
import csv
import math
import os
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from digan.config import save_config, to_dict
from digan.errors import DiganError, NonFiniteLossError
from digan.teacher.augment import Augment, AugmentConfig
from digan.teacher.data import ImageFolderData
from digan.teacher.checkpoint import load_state_strict, make_checkpoint, save_checkpoint
from digan.teacher.model import Discriminator, Generator, StyleGAN2Config
from digan.utils import dist
from digan.utils.io import load_torch, nonfinite_tensors, state_dict_hash, write_text
from digan.utils.signals import interrupts_between_steps, terminate_as_interrupt

__all__ = [
    "TeacherTrainConfig",
    "PRESETS",
    "preset_config",
    "TeacherTrainer",
    "TrainResult",
    "init_from_teacher",
    "train_teacher",
    "d_logistic_loss",
    "g_nonsaturating_loss",
]

CKPT_FORMAT = "digan-teacher-train/1"
GRID_SEED = 1234


@dataclass
class TeacherTrainConfig:
    """Everything that defines a teacher training run (saved as ``config.json``)."""

    model: StyleGAN2Config = field(default_factory=lambda: StyleGAN2Config(size=64))
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    batch: int = 16                      # global batch (split over processes)
    steps: int = 20000                   # training iterations (one D and one G step each)
    lr: float = 0.002
    betas: tuple[float, float] = (0.0, 0.99)
    r1: float = 10.0
    d_reg_every: int = 16
    path_regularize: float = 0.0         # path-length weight (0 = off)
    path_batch_shrink: int = 2
    g_reg_every: int = 4
    mixing: float = 0.9
    ema_kimg: float = 10.0
    ema_rampup: Optional[float] = 0.05
    mirror: bool = True                  # x-flipped copies of the training images
    seed: int = 0
    device: str = "auto"                 # auto | cpu | cuda | cuda:N
    sample_every: int = 500
    ckpt_every: int = 500
    log_every: int = 10
    grid_n: int = 16
    w_mean_samples: int = 10000
    cache_gb: float = 4.0
    # start a new run from an exported teacher (a train-teacher teacher.pt, or "tiny" for the
    # bundled one) instead of random weights: its g_ema becomes G and G_ema, its D is kept, the
    # optimisers start fresh and the step counter continues from the teacher's recorded step
    # (so --steps is the total). Use: train the bundled teacher longer. None = random init.
    init_from: Optional[str] = None


# settings that may differ between a run and its resumption
# ("lr" too: the non-finite-loss message tells the user to lower it and resume; the optimiser
# then continues with the new rate)
_RESUME_FREE = {"steps", "device", "sample_every", "ckpt_every", "log_every", "grid_n", "cache_gb", "lr"}


def _tiny() -> TeacherTrainConfig:
    """The bundled teacher: narrow 64 px StyleGAN2 (ADA's small-resolution heuristics: R1 gamma
    ~ 0.0002 S^2 / batch, EMA half-life ~ batch * 10 / 32 kimg, ADA target 0.6)."""
    return TeacherTrainConfig(
        model=StyleGAN2Config(size=64, style_dim=128, n_mlp=4, channels={4: 256, 8: 128, 16: 64, 32: 32, 64: 16},
                              d_channels={4: 128, 8: 128, 16: 64, 32: 32, 64: 16}),
        augment=AugmentConfig(kind="ada", ada_target=0.6, ada_kimg=100.0),
        batch=16, steps=6500, lr=0.0025, r1=0.1, ema_kimg=5.0, sample_every=250, ckpt_every=250,
    )


def _standard() -> TeacherTrainConfig:
    return TeacherTrainConfig(
        model=StyleGAN2Config(size=256, style_dim=512, n_mlp=8, channel_multiplier=2),
        augment=AugmentConfig(kind="ada", ada_target=0.6, ada_kimg=500.0),
        batch=16, steps=800000, lr=0.002, r1=10.0, path_regularize=2.0, ema_kimg=10.0, ema_rampup=None,
        sample_every=1000, ckpt_every=5000,
    )


def _liftedgan() -> TeacherTrainConfig:
    cfg = _standard()
    cfg.model = StyleGAN2Config(size=256, style_dim=512, n_mlp=8, channels={4: 512, 8: 512, 16: 256, 32: 128, 64: 64, 128: 32, 256: 16})
    return cfg


PRESETS: dict[str, tuple[Callable[[], TeacherTrainConfig], str]] = {
    "tiny": (_tiny, "64 px, G channels 256..16 (D 128..16), style 128, 4 mapping layers: the bundled teacher (CPU minutes)"),
    "standard": (_standard, "rosinality's defaults: 256 px, channel multiplier 2, style 512, 8 mapping layers, path-length reg"),
    "liftedgan": (_liftedgan, "256 px with LiftedGAN's reduced channel table {4:512 ... 256:16}"),
}


def preset_config(name: str) -> TeacherTrainConfig:
    """A fresh copy of preset ``name`` (see :data:`PRESETS`)."""
    if name not in PRESETS:
        raise DiganError(f"unknown teacher preset '{name}'; choose one of {', '.join(PRESETS)}")
    return PRESETS[name][0]()


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------

def d_logistic_loss(real_pred: torch.Tensor, fake_pred: torch.Tensor) -> torch.Tensor:
    """softplus(D(fake)) + softplus(-D(real)), batch means."""
    return F.softplus(fake_pred).mean() + F.softplus(-real_pred).mean()


def g_nonsaturating_loss(fake_pred: torch.Tensor) -> torch.Tensor:
    """softplus(-D(G(z))), batch mean."""
    return F.softplus(-fake_pred).mean()


def d_r1_penalty(real_pred: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of |dD(x)/dx|^2 (with the graph kept for the backward pass)."""
    (grad,) = torch.autograd.grad(real_pred.sum(), real, create_graph=True)
    return grad.square().flatten(1).sum(1).mean()


def _requires_grad(m: nn.Module, flag: bool) -> None:
    for p in m.parameters():
        p.requires_grad_(flag)


# ---------------------------------------------------------------------------------------------
# trainer
# ---------------------------------------------------------------------------------------------

class TeacherTrainer:
    """G, D, EMA generator, optimisers, augmentation and the per-iteration update.

    Library use (what ``train_teacher`` and the benchmark do)::

        tr = TeacherTrainer(cfg, device)
        for step in range(cfg.steps):
            stats = tr.train_step(real_batch)
    """

    def __init__(self, cfg: TeacherTrainConfig, device: torch.device | str = "cpu"):
        cfg.model.validate()
        if cfg.batch < 1 or cfg.batch % dist.world_size():
            raise DiganError(f"batch {cfg.batch} must be a positive multiple of the number of processes ({dist.world_size()})")
        self.cfg = cfg
        self.device = torch.device(device)
        self.world = dist.world_size()
        self.local_batch = cfg.batch // self.world
        self.g = Generator(cfg.model).to(self.device)
        self.d = Discriminator(cfg.model).to(self.device)
        self.g_ema = copy.deepcopy(self.g).eval()
        _requires_grad(self.g_ema, False)
        g_c = cfg.g_reg_every / (cfg.g_reg_every + 1) if cfg.path_regularize > 0 else 1.0
        d_c = cfg.d_reg_every / (cfg.d_reg_every + 1) if cfg.r1 > 0 else 1.0
        b0, b1 = cfg.betas
        self.g_optim = torch.optim.Adam(self.g.parameters(), lr=cfg.lr * g_c, betas=(b0**g_c, b1**g_c))
        self.d_optim = torch.optim.Adam(self.d.parameters(), lr=cfg.lr * d_c, betas=(b0**d_c, b1**d_c))
        self.augment = Augment(cfg.augment)
        self.pl_mean = torch.zeros((), device=self.device)
        self.step = 0
        self.g_ddp: nn.Module = self.g
        self.d_ddp: nn.Module = self.d
        if dist.is_distributed():
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            with warnings.catch_warnings():  # broadcast_buffers: renamed in recent torch, still honoured
                warnings.simplefilter("ignore", FutureWarning)
                # buffers (noise maps, FIR kernels) are constants: identical by seeding, never synced
                self.g_ddp = DDP(self.g, device_ids=ids, broadcast_buffers=False)
                self.d_ddp = DDP(self.d, device_ids=ids, broadcast_buffers=False)
            self.g_ema.load_state_dict(self.g.state_dict())  # after DDP's broadcast from rank 0

    # -- pieces ---------------------------------------------------------------------------------
    def _z(self, n: int) -> list[torch.Tensor]:
        d = self.cfg.model.style_dim
        if self.cfg.mixing > 0 and float(torch.rand(())) < self.cfg.mixing:
            return [torch.randn(n, d, device=self.device), torch.randn(n, d, device=self.device)]
        return [torch.randn(n, d, device=self.device)]

    def _generate(self, module: nn.Module, n: int, return_latents: bool = False):
        z = self._z(n)
        inject = int(torch.randint(1, self.g.n_latent, ())) if len(z) > 1 else None
        img, lat = module(z, inject_index=inject, return_latents=return_latents)
        return (img, lat) if return_latents else img

    def ema_decay(self) -> float:
        """Per-step EMA decay from the half-life (with ramp-up)."""
        nimg = self.step * self.cfg.batch
        half = self.cfg.ema_kimg * 1000
        if self.cfg.ema_rampup is not None:
            half = min(half, nimg * self.cfg.ema_rampup)
        return 0.5 ** (self.cfg.batch / max(half, 1e-8))

    @torch.no_grad()
    def update_ema(self) -> None:
        beta = self.ema_decay()
        for pe, p in zip(self.g_ema.parameters(), self.g.parameters()):
            pe.lerp_(p, 1 - beta)
        for be, b in zip(self.g_ema.buffers(), self.g.buffers()):
            be.copy_(b)

    # -- one iteration ----------------------------------------------------------------------------
    def d_step(self, real: torch.Tensor) -> dict[str, torch.Tensor]:
        _requires_grad(self.g, False)
        _requires_grad(self.d, True)
        with torch.no_grad():
            fake = self._generate(self.g, real.shape[0])
        fake_pred = self.d_ddp(self.augment(fake))
        real_pred = self.d_ddp(self.augment(real))
        loss = d_logistic_loss(real_pred, fake_pred)
        self.d_optim.zero_grad(set_to_none=True)
        loss.backward()
        self.d_optim.step()
        self.augment.accumulate(real_pred)
        return {"d": loss.detach(), "real_score": real_pred.detach().mean(), "fake_score": fake_pred.detach().mean()}

    def r1_step(self, real: torch.Tensor) -> dict[str, torch.Tensor]:
        _requires_grad(self.d, True)
        real = real.detach().requires_grad_(True)
        real_pred = self.d_ddp(self.augment(real))
        r1 = d_r1_penalty(real_pred, real)
        self.d_optim.zero_grad(set_to_none=True)
        (self.cfg.r1 / 2 * r1 * self.cfg.d_reg_every + 0 * real_pred[0, 0]).backward()
        self.d_optim.step()
        return {"r1": r1.detach()}

    def g_step(self, n: int) -> dict[str, torch.Tensor]:
        _requires_grad(self.g, True)
        _requires_grad(self.d, False)
        fake = self._generate(self.g_ddp, n)
        loss = g_nonsaturating_loss(self.d(self.augment(fake)))
        self.g_optim.zero_grad(set_to_none=True)
        loss.backward()
        self.g_optim.step()
        return {"g": loss.detach()}

    def pl_step(self, n: int) -> dict[str, torch.Tensor]:
        _requires_grad(self.g, True)
        m = max(1, n // self.cfg.path_batch_shrink)
        img, lat = self._generate(self.g_ddp, m, return_latents=True)
        noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
        (grad,) = torch.autograd.grad((img * noise).sum(), lat, create_graph=True)
        lengths = torch.sqrt(grad.square().sum(2).mean(1))
        mean = self.pl_mean + 0.01 * (lengths.mean() - self.pl_mean)
        penalty = (lengths - mean).square().mean()
        self.pl_mean = dist.reduce_mean(mean.detach())
        self.g_optim.zero_grad(set_to_none=True)
        (self.cfg.path_regularize * self.cfg.g_reg_every * penalty + 0 * img[0, 0, 0, 0]).backward()
        self.g_optim.step()
        return {"pl": penalty.detach(), "pl_mean": self.pl_mean.detach()}

    def train_step(self, real: torch.Tensor) -> dict[str, float]:
        """One iteration on this process's real batch; returns losses averaged over processes."""
        real = real.to(self.device, non_blocking=True)
        cfg = self.cfg
        stats = self.d_step(real)
        if cfg.r1 > 0 and self.step % cfg.d_reg_every == 0:
            stats.update(self.r1_step(real))
        self.augment.update(cfg.batch, reduce=_reduce_pair if dist.is_distributed() else None)
        stats.update(self.g_step(real.shape[0]))
        if cfg.path_regularize > 0 and self.step % cfg.g_reg_every == 0:
            stats.update(self.pl_step(real.shape[0]))
        self.step += 1
        self.update_ema()
        names = sorted(stats)
        vals = dist.reduce_mean(torch.stack([stats[k].float() for k in names]))
        out = dict(zip(names, vals.tolist()))
        out["ada_p"] = self.augment.p
        return out

    # -- state -----------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Training state beyond the weights (optimisers, step, augmentation, RNG of every rank)."""
        rng = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "numpy": np.random.get_state(),
            "python": random.getstate(),
        }
        return {
            "g_optim": self.g_optim.state_dict(),
            "d_optim": self.d_optim.state_dict(),
            "step": self.step,
            "aug": self.augment.state_dict(),
            "ada_aug_p": self.augment.p,
            "pl_mean": float(self.pl_mean),
            "rng": dist.all_gather_objects(rng),
        }

    def load(self, ck: dict[str, Any], label: str) -> None:
        """Restore weights and training state from a checkpoint dict written by :meth:`state`."""
        cfg = self.cfg.model
        load_state_strict(self.g, ck["g"], f"{label} (g)", cfg)
        load_state_strict(self.d, ck["d"], f"{label} (d)", cfg)
        load_state_strict(self.g_ema, ck["g_ema"], f"{label} (g_ema)", cfg)
        lrs = [[g["lr"] for g in o.param_groups] for o in (self.g_optim, self.d_optim)]
        self.g_optim.load_state_dict(ck["g_optim"])
        self.d_optim.load_state_dict(ck["d_optim"])
        for o, lr in zip((self.g_optim, self.d_optim), lrs):  # this run's lr (it may be lowered on resume)
            for g, v in zip(o.param_groups, lr):
                g["lr"] = v
        self.step = int(ck["step"])
        self.augment.load_state_dict(ck.get("aug", {}))
        self.pl_mean = torch.tensor(float(ck.get("pl_mean", 0.0)), device=self.device)
        states = ck.get("rng") or []
        r = dist.rank()
        if r < len(states):
            st = states[r]
            torch.set_rng_state(st["torch"])
            if st.get("cuda") is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(st["cuda"], self.device)
            np.random.set_state(st["numpy"])
            random.setstate(st["python"])
        else:  # more processes than when saved: derive a distinct stream
            torch.manual_seed(self.cfg.seed * 1000 + r + 7919 * self.step)


def _reduce_pair(s: float, n: int) -> tuple[float, int]:
    """Sum (s, n) over processes (NCCL needs a CUDA tensor, gloo a CPU one)."""
    nccl = torch.distributed.get_backend() == "nccl"
    t = torch.tensor([s, float(n)], dtype=torch.float64, device=dist.device_for_rank() if nccl else "cpu")
    torch.distributed.all_reduce(t)
    return float(t[0]), int(t[1])


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    resumed_from: int
    seconds: float
    teacher_path: Path
    checkpoint_path: Path
    last: dict[str, float]
    ada_p: float
    is_main: bool = True


_CSV_FIELDS = ["step", "d", "g", "r1", "pl", "real_score", "fake_score", "ada_p", "sec_per_step"]


def init_from_teacher(trainer: "TeacherTrainer", source: str | Path) -> int:
    """Load an exported teacher into ``trainer`` (``source``: a teacher.pt, or ``"tiny"`` for the
    bundled one): its ``g_ema`` into G and G_ema, its ``d`` into D; the optimisers stay fresh.
    Sets and returns the step it was exported at (0 when it records none). One-line
    :class:`DiganError` for a missing file, a teacher without a discriminator or another
    architecture than ``trainer.cfg.model``."""
    from digan.teacher.api import bundled_teacher_path
    from digan.teacher.checkpoint import read_checkpoint

    path = bundled_teacher_path() if str(source) == "tiny" else Path(source).expanduser()
    if not path.is_file():
        raise DiganError(f"init_from: teacher {path} not found; pass an exported teacher.pt or 'tiny'")
    ck = read_checkpoint(str(path), what=f"init_from teacher {path}")
    if to_dict(ck.config) != to_dict(trainer.cfg.model):
        theirs, ours = to_dict(ck.config), to_dict(trainer.cfg.model)
        diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        raise DiganError(f"init_from teacher {path} has another architecture ({', '.join(diff)} differ); use the preset it was "
                         "trained with (--preset tiny for the bundled one)")
    if ck.d is None:
        raise DiganError(f"init_from teacher {path} holds no discriminator; continue from a train-teacher teacher.pt, which keeps D")

    def f32(sd: dict) -> dict:
        return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}

    cfg = trainer.cfg.model
    load_state_strict(trainer.g, f32(ck.g_ema), f"init_from teacher {path} (g_ema as g)", cfg)
    load_state_strict(trainer.g_ema, f32(ck.g_ema), f"init_from teacher {path} (g_ema)", cfg)
    load_state_strict(trainer.d, f32(ck.d), f"init_from teacher {path} (d)", cfg)
    trainer.step = int((ck.raw or {}).get("step") or 0)
    return trainer.step


def _resume_view(cfg_dict: dict) -> dict:
    return {k: v for k, v in cfg_dict.items() if k not in _RESUME_FREE}


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def check_settings(cfg: TeacherTrainConfig) -> None:
    """One-line errors, before any output exists, for numbers that would crash a run (a NaN or
    negative lr, betas outside [0, 1), an interval of 0 steps) or finish it with an unusable
    teacher (``w_mean_samples=0`` saved a NaN mean latent: every truncated sample was black)."""
    from digan.config import check_training_numbers

    intervals = ("d_reg_every", "g_reg_every", "path_batch_shrink", "sample_every", "ckpt_every", "log_every", "grid_n", "w_mean_samples")
    check_training_numbers(cfg, "", {"lr": "0.002", "r1": "10", "path_regularize": "0", "ema_kimg": "10", "cache_gb": "4"},
                           {name: getattr(TeacherTrainConfig, name) for name in intervals}, "[0.0,0.99]")
    if not 0.0 <= float(cfg.mixing) <= 1.0:
        raise DiganError(f"mixing is a probability in [0, 1] (got {cfg.mixing}); e.g. --set mixing=0.9")


def train_teacher(cfg: TeacherTrainConfig, data_dir: str | Path, out_dir: str | Path, *, force: bool = False,
                  on_step: Optional[Callable[[int, dict], None]] = None) -> TrainResult:
    """Train (or resume) a teacher on the images in ``data_dir``; outputs in ``out_dir``.

    Resumes from ``out_dir/checkpoint.pt`` when present (the saved config must match except for
    ``steps``, ``lr`` and logging settings); ``force`` starts over instead, in a hidden sibling
    folder that replaces ``out_dir`` only when the new run is complete (a killed ``--force`` run
    leaves the old one intact). One process at a time may write ``out_dir``
    (:func:`digan.utils.io.claim_output`). Under ``torchrun`` this runs data-parallel. Raises
    :class:`NonFiniteLossError` on a NaN/Inf loss or weights; no non-finite checkpoint is written.
    """
    from digan.utils.io import claim_output, refuse_other_outputs, staging_dir, swap_in_dir

    if int(cfg.steps) < 1:
        raise DiganError(f"--steps must be at least 1 (got {cfg.steps}); a teacher run needs training steps")
    check_settings(cfg)
    out = Path(out_dir)
    if int(os.environ.get("RANK", "0") or 0) != 0:
        return _train_teacher(cfg, data_dir, out, force=force, on_step=on_step)
    with claim_output(out):
        if not force:
            refuse_other_outputs(out, ("train-teacher",), "teacher training run")
        staged = force and out.is_dir() and any(out.iterdir())
        work = staging_dir(out) if staged else out
        res = _train_teacher(cfg, data_dir, work, force=force, on_step=on_step)
        if staged and res.steps >= cfg.steps and (work / "teacher.pt").is_file():
            swap_in_dir(work, out)
            res.out_dir, res.teacher_path, res.checkpoint_path = out, out / "teacher.pt", out / "checkpoint.pt"
        return res


def _train_teacher(cfg: TeacherTrainConfig, data_dir: str | Path, out_dir: str | Path, *, force: bool = False,
                   on_step: Optional[Callable[[int, dict], None]] = None) -> TrainResult:
    out = Path(out_dir)
    distributed = dist.init_distributed()
    rank, world = dist.rank(), dist.world_size()
    device = dist.device_for_rank(cfg.device, "--device")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    data = ImageFolderData(data_dir, size=cfg.model.size, mirror=cfg.mirror, seed=cfg.seed, cache_gb=cfg.cache_gb)
    ckpt_path, teacher_path = out / "checkpoint.pt", out / "teacher.pt"
    cfg_dict = to_dict(cfg)

    resume: Optional[dict] = None
    if ckpt_path.is_file() and not force:
        resume = load_torch(ckpt_path, what="teacher training checkpoint")
        if resume.get("format") != CKPT_FORMAT:
            raise DiganError(f"{ckpt_path} is not a teacher training checkpoint; choose another --out or pass --force")
        saved = resume.get("config") or {}
        if _resume_view(saved) != _resume_view(cfg_dict):
            diff = sorted(k for k in set(saved) | set(cfg_dict) if k not in _RESUME_FREE and saved.get(k) != cfg_dict.get(k))
            raise DiganError(
                f"{out} holds a run with a different config ({', '.join(diff)} differ); use the same settings to resume, "
                "another --out, or --force to start over"
            )
        if int(resume["step"]) >= cfg.steps:
            if rank == 0:
                _ensure_teacher_file(resume, teacher_path, cfg_dict)
            dist.barrier()
            if distributed:
                dist.cleanup()
            return TrainResult(out, int(resume["step"]), int(resume["step"]), 0.0, teacher_path, ckpt_path, {},
                               float(resume.get("ada_aug_p", 0.0)), is_main=rank == 0)

    _seed_all(cfg.seed)  # identical initial weights and noise buffers on every process
    trainer = TeacherTrainer(cfg, device)
    _seed_all(cfg.seed * 1000 + 1 + rank)  # then a distinct random stream per process
    start = 0
    if resume is not None:
        trainer.load(resume, f"teacher training checkpoint {ckpt_path}")
        start = trainer.step
    elif cfg.init_from:
        start = init_from_teacher(trainer, cfg.init_from)
        if start >= cfg.steps:
            raise DiganError(f"init_from teacher {cfg.init_from} is already at step {start}; pass --steps above {start} "
                             "(steps count from the start of its training)")
    del resume

    main = rank == 0
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "samples").mkdir(exist_ok=True)
        save_config(cfg, out / "config.json")
        from digan.utils.provenance import write_run_info

        write_run_info(out / "run.json", "train-teacher", config=cfg, seeds={"seed": cfg.seed, "grid_seed": GRID_SEED},
                       extra={"data": {"dir": str(Path(data_dir).resolve()), "images": len(data), "size": data.size},
                              "resumed_from": start, "world_size": world, "device": str(device)})
        _prepare_csv(out / "losses.csv", start)
    from digan.utils.seeding import latents

    grid_z = latents(cfg.grid_n, cfg.model.style_dim, GRID_SEED).to(device)
    last_good = start if ckpt_path.is_file() and not force and start > 0 else None

    def advice(diverged_at: int) -> str:
        """What was kept and the fix, for a loss that first went wrong at step ``diverged_at``."""
        lr = f"{min(cfg.lr / 2, TeacherTrainConfig().lr):g}"
        if last_good is None:
            return f"no checkpoint had been written yet; rerun with a lower learning rate (--set lr={lr}) or a larger r1"
        if last_good >= diverged_at - 1:  # the saved weights are the ones that gave the bad loss
            return (f"the last good checkpoint {ckpt_path} (step {last_good}) was kept (finite), but its weights are the ones "
                    f"that diverged, so resuming cannot help: start over with a lower learning rate (--force --set lr={lr})")
        return (f"the last good checkpoint {ckpt_path} (step {last_good}) was kept (finite); lower the learning rate "
                f"(--set lr={lr}) or raise r1, then rerun the same command to resume")

    def save(step: int) -> None:
        nonlocal last_good
        st = trainer.state()
        if distributed:
            hashes = dist.all_gather_objects(state_dict_hash(trainer.g))
            if len(set(hashes)) != 1:
                raise DiganError("data-parallel replicas diverged (different generator weights across processes); report this bug")
        bad = nonfinite_tensors({"g": trainer.g.state_dict(), "d": trainer.d.state_dict(), "g_ema": trainer.g_ema.state_dict(),
                                 "g_optim": st["g_optim"], "d_optim": st["d_optim"]})
        if bad:
            raise NonFiniteLossError(
                f"teacher training diverged: {len(bad)} weight or optimiser tensors are non-finite at step {step} (first: {bad[0]}); "
                f"nothing was saved; {advice(step + 1)}")
        if main:
            w_mean = trainer.g_ema.mean_latent(cfg.w_mean_samples, seed=GRID_SEED + 1)
            extra = {**st, "format": CKPT_FORMAT, "config": cfg_dict}
            save_checkpoint(ckpt_path, make_checkpoint(trainer.g_ema, cfg.model, d=trainer.d, g=trainer.g, latent_avg=w_mean, extra=extra))
            save_checkpoint(teacher_path, make_checkpoint(trainer.g_ema, cfg.model, d=trainer.d, latent_avg=w_mean,
                                                          extra={"config": cfg_dict, "step": step, "format": "digan-teacher/1"}))
        last_good = step
        dist.barrier()

    def grid(step: int) -> None:
        if main:
            from digan.utils.images import save_grid

            with torch.no_grad():
                imgs = trainer.g_ema.synthesis(trainer.g_ema.mapping(grid_z), noise=trainer.g_ema.fixed_noise())
            save_grid(out / "samples" / f"step_{step:06d}.png", imgs, nrow=int(math.ceil(math.sqrt(cfg.grid_n))))

    from digan.utils.progress import progress

    t0 = time.time()
    last: dict[str, float] = {}
    rows: list[dict] = []
    step = start
    if start == 0:
        grid(0)
    try:
        with terminate_as_interrupt(), progress() as bar:  # kill (SIGTERM) saves as Ctrl-C does
            task = bar.add_task("train-teacher", total=cfg.steps, completed=start, info="")
            t_prev = time.time()
            while step < cfg.steps:
                # Ctrl-C / kill during an iteration stop at its end: the save is between two steps
                with interrupts_between_steps():
                    real = data.batch(step, cfg.batch, rank, world)
                    try:
                        stats = trainer.train_step(real)
                    except RuntimeError as e:  # e.g. a linear-algebra error on NaN weights
                        if not nonfinite_tensors({"g": trainer.g.state_dict(), "d": trainer.d.state_dict()}):
                            raise
                        raise NonFiniteLossError(
                            f"teacher training diverged (non-finite weights, then {type(e).__name__}) at step {step + 1}; "
                            f"{advice(step + 1)}") from None
                    step = trainer.step
                    bad = [k for k, v in stats.items() if not math.isfinite(v)]
                    if bad:
                        raise NonFiniteLossError(
                            f"teacher training produced a non-finite {bad[0]} loss ({stats[bad[0]]}) at step {step} (if a lower "
                            f"learning rate does not help, check the data for corrupt or constant images); {advice(step)}"
                        )
                    now = time.time()
                    stats["sec_per_step"] = now - t_prev
                    t_prev = now
                    last = stats
                    rows.append({"step": step, **{k: stats.get(k, "") for k in _CSV_FIELDS if k != "step"}})
                    if on_step is not None:
                        on_step(step, stats)
                    if step % cfg.log_every == 0 or step == cfg.steps:
                        if main:
                            _append_csv(out / "losses.csv", rows)
                        rows = []
                        bar.update(task, completed=step, info=f"D {stats['d']:.3f} G {stats['g']:.3f}"
                                   + (f" R1 {stats['r1']:.3f}" if "r1" in stats else "") + f" p {stats['ada_p']:.3f}")
                    if step % cfg.sample_every == 0 or step == cfg.steps:
                        grid(step)
                    if step % cfg.ckpt_every == 0 or step == cfg.steps:
                        if main:
                            _append_csv(out / "losses.csv", rows)
                        rows = []
                        save(step)
    except KeyboardInterrupt:
        if main:
            _append_csv(out / "losses.csv", rows)
        if not distributed and step > (last_good or 0):
            try:
                save(step)  # state between iterations is consistent: resume continues exactly here
            except NonFiniteLossError:
                pass  # never save non-finite weights; the last finite checkpoint stays
        raise
    finally:
        if distributed:
            dist.cleanup()
    return TrainResult(out, step, start, time.time() - t0, teacher_path, ckpt_path, last, trainer.augment.p, is_main=main)


def _ensure_teacher_file(resume: dict[str, Any], teacher_path: Path, cfg_dict: dict) -> None:
    """A complete run has its model: write ``teacher.pt`` from the final training checkpoint when a
    kill between the two writes left it missing or older."""
    step = int(resume["step"])
    if teacher_path.is_file():
        try:
            if int(load_torch(teacher_path, what="teacher").get("step", -1)) == step:
                return
        except DiganError:
            pass  # unreadable: rewrite it
    keep = {k: resume[k] for k in ("g_ema", "d", "latent_avg", "args") if k in resume}
    save_checkpoint(teacher_path, {**keep, "config": cfg_dict, "step": step, "format": "digan-teacher/1"})


def _prepare_csv(path: Path, start: int) -> None:
    """Create the loss log, or cut it back to the resumed step so rows are never duplicated."""
    rows: list[dict] = []
    if path.is_file() and start > 0:
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= start]
    buf = [",".join(_CSV_FIELDS)]
    for r in rows:
        buf.append(",".join(str(r.get(k, "")) for k in _CSV_FIELDS))
    write_text(path, "\n".join(buf) + "\n")


def _append_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=_CSV_FIELDS)
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items() if k in _CSV_FIELDS})

