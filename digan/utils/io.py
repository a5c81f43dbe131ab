"""Atomic file and directory output, hashing and safe checkpoint loading.

Rule for the whole project: an output either appears complete or not at all, and an earlier
result is never destroyed by a failed run. Files are written to a temporary sibling and moved
into place with :func:`os.replace`; whole directories are built in a temporary sibling and
swapped in by :func:`atomic_dir`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from digan.errors import DiganError

__all__ = [
    "write_bytes",
    "write_text",
    "write_json",
    "read_json",
    "save_torch",
    "load_torch",
    "atomic_dir",
    "sha256_file",
    "sha256_bytes",
    "state_dict_hash",
    "json_default",
]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tmp_sibling(path: Path, suffix: str = ".tmp") -> Path:
    """A temp file beside ``path`` with ordinary permissions (mkstemp would leave it 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(name, 0o666 & ~_umask())
    return Path(name)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename)."""
    p = Path(path)
    tmp = _tmp_sibling(p)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def json_default(o: Any) -> Any:
    """JSON encoder fallback for numpy/torch scalars and arrays, paths and sets."""
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch

        if isinstance(o, torch.Tensor):
            return o.detach().cpu().tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _finite(o: Any) -> Any:
    """Replace NaN/Inf floats by None so that the JSON stays standard."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def write_json(path: str | Path, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as standard JSON (NaN -> null) atomically."""
    obj = json.loads(json.dumps(obj, default=json_default))
    return write_text(path, json.dumps(_finite(obj), indent=indent, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    p = Path(path)
    if not p.is_file():
        raise DiganError(f"{p} not found; check the path")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise DiganError(f"{p} is not valid JSON (line {e.lineno}); regenerate or fix the file") from e


def save_torch(path: str | Path, obj: Any) -> Path:
    """``torch.save`` atomically: a crash mid-write leaves the earlier checkpoint intact."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return write_bytes(path, buf.getvalue())


def load_torch(path: str | Path, map_location: Any = "cpu", what: str = "checkpoint") -> Any:
    """Load a torch file with one-line errors for a missing or corrupt file.

    ``weights_only=False`` is needed for the community checkpoints (they pickle ``args``
    namespaces); only load files you trust.
    """
    import torch

    p = Path(path)
    if not p.is_file():
        raise DiganError(f"{what} {p} not found; check the path")
    try:
        return torch.load(p, map_location=map_location, weights_only=False)
    except Exception as e:  # zip errors, unpickling errors, truncated files
        raise DiganError(
            f"{what} {p} is corrupt or not a PyTorch file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            "re-download or re-create it"
        ) from e


@contextlib.contextmanager
def atomic_dir(path: str | Path, force: bool = False) -> Iterator[Path]:
    """Build a directory in a temporary sibling and move it to ``path`` only on success.

    An existing ``path`` raises unless ``force``; with ``force`` the old directory is replaced
    only after the new one is complete, so a failure keeps the old results.
    """
    p = Path(path)
    if p.exists() and not force:
        raise DiganError(f"output {p} already exists; pass --force to replace it or choose another --out")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if p.exists():
        old = p.with_name(f".{p.name}.old-{os.getpid()}")
        os.replace(p, old)
    os.replace(tmp, p)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def state_dict_hash(module_or_state: Any) -> str:
    """sha256 over the names, shapes, dtypes and bytes of a module's (or state dict's) tensors."""
    import torch

    sd = module_or_state.state_dict() if hasattr(module_or_state, "state_dict") else module_or_state
    h = hashlib.sha256()
    for k in sorted(sd):
        v = sd[k]
        h.update(k.encode())
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous()
            h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(repr(v).encode())
    return h.hexdigest()
