"""Student commands: ``digan-bench train``, ``digan-bench export``, ``digan-bench bench student``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from digan.cli import app
from digan.cli.common import ConfigOption, SetOption, echo_kv, resolve_device_option, write_command_info
from digan.cli.groups import bench_app
from digan.student.calibrate import CalibrationSettings

_CAL = CalibrationSettings()  # the calibration's defaults, owned by digan.student.calibrate

#: options that mean the same in several commands here (train, bench shape, objective-fit, recover)
_StudentOption = typer.Option(..., "--student", help="Student checkpoint (student.pt), e.g. digan/assets/tiny_student_64.pt.")
_SynthOption = typer.Option(..., "--data", "-d", help="Synthetic ground-truth set (digan-bench data synth) at the student's size.")
_TeacherOption = typer.Option(None, "--teacher", "-t", help="Teacher checkpoint (default: the one the student records).")
_InversionOption = typer.Option(60, "--inversion-steps", min=1, help="Teacher inversion steps per batch.")
_ThreadsOption = typer.Option(None, "--threads", min=1, help="CPU threads (torch.set_num_threads).")


@app.command("train")
def train_cmd(
    teacher: str = typer.Option(..., "--teacher", "-t", help="Teacher StyleGAN2 checkpoint (or 'tiny' for the bundled 64 px teacher)."),
    out: Path = typer.Option(Path("runs/student"), "--out", "-o", help="Output folder (resumed when it holds a checkpoint)."),
    preset: str = typer.Option("paper", "--preset", help="paper (defaults, 30,000 steps) or tiny (narrow 64 px student for CPU)."),
    variant: str = typer.Option("full", "--variant", help="Ablation: full, no_flip, no_identity, no_albedo, mlp, plain_conv."),
    model: Optional[str] = typer.Option(None, "--model", help="Model to train: digan (default), liftgan, hologan (see digan.student.registry)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Total training steps (default from the preset)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto (CUDA when present, else CPU; the default), cpu, cuda or cuda:N."),
    threads: Optional[int] = _ThreadsOption,
    force: bool = typer.Option(False, "--force", help="Ignore an existing checkpoint in --out and start over."),
    eval_data: Optional[Path] = typer.Option(None, "--eval-data", help="Held-out synthetic heads (digan-bench data synth, teacher's size): SIDE/MAD/roughness logged to OUT/shape_eval.jsonl every train.eval_every steps (train.eval_*); --set train.keep_best=mad also keeps OUT/best.pt."),
    config: Optional[Path] = ConfigOption,
    overrides: Optional[list[str]] = SetOption,
) -> None:
    """Train the DIGAN student (G3D) by distilling a StyleGAN2 teacher; resumable; DDP under torchrun."""
    import warnings

    from digan.student.config import StudentConfig, make_config
    from digan.student.train import train
    from digan.utils import dist
    from digan.utils.progress import console

    extra = _run_overrides(overrides, device, threads)
    if steps is not None:
        extra.append(f"train.steps={steps}")
    if config is not None:
        from digan.config import load_config

        base = load_config(StudentConfig, config)
        cfg = make_config(preset, variant, extra, base=base, model=model)
    else:
        cfg = make_config(preset, variant, extra, model=model)
    if eval_data is not None:  # set directly: a path is not a YAML scalar
        cfg.train.eval_data = str(eval_data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = train(cfg, out, teacher_path=teacher, force=force)
    if dist.is_main():
        for w in caught:
            if issubclass(w.category, UserWarning):
                console.print(f"[yellow]warning:[/] {w.message}")
        echo_kv("training", {
            "model": f"{cfg.model.name}@{cfg.variant}", "preset": cfg.preset, **_run_summary(res),
            **({"best": f"{res.out_dir / 'best.pt'} (step {res.best['step']}, {res.best['key']} {res.best['value']:.4g})"}
               if res.best else {}),
        })
    dist.cleanup()


@app.command("calibrate-view")
def calibrate_view_cmd(
    student: Path = _StudentOption,
    images: Path = typer.Option(..., "--images", "-i", help="Real heads to adapt DV to: the teacher's own training images (a folder, or a data set with images/); never the heads you evaluate on."),
    out: Path = typer.Option(Path("runs/calibrated"), "--out", "-o", help="Run folder (resumed when it holds a checkpoint); OUT/student.pt is the calibrated student."),
    teacher: Optional[str] = _TeacherOption,
    steps: int = typer.Option(_CAL.steps, "--steps", min=1, help="Calibration steps (only DV learns)."),
    lr: float = typer.Option(_CAL.lr, "--lr", min=0.0, help="Learning rate of DV."),
    fraction: float = typer.Option(_CAL.fraction, "--fraction", min=0.0, max=1.0, help="Share of each batch from the inverted heads (the rest: teacher samples)."),
    n: int = typer.Option(_CAL.n, "--heads", min=1, help="Heads inverted (the first N files). (Not --n: torchrun would take that for its own options.)"),
    inversion_steps: int = typer.Option(_CAL.inversion_steps, "--inversion-steps", min=0, help="Teacher inversion steps per head (bench shape: 60)."),
    mirror: bool = typer.Option(_CAL.mirror, "--mirror-heads/--no-mirror-heads", help="Also invert each head's left-right mirror (twice the codes; a reconstruction reads both)."),
    seed: int = typer.Option(_CAL.seed, "--seed", help="Seed of the batches."),
    pose_anchor: float = typer.Option(_CAL.pose_anchor, "--pose-anchor", min=0.0, help="Weight pulling DV's yaw toward the face detector's landmark yaw of each inverted head (0 = off)."),
    pose_anchor_pitch: float = typer.Option(_CAL.pose_anchor_pitch, "--pose-anchor-pitch", min=0.0, help="The same for pitch (0 = off)."),
    detector: Optional[Path] = typer.Option(None, "--detector", help="SCRFD face detector (.onnx) for the pose anchor; default: insightface's det_10g.onnx."),
    eval_data: Optional[Path] = typer.Option(None, "--eval-data", help="Tuning heads (digan-bench data synth) to log SIDE/MAD and DV's yaw on during the run."),
    device: Optional[str] = typer.Option(None, "--device", help="auto (CUDA when present, else CPU; the default), cpu, cuda or cuda:N."),
    threads: Optional[int] = _ThreadsOption,
    force: bool = typer.Option(False, "--force", help="Ignore an existing checkpoint in --out and start over."),
    overrides: Optional[list[str]] = SetOption,
) -> None:
    """Adapt a trained student's view net DV to inverted real heads (all else held); resumable."""
    from digan.student.calibrate import calibrate_view
    from digan.utils import dist

    settings = CalibrationSettings(steps=steps, lr=lr, fraction=fraction, n=n, inversion_steps=inversion_steps, seed=seed,
                                   pose_anchor=pose_anchor, pose_anchor_pitch=pose_anchor_pitch, mirror=mirror,
                                   detector=str(detector) if detector is not None else None)
    res = calibrate_view(student, images, out, teacher=teacher, settings=settings, overrides=_run_overrides(overrides, device, threads),
                         eval_data=eval_data, force=force)
    if dist.is_main():
        echo_kv("view calibration", {"from": str(student), **_run_summary(res)})
    dist.cleanup()


def _run_overrides(overrides: Optional[list[str]], device: Optional[str], threads: Optional[int]) -> list[str]:
    """``--set`` items plus the ``--device`` and ``--threads`` options as train.* overrides."""
    extra = list(overrides or [])
    if device is not None:
        extra.append(f"train.device={resolve_device_option(device)}")
    if threads is not None:
        extra.append(f"train.threads={threads}")
    return extra


def _run_summary(res) -> dict[str, str]:
    """The summary lines of a finished (or stopped) student run: steps, time, last losses, the
    latest 3D evaluation, the output folder and the student file."""
    return {"steps": f"{res.steps} (resumed from {res.resumed_from})" if res.resumed_from else f"step {res.steps}",
            "time": f"{res.seconds:.0f} s", **{f"loss {k}": f"{v:.4g}" for k, v in res.last_losses.items()},
            **_inverted_heads_line(res.inverted_heads),
            **_last_shape_eval(res.out_dir),
            "output": str(res.out_dir), "student": str(res.student_path) if res.student_path.is_file() else "(not finished)"}


def _inverted_heads_line(heads: Optional[dict[str, int]]) -> dict[str, str]:
    """The summary's line for the inverted heads a run used (none without inverted data)."""
    if not heads:
        return {}
    used, asked = heads["used"], heads["asked"]
    line = str(used) if used >= asked else f"{used} (the folder holds {used}; {asked} asked)"
    return {"inverted heads": line + (" and their mirrors" if heads.get("mirrored") else "")}


def _last_shape_eval(run_dir: Path) -> dict[str, str]:
    """The training summary's lines for the latest row of ``shape_eval.jsonl`` (none without it)."""
    from digan.student.diagnostics import read_shape_eval

    rows = read_shape_eval(run_dir)
    if not rows:
        return {}
    r = rows[-1]

    def f(v, fmt):
        return "n/a" if v is None else format(v, fmt)

    return {f"3D at step {r['step']}": f"SIDE/MAD {f(r['side'], '.2e')}/{f(r['mad'], '.1f')} deg, roughness {f(r['roughness_ratio'], '.2f')}x GT",
            "3D references": f"prior {f(r['prior_side'], '.2e')}/{f(r['prior_mad'], '.1f')} deg, plane {f(r['flat_side'], '.2e')}/{f(r['flat_mad'], '.1f')} deg",
            "3D prior at DV pose": f"{f(r.get('posed_prior_side'), '.2e')}/{f(r.get('posed_prior_mad'), '.1f')} deg",
            "3D one head": f"MAD {f(r.get('one_head_mad'), '.1f')} deg (the mean code's depth for all)",
            "3D best one head": f"MAD {f(r.get('mean_true_head_mad'), '.1f')} deg (ground truth: other heads' mean)",
            "3D nose": f"{f(r.get('nose_ratio'), '.2f')}x the truth's protrusion",
            "3D log": str(Path(run_dir) / "shape_eval.csv")}


@app.command("export")
def export_cmd(
    student: Path = typer.Option(..., "--student", help="Student checkpoint (student.pt or checkpoint.pt).", dir_okay=False),
    out: Path = typer.Option(Path("meshes"), "--out", "-o", help="Output folder."),
    n: int = typer.Option(4, "--n", min=1, help="Number of faces."),
    seed: int = typer.Option(0, "--seed", help="Latent seed (face i uses seed and index i)."),
    formats: str = typer.Option("obj,ply,glb", "--formats", help="Comma-separated: obj (with mtl + png texture), ply, glb."),
    psi: Optional[float] = typer.Option(None, "--psi", help="Truncation (default: the training truncation)."),
    teacher: Optional[str] = typer.Option(None, "--teacher", "-t", help="Teacher checkpoint (default: the one recorded in the student)."),
    no_crop: bool = typer.Option(False, "--no-crop", help="Keep the flat background instead of cropping to the face."),
    scale: float = typer.Option(1.0, "--scale", help="Multiply the coordinates (renderer units; the face is ~0.17 wide)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out."),
) -> None:
    """Export textured meshes (OBJ+MTL+PNG, PLY, GLB) of student faces; OUT/config.json and OUT/run.json say how."""
    from digan.student.export import export_student_meshes
    from digan.student.inference import Student

    fmts = [f.strip().lower() for f in formats.split(",") if f.strip()]
    s = Student.load(student, teacher_path=teacher, device=resolve_device_option(device))

    def finish(tmp: Path) -> None:  # the provenance goes into the staging folder: swapped in with the meshes
        write_command_info(tmp, "export", {"student": str(student), "teacher": teacher, "n": n, "seed": seed, "formats": fmts,
                                           "psi": psi, "crop": not no_crop, "scale": scale, "device": str(s.device)},
                           seeds={"latents": seed}, weights={"student": str(student)})

    paths = export_student_meshes(s, out, n=n, seed=seed, psi=psi, formats=fmts, crop=not no_crop, scale=scale, force=force,
                                  finish=finish)
    echo_kv("export", {"faces": n, "formats": ", ".join(fmts), "files": len(paths), "output": str(out)})


@bench_app.command("student")
def bench_student_cmd(
    presets: str = typer.Option("tiny,paper", "--presets", help="Student presets to time (comma-separated)."),
    sizes: str = typer.Option("64", "--sizes", help="Image sizes (the teacher's), e.g. 64 or 64,256."),
    device: str = typer.Option("all", "--device", help="cpu, cuda or all (both; cuda skipped when absent)."),
    batch: int = typer.Option(8, "--batch-size", "--batch", min=1, help="Batch per step."),
    repeats: int = typer.Option(5, "--repeats", min=1, help="Timed steps (median reported)."),
    teacher: Optional[str] = typer.Option(None, "--teacher", "-t", help="Teacher checkpoint (default: bundled tiny, else random)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the figures as JSON here.", dir_okay=False),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads (default: torch's; 1 is faster on a busy machine)."),
    overrides: Optional[list[str]] = SetOption,
) -> None:
    """ms per training step, peak memory and faces rendered per second of the student."""
    from digan.cli.common import print_table
    from digan.errors import DiganError
    from digan.student.bench import StudentBenchConfig, run_student_bench
    from digan.utils.io import write_json
    from digan.utils.progress import console
    from digan.utils.provenance import run_info

    if device not in ("all", "cpu", "cuda"):
        raise DiganError(f"bad --device {device!r}; choose cpu, cuda or all")
    try:
        size_list = [int(s) for s in sizes.split(",") if s.strip()]
    except ValueError as e:
        raise DiganError(f"bad --sizes {sizes!r}; write e.g. 64,256") from e
    cfg = StudentBenchConfig(
        presets=[p.strip() for p in presets.split(",") if p.strip()], sizes=size_list,
        devices=["cpu", "cuda"] if device == "all" else [device], batch=batch, repeats=repeats, teacher=teacher,
        overrides=list(overrides or []), threads=threads,
    )
    results = run_student_bench(cfg, on_result=lambda r: console.print(
        f"{r['device']} {r['preset']} {r['size']}px: {r['ms_per_step']:.0f} ms/step, peak {r['peak_mem_mb']:.0f} MB, "
        f"{r['faces_per_s']:.1f} faces/s", soft_wrap=True))
    print_table("student: training step, peak memory, inference",
                ["device", "preset", "size", "batch", "params", "ms/step", "peak MB", "faces/s"],
                [[r["device_name"], r["preset"], str(r["size"]), str(r["batch"]), f"{r['params']:,}", f"{r['ms_per_step']:.0f}",
                  f"{r['peak_mem_mb']:.0f}", f"{r['faces_per_s']:.1f}"] for r in results])
    for t in sorted({r["teacher"] for r in results}):
        console.print(f"teacher: {t}", soft_wrap=True, markup=False)
    if device == "all" and not any(r["device"] == "cuda" for r in results):
        console.print("no CUDA device here: GPU figures skipped")
    if out is not None:
        write_json(out, {"benchmark": "student", "results": results, "provenance": run_info("bench", config=cfg)})
        console.print(f"wrote {out}")


def _load_student_any(path: Path, teacher: Optional[str]):
    """A DIGAN or native LiftGAN student checkpoint (``bench shape`` compares both)."""
    from digan.student.inference import Student
    from digan.utils.io import load_torch

    ck = load_torch(path, what="student checkpoint")
    if isinstance(ck, dict) and ck.get("model") == "liftgan":
        from baselines.liftgan import load_liftgan

        return load_liftgan(path, teacher_path=teacher, device="cpu")
    return Student.load(path, teacher_path=teacher, device="cpu")


@bench_app.command("shape")
def bench_shape_cmd(
    student: Path = _StudentOption,
    data: Path = _SynthOption,
    teacher: Optional[str] = _TeacherOption,
    n_faces: int = typer.Option(24, "--n-faces", "-n", min=3, help="Synthetic faces to invert and score."),
    inversion_steps: int = _InversionOption,
    relight_faces: int = typer.Option(16, "--relight-faces", min=0, help="Identities for the teacher relighting check (0 = skip it)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the report as JSON here.", dir_okay=False),
    figure: Optional[Path] = typer.Option(None, "--figure", help="Also draw the first --figure-faces heads from the side at -60/+60 deg, the true head beside the student's shape (PNG; a .pdf beside it).", dir_okay=False),
    figure_faces: int = typer.Option(6, "--figure-faces", min=3, help="Heads in --figure."),
    single_inversion: bool = typer.Option(False, "--single-inversion", help="Invert each image only, not also its mirror (the paper's inference; default: the student's model.flip_average)."),
    prior_smooth: Optional[float] = typer.Option(None, "--prior-smooth", min=0.0, help="Low-pass of the convex depth prior at inference, px at 64 px (default: the student's model.inference_prior_smooth; 0 = the sharp prior it was trained on)."),
    detector: Optional[str] = typer.Option(None, "--detector", help="SCRFD face detector (.onnx, or a file name in the model folders): also read the landmark yaw of each photo and of the teacher's image of its code, and which of the two DV's yaw error follows."),
    shift_lr: Optional[float] = typer.Option(None, "--inversion-shift-lr", min=0.0, help="Also fit a translation of the teacher's image per photo at this Adam learning rate, px per step (default: the student's model.inversion_shift_lr; 0 = none)."),
    threads: Optional[int] = _ThreadsOption,
) -> None:
    """Why a student does or does not recover 3D: pose vs true yaw, neutral code, light, how far
    M really turns a face, relief, inversion PSNR per face (blame inversion or depth), SIDE/MAD
    next to a flat plane, the depth prior (frontal and at DV's pose) and the inverted relief, all
    on the student's pixels, the inner face beside the posed prior, roughness beside the truth's,
    the estimate at the true rotation (blame the pose or the depth), and whether the teacher's
    images carry the face's form in their shading at all (relit pairs, blame the teacher)."""
    import torch

    from digan.student.diagnostics import shape_diagnostics, shape_report_lines
    from digan.utils.io import write_json
    from digan.utils.progress import console

    if figure is not None and figure.suffix.lower() != ".png":
        from digan.errors import DiganError

        raise DiganError(f"--figure {figure}: give a .png path (a .pdf is written beside it)")
    if threads:
        torch.set_num_threads(threads)
    det = None
    if detector is not None:  # a missing file fails here, before the inversions
        from digan.faces.onnx_models import resolve_model

        det = resolve_model("detector", detector)
    st = _load_student_any(student, teacher)
    if prior_smooth is not None:
        st.g3d.use_inference_prior(True, prior_smooth)
    if shift_lr is not None:
        st.cfg.model.inversion_shift_lr = float(shift_lr)
    flip = False if single_inversion else None
    rep = shape_diagnostics(st, data, n_faces=n_faces, inversion_steps=inversion_steps, relight_faces=relight_faces, flip_average=flip,
                            detector=det)
    for line in shape_report_lines(rep):
        console.print(line, highlight=False)
    if out:
        write_json(out, rep)
        console.print(f"wrote {out}")
    if figure:
        from digan.student.diagnostics import profile_views
        from reports.figures import profile_figure, save_figure

        prof = profile_views(st, data, n_faces=figure_faces, inversion_steps=inversion_steps, flip_average=flip)
        paths = save_figure(profile_figure(prof, label=Path(student).stem), figure.parent, figure.stem)
        console.print(f"wrote {paths[0]}", highlight=False)


@bench_app.command("objective-fit")
def bench_objective_fit_cmd(
    student: Path = _StudentOption,
    data: Path = _SynthOption,
    teacher: Optional[str] = _TeacherOption,
    n_faces: int = typer.Option(16, "--n-faces", "-n", min=3, help="Heads to invert and fit."),
    steps: int = typer.Option(100, "--steps", min=1, help="Adam steps on the per-face depth residuals."),
    lr: float = typer.Option(0.01, "--lr", help="Adam learning rate."),
    inversion_steps: int = _InversionOption,
    targets: str = typer.Option("teacher", "--targets", help="teacher: the teacher's images of the inverted codes (what training sees); exact: the heads themselves."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the curve as JSON here.", dir_okay=False),
    threads: Optional[int] = _ThreadsOption,
    overrides: Optional[list[str]] = SetOption,
) -> None:
    """Does the student's own objective point at each face's true shape? Its nets held, one free
    depth residual per held-out head is fitted to the training objective (--set loss.X=...
    changes a term); SIDE/MAD/detail as the loss falls. Worse scores = the objective's optimum
    lies away from the truth."""
    import torch

    from digan.cli.common import print_table
    from digan.errors import DiganError
    from digan.student.recoverability import objective_fit, objective_fit_report
    from digan.utils.io import write_json
    from digan.utils.progress import console

    if targets not in ("teacher", "exact"):
        raise DiganError(f"--targets {targets}: choose teacher or exact")
    if threads:
        torch.set_num_threads(threads)
    st = _load_student_any(student, teacher)
    if not hasattr(st, "g3d") or getattr(st.cfg.model, "name", "digan") != "digan":
        raise DiganError(f"{student} is not a DIGAN student; bench objective-fit fits DIGAN's objective")
    res = objective_fit(st, data, n_faces=n_faces, steps=steps, lr=lr, inversion_steps=inversion_steps,
                        overrides=list(overrides or []), targets=targets,
                        log=lambda step, row: console.print(f"step {step}: MAD {row['mad']:.1f} deg, detail {row['detail_corr']:+.2f}", highlight=False))
    print_table(f"objective fit, {targets} targets", ["step", "loss", "SIDE e-2", "MAD", "face", "detail", "size", "rough", "nose"],
                objective_fit_report(res))
    for name, label in (("flat_plane", "flat plane"), ("prior_posed", "prior at DV's pose")):
        r = res["references"][name]
        console.print(f"{label + ' (step 0 pixels)':<36} SIDE {r['side'] * 100:.3f}e-2, MAD {r['mad']:.1f} deg", highlight=False)
    if out:
        write_json(out, res)
        console.print(f"wrote {out}")


@bench_app.command("recover")
def bench_recover_cmd(
    data: Path = typer.Option(..., "--data", "-d", help="Synthetic set (digan-bench data synth); its identities are re-rendered exactly."),
    preset: str = typer.Option("tiny", "--preset", help="Student preset whose depth prior, smoothing, renderer and losses are used."),
    n_identities: int = typer.Option(8, "--n-faces", "-n", min=1, help="Identities to fit."),
    steps: int = typer.Option(300, "--steps", min=1, help="Gradient steps per setting."),
    lr: float = typer.Option(0.01, "--lr", help="Adam learning rate."),
    yaws: str = typer.Option("-30,-15,0,15,30", "--yaws", help="Views per identity (degrees)."),
    settings: str = typer.Option(",".join(["true_pose_true_albedo", "true_pose_free_albedo", "true_pose_free_albedo_flip", "pred_pose_free_albedo_flip"]),
                                 "--settings", help="Comma-separated fits (pose true|pred, albedo true|free, flip)."),
    through_teacher: int = typer.Option(0, "--through-teacher", min=0, help="Fit to the teacher's reproductions of the views (each inverted with this many steps) instead of the exact renders; 0 = exact."),
    teacher: str = typer.Option("tiny", "--teacher", "-t", help="Teacher for --through-teacher ('tiny' = the bundled one)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the curves as JSON here.", dir_okay=False),
    threads: Optional[int] = _ThreadsOption,
    overrides: Optional[list[str]] = SetOption,
) -> None:
    """Can the depth, renderer and losses DIGAN trains with recover a head at all? Fit depth (and
    albedo/pose/light) to exact synthetic renders without the teacher; SIDE/MAD/roughness vs steps."""
    import torch

    from digan.cli.common import parse_float_list, print_table
    from digan.student.config import make_config
    from digan.student.recoverability import RecoverConfig, recover_report, recover_shape
    from digan.utils.io import write_json
    from digan.utils.progress import console

    if threads:
        torch.set_num_threads(threads)
    scfg = make_config(preset, overrides=list(overrides or []))
    rc = RecoverConfig(n_identities=n_identities, steps=steps, lr=lr, yaws=tuple(parse_float_list(yaws, "--yaws", angle=True)),
                       eval_every=max(1, steps // 6), settings=tuple(s.strip() for s in settings.split(",") if s.strip()),
                       through_teacher=through_teacher)
    tobj = None
    if through_teacher > 0:
        from digan.student.train import load_teacher
        from digan.teacher.api import bundled_teacher_path

        tobj = load_teacher(bundled_teacher_path() if teacher == "tiny" else teacher)
    res = recover_shape(data, scfg, rc, log=lambda name, step, row: console.print(
        f"{name} step {step}: SIDE {row['side'] * 100:.3f}e-2 MAD {row['mad']:.1f} deg", highlight=False), teacher=tobj)
    if "teacher" in res:
        console.print(f"targets: the teacher's reproductions ({res['teacher']['inversion_steps']} inversion steps, "
                      f"PSNR {res['teacher']['psnr_db']:.1f} dB in the head)", highlight=False)
    print_table("recoverability (canonical depth vs truth)", ["fit", "SIDE x1e-2", "MAD deg", "rough/GT", "detail", "nose"], recover_report(res))
    if out:
        write_json(out, res)
        console.print(f"wrote {out}")
