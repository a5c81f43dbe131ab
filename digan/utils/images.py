"""Image conversions shared by every part of the toolkit.

Convention: inside the toolkit images are float tensors ``B x 3 x H x W`` in ``[-1, 1]`` (the
StyleGAN2 convention); on disk they are 8-bit RGB PNGs. Depth maps and masks are ``B x 1 x H x W``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from digan.errors import DiganError
from digan.utils.io import write_bytes

__all__ = [
    "to_uint8",
    "from_uint8",
    "save_png",
    "load_image",
    "make_grid",
    "save_grid",
]


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """``[-1, 1]`` tensor (C,H,W) or (B,C,H,W) -> uint8 array (H,W,C) or (B,H,W,C)."""
    x = img.detach().float().cpu().clamp(-1, 1)
    x = ((x + 1) * 127.5).round().to(torch.uint8)
    if x.ndim == 3:
        return x.permute(1, 2, 0).numpy()
    return x.permute(0, 2, 3, 1).numpy()


def from_uint8(arr: np.ndarray) -> torch.Tensor:
    """uint8 array (H,W,C) or (B,H,W,C) -> float tensor in ``[-1, 1]`` (C,H,W) or (B,C,H,W)."""
    t = torch.from_numpy(np.ascontiguousarray(arr)).float() / 127.5 - 1.0
    if t.ndim == 2:
        t = t[..., None]
    if t.ndim == 3:
        return t.permute(2, 0, 1)
    return t.permute(0, 3, 1, 2)


def save_png(path: str | Path, img: torch.Tensor | np.ndarray) -> Path:
    """Save one image (tensor in [-1,1] or uint8 array) as PNG, atomically."""
    arr = to_uint8(img) if isinstance(img, torch.Tensor) else np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return write_bytes(path, buf.getvalue())


def load_image(path: str | Path, size: int | None = None) -> torch.Tensor:
    """Load an RGB image as (3,H,W) in [-1,1]; with ``size`` it must already be ``size x size``."""
    p = Path(path)
    try:
        with Image.open(p) as im:
            arr = np.array(im.convert("RGB"))  # writable copy: torch warns on read-only buffers
    except FileNotFoundError as e:
        raise DiganError(f"image {p} not found; check the path") from e
    except Exception as e:
        raise DiganError(f"image {p} is unreadable ({type(e).__name__}); replace or remove it") from e
    if size is not None and arr.shape[:2] != (size, size):
        raise DiganError(
            f"image {p} is {arr.shape[1]}x{arr.shape[0]}, expected {size}x{size}; "
            "resize the data set (digan-bench data faces ... --size) or pass the matching --size"
        )
    return from_uint8(arr)


def make_grid(imgs: torch.Tensor | Sequence[torch.Tensor], nrow: int = 8, pad: int = 2, value: float = 1.0) -> torch.Tensor:
    """Tile (B,C,H,W) images in [-1,1] into one (C, H', W') image; 1-channel images become grey RGB."""
    x = torch.stack(list(imgs)) if not isinstance(imgs, torch.Tensor) else imgs
    x = x.detach().float().cpu()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    b, c, h, w = x.shape
    nrow = max(1, min(nrow, b))
    ncol = (b + nrow - 1) // nrow
    out = torch.full((c, ncol * (h + pad) + pad, nrow * (w + pad) + pad), value)
    for i in range(b):
        r, q = divmod(i, nrow)
        out[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = x[i]
    return out


def save_grid(path: str | Path, imgs: torch.Tensor, nrow: int = 8) -> Path:
    return save_png(path, make_grid(imgs, nrow=nrow))
