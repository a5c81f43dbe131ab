"""Training loop of the student (``digan-bench train``): resumable, DDP under torchrun, with
progress bar, periodic grids, loss curves (CSV + PNG), ``config.json`` and ``run.json``.

Output folder layout::

    OUT/config.json        the full StudentConfig
    OUT/run.json           provenance (versions, seeds, teacher hash, perceptual/recogniser used)
    OUT/checkpoint.pt      latest training checkpoint (atomic; see below)
    OUT/student.pt         final student (no optimiser state), written when training completes
    OUT/losses.csv         step, seconds, and every loss term (every ``train.log_every`` steps)
    OUT/losses.png         the curves
    OUT/grids/step_XXXXXXX.png   rows: I_2D, I_3D, G(w0), albedo, depth, shading, yaw -30/+30
    OUT/shape_eval.jsonl|csv     with train.eval_data (--eval-data): SIDE/MAD/roughness/pose on
                                 held-out heads, one row per evaluation
                                 (digan.student.diagnostics.TrainingShapeEval)
    OUT/best.pt, best.json       with train.keep_best too: the student (student.pt's format) at
                                 the evaluation with the lowest keep_best value after the depth
                                 warm-up, and that evaluation's row

With ``train.ema`` > 0 the student in student.pt and best.pt, the one evaluated on held-out
heads and drawn in the grids, is the moving average of the weights (:class:`WeightAverage`);
the training checkpoint holds both (``state`` the trained weights, ``ema`` the average).

Checkpoint keys (our own layout, ``format = "digan-student/1"``): ``model`` (registry name),
``config`` (dict), ``config_hash`` (of the config without the schedule/logging fields),
``state`` (``core.state_dict()``), ``meta`` (style_dim, size, inject_dim, perceptual/recogniser
info), ``teacher`` (``sha256`` of the file or weights, ``tensors`` weight hash, ``path``), ``step``, and in training checkpoints ``optimizer``
and ``rng`` (torch, cuda, numpy, python and the latent sampler's generator state), and ``ema``
(the averaged state) with ``train.ema``.

Resume: rerunning the same command continues from ``OUT/checkpoint.pt``. A checkpoint made with a
different teacher (hash) or a different config (anything but ``train.steps`` / intervals /
device, ``train.lr``) stops with a one-line error; ``--force`` starts over (beside the old run,
which it replaces only when complete). A non-finite loss, non-finite weights or optimiser state
at a save, or an error caused by them raises :class:`~digan.errors.NonFiniteLossError`: no
non-finite checkpoint is ever written, the last finite one is kept, and lowering ``train.lr``
then rerunning resumes from it. ``losses.csv`` keeps the rows logged up to the stop (also on
Ctrl-C / kill), so the loss before a divergence can be read. One process at a time writes a run folder.

Under torchrun every process trains on its own latents (seed + rank) with DistributedDataParallel;
rank 0 writes the outputs.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from digan.config import config_hash, from_dict, save_config, to_dict
from digan.errors import DiganError, NonFiniteLossError
from digan.utils import dist
from digan.utils.images import make_grid, save_png
from digan.utils.io import load_torch, nonfinite_tensors, save_torch, sha256_file, state_dict_hash, write_text
from digan.utils.progress import progress
from digan.utils.provenance import write_run_info
from digan.student.config import LossConfig, StudentConfig
from digan.student.registry import get_builder

__all__ = ["CKPT_FORMAT", "TrainResult", "WeightAverage", "train", "read_student_checkpoint", "hold_untrained", "load_state_checked", "load_teacher", "teacher_hash", "teacher_tensor_hash", "teacher_matches", "resume_key", "checkpoint_payload", "package_student"]

CKPT_FORMAT = "digan-student/1"
#: ``train.lr`` may also change on resume: the non-finite-loss message tells users to lower it
#: and rerun (checkpoints written before this still resume: :func:`_resume_keys`)
_LR_FREE = ("lr",)
#: config fields that may change between runs of the same training (not part of the resume key)
_FREE_KEYS = ("steps", "ckpt_every", "grid_every", "log_every", "device", "threads",
              "eval_data", "eval_every", "eval_faces", "eval_inversion_steps", "keep_best")


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    resumed_from: int
    seconds: float
    last_losses: dict[str, float]
    student_path: Path
    best: dict[str, Any] | None = None  # best.json's content with train.keep_best (None: off or none yet)
    # heads of train.inverted_data used (the first train.inverted_n files, fewer when the folder
    # holds fewer) and the count asked (and "mirrored": True with train.inverted_mirror); None
    # without inverted data
    inverted_heads: dict[str, Any] | None = None


def load_teacher(path: str | Path, device: torch.device | str = "cpu") -> Any:
    """Load a teacher checkpoint with :func:`digan.teacher.api.load_teacher`."""
    try:
        from digan.teacher.api import load_teacher as _load
    except ImportError as e:  # pragma: no cover - teacher package incomplete
        raise DiganError("the teacher loader (digan.teacher.api) is not available in this installation") from e
    t = _load(str(path))
    if hasattr(t, "to"):
        t = t.to(device) or t
    return t


def teacher_hash(teacher: Any, path: str | Path | None = None) -> str:
    """``file:<sha256>`` of the teacher file, or ``tensors:<sha256>`` of an in-memory teacher."""
    if path is not None and Path(path).is_file():
        return "file:" + sha256_file(path)
    gen = getattr(teacher, "generator", None) or getattr(teacher, "g_ema", None)
    if gen is not None:
        return "tensors:" + state_dict_hash(gen)
    raise DiganError("cannot identify the teacher; pass a teacher checkpoint path")


def resume_key(cfg: StudentConfig, free: tuple[str, ...] | None = None) -> str:
    """Hash of the config without the fields that may change on resume."""
    d = to_dict(cfg)
    for k in (_FREE_KEYS + _LR_FREE) if free is None else free:
        d["train"].pop(k, None)
    return config_hash(d)


def _resume_keys(cfg: StudentConfig) -> tuple[str, str]:
    """Today's resume key and the one of checkpoints written while ``lr`` was not free."""
    return resume_key(cfg), resume_key(cfg, _FREE_KEYS)


def _same_settings(state: dict[str, Any], cfg: StudentConfig) -> bool:
    """Whether a checkpoint's stored config, with the fields added since it was written filled
    in as :func:`load_config_from_checkpoint` does (the behaviour it was trained with), is this
    run's config up to the free fields: a checkpoint from an older version resumes when the
    new settings are at the values that reproduce that version."""
    try:
        old = load_config_from_checkpoint(state)
    except (DiganError, TypeError, ValueError, KeyError):
        return False
    return resume_key(old) == resume_key(cfg)


def teacher_tensor_hash(teacher: Any) -> str | None:
    """``tensors:<sha256>`` of the teacher generator's weights (file-format independent)."""
    gen = getattr(teacher, "generator", None) or getattr(teacher, "g_ema", None)
    return "tensors:" + state_dict_hash(gen) if gen is not None else None


def teacher_matches(record: dict[str, Any], teacher: Any, path: str | Path | None) -> bool:
    """Whether a loaded teacher is the one a checkpoint recorded (file hash, else weight hash)."""
    if path is not None and Path(path).is_file() and str(record.get("sha256", "")).startswith("file:"):
        if record["sha256"] == "file:" + sha256_file(path):
            return True
    th = teacher_tensor_hash(teacher)
    return th is not None and th in (record.get("tensors"), record.get("sha256"))


def checkpoint_payload(cfg: StudentConfig, core: torch.nn.Module, info: dict, thash: str, tpath: str | None, step: int,
                       tensors: str | None = None) -> dict[str, Any]:
    """The model part of a checkpoint (what inference needs)."""
    return {
        "format": CKPT_FORMAT,
        "model": cfg.model.name,
        "config": to_dict(cfg),
        "config_hash": resume_key(cfg),
        "state": {k: v.detach().cpu() for k, v in core.state_dict().items()},
        "meta": info,
        "teacher": {"sha256": thash, "tensors": tensors, "path": tpath},
        "step": step,
    }


def init_weights(core: torch.nn.Module, path: str | Path) -> None:
    """Initialise ``core`` from another student checkpoint's weights (fine-tuning, e.g. on a
    retrained teacher). The teacher statistics buffers (w mean/std) keep the new teacher's values."""
    ck = load_torch(path, what="init checkpoint (train.init_from)")
    if not isinstance(ck, dict) or ck.get("format") != CKPT_FORMAT:
        raise DiganError(f"train.init_from {path} is not a digan-bench student checkpoint")
    own = core.state_dict()
    sd = {k: v for k, v in ck["state"].items() if not k.endswith(("w_mean", "w_std", "w_sigma_inv"))}
    bad = [k for k, v in sd.items() if k not in own or tuple(own[k].shape) != tuple(v.shape)]
    missing = [k for k in own if k not in ck["state"]]
    if bad or missing:
        raise DiganError(f"train.init_from {path} does not fit this model (first mismatch: {(bad or missing)[0]}); use a checkpoint of the same preset/variant")
    core.load_state_dict(sd, strict=False)


def read_student_checkpoint(path: str | Path) -> dict[str, Any]:
    """The dict of a ``student.pt``/``checkpoint.pt`` written by ``digan-bench train``; another
    file is a one-line :class:`DiganError` (``load_torch`` reports a missing or corrupt one)."""
    p = Path(path)
    if p.suffix == ".pkl" and p.is_file():  # a student is never a pickle; not opened here
        raise DiganError(f"{p} is a .pkl pickle, not a digan-bench student checkpoint (student.pt); a StyleGAN2-ADA "
                         f"network-snapshot .pkl is a teacher: pass it as --teacher (e.g. 'digan-bench sample --teacher {p}')")
    ck = load_torch(p, what="student checkpoint")
    if not isinstance(ck, dict) or ck.get("format") != CKPT_FORMAT:
        from digan.teacher.checkpoint import is_teacher_checkpoint

        if is_teacher_checkpoint(ck):
            raise DiganError(f"{p} is not a digan-bench student checkpoint but a StyleGAN2 teacher checkpoint; sample it with "
                             f"'digan-bench sample --teacher {p}', or train a student from it with 'digan-bench train --teacher {p}' "
                             "and pass that student.pt here")
        raise DiganError(f"{p} is not a digan-bench student checkpoint (train one with digan-bench train)")
    return ck


def hold_untrained(core: torch.nn.Module, names: list[str] | None) -> None:
    """``train.trainable``: every parameter of ``core`` outside the sub-networks ``names`` (its
    child modules, e.g. ``view_net``) stops requiring a gradient, so the optimiser never sees it
    and its weights stay as initialised; None or empty: all learn. An unknown name, or one whose
    sub-network this model does not have (e.g. ``trans_net`` without the transformation map), is
    a one-line :class:`DiganError` listing the names there are."""
    if not names:
        return
    if isinstance(names, str):
        names = [names]
    children = {n: m for n, m in core.named_children() if m is not None and any(True for _ in m.parameters())}
    unknown = [n for n in names if n not in children]
    if unknown:
        raise DiganError(f"train.trainable: this model has no sub-network '{unknown[0]}'; choose from: {', '.join(children)}")
    keep = {id(p) for n in names for p in children[n].parameters()}
    for p in core.parameters():
        if id(p) not in keep:
            p.requires_grad_(False)


def _rng_state(sampler: torch.Generator) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "sampler": sampler.get_state(),
    }


def _set_rng_state(st: dict[str, Any], sampler: torch.Generator) -> None:
    torch.set_rng_state(st["torch"])
    if st.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    sampler.set_state(st["sampler"])


def _read_losses(path: Path, upto: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    return [r for r in rows if int(r["step"]) <= upto]


def _write_losses(out: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    keys: list[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, restval="")
    w.writeheader()
    w.writerows(rows)
    write_text(out / "losses.csv", buf.getvalue())
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4.5))
        steps = [int(r["step"]) for r in rows]
        for k in keys:
            if k in ("step", "seconds"):
                continue
            ys = [float(r[k]) if r.get(k, "") not in ("", None) else float("nan") for r in rows]
            ax.plot(steps, ys, label=k, lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("loss (log)")
        ax.legend(fontsize=7, ncol=3)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        buf2 = io.BytesIO()
        fig.savefig(buf2, format="png", dpi=110)
        plt.close(fig)
        from digan.utils.io import write_bytes

        write_bytes(out / "losses.png", buf2.getvalue())
    except Exception as e:  # plotting must never kill a training run
        import warnings

        warnings.warn(f"could not plot losses.png: {e}", stacklevel=2)


def _save_grid(obj: Any, z: torch.Tensor, path: Path) -> None:
    rows = obj.preview(z)
    imgs = torch.cat([r.clamp(-1, 1).cpu() for r in rows.values()], 0)
    save_png(path, make_grid(imgs, nrow=z.shape[0]))



def _param_groups(core: torch.nn.Module, cfg: Any) -> list[dict[str, Any]]:
    """Adam parameter groups, one per learning-rate multiple (group key ``lr_scale``): the depth
    net at ``lr * train.depth_lr_scale``, model.shared_relief's map at that times
    ``train.shared_relief_lr_scale``, everything else at lr. The lr group comes first and is
    always there; with both scales at 1 it is the only one, so earlier checkpoints resume."""
    scale = float(getattr(cfg.train, "depth_lr_scale", 1.0))
    depth_net = getattr(core, "depth_net", None)
    depth_ids = {id(p) for p in depth_net.parameters()} if depth_net is not None else set()
    relief = getattr(depth_net, "shared_relief", None)

    def lr_scale(p: torch.nn.Parameter) -> float:
        if p is relief:
            return scale * float(getattr(cfg.train, "shared_relief_lr_scale", 1.0))
        return scale if id(p) in depth_ids else 1.0

    # dict order = the groups' order in the optimiser state: lr, the depth net's, the map's. A group
    # stays when train.trainable leaves it empty, so the state's layout follows the config alone
    groups: dict[float, list[torch.nn.Parameter]] = {1.0: []}
    if depth_net is not None:
        groups.setdefault(scale, [])
    if relief is not None:
        groups.setdefault(lr_scale(relief), [])
    for p in core.parameters():
        if p.requires_grad:
            groups[lr_scale(p)].append(p)
    return [{"params": ps, "lr": cfg.train.lr * s, "lr_scale": s} for s, ps in groups.items()]


def attach_pose_reader(obj: Any, cfg: StudentConfig) -> None:
    """Give the objective the face detector's pose reader (``train.pose_detector``) when a term
    reads the teacher's images on the fly (``loss.pose_anchor_samples`` > 0 or
    ``loss.perturb_view="detector"``); a missing detector file is a one-line error naming the
    setting."""
    if float(cfg.loss.pose_anchor_samples) > 0 or cfg.loss.perturb_view == "detector":
        from digan.faces.onnx_models import resolve_model
        from digan.faces.pipeline import FacePipeline

        det = resolve_model("detector", cfg.train.pose_detector, flag="--set train.pose_detector=PATH")
        obj.pose_reader = FacePipeline(detector=str(det), recognizer=False, threads=cfg.train.threads).read_pose


def train(
    cfg: StudentConfig,
    out_dir: str | Path,
    teacher: Any = None,
    teacher_path: str | Path | None = None,
    force: bool = False,
    show_progress: bool = True,
    max_steps_this_run: int | None = None,
) -> TrainResult:
    """Train (or resume training) a student; see the module docstring.

    Args:
        cfg: the student config (``cfg.model.name`` picks the registered model).
        out_dir: output folder (created; resumed when it holds a checkpoint).
        teacher / teacher_path: a loaded teacher object, or the path of a teacher checkpoint.
        force: ignore an existing checkpoint and start over; the new run is built in a hidden
            sibling folder and replaces ``out_dir`` only when it is complete.
        max_steps_this_run: stop after this many steps of this call (tests, time-boxed jobs);
            the run stays resumable.
    """
    from digan.utils.io import claim_output, refuse_other_outputs, staging_dir, swap_in_dir
    from digan.utils.signals import terminate_as_interrupt

    if int(cfg.train.steps) < 1:
        raise DiganError(f"train.steps must be at least 1 (got {cfg.train.steps}); pass --steps N")
    if not 0.0 <= float(cfg.train.ema) < 1.0:
        raise DiganError(f"train.ema must be in [0, 1) (0 = off; got {cfg.train.ema}); e.g. --set train.ema=0.99")
    if cfg.train.ema_start is not None and int(cfg.train.ema_start) < 0:
        raise DiganError(f"train.ema_start must be >= 0 (got {cfg.train.ema_start}); omit it to start at train.depth_warmup")
    if cfg.train.keep_best and not cfg.train.eval_data:
        raise DiganError("train.keep_best needs held-out heads to choose on: pass --eval-data SYNTH_DIR (tuning heads), or drop keep_best")
    _check_numbers(cfg)
    if cfg.train.eval_data:  # a wrong --eval-data is found before OUT is created or its config.json replaced
        from digan.data.synthetic import load_synth

        p = Path(cfg.train.eval_data).expanduser()
        if not p.exists():
            raise DiganError(f"synthetic ground-truth set {p} not found; make it with 'digan-bench data synth --out {p}' "
                             "at the teacher's size, or leave out --eval-data")
        load_synth(p)
    prev_threads = torch.get_num_threads()
    if cfg.train.threads:
        torch.set_num_threads(int(cfg.train.threads))
    out = Path(out_dir)
    try:
        if int(os.environ.get("RANK", "0") or 0) != 0:
            return _train(cfg, out, teacher, teacher_path, force, show_progress, max_steps_this_run)
        # kill (SIGTERM) stops as Ctrl-C does: the output claim is released, the last checkpoint kept
        with terminate_as_interrupt(), claim_output(out):
            if not force:
                refuse_other_outputs(out, ("train",), "student training run")
            # --force over an existing run: train beside it, replace it only once complete
            staged = force and out.is_dir() and any(out.iterdir())
            work = staging_dir(out) if staged else out
            res = _train(cfg, work, teacher, teacher_path, force, show_progress, max_steps_this_run)
            if staged and (work / "student.pt").is_file():
                swap_in_dir(work, out)
                res.out_dir, res.student_path = out, out / "student.pt"
            return res
    finally:
        torch.set_num_threads(prev_threads)


def _check_numbers(cfg: StudentConfig) -> None:
    """One-line errors for training numbers torch would reject with a traceback (a negative or NaN
    learning rate, an empty batch, betas outside [0, 1))."""
    from digan.config import check_training_numbers

    t = cfg.train
    check_training_numbers(t, "train.", {"lr": "1e-4", "weight_decay": "5e-4", "depth_lr_scale": "1",
                                          "shared_relief_lr_scale": "10"},
                           {"batch": 8, "ckpt_every": 1000, "grid_every": 1000, "log_every": 10, "w_stats_samples": 10000},
                           "[0.9,0.999]")
    if getattr(cfg.model, "shared_relief_smooth", None) is not None:  # the config parser rejects non-numbers
        from digan.config import check_finite_numbers

        check_finite_numbers(cfg.model, "model.", {"shared_relief_smooth": "1"},
                             hint="; a sigma in px, 0 = no low-pass, null = model.depth_smooth with DS's residual")
    if float(cfg.loss.landmark_parallax_shared) > 0 and not cfg.model.shared_relief:
        raise DiganError("loss.landmark_parallax_shared trains model.shared_relief's map: set model.shared_relief=true, "
                         "or loss.landmark_parallax_shared=0")
    if t.eval_every is not None and int(t.eval_every) < 1:
        raise DiganError(f"train.eval_every must be at least 1 or null (= train.ckpt_every), got {t.eval_every}")
    # the loss weights and sampling ranges: a negative weight would maximise its term and a NaN
    # one poison the loss, while "> 0" tests that switch terms on would silently read both as off
    from digan.config import check_finite_numbers

    defaults = LossConfig()
    numbers = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(LossConfig)
               if isinstance(getattr(cfg.loss, f.name), (int, float)) and not isinstance(getattr(cfg.loss, f.name), bool)}
    signed = {k: numbers.pop(k) for k in ("perturb_translation",)}  # a coefficient: data may shift either way
    check_finite_numbers(cfg.loss, "loss.", numbers, signed, hint="; 0 turns a term off")


def _train(cfg: StudentConfig, out: Path, teacher: Any, teacher_path: str | Path | None, force: bool,
           show_progress: bool, max_steps_this_run: int | None) -> TrainResult:
    distributed = dist.init_distributed()
    device = dist.device_for_rank(cfg.train.device)
    main = dist.is_main()
    if teacher_path is not None and str(teacher_path) == "tiny":
        from digan.teacher.api import bundled_teacher_path

        teacher_path = bundled_teacher_path()
    if teacher is None:
        if teacher_path is None:
            raise DiganError("no teacher given; pass --teacher PATH (a StyleGAN2 checkpoint)")
        teacher = load_teacher(teacher_path, device)
    elif hasattr(teacher, "to"):
        teacher = teacher.to(device) or teacher
    thash = teacher_hash(teacher, teacher_path)
    ttensors = teacher_tensor_hash(teacher)

    ckpt_path = out / "checkpoint.pt"
    state = None
    if ckpt_path.is_file() and not force:
        state = load_torch(ckpt_path, what="training checkpoint")
        if state.get("format") != CKPT_FORMAT:
            raise DiganError(f"{ckpt_path} is not a digan-bench student checkpoint; use another --out or --force")
        if not teacher_matches(state["teacher"], teacher, teacher_path):
            raise DiganError(f"{ckpt_path} was trained with a different teacher ({state['teacher'].get('path')}); pass that teacher, another --out, or --force")
        if state["config_hash"] not in _resume_keys(cfg) and not _same_settings(state, cfg):
            raise DiganError(f"{ckpt_path} was trained with a different config; rerun with the config in {out / 'config.json'}, another --out, or --force")

    seed = cfg.train.seed + 1_000_003 * dist.rank()
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    sampler = torch.Generator().manual_seed(seed)

    built = get_builder(cfg.model.name)(cfg, teacher, device)
    core, obj = built.core, built.objective
    hold_untrained(core, cfg.train.trainable)
    opt = torch.optim.Adam(_param_groups(core, cfg), lr=cfg.train.lr, betas=tuple(cfg.train.betas), weight_decay=cfg.train.weight_decay)
    start = 0
    if state is not None:
        core.load_state_dict(state["state"])
        try:
            opt.load_state_dict(state["optimizer"])
        except ValueError as e:  # e.g. train.depth_lr_scale changed between the runs (one or two groups)
            raise DiganError(f"the checkpoint's optimiser state does not fit this config ({e}); resume with the "
                             "train.depth_lr_scale / train.shared_relief_lr_scale it was trained with, or start over with --force") from None
        for g in opt.param_groups:  # this run's train.lr (it may be lowered to resume a diverged run)
            g["lr"] = cfg.train.lr * g.get("lr_scale", 1.0)
        _set_rng_state(state["rng"], sampler)
        start = int(state["step"])
    elif cfg.train.init_from:
        init_weights(core, cfg.train.init_from)
    average = None
    if float(cfg.train.ema) > 0:
        ema_start = cfg.train.depth_warmup if cfg.train.ema_start is None else cfg.train.ema_start
        average = WeightAverage(core, float(cfg.train.ema), int(ema_start))
        if state is not None:
            if not isinstance(state.get("ema"), dict):
                raise DiganError(f"{ckpt_path} holds no weight average (train.ema); resume with the train.ema it was trained "
                                 "with, or start over with --force")
            average.load_state_dict(state["ema"])

    def averaged():  # the weight average in core for a block (train.ema), else nothing
        return average.applied(core) if average is not None else contextlib.nullcontext()

    anchored = float(cfg.loss.pose_anchor) > 0 or float(cfg.loss.pose_anchor_pitch) > 0
    landmarked = float(cfg.loss.landmark_parallax) > 0 or float(cfg.loss.landmark_parallax_shared) > 0
    readings = None  # the detector's readings of the inverted heads (rank 0, when a term needs them)
    inverted_heads = None
    if cfg.train.inverted_data:
        # rank 0 inverts (or reads its cache) and sends the codes to the other ranks: they never
        # look in a run folder, which under --force is rank 0's staging folder, not OUT. The
        # detector's pose anchors first: a missing detector fails before the long inversion
        readings = inverted_face_readings(cfg, teacher, out) if main and (anchored or landmarked) else None
        anchors = readings["angles"] if readings is not None and anchored else None
        kps = readings["kps"] if readings is not None and landmarked else None
        bank = inverted_code_bank(cfg, teacher, core.w_std, out, device, show=show_progress) if main else None
        if distributed:  # rank 0's codes, anchors and keypoints, in one exchange
            sent = tuple(t.cpu() if t is not None else None for t in (bank, anchors, kps)) if main else None
            bank, anchors, kps = dist.all_gather_objects(sent)[0]
        obj.code_bank = bank.to(device)
        mirrored = bool(cfg.train.inverted_mirror)  # the bank holds each head's mirror too
        inverted_heads = {"used": int(bank.shape[0]) // (2 if mirrored else 1), "asked": int(cfg.train.inverted_n),
                          **({"mirrored": True} if mirrored else {})}
        if main and inverted_heads["used"] < inverted_heads["asked"]:
            import warnings

            warnings.warn(f"train.inverted_data holds {inverted_heads['used']} images, fewer than the {inverted_heads['asked']} "
                          f"asked (train.inverted_n, calibrate-view --heads): all {inverted_heads['used']} are used", stacklevel=2)
        if anchored:
            obj.code_pose = anchors.to(device)
        if landmarked:
            obj.code_kps = kps.to(device)
    elif anchored:
        raise DiganError("loss.pose_anchor needs train.inverted_data (the real images whose pose it reads); use "
                         "calibrate-view, or set loss.pose_anchor=0 and loss.pose_anchor_pitch=0")
    elif landmarked:
        raise DiganError("loss.landmark_parallax needs train.inverted_data (the real images whose keypoints it reads); "
                         "use calibrate-view, or set loss.landmark_parallax=0 and loss.landmark_parallax_shared=0")
    attach_pose_reader(obj, cfg)  # every rank reads its own samples' pose
    model = obj
    if distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(obj, device_ids=[device.index] if device.type == "cuda" else None,
                    broadcast_buffers=False, find_unused_parameters=cfg.train.find_unused_parameters)

    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.json")
        write_run_info(out / "run.json", "train", config=cfg, seeds={"train": cfg.train.seed},
                       weights={"teacher": teacher_path if teacher_path else None, "init_from": cfg.train.init_from},
                       extra={"teacher_hash": thash, "model": cfg.model.name, "resumed_from": start,
                              "world_size": dist.world_size(), "losses": built.info,
                              **({"pose_detector": readings["detector"]} if readings is not None else {}),
                              **({"inverted_heads": inverted_heads} if inverted_heads is not None else {})})
    rows = _read_losses(out / "losses.csv", start) if main else []
    shape_eval = None
    if main and cfg.train.eval_data:  # 3D accuracy on held-out heads, OUT/shape_eval.jsonl|csv
        from digan.student.diagnostics import TrainingShapeEval

        tc = cfg.train
        shape_eval = TrainingShapeEval(out, tc.eval_data, core, teacher, cfg, device, start, tc.eval_every or tc.ckpt_every,
                                       tc.eval_faces, tc.eval_inversion_steps)
        if start == 0:
            shape_eval(0)
    best = _BestKeeper(out, cfg.train.keep_best, cfg.train.depth_warmup, start) if shape_eval is not None and cfg.train.keep_best else None
    preview_z = torch.randn(min(6, cfg.train.batch), int(teacher.style_dim), generator=torch.Generator().manual_seed(cfg.train.seed + 7)).to(device)

    def payload_at(step: int, trained: bool = False) -> dict[str, Any]:
        """The student's checkpoint payload (weights and config, no optimiser) at ``step``: the
        weight average with train.ema (unless ``trained``: the trained weights)."""
        averaging = average is not None and not trained
        with averaged() if averaging else contextlib.nullcontext():
            payload = checkpoint_payload(cfg, core, built.info, thash, str(teacher_path) if teacher_path else None, step, ttensors)
            if averaging:  # on the CPU .cpu() is no copy: keep the average's values once the trained ones are back
                payload["state"] = {k: v.clone() for k, v in payload["state"].items()}
        return payload

    def save_ckpt(step: int) -> None:
        if not main:
            return
        payload = payload_at(step, trained=True)
        payload["optimizer"] = opt.state_dict()
        if average is not None:
            payload["ema"] = average.state_dict()
        _refuse_nonfinite({"state": payload["state"], "optimizer": payload["optimizer"], "ema": payload.get("ema", {})}, step)
        payload["rng"] = _rng_state(sampler)
        save_torch(ckpt_path, payload)
        last_saved[0] = step
        _write_losses(out, rows)

    last_saved = [start if state is not None else None]

    def advice(diverged_at: int) -> str:
        """What was kept and the fix, for a loss that first went wrong at step ``diverged_at``."""
        from digan.student.config import TrainConfig

        lr = f"{min(cfg.train.lr / 10, TrainConfig().lr):g}"
        if last_saved[0] is None:
            return f"no checkpoint had been written yet; rerun with a lower learning rate (--set train.lr={lr})"
        if last_saved[0] >= diverged_at - 1:  # the saved weights are the ones that gave the bad loss
            return (f"the last good checkpoint {ckpt_path} (step {last_saved[0]}) was kept (finite), but its weights are the ones "
                    f"that diverged, so resuming cannot help: start over with a lower learning rate (--force --set train.lr={lr})")
        return (f"the last good checkpoint {ckpt_path} (step {last_saved[0]}) was kept (finite); lower the learning rate "
                f"(--set train.lr={lr}) and rerun the same command to resume")

    def _refuse_nonfinite(tensors: dict[str, Any], at: int) -> None:
        bad = nonfinite_tensors(tensors)
        if bad:
            raise NonFiniteLossError(
                f"training diverged: {len(bad)} weight or optimiser tensors are non-finite at step {at} (first: {bad[0]}); "
                f"nothing was saved; {advice(at + 1)}")

    total_steps = cfg.train.steps
    stop = total_steps if max_steps_this_run is None else min(total_steps, start + max_steps_this_run)
    t0 = time.time()
    last: dict[str, float] = {}
    step = start
    core.train()
    depth_net = getattr(core, "depth_net", None)
    frozen_depth = list(depth_net.parameters()) if depth_net is not None and cfg.train.depth_warmup > 0 else []
    # a stop (non-finite loss, Ctrl-C, kill) keeps the loss rows logged since the last checkpoint,
    # for diagnosis; a resume starts from the checkpoint and re-reads only the rows up to it
    with _on_stop(lambda: _write_losses(out, rows) if main else None), \
            (progress() if show_progress else _NullProgress()) as bar:
        task = bar.add_task("train", total=total_steps, completed=start, info="")
        while step < stop:
            z = torch.randn(cfg.train.batch, int(teacher.style_dim), generator=sampler).to(device)
            try:
                loss, logs = model(z)
                if torch.isfinite(loss):
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
            except RuntimeError as e:  # e.g. linalg.svd on non-finite values: an error caused by divergence
                if not (_mentions_nonfinite(e) or nonfinite_tensors(core.state_dict())):
                    raise
                raise NonFiniteLossError(
                    f"training diverged (non-finite values, then {type(e).__name__}) at step {step + 1}; {advice(step + 1)}") from None
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"non-finite loss ({float(loss.detach())}) at step {step + 1} (if a lower learning rate does not help, check "
                    f"the teacher); {advice(step + 1)}")
            if step < cfg.train.depth_warmup:
                for p in frozen_depth:  # no gradient -> Adam neither steps nor decays them
                    p.grad = None
            if cfg.train.lr_decay != "none":
                f = lr_factor(step, cfg.train)
                for g in opt.param_groups:
                    g["lr"] = cfg.train.lr * g.get("lr_scale", 1.0) * f
            opt.step()
            step += 1
            if average is not None:
                average.update(core, step)
            if step % cfg.train.log_every == 0 or step == stop:
                vals = {k: float(dist.reduce_mean(v)) for k, v in logs.items()}
                last = vals
                if main:
                    rows.append({"step": step, "seconds": round(time.time() - t0, 3), **{k: f"{v:.6g}" for k, v in vals.items()}})
                bar.update(task, completed=step, info=" ".join(f"{k}={v:.3g}" for k, v in vals.items() if k in ("total", "rec", "perturb")))
            else:
                bar.update(task, completed=step)
            if main and (step % cfg.train.grid_every == 0 or step == stop):
                core.eval()
                with averaged():
                    _save_grid(obj, preview_z, out / "grids" / f"step_{step:07d}.png")
                core.train()
            if shape_eval is not None and shape_eval.due(step, total_steps):
                with averaged():
                    row = shape_eval(step)
                if best is not None and best.better(row):
                    payload = payload_at(step)
                    _refuse_nonfinite({"state": payload["state"]}, step)
                    best.save(payload, row)
            if step % cfg.train.ckpt_every == 0 or step == stop:
                save_ckpt(step)
                dist.barrier()
    student_path = out / "student.pt"
    if main and step >= total_steps:
        final = payload_at(step)
        _refuse_nonfinite({"state": final["state"]}, step)
        save_torch(student_path, final)
    dist.barrier()
    return TrainResult(out, step, start, time.time() - t0, last, student_path, best.info if best is not None else None,
                       inverted_heads)


class WeightAverage:
    """Exponential moving average of a module's state (``train.ema``): after the update that
    brings the step count to ``step``, every floating-point entry of ``state_dict()``
    (parameters and float buffers) becomes ``decay * avg + (1 - decay) * value`` when ``step >
    start``, and is the value itself up to ``start`` (so averaging begins from the weights at
    ``start``, e.g. the end of the depth warm-up); other entries (integer counters) are copied.
    """

    def __init__(self, module: torch.nn.Module, decay: float, start: int = 0):
        if not 0.0 <= float(decay) < 1.0:
            raise DiganError(f"the weight average's decay must be in [0, 1) (got {decay})")
        self.decay, self.start = float(decay), int(start)
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        live = module.state_dict()
        mix = int(step) > self.start
        for k, v in live.items():
            s = self.shadow[k]
            if mix and s.is_floating_point():
                s.mul_(self.decay).add_(v.detach(), alpha=1.0 - self.decay)
            else:
                s.copy_(v)

    @contextlib.contextmanager
    def applied(self, module: torch.nn.Module):
        """Within the block ``module`` holds the average; its trained weights come back after."""
        kept = {k: v.detach().clone() for k, v in module.state_dict().items()}
        module.load_state_dict(self.shadow)
        try:
            yield module
        finally:
            module.load_state_dict(kept)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != set(self.shadow):
            raise DiganError("the checkpoint's weight average (ema) does not fit this model; start over with --force")
        for k, v in state.items():
            self.shadow[k].copy_(v)


def lr_factor(step: int, tc: Any) -> float:
    """The multiple of every learning rate at the update with 0-based index ``step`` under
    ``train.lr_decay`` (``tc`` = the train config): 1 for "none"; for "linear" 1 until the depth
    starts learning (``depth_warmup``), then ``1 - (step - depth_warmup) / (steps - depth_warmup)``
    (the last update, ``steps - 1``, at ``1 / (steps - depth_warmup)``; never below it)."""
    if tc.lr_decay == "none":
        return 1.0
    if tc.lr_decay != "linear":
        raise DiganError(f"unknown train.lr_decay {tc.lr_decay!r}; choose none or linear")
    start = int(tc.depth_warmup)
    span = max(1, int(tc.steps) - start)
    if step < start:
        return 1.0
    return max(1.0 / span, 1.0 - (step - start) / span)


class _BestKeeper:
    """``OUT/best.pt`` + ``best.json`` for ``train.keep_best`` (rank 0): the student at the
    evaluation with the lowest ``key`` after the depth warm-up. On resume the kept best counts
    only if it was made at or before the checkpoint's step (a later one belongs to the lost part
    of the run and is replaced by the first new evaluation)."""

    def __init__(self, out: Path, key: str, warmup: int, start: int):
        from digan.utils.io import read_json

        self.out, self.key, self.warmup = out, key, int(warmup)
        self.info: dict[str, Any] | None = None
        js = out / "best.json"
        if start > 0 and js.is_file() and (out / "best.pt").is_file():
            info = read_json(js)
            if info.get("key") == key and int(info.get("step", start + 1)) <= start:
                self.info = info

    def better(self, row: dict[str, Any]) -> bool:
        v = row.get(self.key)
        if int(row["step"]) <= self.warmup or v is None or not np.isfinite(float(v)):
            return False
        return self.info is None or float(v) < float(self.info["value"])

    def save(self, payload: dict[str, Any], row: dict[str, Any]) -> None:
        from digan.utils.io import write_json

        save_torch(self.out / "best.pt", payload)
        self.info = {"key": self.key, "value": float(row[self.key]), "step": int(row["step"]), "file": "best.pt",
                     "chosen_on": "train.eval_data (the heads the run was evaluated on during training)", "row": row}
        write_json(self.out / "best.json", self.info)


def _mentions_nonfinite(e: BaseException) -> bool:
    """Whether an error says it met NaN/Inf (e.g. ``linalg.svd ... non-finite values``)."""
    text = str(e).lower()
    return "non-finite" in text or "nan" in text.split() or " inf" in text or "infinity" in text


def _inverted_folder(cfg: StudentConfig, teacher: Any) -> tuple[Path, Any, list[int]]:
    """(folder, ImageFolderData, indices) of the images ``train.inverted_data`` names: the first
    ``train.inverted_n`` files (sorted names), then, with ``train.inverted_mirror``, the same
    files mirrored (:meth:`ImageFolderData.load`'s indices from ``len(data)`` on). A folder that
    is missing, empty or not at the teacher's size gives a one-line :class:`DiganError`."""
    from digan.teacher.data import ImageFolderData

    tc = cfg.train
    folder = Path(str(tc.inverted_data)).expanduser()
    n, steps = int(tc.inverted_n), int(tc.inverted_steps)
    if n < 1 or steps < 0 or not 0.0 <= float(tc.inverted_fraction) <= 1.0 or not float(tc.inverted_shift_lr) >= 0:
        raise DiganError(f"train.inverted_n must be >= 1, inverted_steps >= 0, inverted_fraction in [0, 1] and "
                         f"inverted_shift_lr >= 0 (got {n}, {steps}, {tc.inverted_fraction}, {tc.inverted_shift_lr})")
    if (folder / "images").is_dir():  # a digan-bench data set: its images/ subfolder
        folder = folder / "images"
    if not folder.is_dir():
        raise DiganError(f"train.inverted_data (calibrate-view --images): {folder} is not a folder of images; pass the "
                         "teacher's training images (e.g. data/synth64)")
    try:
        data = ImageFolderData(folder, size=None, mirror=bool(tc.inverted_mirror), cache_gb=0.0)
    except DiganError as e:  # its advice names train-teacher's options; say what this needs
        raise DiganError(f"train.inverted_data (calibrate-view --images): {str(e).split(';')[0]}; pass the teacher's "
                         "training images (e.g. data/synth64)") from None
    size = int(teacher.size) if hasattr(teacher, "size") else None
    if size is not None and data.size != size:
        raise DiganError(f"train.inverted_data (calibrate-view --images): the images in {folder} are {data.size}x{data.size} px "
                         f"but the teacher makes {size}x{size}; pass images at the teacher's size (its training images)")
    first = list(range(min(n, len(data))))
    return folder, data, first + ([len(data) + i for i in first] if tc.inverted_mirror else [])


def _read_cache(path: Path, what: str) -> dict[str, Any]:
    """The dict in a run folder's cache file, or {} when it is missing or unreadable (a damaged
    cache is derived data: it is made again, not an error)."""
    if not path.is_file():
        return {}
    try:
        c = load_torch(path, what=what)
    except DiganError:
        return {}
    return c if isinstance(c, dict) else {}


def inverted_code_bank(cfg: StudentConfig, teacher: Any, w_std: torch.Tensor, out: Path, device: torch.device | str,
                       show: bool = False) -> torch.Tensor:
    """(N,D) style codes of the first ``train.inverted_n`` images (sorted file names) of the folder
    ``train.inverted_data`` (then of the same images mirrored, with ``train.inverted_mirror``: N is
    twice the heads), each inverted into the teacher with ``train.inverted_steps`` steps
    (:func:`digan.student.method.invert_teacher`, as ``bench shape`` inverts). Cached in
    ``OUT/inverted_codes.pt`` with the folder, count, steps and the teacher's hash; a cache made
    with other settings is rebuilt. A folder that is missing, empty or not at the teacher's size
    gives a one-line :class:`DiganError`. ``show``: a progress bar."""
    from digan.student.method import invert_teacher

    tc = cfg.train
    folder, data, idx = _inverted_folder(cfg, teacher)
    steps = int(tc.inverted_steps)
    key = {"folder": str(folder.resolve()), "n": int(tc.inverted_n), "steps": steps, "teacher": teacher_tensor_hash(teacher)}
    if tc.inverted_mirror:  # keys of caches made before the option stay valid
        key["mirror"] = True
    shift_lr = float(tc.inverted_shift_lr)
    if shift_lr > 0:  # likewise
        key["shift_lr"] = shift_lr
    cache = out / "inverted_codes.pt"
    c = _read_cache(cache, "inverted code cache")
    if c.get("key") == key and isinstance(c.get("codes"), torch.Tensor):
        return c["codes"].to(device)
    codes = []
    with progress() if show else _NullProgress() as bar:
        task = bar.add_task("invert", total=len(idx), completed=0, info=f"{folder.name}, {steps} steps")
        for i in range(0, len(idx), 64):
            imgs = data.load(idx[i:i + 64]).to(device)
            codes.append(invert_teacher(teacher, imgs, w_std.to(device), steps, shift_lr=shift_lr).cpu())
            bar.update(task, completed=i + imgs.shape[0])
    bank = torch.cat(codes)
    out.mkdir(parents=True, exist_ok=True)
    save_torch(cache, {"key": key, "codes": bank})
    return bank.to(device)


def inverted_face_readings(cfg: StudentConfig, teacher: Any, out: Path) -> dict[str, Any]:
    """What an off-the-shelf face detector (``train.pose_detector``, an SCRFD ONNX file; None =
    the default detector) reads on the images behind :func:`inverted_code_bank`'s codes (the
    mirrors' rows read on the mirror images themselves), in one
    pass on the CPU: ``{"angles": (N,2), "kps": (N,5,2), "detector": "file:SHA256"}``.

    * ``angles``: head pose (pitch, yaw) in degrees from the 5 keypoints
      (:mod:`digan.faces.pose`), the targets of ``loss.pose_anchor`` / ``loss.pose_anchor_pitch``;
    * ``kps``: the 5 keypoints (eyes, nose tip, mouth corners; pixels), the targets of
      ``loss.landmark_parallax``;
    * ``detector``: the hash of the detector file that read them.

    NaN rows where no face was found. Cached in ``OUT/pose_anchors.pt`` with the folder, count
    and the detector file's hash (a cache without keypoints, or another key, is read again).
    Too few faces found is a one-line :class:`DiganError`."""
    from digan.faces.onnx_models import resolve_model
    from digan.faces.pipeline import FacePipeline

    folder, data, idx = _inverted_folder(cfg, teacher)
    det = resolve_model("detector", cfg.train.pose_detector, flag="--detector PATH (train.pose_detector)")
    key = {"folder": str(folder.resolve()), "n": len(idx), "detector": "file:" + sha256_file(det)}
    if cfg.train.inverted_mirror:
        key["mirror"] = True
    cache = out / "pose_anchors.pt"
    c = _read_cache(cache, "pose anchor cache")
    if c.get("key") == key and all(isinstance(c.get(k), torch.Tensor) for k in ("angles", "kps")):
        return {"angles": c["angles"], "kps": c["kps"], "detector": key["detector"]}
    pipe = FacePipeline(detector=str(det), recognizer=False, threads=cfg.train.threads)
    angles, kps = [], []
    for i in range(0, len(idx), 64):
        a = pipe.analyze(data.load(idx[i:i + 64]), embed=False, pose=True)
        angles.append(torch.from_numpy(np.stack([a.pitch, a.yaw], 1)).float())
        kps.append(torch.from_numpy(a.kps).float())
    angles, kps = torch.cat(angles), torch.cat(kps)
    found = int(torch.isfinite(angles[:, 1]).sum())
    if found < max(1, len(idx) // 2):
        raise DiganError(f"the face detector {det.name} found a face in only {found} of {len(idx)} images of {folder}; "
                         "loss.pose_anchor and loss.landmark_parallax need faces it can read (pass other images, or set "
                         "them to 0)")
    out.mkdir(parents=True, exist_ok=True)
    save_torch(cache, {"key": key, "angles": angles, "kps": kps, "found": found})
    return {"angles": angles, "kps": kps, "detector": key["detector"]}


@contextlib.contextmanager
def _on_stop(keep: Any) -> Iterator[None]:
    """Run ``keep()`` when the block stops with a non-finite loss or an interrupt, then re-raise."""
    try:
        yield
    except (NonFiniteLossError, KeyboardInterrupt):
        keep()
        raise


class _NullProgress:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def add_task(self, *a, **k):
        return 0

    def update(self, *a, **k):
        pass


def load_state_checked(module: torch.nn.Module, state: dict[str, Any], path: str | Path, what: str = "student checkpoint") -> None:
    """``module.load_state_dict(state)`` with one-line errors naming the first bad key as it is
    written in the file (``state.<key>``): missing, misshapen or unexpected."""
    own = module.state_dict()
    for k, v in own.items():
        if k not in state:
            raise DiganError(f"{what} {path} lacks 'state.{k}' (shape {tuple(v.shape)}); the file is incomplete or of "
                             "another model or preset")
        got = tuple(state[k].shape) if hasattr(state[k], "shape") else None
        if got != tuple(v.shape):
            raise DiganError(f"{what} {path}: 'state.{k}' has shape {got} but its config builds {tuple(v.shape)}; the file "
                             "is damaged or was edited")
    extra = [k for k in state if k not in own]
    if extra:
        raise DiganError(f"{what} {path} has 'state.{extra[0]}', which its config does not build; the file is of another "
                         "model or preset")
    module.load_state_dict(state)


def load_config_from_checkpoint(state: dict[str, Any], path: str | Path | None = None) -> StudentConfig:
    """The :class:`StudentConfig` stored in a checkpoint dict.

    Checkpoints written before ``model.depth_prior`` (``model.depth_smooth``) existed were trained
    without a prior (without the depth low-pass); they load with ``depth_prior="none"``
    (``depth_smooth=0``), not today's defaults, so their depth is what they learnt.
    A checkpoint without ``config`` or ``state`` (``path`` names it) is a one-line error.
    """
    where = f"student checkpoint {path}" if path is not None else "the student checkpoint"
    for key, what in (("config", "the settings it was trained with"), ("state", "its weights")):
        if not isinstance(state.get(key), dict):
            raise DiganError(f"{where} has no '{key}' ({what}), so the model cannot be rebuilt; pass the student.pt or "
                             "checkpoint.pt that 'digan-bench train' wrote")
    raw = dict(state["config"])
    model = dict(raw.get("model") or {})
    model.setdefault("depth_prior", "none")
    model.setdefault("depth_smooth", 0.0)  # likewise trained without the residual low-pass
    model.setdefault("light_diffuse_range", [0.0, 1.0])  # and with diffuse in [0, 1]
    raw["model"] = model
    return from_dict(StudentConfig, raw)


def package_student(run_dir: str | Path, dest: str | Path, command: str = "", notes: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Copy a finished run's ``student.pt`` to ``dest`` (weights + config only) and write
    ``dest`` with suffix ``.json``: provenance (config, steps, teacher hashes, command, training
    time, last losses, versions). Used for the bundled tiny student."""
    from digan.utils.io import read_json, write_json
    from digan.utils.provenance import git_revision, package_versions

    run = Path(run_dir)
    ck = load_torch(run / "student.pt", what="student checkpoint")
    dest = Path(dest)
    save_torch(dest, ck)
    rows = _read_losses(run / "losses.csv", int(ck["step"]))
    run_json = read_json(run / "run.json") if (run / "run.json").is_file() else {}
    prov = {
        "file": dest.name, "sha256": sha256_file(dest), "format": ck["format"], "model": ck["model"],
        "steps": ck["step"], "config": ck["config"], "teacher": ck["teacher"], "losses_used": ck.get("meta", {}),
        "training_seconds": float(rows[-1]["seconds"]) if rows else None,
        "last_losses": {k: float(v) for k, v in rows[-1].items() if k not in ("step", "seconds") and v not in ("", None)} if rows else {},
        "command": command, "git": git_revision(), "versions": package_versions(),
        "trained_on": run_json.get("device"), "notes": notes or {},
    }
    if "view_calibration" in ck:  # digan.student.calibrate: the config above is the student's own
        prov["view_calibration"] = ck["view_calibration"]
    js = dest.with_suffix(".json")
    write_json(js, prov)
    return dest, js
