"""``digan-bench bench renderer``: speed and memory of the differentiable renderer (thin CLI)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from digan.cli.groups import bench_app


@bench_app.command("renderer")
def bench_renderer(
    cases: str = typer.Option("8x64,16x256", "--cases", help="BATCHxSIZE pairs, e.g. 8x64,16x256."),
    repeats: int = typer.Option(5, "--repeats", min=1, help="Timed repetitions per case (median reported)."),
    device: str = typer.Option("all", "--device", help="cpu, cuda or all (cuda skipped when absent)."),
    backend: str = typer.Option(
        "torch", "--backend",
        help="Rasterizer backend: torch, pytorch3d, auto, or both (side by side; the figures then decide backend=auto).",
    ),
    threads: int = typer.Option(0, "--threads", min=0, help="torch CPU threads (0 = torch's default)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the figures as JSON here.", dir_okay=False),
) -> None:
    """Time forward and forward+backward renders and report peak memory per case and device."""
    from digan.cli.common import print_table

    from digan.errors import DiganError
    from digan.render.bench import BenchConfig, parse_cases, run_renderer_bench
    from digan.utils.io import write_json
    from digan.utils.progress import console
    from digan.utils.provenance import run_info

    if device not in ("all", "cpu", "cuda"):
        raise DiganError(f"bad --device {device!r}; choose cpu, cuda or all")
    if backend not in ("torch", "pytorch3d", "auto", "both"):
        raise DiganError(f"bad --backend {backend!r}; choose torch, pytorch3d, auto or both")
    cfg = BenchConfig(
        cases=parse_cases(cases),
        repeats=repeats,
        devices=["cpu", "cuda"] if device == "all" else [device],
        backend=backend,
        threads=threads,
    )

    def show(r: dict) -> None:
        ratio = f", {r['speed_ratio']:.1f}x the torch backend's time" if "speed_ratio" in r else ""
        console.print(
            f"{r['device']} {r['backend']} {r['batch']}x{r['size']}: fwd {r['forward_ms']:.1f} ms, "
            f"fwd+bwd {r['forward_backward_ms']:.1f} ms, peak {r['peak_mem_mb']:.0f} MB{ratio}", soft_wrap=True
        )

    results = run_renderer_bench(cfg, on_result=show)
    # print_table: a table when it fits the terminal, else one block per case (no value is cut to "x86…")
    rows = [[r["device_name"], r["backend"], f"{r['batch']}x{r['size']}", f"{r['faces_per_mesh']:,}", f"{r['forward_ms']:.1f}",
             f"{r['forward_backward_ms']:.1f}", f"{r['images_per_s']:.1f}", f"{r['peak_mem_mb']:.0f}", str(r["threads"]),
             f"{r['load_avg_1m']:.1f}"] for r in results]
    print_table("renderer: forward / forward+backward (median) and peak memory",
                ["device", "backend", "batch x size", "faces/mesh", "fwd ms", "fwd+bwd ms", "img/s", "peak MB", "threads", "load"], rows)
    if device == "all" and not any(r["device"] == "cuda" for r in results):
        console.print("no CUDA device here: GPU figures skipped")
    if backend == "both" and not any(r["backend"] == "pytorch3d" for r in results):
        console.print("pytorch3d does not import here: only the torch backend was timed")
    if out is not None:
        write_json(out, {"benchmark": "renderer", "results": results, "provenance": run_info("bench", config=cfg)})
        console.print(f"wrote {out}")
