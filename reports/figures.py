"""Figures for the report, drawn with matplotlib (Agg) and saved as PNG and PDF.

From records only (always available)
------------------------------------
* :func:`metric_vs_yaw_figure`: a metric (identity similarity, pose error) against yaw, one line
  per method, error bars from ``stats["std"]``; methods whose metric is n/a are listed under
  the plot with the reason.
* :func:`metric_bars_figure`: one horizontal bar chart per summary metric (FID, KID, ID, pose,
  SIDE, MAD...), best bar highlighted, n/a written as text.
* :func:`loss_curves_figure`: training losses from ``losses.csv`` of one or more run folders
  (a ``step`` column and one column per loss), raw (faint) and EMA-smoothed.
* :func:`shape_eval_figure`: SIDE, MAD, depth roughness and DV-yaw correlation on held-out heads
  against step (``shape_eval.jsonl`` of runs trained with ``--eval-data``), one line per run,
  prior-only, flat-plane and ground-truth references dashed.

From models (when ``Method`` objects are given; see :class:`evaluate.methods.Method`)
-----------------------------------------------------------------------------------
* :func:`sample_grid_figure` (paper Figure 2): each face rendered at several yaws, then the
  *shape* from the side: the method's returned normals (or normals computed from its depth),
  shaded as grey clay under a fixed key light. Methods without pose control get the frontal
  image only; methods without depth get no shape columns (the cells say why).
* :func:`relighting_figure` (paper Figure 3): each face under several lights, the Lambertian
  shading map ``ambient + diffuse * max(0, n . l)`` of each light, and the normal map.
* :func:`profile_figure` (``bench shape --figure``): held-out synthetic heads from the side, the
  true head beside the student's shape, as grey clay.
* :func:`ablation_figure` (paper Figure 4): the same faces (same seed and latents) rendered by
  every ablation variant, with a side view of the shape.

Conventions: normals follow the renderer's (Unsup3d/LiftedGAN) camera frame in which a surface
facing the camera has ``n_z > 0`` and a light ``l = normalize(dx, dy, 1)`` from
:class:`digan.render.types.Light` lights it. The clay render is *two-sided* (a normal with
``n_z < 0`` is flipped) so that a method using the opposite sign still shows its shape; the
shading maps of Figure 3 use the documented convention as is. When a method returns depth but
no normals, normals come from the depth map unprojected with the renderer's pinhole camera
(field of view 10 degrees, focal ``(S-1)/2 / tan(fov/2)``), by central differences.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from digan.errors import DiganError  # noqa: E402
from digan.render.types import Light  # noqa: E402
from digan.utils.io import write_bytes  # noqa: E402
from evaluate.records import Record  # noqa: E402
from reports.labels import (  # noqa: E402
    base_method,
    metric_spec,
    method_order,
    parse_setting,
    row_label,
    variant_label,
    variant_order,
)

__all__ = [
    "save_figure",
    "metric_vs_yaw_figure",
    "metric_bars_figure",
    "read_losses",
    "loss_curves_figure",
    "shape_eval_figure",
    "normals_from_depth",
    "clay_render",
    "shading_map",
    "normal_map",
    "sample_grid_figure",
    "relighting_figure",
    "ablation_figure",
    "DEFAULT_LIGHTS",
]

_DPI = 120
_PALETTE = plt.get_cmap("tab10")


def save_figure(fig: "plt.Figure", out_dir: str | Path, stem: str, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Save ``fig`` as ``out_dir/stem.<fmt>`` for each format (atomic writes), then close it.

    PDF and PNG metadata carry no timestamp, so the same figure gives the same bytes.
    """
    paths = []
    for fmt in formats:
        buf = io.BytesIO()
        meta = {"CreationDate": None, "ModDate": None} if fmt == "pdf" else ({"Software": None} if fmt == "png" else None)
        fig.savefig(buf, format=fmt, dpi=_DPI if fmt == "png" else None, bbox_inches="tight", metadata=meta)
        paths.append(write_bytes(Path(out_dir) / f"{stem}.{fmt}", buf.getvalue()))
    plt.close(fig)
    return paths


# --------------------------------------------------------------------------------------------
# figures from records
# --------------------------------------------------------------------------------------------
def _yaw_of(setting: str) -> float | None:
    """Yaw of a setting such as ``yaw=30`` or ``pitch=0,yaw=30``; None if pitch is not 0 or no yaw."""
    kv = parse_setting(setting)
    if "yaw" not in kv:
        return None
    try:
        if float(kv.get("pitch", 0)) != 0.0:
            return None
        return float(kv["yaw"])
    except ValueError:
        return None


def metric_vs_yaw_figure(records: Sequence[Record], metric: str = "identity", variants: str | None = "full",
                         method: str | None = None) -> "plt.Figure | None":
    """``metric`` against yaw (pitch 0), one line per method (or per variant of ``method``).

    ``variants="full"`` plots the full models; ``variants=None`` with ``method="digan"`` plots
    that method's ablation variants. Returns None when no record has a per-yaw value.
    """
    recs = [r for r in records if r.metric == metric and (variants is None or r.variant == variants)
            and (method is None or base_method(r.method) == method)]
    series: dict[tuple[str, str], list[tuple[float, float, float | None]]] = {}
    na: dict[tuple[str, str], str] = {}
    warned: dict[tuple[str, str], str] = {}
    for r in recs:
        key = (r.method, r.variant)
        y = _yaw_of(r.setting)
        if r.status == "warn" and r.setting == "overall":
            warned.setdefault(key, r.reason)
        if r.status not in ("ok", "warn"):
            na.setdefault(key, f"{r.status}: {r.reason}")
            continue
        if y is None or r.value is None or not math.isfinite(r.value):
            continue
        std = r.stats.get("std") if isinstance(r.stats, dict) else None
        series.setdefault(key, []).append((y, r.value, float(std) if std is not None else None))
    if not series:
        return None
    spec = metric_spec(metric)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    keys = sorted(series, key=lambda k: (method_order(k[0]), variant_order(k[1])))
    for i, key in enumerate(keys):
        pts = sorted(series[key])
        x = np.array([p[0] for p in pts])
        y = np.array([p[1] for p in pts]) * spec.scale
        err = np.array([p[2] if p[2] is not None else 0.0 for p in pts]) * spec.scale
        label = variant_label(key[1]) if method is not None and len({k[0] for k in keys}) == 1 else row_label(*key)
        warn = key in warned
        ax.errorbar(x, y, yerr=err if np.any(err > 0) else None, marker="o", ms=4, capsize=3, lw=1.5,
                    ls="--" if warn else "-", mfc="white" if warn else None,
                    color=_PALETTE(i % 10), label=label + (" † (too few detections)" if warn else ""))
    unit = next((r.unit for r in recs if r.unit), "")
    ax.set_xlabel("yaw (degrees)")
    ax.set_ylabel(f"{spec.label}{spec.scale_label}" + (f" [{unit}]" if unit else ""))
    hib = next((r.higher_is_better for r in recs if r.higher_is_better is not None), spec.higher_is_better)
    arrow = "" if hib is None else (" (higher is better)" if hib else " (lower is better)")
    ax.set_title(f"{spec.label} vs yaw{arrow}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    missing = [k for k in na if k not in series]
    notes = [f"{row_label(*k)}: {na[k]}" for k in sorted(missing, key=lambda k: (method_order(k[0]), k[1]))]
    notes += [f"† {row_label(*k)}: {warned[k]}" for k in sorted(warned, key=lambda k: (method_order(k[0]), k[1])) if k in series]
    if notes:
        fig.text(0.01, -0.02, _wrap("; ".join(notes), 110), fontsize=7, va="top", color="0.35")
    fig.tight_layout()
    return fig


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def metric_bars_figure(records: Sequence[Record], metrics: Sequence[str] | None = None) -> "plt.Figure | None":
    """One bar chart per summary metric (overall records), rows = method/variant, best highlighted."""
    from reports.tables import SUMMARY_METRICS, unify_datasets

    overall = [r for r in unify_datasets(records) if r.setting == "overall"]
    present = [m for m in (metrics or SUMMARY_METRICS) if any(r.metric == m for r in overall)]
    if not present:
        return None
    rows = sorted({(r.method, r.variant) for r in overall if r.metric in present},
                  key=lambda k: (method_order(k[0]), variant_order(k[1])))
    ncol = min(3, len(present))
    nrow = math.ceil(len(present) / ncol)
    label_w = 0.075 * max(len(row_label(*k)) for k in rows) + 0.3  # inches for the row labels
    fig, axes = plt.subplots(nrow, ncol, figsize=(label_w + 2.8 * ncol, (0.28 * len(rows) + 0.9) * nrow),
                             squeeze=False, sharey=True)
    for k, m in enumerate(present):
        ax = axes[k // ncol][k % ncol]
        spec = metric_spec(m)
        datasets = sorted({r.dataset for r in overall if r.metric == m})
        # the data set with the most numbers (the tables list all of them)
        d = max(datasets, key=lambda x: (sum(r.metric == m and r.dataset == x and r.status in ("ok", "warn") for r in overall),
                                         -datasets.index(x)))
        by_row = {(r.method, r.variant): r for r in overall if r.metric == m and r.dataset == d}
        vals, errs, labels, texts, warns = [], [], [], [], []
        for key in rows:
            r = by_row.get(key)
            labels.append(row_label(*key))
            if r is not None and r.status in ("ok", "warn") and r.value is not None and math.isfinite(r.value):
                vals.append(r.value * spec.scale)
                s = r.stats.get("std") if isinstance(r.stats, dict) else None
                errs.append(float(s) * spec.scale if s is not None else 0.0)
                texts.append(None)
                warns.append(r.status == "warn")
            else:
                vals.append(0.0)
                errs.append(0.0)
                warns.append(False)
                texts.append("n/a" if r is None or r.status == "n/a" else r.status if r.status != "ok" else "not finite")
        hib = next((r.higher_is_better for r in by_row.values() if r.higher_is_better is not None), spec.higher_is_better)
        ok = [v for v, t, w in zip(vals, texts, warns) if t is None and not w]  # a warned bar is never best
        best = (max(ok) if hib else min(ok)) if (ok and hib is not None and len(ok) > 1) else None
        colors = ["tab:orange" if (t is None and not w and best is not None and round(v, spec.decimals) == round(best, spec.decimals))
                  else "tab:blue" for v, t, w in zip(vals, texts, warns)]
        y = np.arange(len(rows))
        bars = ax.barh(y, vals, xerr=[e if e > 0 else 0 for e in errs], color=colors, capsize=2)
        for b, w in zip(bars, warns):
            if w:  # too few detections: hatched, pale, marked with a dagger
                b.set_hatch("///")
                b.set_alpha(0.45)
        for yi, t, w in zip(y, texts, warns):
            if t is not None:
                ax.text(0, yi, f" {t}", va="center", fontsize=7, color="0.4")
            elif w:
                ax.text(0, yi, " † few detections", va="center", fontsize=7, color="0.2")
        ax.set_yticks(y, labels, fontsize=7)
        if k == 0:
            ax.invert_yaxis()  # shared y axis: invert once
        arrow = "" if hib is None else (" ↑" if hib else " ↓")
        # a long data set name ("synth [randproj features, not Inception]") must not run into the
        # neighbouring panel's title: shorten the bracket to "*" and wrap to the panel width
        dname = d.split(" [")[0] + (" *" if " [" in d else "") if d else ""
        ax.set_title(_wrap(f"{spec.label}{spec.scale_label}{arrow}" + (f" ({dname})" if dname else ""), 30), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    for k in range(len(present), nrow * ncol):
        axes[k // ncol][k % ncol].axis("off")
    starred = sorted({r.dataset for r in overall if r.metric in present and " [" in r.dataset})
    if starred:
        fig.text(0.01, -0.01, _wrap("; ".join(f"* {x}" for x in starred), 110), fontsize=7, va="top", color="0.35")
    fig.tight_layout()
    return fig


_NON_LOSS = {"step", "epoch", "time", "wall", "wall_time", "elapsed", "lr", "learning_rate", "iter", "iteration"}


def read_losses(run_dir: str | Path) -> pd.DataFrame:
    """``run_dir/losses.csv`` (or a CSV path) as a DataFrame with a numeric ``step`` column."""
    p = Path(run_dir)
    f = p if p.is_file() else p / "losses.csv"
    if not f.is_file():
        raise DiganError(f"no losses.csv in {p}; pass a training run folder (digan-bench train --out DIR)")
    try:
        df = pd.read_csv(f)
    except Exception as e:
        raise DiganError(f"{f} is not a readable CSV ({type(e).__name__}); regenerate it by training again") from e
    if "step" not in df.columns:
        raise DiganError(f"{f} has no 'step' column; it was not written by digan-bench train")
    return df


def loss_curves_figure(run_dirs: Sequence[str | Path], smooth: float = 0.04, labels: Sequence[str] | None = None) -> "plt.Figure | None":
    """Loss curves of one or more runs: one panel per loss column, one line per run.

    Each curve is drawn raw (faint) and smoothed by an exponential moving average whose span is
    the fraction ``smooth`` of the curve's points (0 = no smoothing), so short and long runs
    are smoothed alike and the smoothed curve lags by about that fraction. A panel uses a log y axis when all its values are positive and span
    more than a factor 20.
    """
    runs = [(labels[i] if labels else Path(d).name or str(d), read_losses(d)) for i, d in enumerate(run_dirs)]
    if not runs:
        return None
    names: list[str] = []
    for _, df in runs:
        for c in df.columns:
            if c.lower() not in _NON_LOSS and pd.api.types.is_numeric_dtype(df[c]) and c not in names:
                names.append(c)
    if not names:
        raise DiganError("the losses.csv files have no numeric loss column besides 'step'")
    ncol = min(3, len(names))
    nrow = math.ceil(len(names) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.0 * ncol, 2.8 * nrow), squeeze=False)
    for k, name in enumerate(names):
        ax = axes[k // ncol][k % ncol]
        allv = []
        for i, (label, df) in enumerate(runs):
            if name not in df.columns:
                continue
            d = df[["step", name]].apply(pd.to_numeric, errors="coerce")
            d = d[np.isfinite(d["step"]) & np.isfinite(d[name])].sort_values("step")
            x, y = d["step"].to_numpy(float), d[name].to_numpy(float)
            if len(x) == 0:
                continue
            allv.append(y)
            color = _PALETTE(i % 10)
            span = smooth * len(y)
            if span >= 2:
                ax.plot(x, y, color=color, alpha=0.25, lw=0.8)
                ys = pd.Series(y).ewm(span=span).mean().to_numpy()
                ax.plot(x, ys, color=color, lw=1.5, label=label)
            else:  # few points: markers, so that a single logged value is visible
                ax.plot(x, y, color=color, lw=1.5, marker="o", ms=4, label=label)
        if allv:
            v = np.concatenate(allv)
            v = v[np.isfinite(v)]
            if len(v) and v.min() > 0 and v.max() / v.min() > 20:
                ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "no finite values logged", ha="center", va="center", fontsize=8, color="0.4",
                    transform=ax.transAxes)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
        if len(allv) > 1:  # only the runs drawn in this panel
            ax.legend(fontsize=7)
    for k in range(len(names), nrow * ncol):
        axes[k // ncol][k % ncol].axis("off")
    fig.tight_layout()
    return fig


#: panels of :func:`shape_eval_figure`: (title, student column, [(reference column, label, style)])
_SHAPE_PANELS = (
    ("SIDE (held-out heads)", "side", [("prior_side", "prior only", "--"), ("posed_prior_side", "prior at DV pose", ":"),
                                       ("flat_side", "flat plane", "-.")]),
    ("MAD (degrees)", "mad", [("prior_mad", "prior only", "--"), ("posed_prior_mad", "prior at DV pose", ":"),
                              ("flat_mad", "flat plane", "-."), ("one_head_mad", "one head (mean code's depth)", (0, (5, 1, 1, 1, 1, 1))),
                              ("mean_true_head_mad", "best one head (ground truth)", (0, (1, 3)))]),
    ("depth roughness (mean |Laplacian|)", "roughness", [("prior_roughness", "prior only", "--"), ("roughness_gt", "ground truth", ":")]),
    ("DV yaw and DL light vs the truth (1 = perfect)", "yaw_corr",
     [("yaw_slope", "yaw slope", ":"), ("light_dx_corr", "light dx corr", "--"), ("light_dy_corr", "light dy corr", "-."),
      ("pitch_corr", "pitch corr", (0, (1, 3)))]),
)


def shape_eval_figure(run_dirs: Sequence[str | Path], labels: Sequence[str] | None = None) -> "plt.Figure | None":
    """3D accuracy during training (``shape_eval.jsonl`` of runs trained with ``--eval-data``):
    SIDE, MAD, depth roughness and the DV-yaw correlation against step, one colour per run
    (solid, with markers), the run's prior-only, posed-prior and flat-plane references dashed /
    dotted / dash-dotted,
    for roughness the ground truth's, beside the yaw correlation its slope (dotted) and the
    correlation of DL's light direction with the true light (dx dashed, dy dash-dotted) and of DV's
    pitch with the true pitch (dotted), in the MAD panel also "one head" and the best one head (the
    ground truth's mean head, dotted); runs logged before a column have none of it. None when no
    run has evaluations."""
    from digan.student.diagnostics import read_shape_eval

    dirs = [Path(d) for d in run_dirs]
    names = [labels[i] if labels else (d.name or str(d)) for i, d in enumerate(dirs)]
    if not labels:  # same folder names (runs/a/digan, runs/b/digan): add the parent
        names = [f"{d.parent.name}/{n}" if names.count(n) > 1 else n for d, n in zip(dirs, names)]
    runs = [(n, pd.DataFrame(rows)) for n, rows in ((n, read_shape_eval(d)) for n, d in zip(names, dirs)) if rows]
    if not runs:
        return None
    fig, axes = plt.subplots(2, 2, figsize=(9.0, 6.0), squeeze=False)
    from matplotlib.lines import Line2D

    for k, (title, col, refs) in enumerate(_SHAPE_PANELS):
        ax = axes[k // 2][k % 2]
        for i, (label, df) in enumerate(runs):
            color = _PALETTE(i % 10)
            x = df["step"].to_numpy(float)
            y = pd.to_numeric(df.get(col), errors="coerce").to_numpy(float) if col in df else np.full(len(x), np.nan)
            ax.plot(x, y, color=color, lw=1.5, marker="o", ms=3, label=label)
            for rcol, _, style in refs:
                if rcol in df:
                    ax.plot(x, pd.to_numeric(df[rcol], errors="coerce").to_numpy(float), color=color, lw=1.0, ls=style, alpha=0.8)
        if col == "yaw_corr":
            ax.axhline(1.0, color="grey", lw=0.8, ls=":")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
        handles = [Line2D([], [], color=_PALETTE(i % 10), lw=1.5, marker="o", ms=3, label=label) for i, (label, _) in enumerate(runs)]
        handles += [Line2D([], [], color="grey", lw=1.0, ls=style, label=name) for _, name, style in refs]
        ax.legend(handles=handles, fontsize=7)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# shape and shading images
# --------------------------------------------------------------------------------------------
def normals_from_depth(depth: torch.Tensor, fov: float = 10.0) -> torch.Tensor:
    """(B,1,H,W) camera depth -> (B,3,H,W) unit normals (``n_z > 0`` facing the camera).

    Pixels are unprojected with the renderer's pinhole camera (``fov`` degrees, focal
    ``(S-1)/2 / tan(fov/2)``, centre ``(S-1)/2``); normals are ``d/dx x d/dy`` by central
    differences (one-sided at the border).
    """
    b, _, h, w = depth.shape
    d = depth[:, 0] if depth.is_floating_point() else depth[:, 0].float()
    f = (max(h, w) - 1) / 2 / math.tan(math.radians(fov) / 2)
    v, u = torch.meshgrid(torch.arange(h, dtype=d.dtype, device=d.device), torch.arange(w, dtype=d.dtype, device=d.device), indexing="ij")
    p = torch.stack([(u - (w - 1) / 2) / f * d, (v - (h - 1) / 2) / f * d, d], dim=1)  # B,3,H,W
    pp = torch.nn.functional.pad(p, (1, 1, 1, 1), mode="replicate")
    tu = pp[:, :, 1:-1, 2:] - pp[:, :, 1:-1, :-2]
    tv = pp[:, :, 2:, 1:-1] - pp[:, :, :-2, 1:-1]
    n = torch.cross(tu, tv, dim=1)
    return n / n.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _normals(r, fov: float = 10.0) -> torch.Tensor | None:
    if r.normal is not None:
        return r.normal.float()
    if r.depth is not None:
        return normals_from_depth(r.depth, fov)
    return None


def _mask(r) -> torch.Tensor:
    if r.mask is not None:
        return (r.mask.float() > 0.5).float()
    b, _, h, w = r.image.shape
    if r.depth is not None:
        return torch.isfinite(r.depth).float()
    return torch.ones(b, 1, h, w)


_CLAY_LIGHT = (-0.5, -0.6)  # key light from the upper left (image y points down)


def clay_render(normal: torch.Tensor, mask: torch.Tensor, light: tuple[float, float] = _CLAY_LIGHT) -> torch.Tensor:
    """Grey clay image in [-1,1] (B,3,H,W): ``0.15 + 0.85 * max(0, n . l)`` on the mask, white outside.

    Two-sided: normals with ``n_z < 0`` are flipped before shading (see the module docstring).
    """
    n = torch.where(normal[:, 2:3] < 0, -normal, normal)
    l = torch.tensor([light[0], light[1], 1.0], dtype=n.dtype, device=n.device)
    l = l / l.norm()
    shade = 0.15 + 0.85 * (n * l.view(1, 3, 1, 1)).sum(1, keepdim=True).clamp_min(0)
    img = 0.85 * shade * mask + (1 - mask)
    return (img * 2 - 1).clamp(-1, 1).expand(-1, 3, -1, -1)


def shading_map(normal: torch.Tensor, light: Light, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Lambertian shading ``ambient + diffuse * max(0, n . l)`` (B,1,H,W), unclipped; 0 outside ``mask``."""
    l = light.unit_direction().to(normal)
    s = light.ambient.to(normal).view(-1, 1, 1, 1) + light.diffuse.to(normal).view(-1, 1, 1, 1) * (
        (normal * l.view(-1, 3, 1, 1)).sum(1, keepdim=True).clamp_min(0))
    return s if mask is None else s * mask


def normal_map(normal: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Normals shown as colours ``(n + 1) / 2`` in [-1,1] image space; white outside ``mask``."""
    img = normal.clamp(-1, 1)  # (n+1)/2 in [0,1]  <=>  n in [-1,1]
    return img if mask is None else img * mask + (1 - mask)


# --------------------------------------------------------------------------------------------
# image grid figures
# --------------------------------------------------------------------------------------------
def _to_np(img: torch.Tensor) -> np.ndarray:
    """(3,H,W) in [-1,1] -> (H,W,3) float in [0,1]."""
    return ((img.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()


def _grid_figure(cells: list[list[np.ndarray | str]], col_titles: list[str], row_titles: list[str],
                 title: str, cell_px: int = 128) -> "plt.Figure":
    """Compose image cells (or text for a missing cell) into one figure with row/column titles."""
    nr, nc = len(cells), len(col_titles)
    pad = 4
    canvas = np.ones((nr * (cell_px + pad) + pad, nc * (cell_px + pad) + pad, 3))
    texts = []
    for i, row in enumerate(cells):
        for j, c in enumerate(row):
            y0, x0 = pad + i * (cell_px + pad), pad + j * (cell_px + pad)
            if isinstance(c, np.ndarray):
                t = torch.from_numpy(np.ascontiguousarray(c)).permute(2, 0, 1)[None].float()
                if t.shape[-1] != cell_px or t.shape[-2] != cell_px:
                    t = torch.nn.functional.interpolate(t, size=(cell_px, cell_px), mode="bilinear", align_corners=False, antialias=True)
                canvas[y0:y0 + cell_px, x0:x0 + cell_px] = t[0].permute(1, 2, 0).clamp(0, 1).numpy()
            else:
                canvas[y0:y0 + cell_px, x0:x0 + cell_px] = 0.93
                texts.append((x0 + cell_px / 2, y0 + cell_px / 2, c))
    h, w = canvas.shape[:2]
    left, top = 1.7, 0.55
    fig = plt.figure(figsize=(w / _DPI + left + 0.1, h / _DPI + top + 0.1), dpi=_DPI)
    ax = fig.add_axes([left / fig.get_figwidth(), 0.05 / fig.get_figheight(), w / _DPI / fig.get_figwidth(), h / _DPI / fig.get_figheight()])
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    for x, y, t in texts:
        ax.text(x, y, _wrap(t, 18), ha="center", va="center", fontsize=7, color="0.3")
    for j, t in enumerate(col_titles):
        ax.text(pad + j * (cell_px + pad) + cell_px / 2, -6, t, ha="center", va="bottom", fontsize=8)
    for i, t in enumerate(row_titles):
        ax.text(-8, pad + i * (cell_px + pad) + cell_px / 2, t, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=10, y=1 - 0.05 / fig.get_figheight(), va="top")
    return fig


def method_row_label(m) -> str:
    """A model figure's row label: ``m.display_label`` when the report set one (two checkpoints of
    one method are told apart by the spec the user gave), else the method's paper label."""
    return getattr(m, "display_label", None) or row_label(m.name, m.variant)


def _render(method, z: torch.Tensor, yaw: float, light: Light | None = None):
    with torch.no_grad():
        return method.render(z, yaw=yaw, pitch=0.0, light=light)


def _yaw_label(y: float) -> str:
    return f"yaw {y:g}°"


def _sample_rows(methods: Sequence, n_faces: int, seed: int, yaws: Sequence[float], shape_yaws: Sequence[float],
                 label: Callable[[object], str]) -> tuple[list[list], list[str], list[str]]:
    cols = [_yaw_label(y) for y in yaws] + [f"shape {y:g}°" for y in shape_yaws]
    cells, rows = [], []
    for m in methods:
        caps = m.capabilities
        z = m.latents(n_faces, seed).to(m.device)
        per_col: list[list] = []
        for y in yaws:
            if y != 0 and not caps.pose:
                per_col.append([caps.missing_reason("pose")] * n_faces)
                continue
            r = _render(m, z, y)
            per_col.append([_to_np(im) for im in r.image])
        for y in shape_yaws:
            if y != 0 and not caps.pose:
                per_col.append([caps.missing_reason("pose")] * n_faces)
                continue
            r = _render(m, z, y)
            n = _normals(r)
            if n is None:
                per_col.append([caps.missing_reason("depth")] * n_faces)
                continue
            clay = clay_render(n, _mask(r))
            per_col.append([_to_np(im) for im in clay])
        for i in range(n_faces):
            cells.append([col[i] for col in per_col])
            rows.append(label(m) if i == 0 else "")
    return cells, cols, rows


def profile_figure(prof: dict, label: str = "student", cell_px: int = 128) -> "plt.Figure":
    """Side views of held-out synthetic heads, truth beside the student
    (:func:`digan.student.diagnostics.profile_views`): per head the input image, then for each
    yaw the true head and the student's shape as grey clay. Rows are the first heads of the set,
    in order (none picked)."""
    cols = ["input"]
    for y in prof["yaws"]:
        cols += [f"truth {y:g}°", f"{label} {y:g}°"]
    cells, rows = [], []
    for i in range(len(prof["true_yaw"])):
        row = [_to_np(prof["image"][i])]
        for k in range(len(prof["yaws"])):
            for who in ("truth", "student"):
                normal, mask = prof[who][k]
                row.append(_to_np(clay_render(normal[i:i + 1], mask[i:i + 1])[0]))
        cells.append(row)
        rows.append(f"head {i} (yaw {prof['true_yaw'][i]:+.0f}°)")
    return _grid_figure(cells, cols, rows, "Side views: ground truth beside the learnt shape (first heads of the set)", cell_px)


def sample_grid_figure(methods: Sequence, n_faces: int = 4, seed: int = 0,
                       yaws: Sequence[float] = (-45.0, -22.5, 0.0, 22.5, 45.0),
                       shape_yaws: Sequence[float] = (-60.0, 60.0), cell_px: int = 128) -> "plt.Figure | None":
    """Paper Figure 2: rotated renders of ``n_faces`` faces per method and the shape's side views."""
    if not methods:
        return None
    cells, cols, rows = _sample_rows(methods, n_faces, seed, yaws, shape_yaws, method_row_label)
    return _grid_figure(cells, cols, rows, f"Samples at rotated views and shape side views (seed {seed})", cell_px)


def ablation_figure(methods: Sequence, n_faces: int = 2, seed: int = 0,
                    yaws: Sequence[float] = (-30.0, 0.0, 30.0), shape_yaws: Sequence[float] = (60.0,),
                    cell_px: int = 128) -> "plt.Figure | None":
    """Paper Figure 4: the same faces (same seed) rendered by each ablation variant."""
    if len(methods) < 2:
        return None
    ordered = sorted(methods, key=lambda m: variant_order(m.variant))
    cells, cols, rows = _sample_rows(ordered, n_faces, seed, yaws, shape_yaws, lambda m: variant_label(m.variant))
    return _grid_figure(cells, cols, rows, f"Ablation samples (same latents, seed {seed})", cell_px)


#: (ambient, diffuse, dx, dy): light from the left, the front, the right and above
DEFAULT_LIGHTS: tuple[tuple[float, float, float, float], ...] = (
    (0.4, 0.6, -1.0, 0.0), (0.4, 0.6, 0.0, 0.0), (0.4, 0.6, 1.0, 0.0), (0.4, 0.6, 0.0, -1.0),
)


def _light_label(l: tuple[float, float, float, float]) -> str:
    a, d, dx, dy = l
    where = {(-1.0, 0.0): "left", (1.0, 0.0): "right", (0.0, 0.0): "front", (0.0, -1.0): "top", (0.0, 1.0): "bottom"}.get((float(dx), float(dy)))
    return where or f"dx {dx:g}, dy {dy:g}"


def _relight_rows(methods: Sequence, n_faces: int, seed: int,
                  lights: Sequence[tuple[float, float, float, float]]) -> tuple[list[list], list[str], list[str]]:
    smax = max(a + d for a, d, _, _ in lights)
    cols = [f"relit: {_light_label(l)}" for l in lights] + [f"shading: {_light_label(l)}" for l in lights] + ["normals"]
    cells, rows = [], []
    for m in methods:
        z = m.latents(n_faces, seed).to(m.device)
        imgs, shades = [], []
        normal_cells: list = [m.capabilities.missing_reason("depth")] * n_faces
        for (a, d, dx, dy) in lights:
            light = Light.make(a, d, dx, dy, batch=n_faces, device=m.device)
            r = _render(m, z, 0.0, light)
            imgs.append([_to_np(im) for im in r.image])
            n = _normals(r)
            if n is None:
                shades.append([m.capabilities.missing_reason("depth")] * n_faces)
                continue
            mask = _mask(r)
            s = shading_map(n, light, mask) / smax
            sh = (s * 2 - 1) * mask + (1 - mask)  # white background
            shades.append([_to_np(x.expand(3, -1, -1)) for x in sh])
            normal_cells = [_to_np(x) for x in normal_map(n, mask)]
        for i in range(n_faces):
            cells.append([c[i] for c in imgs] + [c[i] for c in shades] + [normal_cells[i]])
            rows.append(method_row_label(m) if i == 0 else "")
    return cells, cols, rows


def relighting_figure(methods: Sequence, n_faces: int = 3, seed: int = 0,
                      lights: Sequence[tuple[float, float, float, float]] = DEFAULT_LIGHTS,
                      cell_px: int = 128) -> "plt.Figure | None":
    """Paper Figure 3: relit renders, the shading map of each light and the normal map (frontal).

    Only methods with the ``light`` capability take part; None when there is none. Shading maps
    are shown on a fixed scale ``[0, max(ambient + diffuse)]`` so lights compare fairly.
    """
    usable = [m for m in methods if m.capabilities.light]
    if not usable:
        return None
    cells, cols, rows = _relight_rows(usable, n_faces, seed, lights)
    return _grid_figure(cells, cols, rows, f"Relighting, shading maps and normals (seed {seed})", cell_px)
