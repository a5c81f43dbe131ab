"""Load the official LiftedGAN checkpoints (seasonSH/LiftedGAN, ``checkpoint_XXX.pth``) into the
native LiftGAN (:mod:`baselines.liftgan`), i.e. a :class:`digan.student.model.G3D` built with
LiftedGAN's settings, so the official weights are benchmarked by the same renderer and metrics.

File layout (``LiftedGAN.save_model``): ``{"netD": state_dict, "netT": ..., "netSD": ...,
"netSC": ..., "optimizer": ..., "global_step": int, "epoch": int}``. The teacher (LiftedGAN's
reduced-channel StyleGAN2, ``stylegan2-ffhq-cropped-300000.pt``) is not in the file: pass it.

Key mapping (``i`` is the module index inside LiftedGAN's ``nn.Sequential``; the native modules
were built so that the indices agree one to one)::

    LiftedGAN key                          native G3D key             notes
    netSD.model_view.mlp.{i}.{w,b}         view_net.net.{i}.{w,b}     DV: Linear+LeakyReLU(0.2) x3, Linear, tanh
    netSD.model_light.mlp.{i}.{w,b}        light_net.net.{i}.{w,b}    DL: same, 4 outputs
    netSD.model_style.mlp.*                (not loaded)               LiftedGAN computes this neutral
                                                                      style but overwrites it with netSC
    netSC.embed_style.mlp.{i}.*            compose.embed_style.{i}.*  M: Linear, GroupNorm, LeakyReLU x3,
    netSC.embed_light.mlp.{i}.*            compose.embed_light.{i}.*     Linear, ScaleShift(weight, bias)
    netSC.embed_view.mlp.{i}.*             compose.embed_view.{i}.*
    netSC.model.mlp.{i}.*                  compose.model.{i}.*
    netD.mlp.{i}.{w,b}                     depth_net.mlp.{i}.{w,b}    DS latent MLP (Linear+LeakyReLU) x4
    netD.network.{i}.*                     depth_net.network.{i}.*    ConvT 1->4, conv; blocks ConvT,GN,ReLU,conv,GN,ReLU
    netD.inject.weight                     depth_net.inject.weight    1x1 conv of the teacher's last features
    netD.head.{i}.*                        depth_net.head.{i}.*       conv3,GN,ReLU,conv5,GN,ReLU,conv5+bias
    netT.mlp.{i}.{w,b}                     trans_net.mlp.{i}.{w,b}    DT latent MLP
    netT.network.{i}.*                     trans_net.network.{i}.*
    global_step, epoch                     (recorded in the info)
    optimizer                              (not loaded: training state)

A leading ``module.`` (DataParallel) inside a sub-dict is stripped. Buffers that LiftedGAN does
not store (``w_mean``, ``w_std``, ``w_sigma_inv`` and the DV/DL input statistics) are teacher
statistics used only by the training-time w regulariser (LiftGAN does not standardise the DV/DL
input); :func:`load_liftedgan_checkpoint` computes them when ``w_stats_samples > 0``.

The architecture (style dimension, hidden widths, number of layers, image size, channel widths,
inject dimension) is read from the tensor shapes, so any LiftedGAN-layout file loads, not only
the 256 px FFHQ one; it must agree with the teacher (size, style dimension, feature channels).
A key the table cannot place, a parameter the file lacks (``netD.inject.weight`` included: LiftedGAN's
depth net always has it and its strict load rejects a file without it), or a shape that disagrees is
a one-line :class:`~digan.errors.DiganError` naming the key as the file writes it (e.g.
``netSD.model_view.mlp.0.weight``), never the native name. The style dimension is read from every
layer that takes the style code, so one misshapen key is reported as a damaged file, not as a
teacher of another size.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from digan.errors import DiganError

__all__ = [
    "LIFTEDGAN_TOP_KEYS",
    "is_liftedgan_checkpoint",
    "map_liftedgan_key",
    "convert_liftedgan_state",
    "infer_liftedgan_overrides",
    "load_liftedgan_checkpoint",
]

#: top-level keys of an official checkpoint: networks, then metadata
LIFTEDGAN_NETS = ("netD", "netT", "netSD", "netSC")
LIFTEDGAN_META = ("optimizer", "global_step", "epoch")
LIFTEDGAN_TOP_KEYS = LIFTEDGAN_NETS + LIFTEDGAN_META

#: LiftedGAN key template -> native key template (None: known, not loaded). ``{i}`` is a layer
#: index, ``{p}`` weight or bias, ``{e}`` one of the compose net's MLPs; both directions of the
#: mapping (loading, and naming a key in the user's terms) are compiled from this one table.
_KEY_TABLE: list[tuple[str, str | None]] = [
    ("netSD.model_view.mlp.{i}.{p}", "view_net.net.{i}.{p}"),
    ("netSD.model_light.mlp.{i}.{p}", "light_net.net.{i}.{p}"),
    ("netSD.model_style.mlp.{i}.{p}", None),
    ("netSC.{e}.mlp.{i}.{p}", "compose.{e}.{i}.{p}"),
    ("netD.mlp.{i}.{p}", "depth_net.mlp.{i}.{p}"),
    ("netD.network.{i}.{p}", "depth_net.network.{i}.{p}"),
    ("netD.inject.weight", "depth_net.inject.weight"),
    ("netD.head.{i}.{p}", "depth_net.head.{i}.{p}"),
    ("netT.mlp.{i}.{p}", "trans_net.mlp.{i}.{p}"),
    ("netT.network.{i}.{p}", "trans_net.network.{i}.{p}"),
]
_FIELDS = {"i": r"\d+", "p": "weight|bias", "e": "embed_style|embed_light|embed_view|model"}


def _key_pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w)\}", template)  # literal, field, literal, field, ...
    return re.compile("^" + "".join(re.escape(t) if k % 2 == 0 else f"(?P<{t}>{_FIELDS[t]})" for k, t in enumerate(parts)) + "$")


def _key_replacement(template: str) -> str:
    return re.sub(r"\{(\w)\}", r"\\g<\1>", template)


#: (pattern on "net.key", replacement or None for "known, not loaded")
_RULES: list[tuple[re.Pattern[str], str | None]] = [
    (_key_pattern(lifted), None if native is None else _key_replacement(native)) for lifted, native in _KEY_TABLE]
#: native key -> the LiftedGAN key it is read from (for messages in the user's terms)
_INVERSE: list[tuple[re.Pattern[str], str]] = [
    (_key_pattern(native), _key_replacement(lifted)) for lifted, native in _KEY_TABLE if native is not None]


def liftedgan_key_of(native: str) -> str:
    """The LiftedGAN file key a native G3D key is read from (the native key if none)."""
    for pat, rep in _INVERSE:
        if pat.match(native):
            return pat.sub(rep, native)
    return native


#: native buffers that an official file does not hold (teacher statistics)
_COMPUTED = {"w_mean", "w_std", "w_sigma_inv", "view_net.w_mean", "view_net.w_std", "light_net.w_mean", "light_net.w_std"}


def is_liftedgan_checkpoint(obj: Any) -> bool:
    """True for a dict that looks like ``LiftedGAN.save_model`` output (has netD and netSD)."""
    return isinstance(obj, dict) and isinstance(obj.get("netD"), dict) and isinstance(obj.get("netSD"), dict)


def map_liftedgan_key(key: str) -> str | None:
    """Native G3D key of a LiftedGAN key ``"<net>.<param>"`` (None: known but not loaded).

    Raises DiganError naming ``key`` when no rule places it.
    """
    for pat, rep in _RULES:
        if pat.match(key):
            return None if rep is None else pat.sub(rep, key)
    raise DiganError(f"LiftedGAN checkpoint key '{key}' cannot be placed in the native LiftGAN (not in LiftedGAN's "
                     "netD/netT/netSD/netSC layout); this file is not an official LiftedGAN checkpoint of the supported layout")


def _flat(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """``{"net.param": tensor}`` over the network sub-dicts; unknown top-level keys are errors."""
    return _flat_named(ckpt)[0]


def _flat_named(ckpt: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """:func:`_flat` and, for each of its keys, the key as written in the file (with a
    DataParallel ``module.`` prefix where the file has one)."""
    for k in ckpt:
        if k not in LIFTEDGAN_TOP_KEYS:
            raise DiganError(f"LiftedGAN checkpoint key '{k}' cannot be placed (expected only {', '.join(LIFTEDGAN_TOP_KEYS)}); "
                             "this is not an official LiftedGAN checkpoint of the supported layout")
    missing = [n for n in LIFTEDGAN_NETS if n not in ckpt]
    if missing:
        raise DiganError(f"LiftedGAN checkpoint lacks '{missing[0]}' (it needs {', '.join(LIFTEDGAN_NETS)}); pass a full checkpoint_XXX.pth")
    out: dict[str, torch.Tensor] = {}
    names: dict[str, str] = {}
    for net in LIFTEDGAN_NETS:
        sd = ckpt[net]
        if not isinstance(sd, dict):
            raise DiganError(f"LiftedGAN checkpoint entry '{net}' is not a state dict; the file is damaged or of another layout")
        for k, v in sd.items():
            kk = k[len("module."):] if k.startswith("module.") else k
            if not isinstance(v, torch.Tensor):
                raise DiganError(f"LiftedGAN checkpoint key '{net}.{k}' is not a tensor; the file is damaged or of another layout")
            out[f"{net}.{kk}"] = v
            names[f"{net}.{kk}"] = f"{net}.{k}"
    return out, names


def convert_liftedgan_state(ckpt: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(native state dict without the computed buffers, info) of an official checkpoint dict.

    ``info``: ``global_step``, ``epoch``, ``ignored`` (LiftedGAN keys known but not loaded).
    """
    flat, names = _flat_named(ckpt)
    state: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for k, v in flat.items():
        if _unplaceable(k):
            map_liftedgan_key(names[k])  # raises, naming the key as the file writes it
        nk = map_liftedgan_key(k)
        if nk is None:
            ignored.append(k)
            continue
        state[nk] = v.detach().float().cpu()
    info = {"global_step": ckpt.get("global_step"), "epoch": ckpt.get("epoch"), "ignored": ignored}
    return state, info


def _unplaceable(key: str) -> bool:
    return not any(pat.match(key) for pat, _ in _RULES)


def _linear_count(flat: dict[str, torch.Tensor], prefix: str) -> int:
    return sum(1 for k, v in flat.items() if k.startswith(prefix) and k.endswith(".weight") and v.dim() == 2)


def _upconv_count(flat: dict[str, torch.Tensor], prefix: str) -> int:
    """Number of 4x4 (transposed) convolutions under ``prefix``: the 1->4 px one plus one per block."""
    n = 0
    for k, v in flat.items():
        if re.match(re.escape(prefix) + r"(\d+)\.weight$", k) and v.dim() == 4 and tuple(v.shape[-2:]) == (4, 4):
            n += 1
    return n


def infer_liftedgan_overrides(ckpt: dict[str, Any]) -> tuple[list[str], dict[str, int]]:
    """Config overrides (``model.*``) that rebuild the file's architecture, and the facts read
    (``size``, ``style_dim``, ``inject_dim``) to check against the teacher."""
    flat, names = _flat_named(ckpt)

    def need(key: str) -> torch.Tensor:
        if key not in flat:
            raise DiganError(f"LiftedGAN checkpoint lacks '{key}'; the file is damaged or of another layout "
                             "(LiftedGAN's own strict load_state_dict rejects it too)")
        return flat[key]

    view0 = need("netSD.model_view.mlp.0.weight")
    if view0.dim() != 2:
        raise DiganError(f"LiftedGAN checkpoint key '{names['netSD.model_view.mlp.0.weight']}' has shape {tuple(view0.shape)}; "
                         "a Linear weight is 2-D: the file is damaged")
    # the style dimension is read from every layer that takes w: one misshapen key is named as a
    # damaged file, not mistaken for a teacher of another size
    takes_w = [k for k in ("netSD.model_view.mlp.0.weight", "netSD.model_light.mlp.0.weight", "netSD.model_style.mlp.0.weight",
                           "netSC.embed_style.mlp.0.weight", "netD.mlp.0.weight", "netT.mlp.0.weight")
               if k in flat and flat[k].dim() == 2]
    dims = [int(flat[k].shape[1]) for k in takes_w]
    style_dim = max(set(dims), key=dims.count)
    odd = [k for k, d in zip(takes_w, dims) if d != style_dim]
    if odd and dims.count(style_dim) > 1:
        raise DiganError(f"LiftedGAN checkpoint key '{names[odd[0]]}' has shape {tuple(flat[odd[0]].shape)}, but the file's other "
                         f"layers that take the style code say style dimension {style_dim}; the file is damaged or was edited")
    pose_hidden = int(view0.shape[0])
    pose_layers = _linear_count(flat, "netSD.model_view.mlp.")
    if _linear_count(flat, "netSD.model_light.mlp.") != pose_layers:
        raise DiganError("LiftedGAN checkpoint: netSD.model_light and netSD.model_view have different depths; unsupported layout")
    # depth net
    depth_mlp = _linear_count(flat, "netD.mlp.")
    n_up = _upconv_count(flat, "netD.network.") - 1
    if n_up < 1:
        raise DiganError("LiftedGAN checkpoint: netD.network has no upsampling blocks (no 4x4 transposed convolutions); unsupported layout")
    nd0 = int(need("netD.network.0.weight").shape[1])
    depth_z = int(need("netD.mlp.0.weight").shape[0]) if depth_mlp else style_dim
    inject = need("netD.inject.weight")  # LiftedGAN's depth net always has it (no silent inject-free net)
    if inject.dim() != 4:
        raise DiganError(f"LiftedGAN checkpoint key '{names['netD.inject.weight']}' has shape {tuple(inject.shape)}; a 1x1 "
                         "convolution weight is 4-D: the file is damaged")
    inject_dim = int(inject.shape[1])
    # transformation net
    trans_mlp = _linear_count(flat, "netT.mlp.")
    t_up = _upconv_count(flat, "netT.network.") - 1
    if t_up != n_up:
        raise DiganError(f"LiftedGAN checkpoint: netT has {t_up} upsampling blocks but netD {n_up}; unsupported layout")
    tn0 = int(need("netT.network.0.weight").shape[1])
    trans_z = int(need("netT.mlp.0.weight").shape[0]) if trans_mlp else style_dim
    compose_hidden = int(need("netSC.embed_style.mlp.0.weight").shape[0])
    compose_layers = _linear_count(flat, "netSC.model.mlp.")
    size = 2 ** (n_up + 3)
    overrides = [
        f"model.pose_hidden={pose_hidden}", f"model.pose_layers={pose_layers}",
        f"model.depth_nf={nd0 // 2 ** n_up}", f"model.depth_z={depth_z}", f"model.depth_mlp={depth_mlp}",
        "model.use_inject=true",
        f"model.trans_nf={tn0 // 2 ** n_up}", f"model.trans_z={trans_z}", f"model.trans_mlp={trans_mlp}",
        f"model.compose_hidden={compose_hidden}", f"model.compose_layers={compose_layers}", "model.compose_residual=false",
    ]
    return overrides, {"size": size, "style_dim": style_dim, "inject_dim": inject_dim, "names": names}


def load_liftedgan_checkpoint(path: str | Path, teacher: Any, device: torch.device | str = "cpu", w_stats_samples: int = 0,
                              seed: int = 0):
    """An official LiftedGAN checkpoint as a :class:`digan.student.inference.Student` (model
    ``liftgan``) on ``device`` with ``teacher`` (a loaded :class:`digan.teacher.Teacher`).

    ``w_stats_samples`` > 0 computes the teacher w statistics (LiftedGAN used 50,000); they only
    matter for further training, so inference leaves them at their neutral defaults.
    """
    from digan.student.build import build_g3d
    from digan.student.config import make_config
    from digan.student.inference import Student
    from digan.utils.io import load_torch

    p = Path(path)
    ck = load_torch(p, what="LiftedGAN checkpoint")
    if not is_liftedgan_checkpoint(ck):
        first = next(iter(ck), None) if isinstance(ck, dict) else type(ck).__name__
        raise DiganError(f"{p} is not an official LiftedGAN checkpoint (no netD/netSD; first key '{first}'); "
                         "pass a checkpoint_XXX.pth of seasonSH/LiftedGAN or a digan-bench liftgan student.pt")
    overrides, facts = infer_liftedgan_overrides(ck)

    def mismatch(inject: object) -> DiganError:
        return DiganError(
            f"{p} was trained with a {facts['size']} px teacher (style {facts['style_dim']}, last features {facts['inject_dim']} channels) "
            f"but the teacher given is {int(teacher.size)} px (style {int(teacher.style_dim)}, {inject} channels); pass LiftedGAN's "
            "StyleGAN2 (stylegan2-ffhq-cropped-300000.pt, reduced channel table) with the 'teacher' option")

    if facts["size"] != int(teacher.size) or facts["style_dim"] != int(teacher.style_dim):
        raise mismatch("?")
    cfg = make_config("paper", "full", overrides + [f"train.w_stats_samples={max(1, int(w_stats_samples))}", f"train.seed={seed}"],
                      model="liftgan")
    g3d = build_g3d(cfg, teacher, device, w_stats=w_stats_samples > 0)  # probes the teacher's feature channels
    names = facts["names"]
    if facts["inject_dim"] != g3d.inject_dim:
        raise DiganError(
            f"{p}: '{names['netD.inject.weight']}' takes {facts['inject_dim']} feature channels but the teacher's last features "
            f"have {g3d.inject_dim}; pass LiftedGAN's StyleGAN2 (stylegan2-ffhq-cropped-300000.pt, reduced channel table) with "
            "the 'teacher' option")
    state, info = convert_liftedgan_state(ck)
    native = g3d.state_dict()

    def shown(native_key: str) -> str:
        fk = liftedgan_key_of(native_key)
        return names.get(fk, fk)

    for k, v in state.items():
        if k not in native:
            raise DiganError(f"LiftedGAN checkpoint key '{shown(k)}' has no place in the LiftedGAN network built from the file's "
                             "shapes; the file is damaged or of an unsupported layout")
        if tuple(native[k].shape) != tuple(v.shape):
            raise DiganError(f"LiftedGAN checkpoint key '{shown(k)}' has shape {tuple(v.shape)}, but the rest of the file "
                             f"builds {tuple(native[k].shape)} there; the file is damaged or was edited")
    missing = [k for k in native if k not in state and k not in _COMPUTED]
    if missing:
        raise DiganError(f"LiftedGAN checkpoint lacks '{shown(missing[0])}'; the file is incomplete or of another layout "
                         "(LiftedGAN's own strict load_state_dict rejects it too)")
    g3d.load_state_dict({**native, **state})
    info.update({"path": str(p), "source": "official LiftedGAN checkpoint", "step": info.get("global_step"),
                 "teacher": {"path": str(getattr(teacher, "source", "") or "")}, "meta": {}})
    return Student(g3d, teacher, cfg, device, info=info)
