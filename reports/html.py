"""One self-contained HTML page with every table, figure and the provenance of the numbers.

Self-contained means: images are inlined as ``data:image/png;base64`` URIs, the style sheet is
inline, there is no script and no reference to any other file or host, so the page can be
mailed or archived alone and opens offline.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from dataclasses import dataclass, field
from typing import Any, Sequence

from evaluate.records import Record
from reports.labels import method_order, row_label, variant_order
from reports.tables import Table

__all__ = ["FigureEntry", "render_html", "provenance"]

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d1d1f;background:#fff;line-height:1.45}
main{max-width:1200px;margin:0 auto;padding:1.2rem 1.5rem 3rem}
header{background:#22303c;color:#fff;padding:1rem 1.5rem}
header h1{margin:0 0 .3rem;font-size:1.5rem}
header p{margin:.1rem 0;font-size:.9rem;color:#d7dee4}
nav a{color:#9fd3ff;margin-right:1rem}
h2{border-bottom:2px solid #22303c;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0 1.2rem;font-size:.88rem}
p.caption{margin:1.4rem 0 .2rem;font-size:.9rem;max-width:1100px}
div.table{overflow-x:auto}
table.results{border-top:2px solid #222;border-bottom:2px solid #222}
table.results thead th{border-bottom:1px solid #222}
th,td{padding:.25rem .6rem;text-align:right;white-space:nowrap}
table.results{font-size:.82rem}
table.results th,table.results td{padding:.2rem .45rem}
table.results thead th{white-space:normal;vertical-align:bottom;min-width:3.5rem}
table.results th[scope=row]{white-space:normal;min-width:9rem}
table.results .sd{display:block;font-size:.8em;color:#555}
.warn{cursor:help}
th[scope=row],thead th:first-child,table.kv td:first-child,table.kv th{text-align:left}
td.best{background:#e8f5e9}
.na,.err{color:#8a6d3b;cursor:help}.err{color:#b00020}
ul.notes{font-size:.8rem;color:#555;margin-top:-.6rem}
figure{margin:1rem 0 2rem}figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:.88rem;color:#333;margin-top:.3rem}
details pre{background:#f6f8fa;padding:.6rem;overflow:auto;font-size:.78rem;max-height:30rem}
.muted{color:#666;font-size:.85rem}
code{background:#f2f2f2;padding:0 .2rem}
"""


@dataclass
class FigureEntry:
    """A figure to show: ``png`` bytes, a title and a caption."""

    stem: str
    title: str
    caption: str
    png: bytes


@dataclass
class _Section:
    id: str
    title: str
    body: list[str] = field(default_factory=list)


def _img_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt, quote=True)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def provenance(records: Sequence[Record]) -> dict[str, Any]:
    """Versions, seeds and weight hashes gathered from the records.

    ``versions``: ``{package: [versions seen]}`` (more than one flags a mixed environment);
    ``seeds``: ``{metric: [seed dicts]}``; ``weights``: ``{row label: {name: hash}}``;
    ``configs``: ``{metric: [distinct configs]}``.
    """
    versions: dict[str, list[str]] = {}
    seeds: dict[str, list[str]] = {}
    weights: dict[str, dict[str, str]] = {}
    configs: dict[str, list[str]] = {}
    for r in sorted(records, key=lambda r: (method_order(r.method), variant_order(r.variant), r.metric)):
        for k, v in (r.versions or {}).items():
            vs = versions.setdefault(k, [])
            if str(v) not in vs:
                vs.append(str(v))
        if r.seeds:
            s = json.dumps(r.seeds, sort_keys=True)
            if s not in seeds.setdefault(r.metric, []):
                seeds[r.metric].append(s)
        if r.weights:
            weights.setdefault(row_label(r.method, r.variant), {}).update({k: str(v) for k, v in r.weights.items()})
        if r.config:
            c = json.dumps(r.config, sort_keys=True, default=str)
            if c not in configs.setdefault(r.metric, []):
                configs[r.metric].append(c)
    return {"versions": versions, "seeds": seeds, "weights": weights, "configs": configs}


def _kv_table(rows: list[tuple[str, str]], header: tuple[str, str] | None = None) -> str:
    out = ['<table class="kv">']
    if header:
        out.append(f"<thead><tr><th>{html.escape(header[0])}</th><th>{html.escape(header[1])}</th></tr></thead>")
    for k, v in rows:
        out.append(f"<tr><td>{html.escape(k)}</td><td style=\"text-align:left;white-space:normal\">{v}</td></tr>")
    out.append("</table>")
    return "\n".join(out)


def _status_summary(records: Sequence[Record]) -> str:
    n = {s: sum(r.status == s for r in records) for s in ("ok", "n/a", "error")}
    text = f"{len(records)} records: {n['ok']} measured, {n['n/a']} not applicable, {n['error']} failed."
    errs = [r for r in records if r.status == "error"]
    if not errs:
        return f"<p>{html.escape(text)}</p>"
    items = "".join(
        f"<li><code>{html.escape(row_label(r.method, r.variant))}</code> {html.escape(r.metric)} "
        f"({html.escape(r.setting)}): {html.escape(r.reason)}</li>" for r in errs)
    return f'<p>{html.escape(text)}</p><p class="err">Failed measurements:</p><ul>{items}</ul>'


def render_html(
    title: str,
    records: Sequence[Record],
    tables: Sequence[Table],
    figures: Sequence[FigureEntry],
    run_info: dict[str, Any] | None = None,
    report_info: dict[str, Any] | None = None,
    notes: Sequence[str] = (),
) -> str:
    """The whole page as a string (see the module docstring)."""
    esc = html.escape
    run_info = run_info or {}
    report_info = report_info or {}
    secs = [_Section("summary", "Summary"), _Section("tables", "Tables"), _Section("figures", "Figures"),
            _Section("provenance", "Provenance")]
    s_sum, s_tab, s_fig, s_prov = secs

    s_sum.body.append(_status_summary(records))
    if notes:
        s_sum.body.append('<p class="muted">Not included:</p><ul class="muted">' + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")

    if tables:
        s_tab.body.append('<p class="muted">Best value per column in bold (by the direction stored with '
                          'each record; ties all marked). n/a: the metric does not apply (reason in the note and '
                          'tooltip); a dash: not measured. The same tables are in tables/ as Markdown, LaTeX and CSV.</p>')
        s_tab.body.extend(t.to_html() for t in tables)
    else:
        s_tab.body.append("<p>No table could be built from these records.</p>")

    if figures:
        for i, f in enumerate(figures, 1):
            s_fig.body.append(
                f'<figure id="{esc(f.stem)}">{_img_tag(f.png, f.title)}<figcaption><strong>Figure {i}.</strong> '
                f"{esc(f.title)}. {esc(f.caption)}</figcaption></figure>")
    else:
        s_fig.body.append("<p>No figure could be drawn from these records.</p>")

    prov = provenance(records)
    rows = []
    for k in ("git", "created", "host", "platform", "kind"):
        if run_info.get(k):
            rows.append((f"results {k}", esc(str(run_info[k]))))
    if run_info.get("argv"):
        rows.append(("results command", f"<code>{esc(' '.join(map(str, run_info['argv'])))}</code>"))
    if run_info.get("device"):
        rows.append(("results device", esc(json.dumps(run_info["device"]))))
    for k in ("git", "created", "results"):
        if report_info.get(k):
            rows.append((f"report {k}", esc(str(report_info[k]))))
    if rows:
        s_prov.body.append("<h3>Runs</h3>" + _kv_table(rows))
    if prov["versions"]:
        vrows = []
        for pkg, vs in sorted(prov["versions"].items()):
            mixed = len(vs) > 1
            vrows.append((pkg, ("<span class=\"err\">mixed: </span>" if mixed else "") + esc(", ".join(vs))))
        s_prov.body.append("<h3>Package versions (from the records)</h3>" + _kv_table(vrows, ("package", "version")))
    if prov["seeds"]:
        s_prov.body.append("<h3>Seeds per metric</h3>" + _kv_table(
            [(m, esc("; ".join(v))) for m, v in prov["seeds"].items()], ("metric", "seeds")))
    if prov["weights"]:
        wrows = []
        for who, ws in prov["weights"].items():
            items = ", ".join(f'{esc(k)}: <code title="{esc(v, quote=True)}">{esc(v[:19] + ("…" if len(v) > 19 else ""))}</code>'
                              for k, v in sorted(ws.items()))
            wrows.append((who, items))
        s_prov.body.append("<h3>Weights (sha256)</h3>" + _kv_table(wrows, ("method", "weights")))
    if prov["configs"]:
        blob = json.dumps({m: [json.loads(c) for c in cs] for m, cs in prov["configs"].items()}, indent=2, sort_keys=True)
        s_prov.body.append(f"<details><summary>Metric configurations</summary><pre>{esc(blob)}</pre></details>")
    if run_info.get("config"):
        s_prov.body.append(f"<details><summary>Run configuration (run.json)</summary><pre>{esc(json.dumps(run_info['config'], indent=2, sort_keys=True, default=str))}</pre></details>")
    if len(s_prov.body) == 0:
        s_prov.body.append("<p>The records carry no provenance.</p>")

    created = report_info.get("created") or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    nav = "".join(f'<a href="#{s.id}">{esc(s.title)}</a>' for s in secs)
    head_lines = [f"<p>{esc(str(report_info.get('results', '')))} &middot; generated {esc(str(created))}"
                  + (f" &middot; git {esc(str(report_info['git']))}" if report_info.get("git") else "") + "</p>"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>{esc(title)}</h1>{''.join(head_lines)}<nav>{nav}</nav></header><main>",
    ]
    for s in secs:
        parts.append(f'<section id="{s.id}"><h2>{esc(s.title)}</h2>')
        parts.extend(s.body)
        parts.append("</section>")
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"
