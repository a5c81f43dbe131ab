"""The restoration table and before/after figure of ``digan-bench report`` (records of the
``restore`` metric, :mod:`evaluate.metrics.restore`).

Table: one row per restorer -- the damaged input, OpenCV Telea, and for each method that was
evaluated its 2D masked inversion of the teacher, its 3D render and its 3D + symmetric
completion (the method's own value is the row its ``symmetry`` option chose, marked "(reported)")
-- and a LiftGAN row that is ``n/a`` with the reason when no LiftGAN records exist. Columns: PSNR,
SSIM and depth error in the whole damaged region, then the same on the missing ear alone (faces
with a missing ear). Best per column in bold. The reference rows are the ones stored in the
records' ``stats.references``: every row is scored on the same faces and regions.

Figure: ``RESULTS/restore/*/examples.npz`` as a grid: rows are faces (a missing ear first),
columns the damaged input with its region outlined, Telea, 2D inversion, the 3D render, the 3D +
symmetric completion, the undamaged twin, and the completed head seen frontally.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from evaluate.records import Record
from reports.labels import base_method, method_label
from reports.tables import Cell, Column, Table

__all__ = ["restore_table", "restore_figure", "LIFTGAN_NA"]

LIFTGAN_NA = ("no LiftGAN records: the bundled digan/assets/tiny_liftgan_64.pt is not there yet; "
              "run with --methods digan,liftgan:CKPT (a 'train --model liftgan' student)")
_SCORES = (("psnr", "PSNR (dB)", True, 2, 1.0), ("ssim", "SSIM", True, 3, 1.0), ("depth", "depth err ×10⁻²", False, 2, 100.0))
_SETTINGS = (("overall", ""), ("damage=ear", "ear "))
_REF_ROWS = (("damaged", "Damaged input (no restoration)"), ("telea", "OpenCV inpainting (Telea)"))
_METHOD_ROWS = (("inversion_2d", "2D masked inversion (teacher of {m})"), ("render_3d", "{m}: 3D render"),
                ("symmetric_3d", "{m}: 3D + symmetric completion"))


def _cell(d: dict | None) -> Cell:
    if d is None:
        return Cell()
    if d.get("status") == "n/a" or d.get("value") is None:
        return Cell(status="n/a", reason=d.get("reason", "not applicable"))
    v = d["value"]
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return Cell(status="n/a", reason="no face had pixels in this region")
    sd = d.get("std")
    return Cell(value=float(v), std=float(sd) if sd is not None and math.isfinite(sd) else None, status="ok")


def restore_table(records: Sequence[Record], title: str = "Restoration", name: str = "restore") -> Table | None:
    """The restoration table (module docstring), or None without ``restore_*`` records."""
    recs = [r for r in records if r.metric.startswith("restore_") and r.status == "ok"]
    if not recs:
        return None
    by = {(r.method, r.variant, r.metric, r.setting): r for r in recs}
    methods: list[tuple[str, str]] = []
    for r in recs:
        if (r.method, r.variant) not in methods:
            methods.append((r.method, r.variant))
    columns = [Column(metric=f"restore_{sc}", setting=st, label=f"{pre}{lab} {'↑' if hib else '↓'}", higher_is_better=hib,
                      decimals=dec, scale=scale)
               for st, pre in _SETTINGS for sc, lab, hib, dec, scale in _SCORES]
    rows: list[str] = []
    cells: list[list[Cell]] = []

    def ref_row(method: tuple[str, str], key: str) -> list[Cell]:
        out = []
        for st, _ in _SETTINGS:
            for sc, *_ in _SCORES:
                r = by.get((*method, f"restore_{sc}", st))
                out.append(_cell(r.stats.get("references", {}).get(key)) if r is not None else Cell())
        return out

    first = methods[0]
    for key, label in _REF_ROWS:
        rows.append(label)
        cells.append(ref_row(first, key))
    for m in methods:
        ml = method_label(m[0]) + ("" if m[1] in ("", "full") else f" @{m[1]}")
        some = next(r for r in recs if (r.method, r.variant) == m)
        own = "symmetric_3d" if some.config.get("symmetry") else "render_3d"
        for key, label in _METHOD_ROWS:
            rows.append(label.format(m=ml) + (" (reported)" if key == own else ""))
            cells.append(ref_row(m, key))
    if not any(base_method(m[0]) == "liftgan" for m in methods):
        rows.append("LiftGAN")
        cells.append([Cell(status="n/a", reason=LIFTGAN_NA) for _ in columns])
    for j, col in enumerate(columns):
        vals = [(round(c[j].value * col.scale, col.decimals), i) for i, c in enumerate(cells) if c[j].status == "ok"]
        if len(vals) >= 2:
            best = max(v for v, _ in vals) if col.higher_is_better else min(v for v, _ in vals)
            for v, i in vals:
                cells[i][j].best = v == best
    df = pd.DataFrame([[c for c in row] for row in cells], index=rows, columns=[c.label for c in columns])
    n = next((r.n_faces for r in recs if r.setting == "overall"), None)
    n_ear = next((r.n_faces for r in recs if r.setting == "damage=ear"), 0)
    cfg = recs[0].config
    caption = (f"Restoration of damaged synthetic heads against their undamaged twins, in the damaged region "
               f"({n} faces; ear columns: the missing ear alone, {n_ear} faces). Masked teacher inversion "
               f"({cfg.get('inversion_steps')} steps; 3D rows refined through the student for {cfg.get('refine_steps', 0)}), "
               f"seam correction sigma {cfg.get('harmonize')} px for every model fill; "
               "depth error: mean |log-depth| after aligning the scale on the undamaged face (×10⁻²). "
               "Mean ± std over faces; best in bold.")
    return Table(name=name, title=title, caption=caption, row_keys=[(r, "full") for r in rows], rows=rows,
                 columns=columns, cells=df, row_header="Restorer")


_FIG_COLS = (("damaged", "damaged input"), ("telea", "Telea"), ("inversion_2d", "2D inversion"), ("render_3d", "3D render"),
             ("symmetric_3d", "3D + symmetry"), ("twin", "undamaged twin"), ("canonical", "completed, frontal"))


def restore_figure(results: str | Path, max_faces: int = 6):
    """Before/after grid from the saved examples (module docstring), or None without them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = sorted(Path(results).glob("restore/*/examples.npz"))
    if not files:
        return None
    blocks = []
    for f in files:
        with np.load(f) as z:
            ex = {k: z[k] for k in z.files}
        k = min(max_faces, len(ex["damaged"]))
        blocks.append((f.parent.name, ex, k))
    n_rows = sum(k for _, _, k in blocks)
    cols = [c for c in _FIG_COLS if c[0] in blocks[0][1]]
    fig, axes = plt.subplots(n_rows, len(cols), figsize=(1.25 * len(cols), 1.3 * n_rows + 0.4), squeeze=False)
    row = 0
    for label, ex, k in blocks:
        for i in range(k):
            for j, (key, title) in enumerate(cols):
                ax = axes[row, j]
                ax.imshow(ex[key][i], interpolation="nearest")
                if key == "damaged":
                    ax.contour(ex["region"][i].astype(float), levels=[0.5], colors="yellow", linewidths=0.6)
                    if bool(ex["ear"][i]):
                        ax.contour(ex["ear_region"][i].astype(float), levels=[0.5], colors="cyan", linewidths=0.6)
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0:
                    ax.set_title(title, fontsize=7)
                if j == 0:
                    ax.set_ylabel(f"{label}\n#{int(ex['index'][i])}" + (" (ear)" if bool(ex["ear"][i]) else ""), fontsize=6)
            row += 1
    fig.tight_layout(pad=0.3)
    return fig
