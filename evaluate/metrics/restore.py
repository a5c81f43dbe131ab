"""Restoration of damaged heads against their undamaged twins (``restore``).

Protocol
--------
* **Data**: a synthetic set made with twins (``digan-bench data synth --twins``; option
  ``dataset``, default ``"restore"``, a name in ``--data``). The first ``min(n_faces, max_faces,
  len)`` samples are read and those with an empty restore mask (undamaged heads) are skipped
  (counted in ``stats.skipped_undamaged``). Each remaining face gives the damaged image, the
  restore region (visible damage plus missing parts, dilated 1 px), the twin image and the
  twin's depth and foreground.
* **Restoration** (:func:`digan.restore.restore`, method needs a student: ``digan``,
  ``liftgan``): masked teacher inversion (``inversion_steps``, default 100, Adam lr 0.05, from the
  mean w), refined through the student's render (``refine_steps``, default 30), the student's 3D
  estimate, symmetric completion in the canonical frame and the seam correction (``harmonize``
  sigma, default 1 px). Known pixels are kept; only the region is filled.
* **Scores in the region** (:mod:`digan.restore.quality`), per face then mean over faces:
  ``restore_psnr`` (dB, higher), ``restore_ssim`` (higher; 11 px Gaussian window, whole image
  in each window), ``restore_depth`` (lower: mean ``|log d + c - log d_twin|`` over the region
  inside the twin's foreground, ``c`` aligning the depth scale on the undamaged foreground;
  about the relative depth error).
* **Reference rows**, scored on the same faces and regions and stored in each record's
  ``stats.references`` (``{name: {"value", "std", "n"}}``), shown as rows by the report's
  restoration table: ``damaged`` (no restoration: the damaged image, and the damaged object's
  true depth), ``telea`` (OpenCV ``INPAINT_TELEA``, radius 3; no depth), ``inversion_2d`` (the
  teacher's masked inversion G(w) at the input view, with the same seam correction; no depth:
  2D), ``render_3d`` (the student's render of w at its predicted view, seam-corrected) and
  ``symmetric_3d`` (the symmetric completion in the canonical frame). The record's own value is
  the method's restoration with the metric's ``symmetry`` option: ``render_3d`` (default) or
  ``symmetric_3d``; the report shows the other one as a row.
* **Settings**: ``overall`` (all damaged faces, the whole region) and ``damage=ear`` (faces
  whose head lacks an ear, scored on the missing ear alone: the pixels the twin's ear covers and
  the fracture where it was attached, found by re-rendering the identity with only the ear
  broken, dilated 1 px; the symmetric case, where the other ear is the evidence); a setting
  without faces is left out.
* **Examples**: up to ``figure_faces`` (default 6) faces, those with a missing ear first, are
  saved as ``RESULTS/restore/<method>_<checkpoint stem>/examples.npz`` (uint8 images of every
  row, the twin, the completed canonical face and the masks)
  for the report's before/after figure.

A method without a student is "n/a". Faces are sharded across torchrun ranks.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from digan.errors import DiganError
from evaluate.methods import Method
from evaluate.metrics.base import EvalContext, Metric, register_metric
from evaluate.records import Record

__all__ = ["Restore", "REFERENCES", "open_twin_set", "examples_path"]

#: reference rows in the order the report shows them, with their labels
REFERENCES = {
    "damaged": "Damaged input (no restoration)",
    "telea": "OpenCV inpainting (Telea)",
    "inversion_2d": "2D masked inversion of the teacher (no 3D)",
    "render_3d": "3D: student render of the inverted w",
    "symmetric_3d": "3D + symmetric completion",
}
_SCORES = ("psnr", "ssim", "depth")


def open_twin_set(path: str | Path):
    """A synthetic set with twins, or a one-line error naming the command that makes one."""
    from digan.data.synthetic import SynthDataset

    p = Path(path).expanduser()
    if not p.exists():
        raise DiganError(f"restoration data {p} not found; make it with 'digan-bench data synth --twins --out {p}'")
    ds = SynthDataset(p, canonical=False)
    if not ds.has_twins:
        raise DiganError(f"{p} has no undamaged twins; regenerate it with 'digan-bench data synth --twins --out {p} --force'")
    return ds


def examples_path(out_dir: Path, method_key: str) -> Path:
    return Path(out_dir) / "restore" / method_key / "examples.npz"


def _stats(v: np.ndarray) -> dict[str, float]:
    ok = v[np.isfinite(v)]
    n = int(ok.size)
    if n == 0:
        return {"value": float("nan"), "std": float("nan"), "n": 0, "ci95": float("nan")}
    sd = float(ok.std(ddof=1)) if n > 1 else 0.0
    return {"value": float(ok.mean()), "std": sd, "n": n, "ci95": 1.96 * sd / math.sqrt(n) if n > 1 else float("nan")}


@register_metric
class Restore(Metric):
    """PSNR/SSIM/depth error of restored damaged heads in the damaged region against their twins."""

    name = "restore"
    unit = "dB"
    higher_is_better = True

    def __init__(self, dataset: str = "restore", max_faces: int | None = None, inversion_steps: int = 100,
                 inversion_lr: float = 0.05, symmetry: bool = False, harmonize: float = 1.0, mirror: str = "shaded",
                 figure_faces: int = 6, refine_steps: int = 30):
        self.dataset = dataset
        self.max_faces = int(max_faces) if max_faces else None
        self.inversion_steps = int(inversion_steps)
        self.inversion_lr = float(inversion_lr)
        self.symmetry = bool(symmetry)
        self.harmonize = float(harmonize)
        self.mirror = str(mirror)
        self.figure_faces = int(figure_faces)
        self.refine_steps = int(refine_steps)

    def _restore_config(self):
        from digan.restore import RestoreConfig

        cfg = RestoreConfig(inversion_steps=self.inversion_steps, inversion_lr=self.inversion_lr, symmetry=self.symmetry,
                            harmonize=self.harmonize, mirror=self.mirror, refine_steps=self.refine_steps)
        cfg.validate()
        return cfg

    def config(self, ctx: EvalContext) -> dict[str, Any]:
        return {"n_faces": self._n_requested(ctx), "dataset": self.dataset, "data_path": ctx.data.get(self.dataset),
                "inversion_steps": self.inversion_steps, "inversion_lr": self.inversion_lr, "refine_steps": self.refine_steps,
                "symmetry": self.symmetry,
                "harmonize": self.harmonize, "mirror": self.mirror, "telea_radius": 3, "ssim_window": 11,
                "region": "damage | missing parts, dilated 1 px", "protocol": "digan-bench restore v1"}

    def _n_requested(self, ctx: EvalContext) -> int:
        return min(int(ctx.n_faces), self.max_faces) if self.max_faces else int(ctx.n_faces)

    def applicable(self, method: Method, ctx: EvalContext) -> str | None:
        if getattr(method, "student", None) is None:
            return ("restoration fits a 3D student (teacher inversion, then the student's 3D); "
                    f"{method.name} has none (use digan or liftgan)")
        return None

    def _open(self, ctx: EvalContext):
        if self.dataset not in ctx.data:
            raise DiganError(f"restore needs damaged heads with undamaged twins: pass --data {self.dataset}=FOLDER "
                             "(make one with 'digan-bench data synth --twins')")
        return open_twin_set(ctx.data[self.dataset])

    def work_units(self, method: Method, ctx: EvalContext) -> int:
        try:
            return min(self._n_requested(ctx), len(self._open(ctx)))
        except DiganError:
            return self._n_requested(ctx)

    def compute(self, method: Method, ctx: EvalContext) -> list[Record]:
        from digan.restore import restore
        from digan.restore.quality import depth_error_region, psnr_region, ssim_region, telea_inpaint

        data = self._open(ctx)
        n = min(self._n_requested(ctx), len(data))
        if n < 1:
            raise DiganError(f"restoration set {ctx.data[self.dataset]} is empty; regenerate it")
        cfg = self._restore_config()
        student = method.student
        idx = ctx.shard(n)
        rows = ("digan",) + tuple(REFERENCES)
        per: dict[str, dict[str, list[torch.Tensor]]] = {r: {p + s: [] for s in _SCORES for p in ("", "ear_")} for r in rows}
        ear_flags: list[torch.Tensor] = []
        face_ids: list[torch.Tensor] = []
        examples: list[dict[str, np.ndarray]] = []
        skipped = 0
        for s0 in range(idx.start, idx.stop, ctx.batch_size):
            ids = list(range(s0, min(s0 + ctx.batch_size, idx.stop)))
            items = [data[i] for i in ids]
            keep = [j for j, it in enumerate(items) if float(it["restore_mask"].sum()) > 0]
            skipped += len(items) - len(keep)
            if not keep:
                ctx.advance(len(items))
                continue
            items = [items[j] for j in keep]
            b = {k: torch.stack([it[k] for it in items]).float() for k in ("image", "depth", "mask", "restore_mask", "twin_image", "twin_depth", "twin_mask")}
            region = b["restore_mask"]
            ear_reg = torch.stack([missing_ear_region(data, ids[keep[j]], it) for j, it in enumerate(items)])
            ear = ear_reg.flatten(1).sum(1) > 0
            res = restore(student, b["image"], region, cfg)
            res_cpu = {k: getattr(res, k).detach().float().cpu()
                       for k in ("image", "fill_2d", "fill_render", "fill_sym", "depth", "depth_render", "depth_sym")}
            damaged = b["image"]
            fills = {
                "digan": res_cpu["image"],
                "damaged": damaged,
                "telea": telea_inpaint(damaged, region),
                "inversion_2d": damaged * (1 - region) + res_cpu["fill_2d"] * region,
                "render_3d": damaged * (1 - region) + res_cpu["fill_render"] * region,
                "symmetric_3d": damaged * (1 - region) + res_cpu["fill_sym"] * region,
            }
            depths = {"digan": res_cpu["depth"], "damaged": b["depth"], "render_3d": res_cpu["depth_render"],
                      "symmetric_3d": res_cpu["depth_sym"]}
            for r in rows:
                for key, reg in (("", region), ("ear_", ear_reg)):
                    per[r][key + "psnr"].append(psnr_region(fills[r], b["twin_image"], reg))
                    per[r][key + "ssim"].append(ssim_region(fills[r], b["twin_image"], reg))
                    if r in depths:
                        per[r][key + "depth"].append(depth_error_region(depths[r], b["twin_depth"], reg, b["twin_mask"]))
            ear_flags.append(ear)
            face_ids.append(torch.tensor([ids[j] for j in keep]))
            if len(examples) < 4 * self.figure_faces:
                for j in range(len(items)):
                    examples.append({"index": np.int64(ids[keep[j]]), "ear": np.bool_(bool(ear[j])),
                                     **{k: _u8(v[j]) for k, v in fills.items()}, "ear_region": ear_reg[j, 0].numpy() > 0.5,
                                     "twin": _u8(b["twin_image"][j]), "region": (region[j, 0].numpy() > 0.5),
                                     "canonical": _u8(res.canonical_image[j].cpu()), "mirrored": res.mirrored[j, 0].cpu().numpy() > 0.5})
            ctx.advance(len(ids))

        def gather(parts: list[torch.Tensor]) -> np.ndarray:
            t = torch.cat(parts).double() if parts else torch.zeros(0, dtype=torch.float64)
            return ctx.gather(t).numpy()

        ear_all = gather([e.double() for e in ear_flags]).astype(bool)
        vals = {r: {s: gather(v) for s, v in per[r].items() if v} for r in rows}
        skipped = int(gather([torch.tensor([float(skipped)])]).sum())
        if ear_all.size == 0:
            raise DiganError(f"none of the first {n} heads of {ctx.data[self.dataset]} is damaged; make the set with "
                             "--set damage_prob=1 or evaluate more faces")
        if examples:
            self._save_examples(ctx, method, examples)
        records: list[Record] = []
        units = {"psnr": ("dB", True), "ssim": ("", True), "depth": ("", False)}
        for setting, sel, pre in (("overall", np.ones_like(ear_all), ""), ("damage=ear", ear_all, "ear_")):
            if not sel.any():
                continue
            for sc in _SCORES:
                unit, hib = units[sc]
                main = _stats(vals["digan"][pre + sc][sel])
                refs = {}
                for r in REFERENCES:
                    if pre + sc in vals[r]:
                        refs[r] = _stats(vals[r][pre + sc][sel])
                    else:
                        refs[r] = {"value": None, "status": "n/a", "reason": "a 2D fill has no depth"}
                records.append(Record(
                    method=method.name, metric=f"restore_{sc}", setting=setting, value=main["value"], unit=unit,
                    higher_is_better=hib, dataset=self.dataset, n_faces=int(sel.sum()),
                    stats={"std": main["std"], "n": main["n"], "ci95": main["ci95"], "references": refs,
                           "skipped_undamaged": skipped, "faces_with_missing_ear": int(ear_all.sum())},
                    config=self.config(ctx),
                ))
        return records

    def _save_examples(self, ctx: EvalContext, method: Method, examples: list[dict[str, np.ndarray]]) -> None:
        from digan.utils import dist
        from evaluate.records import method_key

        if not dist.is_main():
            return
        ex = sorted(examples, key=lambda e: (not bool(e["ear"]), int(e["index"])))[: self.figure_faces]
        arrays = {k: np.stack([e[k] for e in ex]) for k in ex[0]}
        ck = getattr(method, "path", None)
        label = method.name + (f"_{Path(ck).stem}" if ck else "")
        path = examples_path(ctx.out_dir, method_key(label, getattr(method, "variant", "full")))
        path.parent.mkdir(parents=True, exist_ok=True)
        import io

        from digan.utils.io import write_bytes

        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        write_bytes(path, buf.getvalue())


def missing_ear_region(data: Any, index: int, item: dict[str, torch.Tensor]) -> torch.Tensor:
    """(1,S,S) the missing ear of sample ``index`` in its view (empty when no ear is missing):
    what the twin's ear covers and the fracture where it was attached, from a render of the
    identity with only the ear broken, dilated by one pixel."""
    import torch.nn.functional as F

    from digan.data.heads import undamaged
    from digan.data.synth import render_views

    p = data.identity_params(int(item["identity"]))
    s = item["mask"].shape[-1]
    if p.get("broken_ear", 0.0) < 0.5:
        return torch.zeros(1, s, s)
    q = undamaged(p)
    q["broken_ear"] = 1.0
    v = np.array(data.arrays["view"][index : index + 1], dtype=np.float32)
    li = np.array(data.arrays["light"][index : index + 1], dtype=np.float32)
    fov = float(data.manifest.get("renderer", {}).get("fov", 10.0))
    r = render_views([q], v, li, s, fov)
    ear = ((item["twin_mask"][None] > 0.5) & (r["mask"] < 0.5)) | (r["damage"] > 0.5)
    return F.max_pool2d(ear.float(), 3, 1, 1)[0]


def _u8(img: torch.Tensor) -> np.ndarray:
    from digan.utils.images import to_uint8

    return to_uint8(img.detach().float().cpu())
