"""Imports the modules that register the built-in methods (loaded lazily by
:func:`evaluate.methods.available_methods` / :func:`evaluate.methods.create_method`).

* ``teacher``: the StyleGAN2 teacher as a 2D benchmark method (:mod:`evaluate.teacher_method`).
* ``digan``: the DIGAN student (:mod:`digan.student.method`), when that part is installed; a
  missing module of exactly that name is skipped, any other import error propagates.
"""

from __future__ import annotations

import importlib

import evaluate.teacher_method  # noqa: F401  (registers "teacher")

for _mod in ("digan.student.method",):
    try:
        importlib.import_module(_mod)
    except ModuleNotFoundError as _e:
        if _e.name != _mod:
            raise
