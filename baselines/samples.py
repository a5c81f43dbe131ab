"""The **rendered-samples format**: a folder of images any method can export and the benchmark can
evaluate (``samples:PATH``), for methods that cannot run here (DiscoFaceGAN, CONFIG-Net, FastGAN,
diffusion models ...) or to freeze a set of renders.

Layout (format ``digan-bench-samples``, version 1)::

    FOLDER/
      manifest.json
      yaw_-45/000000.png 000001.png ...      one folder per view, images named by face index
      yaw_0/000000.png ...
      yaw_30/ ...
      yaw_30_pitch_10/ ...                   a non-zero pitch is appended to the name

* View folder names: :func:`view_dir_name`: ``yaw_{Y}`` for pitch 0, else ``yaw_{Y}_pitch_{P}``,
  where an angle is written as an integer when it is one (``-45``, ``0``, ``30``) and otherwise
  with Python's ``{:g}`` (``12.5``, ``-7.25``). Degrees; positive yaw turns the nose toward image
  +x (right), positive pitch toward image +y (down), as in :mod:`digan.render.types`.
* Images: ``{index:06d}.png`` (or ``.jpg`` with ``"image_format": "jpg"``), RGB, square,
  ``image_size`` pixels, indices ``0 .. n_faces-1`` in **every** view folder; the same index in
  every folder is the same identity (the identity metric compares them).
* ``manifest.json``::

      {"format": "digan-bench-samples", "version": 1, "method": "discofacegan",
       "n_faces": 1000, "yaws": [-45, -30, 0, 30, 45], "pitches": [0], "image_size": 256,
       "image_format": "png", "seed": 0, "source": "how they were made", "notes": "",
       "created": "2024-05-01T12:00:00+00:00", "info": {...}}

  Views are every (pitch, yaw) pair of ``pitches x yaws``; every view folder must exist.

**Flat folders** (2D GANs for the FID table: FastGAN, FreGAN, diffusion samples, ...): a folder
with no ``manifest.json`` and no ``yaw_*`` sub-folders whose images sit directly inside it (or
inside its ``images/`` sub-folder, the layout of ``digan-bench sample``) is read as frontal-only
2D samples: face ``i`` is the ``i``-th image in sorted file-name order, every image must have the
size of the first. Such a method has no pose control (identity and pose metrics are n/a).

Validation (:func:`open_samples`, ``digan-bench data check-samples``) fails with one line
naming the problem: missing manifest (a folder with ``yaw_*`` folders but no manifest), a bad or
incomplete manifest, a missing view folder, a view folder whose files are not exactly
``000000 .. n_faces-1`` (the first missing or unexpected file is named), and, when images are
read, an unreadable image or one of the wrong size. Asking for a view the folder lacks is an
error naming the available ones.

Export any method (ours included) with :func:`write_samples` or the CLI::

    digan-bench export-samples --method liftgan:run/student.pt --n 1000 --yaws=-45,-30,0,30,45 --out renders/liftgan

or write the folder from another code base (DiscoFaceGAN, CONFIG-Net ...)::

    from baselines.samples import SamplesManifest, view_dir_name, image_name, write_manifest
    for yaw in yaws:
        for i, img in enumerate(render_all_faces(yaw)):        # uint8 HxWx3 RGB
            PIL.Image.fromarray(img).save(folder / view_dir_name(yaw) / image_name(i))
    write_manifest(folder, SamplesManifest(method="discofacegan", n_faces=n, yaws=yaws, image_size=256,
                                           source="DiscoFaceGAN generate_images.py, pose set per yaw"))
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from digan.errors import DiganError
from digan.render.types import Light
from evaluate.methods import Capabilities, Method, Rendered, register_method

__all__ = [
    "FORMAT",
    "VERSION",
    "MANIFEST",
    "SamplesManifest",
    "format_angle",
    "view_dir_name",
    "image_name",
    "read_manifest",
    "write_manifest",
    "SamplesFolder",
    "open_samples",
    "SamplesMethod",
    "write_samples",
]

FORMAT = "digan-bench-samples"
VERSION = 1
MANIFEST = "manifest.json"
_FLAT_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_FORMATS = {"png": ".png", "jpg": ".jpg"}


def format_angle(a: float) -> str:
    """``-45.0`` -> ``"-45"``, ``12.5`` -> ``"12.5"`` (integers without a decimal point; ``-0`` is ``0``)."""
    a = float(a)
    if not np.isfinite(a):
        raise DiganError(f"view angle {a} is not a finite number")
    if a.is_integer():
        return str(int(a))
    return f"{a:g}"


def view_dir_name(yaw: float, pitch: float = 0.0) -> str:
    """Folder of one view: ``yaw_{Y}`` (pitch 0) or ``yaw_{Y}_pitch_{P}``."""
    name = f"yaw_{format_angle(yaw)}"
    if float(pitch) != 0.0:
        name += f"_pitch_{format_angle(pitch)}"
    return name


def image_name(index: int, image_format: str = "png") -> str:
    """File name of face ``index``: ``000042.png``."""
    return f"{int(index):06d}{_FORMATS.get(image_format, '.' + image_format)}"


@dataclass
class SamplesManifest:
    """Contents of ``manifest.json`` (see the module docstring)."""

    method: str
    n_faces: int
    yaws: list[float]
    image_size: int
    pitches: list[float] = field(default_factory=lambda: [0.0])
    image_format: str = "png"
    seed: int | None = None
    source: str = ""
    notes: str = ""
    created: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    version: int = VERSION

    def views(self) -> list[tuple[float, float]]:
        """(yaw, pitch) of every view folder, pitch-major."""
        return [(float(y), float(p)) for p in self.pitches for y in self.yaws]


def _check_manifest(m: SamplesManifest, where: str) -> SamplesManifest:
    if m.format != FORMAT:
        raise DiganError(f"{where}: format is {m.format!r}, expected {FORMAT!r}")
    if int(m.version) > VERSION:
        raise DiganError(f"{where}: format version {m.version} is newer than this digan-bench reads ({VERSION}); update digan-bench")
    if int(m.n_faces) < 1:
        raise DiganError(f"{where}: n_faces must be at least 1, got {m.n_faces}")
    if not m.yaws:
        raise DiganError(f"{where}: the 'yaws' list is empty; list the yaw of every view folder")
    if not m.pitches:
        raise DiganError(f"{where}: the 'pitches' list is empty; use [0] for frontal pitch")
    if int(m.image_size) < 1:
        raise DiganError(f"{where}: image_size must be a positive number of pixels, got {m.image_size}")
    if m.image_format not in _FORMATS:
        raise DiganError(f"{where}: image_format {m.image_format!r} is not supported; use png or jpg")
    for what, vals in (("yaws", m.yaws), ("pitches", m.pitches)):
        names = [format_angle(v) for v in vals]
        if len(set(names)) != len(names):
            raise DiganError(f"{where}: '{what}' lists the same angle twice ({vals})")
    return m


def read_manifest(folder: str | Path) -> SamplesManifest:
    """Read and check ``FOLDER/manifest.json``."""
    p = Path(folder) / MANIFEST
    if not p.is_file():
        raise DiganError(f"no {MANIFEST} in {Path(folder)}; write one with baselines.samples.write_manifest or export the "
                         "folder with 'digan-bench export-samples'")
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise DiganError(f"{p} is not valid JSON ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); fix or rewrite it") from e
    if not isinstance(data, dict):
        raise DiganError(f"{p} must hold a JSON object with format, method, n_faces, yaws, image_size")
    names = {f.name for f in dataclasses.fields(SamplesManifest)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise DiganError(f"{p}: unknown key '{unknown[0]}'; valid keys: {', '.join(sorted(names))}")
    for req in ("format", "method", "n_faces", "yaws", "image_size"):
        if req not in data:
            raise DiganError(f"{p}: required key '{req}' is missing")
    try:
        m = SamplesManifest(
            method=str(data["method"]), n_faces=int(data["n_faces"]), yaws=[float(y) for y in data["yaws"]],
            image_size=int(data["image_size"]), pitches=[float(x) for x in data.get("pitches", [0.0])],
            image_format=str(data.get("image_format", "png")), seed=None if data.get("seed") is None else int(data["seed"]),
            source=str(data.get("source", "")), notes=str(data.get("notes", "")), created=str(data.get("created", "")),
            info=dict(data.get("info") or {}), format=str(data["format"]), version=int(data.get("version", VERSION)),
        )
    except (TypeError, ValueError) as e:
        raise DiganError(f"{p}: a value has the wrong type ({e}); n_faces/image_size are integers, yaws/pitches lists of numbers") from e
    return _check_manifest(m, str(p))


def write_manifest(folder: str | Path, manifest: SamplesManifest) -> Path:
    """Write ``FOLDER/manifest.json`` atomically (``created`` filled when empty)."""
    from digan.utils.io import write_json

    _check_manifest(manifest, "manifest")
    if not manifest.created:
        manifest.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return write_json(Path(folder) / MANIFEST, dataclasses.asdict(manifest))


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except FileNotFoundError as e:
        raise DiganError(f"image {path} is missing; re-export the samples folder") from e
    except Exception as e:
        raise DiganError(f"image {path} is unreadable ({type(e).__name__}); replace it or re-export the samples folder") from e


class SamplesFolder:
    """An opened, structurally validated samples folder (``kind`` ``"views"`` or ``"flat"``)."""

    def __init__(self, root: Path, kind: str, n_faces: int, image_size: int, views: list[tuple[float, float]],
                 manifest: SamplesManifest | None, flat_files: list[Path] | None = None):
        self.root = root
        self.kind = kind
        self.n_faces = n_faces
        self.image_size = image_size
        self.views = views
        self.manifest = manifest
        self._flat = flat_files

    @property
    def method_name(self) -> str:
        return self.manifest.method if self.manifest is not None else "2D samples"

    def has_view(self, yaw: float, pitch: float = 0.0) -> bool:
        return (format_angle(yaw), format_angle(pitch)) in {(format_angle(y), format_angle(p)) for y, p in self.views}

    def path(self, index: int, yaw: float = 0.0, pitch: float = 0.0) -> Path:
        """File of face ``index`` at a view (DiganError for an absent view or index)."""
        if not 0 <= int(index) < self.n_faces:
            raise DiganError(f"samples folder {self.root} has {self.n_faces} faces (0..{self.n_faces - 1}); face {index} was asked for")
        if not self.has_view(yaw, pitch):
            have = ", ".join(view_dir_name(y, p) for y, p in self.views)
            raise DiganError(f"samples folder {self.root} has no view yaw {format_angle(yaw)}, pitch {format_angle(pitch)} "
                             f"(available: {have}); export that view or drop it from --yaws/--pitches")
        if self._flat is not None:
            return self._flat[int(index)]
        assert self.manifest is not None
        return self.root / view_dir_name(yaw, pitch) / image_name(index, self.manifest.image_format)

    def load(self, indices: Sequence[int], yaw: float = 0.0, pitch: float = 0.0) -> torch.Tensor:
        """Images (B,3,S,S) in [-1,1]; an unreadable file or a wrong size is a one-line error."""
        from digan.utils.images import from_uint8

        imgs = []
        for i in indices:
            p = self.path(int(i), yaw, pitch)
            a = _read_rgb(p)
            if a.shape[0] != self.image_size or a.shape[1] != self.image_size:
                raise DiganError(f"image {p} is {a.shape[1]}x{a.shape[0]}, but the samples folder's images are "
                                 f"{self.image_size}x{self.image_size}; re-export it at one size")
            imgs.append(from_uint8(a))
        if not imgs:
            return torch.empty(0, 3, self.image_size, self.image_size)
        return torch.stack(imgs)

    def check_images(self, on_image: Callable[[int], None] | None = None) -> int:
        """Decode every image and check its size; returns the number of images read."""
        n = 0
        for y, p in self.views:
            for i in range(self.n_faces):
                self.load([i], y, p)
                n += 1
                if on_image is not None:
                    on_image(n)
        return n


def _list_names(d: Path) -> list[str]:
    with os.scandir(d) as it:
        return sorted(e.name for e in it if e.is_file() and not e.name.startswith("."))


def _flat_files(d: Path) -> list[Path]:
    return [d / n for n in _list_names(d) if Path(n).suffix.lower() in _FLAT_EXTS]


_VIEW_DIR = re.compile(r"^yaw_-?\d+(\.\d+)?(e-?\d+)?(_pitch_-?\d+(\.\d+)?(e-?\d+)?)?$")


def open_samples(folder: str | Path, check_images: bool = False) -> SamplesFolder:
    """Open and validate a samples folder (see the module docstring); ``check_images`` also
    decodes every image."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DiganError(f"samples folder {root} not found; check the path after 'samples:'")
    if not (root / MANIFEST).is_file():
        view_dirs = sorted(p.name for p in root.iterdir() if p.is_dir() and _VIEW_DIR.match(p.name))
        if view_dirs:
            raise DiganError(f"samples folder {root} has view folders ({view_dirs[0]} ...) but no {MANIFEST}; write one with "
                             "baselines.samples.write_manifest (method, n_faces, yaws, pitches, image_size)")
        files = _flat_files(root)
        src = root
        if not files and (root / "images").is_dir():
            src = root / "images"
            files = _flat_files(src)
        if not files:
            raise DiganError(f"samples folder {root} holds no images and no {MANIFEST}; export renders with "
                             "'digan-bench export-samples' or point at a folder of images")
        first = _read_rgb(files[0])
        if first.shape[0] != first.shape[1]:
            raise DiganError(f"image {files[0]} is {first.shape[1]}x{first.shape[0]}; samples must be square")
        sf = SamplesFolder(src, "flat", len(files), int(first.shape[0]), [(0.0, 0.0)], None, files)
    else:
        m = read_manifest(root)
        for yaw, pitch in m.views():
            d = root / view_dir_name(yaw, pitch)
            if not d.is_dir():
                raise DiganError(f"view folder {d.name} (yaw {format_angle(yaw)}, pitch {format_angle(pitch)}) listed in "
                                 f"{root / MANIFEST} is missing; export that view or remove it from the manifest")
            names = _list_names(d)
            want = [image_name(i, m.image_format) for i in range(m.n_faces)]
            if names != want:
                have, need = set(names), set(want)
                miss = sorted(need - have)
                extra = sorted(have - need)
                detail = f"first missing {miss[0]}" if miss else f"unexpected {extra[0]}"
                raise DiganError(f"view folder {d} holds {len(names)} files but the manifest says n_faces={m.n_faces} "
                                 f"({detail}); every view needs {want[0]} .. {want[-1]} and nothing else")
        sf = SamplesFolder(root, "views", m.n_faces, m.image_size, m.views(), m)
    if check_images:
        sf.check_images()
    return sf


class SamplesMethod(Method):
    """A samples folder as a benchmark method (spec ``samples:PATH``).

    ``latents(n, seed, start)`` returns the face indices ``start .. start+n-1`` (the folder is a
    fixed set: the seed cannot change it; it is recorded as usual). Capabilities: pose only over the
    views present (``Capabilities.yaws``), at most ``n_faces`` faces (``max_faces``), no light,
    depth, mesh or reconstruction; ``generate`` is False (nothing is generated, so speed is n/a;
    FID/KID score the stored images).
    """

    name = "samples"

    def __init__(self, folder: str | Path, check_images: bool = False):
        self.folder = open_samples(folder, check_images=check_images)
        self._device = torch.device("cpu")

    @property
    def capabilities(self) -> Capabilities:
        f = self.folder
        yaws = tuple(sorted({float(y) for y, _ in f.views}))
        frontal_only = len(f.views) == 1 and f.views[0] == (0.0, 0.0)
        src = f"samples folder {f.root}"
        reasons = {
            "light": f"{src}: pre-rendered images have no light control",
            "depth": f"{src}: images only, no depth or normals",
            "mesh": f"{src}: images only, no 3D shape",
            "reconstruct": f"{src}: a folder of images cannot reconstruct other images",
            "generate": f"{src}: pre-rendered images, nothing is generated (no speed to measure)",
        }
        if frontal_only:
            reasons["pose"] = (f"{src}: 2D samples (no manifest with views): no pose control" if f.kind == "flat"
                               else f"{src}: only the frontal view (yaw 0) was exported: no pose control")
        return Capabilities(pose=not frontal_only, light=False, depth=False, mesh=False, reconstruct=False, generate=False,
                            image_size=f.image_size, max_faces=f.n_faces, yaws=None if frontal_only else yaws, reasons=reasons)

    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, device: torch.device | str) -> "SamplesMethod":
        self._device = torch.device(device)
        return self

    def latents(self, n: int, seed: int, start: int = 0) -> torch.Tensor:
        if start + n > self.folder.n_faces:
            raise DiganError(f"samples folder {self.folder.root} has {self.folder.n_faces} faces; faces {start}..{start + n - 1} "
                             f"were asked for (use --n-faces {self.folder.n_faces} or export more)")
        return torch.arange(start, start + n, dtype=torch.long)

    def render(self, latents: torch.Tensor, yaw: float = 0.0, pitch: float = 0.0, light: Light | None = None) -> Rendered:
        if light is not None:
            raise DiganError(f"samples folder {self.folder.root} holds pre-rendered images and cannot be relit")
        idx = [int(i) for i in torch.as_tensor(latents).reshape(-1).tolist()]
        return Rendered(image=self.folder.load(idx, yaw, pitch).to(self._device))

    def info(self) -> dict[str, Any]:
        f = self.folder
        out: dict[str, Any] = {"name": self.name, "variant": self.variant, "folder": str(f.root), "kind": f.kind,
                               "n_faces": f.n_faces, "image_size": f.image_size,
                               "views": [view_dir_name(y, p) for y, p in f.views]}
        if f.manifest is not None:
            m = f.manifest
            out.update({"method": m.method, "seed": m.seed, "source": m.source, "created": m.created, "format_version": m.version})
        return out

    def weights(self) -> dict[str, Any]:
        # the images are the "weights" of this method: hash the manifest (or the file list) so that a
        # changed export reruns the metrics
        f = self.folder
        if f.manifest is not None:
            return {"manifest": str(f.root / MANIFEST)}
        listing = "\n".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in (f._flat or []))
        return {"files": {"listing": torch.tensor(list(listing.encode()), dtype=torch.uint8)}}


@register_method("samples", help="Rendered samples folder (manifest + yaw_* folders, or a flat folder of 2D samples). samples:PATH")
def _make_samples(arg: str | None, variant: str = "full", check_images: bool = False, **unknown: Any) -> Method:
    if unknown:
        raise DiganError(f"samples has no option '{sorted(unknown)[0]}'; valid option: check_images")
    if variant != "full":
        raise DiganError(f"samples has no variant '{variant}'; use samples:PATH")
    if not arg:
        raise DiganError("samples needs a folder: samples:PATH (see baselines.samples for the format)")
    return SamplesMethod(arg, check_images=bool(check_images))


def write_samples(method: Method, out_dir: str | Path, n: int, yaws: Sequence[float] = (0.0,), pitches: Sequence[float] = (0.0,),
                  seed: int = 0, batch_size: int = 16, force: bool = False, method_name: str | None = None, source: str = "",
                  notes: str = "", on_batch: Callable[[int], None] | None = None) -> SamplesManifest:
    """Render faces ``0..n-1`` of ``seed`` at every (pitch, yaw) and write them in the samples format
    (atomically: the folder appears complete or not at all; ``force`` replaces an existing one).

    A method without pose control can only export the frontal view; a samples method only its
    views. ``on_batch(k)`` is called with the number of images written so far.
    """
    from digan.utils.images import save_png
    from digan.utils.io import atomic_dir
    from digan.utils.provenance import write_run_info

    if n < 1:
        raise DiganError(f"--n must be at least 1, got {n}")
    yaws = [float(y) for y in yaws]
    pitches = [float(p) for p in pitches] or [0.0]
    caps = method.capabilities
    views = [(y, p) for p in pitches for y in yaws]
    if not caps.pose and any(v != (0.0, 0.0) for v in views):
        raise DiganError(f"method {method.name} cannot render other views ({caps.missing_reason('pose')}); export with --yaws 0")
    if caps.yaws is not None:
        have = {format_angle(y) for y in caps.yaws}
        bad = [y for y in yaws if format_angle(y) not in have]
        if bad:
            raise DiganError(f"method {method.name} has no yaw {format_angle(bad[0])}; it has {sorted(caps.yaws)}")
    if caps.max_faces is not None and n > caps.max_faces:
        raise DiganError(f"method {method.name} has {caps.max_faces} faces; export at most that many (--n {caps.max_faces})")
    size = 0
    written = 0
    with atomic_dir(out_dir, force=force) as tmp:
        for s0 in range(0, n, batch_size):
            m = min(batch_size, n - s0)
            with torch.no_grad():
                lat = method.latents(m, seed, s0)
                if isinstance(lat, torch.Tensor) and lat.is_floating_point():
                    lat = lat.to(method.device)
                for y, p in views:
                    img = method.render(lat, yaw=y, pitch=p).image.detach().float().clamp(-1, 1).cpu()
                    if img.shape[-1] != img.shape[-2]:
                        raise DiganError(f"method {method.name} rendered {img.shape[-1]}x{img.shape[-2]} images; samples must be square")
                    size = int(img.shape[-1])
                    d = tmp / view_dir_name(y, p)
                    for j in range(m):
                        save_png(d / image_name(s0 + j), img[j])
                    written += m
                    if on_batch is not None:
                        on_batch(written)
        manifest = SamplesManifest(method=method_name or method.name, n_faces=n, yaws=yaws, pitches=pitches, image_size=size,
                                   seed=seed, source=source or f"digan-bench export-samples of {method.name}", notes=notes,
                                   info=json.loads(json.dumps(method.info(), default=str)))
        write_manifest(tmp, manifest)
        write_run_info(tmp / "run.json", "export-samples", config={"n": n, "yaws": yaws, "pitches": pitches, "seed": seed,
                                                                   "batch_size": batch_size, "method": method.info()},
                       seeds={"latents": seed}, weights=method.weights())
    return manifest
