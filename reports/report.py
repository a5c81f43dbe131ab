"""``digan-bench report``: tables, figures and one HTML page from a results folder.

Output layout (built in a temporary sibling and moved to ``out`` only when complete; an existing
``out`` is replaced only with ``force``)::

    out/index.html                 self-contained page (tables, figures, provenance)
    out/tables/<name>.md|.tex|.csv one file per table and format
    out/tables/tables.md           every table in one Markdown file
    out/tables/tables.tex          compilable LaTeX document with every table (booktabs)
    out/tables/tables.json         machine-readable cells (values, best flags, notes)
    out/figures/<name>.png|.pdf    every figure
    out/config.json, out/run.json  the report configuration and its provenance

Records-only tables and figures are always made. The model figures (paper Figures 2-4) are
drawn when methods are given: ``methods`` specs (``digan:student.pt``, ``digan@no_flip:b.pt``,
``liftgan:...``) and/or ``checkpoints`` (``{"digan": "student.pt"}``: shorthand for the spec
``digan:student.pt``). Figure 4 uses every given variant of ``ablation_method``.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from digan.errors import DiganError
from digan.utils.io import atomic_dir, read_json, write_text
from digan.utils.progress import progress
from digan.utils.provenance import git_revision, write_run_info
from evaluate.records import Record, load_records
from reports import figures as F
from reports.html import FigureEntry, render_html
from reports.labels import base_method, method_label
from reports.tables import Table, build_tables, latex_document, tables_json

__all__ = ["ReportConfig", "ReportResult", "build_report", "method_specs", "load_methods"]


@dataclass
class ReportConfig:
    """Settings of ``digan-bench report`` (override with ``--set key=value``)."""

    title: str = "digan-bench report"
    ablation_method: str = "digan"
    #: method specs for the model figures (see module docstring)
    methods: list[str] = field(default_factory=list)
    #: ``{method spec name: checkpoint path}``; adds ``name:path`` to ``methods``
    checkpoints: dict[str, str] = field(default_factory=dict)
    #: training run folders (each with ``losses.csv``) for the loss curves, and for the 3D accuracy
    #: during training when they hold ``shape_eval.jsonl`` (``train --eval-data``)
    runs: list[str] = field(default_factory=list)
    device: str = "cpu"
    seed: int = 0
    n_faces: int = 4                 # faces per method in Figure 2
    n_faces_relight: int = 3         # faces per method in Figure 3
    n_faces_ablation: int = 2        # faces per variant in Figure 4
    yaws: tuple[float, ...] = (-45.0, -22.5, 0.0, 22.5, 45.0)
    shape_yaws: tuple[float, ...] = (-60.0, 60.0)
    ablation_yaws: tuple[float, ...] = (-30.0, 0.0, 30.0)
    lights: list[tuple[float, float, float, float]] = field(default_factory=lambda: [tuple(l) for l in F.DEFAULT_LIGHTS])
    cell_px: int = 128
    formats: tuple[str, ...] = ("png", "pdf")


@dataclass
class ReportResult:
    """What :func:`build_report` wrote (paths inside the final ``out`` folder)."""

    out: Path
    html: Path
    tables: list[str]
    figures: list[str]
    skipped: list[str]
    n_records: int


def method_specs(cfg: ReportConfig) -> list[str]:
    """``cfg.methods`` with ``cfg.checkpoints`` merged in (``name`` -> ``name:path``)."""
    from evaluate.methods import parse_method_spec

    specs: list[str] = []
    used: set[str] = set()
    for spec in cfg.methods:
        name, arg, variant = parse_method_spec(spec)
        key = name if variant == "full" else f"{name}@{variant}"
        if arg is None and key in cfg.checkpoints:
            spec = f"{key}:{cfg.checkpoints[key]}"
            used.add(key)
        specs.append(spec)
    for key, path in cfg.checkpoints.items():
        if key not in used:
            specs.append(f"{key}:{path}")
    return specs


def load_methods(cfg: ReportConfig) -> list:
    """Build the :class:`evaluate.methods.Method` objects of :func:`method_specs` on ``cfg.device``."""
    from evaluate.methods import create_method

    specs = method_specs(cfg)
    methods = []
    for s in specs:
        m = create_method(s)
        methods.append(m.to(cfg.device) or m)
    labels = figure_labels(specs, [(m.name, m.variant) for m in methods])
    for m, label in zip(methods, labels):
        try:
            m.display_label = label
        except AttributeError:  # a method class with __slots__: figures fall back to its name
            pass
    return methods


def figure_labels(specs: Sequence[str], keys: Sequence[tuple[str, str]]) -> list[str]:
    """Row labels of the model figures: the paper label (``DIGAN (ours)``) when it names one
    method only; methods that would share it (two DIGAN checkpoints) are labelled by the spec
    the user gave, shortened like result records (``digan:run_a``), or in full when that is
    still ambiguous."""
    from evaluate.engine import method_label
    from reports.labels import row_label

    paper = [row_label(n, v) for n, v in keys]
    short = [method_label(s) + ("" if v in ("", "full") else f"@{v}") for s, (_, v) in zip(specs, keys)]
    out = []
    for i, spec in enumerate(specs):
        if paper.count(paper[i]) == 1:
            out.append(paper[i])
        elif short.count(short[i]) == 1:
            out.append(short[i])
        else:
            out.append(spec)
    return out


_FIG_TEXT = {
    "identity_vs_yaw": ("Identity similarity versus yaw", "Cosine similarity between the face embedding of the frontal render and of the render at each yaw (pitch 0); error bars: one standard deviation over faces."),
    "identity_vs_yaw_ablation": ("Identity similarity versus yaw, ablations", "As above, for each ablation variant."),
    "pose_vs_yaw": ("Pose error versus yaw", "Mean absolute error between the requested and the estimated yaw; error bars: one standard deviation."),
    "restore": ("Restoration before and after", "Damaged synthetic heads (yellow: the region to restore; cyan: a missing ear), the restorations compared in the restoration table, the undamaged twin (ground truth) and the completed head seen frontally."),
    "metrics": ("Summary metrics", "Overall value of each metric per method and variant; best bar in orange."),
    "loss_curves": ("Training losses", "Per-step losses of each run (faint) and their exponential moving average."),
    "shape_eval": ("3D accuracy during training", "SIDE, MAD, depth roughness and DV-yaw correlation on held-out synthetic heads at each evaluation (train --eval-data); dashed: the depth prior alone, dash-dotted: a flat plane, dotted: the ground truth's roughness, all on the same faces and masks."),
    "samples": ("Samples and shapes (paper Figure 2)", "Each face rendered at several yaws, then its shape from the side as grey clay (normals shaded under a fixed light)."),
    "relighting": ("Relighting and shading (paper Figure 3)", "Frontal renders under lights from the left, front, right and above, the Lambertian shading map of each light, and the normal map."),
    "ablation_samples": ("Ablation samples (paper Figure 4)", "The same latents rendered by each variant, with a side view of the shape."),
}


def _read_run_info(results: Path) -> dict[str, Any]:
    base = results if results.is_dir() else results.parent
    p = base / "run.json"
    if not p.is_file():
        return {}
    try:
        info = read_json(p)
    except DiganError:
        return {}
    return info if isinstance(info, dict) else {}


def build_report(
    results: str | Path,
    out: str | Path,
    cfg: ReportConfig | None = None,
    force: bool = False,
    methods: Sequence | None = None,
    records: Sequence[Record] | None = None,
) -> ReportResult:
    """Build the report of ``results`` into ``out`` (see the module docstring).

    ``methods`` (already built :class:`evaluate.methods.Method` objects) override
    ``cfg.methods``/``cfg.checkpoints``; ``records`` override loading them from ``results``.
    """
    cfg = cfg or ReportConfig()
    results = Path(results)
    for fmt in cfg.formats:
        if fmt not in ("png", "pdf", "svg"):
            raise DiganError(f"unknown figure format '{fmt}'; choose from png, pdf, svg")
    if "png" not in cfg.formats:
        cfg.formats = ("png",) + tuple(cfg.formats)  # the HTML page needs the PNGs
    if records is not None:
        recs = list(records)
    elif cfg.runs and not results.exists():  # training runs only: loss and shape curves
        recs = []
    else:
        recs = load_records(results)
    if not recs and not cfg.runs:
        raise DiganError(f"{results} holds no result records; run 'digan-bench run --out {results}' first")
    if methods is None:
        methods = load_methods(cfg) if (cfg.methods or cfg.checkpoints) else []
    run_info = _read_run_info(results)

    skipped: list[str] = []
    table_files: list[str] = []
    fig_entries: list[FigureEntry] = []
    out = Path(out)
    steps = 4 + len(cfg.runs) + (3 if methods else 0)
    with atomic_dir(out, force=force) as tmp, progress() as bar:
        task = bar.add_task("report", total=steps, info="tables")
        # ---- tables ------------------------------------------------------------------------
        tables: list[Table] = build_tables(recs, ablation_method=cfg.ablation_method)
        from reports.restore import restore_figure, restore_table

        k = len(tables) + 1
        restore_t = restore_table(recs, title=f"Table {k}", name=f"table{k}_restore")
        if restore_t is not None:
            tables.append(restore_t)
        tdir = tmp / "tables"
        for t in tables:
            for ext, text in (("md", t.to_markdown()), ("tex", t.to_latex()), ("csv", t.to_csv())):
                write_text(tdir / f"{t.name}.{ext}", text)
                table_files.append(f"tables/{t.name}.{ext}")
        if tables:
            write_text(tdir / "tables.md", "\n".join(t.to_markdown() for t in tables))
            write_text(tdir / "tables.tex", latex_document(tables))
            write_text(tdir / "tables.json", tables_json(tables))
            table_files += ["tables/tables.md", "tables/tables.tex", "tables/tables.json"]
        have = {t.name.split("_", 1)[1] for t in tables}
        for kind, why in (("fid", "no FID/KID records"), ("identity", "no identity records"),
                          ("ablation", f"fewer than two variants of '{cfg.ablation_method}'")):
            if kind not in have:
                skipped.append(f"{kind} table: {why}")
        bar.advance(task)

        # ---- figures -----------------------------------------------------------------------
        fdir = tmp / "figures"

        def emit(stem: str, fig, missing: str | None = None) -> None:
            """Save ``fig`` and queue it for the page; note ``missing`` when there is no figure."""
            if fig is None:
                if missing:
                    skipped.append(missing)
                return
            paths = F.save_figure(fig, fdir, stem, cfg.formats)
            title, caption = _FIG_TEXT.get(stem, (stem, ""))
            png = next(p for p in paths if p.suffix == ".png").read_bytes()
            fig_entries.append(FigureEntry(stem, title, caption, png))

        bar.update(task, info="record figures")
        emit("identity_vs_yaw", F.metric_vs_yaw_figure(recs, "identity"), "identity vs yaw: no per-yaw identity records")
        if len({r.variant for r in recs if base_method(r.method) == cfg.ablation_method and r.metric == "identity"}) > 1:
            emit("identity_vs_yaw_ablation", F.metric_vs_yaw_figure(recs, "identity", variants=None, method=cfg.ablation_method))
        pose_metric = "pose" if any(r.metric == "pose" for r in recs) else "pose_mae"
        emit("pose_vs_yaw", F.metric_vs_yaw_figure(recs, pose_metric), "pose error vs yaw: no per-yaw pose records")
        emit("metrics", F.metric_bars_figure(recs), "metric bars: no overall records")
        if restore_t is not None:
            emit("restore", restore_figure(results), "restoration before/after: no restore/*/examples.npz in the results")
        bar.advance(task)

        if cfg.runs:
            bar.update(task, info="loss curves")
            emit("loss_curves", F.loss_curves_figure(cfg.runs))
            emit("shape_eval", F.shape_eval_figure(cfg.runs),
                 "3D accuracy during training: no shape_eval.jsonl in the runs (train with --eval-data SYNTH_DIR)")
            bar.advance(task, len(cfg.runs))
        else:
            skipped.append("loss curves: no training run folders given (--runs DIR)")

        if methods:
            full = [m for m in methods if m.variant in ("", "full")]
            bar.update(task, info="samples (Figure 2)")
            emit("samples", F.sample_grid_figure(full, cfg.n_faces, cfg.seed, cfg.yaws, cfg.shape_yaws, cfg.cell_px),
                 "samples (Figure 2): no full (non-ablation) method given")
            bar.advance(task)
            bar.update(task, info="relighting (Figure 3)")
            emit("relighting", F.relighting_figure(full, cfg.n_faces_relight, cfg.seed, [tuple(l) for l in cfg.lights], cfg.cell_px),
                 "relighting (Figure 3): no given method can be relit")
            bar.advance(task)
            bar.update(task, info="ablation samples (Figure 4)")
            abl = [m for m in methods if base_method(m.name) == cfg.ablation_method]
            emit("ablation_samples",
                 F.ablation_figure(abl, cfg.n_faces_ablation, cfg.seed, cfg.ablation_yaws, cfg.shape_yaws[-1:], cfg.cell_px),
                 f"ablation samples (Figure 4): fewer than two variants of {method_label(cfg.ablation_method)} given "
                 f"(--methods {cfg.ablation_method}@no_flip:CKPT,...)")
            bar.advance(task)
        else:
            skipped.append("samples, relighting and ablation samples (Figures 2-4): no models given (--methods / --checkpoint)")

        # ---- page and provenance -----------------------------------------------------------
        bar.update(task, info="HTML")
        from digan.config import to_dict

        created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        report_info = {"git": git_revision(), "created": created, "results": str(results)}
        page = render_html(cfg.title, recs, tables, fig_entries, run_info=run_info, report_info=report_info, notes=skipped)
        write_text(tmp / "index.html", page)
        write_text(tmp / "config.json", __import__("json").dumps(to_dict(cfg), indent=2) + "\n")
        write_run_info(tmp / "run.json", "report", config=cfg, seeds={"figures": cfg.seed},
                       extra={"results": str(results), "methods": method_specs(cfg)})
        bar.advance(task, 2)
    figs = [f"figures/{e.stem}.{fmt}" for e in fig_entries for fmt in cfg.formats]
    return ReportResult(out, out / "index.html", table_files, figs, skipped, len(recs))
