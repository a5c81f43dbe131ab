"""View calibration: a trained student's view net DV adapted to the codes a teacher inversion
finds for real heads (``digan-bench calibrate-view``).

Why. DIGAN reconstructs a photo through a teacher inversion, and the codes that inversion finds
lie off the truncated samples G3D trains on (``bench shape``, "DV input spread inv./train":
1.47x). There DV reads only about 0.7x the yaw its own render fits ("render-fit yaw"), while on
sampled codes it reads what its render fits. Training on such codes from the start
(``train.inverted_data``) lets depth and view settle on a smaller turn and a deeper relief;
this stage instead holds everything but DV.

What. A new training run (resumable, logged like any other; see :func:`digan.student.train.train`)
that starts from the student's weights (``train.init_from``) with its own config, and then:

* ``train.trainable = [view_net]``: only DV learns; depth, texture, light, the transformation
  map and M keep the student's weights, so the canonical shape and texture are the student's
  and only the view of a reconstruction changes;
* ``train.inverted_data`` = a folder of real heads (the teacher's own training images; never
  the heads you evaluate on), inverted once as ``bench shape`` inverts them (60 steps, cached in
  the run folder), each with its left-right mirror (``train.inverted_mirror``, ``mirror``: a
  reconstruction inverts both), making up ``fraction`` of every batch; the rest are the
  teacher's samples as in training, so DV keeps reading those;
* the loss is the reconstruction with its flip term (the render at DV's view against the
  teacher's image of the code), DIGAN's ``loss.rec`` and ``loss.flip``; the perturbation,
  cycle, identity, w, albedo, canonical and landmark-parallax terms are off (they train M, the
  depth or the albedo, which are held here, or DV on perturbed codes, which a reconstruction
  never reads);
* plus a landmark pose anchor (``loss.pose_anchor`` / ``loss.pose_anchor_pitch``, weight 10
  each; 0 turns it off): on the inverted heads, DV's yaw and pitch are pulled toward the pose
  an off-the-shelf face detector's 5 keypoints give for the image itself
  (:mod:`digan.faces.pose`; the detector is ``train.pose_detector``, ``--detector``; its
  readings are cached in the run folder). Why: the reconstruction fixes the turn only through
  the student's own depth, which trades turn for relief (DV read 0.84-0.88x the true yaw on
  held-out heads without it), and nothing in DIGAN's objective anchors pitch (DV's pitch
  spread 0.5 deg against the heads' 6.7). The keypoints measure both on the image,
  independently of the student (on the teacher's training heads: yaw corr 0.98, slope 1.11;
  pitch corr 0.72). A face the detector misses is left out of the term.

The calibrated ``student.pt`` keeps the student's own config (model and training objective) and
records the calibration under ``view_calibration``; its ``step`` counts the calibration's steps.
Not in DIGAN or LiftedGAN (docs/shape-history.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from digan.config import apply_overrides
from digan.errors import DiganError
from digan.student.config import StudentConfig

__all__ = ["CALIBRATION_OVERRIDES", "CalibrationSettings", "calibration_config", "calibrate_view"]

#: what a calibration run changes in the student's own config (see the module docstring)
CALIBRATION_OVERRIDES: list[str] = [
    "train.trainable=[view_net]",
    "loss.perturb=0", "loss.cycle=0", "loss.identity=0", "loss.w_reg=0", "loss.albedo=0",
    "loss.canonical_symmetry=0", "loss.canonical_cycle=0", "loss.cycle_image=0", "loss.landmark_parallax=0",
    "loss.landmark_parallax_shared=0",
    "train.depth_warmup=0", "train.ema=0", "train.ema_start=null", "train.lr_decay=none",
    "train.keep_best=null", "train.code_noise=0",
]


@dataclass
class CalibrationSettings:
    """The calibration's own schedule (measured on the tuning heads, docs/shape-history.md)."""

    # 1,200 since the sixteenth session's bundle (600 before): on the tuning heads DV's yaw
    # correlation 0.974 against 0.969
    steps: int = 1200
    lr: float = 3e-4
    fraction: float = 0.5  # share of every batch drawn from the inverted heads
    # heads inverted (the first n files of the folder): all 2,000 of the bundled teacher's training
    # set; with the pose anchor more heads gave DV a better reading (512: docs/shape-history.md)
    n: int = 2000
    inversion_steps: int = 60  # as bench shape inverts
    seed: int = 0
    pose_anchor: float = 10.0  # loss.pose_anchor: DV's yaw toward the detector's (0 = off)
    pose_anchor_pitch: float = 10.0  # loss.pose_anchor_pitch: the same for pitch
    detector: Optional[str] = None  # train.pose_detector: SCRFD .onnx; None = the default detector
    # train.inverted_mirror: also invert each head's mirror (2 x n codes and detector readings).
    # Why: a reconstruction reads the code of the photo and that of its mirror (model.flip_average);
    # on 200 tuning heads, two calibration seeds, DV's yaw correlation 0.9736 -> 0.9763 and
    # 0.9702 -> 0.9739, pitch 0.82 -> 0.85 / 0.82 (docs/shape-history.md). Off = the fourteenth to
    # sixteenth sessions' calibration
    mirror: bool = True


def _read_student(student: str | Path) -> tuple[Path, dict[str, Any]]:
    """(path, checkpoint dict) of the student to calibrate; a missing or foreign file is a one-line error."""
    from digan.student.train import read_student_checkpoint

    path = Path(student)
    if not path.is_file():
        raise DiganError(f"student checkpoint {path} not found; pass the student.pt to calibrate (e.g. digan/assets/tiny_student_64.pt)")
    return path, read_student_checkpoint(path)


def calibration_config(student: str | Path, images: str | Path, settings: CalibrationSettings | None = None,
                       overrides: list[str] | None = None) -> StudentConfig:
    """The config of a calibration run of ``student`` on the heads in ``images``: the student's
    own config with :data:`CALIBRATION_OVERRIDES`, ``settings`` and ``overrides`` (last)."""
    return _calibration_config(*_read_student(student), images, settings, overrides)


def _calibration_config(path: Path, ck: dict[str, Any], images: str | Path, settings: CalibrationSettings | None,
                        overrides: list[str] | None) -> StudentConfig:
    """:func:`calibration_config` of an already read checkpoint ``ck`` (from ``path``)."""
    from digan.student.train import load_config_from_checkpoint

    s = settings or CalibrationSettings()
    cfg = load_config_from_checkpoint(ck, path)
    if getattr(cfg.model, "name", "digan") not in ("digan", "liftgan"):
        raise DiganError(f"calibrate-view handles G3D students (digan, liftgan), not '{cfg.model.name}'")
    if (s.steps < 1 or s.n < 1 or s.inversion_steps < 0 or not 0.0 < s.fraction <= 1.0 or not s.lr > 0
            or not s.pose_anchor >= 0 or not s.pose_anchor_pitch >= 0):
        raise DiganError(f"calibration settings out of range (steps {s.steps}, n {s.n}, inversion steps {s.inversion_steps}, "
                         f"fraction {s.fraction}, lr {s.lr}, pose anchor {s.pose_anchor} / {s.pose_anchor_pitch}): steps, "
                         "n >= 1, inversion steps >= 0, fraction in (0, 1], lr > 0, pose anchors >= 0")
    cfg = apply_overrides(cfg, CALIBRATION_OVERRIDES + [
        f"loss.pose_anchor={s.pose_anchor}", f"loss.pose_anchor_pitch={s.pose_anchor_pitch}",
        f"train.steps={s.steps}", f"train.lr={s.lr}", f"train.inverted_fraction={s.fraction}",
        f"train.inverted_n={s.n}", f"train.inverted_steps={s.inversion_steps}", f"train.seed={s.seed}",
        f"train.inverted_mirror={str(bool(s.mirror)).lower()}",
        f"train.ckpt_every={min(int(cfg.train.ckpt_every), s.steps)}", f"train.grid_every={min(int(cfg.train.grid_every), s.steps)}",
    ] + list(overrides or []))
    # paths are set directly: a path is not a YAML scalar
    cfg.train.init_from = str(path)
    cfg.train.inverted_data = str(images)
    if s.detector is not None:
        cfg.train.pose_detector = str(s.detector)
    cfg.train.eval_data = None  # the student's own tuning heads may not exist here: calibrate_view(eval_data=...)
    return cfg


def calibrate_view(student: str | Path, images: str | Path, out: str | Path, *, teacher: Any = None,
                   settings: CalibrationSettings | None = None, overrides: list[str] | None = None,
                   eval_data: str | Path | None = None, force: bool = False, show_progress: bool = True) -> Any:
    """Calibrate ``student``'s DV on the heads in ``images`` (module docstring); writes a run
    folder ``out`` whose ``student.pt`` is the calibrated student. ``teacher``: a checkpoint path or
    a loaded teacher; default, the one the student records. ``eval_data``: tuning heads to log
    SIDE/MAD on during the run. Returns :class:`digan.student.train.TrainResult`; rerunning the
    same call resumes."""
    from digan.student.inference import resolve_teacher_path
    from digan.student.train import train
    from digan.utils import dist

    path, base = _read_student(student)
    cfg = _calibration_config(path, base, images, settings, overrides)
    if eval_data is not None:
        cfg.train.eval_data = str(eval_data)
    if teacher is not None and not isinstance(teacher, (str, Path)):  # a loaded teacher object
        res = train(cfg, out, teacher=teacher, force=force, show_progress=show_progress)
    else:
        res = train(cfg, out, teacher_path=resolve_teacher_path(base, path, teacher), force=force, show_progress=show_progress)
    if dist.is_main() and res.student_path.is_file():  # one writer under torchrun
        _record_calibration(res.student_path, base, path, cfg)
    dist.barrier()
    return res


def _record_calibration(path: Path, base: dict[str, Any], base_path: Path, cfg: StudentConfig) -> None:
    """The calibrated ``student.pt`` carries the student's own config (the model and the objective
    it was trained with: what ``Student.load``, ``bench objective-fit`` and a later fine-tuning
    read; model settings the calibration was given override the student's), and the calibration
    beside it under ``view_calibration`` (the run's train and loss
    settings and the sha256 of the student it started from). The run folder's ``config.json`` and
    ``checkpoint.pt`` keep the calibration's config, so the run resumes as any other."""
    import copy

    from digan.config import to_dict
    from digan.student.train import load_config_from_checkpoint
    from digan.utils.io import load_torch, save_torch, sha256_file

    ck = load_torch(path, what="calibrated student")
    run_cfg = to_dict(cfg)
    ck["config"] = copy.deepcopy(base["config"])
    # model settings the calibration was given (--set model.X=...: e.g. an inference option) are
    # the calibrated student's: without them it would be evaluated as another model than it was
    # calibrated as
    own = to_dict(load_config_from_checkpoint(base, base_path))["model"]
    changed = {k: v for k, v in run_cfg["model"].items() if own.get(k) != v}
    if changed:
        ck["config"].setdefault("model", {}).update(changed)
    ck["view_calibration"] = {"from": {"path": str(base_path), "sha256": "file:" + sha256_file(base_path), "steps": base.get("step")},
                              "train": run_cfg["train"], "loss": run_cfg["loss"], "steps": ck.get("step")}
    save_torch(path, ck)
