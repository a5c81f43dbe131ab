"""Built-in metrics. Every module in this package registers its metrics on import (see
:mod:`evaluate.metrics.base`); importing this package imports them all."""

from __future__ import annotations

import importlib
import pkgutil

from evaluate.metrics.base import (  # noqa: F401
    EvalContext,
    Metric,
    available_metrics,
    create_metric,
    metric_class,
    register_metric,
)

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base" and not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")
