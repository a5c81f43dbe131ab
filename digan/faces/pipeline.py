"""Detection + alignment + embedding + pose for batches of generated images, in one call.

:class:`FacePipeline` is what the identity and pose metrics use. For each image it returns
whether a face was found, the 5 keypoints, the L2-normalised embedding of the 112 x 112 ArcFace
crop and the yaw/pitch/roll fitted to the keypoints; rows of images without a face are NaN and
``found`` is False, so callers count misses instead of silently dropping them.

Alignment modes
---------------
* ``"detector"`` (default): SCRFD keypoints, as insightface does.
* ``"fixed"``: no detection; every image is assumed to be a centred, aligned face crop whose 5
  points sit at a fixed template (default the FFHQ-style template of
  :data:`digan.faces.align.FFHQ_TEMPLATE`, scaled to the image size; ``fixed_kps`` gives
  another one in units of the image side). For generators whose faces the detector misses; it
  must be chosen explicitly, is recorded in :meth:`FacePipeline.info`, and gives no pose (the
  keypoints do not move with the face).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import numpy as np

from digan.errors import DiganError
from digan.faces.align import FFHQ_TEMPLATE, align_faces
from digan.faces.detector import FaceDetector, images_to_uint8
from digan.faces.pose import estimate_pose
from digan.faces.recognizer import FaceRecognizer

__all__ = ["FaceAnalysis", "FacePipeline", "ALIGN_MODES"]

ALIGN_MODES = ("detector", "fixed")


@dataclass
class FaceAnalysis:
    """Per-image results (first axis = image). NaN rows where ``found`` is False."""

    found: np.ndarray  # (N,) bool
    score: np.ndarray  # (N,) detector confidence (1.0 with fixed alignment)
    kps: np.ndarray  # (N, 5, 2) pixels of the input image
    embedding: np.ndarray | None  # (N, D) L2-normalised, None when not requested
    yaw: np.ndarray  # (N,) degrees (NaN with fixed alignment)
    pitch: np.ndarray
    roll: np.ndarray

    def __len__(self) -> int:
        return len(self.found)


class FacePipeline:
    """Detector + ArcFace alignment + recognizer + landmark pose.

    ``detector`` / ``recognizer``: an instance, a path or file name (resolved as in
    :func:`digan.faces.onnx_models.resolve_model`), or None for the default file; pass
    ``recognizer=False`` for detection and pose only. ``align``: ``"detector"`` or ``"fixed"``
    (see the module docstring). ``device``: "cpu" or "cuda" for onnxruntime.
    """

    def __init__(
        self,
        detector: FaceDetector | str | os.PathLike | None = None,
        recognizer: FaceRecognizer | str | os.PathLike | None | Literal[False] = None,
        align: str = "detector",
        fixed_kps: np.ndarray | None = None,
        device: str = "cpu",
        threads: int | None = None,
    ):
        if align not in ALIGN_MODES:
            raise DiganError(f"unknown face alignment {align!r}; choose one of {', '.join(ALIGN_MODES)}")
        self.align = align
        self.fixed_kps = np.asarray(FFHQ_TEMPLATE if fixed_kps is None else fixed_kps, dtype=np.float64).reshape(5, 2)
        if align == "detector":
            self.detector = detector if isinstance(detector, FaceDetector) else FaceDetector(detector, device=device, threads=threads)
        else:
            self.detector = None
        if recognizer is False:
            self.recognizer = None
        else:
            self.recognizer = (
                recognizer if isinstance(recognizer, FaceRecognizer) else FaceRecognizer(recognizer, device=device, threads=threads)
            )

    def info(self) -> dict:
        """JSON-ready description of the pipeline (files, hashes, settings) for result records."""
        d: dict = {"align": self.align, "crop": "arcface-112"}
        if self.detector is not None:
            d["detector"] = self.detector.info()
        else:
            d["fixed_kps"] = self.fixed_kps.round(5).tolist()
        if self.recognizer is not None:
            d["recognizer"] = self.recognizer.info()
        return d

    def weights(self) -> dict[str, str]:
        """``{role: "file:<sha256>"}`` of the model files used."""
        w = {}
        if self.detector is not None:
            w["detector"] = "file:" + self.detector.info()["sha256"]
        if self.recognizer is not None:
            w["recognizer"] = "file:" + self.recognizer.sha256
        return w

    def analyze(self, images, embed: bool = True, pose: bool = True) -> FaceAnalysis:
        """Analyse a batch (``B x 3 x H x W`` tensor in [-1, 1] or uint8 images)."""
        imgs = images_to_uint8(images)
        n = len(imgs)
        kps = np.full((n, 5, 2), np.nan)
        score = np.full(n, np.nan)
        if self.align == "fixed":
            for i, im in enumerate(imgs):
                h, w = im.shape[:2]
                kps[i] = self.fixed_kps * np.array([w, h], dtype=np.float64)
            score[:] = 1.0
            found = np.ones(n, dtype=bool)
        else:
            faces = self.detector.detect_best(imgs)
            found = np.array([f is not None for f in faces], dtype=bool)
            for i, f in enumerate(faces):
                if f is not None:
                    kps[i] = f.kps
                    score[i] = f.score
        emb = None
        if embed:
            if self.recognizer is None:
                raise DiganError("this face pipeline has no recognizer; create it with a recognizer model to embed faces")
            emb = np.full((n, self.recognizer.dim), np.nan, dtype=np.float32)
            ids = np.flatnonzero(found)
            if ids.size:
                crops = align_faces([imgs[i] for i in ids], [kps[i] for i in ids], 112, "arcface")
                emb[ids] = self.recognizer.embed(crops)
        yaw = np.full(n, np.nan)
        pitch = np.full(n, np.nan)
        roll = np.full(n, np.nan)
        if pose and self.align == "detector":
            ids = np.flatnonzero(found)
            if ids.size:
                est = estimate_pose(kps[ids])
                yaw[ids], pitch[ids], roll[ids] = est.yaw, est.pitch, est.roll
        return FaceAnalysis(found=found, score=score, kps=kps, embedding=emb, yaw=yaw, pitch=pitch, roll=roll)

    def read_pose(self, images) -> np.ndarray:
        """(N,2) head pose (pitch, yaw) in degrees of each image from its detected keypoints
        (:mod:`digan.faces.pose`), NaN rows where no face is found (needs ``align="detector"``)."""
        if self.align != "detector":
            raise DiganError("read_pose needs the detector (align='detector'): a fixed alignment has no pose to read")
        a = self.analyze(images, embed=False, pose=True)
        return np.stack([a.pitch, a.yaw], 1)

