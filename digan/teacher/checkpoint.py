"""Teacher checkpoints: rosinality ``stylegan2-pytorch`` layout in and out, config inference from
shapes, strict loading with one-line errors, and conversion of NVIDIA ``stylegan2-ada-pytorch``
weights.

File layouts read by :func:`read_checkpoint`
--------------------------------------------
* **rosinality / digan-bench** (``.pt``): a dict with ``g_ema`` (and optionally ``g``, ``d``,
  ``g_optim``, ``d_optim``, ``args``, ``latent_avg``, ``ada_aug_p``). Files written here add
  ``config`` (the :class:`StyleGAN2Config` as a dict), ``step`` and training state.
* a bare generator state dict in that layout (keys ``style.1.weight``, ``input.input``, ...).
* **NVIDIA stylegan2-ada-pytorch, as a state dict** (``.pt``): ``G_ema.state_dict()`` (keys
  ``mapping.fc0.weight``, ``synthesis.b4.const``, ...) or a dict ``{"G_ema": sd, "D": sd, "G": sd}``
  of such state dicts, saved with ``torch.save``. Converted by :func:`convert_ada_state_dict`.
* **NVIDIA stylegan2-ada-pytorch network pickle** (``.pkl``): read by :func:`read_ada_pickle`
  without importing NVIDIA's code (its persistent classes are unpickled as plain parameter
  trees), then converted as above.

What the NVIDIA converter supports: unconditional models (``c_dim = 0``) with the default
architectures (generator ``skip``, discriminator ``resnet``), any resolution, channel widths and
mapping depth, the ``[1, 3, 3, 1]`` resample filter. ``mapping.w_avg`` becomes ``latent_avg``.
Not supported (clear error): conditional models (``mapping.embed``), ``orig``/``resnet``
generators, ``orig``/``skip`` discriminators, StyleGAN3 pickles. The discriminator's
minibatch-stddev group size is not stored in the weights; 4 is assumed (the ADA default except
the ``paper256`` config, which used 8) - it only matters when fine-tuning with the converted D.
NVIDIA's fp16 activation clamping (``conv_clamp``) is not reproduced.
"""

from __future__ import annotations

import argparse
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
import torch.nn as nn

from digan.config import from_dict, to_dict
from digan.errors import DiganError
from digan.teacher.model import Discriminator, Generator, StyleGAN2Config, channel_table
from digan.teacher.upfirdn import make_kernel
from digan.utils.io import load_torch, save_torch

__all__ = [
    "TeacherCheckpoint",
    "read_checkpoint",
    "infer_config",
    "check_state_dict",
    "load_state_strict",
    "make_checkpoint",
    "save_checkpoint",
    "convert_ada_state_dict",
    "read_ada_pickle",
    "is_ada_state_dict",
    "export_teacher",
]


@dataclass
class TeacherCheckpoint:
    """A checkpoint normalised to the rosinality layout."""

    g_ema: dict[str, torch.Tensor]
    config: StyleGAN2Config
    g: Optional[dict[str, torch.Tensor]] = None
    d: Optional[dict[str, torch.Tensor]] = None
    latent_avg: Optional[torch.Tensor] = None
    source_format: str = "rosinality"
    raw: Optional[dict] = None
    path: Optional[str] = None


# ---------------------------------------------------------------------------------------------
# shapes -> config
# ---------------------------------------------------------------------------------------------

def _shape(t: Any) -> tuple[int, ...]:
    return tuple(t.shape) if hasattr(t, "shape") else ()


def _indices(sd: Mapping[str, Any], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd for m in [rx.match(k)] if m})


def _match_multiplier(table: dict[int, int], size: int) -> Optional[int]:
    for m in (1, 2, 4, 8):
        ref = channel_table(StyleGAN2Config(size=size, channel_multiplier=m))
        if all(ref[r] == table[r] for r in table):
            return m
    return None


def infer_config(g_sd: Mapping[str, Any], d_sd: Optional[Mapping[str, Any]] = None, lr_mlp: float = 0.01) -> StyleGAN2Config:
    """The :class:`StyleGAN2Config` of a rosinality-layout generator (and discriminator) state dict.

    size from the number of ``to_rgbs``, style dimension and mapping depth from ``style.*``,
    channel widths from the convolution weights; the table is written as a
    ``channel_multiplier`` when it matches rosinality's formula, else as explicit ``channels``.
    ``lr_mlp`` is not stored in weights (0.01 everywhere in practice).
    """
    if "input.input" not in g_sd or "style.1.weight" not in g_sd:
        first = next(iter(g_sd), None)
        raise DiganError(
            "teacher weights are not in the rosinality StyleGAN2 layout (no 'style.1.weight'/'input.input'; "
            f"first key {first!r}); convert NVIDIA weights with digan.teacher.checkpoint.convert_ada_state_dict"
        )
    mlp = _indices(g_sd, r"style\.(\d+)\.weight$")
    if mlp != list(range(1, len(mlp) + 1)):
        raise DiganError(f"teacher mapping layers are style.{mlp}; expected style.1..style.N consecutive")
    style_dim = _shape(g_sd["style.1.weight"])[1]
    rgbs = _indices(g_sd, r"to_rgbs\.(\d+)\.")
    log_size = len(rgbs) + 2
    size = 2**log_size
    table = {4: _shape(g_sd["input.input"])[1]}
    for j in range(len(rgbs)):
        key = f"convs.{2 * j}.conv.weight"
        if key not in g_sd:
            raise DiganError(f"teacher weights lack '{key}' needed for resolution {2 ** (j + 3)}; the file is incomplete")
        table[2 ** (j + 3)] = _shape(g_sd[key])[1]
    d_table = None
    if d_sd is not None and "convs.0.0.weight" in d_sd:
        d_table = {size: _shape(d_sd["convs.0.0.weight"])[0]}
        for k in _indices(d_sd, r"convs\.(\d+)\.conv2\.1\.weight$"):
            d_table[size // 2**k] = _shape(d_sd[f"convs.{k}.conv2.1.weight"])[0]
        if "final_conv.0.weight" in d_sd:
            d_table[4] = _shape(d_sd["final_conv.0.weight"])[0]
    m = _match_multiplier(table, size)
    cfg = StyleGAN2Config(size=size, style_dim=style_dim, n_mlp=len(mlp), lr_mlp=lr_mlp)
    if m is not None:
        cfg.channel_multiplier, cfg.channels = m, None
    else:
        cfg.channels = table
    if d_table is not None and d_table != channel_table(cfg):
        cfg.d_channels = d_table
    return cfg


# ---------------------------------------------------------------------------------------------
# strict loading with one-line errors
# ---------------------------------------------------------------------------------------------

_CONSTANT_BUFFER = re.compile(r"(\.blur\.kernel|\.upsample\.kernel|\.\d+\.kernel)$")


def _cfg_summary(cfg: StyleGAN2Config) -> str:
    ch = f"channels={cfg.channels}" if cfg.channels else f"channel_multiplier={cfg.channel_multiplier}"
    return f"size={cfg.size}, style_dim={cfg.style_dim}, n_mlp={cfg.n_mlp}, {ch}"


def check_state_dict(model: nn.Module, sd: Mapping[str, Any], what: str, cfg: Optional[StyleGAN2Config] = None) -> None:
    """Raise a one-line DiganError at the first key where ``sd`` and ``model`` disagree.

    Keys are compared in the model's order: a missing key, a shape mismatch, then unexpected
    extra keys. Missing FIR-kernel buffers are tolerated (they are constants).
    """
    expected = model.state_dict()
    where = f" (model config: {_cfg_summary(cfg)})" if cfg is not None else ""
    for k, v in expected.items():
        if k not in sd:
            if _CONSTANT_BUFFER.search(k):
                continue
            raise DiganError(
                f"{what} does not match the model{where}: first mismatch at key '{k}': missing from the checkpoint "
                f"(model expects shape {tuple(v.shape)}); pass the config the checkpoint was trained with"
            )
        got = _shape(sd[k])
        if got != tuple(v.shape):
            raise DiganError(
                f"{what} does not match the model{where}: first mismatch at key '{k}': checkpoint shape {got} vs "
                f"model shape {tuple(v.shape)}; pass the config the checkpoint was trained with"
            )
    for k in sd:
        if k not in expected:
            raise DiganError(
                f"{what} does not match the model{where}: unexpected key '{k}' (shape {_shape(sd[k])}); "
                "the checkpoint is for a different architecture or size"
            )


def load_state_strict(model: nn.Module, sd: Mapping[str, Any], what: str, cfg: Optional[StyleGAN2Config] = None) -> nn.Module:
    """``check_state_dict`` then copy the tensors in (constant kernel buffers may be absent)."""
    check_state_dict(model, sd, what, cfg)
    full = model.state_dict()
    full.update({k: v for k, v in sd.items()})
    model.load_state_dict(full)
    return model


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------

def _is_state_dict(x: Any) -> bool:
    return isinstance(x, Mapping) and len(x) > 0 and all(isinstance(k, str) for k in x) and all(
        isinstance(v, torch.Tensor) for v in x.values()
    )


def is_ada_state_dict(sd: Mapping[str, Any]) -> bool:
    """True for an NVIDIA stylegan2-ada-pytorch generator state dict."""
    return "synthesis.b4.const" in sd or "mapping.fc0.weight" in sd


def is_teacher_checkpoint(obj: Any) -> bool:
    """Whether ``obj`` (a loaded file) is a teacher of a kind :func:`read_checkpoint` reads:
    digan-bench's own (``format`` digan-teacher*, its training checkpoint included), rosinality's
    (``g_ema``/``g``, or a bare generator state dict) or NVIDIA's (``G_ema`` or its state dict).
    Lets a loader of another kind of file say what it was given instead."""
    if not isinstance(obj, Mapping):
        return False
    fmt = obj.get("format")
    return (isinstance(fmt, str) and fmt.startswith("digan-teacher")) or any(k in obj for k in ("g_ema", "g", "G_ema")) \
        or is_ada_state_dict(obj) or "style.1.weight" in obj


def _config_from_args(args: Any) -> dict:
    if args is None:
        return {}
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    elif hasattr(args, "__dict__") and not isinstance(args, Mapping):
        args = vars(args)
    return dict(args) if isinstance(args, Mapping) else {}


def _refuse_student_checkpoint(obj: Mapping[str, Any], label: str, path: Optional[Path]) -> None:
    """A 3D student checkpoint (``digan-bench train``; LiftGAN's too) given where a teacher is
    wanted: say what the file is and where it goes, not which keys it lacks."""
    fmt = obj.get("format")
    if not (isinstance(fmt, str) and fmt.startswith("digan-student/")):
        return
    shown = path if path is not None else "PATH"
    model = obj.get("model", "digan")
    if model == "digan":
        raise DiganError(f"{label} is a DIGAN student checkpoint, not a StyleGAN2 teacher; pass it as --student "
                         f"(e.g. 'digan-bench sample --student {shown}') and give a teacher .pt/.pkl here")
    raise DiganError(f"{label} is a {model!s} 3D model checkpoint, not a StyleGAN2 teacher; evaluate it with "
                     f"'digan-bench run --methods {model}:{shown}' and give a teacher .pt/.pkl here")


def read_checkpoint(path_or_obj: Any, config: Optional[StyleGAN2Config] = None, what: str = "teacher checkpoint") -> TeacherCheckpoint:
    """Read any supported teacher file (see module docstring) into a :class:`TeacherCheckpoint`.

    ``config`` forces an architecture (a mismatch raises naming the first bad key); otherwise the
    checkpoint's own ``config`` is used, else the one inferred from the weights' shapes
    (rosinality ``args`` are cross-checked against the shapes).
    """
    path = None
    if isinstance(path_or_obj, (str, Path)):
        path = Path(path_or_obj)
        if path.is_dir():
            inside = path / "teacher.pt"
            hint = f"pass {inside}" if inside.is_file() else "pass the .pt/.pkl file, e.g. RUN/teacher.pt"
            raise DiganError(f"{what} {path} is a folder, not a checkpoint file; {hint}")
        if not path.is_file():
            raise DiganError(
                f"{what} {path} not found; check the path, or train one with 'digan-bench train-teacher --data DIR'"
            )
        label = f"{what} {path}"
        if path.suffix == ".pkl":
            obj = read_ada_pickle(path)
        else:
            obj = load_torch(path, what=what)
    else:
        obj, label = path_or_obj, what
    if not isinstance(obj, Mapping):
        raise DiganError(f"{label} holds a {type(obj).__name__}, not a dict of weights; pass a StyleGAN2 .pt/.pkl checkpoint")

    fmt = "rosinality"
    if "G_ema" in obj or is_ada_state_dict(obj):
        obj = convert_ada_state_dict(obj)
        fmt = "nvidia-ada"
    elif "g_ema" not in obj and "g" not in obj:
        if _is_state_dict(obj) and "style.1.weight" in obj:
            obj = {"g_ema": dict(obj)}
            fmt = "rosinality-state-dict"
        else:
            _refuse_student_checkpoint(obj, label, path)
            keys = ", ".join(list(obj)[:6])
            raise DiganError(
                f"{label} has no generator weights (keys: {keys}); expected rosinality keys 'g_ema'/'g' or an NVIDIA "
                "stylegan2-ada-pytorch state dict"
            )
    g_ema = obj.get("g_ema")
    if g_ema is None:
        g_ema = obj["g"]
    if not _is_state_dict(g_ema):
        raise DiganError(f"{label}: 'g_ema' is not a state dict of tensors; re-create the checkpoint")
    d = obj.get("d") if _is_state_dict(obj.get("d")) else None
    g = obj.get("g") if _is_state_dict(obj.get("g")) else None

    if config is None:
        stored = obj.get("config")
        if isinstance(stored, Mapping):
            model_cfg = stored.get("model", stored)
            config = from_dict(StyleGAN2Config, dict(model_cfg))
        else:
            config = infer_config(g_ema, d)
            args = _config_from_args(obj.get("args"))
            if "size" in args and int(args["size"]) != config.size:
                raise DiganError(
                    f"{label}: its args say size {args['size']} but the weights are for size {config.size}; the file is inconsistent"
                )
    latent_avg = obj.get("latent_avg")
    if isinstance(latent_avg, torch.Tensor):
        latent_avg = latent_avg.detach().float().reshape(-1)
        if latent_avg.numel() != config.style_dim:
            raise DiganError(f"{label}: latent_avg has {latent_avg.numel()} values but style_dim is {config.style_dim}")
    else:
        latent_avg = None
    return TeacherCheckpoint(g_ema=dict(g_ema), config=config, g=g, d=d, latent_avg=latent_avg,
                             source_format=fmt, raw=dict(obj), path=str(path) if path else None)


def build_generator(ckpt: TeacherCheckpoint, which: str = "g_ema", label: str = "teacher checkpoint") -> Generator:
    """A :class:`Generator` with the weights of ``ckpt.g_ema`` (or ``ckpt.g``)."""
    sd = ckpt.g_ema if which == "g_ema" else ckpt.g
    if sd is None:
        raise DiganError(f"{label} has no '{which}' weights; use which='g_ema'")
    g = Generator(ckpt.config)
    load_state_strict(g, sd, f"{label} ({which})", ckpt.config)
    return g


def build_discriminator(ckpt: TeacherCheckpoint, label: str = "teacher checkpoint") -> Discriminator:
    if ckpt.d is None:
        raise DiganError(f"{label} has no discriminator ('d'); it cannot be used to resume or fine-tune training")
    d = Discriminator(ckpt.config)
    load_state_strict(d, ckpt.d, f"{label} (d)", ckpt.config)
    return d


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------

def make_checkpoint(g_ema: nn.Module, cfg: StyleGAN2Config, d: Optional[nn.Module] = None, g: Optional[nn.Module] = None,
                    latent_avg: Optional[torch.Tensor] = None, extra: Optional[Mapping[str, Any]] = None) -> dict:
    """A dict in rosinality's layout (``g_ema``, ``g``, ``d``, ``latent_avg``, ``args``) plus ``config``.

    ``args`` is an ``argparse.Namespace`` with rosinality's names (size, latent, n_mlp,
    channel_multiplier) so that its scripts can read the file too.
    """
    def cpu(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in sd.items()}

    out: dict[str, Any] = {"g_ema": cpu(g_ema.state_dict())}
    if g is not None:
        out["g"] = cpu(g.state_dict())
    if d is not None:
        out["d"] = cpu(d.state_dict())
    if latent_avg is not None:
        out["latent_avg"] = latent_avg.detach().cpu().float().reshape(-1)
    out["args"] = argparse.Namespace(size=cfg.size, latent=cfg.style_dim, n_mlp=cfg.n_mlp, channel_multiplier=cfg.channel_multiplier)
    out["config"] = {"model": to_dict(cfg)}
    if extra:
        out.update(extra)
    return out


def save_checkpoint(path: str | Path, ckpt: Mapping[str, Any]) -> Path:
    """Write a checkpoint dict atomically."""
    return save_torch(path, dict(ckpt))


def export_teacher(src: str | Path, dst: str | Path, half: bool = True, include_d: bool = True,
                   extra: Optional[Mapping[str, Any]] = None) -> Path:
    """Write a slim teacher file: ``g_ema`` (+ ``d``), ``latent_avg``, ``args``, ``config``.

    ``half`` stores the weights as float16 (half the size; loading casts back to float32, so the
    exported teacher is the float16-rounded one). ``latent_avg`` stays float32. Used for the
    bundled ``digan/assets/tiny_teacher_64.pt``.
    """
    ck = read_checkpoint(src)

    def conv(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu()).clone() for k, v in sd.items()}

    raw_cfg = (ck.raw or {}).get("config")
    out: dict[str, Any] = {"g_ema": conv(ck.g_ema)}
    if include_d and ck.d is not None:
        out["d"] = conv(ck.d)
    if ck.latent_avg is not None:
        out["latent_avg"] = ck.latent_avg.float().clone()
    cfg = ck.config
    out["args"] = argparse.Namespace(size=cfg.size, latent=cfg.style_dim, n_mlp=cfg.n_mlp, channel_multiplier=cfg.channel_multiplier)
    out["config"] = dict(raw_cfg) if isinstance(raw_cfg, Mapping) else {"model": to_dict(cfg)}
    out["format"] = "digan-teacher/1"
    out["dtype"] = "float16" if half else "float32"
    if extra:
        out.update(extra)
    return save_torch(dst, out)


# ---------------------------------------------------------------------------------------------
# NVIDIA stylegan2-ada-pytorch
# ---------------------------------------------------------------------------------------------

def _strip_prefix(sd: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _check_filter(sd: Mapping[str, Any], key: str) -> None:
    if key in sd:
        f = sd[key].detach().float().cpu()
        ref = make_kernel([1, 3, 3, 1])
        if f.shape != ref.shape or not torch.allclose(f / f.sum(), ref, atol=1e-6):
            raise DiganError(f"NVIDIA weights use resample filter {key} = {f.tolist()}; only [1,3,3,1] is supported")


def _convert_ada_g(sd: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Optional[torch.Tensor]]:
    if any(k.startswith("mapping.embed") for k in sd):
        raise DiganError("NVIDIA generator is class-conditional (mapping.embed); only unconditional models are supported")
    out: dict[str, torch.Tensor] = {}
    fcs = _indices(sd, r"mapping\.fc(\d+)\.weight$")
    if not fcs:
        raise DiganError("NVIDIA generator state dict has no mapping.fc0.weight; pass G_ema.state_dict()")
    for i in fcs:
        out[f"style.{i + 1}.weight"] = sd[f"mapping.fc{i}.weight"]
        out[f"style.{i + 1}.bias"] = sd[f"mapping.fc{i}.bias"]
    res = sorted(_indices(sd, r"synthesis\.b(\d+)\."))
    if not res or res[0] != 4:
        raise DiganError("NVIDIA generator state dict has no synthesis.b4 block; pass G_ema.state_dict()")

    def layer(src: str, dst: str, noise_idx: int) -> None:
        w = sd[f"{src}.weight"]
        out[f"{dst}.conv.weight"] = w.unsqueeze(0)
        out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
        out[f"{dst}.noise.weight"] = sd[f"{src}.noise_strength"].reshape(1)
        out[f"{dst}.activate.bias"] = sd[f"{src}.bias"]
        nc = sd.get(f"{src}.noise_const")
        if nc is not None:
            out[f"noises.noise_{noise_idx}"] = nc.reshape(1, 1, *nc.shape[-2:])
        _check_filter(sd, f"{src}.resample_filter")

    def torgb(src: str, dst: str) -> None:
        if f"{src}.weight" not in sd:
            raise DiganError(
                f"NVIDIA generator lacks {src}.weight: only the default 'skip' generator architecture is supported"
            )
        out[f"{dst}.conv.weight"] = sd[f"{src}.weight"].unsqueeze(0)
        out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
        out[f"{dst}.bias"] = sd[f"{src}.bias"].reshape(1, 3, 1, 1)

    const = sd["synthesis.b4.const"]
    out["input.input"] = const.reshape(1, *const.shape[-3:])
    layer("synthesis.b4.conv1", "conv1", 0)
    torgb("synthesis.b4.torgb", "to_rgb1")
    for j, r in enumerate(res[1:]):
        if r != 2 ** (j + 3):
            raise DiganError(f"NVIDIA generator blocks are {res}; expected 4, 8, 16, ... consecutive")
        layer(f"synthesis.b{r}.conv0", f"convs.{2 * j}", 2 * j + 1)
        layer(f"synthesis.b{r}.conv1", f"convs.{2 * j + 1}", 2 * j + 2)
        torgb(f"synthesis.b{r}.torgb", f"to_rgbs.{j}")
        _check_filter(sd, f"synthesis.b{r}.resample_filter")
    w_avg = sd.get("mapping.w_avg")
    return out, (w_avg.detach().float().reshape(-1) if w_avg is not None else None)


def _convert_ada_d(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if any(k.startswith("mapping.") or k.startswith("b4.cmap") for k in sd):
        raise DiganError("NVIDIA discriminator is class-conditional; only unconditional models are supported")
    res = sorted(_indices(sd, r"b(\d+)\."), reverse=True)
    if not res or res[-1] != 4:
        raise DiganError("NVIDIA discriminator state dict has no b4 block; pass D.state_dict()")
    size = res[0]
    froms = [r for r in res if f"b{r}.fromrgb.weight" in sd]
    if froms != [size]:
        raise DiganError(
            f"NVIDIA discriminator has fromrgb layers at {froms}: only the default 'resnet' discriminator is supported"
        )
    out: dict[str, torch.Tensor] = {
        "convs.0.0.weight": sd[f"b{size}.fromrgb.weight"],
        "convs.0.1.bias": sd[f"b{size}.fromrgb.bias"],
    }
    for k, r in enumerate(res[:-1], start=1):
        if f"b{r}.skip.weight" not in sd:
            raise DiganError(f"NVIDIA discriminator block b{r} has no skip: only the 'resnet' architecture is supported")
        out[f"convs.{k}.conv1.0.weight"] = sd[f"b{r}.conv0.weight"]
        out[f"convs.{k}.conv1.1.bias"] = sd[f"b{r}.conv0.bias"]
        out[f"convs.{k}.conv2.1.weight"] = sd[f"b{r}.conv1.weight"]
        out[f"convs.{k}.conv2.2.bias"] = sd[f"b{r}.conv1.bias"]
        out[f"convs.{k}.skip.1.weight"] = sd[f"b{r}.skip.weight"]
        _check_filter(sd, f"b{r}.resample_filter")
    out["final_conv.0.weight"] = sd["b4.conv.weight"]
    out["final_conv.1.bias"] = sd["b4.conv.bias"]
    out["final_linear.0.weight"] = sd["b4.fc.weight"]
    out["final_linear.0.bias"] = sd["b4.fc.bias"]
    out["final_linear.1.weight"] = sd["b4.out.weight"]
    out["final_linear.1.bias"] = sd["b4.out.bias"]
    return out


def convert_ada_state_dict(obj: Mapping[str, Any]) -> dict[str, Any]:
    """NVIDIA stylegan2-ada-pytorch weights -> a rosinality-layout checkpoint dict.

    ``obj`` is a generator state dict (``G_ema.state_dict()``), or a dict with ``G_ema`` (and
    optionally ``G``, ``D``) each a state dict or an object with ``state_dict()``, or a flat dict
    with ``G_ema.``/``D.`` prefixes. Returns ``{"g_ema", "latent_avg", ["g"], ["d"]}``. Parameter
    mapping (NVIDIA -> rosinality): ``mapping.fc{i}`` -> ``style.{i+1}``; ``synthesis.b4.const``
    -> ``input.input``; ``b4.conv1`` -> ``conv1``; ``b{2^(j+3)}.conv0/conv1`` ->
    ``convs.{2j}/{2j+1}`` (``affine`` -> ``conv.modulation``, ``noise_strength`` ->
    ``noise.weight``, ``bias`` -> ``activate.bias``, ``noise_const`` -> ``noises.noise_*``);
    ``torgb`` -> ``to_rgb1``/``to_rgbs.{j}``; ``mapping.w_avg`` -> ``latent_avg``. Weights are
    copied without flipping (both implementations use a plain transposed convolution for the
    upsampling layer). Discriminator: ``b{size}.fromrgb`` -> ``convs.0``, ``b{r}.conv0/conv1/skip``
    -> ``convs.{k}.conv1/conv2/skip``, ``b4.conv/fc/out`` -> ``final_conv``/``final_linear.0/1``.
    """
    def as_sd(x: Any) -> Optional[dict[str, torch.Tensor]]:
        if x is None:
            return None
        if hasattr(x, "state_dict") and callable(x.state_dict):
            x = x.state_dict()
        if not isinstance(x, Mapping):
            raise DiganError(f"expected a state dict of NVIDIA weights, got {type(x).__name__}")
        return {str(k): v for k, v in x.items() if isinstance(v, torch.Tensor)}

    if "G_ema" in obj or "D" in obj or "G" in obj:
        parts = {k: as_sd(obj.get(k)) for k in ("G_ema", "G", "D")}
    elif any(k.startswith("G_ema.") for k in obj):
        parts = {k: (_strip_prefix(obj, k + ".") or None) for k in ("G_ema", "G", "D")}
    else:
        parts = {"G_ema": as_sd(obj), "G": None, "D": None}
    if parts["G_ema"] is None:
        parts["G_ema"], parts["G"] = parts["G"], None
    if parts["G_ema"] is None:
        raise DiganError("NVIDIA weights contain no generator (G_ema or G)")
    g_ema, w_avg = _convert_ada_g(parts["G_ema"])
    out: dict[str, Any] = {"g_ema": g_ema}
    if w_avg is not None:
        out["latent_avg"] = w_avg
    if parts.get("G") is not None:
        out["g"] = _convert_ada_g(parts["G"])[0]
    if parts.get("D") is not None:
        out["d"] = _convert_ada_d(parts["D"])
    return out


class _PersistentObj:
    """Stand-in for an NVIDIA persistent class instance: keeps its pickled ``__dict__``."""

    def __init__(self, meta: Mapping[str, Any]):
        self.class_name = meta.get("class_name", "?")
        self.state = meta.get("state") or {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return _tree_state_dict(self)


def _tree_state_dict(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        return {prefix + k: v for k, v in obj.state_dict().items()}
    state = obj.state if isinstance(obj, _PersistentObj) else getattr(obj, "__dict__", {})
    out: dict[str, torch.Tensor] = {}
    for k, v in (state.get("_parameters") or {}).items():
        if v is not None:
            out[prefix + k] = v.detach() if isinstance(v, torch.Tensor) else v
    skip = set(state.get("_non_persistent_buffers_set") or ())
    for k, v in (state.get("_buffers") or {}).items():
        if v is not None and k not in skip:
            out[prefix + k] = v
    for k, v in (state.get("_modules") or {}).items():
        if v is not None:
            out.update(_tree_state_dict(v, prefix + k + "."))
    return out


class _Stub:
    """Placeholder for any class we do not need (ignores its state)."""

    def __init__(self, *a: Any, **k: Any):
        pass

    def __setstate__(self, state: Any) -> None:
        self._state = state


def _load_storage_from_bytes(b: bytes) -> Any:
    """``torch.storage._load_from_bytes`` without its ``weights_only=False``: a storage is data."""
    import io

    return torch.load(io.BytesIO(b), map_location="cpu", weights_only=True)


class _RefusedGlobal(Exception):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def _torch_module_class(module: str, name: str) -> Any:
    """A ``torch.nn`` module class (harmless to construct), else None."""
    import importlib

    if not module.startswith("torch.nn.modules."):
        return None
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    return obj if isinstance(obj, type) and issubclass(obj, nn.Module) else None


class _AdaUnpickler(pickle.Unpickler):
    """Resolves only what an NVIDIA network pickle needs; anything else is refused.

    NVIDIA's persistent classes become :class:`_PersistentObj` parameter trees (their embedded
    source is never run), ``dnnlib.EasyDict`` a dict, other classes of NVIDIA's own packages
    inert stubs; tensors are rebuilt by torch's tensor/parameter rebuild functions with storages
    read as weights only. Everything else (``builtins.exec``, ``os.system``, ``torch.load`` ...)
    raises :class:`_RefusedGlobal` before anything is called.
    """

    _NVIDIA_PACKAGES = ("torch_utils", "dnnlib", "training", "metrics")
    _ALLOWED: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): None,
        ("torch._utils", "_rebuild_tensor"): None,
        ("torch._utils", "_rebuild_tensor_v2"): None,
        ("torch._utils", "_rebuild_parameter"): None,
        ("torch._utils", "_rebuild_parameter_with_state"): None,
        ("torch", "Size"): None,
        ("torch", "device"): None,
        ("_codecs", "encode"): None,  # protocol-2 bytes
        ("builtins", "set"): None,
        ("builtins", "frozenset"): None,
        ("builtins", "slice"): None,
        ("builtins", "complex"): None,
        ("builtins", "bytearray"): None,
        ("numpy.core.multiarray", "_reconstruct"): None,
        ("numpy._core.multiarray", "_reconstruct"): None,
        ("numpy.core.multiarray", "scalar"): None,
        ("numpy._core.multiarray", "scalar"): None,
        ("numpy", "ndarray"): None,
        ("numpy", "dtype"): None,
    }

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch_utils.persistence" and name == "_reconstruct_persistent_obj":
            return _PersistentObj
        if module.startswith("dnnlib") and name == "EasyDict":
            return dict
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        if module == "torch.storage" and name == "_load_from_bytes":
            return _load_storage_from_bytes
        if module == "torch" and (name.endswith("Storage") or isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        if module == "numpy.dtypes" and name.endswith("DType"):
            return super().find_class(module, name)
        cls = _torch_module_class(module, name)
        if cls is not None:
            return cls
        if module.split(".")[0] in self._NVIDIA_PACKAGES and name[:1].isupper():
            return type(name, (_Stub,), {})  # an NVIDIA class we do not need: inert
        raise _RefusedGlobal(f"{module}.{name}")


def read_ada_pickle(path: str | Path) -> dict[str, Any]:
    """Read an NVIDIA stylegan2-ada-pytorch network pickle without NVIDIA's code.

    Returns ``{"G_ema": state_dict, "G": ..., "D": ...}`` (whatever the pickle holds). The
    unpickler (:class:`_AdaUnpickler`) resolves only the classes such a file needs, so a pickle
    that would run code is refused with one line before anything in it is called.
    """
    p = Path(path)
    if not p.is_file():
        raise DiganError(f"NVIDIA network pickle {p} not found; check the path")
    try:
        with open(p, "rb") as f:
            data = _AdaUnpickler(f).load()
    except DiganError:
        raise
    except _RefusedGlobal as e:
        from digan.utils.io import refusal_message

        raise DiganError(refusal_message(p, [e.name])) from None
    except Exception as e:
        raise DiganError(
            f"{p} is not a readable stylegan2-ada-pytorch pickle ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            "export the weights with torch.save(G_ema.state_dict(), 'g.pt') in NVIDIA's environment and pass that file"
        ) from e
    if not isinstance(data, Mapping) or not any(k in data for k in ("G_ema", "G")):
        raise DiganError(f"{p} does not contain 'G_ema' or 'G'; is it a stylegan2-ada-pytorch network pickle?")
    return {k: _tree_state_dict(data[k]) for k in ("G_ema", "G", "D") if data.get(k) is not None}
