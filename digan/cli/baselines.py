"""Baseline commands: ``digan-bench export-samples`` (any method -> rendered-samples folder) and
``digan-bench data check-samples`` (validate a folder before a long benchmark run).

The format is documented in :mod:`baselines.samples`; training the native baselines goes through
``digan-bench train --model liftgan|hologan``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from digan.cli import app
from digan.cli.common import echo_kv, parse_float_list
from digan.cli.groups import data_app


def _method_options(items: Optional[list[str]]) -> dict:
    import yaml

    from digan.errors import DiganError

    out = {}
    for it in items or []:
        if "=" not in it:
            raise DiganError(f"bad --set {it!r}: write it as key=value, e.g. truncation=0.7")
        k, v = it.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v)
        except yaml.YAMLError:
            out[k.strip()] = v
    return out


@app.command("export-samples")
def export_samples_cmd(
    method: str = typer.Option(..., "--method", "-m", help="Method spec, e.g. liftgan:run/student.pt, hologan:DIR, digan, teacher:ckpt.pt."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (must not exist unless --force).", file_okay=False),
    n: int = typer.Option(1000, "--n", "-n", min=1, help="Number of faces (indices 0..n-1 of --seed)."),
    yaws: str = typer.Option("-45,-30,-15,0,15,30,45", "--yaws", help="Comma-separated yaws in degrees (use --yaws=-45,... for negatives)."),
    pitches: str = typer.Option("0", "--pitches", help="Comma-separated pitches in degrees."),
    seed: int = typer.Option(0, "--seed", help="Latent seed (face i depends only on seed and i)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Faces per render call."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N."),
    option: Optional[list[str]] = typer.Option(None, "--set", "-s", "--option",
                                               help="Method option key=value (repeatable), e.g. truncation=0.7 (as run's --set method_options.NAME.key=value)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out (after the new folder is complete)."),
) -> None:
    """Render faces of any method at yaw/pitch views into the rendered-samples format (manifest.json + yaw_* folders)."""
    from baselines.samples import write_samples
    from digan.utils.progress import progress
    from evaluate.methods import create_method

    ys = parse_float_list(yaws, "--yaws", angle=True)
    ps = parse_float_list(pitches, "--pitches", angle=True) or [0.0]
    from digan.cli.common import resolve_device_option

    m = create_method(method, **_method_options(option))
    device = resolve_device_option(device)
    m = m.to(device) or m
    total = n * len(ys) * len(ps)
    with progress() as bar:
        task = bar.add_task(f"export {method}", total=total, info="")
        man = write_samples(m, out, n, ys, ps, seed=seed, batch_size=batch_size, force=force, method_name=method.split(":")[0],
                            source=f"digan-bench export-samples --method {method}",
                            on_batch=lambda k: bar.update(task, completed=k))
    echo_kv("export-samples", {"method": method, "faces": man.n_faces, "views": len(man.views()), "image size": man.image_size,
                               "folder": str(out), "evaluate with": f"samples:{out}"})


@data_app.command("check-samples")
def check_samples_cmd(
    folder: Path = typer.Argument(..., help="Samples folder (manifest + yaw_* folders, or a flat folder of images)."),
    images: bool = typer.Option(True, "--images/--no-images", help="Also decode every image and check its size."),
) -> None:
    """Validate a rendered-samples folder: manifest, view folders, file counts and (by default) every image."""
    from baselines.samples import open_samples, view_dir_name
    from digan.utils.progress import progress

    sf = open_samples(folder)
    n_read = 0
    if images:
        with progress() as bar:
            task = bar.add_task("check images", total=sf.n_faces * len(sf.views), info="")
            n_read = sf.check_images(on_image=lambda k: bar.update(task, completed=k))
    echo_kv("samples folder OK", {"folder": str(sf.root), "kind": sf.kind, "method": sf.method_name, "faces": sf.n_faces,
                                  "image size": sf.image_size, "views": ", ".join(view_dir_name(y, p) for y, p in sf.views),
                                  "images read": n_read if images else "skipped (--no-images)"})
