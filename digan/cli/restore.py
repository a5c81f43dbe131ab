"""``digan-bench restore``: 3D-aware completion of damaged faces (thin CLI over
:func:`digan.restore.folder.restore_folder`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from digan.cli import app
from digan.cli.common import ConfigOption, SetOption, build_config


@app.command("restore")
def restore_cmd(
    student: Path = typer.Option(..., "--student", help="Student checkpoint (student.pt or checkpoint.pt; DIGAN or LiftGAN).", dir_okay=False),
    images: Path = typer.Option(..., "--images", help="Folder of damaged face images (square, at the student's size)."),
    masks: Optional[Path] = typer.Option(None, "--masks", help="Folder of masks, one per image with the same file name, white = damaged; without it the damage is estimated and saved."),
    out: Path = typer.Option(Path("restored"), "--out", "-o", help="Output folder (must not exist unless --force)."),
    teacher: Optional[str] = typer.Option(None, "--teacher", "-t", help="Teacher checkpoint (default: the one recorded in the student)."),
    symmetry: Optional[bool] = typer.Option(None, "--symmetry/--no-symmetry", help="Complete damaged parts from their mirror image in the canonical frame (default off: see README 'Restoring damaged heads')."),
    steps: Optional[int] = typer.Option(None, "--steps", min=0, help="Masked inversion steps (default 100)."),
    batch: int = typer.Option(8, "--batch-size", min=1, help="Images restored together."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out (only after the new one is complete)."),
    config: Optional[Path] = ConfigOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Restore damaged faces: fit the teacher to the undamaged pixels, complete the rest with the
    student's 3D (optionally by symmetry), and write the completed image, frontal face, depth,
    normals, a textured GLB and a before/after sheet per image."""
    from digan.cli.common import echo_kv, resolve_device_option
    from digan.restore import RestoreConfig
    from digan.restore.folder import restore_folder

    cfg = build_config(RestoreConfig, config, set_)
    if symmetry is not None:
        cfg.symmetry = symmetry
    if steps is not None:
        cfg.inversion_steps = steps
    cfg.validate()
    dev = resolve_device_option(device)
    s = _load_student(student, teacher, dev)
    res = restore_folder(s, images, out, masks, cfg, batch=batch, force=force,
                         run_config={"student": str(student), "teacher": teacher, "device": dev})
    echo_kv("restore", {
        "images": res.n_images,
        "masks": "estimated (saved as mask.png)" if res.estimated_masks else "given",
        "symmetry": "on" if cfg.symmetry else "off",
        "time": f"{res.seconds:.1f} s",
        "output": str(res.out_dir),
        "sheet": str(res.out_dir / "sheet.png"),
    })


def _load_student(path: Path, teacher: Optional[str], device: str):
    """A DIGAN student, or a LiftGAN one (``train --model liftgan``) through its own loader."""
    from digan.errors import DiganError
    from digan.student.inference import Student

    try:
        return Student.load(path, teacher_path=teacher, device=device)
    except DiganError as e:
        if "'liftgan' model" not in str(e):
            raise
    from baselines.liftgan import load_liftgan

    return load_liftgan(path, teacher, device)
