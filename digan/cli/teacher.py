"""``digan-bench train-teacher`` and ``digan-bench bench teacher`` (thin CLI over digan.teacher)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from digan.cli import app
from digan.cli.common import ConfigOption, SetOption, build_config, echo_kv
from digan.cli.groups import bench_app


@app.command("train-teacher")
def train_teacher_cmd(
    data: Path = typer.Option(..., "--data", "-d", help="Folder of same-size square training images (PNG/JPG).", file_okay=False),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder; rerunning the same command resumes from its checkpoint.", file_okay=False),
    preset: str = typer.Option("tiny", "--preset", "-p", help="Starting config: tiny (the first 6,500 steps of the bundled 64 px teacher), standard (rosinality defaults, 256 px), liftedgan."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training iterations (overrides the preset)."),
    batch: Optional[int] = typer.Option(None, "--batch-size", "--batch", help="Global batch size (split over torchrun processes)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto (CUDA when present, else CPU; the default), cpu, cuda or cuda:N."),
    threads: int = typer.Option(0, "--threads", help="CPU threads for PyTorch (0 = default; 1 is fastest on a busy shared CPU)."),
    force: bool = typer.Option(False, "--force", help="Start over even if --out holds a checkpoint."),
    config: Optional[Path] = ConfigOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Train a StyleGAN2 teacher (non-saturating loss, lazy R1, EMA, ADA-style augmentation).

    Checkpoints are in rosinality's stylegan2-pytorch layout; OUT/teacher.pt is what
    'sample --teacher' and the DIGAN student load. Multi-GPU: torchrun --nproc_per_node N -m digan.cli train-teacher ...
    Train the bundled teacher longer: --set init_from=tiny --steps 30000 (steps count on from
    the step it records in digan/assets/tiny_teacher_64.json).
    """
    import torch

    from digan.teacher.train import TeacherTrainConfig, preset_config, train_teacher
    from digan.utils.progress import console

    cfg = build_config(TeacherTrainConfig, config, set_, base=preset_config(preset))
    if steps is not None:
        cfg.steps = steps
    if batch is not None:
        cfg.batch = batch
    if device is not None:
        cfg.device = device
    if threads > 0:
        torch.set_num_threads(threads)
    res = train_teacher(cfg, data, out, force=force)
    if res.is_main:
        m = cfg.model
        echo_kv("train-teacher", {
            "run folder": res.out_dir,
            "steps": f"{res.steps} (resumed from {res.resumed_from})" if res.resumed_from else f"step {res.steps}",
            "time": f"{res.seconds / 60:.1f} min",
            "model": f"{m.size}px, style {m.style_dim}, {m.n_mlp} mapping layers, channels {m.channels or f'x{m.channel_multiplier}'}",
            "last losses": ", ".join(f"{k} {v:.3f}" for k, v in res.last.items() if k in ("d", "g", "r1", "pl")) or "-",
            "augmentation": f"{cfg.augment.kind}, p = {res.ada_p:.3f}",
            "teacher": res.teacher_path,
        })
        # soft wrap: the terminal may wrap the line, but no newline is put inside the path (copy-paste)
        console.print(f"sample it with: digan-bench sample --teacher {res.teacher_path} --n 16 --out samples",
                      soft_wrap=True, markup=False, highlight=False)


@bench_app.command("teacher")
def bench_teacher_cmd(
    cases: str = typer.Option("tiny@16x64:cpu,standard@16x64:cpu,standard@16x256:cuda", "--cases",
                              help="PRESET@BATCHxSIZE:DEVICE list (batch first, as in bench renderer); cuda cases are skipped without a GPU."),
    repeats: int = typer.Option(3, "--repeats", min=1, help="Timed repetitions per measurement (median reported)."),
    threads: int = typer.Option(0, "--threads", help="CPU threads (0 = PyTorch default)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the figures as JSON here.", dir_okay=False),
) -> None:
    """Milliseconds per teacher training step and peak memory per case."""
    from digan.cli.common import print_table
    from digan.teacher.bench import TeacherBenchConfig, parse_cases, run_teacher_bench
    from digan.utils.io import write_json
    from digan.utils.progress import console
    from digan.utils.provenance import run_info

    cfg = TeacherBenchConfig(cases=parse_cases(cases), repeats=repeats, threads=threads)

    def show(r: dict) -> None:
        if "skipped" in r:
            console.print(f"{r['preset']}@{r['batch']}x{r['size']} {r['device']}: skipped ({r['skipped']})", soft_wrap=True)
        else:
            console.print(f"{r['preset']}@{r['batch']}x{r['size']} {r['device']}: {r['amortized_ms']:.0f} ms/step, "
                          f"peak {r['peak_mem_mb']:.0f} MB", soft_wrap=True)

    results = run_teacher_bench(cfg, on_result=show)
    cols = ["case", "device", "G/D params (M)", "step ms", "R1 ms", "PL ms", "amortized ms", "img/s", "peak MB", "train MB", "threads"]
    rows = []
    for r in results:
        case = f"{r['preset']}@{r['batch']}x{r['size']}"
        if "skipped" in r:
            rows.append([case, r["device"], *(["-"] * 8), f"skipped: {r['skipped']}"])
            continue
        rows.append([case, r["device_name"] or r["device"], f"{r['g_params_m']:.2f}/{r['d_params_m']:.2f}", f"{r['step_ms']:.0f}",
                     f"{r['r1_ms']:.0f}", f"{r['pl_ms']:.0f}" if r["path_regularize"] else "-", f"{r['amortized_ms']:.0f}",
                     f"{r['img_per_s']:.1f}", f"{r['peak_mem_mb']:.0f}", f"{r['train_mem_mb']:.0f}", str(r["threads"])])
    print_table("teacher training: ms per iteration (median) and peak memory", cols, rows)
    if out is not None:
        write_json(out, {"benchmark": "teacher", "results": results, "provenance": run_info("bench", config=cfg)})
        console.print(f"wrote {out}")
