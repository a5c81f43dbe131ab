"""``digan-bench report`` (tables, figures, HTML) and ``digan-bench check`` (regression check)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from digan.cli import app
from digan.cli.common import ConfigOption, SetOption, build_config
from digan.errors import DiganError


def _split(values: Optional[list[str]]) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(p.strip() for p in v.split(",") if p.strip())
    return out


@app.command("report")
def report_cmd(
    results: Path = typer.Option(Path("results"), "--results", "-r", help="Results folder (or records.jsonl) written by 'digan-bench run'."),
    out: Path = typer.Option(Path("report"), "--out", "-o", help="Output folder for tables/, figures/ and index.html."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out (only after the new report is complete)."),
    methods: Optional[list[str]] = typer.Option(None, "--methods", "-m", help="Methods for the model figures (Figures 2-4), comma-separated specs: digan:student.pt,digan@no_flip:b.pt,liftgan:..."),
    checkpoints: Optional[list[str]] = typer.Option(None, "--checkpoint", "--checkpoints", help="NAME=PATH: checkpoint of a method for the model figures (repeatable), e.g. digan=runs/a/student.pt."),
    runs: Optional[list[str]] = typer.Option(None, "--runs", help="Training run folders (repeatable or comma-separated): loss curves from losses.csv, 3D accuracy during training from shape_eval.jsonl (train --eval-data)."),
    device: Optional[str] = typer.Option(None, "--device", help="Device for the model figures (cpu, cuda)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the faces shown in the model figures."),
    config: Optional[Path] = ConfigOption,
    overrides: Optional[list[str]] = SetOption,
) -> None:
    """Paper-style tables (Markdown, LaTeX, CSV), figures (PNG, PDF) and one self-contained HTML page."""
    from reports.report import ReportConfig, build_report
    from digan.utils.progress import console

    cfg = build_config(ReportConfig, config, overrides)
    if methods:
        cfg.methods = list(cfg.methods) + _split(methods)
    for item in _split(checkpoints):
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise DiganError(f"bad --checkpoint {item!r}: write NAME=PATH, e.g. digan=runs/a/student.pt")
        cfg.checkpoints[name.strip()] = path.strip()
    if runs:
        cfg.runs = list(cfg.runs) + _split(runs)
    if device is not None:
        cfg.device = device
    if seed is not None:
        cfg.seed = seed
    res = build_report(results, out, cfg, force=force)

    from rich.table import Table

    t = Table(title=f"report of {res.n_records} records -> {res.out}", show_header=False)
    t.add_row("page", str(res.html))
    t.add_row("tables", ", ".join(sorted({Path(p).stem for p in res.tables if not Path(p).stem.startswith("tables")})) or "none")
    t.add_row("figures", ", ".join(sorted({Path(p).stem for p in res.figures})) or "none")
    for s in res.skipped:
        t.add_row("skipped", s)
    console.print(t)


def _fmt(x: Optional[float]) -> str:
    if x is None:
        return "-"
    return f"{x:.4g}"


_STYLE = {"regressed": "bold red", "changed": "bold red", "error": "bold red", "lost": "bold red",
          "missing": "bold red", "protocol": "bold red", "improved": "green", "new": "cyan", "within": "", "same": "dim"}


@app.command("check")
def check_cmd(
    results: Path = typer.Option(Path("results"), "--results", "-r", help="Results folder (or records.jsonl) to check."),
    baseline: Path = typer.Option(..., "--baseline", "-b", help="Baseline JSON (committed), e.g. benchmarks/baselines/demo.json."),
    write: bool = typer.Option(False, "--write-baseline", help="Create or update the baseline from --results instead of checking."),
    tolerance: Optional[list[str]] = typer.Option(None, "--tolerance", "-t", help="METRIC=ABS[,REL]: tolerance override (repeatable), e.g. fid=3,0.05."),
    metric: Optional[list[str]] = typer.Option(None, "--metric", help="Only check these metrics (repeatable or comma-separated)."),
    show_all: bool = typer.Option(False, "--all", help="Also list unchanged values."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the comparison as JSON here."),
) -> None:
    """Compare metrics with a baseline (direction-aware tolerances); exit status 1 on a regression."""
    from rich.table import Table

    from digan.utils.io import write_json
    from digan.utils.progress import console
    from reports.check import check, parse_tolerance_option, write_baseline

    if not console.is_terminal:  # CI logs: do not fold the table into 80 columns
        from rich.console import Console

        console = Console(width=max(console.width, 200))
    tols = dict(parse_tolerance_option(t) for t in _split_tol(tolerance))
    if write:
        doc, counts = write_baseline(results, baseline, tolerances=tols or None)
        console.print(f"baseline {baseline}: {len(doc['entries'])} entries "
                      f"({counts['added']} added, {counts['updated']} updated, {counts['removed']} removed, "
                      f"{counts['unchanged']} unchanged) from {results}")
        return
    res = check(results, baseline, tolerances=tols or None, metrics=_split(metric) or None)
    rows = res.comparisons if show_all else res.moved()
    console.print(f"{results} vs baseline {baseline}")
    if rows:
        t = Table()
        for col, just in (("status", "left"), ("method/metric/setting/dataset", "left"), ("baseline", "right"), ("current", "right"),
                          ("Δ", "right"), ("Δ %", "right"), ("allowed", "right"), ("better", "center"), ("note", "left")):
            t.add_column(col, justify=just, overflow="fold")
        from reports.check import _key_text

        for c in sorted(rows, key=lambda c: c.key) if show_all else rows:
            rel = c.rel_delta
            t.add_row(
                f"[{_STYLE.get(c.status, '')}]{c.status}[/]" if _STYLE.get(c.status) else c.status,
                _key_text(c.key), _fmt(c.baseline), _fmt(c.current), "-" if c.delta is None else f"{c.delta:+.4g}",
                "-" if rel is None else f"{100 * rel:+.1f}", _fmt(c.allowed),
                {True: "↑", False: "↓", None: "?"}[c.higher_is_better], c.note,
            )
        console.print(t)
    counts = ", ".join(f"{n} {s}" for s, n in res.counts().items())
    if json_out is not None:
        write_json(json_out, res.to_dict())
    if res.passed:
        console.print(f"[green]check passed[/]: {counts}")
        if any(c.status == "improved" for c in res.comparisons):
            console.print("some metrics improved beyond tolerance; lock them in with --write-baseline")
        return
    console.print(f"[bold red]check failed[/]: {counts}")
    raise typer.Exit(1)


def _split_tol(values: Optional[list[str]]) -> list[str]:
    """Tolerance options are not split on commas (``fid=2,0.05`` is one option)."""
    return [v.strip() for v in values or [] if v.strip()]
