"""Face recogniser for the identity loss: a frozen, differentiable torch network.

The ONNX ArcFace models of the evaluation (``digan/faces``) run in onnxruntime and cannot be
back-propagated through, so training uses a torch recogniser chosen by ``loss.recognizer``:

* ``torch:PATH``: a TorchScript file (``torch.jit.save``; pickled modules are refused); input
  (B,3,112,112) RGB in [-1,1], output (B,E) embeddings (ArcFace convention).
* ``onnx:PATH``: an ONNX recogniser (e.g. insightface ``w600k_r50.onnx`` or the MobileFaceNet in
  the test data) converted to torch with the optional ``onnx2torch`` package; same input
  (RGB, ``(x - 127.5) / 127.5``, as :mod:`digan.faces.recognizer` found for these models). Graphs
  exported with a fixed batch of 1 are run one sample at a time.
* ``teacher_features``: the penultimate features of the teacher's own discriminator (the ``d``
  weights in the teacher checkpoint, read from ``teacher.source``) when the checkpoint has one. Clearly *not* a face recogniser: a proxy
  that keeps rendered views close to the canonical face in the discriminator's feature space.
* ``auto`` (default): ``teacher_features`` when available, else no identity loss (warning, and
  ``run.json`` says so). ``none``: no identity loss (the ``no_identity`` ablation sets the weight
  to 0 instead).

Preprocessing: the GAN images are FFHQ-style crops; the central box ``loss.recognizer_crop``
(fractions x0, y0, x1, y1) is cut out and resized to 112 x 112 bilinearly, an approximation of
ArcFace's 5-point alignment that needs no detector inside the training loop.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from digan.errors import DiganError, MissingAssetError

__all__ = ["Recognizer", "build_recognizer"]


class Recognizer(nn.Module):
    """Crop + resize + frozen embedding network; ``forward(img [-1,1]) -> (B,E)``."""

    def __init__(self, net: nn.Module, crop: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0), input_size: int = 112, kind: str = "",
                 per_sample: bool = False):
        super().__init__()
        self.net = net
        self.per_sample = per_sample  # graphs exported with a fixed batch of 1 (e.g. a final Reshape to [1, -1])
        self.crop = tuple(float(c) for c in crop)
        self.input_size = input_size
        self.kind = kind
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.net.eval()

    def train(self, mode: bool = True) -> "Recognizer":
        return super().train(False)

    def preprocess(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        x0, y0, x1, y1 = self.crop
        c = img[..., int(round(y0 * h)): int(round(y1 * h)), int(round(x0 * w)): int(round(x1 * w))]
        if self.input_size and c.shape[-1] != self.input_size:
            c = F.interpolate(c, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return c

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.reshape(x.shape[0], -1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(img)
        if self.per_sample:
            return torch.cat([self._run(x[i: i + 1]) for i in range(x.shape[0])], 0)
        return self._run(x)


class _TeacherFeatures(nn.Module):
    def __init__(self, teacher: Any):
        super().__init__()
        self._t = [teacher]

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self._t[0].discriminator_features(img)


class DiscriminatorFeatures(nn.Module):
    """Penultimate features of a StyleGAN2 discriminator (:class:`digan.teacher.model.Discriminator`):
    the output of ``final_linear[0]`` (C[4] values). The minibatch-stddev channel is computed per
    sample (group 1, i.e. the constant ``sqrt(1e-8)``) so that one image's features do not depend
    on the rest of the batch."""

    def __init__(self, d: nn.Module):
        super().__init__()
        self.d = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.d
        out = d.convs(x)
        b, _, h, w = out.shape
        y = out.new_full((b, d.stddev_feat, h, w), 1e-4)  # sqrt(0 + 1e-8)
        out = d.final_conv(torch.cat([out, y], 1))
        return d.final_linear[0](out.reshape(b, -1))


def _teacher_discriminator(teacher: Any) -> nn.Module | None:
    """The discriminator stored with the teacher's checkpoint (``d``), or None."""
    if callable(getattr(teacher, "discriminator_features", None)):
        return _TeacherFeatures(teacher)
    src = getattr(teacher, "source", "")
    if not src or not Path(src).is_file():
        return None
    try:
        from digan.teacher.checkpoint import build_discriminator, read_checkpoint

        ck = read_checkpoint(src)
        if ck.d is None:
            return None
        dev = getattr(teacher, "device", torch.device("cpu"))
        return DiscriminatorFeatures(build_discriminator(ck).to(dev))
    except (DiganError, ImportError, KeyError, RuntimeError):
        return None


def _load_torch_net(path: Path) -> nn.Module:
    if not path.is_file():
        raise MissingAssetError("face recogniser", str(path), "pass loss.recognizer=torch:PATH with an existing TorchScript/pickled model")
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception:
        pass
    # a pickled nn.Module is code, not data: it is never unpickled (digan.utils.io.load_torch)
    raise DiganError(f"{path} is not a TorchScript file; save the recogniser with torch.jit.save(torch.jit.script(model), PATH) "
                     "(pickled nn.Module files are refused: unpickling them can run code)")


def _load_onnx_net(path: Path) -> tuple[nn.Module, bool]:
    """(torch module, whether the graph has a fixed batch of 1)."""
    if not path.is_file():
        raise MissingAssetError("ONNX face recogniser", str(path), "pass loss.recognizer=onnx:PATH with an existing .onnx file")
    try:
        import onnx
        from onnx2torch import convert
    except ImportError as e:
        raise DiganError("loss.recognizer=onnx:... needs the onnx2torch package; pip install onnx2torch, or use torch:PATH") from e
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    fixed_one = len(dims) > 0 and dims[0].HasField("dim_value") and dims[0].dim_value == 1
    return convert(model), fixed_one


def build_recognizer(spec: str, teacher: Any = None, crop: tuple[float, float, float, float] = (0.125, 0.15, 0.875, 0.9)) -> tuple[nn.Module | None, dict[str, Any]]:
    """Build the recogniser named by ``spec``; returns (module or None, info for run.json)."""
    spec = (spec or "none").strip()
    if spec == "none":
        return None, {"recognizer": "none"}
    if spec.startswith("torch:"):
        p = Path(spec[6:]).expanduser()
        return Recognizer(_load_torch_net(p), crop, 112, "torch"), {"recognizer": "torch", "path": str(p)}
    if spec.startswith("onnx:"):
        p = Path(spec[5:]).expanduser()
        net, fixed_one = _load_onnx_net(p)
        return Recognizer(net, crop, 112, "onnx", per_sample=fixed_one), {"recognizer": "onnx", "path": str(p)}
    disc = _teacher_discriminator(teacher) if spec in ("teacher_features", "auto") and teacher is not None else None
    proxy = {"recognizer": "teacher_features (discriminator proxy, not a face recogniser)"}
    if spec == "teacher_features":
        if disc is None:
            raise DiganError("loss.recognizer=teacher_features needs a teacher checkpoint with a discriminator; use torch:PATH or none")
        return Recognizer(disc, (0, 0, 1, 1), 0, "teacher_features"), proxy
    if spec == "auto":
        if disc is not None:
            return Recognizer(disc, (0, 0, 1, 1), 0, "teacher_features"), proxy
        reason = "no torch face recogniser configured and the teacher has no discriminator"
        warnings.warn(f"{reason}: the identity loss is off (set loss.recognizer=torch:PATH or onnx:PATH)", stacklevel=2)
        return None, {"recognizer": "none", "reason": reason}
    raise DiganError(f"unknown recogniser {spec!r}; use auto, none, torch:PATH, onnx:PATH or teacher_features")
