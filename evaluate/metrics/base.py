"""Metric interface and registry.

A metric is a small class registered by name. Its docstring states its exact protocol (sample
count, seeds, poses, preprocessing, model files). The engine calls :meth:`Metric.applicable`
first; a non-None answer becomes an "n/a" record with that reason. Otherwise
:meth:`Metric.compute` returns the records (one per setting plus an "overall" one).

Sharding: under torchrun, ``ctx.shard(n)`` gives the face indices this process renders;
``ctx.gather(...)`` collects per-face results on every rank, and only rank 0 writes records.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from digan.errors import DiganError
from digan.utils import dist
from evaluate.methods import Method
from evaluate.records import Record

__all__ = ["EvalContext", "Metric", "register_metric", "create_metric", "available_metrics", "metric_class"]


@dataclass
class EvalContext:
    """Everything a metric needs besides the method: sizes, seeds, poses, files, device.

    ``data`` maps data-set names to folders (reference images for FID, ground-truth synthetic
    data for 3D accuracy); ``models`` maps model roles (``"detector"``, ``"recognizer"``,
    ``"inception"``) to files; ``cache_dir`` holds reusable statistics (FID reference stats).
    ``advance(k)`` moves the current progress bar by k units.
    """

    out_dir: Path
    n_faces: int = 1000
    seed: int = 0
    batch_size: int = 16
    device: str = "cpu"
    yaws: tuple[float, ...] = (-45.0, -30.0, -15.0, 15.0, 30.0, 45.0)
    pitches: tuple[float, ...] = (0.0,)
    data: dict[str, str] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    cache_dir: Path = Path("~/.cache/digan-bench").expanduser()
    options: dict[str, Any] = field(default_factory=dict)
    advance: Callable[[int], None] = lambda k: None

    def shard(self, n: int) -> range:
        """Indices of ``range(n)`` this process handles (all of them without torchrun)."""
        return dist.shard_range(n)

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate per-rank tensors (dim 0) in rank order; identity without torchrun."""
        return dist.all_gather_tensor(t)


class Metric(abc.ABC):
    """Base class; subclasses set the class attributes and implement :meth:`compute`."""

    name: str = ""
    unit: str = ""
    higher_is_better: bool = True
    #: capabilities of the method this metric needs (see ``evaluate.methods.Capabilities``)
    requires: tuple[str, ...] = ()

    def applicable(self, method: Method, ctx: EvalContext) -> str | None:
        """None when the metric can run on ``method``, else the reason it cannot."""
        caps = method.capabilities
        for c in self.requires:
            if not getattr(caps, c, False):
                return caps.missing_reason(c)
        return None

    def work_units(self, method: Method, ctx: EvalContext) -> int:
        """Total progress units :meth:`compute` will report through ``ctx.advance``."""
        return ctx.n_faces

    @abc.abstractmethod
    def compute(self, method: Method, ctx: EvalContext) -> list[Record]:
        """Run the protocol; return records with method/metric/setting/value/stats filled."""

    def check_inputs(self, ctx: EvalContext) -> list[str]:
        """Missing or unusable inputs (data sets, model files) this metric needs, one line each
        naming the fix, found quickly and without running it. The engine calls it for every
        metric before any slow work and lists all problems together (identical lines once)."""
        return []

    def config(self, ctx: EvalContext) -> dict[str, Any]:
        """The protocol settings stored with each record (override to add metric options)."""
        return {"n_faces": ctx.n_faces, "seed": ctx.seed}


_METRICS: dict[str, type[Metric]] = {}


def register_metric(cls: type[Metric]) -> type[Metric]:
    """Class decorator: register a metric under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _METRICS[cls.name] = cls
    return cls


def _load_builtin_metrics() -> None:
    import importlib

    importlib.import_module("evaluate.metrics")


def available_metrics() -> dict[str, str]:
    """``{name: first docstring line}`` of every registered metric."""
    _load_builtin_metrics()
    return {k: (v.__doc__ or "").strip().splitlines()[0] if v.__doc__ else "" for k, v in sorted(_METRICS.items())}


def metric_class(name: str) -> type[Metric]:
    _load_builtin_metrics()
    if name not in _METRICS:
        raise DiganError(f"unknown metric '{name}'; choose from: {', '.join(sorted(_METRICS)) or '(none registered)'}")
    return _METRICS[name]


def create_metric(name: str, **kwargs: Any) -> Metric:
    return metric_class(name)(**kwargs)
