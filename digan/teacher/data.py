"""Training images for the teacher: any folder of same-size square images (PNG/JPG/WebP/BMP).

The whole set is decoded once into a uint8 tensor when it fits in ``cache_gb`` (small data
sets, the case ADA/DiffAugment are for); larger sets are decoded per batch. The order is a pure
function of (seed, step, rank): sample k of the run is element ``k mod M`` of the permutation of
epoch ``k div M`` (M = N, or 2N with ``mirror``, where indices >= N are x-flipped copies), so a
resumed run, or a run split over processes, reads exactly the images an uninterrupted run reads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from digan.errors import DiganError

__all__ = ["IMAGE_EXTS", "list_images", "ImageFolderData"]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def list_images(folder: str | Path) -> list[Path]:
    """Sorted image files directly inside ``folder`` or in its sub-folders."""
    d = Path(folder)
    if not d.is_dir():
        raise DiganError(f"data folder {d} not found; pass --data DIR with the training images (e.g. from 'digan-bench data synth')")
    files = sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file() and not p.name.startswith("."))
    if not files:
        raise DiganError(f"data folder {d} has no images ({', '.join(IMAGE_EXTS)}); point --data at a folder of face images")
    return files


def _read(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as e:
        raise DiganError(f"image {path} is unreadable ({type(e).__name__}); remove or replace it") from e


class ImageFolderData:
    """Deterministically ordered batches from a folder of same-size square images."""

    def __init__(self, folder: str | Path, size: int | None = None, mirror: bool = True, seed: int = 0, cache_gb: float = 4.0):
        self.files = list_images(folder)
        first = _read(self.files[0])
        h, w = first.shape[:2]
        if h != w:
            raise DiganError(f"image {self.files[0]} is {w}x{h}; the teacher needs square images (crop or align the data set)")
        if size is not None and h != size:
            raise DiganError(
                f"data images are {h}x{h} but the teacher is {size}x{size}; pass --set model.size={h} or resize the data set"
            )
        self.size = h
        self.mirror = mirror
        self.seed = int(seed)
        self.n = len(self.files)
        self.cache: torch.Tensor | None = None
        if self.n * 3 * h * h <= cache_gb * 2**30:
            arr = np.empty((self.n, h, h, 3), dtype=np.uint8)
            for i, f in enumerate(self.files):
                a = first if i == 0 else _read(f)
                if a.shape[:2] != (h, h):
                    raise DiganError(f"image {f} is {a.shape[1]}x{a.shape[0]}, the others {h}x{h}; make every image the same size")
                arr[i] = a
            self.cache = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
        self._perm_epoch = -1
        self._perm: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.n

    @property
    def period(self) -> int:
        return self.n * (2 if self.mirror else 1)

    def _perm_for(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.period, generator=g)
            self._perm_epoch = epoch
        return self._perm  # type: ignore[return-value]

    def indices(self, start: int, count: int) -> list[int]:
        """Indices (into the mirrored index space) of run samples ``start .. start+count-1``."""
        out = []
        for k in range(start, start + count):
            e, r = divmod(k, self.period)
            out.append(int(self._perm_for(e)[r]))
        return out

    def load(self, idx: list[int]) -> torch.Tensor:
        """Images for mirrored indices as float (B, 3, S, S) in [-1, 1]."""
        imgs = []
        for i in idx:
            j, flip = i % self.n, i >= self.n
            if self.cache is not None:
                t = self.cache[j]
            else:
                a = _read(self.files[j])
                if a.shape[:2] != (self.size, self.size):
                    raise DiganError(f"image {self.files[j]} is {a.shape[1]}x{a.shape[0]}, the others {self.size}x{self.size}")
                t = torch.from_numpy(np.array(a)).permute(2, 0, 1)  # a writable copy
            imgs.append(t.flip(-1) if flip else t)
        return torch.stack(imgs).float() / 127.5 - 1.0

    def batch(self, step: int, batch: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        """This process's share of the global batch of training step ``step``."""
        local = batch // world
        return self.load(self.indices(step * batch + rank * local, local))
