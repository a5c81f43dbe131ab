"""Small fake methods and metrics for the engine tests (no model code from other areas).

Imported by ``tests/test_engine_*.py`` and by the torchrun script of the distributed test, so the
same definitions run in-process and in the worker processes.
"""

from __future__ import annotations

from typing import Any

import torch

from digan.errors import DiganError, MissingAssetError
from digan.utils.seeding import latents as seeded_latents
from evaluate.methods import Capabilities, Method, Rendered, register_method
from evaluate.metrics.base import EvalContext, Metric, register_metric
from evaluate.records import Record

LATENT_DIM = 8
SIZE = 16

CALLS: dict[str, int] = {}


def _proj() -> torch.Tensor:
    g = torch.Generator().manual_seed(1234)
    return torch.randn(LATENT_DIM, 3 * SIZE * SIZE, generator=g)


class FakeMethod(Method):
    """Deterministic images ``tanh(z @ P)`` (+ a yaw-dependent shift when it has pose)."""

    def __init__(self, name: str, pose: bool, offset: float = 0.0):
        self.name = name
        self._pose = pose
        self.offset = offset
        self.P = _proj()

    @property
    def capabilities(self) -> Capabilities:
        reasons = {} if self._pose else {"pose": "2D GAN: no pose control"}
        return Capabilities(pose=self._pose, image_size=SIZE, reasons={**reasons, "reconstruct": "fake: no encoder"})

    def latents(self, n: int, seed: int, start: int = 0) -> torch.Tensor:
        return seeded_latents(n, LATENT_DIM, seed, start)

    def render(self, latents: torch.Tensor, yaw: float = 0.0, pitch: float = 0.0, light=None) -> Rendered:
        if (yaw or pitch) and not self._pose:
            raise DiganError(f"{self.name} renders the frontal view only")
        img = torch.tanh(latents @ self.P + self.offset + yaw / 90.0).reshape(-1, 3, SIZE, SIZE)
        return Rendered(image=img)

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "offset": self.offset}

    def weights(self) -> dict[str, Any]:
        return {"proj": {"P": self.P}}


@register_method("fake2d", help="test: 2D fake")
def _fake2d(arg: str | None, offset: float = 0.0, **kw: Any) -> Method:
    return FakeMethod("fake2d", pose=False, offset=float(offset))


@register_method("fake3d", help="test: 3D fake")
def _fake3d(arg: str | None, **kw: Any) -> Method:
    return FakeMethod("fake3d", pose=True)


@register_method("fakebroken", help="test: cannot be built")
def _fakebroken(arg: str | None, **kw: Any) -> Method:
    raise MissingAssetError("fake checkpoint", "/nowhere/fake.pt", "train it first")


def mean_brightness(method: Method, n: int, seed: int) -> float:
    """Independent reference: mean pixel of faces 0..n-1 rendered in one batch."""
    return float(method.render(method.latents(n, seed)).image.double().mean())


@register_metric
class MeanMetric(Metric):
    """test: mean pixel value of frontal renders (sharded + gathered)."""

    name = "test_mean"
    unit = "px"
    higher_is_better = True

    def __init__(self, scale: float = 1.0):
        self.scale = float(scale)

    def config(self, ctx: EvalContext) -> dict[str, Any]:
        return {"n_faces": ctx.n_faces, "seed": ctx.seed, "scale": self.scale}

    def compute(self, method: Method, ctx: EvalContext) -> list[Record]:
        CALLS[self.name] = CALLS.get(self.name, 0) + 1
        idx = ctx.shard(ctx.n_faces)
        per = []
        for s in range(idx.start, idx.stop, ctx.batch_size):
            b = min(ctx.batch_size, idx.stop - s)
            img = method.render(method.latents(b, ctx.seed, s)).image
            per.append(img.double().flatten(1).mean(1))
            ctx.advance(b)
        allv = ctx.gather(torch.cat(per) if per else torch.zeros(0, dtype=torch.float64))
        return [
            Record(method=method.name, metric=self.name, value=float(allv.mean()) * self.scale,
                   stats={"n": int(allv.numel())}, n_faces=int(allv.numel())),
            Record(method=method.name, metric=self.name, setting="half=first",
                   value=float(allv[: len(allv) // 2].mean()) * self.scale),
        ]


@register_metric
class PoseNeeded(Metric):
    """test: needs pose."""

    name = "test_pose"
    unit = "deg"
    higher_is_better = False
    requires = ("pose",)

    def compute(self, method: Method, ctx: EvalContext) -> list[Record]:
        CALLS[self.name] = CALLS.get(self.name, 0) + 1
        vals = [float(method.render(method.latents(2, ctx.seed), yaw=y).image.mean()) for y in ctx.yaws]
        recs = [Record(method=method.name, metric=self.name, setting=f"yaw={y:g}", value=v) for y, v in zip(ctx.yaws, vals)]
        return recs + [Record(method=method.name, metric=self.name, value=sum(vals) / len(vals))]


FAIL = {"on": True}


@register_metric
class FailMetric(Metric):
    """test: raises a user-facing error while FAIL['on']."""

    name = "test_fail"

    def compute(self, method: Method, ctx: EvalContext) -> list[Record]:
        CALLS[self.name] = CALLS.get(self.name, 0) + 1
        if FAIL["on"]:
            raise DiganError("reference folder missing; pass --data ref=FOLDER")
        return [Record(method=method.name, metric=self.name, value=1.0)]


@register_metric
class BugMetric(Metric):
    """test: a programming error."""

    name = "test_bug"

    def compute(self, method: Method, ctx: EvalContext) -> list[Record]:
        raise ZeroDivisionError("bug")
