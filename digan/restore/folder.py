"""``digan-bench restore``: restore every damaged photo of a folder with a student.

Inputs: ``images`` (a folder of square PNG/JPG faces at the student's size, e.g. a ``data synth``
``images/`` folder or aligned photos) and optionally ``masks``: a folder with one mask per image,
matched by file stem (``000003.png`` <-> ``000003.png``/``.jpg``), white (> 127) = damaged, at
the image's size. An image without a mask file is an error naming it. Without ``masks`` the damage is
estimated per image (:func:`digan.restore.estimate_damage`) and the mask used is saved.

Output folder (written atomically; an existing one is replaced only with ``force``)::

    OUT/<stem>/input.png          the damaged image
    OUT/<stem>/mask.png           the region restored (given or estimated), white = restored
    OUT/<stem>/restored.png       the completed image at the input view (known pixels kept)
    OUT/<stem>/restored_2d.png    the 2D masked inversion of the teacher, for comparison
    OUT/<stem>/canonical.png      the completed head seen frontally (yaw = pitch = 0)
    OUT/<stem>/depth.png          its canonical depth (near = bright), normal.png its normals
    OUT/<stem>/head.glb           a textured mesh of the completed head (canonical depth + texture)
    OUT/<stem>/before_after.png   input | mask | 2D inversion | restored | frontal | depth
    OUT/sheet.png                 the before/after rows of every image
    OUT/summary.json              per image: mask source and fraction, fit PSNR on the known pixels
    OUT/config.json, OUT/run.json the settings and provenance
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from digan.errors import DiganError
from digan.restore.core import RestoreConfig, check_masks, estimate_damage, restore

__all__ = ["restore_folder", "FolderResult", "find_masks"]

_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class FolderResult:
    out_dir: Path
    n_images: int
    estimated_masks: int
    seconds: float


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DiganError(f"image folder {folder} not found; pass a folder of .png/.jpg face images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _SUFFIXES)
    if not files:
        raise DiganError(f"image folder {folder} holds no .png/.jpg images; point --images at the damaged photos")
    return files


def find_masks(images: list[Path], masks: Path) -> list[Path]:
    """The mask file of each image (same stem), or a one-line error naming the first one missing."""
    if not masks.is_dir():
        raise DiganError(f"mask folder {masks} not found; pass a folder with one mask per image (same file name) or leave out --masks")
    by_stem = {p.stem: p for p in masks.iterdir() if p.is_file() and p.suffix.lower() in _SUFFIXES}
    out = []
    for im in images:
        if im.stem not in by_stem:
            raise DiganError(f"no mask for {im.name} in {masks}; add {im.stem}.png (white = damaged) or leave out --masks")
        out.append(by_stem[im.stem])
    return out


def _load_mask(path: Path) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as im:
            a = np.array(im.convert("L"))
    except OSError as e:
        raise DiganError(f"cannot read mask {path} ({e}); save it as a PNG") from e
    return torch.from_numpy((a > 127).astype("float32"))[None]


def restore_folder(student: Any, images: str | Path, out: str | Path, masks: str | Path | None = None,
                   cfg: RestoreConfig | None = None, batch: int = 8, force: bool = False,
                   run_config: dict[str, Any] | None = None) -> FolderResult:
    """Restore every image of ``images`` into ``out`` (module docstring)."""
    from digan.student.export import export_mesh
    from digan.student.inference import normal_to_rgb
    from digan.utils.images import load_image, make_grid, save_png
    from digan.utils.io import atomic_dir, write_json
    from digan.utils.progress import progress
    from digan.utils.provenance import write_run_info
    from digan.restore.quality import psnr_region as psnr_known

    cfg = cfg or RestoreConfig()
    cfg.validate()
    if batch < 1:
        raise DiganError(f"bad batch {batch}: use 1 or more")
    t0 = time.time()
    files = _images(Path(images))
    mask_files = find_masks(files, Path(masks)) if masks is not None else None
    size = int(student.g3d.size)
    imgs = []
    for f in files:
        img = load_image(f)
        if img.shape[-1] != img.shape[-2]:
            raise DiganError(f"image {f} is {img.shape[-1]}x{img.shape[-2]}; square face crops are needed (digan-bench data faces)")
        if img.shape[-1] != size:
            raise DiganError(f"image {f} is {img.shape[-1]} px but the student works at {size} px; resize the folder to {size}x{size}")
        imgs.append(img)
    given = None
    if mask_files is not None:
        given = []
        for f, mf, img in zip(files, mask_files, imgs):
            m = _load_mask(mf)
            if m.shape[-2:] != img.shape[-2:]:
                raise DiganError(f"mask {mf} is {m.shape[-1]}x{m.shape[-2]} but image {f.name} is {img.shape[-1]}x{img.shape[-2]}; "
                                 "give masks at the image size")
            check_masks(img[None], m[None], [f.name])
            given.append(m)
    rows, summary, estimated = [], [], 0
    fov = student.cfg.renderer.fov
    cmin, cmax = student.cfg.model.min_depth, student.cfg.model.max_depth
    with atomic_dir(out, force=force) as tmp, progress() as bar:
        task = bar.add_task("restore", total=len(files), info="")
        for s0 in range(0, len(files), batch):
            names = files[s0:s0 + batch]
            x = torch.stack(imgs[s0:s0 + batch]).to(student.device)
            if given is not None:
                region = torch.stack(given[s0:s0 + batch]).to(student.device)
                source = "given"
            else:
                region = estimate_damage(student, x, cfg)
                source = "estimated"
                for j, f in enumerate(names):
                    frac = float(region[j].mean())
                    if frac == 0.0 or frac >= 0.98:
                        raise DiganError(f"could not estimate the damage of {f.name} (the fit's residual marks {frac:.0%} of it); "
                                         "paint the damage white in a mask and pass --masks")
                estimated += len(names)
            res = restore(student, x, region, cfg)
            dep = ((res.canonical_depth - cmin) / (cmax - cmin) * 2 - 1).clamp(-1, 1)
            dep = -dep  # near = bright
            nrm = normal_to_rgb(res.canonical_normal, res.canonical_fg)
            fit = psnr_known(res.fill_2d, x, 1 - res.region)
            for j, f in enumerate(names):
                d = tmp / f.stem
                save_png(d / "input.png", x[j].cpu())
                save_png(d / "mask.png", (res.region[j].cpu() * 2 - 1).expand(3, -1, -1))
                save_png(d / "restored.png", res.image[j].cpu())
                save_png(d / "restored_2d.png", res.composite(res.fill_2d, x)[j].cpu())
                save_png(d / "canonical.png", res.canonical_image[j].cpu())
                save_png(d / "depth.png", dep[j].expand(3, -1, -1).cpu())
                save_png(d / "normal.png", nrm[j].cpu())
                export_mesh(d / "head", res.canonical_depth[j], res.canonical_texture[j], ("glb",), fov, res.canonical_fg[j, 0])
                row = torch.stack([x[j].cpu(), (res.region[j].cpu() * 2 - 1).expand(3, -1, -1), res.composite(res.fill_2d, x)[j].cpu(),
                                   res.image[j].cpu(), res.canonical_image[j].cpu(), dep[j].expand(3, -1, -1).cpu()])
                save_png(d / "before_after.png", make_grid(row, nrow=6))
                rows.append(row)
                summary.append({"image": f.name, "mask": source, "mask_fraction": round(float(res.region[j].mean()), 5),
                                "fit_psnr_known_db": round(float(fit[j]), 3), "mirrored_pixels": int(res.mirrored[j].sum()),
                                "yaw_offset_deg": res.info["yaw_offset"][j]})
            bar.update(task, advance=len(names), info=f"{min(s0 + batch, len(files))}/{len(files)}")
        save_png(tmp / "sheet.png", make_grid(torch.cat(rows), nrow=6))
        write_json(tmp / "summary.json", {"images": summary, "columns_of_sheets": ["input", "mask", "2D inversion", "restored",
                                                                                      "frontal", "depth"]})
        conf = {**(run_config or {}), "restore": dict(cfg.__dict__), "images": str(images), "masks": str(masks) if masks else None,
                "batch": batch}
        write_json(tmp / "config.json", conf)
        weights = {k: v for k, v in (("student", (run_config or {}).get("student")),) if v}
        write_run_info(tmp / "run.json", "restore", config=conf, seeds={}, weights=weights)
    return FolderResult(Path(out), len(files), estimated, time.time() - t0)
