"""``digan-bench sample``: write generated images to a folder.

One command for every generator. Sources so far: ``--teacher CKPT`` (the 2D StyleGAN2 teacher;
``tiny`` is the bundled one) and ``--student CKPT`` (the DIGAN student: renders at ``--yaws`` x
``--pitches``, maps, ``--light`` relighting, ``--turntable``). Another generator adds its own option(s) to :func:`sample_cmd`
and a branch in the dispatch below; exactly one source may be given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from digan.cli import app
from digan.cli.common import echo_kv


def _sample_teacher(teacher: str, n: int, out: Path, seed: int, psi: float, noise: str, batch: int, device: str,
                    grid: bool, force: bool) -> dict:
    from digan.errors import DiganError
    from digan.teacher.sampling import TeacherSampleConfig, write_teacher_samples
    from digan.utils.progress import progress

    if noise not in ("fixed", "random"):
        raise DiganError(f"bad --noise {noise!r}; choose fixed or random")
    cfg = TeacherSampleConfig(teacher=teacher, n=n, seed=seed, psi=psi, noise=noise, batch=batch, device=device, grid=grid)  # type: ignore[arg-type]
    with progress() as bar:
        task = bar.add_task("sample teacher", total=n, info="")
        return write_teacher_samples(cfg, out, force=force, on_batch=lambda k: bar.update(task, completed=k))


def _sample_student(student: Path, n: int, out: Path, seed: int, psi: float, yaws: str, pitches: str, lights: list[str],
                    turntable: Optional[str], batch: int, device: str, force: bool, teacher: Optional[str]) -> dict:
    """DIGAN student: per face the teacher image, renders at every yaw x pitch, albedo/depth/normal/shading
    maps, relit images and an optional turntable (:func:`digan.student.inference.sample_faces`)."""
    from digan.cli.common import parse_float_list
    from digan.errors import DiganError
    from digan.student.inference import Student, sample_faces

    light_list = []
    for text in lights:
        v = parse_float_list(text, "--light")
        if len(v) != 4:
            raise DiganError(f"bad --light {text!r}: write AMBIENT,DIFFUSE,DX,DY, e.g. 0.3,0.8,0.6,0")
        light_list.append(tuple(v))
    from digan.cli.common import write_command_info

    s = Student.load(student, teacher_path=teacher, device=device)
    yaw_list, pitch_list = parse_float_list(yaws, "--yaws", angle=True), parse_float_list(pitches, "--pitches", angle=True)
    # the grid's columns: the teacher image, then every pitch x yaw render
    labels = ["teacher"] + [f"yaw {y:g}" if not any(pitch_list) else f"yaw {y:g} pitch {p:g}" for p in pitch_list for y in yaw_list]

    def finish(tmp: Path) -> None:  # inside the staging folder: swapped in with the images, or not at all
        label_grid_columns(tmp / "grid.png", labels)
        write_command_info(tmp, "sample-student", {
            "student": str(student), "teacher": teacher, "n": n, "seed": seed, "psi": psi, "yaws": yaw_list, "pitches": pitch_list,
            "lights": [list(x) for x in light_list], "turntable": turntable, "batch_size": batch, "device": str(s.device),
            "grid_columns": labels}, seeds={"latents": seed}, weights={"student": str(student)})

    res = sample_faces(s, out, n=n, seed=seed, yaws=yaw_list, pitches=pitch_list,
                       lights=light_list, psi=psi, turntable=turntable, batch=batch, force=force, finish=finish)
    return {"student": str(student), "faces": res.n_faces, "images": res.n_images, "psi": psi, "time": f"{res.seconds:.1f} s", "folder": str(res.out_dir)}


def label_grid_columns(path: Path, labels: list[str]) -> None:
    """Add a white header strip naming each column (``teacher``, ``yaw -30``, ...) to the image
    grid at ``path`` (one row per face, ``len(labels)`` columns), rewritten atomically."""
    import io

    from PIL import Image, ImageDraw, ImageFont

    from digan.utils.io import write_bytes

    grid = Image.open(path).convert("RGB")
    w, h = grid.size
    font = ImageFont.load_default()
    col = w / len(labels)
    sizes = [ImageDraw.Draw(grid).textbbox((0, 0), t, font=font) for t in labels]
    strip_h = max(b[3] - b[1] for b in sizes) + 6
    out = Image.new("RGB", (w, h + strip_h), "white")
    out.paste(grid, (0, strip_h))
    draw = ImageDraw.Draw(out)
    for k, (t, b) in enumerate(zip(labels, sizes)):
        draw.text((k * col + (col - (b[2] - b[0])) / 2, 3 - b[1]), t, fill="black", font=font)
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    write_bytes(path, buf.getvalue())


@app.command("sample")
def sample_cmd(
    teacher: Optional[str] = typer.Option(None, "--teacher", "-t", help="Teacher checkpoint (.pt/.pkl) or 'tiny' for the bundled 64 px one."),
    n: int = typer.Option(16, "--n", "-n", min=1, help="Number of images."),
    out: Path = typer.Option(Path("samples"), "--out", "-o", help="Output folder (must not exist unless --force).", file_okay=False),
    seed: int = typer.Option(0, "--seed", help="Seed; image i depends only on (seed, i)."),
    psi: float = typer.Option(1.0, "--psi", help="Truncation: w = w_mean + psi (w - w_mean); 1 = none."),
    noise: str = typer.Option("fixed", "--noise", help="fixed (the checkpoint's noise maps: reproducible) or random."),
    batch: int = typer.Option(16, "--batch-size", "--batch", min=1, help="Images per forward pass."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N."),
    grid: bool = typer.Option(True, "--grid/--no-grid", help="Also write grid.png (up to 64 images)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder (after the new one is complete)."),
    student: Optional[Path] = typer.Option(None, "--student", help="DIGAN student checkpoint (student.pt): 3D renders, maps, relighting.", dir_okay=False),
    yaws: str = typer.Option("-30,0,30", "--yaws", help="Student: yaw angles in degrees."),
    pitches: str = typer.Option("0", "--pitches", help="Student: pitch angles in degrees."),
    lights: Optional[list[str]] = typer.Option(None, "--light", help="Student: relight with AMBIENT,DIFFUSE,DX,DY (repeatable), e.g. 0.3,0.8,0.6,0."),
    turntable: Optional[str] = typer.Option(None, "--turntable", help="Student: also write a turntable per face: gif or mp4."),
    student_teacher: Optional[str] = typer.Option(None, "--student-teacher", help="Student: its teacher (default: the one recorded in the checkpoint)."),
) -> None:
    """Generate N images: OUT/images/000000.png ..., grid.png, w.npy, config.json, run.json."""
    from digan.cli.common import resolve_device_option
    from digan.errors import DiganError

    device = resolve_device_option(device)

    sources = {"--teacher": teacher, "--student": student}
    given = [k for k, v in sources.items() if v is not None]
    if len(given) != 1:
        raise DiganError(f"pass exactly one generator to sample from ({', '.join(sources)}); e.g. --teacher tiny")
    if student is not None:
        res = _sample_student(student, n, out, seed, psi, yaws, pitches, lights or [], turntable, batch, device, force,
                              student_teacher)
        echo_kv("sample", res)
        return
    if teacher is not None:
        res = _sample_teacher(teacher, n, out, seed, psi, noise, batch, device, grid, force)
        echo_kv("sample", {"teacher": res["teacher"], "images": f"{res['n']} x {res['size']}px", "psi": res["psi"],
                           "noise": res["noise"], "folder": res["out"]})
