"""Real-photo data sets: any folder of face photos -> aligned square face crops.

``build_faces_folder(FacesFolderConfig(src=..., out=..., size=128))`` finds every image under
``src`` (recursively; jpg, jpeg, png, bmp, webp, tif, tiff), detects faces with the SCRFD ONNX
detector (:class:`digan.faces.detector.FaceDetector`), keeps the largest / most central face of
each photo, and warps it by the 5-point similarity transform onto a template at ``size x size``:

* ``template="ffhq"`` (default): the FFHQ-style loose crop (head, hair and some background),
  the framing of the StyleGAN2 FFHQ models (:data:`digan.faces.align.FFHQ_TEMPLATE`);
* ``template="arcface"``: the tight ArcFace crop (sizes that are multiples of 112 or 128).

Quality: when the crop shrinks the photo by more than 2x, the photo is first reduced with area
averaging (``cv2.INTER_AREA``) so that the final bilinear warp does not alias. Crop areas outside
the photo are filled by mirroring its border (``cv2.BORDER_REFLECT_101``), and the fraction of
such pixels is stored per file (``outside``); ``max_outside`` (default 0.4) skips photos whose
face is so close to the edge that more of the crop would be invented.

Output (written atomically: built in a hidden ``.NAME.partial-<hash>`` sibling and moved into
place only when complete; an existing output is replaced only with ``force``)::

    OUT/images/000000.png ...      aligned crops, numbered in sorted source order
    OUT/manifest.json              config, summary counts, one entry per source file with its
                                   status (ok / unreadable / no_face / low_score / small_face /
                                   outside), output name, detector score, keypoints, face count
    OUT/config.json, OUT/run.json  configuration and provenance

Resume: an interrupted build keeps its ``.partial-<hash>`` folder (the hash covers the config),
and the same command continues where it stopped.
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import cv2
import numpy as np

from digan.config import config_hash, save_config, to_dict
from digan.errors import DiganError

__all__ = ["FacesFolderConfig", "FacesFolderSummary", "build_faces_folder", "list_images", "read_image", "crop_face", "IMAGE_EXTS"]

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
STATUSES = ("ok", "unreadable", "no_face", "low_score", "small_face", "outside")


@dataclass
class FacesFolderConfig:
    """Settings of ``digan-bench data faces``.

    src, out: source folder and output folder. size: crop side (64, 128 or 256).
    detector: SCRFD ONNX file (default ``det_10g.onnx`` resolved like every face model).
    template: ``ffhq`` (loose, GAN framing) or ``arcface`` (tight). min_score: detector score
    needed (SCRFD's 0.5). min_eye_dist: skip faces whose eyes are closer than this many source
    pixels (0 = keep all). max_outside: skip crops with a larger fraction outside the photo.
    recursive: also read sub-folders. threads: onnxruntime / decoding threads (default: all).
    """

    src: str = ""
    out: str = ""
    size: int = 128
    detector: str | None = None
    template: Literal["ffhq", "arcface"] = "ffhq"
    min_score: float = 0.5
    min_eye_dist: float = 0.0
    max_outside: float = 0.4
    recursive: bool = True
    threads: int | None = None
    force: bool = False


@dataclass
class FacesFolderSummary:
    """What a build did: counts per status, the output folder and the manifest path."""

    out: Path
    manifest: Path
    total: int
    counts: dict[str, int] = field(default_factory=dict)
    resumed: int = 0

    @property
    def ok(self) -> int:
        return self.counts.get("ok", 0)


def list_images(src: Path, recursive: bool = True) -> list[Path]:
    """Image files under ``src`` by extension (case-insensitive), sorted, hidden files skipped."""
    it = src.rglob("*") if recursive else src.glob("*")
    files = [
        p for p in it
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not any(part.startswith(".") for part in p.relative_to(src).parts)
    ]
    return sorted(files, key=lambda p: p.relative_to(src).as_posix())


def read_image(path: Path) -> np.ndarray | None:
    """RGB uint8 image (EXIF orientation applied), or None when it cannot be decoded."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    im = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if im is None:
        try:  # formats OpenCV lacks (e.g. some webp/tiff variants)
            from PIL import Image, ImageOps

            with Image.open(path) as pim:
                return np.ascontiguousarray(np.asarray(ImageOps.exif_transpose(pim).convert("RGB")))
        except Exception:
            return None
    return np.ascontiguousarray(im[:, :, ::-1])


def crop_face(img: np.ndarray, kps: np.ndarray, size: int, template: str = "ffhq") -> tuple[np.ndarray, float]:
    """Aligned ``size x size`` crop of a uint8 RGB photo and the fraction of it outside the photo."""
    from digan.faces.align import estimate_norm

    m = estimate_norm(kps, size, template)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    src = img
    if scale < 0.5:
        # shrink with area averaging first so the bilinear warp below does not alias
        f = scale * 2.0
        h, w = img.shape[:2]
        nw, nh = max(1, int(round(w * f))), max(1, int(round(h * f)))
        src = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        sx, sy = nw / w, nh / h
        m = estimate_norm(np.asarray(kps, np.float64) * np.array([sx, sy]), size, template)
    crop = cv2.warpAffine(src, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    ones = np.ones(src.shape[:2], np.uint8)
    inside = cv2.warpAffine(ones, m, (size, size), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return crop, float(1.0 - inside.mean())


def _validate(cfg: FacesFolderConfig) -> tuple[Path, Path]:
    if not cfg.src:
        raise DiganError("no source folder; pass --src DIR (a folder of face photos)")
    if not cfg.out:
        raise DiganError("no output folder; pass --out DIR")
    src = Path(cfg.src).expanduser()
    out = Path(cfg.out).expanduser()
    if not src.is_dir():
        raise DiganError(f"source folder {src} not found; pass --src DIR (a folder of face photos)")
    if cfg.size not in (64, 128, 256):
        raise DiganError(f"--size must be 64, 128 or 256, got {cfg.size}")
    if cfg.template == "arcface" and cfg.size % 112 and cfg.size % 128:
        raise DiganError(f"the arcface template needs a size that is a multiple of 112 or 128, got {cfg.size}; use --template ffhq")
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise DiganError(f"output {out} is inside the source folder {src}; choose an --out outside it")
    if out.exists() and not cfg.force:
        raise DiganError(f"output {out} already exists; pass --force to replace it or choose another --out")
    return src, out


def build_faces_folder(
    cfg: FacesFolderConfig,
    on_progress: Callable[[int, int, dict[str, int]], None] | None = None,
    detector=None,
) -> FacesFolderSummary:
    """Build the aligned data set described by ``cfg`` (see the module docstring).

    ``on_progress(done, total, counts)`` is called after each file. ``detector``: an existing
    :class:`digan.faces.detector.FaceDetector` (else one is opened from ``cfg.detector``).
    Raises DiganError when the source has no images or no face at all was found.
    """
    from digan.faces.detector import FaceDetector
    from digan.utils.images import save_png
    from digan.utils.io import write_json
    from digan.utils.provenance import write_run_info

    src, out = _validate(cfg)
    files = list_images(src, cfg.recursive)
    if not files:
        raise DiganError(f"no images ({', '.join(IMAGE_EXTS)}) found in {src}; check --src")
    det = detector if detector is not None else FaceDetector(cfg.detector, threads=cfg.threads)
    identity = {k: v for k, v in to_dict(cfg).items() if k not in ("force", "threads", "out")}
    identity["detector_sha256"] = det.info()["sha256"]
    h = config_hash(identity)
    work = out.parent / f".{out.name}.partial-{h}"
    (work / "images").mkdir(parents=True, exist_ok=True)
    log_path = work / "progress.jsonl"
    done: dict[str, dict] = {}
    if log_path.is_file():
        for line in log_path.read_text().splitlines():
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interruption: that file is redone
            if e.get("status") != "ok" or (work / "images" / e["out"]).is_file():
                done[e["src"]] = e
    resumed = len(done)
    counts = {s: 0 for s in STATUSES}
    for e in done.values():
        counts[e["status"]] += 1
    rels = [f.relative_to(src).as_posix() for f in files]
    todo = [(i, f, r) for i, (f, r) in enumerate(zip(files, rels)) if r not in done]
    n_threads = max(1, cfg.threads or os.cpu_count() or 1)
    with open(log_path, "a") as log, ThreadPoolExecutor(max_workers=min(4, n_threads)) as pool:
        for (i, f, rel), img in zip(todo, pool.map(lambda t: read_image(t[1]), todo)):
            entry: dict = {"src": rel, "index": i}
            if img is None:
                entry["status"] = "unreadable"
            else:
                entry["shape"] = [int(img.shape[0]), int(img.shape[1])]
                faces = det.detect([img], det_thresh=min(cfg.min_score, det.det_thresh))[0]
                entry["faces"] = len(faces)
                best = det.pick([x for x in faces if x.score >= cfg.min_score], img.shape)
                if best is None:
                    entry["status"] = "low_score" if faces else "no_face"
                    if faces:
                        entry["score"] = round(max(x.score for x in faces), 4)
                else:
                    entry["score"] = round(best.score, 4)
                    entry["kps"] = np.round(best.kps, 2).tolist()
                    eye = float(np.linalg.norm(best.kps[1] - best.kps[0]))
                    crop, outside = crop_face(img, best.kps, cfg.size, cfg.template)
                    entry["outside"] = round(outside, 4)
                    if eye < cfg.min_eye_dist:
                        entry["status"] = "small_face"
                    elif outside > cfg.max_outside:
                        entry["status"] = "outside"
                    else:
                        entry["status"] = "ok"
                        entry["out"] = f"{i:06d}.png"
                        save_png(work / "images" / entry["out"], crop)
            counts[entry["status"]] += 1
            done[rel] = entry
            log.write(json.dumps(entry) + "\n")
            log.flush()
            if on_progress is not None:
                on_progress(len(done), len(files), counts)
    if counts["ok"] == 0:
        raise DiganError(
            f"no face found in any of the {len(files)} images of {src} ({', '.join(f'{k} {v}' for k, v in counts.items() if v)}); "
            "check the folder or pass another --detector"
        )
    entries = [done[r] for r in rels]
    summary = {"total": len(files), **counts}
    manifest = {
        "kind": "faces_folder",
        "config": to_dict(cfg),
        "detector": det.info(),
        "template": cfg.template,
        "size": cfg.size,
        "summary": summary,
        "files": entries,
    }
    write_json(work / "manifest.json", manifest)
    save_config(cfg, work / "config.json")
    write_run_info(work / "run.json", "data faces", config=cfg, weights={"detector": det.path}, extra={"summary": summary})
    log_path.unlink()
    # swap the finished folder into place (the old output goes only after the new one exists)
    old = None
    if out.exists():
        if not cfg.force:
            raise DiganError(f"output {out} already exists; pass --force to replace it or choose another --out")
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(work, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return FacesFolderSummary(out=out, manifest=out / "manifest.json", total=len(files), counts=counts, resumed=resumed)
