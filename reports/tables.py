"""Paper-style tables from result records: Markdown, LaTeX (booktabs), CSV and HTML.

Tables
------
* **Table 1** (:func:`fid_table`): FID and KID per method (full models) and reference data set.
* **Table 2** (:func:`identity_table`): identity similarity at each yaw and its mean, with FID.
* **Table 3** (:func:`ablation_table`): the DIGAN variants (full, w/o flip, w/o identity,
  w/o albedo regularization, KAN -> MLP, partial conv -> plain conv) on every summary metric.
* **Table 4** (:func:`summary_table`): every summary metric of every method and variant, so no
  record is left out of the report (3D accuracy, pose error, speed...).

Conventions (documented because every paper does it slightly differently)
------------------------------------------------------------------------
* A cell is ``mean ± std`` when the record has ``stats["std"]``, else the value alone, both at
  the metric's display precision (:mod:`reports.labels`). KID is shown x10^3, SIDE x10^2.
* The best value per column is bold, by the direction stored on the records
  (``higher_is_better``; the metric default only when a record leaves it empty). Values are
  compared *at display precision*, so two values a reader sees as equal are both marked (ties).
  A column with fewer than two numbers, or without a known direction, marks nothing.
* ``n/a`` (metric does not apply) and ``error`` cells are never numbers; each carries a footnote
  letter with the record's reason (a tooltip in HTML). A combination that was not measured at
  all is shown as a dash.
* Captions state the number of faces, the seeds, the reference data set and the feature
  extractor / recogniser read from the records' ``config``.
* CSV holds the same cells at full precision (scaled like the header), a ``<column> std``
  column where a column has spreads, and a ``best`` column naming the columns where the row is
  best; column names are the headers without the direction arrow; non-numbers are written as
  ``n/a`` / ``error``, unmeasured ones left empty.
"""

from __future__ import annotations

import html as _html
import json
import math
import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import pandas as pd

from evaluate.records import Record, _setting_sort_key
from reports.labels import (
    ABLATION_VARIANTS,
    base_method,
    metric_spec,
    method_order,
    row_label,
    setting_label,
    variant_label,
    variant_order,
)

__all__ = [
    "Cell",
    "Column",
    "Table",
    "fid_table",
    "identity_table",
    "ablation_table",
    "summary_table",
    "build_tables",
    "latex_escape",
    "format_number",
    "unify_datasets",
]

DASH_MD = "–"
DASH_TEX = "--"
_FOOT_LETTERS = "abcdefghijklmnopqrstuvwxyz"
#: summary metrics shown in the ablation and summary tables, in this order (others follow)
SUMMARY_METRICS = ("fid", "kid", "identity", "pose", "pose_mae", "side", "mad")


# --------------------------------------------------------------------------------------------
# cells, columns, tables
# --------------------------------------------------------------------------------------------
@dataclass
class Cell:
    """One table cell. ``status`` is ``ok``, ``n/a``, ``error`` or ``missing`` (not measured)."""

    value: float | None = None
    std: float | None = None
    status: str = "missing"
    reason: str = ""
    best: bool = False
    record: Record | None = None
    warn: str = ""  # a number that is not a reliable result (record status "warn"): why


@dataclass
class Column:
    """A table column: one (metric, setting, dataset) with its header and direction."""

    metric: str
    setting: str = "overall"
    dataset: str = ""
    label: str = ""
    higher_is_better: bool | None = None
    decimals: int = 3
    scale: float = 1.0

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.metric, self.setting, self.dataset)

    @property
    def plain_label(self) -> str:
        """The header without the direction arrow (CSV column names)."""
        return self.label.removesuffix(" ↑").removesuffix(" ↓")


def format_number(x: float, decimals: int) -> str:
    """Fixed-point text at ``decimals`` places; ``-0.00`` is written ``0.00``."""
    s = f"{x:.{decimals}f}"
    if re.fullmatch(r"-0\.?0*", s):
        s = s[1:]
    return s


_TEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    "→": r"$\rightarrow$",
    "←": r"$\leftarrow$",
    "±": r"$\pm$",
    "×": r"$\times$",
    "°": r"$^{\circ}$",
    "↓": r"$\downarrow$",
    "↑": r"$\uparrow$",
    "–": "--",
    "—": "---",
    "−": "-",
    "≤": r"$\leq$",
    "≥": r"$\geq$",
}
_SUPERSCRIPTS = {"⁰": "0", "¹": "1", "²": "2", "³": "3", "⁴": "4", "⁵": "5", "⁶": "6", "⁷": "7", "⁸": "8", "⁹": "9", "⁻": "-"}


def latex_escape(text: str) -> str:
    """Escape ``text`` for LaTeX text mode (pdflatex-safe): specials, arrows, ±, ×, °, superscripts."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in _SUPERSCRIPTS:
            j = i
            while j < len(text) and text[j] in _SUPERSCRIPTS:
                j += 1
            out.append(r"\textsuperscript{" + "".join(_SUPERSCRIPTS[c] for c in text[i:j]) + "}")
            i = j
            continue
        out.append(_TEX_SPECIAL.get(ch, ch))
        i += 1
    return "".join(out)


def _md_escape(text: str) -> str:
    return text.replace("|", r"\|")


@dataclass
class Table:
    """A rendered-agnostic table: rows (method, variant) x :class:`Column` of :class:`Cell`.

    ``cells`` is a pandas DataFrame (index: row labels, columns: column labels) holding
    :class:`Cell` objects; :meth:`values` gives the numeric view. Render with
    :meth:`to_markdown`, :meth:`to_latex`, :meth:`to_csv` or :meth:`to_html`.
    """

    name: str
    title: str
    caption: str
    row_keys: list[tuple[str, str]]
    rows: list[str]
    columns: list[Column]
    cells: pd.DataFrame
    row_header: str = "Method"
    notes: list[str] = field(default_factory=list)

    # -- numeric views ------------------------------------------------------------------------
    def values(self) -> pd.DataFrame:
        """Displayed-scale values (NaN where not a number), index = row labels, columns = headers."""
        data = {
            c.label: [self.cells.iloc[i, j].value * c.scale if self.cells.iloc[i, j].status == "ok" else math.nan
                      for i in range(len(self.rows))]
            for j, c in enumerate(self.columns)
        }
        return pd.DataFrame(data, index=pd.Index(self.rows, name=self.row_header))

    def footnotes(self) -> list[tuple[str, str]]:
        """``[(letter, text)]`` for each distinct reason of an n/a or error cell, in reading order."""
        seen: dict[str, str] = {}
        for i in range(len(self.rows)):
            for j in range(len(self.columns)):
                cell = self.cells.iloc[i, j]
                if cell.status in ("n/a", "error") or cell.warn:
                    text = _note_text(cell)
                    if text not in seen:
                        seen[text] = _FOOT_LETTERS[len(seen) % len(_FOOT_LETTERS)] * (1 + len(seen) // len(_FOOT_LETTERS))
        return [(letter, text) for text, letter in seen.items()]

    def _marker(self, cell: Cell) -> str:
        text = _note_text(cell)
        for letter, t in self.footnotes():
            if t == text:
                return letter
        return ""

    def _cell_text(self, cell: Cell, col: Column, fmt: str) -> str:
        if cell.status == "missing":
            return DASH_TEX if fmt == "tex" else DASH_MD
        if cell.status in ("n/a", "error"):
            m = self._marker(cell)
            if fmt == "tex":
                return f"{cell.status}$^{{{m}}}$"
            if fmt == "html":
                return f'<span class="{"na" if cell.status == "n/a" else "err"}" title="{_html.escape(cell.reason, quote=True)}">{cell.status}<sup>{m}</sup></span>'
            return f"{cell.status}<sup>{m}</sup>"
        v = format_number(cell.value * col.scale, col.decimals)
        s = None if cell.std is None else format_number(cell.std * col.scale, col.decimals)
        m = self._marker(cell) if cell.warn else ""
        if fmt == "tex":
            body = v if s is None else f"{v} $\\pm$ {s}"
            body = f"\\textbf{{{body}}}" if cell.best else body
            return f"{body}$^{{\\dagger {m}}}$" if m else body
        body = v if s is None else f"{v} ± {s}"
        if fmt == "html":  # the spread on its own line: narrow columns, no number ever split
            body = v if s is None else f'{v}<span class="sd"> ± {s}</span>'

            body = f"<strong>{body}</strong>" if cell.best else body
            return (f'<span class="warn" title="{_html.escape(cell.warn, quote=True)}">{body}<sup>†{m}</sup></span>'
                    if m else body)
        body = f"**{body}**" if cell.best else body
        return f"{body}<sup>†{m}</sup>" if m else body

    # -- renderers ----------------------------------------------------------------------------
    def to_markdown(self) -> str:
        """GitHub-flavoured Markdown: bold caption line, the table, then footnotes."""
        lines = [f"**{self.title}.** {_md_escape(self.caption)}", ""]
        header = [self.row_header] + [c.label for c in self.columns]
        lines.append("| " + " | ".join(_md_escape(h) for h in header) + " |")
        lines.append("|" + "|".join([":---"] + ["---:"] * len(self.columns)) + "|")
        for i, r in enumerate(self.rows):
            cells = [self._cell_text(self.cells.iloc[i, j], c, "md") for j, c in enumerate(self.columns)]
            lines.append("| " + " | ".join([_md_escape(r)] + cells) + " |")
        notes = self.footnotes()
        if notes or self.notes:
            lines.append("")
            lines.extend(f"- <sup>{m}</sup> {_md_escape(t)}" for m, t in notes)
            lines.extend(f"- {_md_escape(n)}" for n in self.notes)
        return "\n".join(lines) + "\n"

    def to_latex(self) -> str:
        """A ``table`` float with a booktabs ``tabular``; needs ``\\usepackage{booktabs}``."""
        label = "tab:" + re.sub(r"[^A-Za-z0-9:_-]", "-", self.name)
        lines = [
            f"% {self.title}: generated by digan-bench report; needs \\usepackage{{booktabs}}",
            r"\begin{table}[t]",
            r"  \centering",
            f"  \\caption{{{latex_escape(self.caption)}}}",
            f"  \\label{{{label}}}",
            "  \\begin{tabular}{l" + "r" * len(self.columns) + "}",
            r"    \toprule",
            "    " + " & ".join([latex_escape(self.row_header)] + [latex_escape(c.label) for c in self.columns]) + r" \\",
            r"    \midrule",
        ]
        for i, r in enumerate(self.rows):
            cells = [self._cell_text(self.cells.iloc[i, j], c, "tex") for j, c in enumerate(self.columns)]
            lines.append("    " + " & ".join([latex_escape(r)] + cells) + r" \\")
        lines += [r"    \bottomrule", r"  \end{tabular}"]
        notes = self.footnotes()
        if notes or self.notes:
            lines.append(r"  \par\smallskip")
            body = [f"$^{{{m}}}${latex_escape(t)}" for m, t in notes] + [latex_escape(n) for n in self.notes]
            lines.append("  {\\footnotesize " + r" \\ ".join(body) + r"\par}")
        lines.append(r"\end{table}")
        return "\n".join(lines) + "\n"

    def to_frame(self) -> pd.DataFrame:
        """The CSV view: full-precision values, std columns, ``best`` column (see module doc)."""
        data: dict[str, list] = {
            self.row_header: list(self.rows),
            "method": [m for m, _ in self.row_keys],
            "variant": [v for _, v in self.row_keys],
        }
        best: list[list[str]] = [[] for _ in self.rows]
        for j, c in enumerate(self.columns):
            col_cells = [self.cells.iloc[i, j] for i in range(len(self.rows))]
            data[c.plain_label] = [_csv_value(cell.value * c.scale) if cell.status == "ok" else ("" if cell.status == "missing" else cell.status)
                             for cell in col_cells]
            if any(cell.status == "ok" and cell.std is not None for cell in col_cells):
                data[f"{c.plain_label} std"] = [_csv_value(cell.std * c.scale) if cell.status == "ok" and cell.std is not None else ""
                                          for cell in col_cells]
            for i, cell in enumerate(col_cells):
                if cell.best:
                    best[i].append(c.plain_label)
        data["best"] = ["; ".join(b) for b in best]
        return pd.DataFrame(data)

    def to_csv(self) -> str:
        return self.to_frame().to_csv(index=False, lineterminator="\n")

    def to_html(self) -> str:
        """An HTML ``<table>`` (with caption and footnotes); reasons also show as tooltips."""
        esc = _html.escape
        out = [f'<div class="table" id="{esc(self.name)}">',
               f'<p class="caption" id="{esc(self.name)}-caption"><strong>{esc(self.title)}.</strong> {esc(self.caption)}</p>',
               f'<table class="results" aria-describedby="{esc(self.name)}-caption">',
               "<thead><tr>" + f"<th>{esc(self.row_header)}</th>" + "".join(f"<th>{esc(c.label)}</th>" for c in self.columns) + "</tr></thead>",
               "<tbody>"]
        for i, r in enumerate(self.rows):
            tds = []
            for j, c in enumerate(self.columns):
                cell = self.cells.iloc[i, j]
                cls = ' class="best"' if cell.best else ""
                tds.append(f"<td{cls}>{self._cell_text(cell, c, 'html')}</td>")
            out.append(f"<tr><th scope=\"row\">{esc(r)}</th>" + "".join(tds) + "</tr>")
        out.append("</tbody></table>")
        notes = self.footnotes()
        if notes or self.notes:
            out.append('<ul class="notes">' + "".join(f"<li><sup>{m}</sup> {esc(t)}</li>" for m, t in notes)
                       + "".join(f"<li>{esc(n)}</li>" for n in self.notes) + "</ul>")
        out.append("</div>")
        return "\n".join(out) + "\n"


def _note_text(cell: Cell) -> str:
    if cell.warn:
        return f"† not a reliable result: {cell.warn}"
    return cell.reason if cell.status == "n/a" else f"error: {cell.reason}"


def _csv_value(x: float) -> float:
    return float(f"{x:.12g}")


# --------------------------------------------------------------------------------------------
# building tables from records
# --------------------------------------------------------------------------------------------
def _direction(recs: Iterable[Record], metric: str) -> bool | None:
    for r in recs:
        if r.higher_is_better is not None:
            return bool(r.higher_is_better)
    return metric_spec(metric).higher_is_better


def _std(r: Record) -> float | None:
    s = r.stats.get("std") if isinstance(r.stats, dict) else None
    if s is None:
        return None
    try:
        s = float(s)
    except (TypeError, ValueError):
        return None
    return s if math.isfinite(s) else None


def _column_label(metric: str, setting: str, dataset: str, unit: str, hib: bool | None,
                  show_dataset: bool, overall_label: str | None) -> str:
    spec = metric_spec(metric)
    label = spec.label + spec.scale_label
    if setting != "overall":
        label += " " + setting_label(setting)
    elif overall_label:
        label += " " + overall_label
    if show_dataset and dataset:
        label += f" ({dataset})"
    if spec.show_unit and unit:
        label += f" [{unit}]"
    if hib is not None:
        label += " ↑" if hib else " ↓"
    return label


def _make_table(
    records: Sequence[Record],
    name: str,
    title: str,
    caption: str,
    row_keys: list[tuple[str, str]],
    col_keys: list[tuple[str, str, str]],
    rows: list[str] | None = None,
    overall_label: str | None = None,
    row_header: str = "Method",
    notes: list[str] | None = None,
) -> Table:
    """Assemble cells for ``row_keys`` x ``col_keys`` from ``records`` and mark the best values."""
    by_key: dict[tuple, Record] = {}
    for r in records:
        by_key[(r.method, r.variant, r.metric, r.setting, r.dataset)] = r
    datasets_per_metric: dict[str, set[str]] = {}
    settings_per_metric: dict[str, set[str]] = {}
    for m, st, d in col_keys:
        datasets_per_metric.setdefault(m, set()).add(d)
        settings_per_metric.setdefault(m, set()).add(st)

    columns: list[Column] = []
    for metric, setting, dataset in col_keys:
        recs = [by_key[k] for k in by_key if k[2:] == (metric, setting, dataset) and (k[0], k[1]) in row_keys]
        hib = _direction(recs, metric)
        unit = next((r.unit for r in recs if r.unit), "")
        spec = metric_spec(metric)
        columns.append(Column(
            metric, setting, dataset,
            label=_column_label(metric, setting, dataset, unit, hib, len(datasets_per_metric[metric]) > 1,
                                overall_label if len(settings_per_metric[metric]) > 1 else None),
            higher_is_better=hib, decimals=spec.decimals, scale=spec.scale,
        ))

    grid: list[list[Cell]] = []
    for method, variant in row_keys:
        row = []
        for c in columns:
            r = by_key.get((method, variant, c.metric, c.setting, c.dataset))
            if r is None:
                row.append(Cell())
            elif r.status in ("ok", "warn") and r.value is not None and math.isfinite(r.value):
                row.append(Cell(r.value, _std(r), "ok", record=r, warn=r.reason if r.status == "warn" else ""))
            elif r.status in ("ok", "warn"):
                row.append(Cell(None, None, "error", reason="value is not finite", record=r))
            else:
                row.append(Cell(None, None, r.status, reason=r.reason, record=r))
        grid.append(row)

    for j, c in enumerate(columns):
        if c.higher_is_better is None:
            continue
        # a warned number (too few detections) is never "best"
        shown = [(i, round(grid[i][j].value * c.scale, c.decimals)) for i in range(len(grid))
                 if grid[i][j].status == "ok" and not grid[i][j].warn]
        if len(shown) < 2:
            continue
        target = max(v for _, v in shown) if c.higher_is_better else min(v for _, v in shown)
        for i, v in shown:
            if v == target:
                grid[i][j].best = True

    labels = rows if rows is not None else [row_label(m, v) for m, v in row_keys]
    df = pd.DataFrame([[cell for cell in row] for row in grid], index=labels, columns=[c.label for c in columns], dtype=object)
    return Table(name, title, caption, list(row_keys), list(labels), columns, df, row_header=row_header, notes=list(notes or []))


def _seeds_text(seeds: dict) -> str:
    if not seeds:
        return ""
    return ", ".join(f"{k}={v}" for k, v in sorted(seeds.items()))


def _faces_seeds(records: Sequence[Record]) -> tuple[str, str]:
    """('1000' or 'DIGAN (ours) 1000, LiftGAN 500', 'latents=0') for a group of records."""
    n_by_row: dict[str, set[int]] = {}
    for r in records:
        if r.n_faces is not None:
            n_by_row.setdefault(row_label(r.method, r.variant), set()).add(int(r.n_faces))
    all_n = sorted({n for s in n_by_row.values() for n in s})
    if len(all_n) <= 1:
        faces = str(all_n[0]) if all_n else ""
    else:
        faces = ", ".join(f"{k} {'/'.join(map(str, sorted(v)))}" for k, v in n_by_row.items())
    seeds = "; ".join(sorted({_seeds_text(r.seeds) for r in records if r.seeds}))
    return faces, seeds


def _protocol_text(records: Sequence[Record]) -> str:
    """Number of faces and seeds: one sentence when all metrics agree, else one per metric.

    E.g. ``Faces per method: 1000; seeds: latents=0.`` or
    ``FID, KID: 1000 faces, seeds latents=0. ID: 100 faces, seeds latents=1.``; when methods
    differ within a metric each method's count is listed.
    """
    metrics = sorted({r.metric for r in records}, key=lambda m: (SUMMARY_METRICS.index(m) if m in SUMMARY_METRICS else len(SUMMARY_METRICS), m))
    per_metric = {m: _faces_seeds([r for r in records if r.metric == m and r.status == "ok"]) for m in metrics}
    distinct = {v for v in per_metric.values() if v != ("", "")}
    if not distinct:
        return ""
    if len(distinct) == 1:
        faces, seeds = next(iter(distinct))
        parts = ([f"faces per method: {faces}"] if faces else []) + ([f"seeds: {seeds}"] if seeds else [])
        text = "; ".join(parts)
        return text[0].upper() + text[1:] + "."
    groups: dict[tuple[str, str], list[str]] = {}
    for m, fs in per_metric.items():
        if fs != ("", ""):
            groups.setdefault(fs, []).append(metric_spec(m).label)
    out = []
    for (faces, seeds), names in groups.items():
        bits = ([f"{faces} faces"] if faces else []) + ([f"seeds {seeds}"] if seeds else [])
        out.append(f"{', '.join(names)}: {', '.join(bits)}.")
    return " ".join(out)


_EXTRACTOR_KEYS = ("feature_extractor", "extractor", "model_name", "mode")
_RECOGNISER_KEYS = ("recognizer", "recogniser", "recognition_model")


def _config_values(records: Sequence[Record], metrics: tuple[str, ...], keys: tuple[str, ...]) -> str:
    vals = []
    for r in records:
        if r.metric not in metrics or not isinstance(r.config, dict):
            continue
        desc = " ".join(str(r.config[k]) for k in keys if r.config.get(k) not in (None, ""))
        if desc and desc not in vals:
            vals.append(desc)
    return "; ".join(vals)


def _flat_reference(records: Sequence[Record]) -> str:
    """``Flat-plane reference (same faces and masks): SIDE 1.470 ×10⁻², MAD 45.22 deg.`` from the
    ``flat_side`` / ``flat_mad`` stats of SIDE/MAD records (a range when methods' masks differ)."""
    out = []
    for metric in ("side", "mad"):
        vals = [r.stats.get(f"flat_{metric}") for r in records if r.metric == metric and r.status == "ok" and isinstance(r.stats, dict)]
        vals = [float(v) for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]
        if not vals:
            continue
        spec = metric_spec(metric)
        lo, hi = (format_number(v * spec.scale, spec.decimals) for v in (min(vals), max(vals)))
        unit = " deg" if metric == "mad" else (f" {spec.scale_label}" if spec.scale != 1 and spec.scale_label else "")
        out.append(f"{spec.label} {lo}{unit}" if lo == hi else f"{spec.label} {lo}-{hi}{unit}")
    return f"Flat-plane reference (same faces and masks): {', '.join(out)}." if out else ""


def _fid_protocol(records: Sequence[Record]) -> str:
    out = []
    ds = sorted({r.dataset for r in records if r.metric in ("fid", "kid") and r.dataset})
    if ds:
        out.append("Reference data set" + ("s" if len(ds) > 1 else "") + ": " + ", ".join(ds) + ".")
    ext = _config_values(records, ("fid", "kid"), _EXTRACTOR_KEYS)
    if ext:
        out.append(f"Features: {ext}.")
    if any(r.metric in ("fid", "kid") and isinstance(r.config, dict) and r.config.get("inception") is False for r in records):
        out.append("Warning: computed with non-Inception features (offline demo), not comparable to published FID/KID.")
    return " ".join(out)


def unify_datasets(records: Sequence[Record]) -> list[Record]:
    """Records of a metric that carry no data set (an n/a or error record is made before the
    metric knows it) join the metric's data set when the measured records name exactly one, so
    a table has one SIDE column, not ``SIDE`` beside ``SIDE (synth)``."""
    import dataclasses

    named: dict[str, set[str]] = {}
    for r in records:
        if r.status in ("ok", "warn") and r.dataset:
            named.setdefault(r.metric, set()).add(r.dataset)
    out = []
    for r in records:
        ds = named.get(r.metric, set())
        if not r.dataset and r.status not in ("ok", "warn") and len(ds) == 1:
            r = dataclasses.replace(r, dataset=next(iter(ds)))
        out.append(r)
    return out


def _rows(records: Iterable[Record], variants: str | None = "full") -> list[tuple[str, str]]:
    keys = {(r.method, r.variant) for r in records if variants is None or r.variant == variants}
    return sorted(keys, key=lambda k: (method_order(k[0]), variant_order(k[1])))


def _used(records: Sequence[Record], row_keys, col_keys) -> list[Record]:
    rk, ck = set(row_keys), set(col_keys)
    return [r for r in records if (r.method, r.variant) in rk and (r.metric, r.setting, r.dataset) in ck]


def fid_table(records: Sequence[Record], title: str = "Table 1", name: str = "table1_fid") -> Table | None:
    """Table 1: FID and KID (overall) per full method and reference data set; None without FID/KID."""
    records = unify_datasets(records)
    recs = [r for r in records if r.metric in ("fid", "kid") and r.setting == "overall" and r.variant == "full"]
    if not recs:
        return None
    datasets = sorted({r.dataset for r in recs})
    col_keys = [(m, "overall", d) for d in datasets for m in ("fid", "kid") if any(r.metric == m and r.dataset == d for r in recs)]
    row_keys = _rows(recs)
    used = _used(recs, row_keys, col_keys)
    caption = " ".join(x for x in [
        "FID and KID (×10³) of generated faces against real faces (lower is better; best in bold).",
        _fid_protocol(used), _protocol_text(used)] if x)
    return _make_table(recs, name, title, caption, row_keys, col_keys)


def _angle_settings(recs: Iterable[Record]) -> list[str]:
    settings = {r.setting for r in recs if r.setting != "overall"}
    return sorted(settings, key=_setting_sort_key)


def identity_table(records: Sequence[Record], title: str = "Table 2", name: str = "table2_identity") -> Table | None:
    """Table 2: identity similarity per yaw (and pitch) and mean, with FID; None without identity."""
    records = unify_datasets(records)
    ids = [r for r in records if r.metric == "identity" and r.variant == "full"]
    if not ids:
        return None
    id_datasets = sorted({r.dataset for r in ids})
    col_keys = []
    for d in id_datasets:
        sub = [r for r in ids if r.dataset == d]
        col_keys += [("identity", s, d) for s in _angle_settings(sub)]
        if any(r.setting == "overall" for r in sub):
            col_keys.append(("identity", "overall", d))
    fids = [r for r in records if r.metric == "fid" and r.setting == "overall" and r.variant == "full"]
    col_keys += [("fid", "overall", d) for d in sorted({r.dataset for r in fids})]
    row_keys = _rows(ids)
    recs = ids + fids
    used = _used(recs, row_keys, col_keys)
    rec_text = _config_values(used, ("identity",), _RECOGNISER_KEYS)
    caption = " ".join(x for x in [
        "Identity similarity (cosine between face embeddings of the frontal and the rotated render; "
        "higher is better) at each view and its mean, with FID (lower is better); best in bold.",
        f"Recogniser: {rec_text}." if rec_text else "",
        _fid_protocol(used), _protocol_text(used)] if x)
    return _make_table(recs, name, title, caption, row_keys, col_keys, overall_label="mean")


def _summary_columns(recs: Sequence[Record], include_all_settings: bool) -> list[tuple[str, str, str]]:
    """Overall records of each (metric, dataset); metrics without an overall record by setting."""
    metrics = sorted({r.metric for r in recs}, key=lambda m: (SUMMARY_METRICS.index(m) if m in SUMMARY_METRICS else len(SUMMARY_METRICS), m))
    cols = []
    for m in metrics:
        sub = [r for r in recs if r.metric == m]
        for d in sorted({r.dataset for r in sub}):
            dsub = [r for r in sub if r.dataset == d]
            if any(r.setting == "overall" for r in dsub):
                cols.append((m, "overall", d))
            elif include_all_settings:
                cols += [(m, s, d) for s in _angle_settings(dsub)]
    return cols


def ablation_table(records: Sequence[Record], method: str = "digan", title: str = "Table 3",
                   name: str = "table3_ablation") -> Table | None:
    """Table 3: every variant of ``method`` on the summary quality metrics; None with < 2 variants.

    ``method`` is a registry name: records of ``digan:CKPT`` count as ``digan`` (the engine adds
    the checkpoint stem to the name); with several such names the rows say which is which.

    Rows follow :data:`reports.labels.ABLATION_VARIANTS` (full, no_flip, no_identity, no_albedo,
    mlp, plain_conv), then any other variant found. Speed and memory are left to Table 4.
    """
    records = unify_datasets(records)
    recs = [r for r in records if base_method(r.method) == method and r.metric in SUMMARY_METRICS]
    if len({r.variant for r in recs}) < 2:
        return None
    order = list(ABLATION_VARIANTS)
    row_keys = sorted({(r.method, r.variant) for r in recs},
                      key=lambda k: (k[0], order.index(k[1]) if k[1] in order else len(order), k[1]))
    one_method = len({m for m, _ in row_keys}) == 1
    col_keys = _summary_columns(recs, include_all_settings=False)
    used = _used(recs, row_keys, col_keys)
    caption = " ".join(x for x in [
        f"Ablations of {row_label(method, 'full').replace(' (ours)', '')}: the full model, each loss removed, and the "
        "network swaps of this implementation (arrows give the better direction; best in bold).",
        _fid_protocol(used), _protocol_text(used), _flat_reference(used)] if x)
    rows = [variant_label(v) for _, v in row_keys] if one_method else [row_label(m, v) for m, v in row_keys]
    return _make_table(recs, name, title, caption, row_keys, col_keys, rows=rows,
                       row_header="Variant" if one_method else "Method: variant")


def summary_table(records: Sequence[Record], title: str = "Table 4", name: str = "table4_summary") -> Table | None:
    """Table 4: every method and variant on every metric (overall values; per setting otherwise)."""
    records = unify_datasets(records)
    if not records:
        return None
    row_keys = _rows(records, variants=None)
    col_keys = _summary_columns(records, include_all_settings=True)
    used = _used(records, row_keys, col_keys)
    caption = " ".join(x for x in [
        "All summary metrics per method and variant (arrows give the better direction; best in bold).",
        _fid_protocol(used), _protocol_text(used), _flat_reference(used)] if x)
    return _make_table(records, name, title, caption, row_keys, col_keys)


def build_tables(records: Sequence[Record], ablation_method: str = "digan") -> list[Table]:
    """All tables the records allow, numbered in order (a missing table does not leave a gap)."""
    records = unify_datasets(records)
    builders = [
        ("fid", lambda t, n: fid_table(records, title=t, name=n)),
        ("identity", lambda t, n: identity_table(records, title=t, name=n)),
        ("ablation", lambda t, n: ablation_table(records, method=ablation_method, title=t, name=n)),
        ("summary", lambda t, n: summary_table(records, title=t, name=n)),
    ]
    out: list[Table] = []
    for kind, make in builders:
        k = len(out) + 1
        t = make(f"Table {k}", f"table{k}_{kind}")
        if t is not None:
            out.append(t)
    return out


def tables_json(tables: Sequence[Table]) -> str:
    """Machine-readable dump of the tables (labels, values, best flags, footnotes)."""
    out = []
    for t in tables:
        out.append({
            "name": t.name, "title": t.title, "caption": t.caption, "rows": t.rows,
            "columns": [c.label for c in t.columns],
            "cells": [[{"value": None if c.value is None else c.value, "std": c.std, "status": c.status,
                        "reason": c.reason, "best": c.best} for c in row] for row in t.cells.values.tolist()],
        })
    return json.dumps(out, indent=2) + "\n"


def latex_document(tables: Sequence[Table]) -> str:
    """A compilable LaTeX document holding every table (``pdflatex tables.tex``)."""
    body = "\n".join(t.to_latex() for t in tables)
    return (
        "\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage[utf8]{inputenc}\n"
        "\\usepackage{booktabs}\n\\usepackage[margin=1.5cm,landscape]{geometry}\n\\begin{document}\n"
        + body + "\\end{document}\n"
    )
