"""Registry of trainable 3D models, so that ``digan-bench train`` dispatches by ``model.name``.

A builder receives the student config and the loaded teacher and returns a :class:`Built`:

* ``objective``: an ``nn.Module`` whose ``forward(z, keep=False)`` returns ``(total_loss, {name:
  value})`` for a batch of latents and whose ``preview(z)`` returns ``{row name: images (B,C,H,W)
  in [-1,1]}`` for the training grids. DistributedDataParallel wraps this module.
* ``core``: the ``nn.Module`` whose ``state_dict`` is the model checkpoint (and whose
  parameters are optimised).
* ``info``: JSON-ready facts stored in ``run.json`` and the checkpoint (e.g. which perceptual
  network and recogniser were used).

Baselines register their own names from their own modules::

    from digan.student.registry import register_model, Built

    @register_model("liftgan", help="LiftedGAN (plain MLP, plain conv)")
    def _build(cfg, teacher, device): ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch.nn as nn

from digan.errors import DiganError

__all__ = ["Built", "register_model", "get_builder", "available_models", "model_defaults"]


@dataclass
class Built:
    objective: nn.Module
    core: nn.Module
    info: dict[str, Any] = field(default_factory=dict)


_Builder = Callable[..., Built]
_MODELS: dict[str, tuple[_Builder, str]] = {}
#: name -> (config overrides, options dataclass instance or None, {preset: overrides})
_DEFAULTS: dict[str, tuple[list[str], Any, dict[str, list[str]]]] = {}


def register_model(name: str, help: str = "", defaults: list[str] | None = None, options: Any = None,
                   presets: dict[str, list[str]] | None = None) -> Callable[[_Builder], _Builder]:
    """Decorator registering ``builder(cfg, teacher, device) -> Built`` under ``name``.

    ``defaults``: ``key=value`` overrides applied when a config is made for this model
    (``make_config(model=name)``, ``digan-bench train --model name``), before the preset.
    ``options``: a dataclass instance whose fields become ``model.options`` (settable with
    ``--set model.options.KEY=VALUE``). ``presets``: extra overrides per preset name, applied
    after that preset's own.
    """

    def deco(fn: _Builder) -> _Builder:
        _MODELS[name] = (fn, help)
        _DEFAULTS[name] = (list(defaults or []), options, dict(presets or {}))
        return fn

    return deco


def model_defaults(name: str) -> tuple[list[str], Any, dict[str, list[str]]]:
    """(overrides, options dataclass or None, per-preset overrides) registered for model ``name``."""
    _load_builtin()
    if name not in _MODELS:
        raise DiganError(f"unknown model '{name}'; choose from: {', '.join(sorted(_MODELS))}")
    return _DEFAULTS.get(name, ([], None, {}))


def _load_builtin() -> None:
    import importlib

    importlib.import_module("digan.student.build")
    try:
        importlib.import_module("baselines")
    except ModuleNotFoundError as e:
        if e.name != "baselines":
            raise


def get_builder(name: str) -> _Builder:
    _load_builtin()
    if name not in _MODELS:
        raise DiganError(f"unknown model '{name}'; choose from: {', '.join(sorted(_MODELS))} (set model.name)")
    return _MODELS[name][0]


def available_models() -> dict[str, str]:
    _load_builtin()
    return {k: v[1] for k, v in sorted(_MODELS.items())}
