"""SCRFD face detection with 5 keypoints (insightface's ``det_*.onnx`` detectors) on onnxruntime.

Our own decoding of the SCRFD heads, written from the published model layout and checked against
``insightface.model_zoo.scrfd.SCRFD`` in the tests:

* input ``1 x 3 x H x W`` RGB, ``(x - 127.5) / 128``; H, W multiples of 32;
* three strides (8, 16, 32), two anchors per cell; per stride a score map, 4 box distances
  (left, top, right, bottom) and 10 keypoint offsets, all in units of the stride, measured from
  the cell's top-left corner ``(x * stride, y * stride)``;
* score threshold 0.5, greedy NMS at IoU 0.4 (insightface's defaults).

The image is letter-boxed into the square detector input: scaled to fit, placed at the top-left,
zero (black) elsewhere, exactly as insightface does, so results agree with it.

Face crops and small generator images
-------------------------------------
SCRFD is trained on WIDER FACE photos where faces have context around them. An aligned face
crop (a 64 x 64 GAN sample, an FFHQ or CelebA image) whose face fills the frame is often missed
when it is simply scaled up to the 640-px input: on the 10 FFHQ test images at 256 px,
SCRFD-500M finds 7 that way. Images whose longer side is at most ``crop_side`` (default 512 px)
are therefore treated as face crops: padded on every side by ``crop_pad`` (default 0.25) of
their size with their edge colour (``cv2.BORDER_REPLICATE``), then letter-boxed into a
``crop_input`` (default 320) square, i.e. a 64-px image is upsampled 3.3x and its face is about
130 px tall at the detector. Measured on FFHQ (10) and CelebA (100) photos resized to 64, 128
and 256 px: every face found, keypoints within 0.05 inter-ocular distances of the 68-point
ground truth (FFHQ). Larger images (photos) use ``input_size`` (640) unpadded, like insightface,
and are retried once padded by ``retry_pad`` (0.5) when nothing is found there. Boxes and
keypoints are mapped back to the original image's pixels.

Measured detection rates (SCRFD-500M ``det_500m.onnx``, these defaults)
-----------------------------------------------------------------------
* real photos: FFHQ 10/10 (256 px), CelebA 100/100 (178 x 218; also at 64 and 128 px),
  verification-pair photos 64/64 (and, as it should, 1 of 15 AFHQ cat faces);
* the project's synthetic clay heads (``digan-bench data synth`` defaults: 64 px, yaw +-35,
  pitch +-12, gradient backdrops): 200/200; heads rendered at fixed yaws (40 identities):
  100% at 0 and +-15 degrees, 97-100% at +-30, 82-97% at +-45 (64 px; 75-80% at +-45 at 128 px).
  The fixed-template alignment of :mod:`digan.faces.pipeline` is therefore not needed for them.

Choice of face
--------------
:meth:`FaceDetector.detect_best` keeps one face per image: the one with the largest
``area - 2 * squared distance of the box centre from the image centre`` (insightface's rule),
i.e. the largest, most central face.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from digan.errors import DiganError
from digan.faces.onnx_models import file_sha256, open_session, resolve_model

__all__ = ["Face", "FaceDetector", "images_to_uint8", "nms"]


@dataclass
class Face:
    """One detection in original-image pixel coordinates.

    ``bbox``: (4,) x1, y1, x2, y2; ``score``: detector confidence in [0, 1];
    ``kps``: (5, 2) x, y of left eye, right eye, nose tip, left mouth corner, right mouth corner
    (left/right as seen in the image).
    """

    bbox: np.ndarray
    score: float
    kps: np.ndarray

    @property
    def area(self) -> float:
        return float(max(0.0, self.bbox[2] - self.bbox[0]) * max(0.0, self.bbox[3] - self.bbox[1]))


def images_to_uint8(images) -> list[np.ndarray]:
    """Accept a float tensor/array ``B x 3 x H x W`` in [-1, 1], a uint8 array ``B x H x W x 3``,
    a single ``H x W x 3`` uint8 image, or a list of uint8 images; return RGB uint8 images."""
    try:
        import torch

        if isinstance(images, torch.Tensor):
            from digan.utils.images import to_uint8

            if images.ndim == 3:
                images = images[None]
            return list(to_uint8(images))
    except ImportError:  # pragma: no cover
        pass
    if isinstance(images, np.ndarray):
        if images.dtype == np.uint8:
            if images.ndim == 3:
                return [images]
            return list(images)
        x = np.asarray(images, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        x = ((np.clip(x, -1, 1) + 1) * 127.5).round().astype(np.uint8)
        return list(x.transpose(0, 2, 3, 1))
    out = []
    for im in images:
        a = np.asarray(im)
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
            raise DiganError("face detector input must be RGB uint8 H x W x 3 images or a B x 3 x H x W tensor in [-1, 1]")
        out.append(a)
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, thresh: float) -> list[int]:
    """Greedy non-maximum suppression; boxes (N,4) x1,y1,x2,y2 (insightface's +1 pixel area)."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size > 0:
        i = int(order[0])
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1 + 1) * np.maximum(0.0, yy2 - yy1 + 1)
        iou = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[1:][iou <= thresh]
    return keep


@dataclass
class _Prep:
    """How one image was placed in the detector input: detector px = scale * (orig px + offset)."""

    scale: float
    offset: tuple[float, float]


class FaceDetector:
    """SCRFD detector returning boxes, scores and 5 keypoints per image.

    Parameters
    ----------
    model: path or file name of an SCRFD ONNX file with keypoints (default ``det_10g.onnx`` of
        insightface's ``buffalo_l``, resolved by :func:`digan.faces.onnx_models.resolve_model`).
    input_size: square detector input for photos (default 640, insightface's).
    det_thresh, nms_thresh: score threshold and NMS IoU (0.5, 0.4).
    crop_side, crop_pad, crop_input, retry_pad: handling of face crops and of photos where
        nothing was found (see the module docstring).
    device: "cpu" or "cuda"; threads: CPU threads for onnxruntime.
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        input_size: int = 640,
        det_thresh: float = 0.5,
        nms_thresh: float = 0.4,
        crop_side: int = 512,
        crop_pad: float = 0.25,
        crop_input: int = 320,
        retry_pad: float = 0.5,
        device: str = "cpu",
        threads: int | None = None,
    ):
        self.path = resolve_model("detector", model)
        self.input_size = int(input_size)
        self.det_thresh = float(det_thresh)
        self.nms_thresh = float(nms_thresh)
        self.crop_side = int(crop_side)
        self.crop_pad = float(crop_pad)
        self.crop_input = int(crop_input)
        self.retry_pad = float(retry_pad)
        for s in (self.input_size, self.crop_input):
            if s % 32:
                raise DiganError(f"detector input size {s} is not a multiple of 32; choose e.g. 256 or 640")
        self.session, info = open_session(self.path, device=device, threads=threads, free_batch=True)
        self.providers = info.providers
        self.input_name = self.session.get_inputs()[0].name
        outs = self.session.get_outputs()
        self.output_names = [o.name for o in outs]
        if len(outs) != 9:
            raise DiganError(
                f"{self.path.name} is not an SCRFD detector with keypoints (expected 9 outputs, got {len(outs)}); "
                "pass an insightface det_*.onnx file (e.g. det_10g.onnx or det_500m.onnx)"
            )
        self.strides = (8, 16, 32)
        self.num_anchors = 2
        self._centers: dict[tuple[int, int, int], np.ndarray] = {}
        self._batched = info.dynamic_batch and self._check_batching()

    # ------------------------------------------------------------------ info
    def info(self) -> dict:
        """JSON-ready description stored with results (file, sha256, settings)."""
        return {
            "file": self.path.name,
            "sha256": file_sha256(self.path),
            "input_size": self.input_size,
            "det_thresh": self.det_thresh,
            "nms_thresh": self.nms_thresh,
            "crop_side": self.crop_side,
            "crop_pad": self.crop_pad,
            "crop_input": self.crop_input,
            "retry_pad": self.retry_pad,
        }

    # ------------------------------------------------------------------ preprocessing
    def _prepare(self, img: np.ndarray, retry: bool = False) -> tuple[np.ndarray, _Prep]:
        """Letter-box ``img`` (uint8 RGB) into the square detector input (padded for face crops
        and for the retry of a photo)."""
        h, w = img.shape[:2]
        off = (0.0, 0.0)
        size = self.input_size
        pad = self.retry_pad if retry else 0.0
        if max(h, w) <= self.crop_side:
            pad, size = self.crop_pad, self.crop_input
        if pad > 0:
            py, px = int(round(pad * h)), int(round(pad * w))
            if py or px:
                img = cv2.copyMakeBorder(img, py, py, px, px, cv2.BORDER_REPLICATE)
                off = (float(px), float(py))
            h, w = img.shape[:2]
        # insightface's letter-box: keep the aspect ratio, integer new size, top-left placement
        if h / w > 1.0:
            nh, nw = size, int(size / (h / w))
        else:
            nw, nh = size, int(size * (h / w))
        scale = nh / h
        canvas = np.zeros((size, size, 3), dtype=np.uint8)
        interp = cv2.INTER_LINEAR
        canvas[:nh, :nw] = cv2.resize(img, (nw, nh), interpolation=interp)
        return canvas, _Prep(scale=scale, offset=off)

    @staticmethod
    def _blob(canvases: list[np.ndarray]) -> np.ndarray:
        x = np.stack(canvases).astype(np.float32)
        x = (x - 127.5) / 128.0
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def _anchor_centers(self, h: int, w: int, stride: int) -> np.ndarray:
        key = (h, w, stride)
        if key not in self._centers:
            ys, xs = np.mgrid[:h, :w]
            c = np.stack([xs, ys], -1).reshape(-1, 2).astype(np.float32) * stride
            self._centers[key] = np.repeat(c, self.num_anchors, axis=0)
        return self._centers[key]

    def _run(self, blob: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.output_names, {self.input_name: blob})

    def _split(self, outs: list[np.ndarray], n: int, size: int) -> list[list[np.ndarray]]:
        """Per image, per output: undo the (H, W, N, A) interleave of a batched run."""
        per_image: list[list[np.ndarray]] = [[] for _ in range(n)]
        for k, o in enumerate(outs):
            stride = self.strides[k % 3]
            cells = (size // stride) * (size // stride)
            ch = o.shape[1]
            o = o.reshape(cells, n, self.num_anchors, ch).transpose(1, 0, 2, 3).reshape(n, cells * self.num_anchors, ch)
            for i in range(n):
                per_image[i].append(o[i])
        return per_image

    def _check_batching(self) -> bool:
        """Confirm once that a batched run equals one-by-one runs (it does for SCRFD exports)."""
        rng = np.random.default_rng(0)
        size = 64
        x = rng.uniform(-1, 1, size=(2, 3, size, size)).astype(np.float32)
        try:
            yb = self._split(self._run(x), 2, size)
        except Exception:
            return False
        for i in range(2):
            ys = self._run(x[i : i + 1])
            for a, b in zip(yb[i], ys):
                if a.shape != b.shape or not np.allclose(a, b, atol=1e-4, rtol=1e-3):
                    return False
        return True

    # ------------------------------------------------------------------ decoding
    def _decode(self, outs: list[np.ndarray], size: int, prep: _Prep, thresh: float) -> list[Face]:
        scores_l, boxes_l, kps_l = [], [], []
        for k, stride in enumerate(self.strides):
            scores = outs[k].reshape(-1)
            keep = np.where(scores >= thresh)[0]
            if keep.size == 0:
                continue
            c = self._anchor_centers(size // stride, size // stride, stride)[keep]
            d = outs[k + 3][keep] * stride
            p = outs[k + 6][keep] * stride
            boxes = np.stack([c[:, 0] - d[:, 0], c[:, 1] - d[:, 1], c[:, 0] + d[:, 2], c[:, 1] + d[:, 3]], -1)
            kps = p.reshape(-1, 5, 2) + c[:, None, :]
            scores_l.append(scores[keep])
            boxes_l.append(boxes)
            kps_l.append(kps)
        if not scores_l:
            return []
        scores = np.concatenate(scores_l)
        boxes = np.concatenate(boxes_l) / prep.scale
        kps = np.concatenate(kps_l) / prep.scale
        order = np.argsort(-scores, kind="stable")
        scores, boxes, kps = scores[order], boxes[order], kps[order]
        keep = nms(boxes, scores, self.nms_thresh)
        ox, oy = prep.offset
        shift = np.array([ox, oy], dtype=np.float32)
        return [
            Face(
                bbox=(boxes[i] - np.tile(shift, 2)).astype(np.float32),
                score=float(scores[i]),
                kps=(kps[i] - shift).astype(np.float32),
            )
            for i in keep
        ]

    # ------------------------------------------------------------------ public API
    def detect(self, images, det_thresh: float | None = None) -> list[list[Face]]:
        """All faces (after NMS, highest score first) for each image.

        ``images``: ``B x 3 x H x W`` tensor in [-1, 1], uint8 ``B x H x W x 3`` array, or a list
        of uint8 RGB images of any sizes. Coordinates are in each input image's pixels.
        """
        imgs = images_to_uint8(images)
        thresh = self.det_thresh if det_thresh is None else float(det_thresh)
        results = self._detect_prepared(imgs, [self._prepare(im) for im in imgs], thresh)
        retry = [i for i, (im, r) in enumerate(zip(imgs, results)) if not r and max(im.shape[:2]) > self.crop_side and self.retry_pad > 0]
        if retry:
            again = self._detect_prepared([imgs[i] for i in retry], [self._prepare(imgs[i], retry=True) for i in retry], thresh)
            for i, r in zip(retry, again):
                results[i] = r
        return results

    def _detect_prepared(self, imgs: list[np.ndarray], preps: list, thresh: float) -> list[list[Face]]:
        results: list[list[Face]] = [[] for _ in imgs]
        # group images by detector input size so that same-size ones run as one batch
        groups: dict[int, list[int]] = {}
        for i, (canvas, _) in enumerate(preps):
            groups.setdefault(canvas.shape[0], []).append(i)
        for size, idx in groups.items():
            chunk = 32 if self._batched else 1
            for s in range(0, len(idx), chunk):
                ids = idx[s : s + chunk]
                blob = self._blob([preps[i][0] for i in ids])
                outs = self._run(blob)
                per = self._split(outs, len(ids), size) if len(ids) > 1 else [outs]
                for j, i in enumerate(ids):
                    results[i] = self._decode(per[j], size, preps[i][1], thresh)
        return results

    @staticmethod
    def pick(faces: Sequence[Face], image_shape: tuple[int, int]) -> Face | None:
        """The largest, most central face (insightface's ``area - 2 * offset**2`` rule)."""
        if not faces:
            return None
        h, w = image_shape[:2]
        best, best_v = None, -np.inf
        for f in faces:
            cx = (f.bbox[0] + f.bbox[2]) / 2 - w / 2
            cy = (f.bbox[1] + f.bbox[3]) / 2 - h / 2
            v = f.area - 2.0 * (cx * cx + cy * cy)
            if v > best_v:
                best, best_v = f, v
        return best

    def detect_best(self, images, det_thresh: float | None = None) -> list[Face | None]:
        """One face per image (see :meth:`pick`), None where no face was found."""
        imgs = images_to_uint8(images)
        return [self.pick(f, im.shape) for f, im in zip(self.detect(imgs, det_thresh), imgs)]

    def __call__(self, images, det_thresh: float | None = None) -> list[list[Face]]:
        return self.detect(images, det_thresh)

    def __repr__(self) -> str:
        return f"FaceDetector({self.path.name}, input={self.input_size}, crop_input={self.crop_input}, providers={self.providers})"
