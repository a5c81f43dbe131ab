"""Loaders: the synthetic ground-truth heads (``SynthDataset``) and plain image folders.

``SynthDataset(root)`` reads a folder written by ``digan-bench data synth`` (layout in
:mod:`digan.data.synth`) through memory-mapped arrays and returns, per sample, a dict of tensors:

=================  ===========  =================================================================
key                shape        meaning
=================  ===========  =================================================================
image              (3,S,S)      float in [-1, 1]
depth              (1,S,S)      camera depth of the visible surface (renderer background depth
                                outside the mask)
normal             (3,S,S)      unit view-space normals (n_z > 0 facing the camera), 0 outside
mask               (1,S,S)      float {0, 1}: the bust
damage             (1,S,S)      float {0, 1}: visible damaged surface
rotation           (3,)         degrees (pitch, yaw, roll)
translation        (3,)         camera units
light              (4,)         ambient, diffuse, dx, dy
identity           ()           int64 identity index
canonical_depth    (1,S,S)      the identity's frontal depth
canonical_albedo   (3,S,S)      the identity's albedo in [-1, 1]
canonical_normal   (3,S,S)      normals of canonical_depth
canonical_mask     (1,S,S)      silhouette in the canonical frame
canonical_damage   (1,S,S)      damage in the canonical frame
twin_image         (3,S,S)      only in sets made with ``twins``: the undamaged twin (same view,
                                light, backdrop), and its ``twin_depth`` (1,S,S), ``twin_normal``
                                (3,S,S), ``twin_mask`` (1,S,S); ``restore_mask`` (1,S,S) the region
                                to restore (:mod:`digan.data.synth`)
=================  ===========  =================================================================

``ImageFolderDataset(root)``: every PNG/JPG under a folder (recursively, sorted), all of one
size, as (3,S,S) tensors in [-1, 1] -- what the GAN trainer needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from digan.errors import DiganError

__all__ = ["SynthDataset", "load_synth", "ImageFolderDataset", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_PER_SAMPLE = ("images", "depth", "normal", "mask", "damage", "view", "light", "identity")
_PER_IDENTITY = ("canonical_depth", "canonical_albedo", "canonical_normal", "canonical_mask", "canonical_damage")
_TWINS = ("twin_images", "twin_depth", "twin_normal", "twin_mask", "restore_mask")  # optional (data synth --twins)


class SynthDataset(Dataset):
    """The synthetic ground-truth heads at ``root`` (see the module docstring).

    ``canonical=False`` leaves out the per-identity canonical maps (faster items).
    """

    def __init__(self, root: str | Path, canonical: bool = True):
        from digan.data.synth import FORMAT, FORMAT_VERSION
        from digan.utils.io import read_json

        self.root = Path(root).expanduser()
        mpath = self.root / "manifest.json"
        if not mpath.is_file():
            raise DiganError(f"{self.root} is not a synthetic data set (no manifest.json); create it with 'digan-bench data synth --out {self.root}'")
        self.manifest = read_json(mpath)
        if self.manifest.get("format") != FORMAT:
            raise DiganError(f"{mpath} has format {self.manifest.get('format')!r}, expected {FORMAT!r}; point at a 'data synth' folder")
        if int(self.manifest.get("version", 0)) > FORMAT_VERSION:
            raise DiganError(f"{mpath} is format version {self.manifest['version']}, newer than this digan-bench ({FORMAT_VERSION}); update digan-bench")
        self.size = int(self.manifest["size"])
        self.canonical = canonical
        self.arrays: dict[str, np.ndarray] = {}
        self.has_twins = all(k in self.manifest["fields"] for k in _TWINS)
        for name in _PER_SAMPLE + (_PER_IDENTITY if canonical else ()) + (_TWINS if self.has_twins else ()):
            spec = self.manifest["fields"].get(name)
            if spec is None:
                raise DiganError(f"{mpath} lists no field {name!r}; regenerate the data set")
            p = self.root / spec["file"]
            try:
                a = np.load(p, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise DiganError(f"array {p} is missing or corrupt ({type(e).__name__}); regenerate the data set with --force") from e
            if list(a.shape) != list(spec["shape"]):
                raise DiganError(f"array {p} has shape {list(a.shape)}, manifest says {spec['shape']}; regenerate the data set with --force")
            self.arrays[name] = a

    def __len__(self) -> int:
        return int(self.manifest["n"])

    @property
    def identity_param_names(self) -> list[str]:
        return list(self.manifest["identity_param_names"])

    def identity_params(self, identity: int) -> dict[str, float]:
        """The procedural parameters of an identity (re-render with :func:`digan.data.synth.render_views`)."""
        a = np.load(self.root / self.manifest["fields"]["identity_params"]["file"], mmap_mode="r")
        return {k: float(v) for k, v in zip(self.identity_param_names, a[identity])}

    def views(self, indices: Iterable[int]):
        """Batched :class:`~digan.render.types.View` of the given samples."""
        from digan.render.types import View

        v = torch.from_numpy(np.asarray(self.arrays["view"][list(indices)], np.float32))
        return View(v[:, :3].contiguous(), v[:, 3:].contiguous())

    def lights(self, indices: Iterable[int]):
        """Batched :class:`~digan.render.types.Light` of the given samples."""
        from digan.render.types import Light

        li = torch.from_numpy(np.asarray(self.arrays["light"][list(indices)], np.float32))
        return Light(li[:, 0].contiguous(), li[:, 1].contiguous(), li[:, 2:4].contiguous())

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i = i % len(self)
        a = self.arrays

        def t(x, dtype=torch.float32):
            return torch.from_numpy(np.array(x)).to(dtype)

        img = t(a["images"][i]).permute(2, 0, 1) / 127.5 - 1.0
        view = t(a["view"][i])
        item = {
            "image": img,
            "depth": t(a["depth"][i])[None],
            "normal": t(a["normal"][i]),
            "mask": t(a["mask"][i])[None],
            "damage": t(a["damage"][i])[None],
            "rotation": view[:3],
            "translation": view[3:],
            "light": t(a["light"][i]),
            "identity": torch.tensor(int(a["identity"][i]), dtype=torch.int64),
        }
        if self.has_twins:
            item["twin_image"] = t(a["twin_images"][i]).permute(2, 0, 1) / 127.5 - 1.0
            item["twin_depth"] = t(a["twin_depth"][i])[None]
            item["twin_normal"] = t(a["twin_normal"][i])
            item["twin_mask"] = t(a["twin_mask"][i])[None]
            item["restore_mask"] = t(a["restore_mask"][i])[None]
        if self.canonical:
            k = int(a["identity"][i])
            item["canonical_depth"] = t(a["canonical_depth"][k])[None]
            item["canonical_albedo"] = t(a["canonical_albedo"][k])
            item["canonical_normal"] = t(a["canonical_normal"][k])
            item["canonical_mask"] = t(a["canonical_mask"][k])[None]
            item["canonical_damage"] = t(a["canonical_damage"][k])[None]
        return item


def load_synth(path: str | Path) -> SynthDataset:
    """Open a synthetic data set folder (used by the SIDE/MAD metrics)."""
    return SynthDataset(path)


class ImageFolderDataset(Dataset):
    """Images only: every ``.png``/``.jpg``/``.jpeg`` under ``root`` (recursive, sorted), as
    (3,S,S) float tensors in [-1, 1]. All images must have one size (``size`` when given);
    non-square images are rejected. ``exclude`` drops files whose name matches (default: the
    synthetic data set's preview sheets)."""

    def __init__(self, root: str | Path, size: Optional[int] = None, exclude: tuple[str, ...] = ("contact_sheet.png", "ground_truth_sheet.png")):
        from PIL import Image

        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DiganError(f"image folder {self.root} not found; pass a folder of .png/.jpg images")
        self.files = sorted(
            p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and p.name not in exclude
        )
        if not self.files:
            raise DiganError(f"image folder {self.root} holds no .png/.jpg images; point at a folder of face images")
        with Image.open(self.files[0]) as im:
            w, h = im.size
        if w != h:
            raise DiganError(f"image {self.files[0]} is {w}x{h}; square images are needed (crop or resize the folder)")
        if size is not None and w != size:
            raise DiganError(f"image {self.files[0]} is {w}x{h}, expected {size}x{size}; resize the folder or pass the matching size")
        self.size = w

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        from digan.utils.images import load_image

        return load_image(self.files[i], size=self.size)
