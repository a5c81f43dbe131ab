"""Finding the face model files and opening them with onnxruntime.

Model files cannot ship with the package (insightface model licence). A model is looked up, in
order, at

1. an explicit path given by the caller (``--detector PATH``, ``ctx.models["recognizer"]``);
2. ``$DIGAN_BENCH_MODELS/<file name>``;
3. ``~/.insightface/models/buffalo_l/<file name>`` (where ``insightface`` itself unpacks
   ``buffalo_l.zip``).

A missing file raises :class:`digan.errors.MissingAssetError` naming the file, where to put it
and where to download it.

Sessions use the CUDA execution provider when onnxruntime has it and the caller did not ask for
the CPU, else the CPU provider with ``threads`` intra-op threads (default: torch's thread count).

Batching: several ONNX exports (SCRFD detectors, some ArcFace exports) fix the batch dimension
to 1 although nothing in the graph depends on it. :func:`open_session` can rewrite the input's
batch dimension (and a constant ``[1, D]`` reshape target) to a symbolic one in memory; the
caller verifies the batched result against a one-by-one run before using it (see
:func:`batch_equivalent`). The file on disk is never modified.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from digan.errors import DiganError, MissingAssetError

__all__ = [
    "DEFAULT_MODELS",
    "BUFFALO_L_URL",
    "model_search_dirs",
    "resolve_model",
    "file_sha256",
    "open_session",
    "available_providers",
    "batch_equivalent",
]

#: default file for each model role (insightface ``buffalo_l`` pack)
DEFAULT_MODELS = {"detector": "det_10g.onnx", "recognizer": "w600k_r50.onnx"}
BUFFALO_L_URL = "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip"
#: where insightface unpacks the pack, and the files it holds (downloaded on first use when online)
BUFFALO_L_DIR = Path("~/.insightface/models/buffalo_l")
BUFFALO_L_FILES = ("det_10g.onnx", "w600k_r50.onnx", "1k3d68.onnx", "2d106det.onnx", "genderage.onnx")


def model_search_dirs() -> list[Path]:
    """Folders searched for a model given by file name: ``$DIGAN_BENCH_MODELS``, then
    ``~/.insightface/models/buffalo_l``."""
    dirs = []
    env = os.environ.get("DIGAN_BENCH_MODELS")
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(BUFFALO_L_DIR.expanduser())
    return dirs


def resolve_model(role: str, path: str | os.PathLike | None = None, flag: str | None = None) -> Path:
    """The model file for ``role`` ("detector" or "recognizer").

    ``path`` may be a full path (used as is, must exist) or a bare file name (searched in
    :func:`model_search_dirs`); None means the role's default (``DEFAULT_MODELS``). ``flag`` is
    how the caller's command takes the file, named in the error (default ``--detector PATH`` /
    ``--recognizer PATH``; ``digan-bench run`` passes ``--model detector=PATH``).
    """
    if role not in DEFAULT_MODELS:
        raise ValueError(f"unknown model role {role!r}")
    flag = flag or ("--detector PATH" if role == "detector" else "--recognizer PATH")
    if path is not None and str(path) != "":
        p = Path(path).expanduser()
        if p.is_file():
            return p
        if p.parent != Path(".") or p.is_absolute():
            raise MissingAssetError(
                f"face {role} model", str(p), f"check the path given as {flag} (an ONNX file)"
            )
        name = p.name
    else:
        name = DEFAULT_MODELS[role]
    for d in model_search_dirs():
        if (d / name).is_file():
            return d / name
    why = ""
    if name in BUFFALO_L_FILES:  # online: fetch the pack once, as insightface itself does
        from digan.utils.download import DownloadError, fetch_and_unzip

        try:
            fetch_and_unzip(BUFFALO_L_URL, BUFFALO_L_DIR, "insightface buffalo_l models", members=(name,))
            return BUFFALO_L_DIR.expanduser() / name
        except DownloadError as e:
            why = f" ({e})"
    where = " or ".join(str(d / name) for d in model_search_dirs())
    smaller = (" (a smaller SCRFD works too, e.g. det_500m.onnx from insightface's buffalo_s.zip)"
               if role == "detector" else " (e.g. w600k_mbf.onnx from insightface's buffalo_s.zip)")
    raise MissingAssetError(
        f"face {role} model {name}{why}",
        where,
        f"download insightface's buffalo_l.zip ({BUFFALO_L_URL}) and unpack it into "
        f"~/.insightface/models/buffalo_l/ (or set DIGAN_BENCH_MODELS to a folder holding {name}), "
        f"or pass {flag} to another ONNX file{smaller}",
    )


@lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    from digan.utils.io import sha256_file

    return sha256_file(path)


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a model file (cached per path, size and modification time)."""
    st = os.stat(path)
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


@dataclass
class SessionInfo:
    """What was opened: the providers in use and whether the batch dimension was freed."""

    providers: list[str]
    dynamic_batch: bool


def _free_batch_dim(model_bytes: bytes) -> bytes | None:
    """Rewrite a fixed batch dimension of 1 to a symbolic one; None if nothing to change."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load_from_string(model_bytes)
    inp = m.graph.input[0].type.tensor_type.shape.dim
    if not inp or not inp[0].HasField("dim_value") or inp[0].dim_value != 1:
        return None
    inp[0].ClearField("dim_value")
    inp[0].dim_param = "batch"
    for out in m.graph.output:
        dims = out.type.tensor_type.shape.dim
        if len(dims) == 2 and dims[0].HasField("dim_value") and dims[0].dim_value == 1:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "batch"
    # A final "Reshape(x, [1, D])" or "[1, -1]" (common in PyTorch exports) pins the batch: make
    # the leading 1 a 0, which copies the input's (batch) dimension.
    outputs = {o.name for o in m.graph.output}
    consts = {n.output[0]: n for n in m.graph.node if n.op_type == "Constant"}
    inits = {i.name: i for i in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type != "Reshape" or n.output[0] not in outputs:
            continue
        src = n.input[1]
        if src in inits:
            arr = numpy_helper.to_array(inits[src])
            if arr.ndim == 1 and arr.size == 2 and arr[0] == 1:
                inits[src].CopyFrom(numpy_helper.from_array(np.array([0, arr[1]], dtype=arr.dtype), src))
        elif src in consts:
            for a in consts[src].attribute:
                if a.name == "value":
                    arr = numpy_helper.to_array(a.t)
                    if arr.ndim == 1 and arr.size == 2 and arr[0] == 1:
                        a.t.CopyFrom(numpy_helper.from_array(np.array([0, arr[1]], dtype=arr.dtype), a.t.name))
    return m.SerializeToString()


def open_session(
    path: str | os.PathLike,
    device: str = "cpu",
    threads: int | None = None,
    free_batch: bool = False,
):
    """Open an onnxruntime session for ``path``.

    ``device``: "cpu" or "cuda[:i]"; CUDA is used only when onnxruntime has the CUDA provider
    (a CUDA request without it falls back to the CPU provider). ``threads``: intra-op threads on
    the CPU (default: ``torch.get_num_threads()``). ``free_batch``: try to make a fixed batch
    dimension of 1 symbolic (see the module docstring); returns ``(session, SessionInfo)``.
    """
    import onnxruntime as ort

    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise DiganError(f"cannot read model {p} ({e.strerror}); check the path and permissions") from e
    so = ort.SessionOptions()
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    so.intra_op_num_threads = max(1, int(threads))
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    providers: list = ["CPUExecutionProvider"]
    if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        dev_id = int(str(device).split(":")[1]) if ":" in str(device) else 0
        providers = [("CUDAExecutionProvider", {"device_id": dev_id}), "CPUExecutionProvider"]
    dynamic = False
    sess = None
    if free_batch:
        try:
            freed = _free_batch_dim(data)
        except Exception:  # not parseable by onnx: let onnxruntime report it below
            freed = None
        if freed is not None:
            try:
                sess = ort.InferenceSession(freed, sess_options=so, providers=providers)
                dynamic = True
            except Exception:  # the graph needs its fixed batch: use the file as it is
                sess = None
        else:
            try:
                shape = _input_shape(data)
                dynamic = bool(shape) and not isinstance(shape[0], int)
            except Exception:
                dynamic = False
    try:
        if sess is None:
            sess = ort.InferenceSession(data, sess_options=so, providers=providers)
    except Exception as e:  # InvalidProtobuf, InvalidGraph, ...
        raise DiganError(
            f"model {p} is not a valid ONNX file ({type(e).__name__}); re-download it or pass another file"
        ) from e
    used = list(sess.get_providers())
    OPENED_SESSIONS[p.name] = used
    return sess, SessionInfo(providers=used, dynamic_batch=dynamic)


# model file name -> execution providers of its session, for run.json
# (digan.utils.provenance records it in every run that opened a face model)
OPENED_SESSIONS: dict[str, list[str]] = {}


def _input_shape(data: bytes) -> list:
    import onnx

    m = onnx.load_from_string(data)
    dims = m.graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]


def batch_equivalent(run_batch, run_single, x: np.ndarray, atol: float = 1e-4) -> bool:
    """True when ``run_batch(x)`` equals the stacked ``run_single(x[i:i+1])`` outputs.

    ``run_*`` return a list of arrays with the batch first. Used once per session to confirm that
    freeing the batch dimension did not change the maths.
    """
    try:
        yb = run_batch(x)
    except Exception:  # the graph really depends on batch 1
        return False
    ys = [run_single(x[i : i + 1]) for i in range(x.shape[0])]
    for k, arr in enumerate(yb):
        ref = np.concatenate([y[k] for y in ys], 0)
        if arr.shape != ref.shape or not np.allclose(arr, ref, atol=atol, rtol=1e-3):
            return False
    return True
