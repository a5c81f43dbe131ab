"""ArcFace-style face embeddings from an ONNX model on onnxruntime.

:class:`FaceRecognizer` takes aligned 112 x 112 crops (see :mod:`digan.faces.align`) and returns
L2-normalised embeddings; the cosine similarity of two faces is the dot product.

Input preprocessing
-------------------
Recognition exports differ in channel order and scaling, and a wrong choice silently lowers the
accuracy. We follow insightface's ``ArcFaceONNX`` rule: if the graph starts with its own
``Sub``/``Mul`` normalisation nodes the input is raw pixels (mean 0, std 1), otherwise
``(x - 127.5) / 127.5``; channels are RGB (insightface feeds BGR images through
``blobFromImages(..., swapRB=True)``). This is right for ``buffalo_l``'s ``w600k_r50.onnx``.

``mobilefacenet_arcface_w128.onnx`` (the 128-d MobileFaceNet of the test data): its graph has a
fixed ``1 x 3 x 112 x 112`` NCHW input, starts directly with a stride-2 ``Conv`` (no
normalisation nodes, so the rule above gives ``(x - 127.5) / 127.5``) and ends with a
``Reshape`` to ``[1, -1]`` (128 values). Measured on the labelled verification pairs of the test data
(SCRFD-500M + this alignment; ``master.csv``, 300 pairs / ``face-recognition-pivot.csv``, 280
pairs): RGB ``(x - 127.5) / 127.5`` separates same/different pairs best (ROC AUC 1.000 / 1.000,
d' 7.72 / 7.11); ``/ 128`` is the same to three decimals; BGR is worse (d' 7.47 / 6.58, AUC
0.9999 on the second set); ``x / 255`` worse still (d' 6.98 / 6.24); raw ``[0, 255]`` input
collapses (AUC 0.72). So the default rule is right for it too. Explicit ``channels``, ``mean`` and
``std`` arguments override the rule.

Batching: a fixed batch dimension of 1 is made symbolic in memory and checked against
one-by-one runs once (:func:`digan.faces.onnx_models.open_session`); if the graph really needs
batch 1 the crops are embedded one at a time.
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np

from digan.errors import DiganError
from digan.faces.onnx_models import batch_equivalent, file_sha256, open_session, resolve_model

__all__ = ["FaceRecognizer", "cosine_similarity"]


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, D) arrays (no assumption that they are normalised)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na = np.linalg.norm(a, axis=-1)
    nb = np.linalg.norm(b, axis=-1)
    return (a * b).sum(-1) / np.maximum(na * nb, 1e-12)


class FaceRecognizer:
    """L2-normalised embeddings of aligned face crops.

    Parameters
    ----------
    model: path or file name of an ArcFace-style ONNX model (default ``w600k_r50.onnx`` of
        insightface's ``buffalo_l``; see :func:`digan.faces.onnx_models.resolve_model`).
    channels, mean, std: input preprocessing (default: see the module docstring).
    device: "cpu" or "cuda" (CUDA provider when onnxruntime has it); threads: CPU threads.
    batch_size: crops per onnxruntime call.
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        channels: Literal["rgb", "bgr"] | None = None,
        mean: float | None = None,
        std: float | None = None,
        device: str = "cpu",
        threads: int | None = None,
        batch_size: int = 64,
    ):
        self.path = resolve_model("recognizer", model)
        self.sha256 = file_sha256(self.path)
        self.session, info = open_session(self.path, device=device, threads=threads, free_batch=True)
        self.providers = info.providers
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        shape = inp.shape
        if len(shape) != 4 or shape[1] != 3:
            raise DiganError(
                f"{self.path.name} does not take N x 3 x H x W images (input shape {shape}); "
                "pass an ArcFace-style recognition ONNX file"
            )
        h, w = shape[2], shape[3]
        self.input_size = (int(h) if isinstance(h, int) else 112, int(w) if isinstance(w, int) else 112)
        if self.input_size != (112, 112):
            raise DiganError(
                f"{self.path.name} expects {self.input_size[1]}x{self.input_size[0]} input; only 112x112 ArcFace crops are supported"
            )
        rule = self._graph_rule()
        self.channels = channels or "rgb"
        self.mean = float(mean if mean is not None else rule[0])
        self.std = float(std if std is not None else rule[1])
        if self.channels not in ("rgb", "bgr"):
            raise DiganError(f"recognizer channel order must be rgb or bgr, got {self.channels!r}")
        self.batch_size = int(batch_size)
        self.batched = info.dynamic_batch and self._check_batching()
        self.dim = int(self._run(np.zeros((1, 3, 112, 112), np.float32)).shape[1])

    def _graph_rule(self) -> tuple[float, float]:
        """insightface's rule: raw pixels if the graph normalises its input, else 127.5 / 127.5."""
        try:
            import onnx
        except ImportError as e:  # a dependency of insightface; needed to read the graph
            raise DiganError("the onnx package is missing; install it with 'pip install onnx'") from e

        m = onnx.load(str(self.path), load_external_data=False)
        for node in list(m.graph.node)[:8]:
            name = node.name
            if name.startswith("Sub") or name.startswith("_minus") or name.startswith("Mul") or name.startswith("_mul"):
                return 0.0, 1.0
        return 127.5, 127.5

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: x})[0]

    def _check_batching(self) -> bool:
        x = np.random.default_rng(0).uniform(-1, 1, size=(3, 3, 112, 112)).astype(np.float32)
        return batch_equivalent(lambda b: [self._run(b)], lambda b: [self._run(b)], x)

    def info(self) -> dict:
        """JSON-ready description stored with results."""
        return {
            "file": self.path.name,
            "sha256": self.sha256,
            "dim": self.dim,
            "channels": self.channels,
            "mean": self.mean,
            "std": self.std,
        }

    def preprocess(self, crops: np.ndarray) -> np.ndarray:
        """uint8 (N, 112, 112, 3) RGB crops -> float32 (N, 3, 112, 112) model input."""
        x = np.asarray(crops)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1:] != (112, 112, 3):
            raise DiganError(f"recognizer input must be N x 112 x 112 x 3 aligned crops, got {x.shape}")
        if self.channels == "bgr":
            x = x[..., ::-1]
        x = (x.astype(np.float32) - self.mean) / self.std
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """L2-normalised embeddings (N, D) float32 of uint8 RGB aligned crops (N, 112, 112, 3)."""
        x = self.preprocess(crops)
        if x.shape[0] == 0:
            return np.zeros((0, self.dim), np.float32)
        step = self.batch_size if self.batched else 1
        outs = [self._run(x[i : i + step]) for i in range(0, x.shape[0], step)]
        e = np.concatenate(outs, 0).astype(np.float32)
        n = np.linalg.norm(e, axis=1, keepdims=True)
        return e / np.maximum(n, 1e-12)

    __call__ = embed

    def __repr__(self) -> str:
        return f"FaceRecognizer({self.path.name}, dim={self.dim}, {self.channels}, mean={self.mean}, std={self.std}, batched={self.batched})"
