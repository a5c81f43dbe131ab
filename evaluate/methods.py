"""The interface every benchmarked method implements, and the registry that builds them by name.

A method (DIGAN, its teacher, a baseline, a folder of rendered samples) is wrapped in a
:class:`Method`. The engine only talks to this interface and asks :attr:`Method.capabilities`
before running a metric, so a metric that cannot apply is recorded as "n/a" with the reason
instead of crashing.

Method specs on the command line: ``NAME`` or ``NAME:ARG`` (``samples:PATH``,
``digan:path/to/student.pt``). Register a new method with::

    @register_method("mymethod", help="one line shown in --help")
    def _make(arg: str | None, **options) -> Method: ...
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from digan.errors import DiganError
from digan.render.types import Light

__all__ = [
    "Capabilities",
    "Rendered",
    "Method",
    "register_method",
    "create_method",
    "available_methods",
    "parse_method_spec",
]


@dataclass(frozen=True)
class Capabilities:
    """What a method can do; ``reasons`` explains each missing capability in words for reports."""

    pose: bool = False          # renders the same face at a requested yaw/pitch
    light: bool = False         # renders under a requested light
    depth: bool = False         # returns depth and normals with its renders
    mesh: bool = False          # exports a textured mesh
    reconstruct: bool = False   # recovers depth/normals for a given image (for 3D accuracy)
    generate: bool = True       # can make new samples (a folder of samples has a fixed count)
    image_size: int = 0
    max_faces: int | None = None  # fixed number of samples (folder of samples)
    yaws: tuple[float, ...] | None = None  # only these yaws are available (folder of samples)
    reasons: dict[str, str] = field(default_factory=dict)

    def missing_reason(self, capability: str) -> str:
        return self.reasons.get(capability, f"method has no '{capability}' capability")


@dataclass
class Rendered:
    """Output of :meth:`Method.render`: images in [-1,1] (B,3,H,W), optional 3D outputs."""

    image: torch.Tensor
    depth: torch.Tensor | None = None    # (B,1,H,W) camera-space depth
    normal: torch.Tensor | None = None   # (B,3,H,W) unit normals in camera space
    mask: torch.Tensor | None = None     # (B,1,H,W) 1 where the object covers the pixel


class Method(abc.ABC):
    """A generator the benchmark can evaluate.

    Latents are opaque to the engine: whatever :meth:`latents` returns is passed back to
    :meth:`render`. ``latents(n, seed, start)`` must be a pure function of (seed, index), so a run
    split across processes or resumed half-way sees the same faces.
    """

    name: str = "method"
    variant: str = "full"

    @property
    @abc.abstractmethod
    def capabilities(self) -> Capabilities: ...

    @abc.abstractmethod
    def latents(self, n: int, seed: int, start: int = 0) -> torch.Tensor:
        """Latent codes (or sample indices) for faces ``start .. start+n-1`` of ``seed``."""

    @abc.abstractmethod
    def render(
        self,
        latents: torch.Tensor,
        yaw: float = 0.0,
        pitch: float = 0.0,
        light: Light | None = None,
    ) -> Rendered:
        """Render the faces of ``latents`` at ``yaw``/``pitch`` degrees (and ``light`` if supported).

        A method without pose control ignores nothing silently: it raises DiganError for a
        non-frontal request (the engine checks capabilities first).
        """

    def reconstruct(self, images: torch.Tensor) -> Rendered:
        """Recover depth/normals for real images (B,3,H,W) in [-1,1]; needs ``capabilities.reconstruct``."""
        raise DiganError(f"method {self.name} cannot reconstruct images: {self.capabilities.missing_reason('reconstruct')}")

    def weights(self) -> dict[str, Any]:
        """``{name: path or nn.Module}`` of every weight used, for provenance hashes."""
        return {}

    def info(self) -> dict[str, Any]:
        """JSON-ready description (config, checkpoint paths) stored with every record."""
        return {"name": self.name, "variant": self.variant}

    def to(self, device: torch.device | str) -> "Method":
        return self

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")


_Factory = Callable[..., Method]
_REGISTRY: dict[str, tuple[_Factory, str]] = {}


def register_method(name: str, help: str = "") -> Callable[[_Factory], _Factory]:
    """Decorator registering ``factory(arg: str | None, **options) -> Method`` under ``name``."""

    def deco(fn: _Factory) -> _Factory:
        _REGISTRY[name] = (fn, help)
        return fn

    return deco


def _load_builtin_methods() -> None:
    """Import the modules that register the built-in methods (kept lazy: they import torch models)."""
    import importlib

    for mod in ("evaluate.builtin_methods", "baselines"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # a part of the toolkit that is not installed
            if e.name != mod:
                raise


def available_methods() -> dict[str, str]:
    """``{name: help}`` of every registered method."""
    _load_builtin_methods()
    return {k: v[1] for k, v in sorted(_REGISTRY.items())}


def parse_method_spec(spec: str) -> tuple[str, str | None, str]:
    """``"name[@variant][:arg]"`` -> (name, arg, variant). ``samples:/a/b`` keeps the whole path."""
    spec = spec.strip()
    if not spec:
        raise DiganError("empty method name; pass e.g. --methods digan,liftgan")
    head, sep, arg = spec.partition(":")
    name, _, variant = head.partition("@")
    return name, (arg if sep else None), (variant or "full")


def create_method(spec: str, **options: Any) -> Method:
    """Build a method from a spec such as ``digan``, ``digan@no_flip``, ``samples:PATH``."""
    _load_builtin_methods()
    name, arg, variant = parse_method_spec(spec)
    if name not in _REGISTRY:
        valid = ", ".join(sorted(_REGISTRY)) or "(none registered)"
        raise DiganError(f"unknown method '{name}'; choose from: {valid}")
    factory, _ = _REGISTRY[name]
    if variant != "full":
        options = {**options, "variant": variant}
    return factory(arg, **options)
