"""5-point similarity alignment of faces (insightface's ``norm_crop``, written on numpy + OpenCV).

The transform from the 5 detected keypoints (left eye, right eye, nose tip, left and right mouth
corner) to a template is the least-squares similarity (rotation, uniform scale, translation) of
Umeyama (1991), the estimator ``skimage.transform.SimilarityTransform.estimate`` uses, and the
crop is ``cv2.warpAffine`` with bilinear interpolation and a black border, which is what
``insightface.utils.face_align.norm_crop`` does. The tests check pixel agreement with it.

Templates
---------
* ``"arcface"``: the standard ArcFace 112 x 112 template (``ARCFACE_TEMPLATE``); for sizes that
  are multiples of 112 it is scaled, for multiples of 128 scaled by size/128 and shifted 8 px
  right (insightface's rule). Recognition models expect this crop.
* ``"ffhq"``: an FFHQ-style loose crop for GAN training data: the ArcFace template placed by the
  FFHQ alignment rule (crop side = 2 * max(2.0 * |eye-to-eye|, 1.8 * |eye-to-mouth|), centred
  at ``eye midpoint + 0.1 * eye-to-mouth``), in units of the output side (``FFHQ_TEMPLATE``).
  On the 10 FFHQ test images the mean 5 landmarks lie within 0.03 of the image side of it.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from digan.errors import DiganError

__all__ = [
    "ARCFACE_TEMPLATE",
    "FFHQ_TEMPLATE",
    "TEMPLATES",
    "umeyama",
    "template_points",
    "estimate_norm",
    "norm_crop",
    "align_faces",
    "transform_points",
]

#: ArcFace 5-point template in a 112 x 112 crop (x, y)
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def _ffhq_from_arcface() -> np.ndarray:
    a = ARCFACE_TEMPLATE
    eye = a[:2].mean(0)
    mouth = a[3:].mean(0)
    e2e = a[1] - a[0]
    e2m = mouth - eye
    side = 2.0 * max(2.0 * np.linalg.norm(e2e), 1.8 * np.linalg.norm(e2m))
    centre = eye + 0.1 * e2m
    return (a - centre) / side + 0.5


#: FFHQ-style 5-point template in units of the crop side (multiply by the output size)
FFHQ_TEMPLATE = _ffhq_from_arcface()

TEMPLATES = ("arcface", "ffhq")


def umeyama(src: np.ndarray, dst: np.ndarray, estimate_scale: bool = True) -> np.ndarray:
    """Least-squares similarity ``dst ~ s R src + t`` (Umeyama 1991); returns the 3 x 3 matrix.

    ``src``, ``dst``: (N, D) corresponding points. Reflections are excluded (det R = +1).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n, d = src.shape
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    cov = dc.T @ sc / n
    sign = np.ones(d)
    if np.linalg.det(cov) < 0:
        sign[-1] = -1.0
    u, sv, vt = np.linalg.svd(cov)
    rank = np.linalg.matrix_rank(cov)
    if rank == 0:
        raise DiganError("cannot align a face whose keypoints all coincide; the detection is degenerate")
    if rank == d - 1 and np.linalg.det(u) * np.linalg.det(vt) > 0:
        rot = u @ vt
    elif rank == d - 1:
        s = sign.copy()
        s[-1] = -1.0
        rot = u @ np.diag(s) @ vt
    else:
        rot = u @ np.diag(sign) @ vt
    scale = (sv @ sign) / sc.var(0).sum() if estimate_scale else 1.0
    out = np.eye(d + 1)
    out[:d, :d] = scale * rot
    out[:d, d] = mu_d - scale * rot @ mu_s
    return out


def template_points(size: int = 112, template: str = "arcface") -> np.ndarray:
    """The 5 template points (x, y) in pixels of a ``size x size`` crop."""
    if template == "arcface":
        if size % 112 == 0:
            return ARCFACE_TEMPLATE * (size / 112.0)
        if size % 128 == 0:
            pts = ARCFACE_TEMPLATE * (size / 128.0)
            pts[:, 0] += 8.0 * size / 128.0
            return pts
        raise DiganError(f"ArcFace crops must be a multiple of 112 or 128 px, got {size}; use 112")
    if template == "ffhq":
        return FFHQ_TEMPLATE * float(size)
    raise DiganError(f"unknown alignment template {template!r}; choose one of {', '.join(TEMPLATES)}")


def estimate_norm(kps: np.ndarray, size: int = 112, template: str = "arcface") -> np.ndarray:
    """2 x 3 affine matrix mapping image pixels to the aligned ``size x size`` crop."""
    kps = np.asarray(kps, dtype=np.float64).reshape(5, 2)
    return umeyama(kps, template_points(size, template))[:2]


def norm_crop(img: np.ndarray, kps: np.ndarray, size: int = 112, template: str = "arcface") -> np.ndarray:
    """Aligned crop of a uint8 H x W x 3 image from its 5 keypoints (black outside the image)."""
    m = estimate_norm(kps, size, template)
    return cv2.warpAffine(img, m, (size, size), borderValue=0.0)


def align_faces(
    images: Sequence[np.ndarray], kps: Sequence[np.ndarray], size: int = 112, template: str = "arcface"
) -> np.ndarray:
    """Aligned crops (N, size, size, 3) uint8 of uint8 images and their (5, 2) keypoints."""
    if len(images) != len(kps):
        raise ValueError("align_faces needs one keypoint set per image")
    out = np.zeros((len(images), size, size, 3), dtype=np.uint8)
    for i, (im, k) in enumerate(zip(images, kps)):
        out[i] = norm_crop(im, k, size, template)
    return out


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 2 x 3 affine matrix to (N, 2) points."""
    pts = np.asarray(pts, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]
