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
    device: Optional[str] = typer.Option(None, "--device", help="Device for the model figures: auto (CUDA when present, else CPU), cpu, cuda or cuda:N (default cpu)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the faces shown in the model figures."),
    config: Optional[Path] = ConfigOption,
    overrides: Optional[list[str]] = SetOption,
) -> None:
    """Paper-style tables (Markdown, LaTeX, CSV), figures (PNG, PDF) and one self-contained HTML page."""
    from reports.report import ReportConfig, build_report

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
        from digan.cli.common import resolve_device_option

        cfg.device = resolve_device_option(device)
    if seed is not None:
        cfg.seed = seed
    res = build_report(results, out, cfg, force=force)

    from digan.cli.common import print_table

    rows = [["page", str(res.html)],
            ["tables", ", ".join(sorted({Path(p).stem for p in res.tables if not Path(p).stem.startswith("tables")})) or "none"],
            ["figures", ", ".join(sorted({Path(p).stem for p in res.figures})) or "none"]]
    rows += [["skipped", s] for s in res.skipped]
    print_table(f"report of {res.n_records} records -> {res.out}", ["", ""], rows, show_header=False)


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
    tolerance: Optional[list[str]] = typer.Option(None, "--tolerance", help="METRIC=ABS[,REL]: tolerance override (repeatable), e.g. fid=3,0.05."),
    metric: Optional[list[str]] = typer.Option(None, "--metric", help="Only check these metrics (repeatable or comma-separated)."),
    show_all: bool = typer.Option(False, "--all", help="Also list unchanged values."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the comparison as JSON here."),
) -> None:
    """Compare metrics with a baseline (direction-aware tolerances); exit status 1 on a regression."""
    from digan.utils.io import write_json
    from digan.utils.progress import console
    from reports.check import check, parse_tolerance_option, write_baseline

    tols = dict(parse_tolerance_option(t) for t in _split_tol(tolerance))
    if write:
        doc, counts = write_baseline(results, baseline, tolerances=tols or None)
        console.print(f"baseline {baseline}: {len(doc['entries'])} entries "
                      f"({counts['added']} added, {counts['updated']} updated, {counts['removed']} removed, "
                      f"{counts['unchanged']} unchanged) from {results}", soft_wrap=True, markup=False)
        return
    res = check(results, baseline, tolerances=tols or None, metrics=_split(metric) or None)
    rows = res.comparisons if show_all else res.moved()
    console.print(f"{results} vs baseline {baseline}", soft_wrap=True)
    if rows:
        # fits 80 columns: the key without the data set's bracketed note, the direction in the
        # status, the absolute change left to --json; notes follow the table, one line each
        from digan.cli.common import print_table

        notes = []
        table_rows = []
        for c in sorted(rows, key=lambda c: c.key) if show_all else rows:
            rel = c.rel_delta
            arrow = {True: "↑", False: "↓", None: "?"}[c.higher_is_better]
            key = _short_key(c.key)
            table_rows.append([key, f"{c.status} {arrow}", _fmt(c.baseline), _fmt(c.current),
                               "-" if rel is None else f"{100 * rel:+.1f}", _fmt(c.allowed)])
            if c.note:
                notes.append(f"{key}: {c.note}")
        print_table(None, ["method/metric/setting", "status", "baseline", "current", "Δ %", "allowed"], table_rows,
                    justify=["left", "left", "right", "right", "right", "right"], console=console)
        for n in notes:
            console.print(n, soft_wrap=True, markup=False)
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


def _short_key(k: tuple) -> str:
    """``digan/fid/overall/synth *`` for a check key: the data set's bracketed note is shortened
    to ``*`` (the full key is in --json) so that the table fits 80 columns."""
    m, v, metric, s, d = k
    d = (d.split(" [")[0] + " *") if " [" in d else d
    return f"{m}{'' if v in ('', 'full') else '@' + v}/{metric}/{s}" + (f"/{d}" if d else "")


def _split_tol(values: Optional[list[str]]) -> list[str]:
    """Tolerance options are not split on commas (``fid=2,0.05`` is one option)."""
    return [v.strip() for v in values or [] if v.strip()]
