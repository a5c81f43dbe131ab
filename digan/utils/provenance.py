"""What every run records about itself: config, seeds, package versions, code revision, device
and the hashes of the weights it used. Stored as ``run.json`` beside every output.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib.metadata as md
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any, Mapping

from digan.utils.io import sha256_file, state_dict_hash, write_json

__all__ = ["package_versions", "git_revision", "weights_hashes", "run_info", "write_run_info"]

_PACKAGES = (
    "digan-bench",
    "torch",
    "torchvision",
    "numpy",
    "scipy",
    "clean-fid",
    "onnxruntime",
    "onnxruntime-gpu",
    "insightface",
    "trimesh",
    "pytorch3d",
)


def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str | None]:
    """Installed versions of the packages that can change results (None when absent)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES + tuple(extra):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def git_revision(root: str | Path | None = None) -> str | None:
    """The checkout's commit (with ``-dirty`` when it has changes), or None outside git."""
    root = Path(root) if root else Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        )
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def weights_hashes(weights: Mapping[str, Any] | None) -> dict[str, str]:
    """sha256 of each weight: a path (file hash) or a module/state dict (tensor hash)."""
    out: dict[str, str] = {}
    for name, w in (weights or {}).items():
        if w is None:
            continue
        if isinstance(w, (str, Path)):
            p = Path(w)
            out[name] = f"file:{sha256_file(p)}" if p.is_file() else f"missing:{p}"
        else:
            out[name] = f"tensors:{state_dict_hash(w)}"
    return out


def _device_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"cpu_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def run_info(
    kind: str,
    config: Any = None,
    seeds: Mapping[str, Any] | None = None,
    weights: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A JSON-ready provenance record for a run of ``kind`` (e.g. 'train', 'run', 'data')."""
    from digan.config import to_dict

    cfg = to_dict(config) if dataclasses.is_dataclass(config) else config
    rec: dict[str, Any] = {
        "kind": kind,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "argv": list(os.sys.argv),
        "git": git_revision(),
        "versions": package_versions(),
        "device": _device_info(),
        "seeds": dict(seeds or {}),
        "config": cfg,
        "weights": weights_hashes(weights),
    }
    onnx = _onnx_sessions()
    if onnx:
        rec["onnx_sessions"] = onnx
    if extra:
        rec.update(extra)
    return rec


def _onnx_sessions() -> dict[str, Any]:
    """The onnxruntime execution providers of the face models this process opened (identity,
    pose, detection), e.g. ``{"w600k_r50.onnx": ["CUDAExecutionProvider", ...]}``; empty when none
    was opened (onnxruntime is not imported just to say so)."""
    import sys

    mod = sys.modules.get("digan.faces.onnx_models")
    if mod is None or not getattr(mod, "OPENED_SESSIONS", None):
        return {}
    return {"providers": dict(mod.OPENED_SESSIONS), "available": mod.available_providers()}


def write_run_info(path: str | Path, kind: str, **kwargs: Any) -> dict[str, Any]:
    rec = run_info(kind, **kwargs)
    write_json(path, rec)
    return rec
