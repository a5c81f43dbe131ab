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
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from digan.errors import DiganError

__all__ = [
    "write_bytes",
    "write_text",
    "read_text",
    "write_json",
    "read_json",
    "save_torch",
    "load_torch",
    "atomic_dir",
    "sha256_file",
    "sha256_bytes",
    "state_dict_hash",
    "json_default",
    "SAFE_GLOBALS",
    "refusal_message",
    "check_out_path",
    "claim_output",
    "output_lock",
    "clean_stale_tmp",
    "staging_dir",
    "swap_in_dir",
    "nonfinite_tensors",
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
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename).

    A path that cannot be written (under a file, read-only folder, a folder in the way) is a
    one-line :class:`DiganError`, not a traceback.
    """
    p = Path(path)
    try:
        tmp = _tmp_sibling(p)
    except OSError as e:
        check_out_path(p, "output", kind="file")  # names a file in the way or a read-only folder
        raise DiganError(f"cannot write {p} ({e.strerror or e}); choose a writable output path") from None
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise DiganError(f"cannot write {p} ({e.strerror or e}); choose a writable output path") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def read_text(path: str | Path, advice: str, kind: str = "a text file", label: str | None = None) -> str:
    """The UTF-8 text of ``path``; a file that is not UTF-8 text (a binary given by mistake) is a
    one-line :class:`DiganError`: ``"{label} is not {kind} (byte N is not UTF-8); {advice}"``
    (``label`` defaults to the path)."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DiganError(f"{label or p} is not {kind} (byte {e.start} is not UTF-8); {advice}") from e


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
    text = read_text(p, "regenerate it or pass the right file", "a JSON text file")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DiganError(f"{p} is not valid JSON (line {e.lineno}); regenerate or fix the file") from e


def save_torch(path: str | Path, obj: Any) -> Path:
    """``torch.save`` atomically: a crash mid-write leaves the earlier checkpoint intact."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return write_bytes(path, buf.getvalue())


def _safe_globals() -> list[Any]:
    """What the project's own checkpoints may hold beyond tensors and plain containers.

    ``argparse.Namespace`` (rosinality's ``args``), numpy arrays, scalars and dtypes (the numpy
    RNG state in training checkpoints). Nothing here runs code when unpickled.
    """
    import argparse

    import numpy as np

    out: list[Any] = [argparse.Namespace, np.ndarray, np.dtype]
    try:  # numpy >= 2
        from numpy._core import multiarray as _ma
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray as _ma  # type: ignore[no-redef]
    for fn in (_ma._reconstruct, _ma.scalar):
        out.append(fn)
        # files written under numpy 1.x name the same functions numpy.core.multiarray.*
        out.append((fn, f"numpy.core.multiarray.{fn.__name__}"))
        out.append((fn, f"numpy._core.multiarray.{fn.__name__}"))
    for t in (np.bool_, np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64,
              np.float16, np.float32, np.float64):
        out.append(type(np.dtype(t)))  # numpy.dtypes.UInt32DType, ...
    return out


#: documentation of :func:`_safe_globals` (names only; the objects are built lazily)
SAFE_GLOBALS = ("argparse.Namespace", "numpy.ndarray", "numpy.dtype", "numpy.dtypes.*DType",
                "numpy._core.multiarray._reconstruct", "numpy._core.multiarray.scalar")


def refusal_message(path: str | Path, names: Any) -> str:
    """The one-line refusal of a file whose pickle names globals outside the allowlist."""
    shown = ", ".join(sorted(set(names))) or "a callable outside the allowlist"
    return (f"{path} holds objects a checkpoint may not contain ({shown}); it was not loaded and nothing in it ran. "
            "A checkpoint must be data (tensors, numbers, strings, lists, dicts): re-save the weights with "
            "torch.save(model.state_dict(), PATH) from a source you trust")


def _unsafe_names(p: Path, err: Exception) -> list[str]:
    """Globals of ``p`` that the weights-only unpickler refused (best effort, never executes)."""
    import torch

    allowed = set()
    for g in _safe_globals():
        if isinstance(g, tuple):
            allowed.add(g[1])
        else:
            allowed.add(f"{g.__module__}.{g.__qualname__}")
    names: list[str] = []
    try:
        names = [n for n in torch.serialization.get_unsafe_globals_in_checkpoint(str(p)) if n not in allowed]
    except Exception:  # legacy (non-zip) files: read the names from the error message
        pass
    if not names:
        names = re.findall(r"GLOBAL ([\w.]+)", str(err)) or re.findall(r"Unsupported global: ([\w.]+)", str(err))
    return names


def load_torch(path: str | Path, map_location: Any = "cpu", what: str = "checkpoint") -> Any:
    """Load a torch file as data: ``weights_only=True`` plus the allowlist of :func:`_safe_globals`.

    A file whose pickle names anything else (a ``__reduce__`` calling ``os.system``, a pickled
    module class, ...) is refused with one line and nothing in it runs. Missing and corrupt files
    also give one-line errors.
    """
    import pickle

    import torch

    p = Path(path)
    if not p.is_file():
        raise DiganError(f"{what} {p} not found; check the path")
    if p.stat().st_size == 0:
        raise DiganError(f"{what} {p} is empty (0 bytes; an interrupted copy or download?); re-download or re-create it")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Weights only load failed" in msg or "Unsupported" in msg or "GLOBAL" in msg:
            names = _unsafe_names(p, e)
            op = re.search(r"Unsupported operand (\d+)", msg)
            if not names and op:  # no global named: random bytes, or a pickle opcode no checkpoint uses
                raise DiganError(
                    f"{what} {p} is corrupt or not a PyTorch checkpoint (pickle opcode {op.group(1)} is not "
                    "one a checkpoint uses); it was not loaded and nothing in it ran. Re-download or re-create it"
                ) from None
            raise DiganError(refusal_message(p, names)) from None
        raise DiganError(
            f"{what} {p} is corrupt or not a PyTorch file (UnpicklingError: {msg.splitlines()[0] if msg else ''}); "
            "re-download or re-create it"
        ) from e
    except Exception as e:  # zip errors, truncated files
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
    p = check_out_path(path)
    if p.exists() and not force:
        raise DiganError(f"output {p} already exists; pass --force to replace it or choose another --out")
    with output_lock(p):
        clean_stale_tmp(p)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent))
        except OSError as e:
            raise DiganError(f"cannot create output {p} ({e.strerror or e}); choose another --out") from None
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        swap_in_dir(tmp, p)


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


# ---------------------------------------------------------------------------------------------
# output folders: a usable path, one writer at a time, no debris from killed writes
# ---------------------------------------------------------------------------------------------

def check_out_path(path: str | Path, flag: str = "--out", kind: str = "dir") -> Path:
    """Fail early, in one line, when ``path`` cannot be written as an output ``kind`` (dir/file).

    Catches: an existing file where a folder is wanted (or the reverse), a path under a file,
    and a read-only (or otherwise unwritable) folder on the way. Nothing is created.
    """
    p = Path(path)
    if kind == "dir" and p.exists() and not p.is_dir():
        raise DiganError(f"{flag} {p} is a file, not a folder; choose another {flag} or remove the file")
    if kind == "file" and p.is_dir():
        raise DiganError(f"{flag} {p} is a folder, not a file; choose another {flag}")
    # the nearest existing ancestor must be a writable folder
    anc = p if (kind == "dir" and p.exists()) else p.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise DiganError(f"{flag} {p} lies under {anc}, which is a file, not a folder; choose another {flag}")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise DiganError(f"{flag} {p} cannot be written: {anc} is read-only for this user; choose another {flag}")
    if kind == "file" and p.exists() and not os.access(p, os.W_OK) and not os.access(p.parent, os.W_OK):
        raise DiganError(f"{flag} {p} cannot be written (read-only); choose another {flag}")
    return p


#: lock files this process holds (a nested claim of the same folder does not lock twice)
_HELD: set[str] = set()


def _lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@contextlib.contextmanager
def output_lock(out: str | Path, flag: str = "--out") -> Iterator[Path]:
    """Hold an exclusive lock on the output folder ``out`` (a ``.NAME.lock`` file beside it).

    A second process on the same ``out`` stops at once with ``OUT is in use by pid N``. The lock
    is an ``flock`` on that file, so the kernel drops it when its holder dies: a file left by a
    killed process does not block. Only rank 0 of a torchrun job locks (the others write nothing).
    """
    out = Path(out)
    lp = _lock_path(out)
    key = str(lp.resolve())
    if int(os.environ.get("RANK", "0") or 0) != 0 or key in _HELD:  # other ranks; re-entry in this process
        yield out
        return
    import fcntl

    lp.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            except OSError:
                holder = "?"
            os.close(fd)
            raise DiganError(f"{out} is in use by pid {holder}; wait for that command to finish (or stop it), "
                             f"or choose another {flag}") from None
        try:  # the holder we waited on may have removed the file: lock the one on disk
            if os.stat(lp).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    _HELD.add(key)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield out
        finally:
            _HELD.discard(key)
            try:
                os.ftruncate(fd, 0)
                lp.unlink(missing_ok=True)
            except OSError:
                pass
    finally:
        os.close(fd)


#: names made by :func:`_tmp_sibling` / :func:`atomic_dir`: ``.NAME.<8 random chars>.tmp``
_TMP_RX = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
_OLD_RX = re.compile(r"^\..+\.old-(\d+)$")


def clean_stale_tmp(out: str | Path) -> list[Path]:
    """Remove hidden temporaries that killed writes left in ``out`` (recursively) and the
    ``atomic_dir`` build folders of ``out`` beside it. Call it only while holding
    :func:`output_lock` on ``out`` (no other writer can be mid-write). Returns what was removed."""
    out = Path(out)
    removed: list[Path] = []

    def rm(p: Path) -> None:
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            pass

    if out.is_dir():
        for root, dirs, files in os.walk(out):
            for name in list(dirs):
                if _TMP_RX.match(name) or ((m := _OLD_RX.match(name)) and not _pid_alive(int(m.group(1)))):
                    rm(Path(root) / name)
                    dirs.remove(name)
            for name in files:
                if _TMP_RX.match(name):
                    rm(Path(root) / name)
    parent = out.parent
    if parent.is_dir():
        own = re.compile(r"^\." + re.escape(out.name) + r"\.[A-Za-z0-9_]{8}\.tmp$")
        old = re.compile(r"^\." + re.escape(out.name) + r"\.old-(\d+)$")
        try:
            names = os.listdir(parent)
        except OSError:
            names = []
        for name in names:
            if own.match(name) or ((m := old.match(name)) and not _pid_alive(int(m.group(1)))):
                rm(parent / name)
    return removed


@contextlib.contextmanager
def claim_output(out: str | Path, flag: str = "--out") -> Iterator[Path]:
    """:func:`check_out_path`, then :func:`output_lock`, then :func:`clean_stale_tmp`: what every
    command that writes a folder does before it starts."""
    p = check_out_path(out, flag)
    with output_lock(p, flag):
        clean_stale_tmp(p)
        yield p


def refuse_other_outputs(out: str | Path, kinds: tuple[str, ...], what: str, flag: str = "--out", force_replaces: bool = True) -> None:
    """Stop with one line when ``out`` holds another command's outputs (its ``run.json`` names a
    kind not in ``kinds``, e.g. a benchmark results folder given to ``train``): resuming there
    would overwrite that command's ``run.json`` and ``config.json``. With ``force_replaces``
    the message offers ``--force``, which replaces the folder as a whole once the new run is
    complete."""
    f = Path(out) / "run.json"
    if not f.is_file():
        return
    try:
        kind = json.loads(f.read_text(encoding="utf-8")).get("kind")
    except (ValueError, AttributeError, OSError):
        return  # unreadable provenance is no evidence of another command
    if isinstance(kind, str) and kind and kind not in kinds:
        alt = ", or pass --force to replace the folder" if force_replaces else ""
        raise DiganError(f"{flag} {out} holds the outputs of 'digan-bench {kind}' (see its run.json), not a {what}; "
                         f"writing there would overwrite them: choose another {flag}{alt}")


def staging_dir(out: str | Path) -> Path:
    """An empty hidden sibling of ``out`` to build a replacement run in (``--force``); it matches
    the stale-temporary pattern, so :func:`clean_stale_tmp` removes it when the run was killed."""
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def swap_in_dir(tmp: str | Path, out: str | Path) -> Path:
    """Move the complete folder ``tmp`` to ``out``, replacing an old ``out`` only now."""
    tmp, p = Path(tmp), Path(out)
    old = None
    if p.exists():
        old = p.with_name(f".{p.name}.old-{os.getpid()}")
        os.replace(p, old)
    os.replace(tmp, p)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return p


def nonfinite_tensors(obj: Any, prefix: str = "") -> list[str]:
    """Names of the floating-point tensors in a (nested) state dict / optimiser state that hold
    NaN or Inf (``[]`` when all are finite)."""
    import torch

    bad: list[str] = []
    if isinstance(obj, torch.Tensor):
        if (obj.is_floating_point() or obj.is_complex()) and obj.numel() and not bool(torch.isfinite(obj).all()):
            bad.append(prefix or "tensor")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            bad += nonfinite_tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            bad += nonfinite_tensors(v, f"{prefix}.{i}" if prefix else str(i))
    return bad
