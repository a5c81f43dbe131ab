"""``digan-bench data synth``: write the synthetic ground-truth head data set (thin CLI)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from digan.cli.common import ConfigOption, SetOption, build_config
from digan.cli.groups import data_app


@data_app.command("synth")
def synth_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (must not exist unless --force).", file_okay=False),
    n: Optional[int] = typer.Option(None, "--n", "-n", help="Number of samples (default 200)."),
    size: Optional[int] = typer.Option(None, "--size", help="Image size: 64, 128 or 256 (default 64)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed (default 0); sample i depends only on (seed, i)."),
    views_per_identity: Optional[int] = typer.Option(None, "--views-per-identity", help="Poses/lights per identity (default 4)."),
    twins: bool = typer.Option(False, "--twins", help="Also write each damaged head's undamaged twin and its restore mask (ground truth for 'digan-bench restore')."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output (only after the new one is complete)."),
    config: Optional[Path] = ConfigOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Procedural clay-warrior head busts with exact depth, normals, masks, views and lights.

    Writes PNG images, memory-mappable arrays (arrays/*.npy), manifest.json, config.json,
    run.json and contact sheets. Ranges and other settings: --set yaw_range=45 etc.
    """
    import time

    from digan.cli.common import echo_kv
    from digan.data.synth import SynthConfig, generate_synth

    cfg = build_config(SynthConfig, config, set_)
    explicit = {"n": n, "size": size, "seed": seed, "views_per_identity": views_per_identity, "twins": True if twins else None}
    cfg = SynthConfig(**{**cfg.__dict__, **{k: v for k, v in explicit.items() if v is not None}})
    cfg.validate()
    t0 = time.perf_counter()
    path = generate_synth(out, config=cfg, force=force)
    dt = time.perf_counter() - t0
    echo_kv(
        "synthetic heads",
        {
            "folder": path,
            "samples": cfg.n,
            "identities": cfg.n_identities,
            "size": f"{cfg.size} px",
            "seed": cfg.seed,
            "time": f"{dt:.1f} s ({cfg.n / dt:.1f} samples/s)",
            "preview": path / "contact_sheet.png",
        },
    )
