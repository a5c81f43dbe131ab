"""Display names, number formats and directions used by every table, figure and check.

These are plain, extensible registries: a new baseline or ablation variant gets a readable label
by one call (or an edit of the dict) and never needs a change in the table code::

    from reports.labels import register_method_label, register_variant_label
    register_method_label("eg3d", "EG3D")
    register_variant_label("no_perturb", "w/o perturbation losses")

Unknown names are shown as they are written in the records, so nothing disappears.

Direction (lower/higher is better) always comes from the record (``higher_is_better``); the
defaults here are used only when a record leaves it empty.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "MetricSpec",
    "METRICS",
    "METHOD_LABELS",
    "VARIANT_LABELS",
    "ABLATION_VARIANTS",
    "metric_spec",
    "method_label",
    "variant_label",
    "row_label",
    "base_method",
    "register_method_label",
    "register_variant_label",
    "register_metric",
    "method_order",
    "variant_order",
    "setting_label",
    "parse_setting",
]


@dataclass(frozen=True)
class MetricSpec:
    """How a metric is shown.

    ``scale`` multiplies the stored value for display and ``scale_label`` says so in the header
    (KID is shown x10^3 and SIDE x10^2, as in the literature); ``decimals`` is the display
    precision, also used to decide ties when marking the best value.
    """

    label: str
    decimals: int = 3
    scale: float = 1.0
    scale_label: str = ""
    higher_is_better: bool | None = None
    show_unit: bool = False


METRICS: dict[str, MetricSpec] = {
    "fid": MetricSpec("FID", decimals=2, higher_is_better=False),
    "kid": MetricSpec("KID", decimals=2, scale=1e3, scale_label="×10³", higher_is_better=False),
    "identity": MetricSpec("ID", decimals=3, higher_is_better=True),
    "pose": MetricSpec("Pose MAE", decimals=1, higher_is_better=False, show_unit=True),
    "pose_mae": MetricSpec("Pose MAE", decimals=1, higher_is_better=False, show_unit=True),
    "side": MetricSpec("SIDE", decimals=3, scale=1e2, scale_label="×10⁻²", higher_is_better=False),
    "mad": MetricSpec("MAD", decimals=2, higher_is_better=False, show_unit=True),
    "speed": MetricSpec("Speed", decimals=1, show_unit=True),
    "memory": MetricSpec("Memory", decimals=0, higher_is_better=False, show_unit=True),
}

#: Display names in table order (baselines first, ours last, as in the paper). Unknown methods
#: follow, alphabetically, with their record name.
METHOD_LABELS: dict[str, str] = {
    "teacher": "StyleGAN2 (G2D)",
    "stylegan2": "StyleGAN2",
    "hologan": "HoloGAN",
    "discofacegan": "DiscoFaceGAN",
    "configNet": "CONFIG-Net",
    "confignet": "CONFIG-Net",
    "liftgan": "LiftGAN",
    "liftedgan": "LiftedGAN",
    "digan": "DIGAN (ours)",
}

#: Ablation variants of DIGAN in the paper's order, then ours (KAN/partial-conv swaps).
VARIANT_LABELS: dict[str, str] = {
    "full": "Full model",
    "no_flip": "w/o flip loss",
    "no_identity": "w/o identity loss",
    "no_albedo": "w/o albedo regularization",
    "mlp": "KAN → MLP (DV, DL)",
    "plain_conv": "partial conv → plain conv (DS)",
}

#: The variants that make Table 3 (in this order); other variants found in the records follow.
ABLATION_VARIANTS: tuple[str, ...] = tuple(VARIANT_LABELS)


def register_method_label(name: str, label: str) -> None:
    """Give method ``name`` the display ``label`` (appended to the table order)."""
    METHOD_LABELS[name] = label


def register_variant_label(name: str, label: str) -> None:
    """Give ablation variant ``name`` the display ``label`` (appended to the table order)."""
    VARIANT_LABELS[name] = label


def register_metric(name: str, spec: MetricSpec) -> None:
    """Declare how metric ``name`` is displayed."""
    METRICS[name] = spec


def metric_spec(name: str) -> MetricSpec:
    """The spec of ``name``; unknown metrics are shown by name with 4 significant decimals."""
    return METRICS.get(name) or MetricSpec(name, decimals=3)


def base_method(name: str) -> str:
    """Registry name of a record's method: the engine stores ``name:ARG`` (``digan:student``)
    when a checkpoint was given; this is ``digan``."""
    return name.split(":", 1)[0]


def method_label(name: str) -> str:
    """``DIGAN (ours)``; a method with an argument keeps it: ``DIGAN (ours) [student]``."""
    if name in METHOD_LABELS:
        return METHOD_LABELS[name]
    base, sep, arg = name.partition(":")
    if sep and base in METHOD_LABELS:
        return f"{METHOD_LABELS[base]} [{arg}]"
    return name


def variant_label(name: str) -> str:
    return VARIANT_LABELS.get(name, name)


def row_label(method: str, variant: str) -> str:
    """``DIGAN (ours)`` for the full model, ``DIGAN (ours): w/o flip loss`` for a variant."""
    base = method_label(method)
    return base if variant in ("", "full") else f"{base}: {variant_label(variant)}"


def method_order(name: str) -> tuple[int, str]:
    """Sort key: labelled methods in label-table order, then the others alphabetically."""
    names = list(METHOD_LABELS)
    base = base_method(name)
    return (names.index(base), name) if base in names else (len(names), name)


def variant_order(name: str) -> tuple[int, str]:
    names = list(VARIANT_LABELS)
    return (names.index(name), "") if name in names else (len(names), name)


def parse_setting(setting: str) -> dict[str, str]:
    """``"pitch=0,yaw=30"`` -> ``{"pitch": "0", "yaw": "30"}``; ``"overall"`` -> ``{}``."""
    if setting in ("", "overall"):
        return {}
    out: dict[str, str] = {}
    for part in setting.split(","):
        k, _, v = part.partition("=")
        out[k.strip()] = v.strip()
    return out


def _num(v: str) -> str:
    try:
        f = float(v)
    except ValueError:
        return v
    return f"{f:g}"


def setting_label(setting: str) -> str:
    """Human label for a setting: ``yaw -45°``, ``pitch 10°, yaw 30°``, ``generate``, ``mean``.

    Angles (``yaw``, ``pitch``, ``roll``) get a degree sign; a zero pitch next to a yaw is
    dropped (the usual case); ``kind=generate`` becomes ``generate``.
    """
    kv = parse_setting(setting)
    if not kv:
        return "mean"
    if "yaw" in kv and kv.get("pitch") is not None and _num(kv["pitch"]) == "0":
        kv = {k: v for k, v in kv.items() if k != "pitch"}
    parts = []
    for k, v in kv.items():
        if k in ("yaw", "pitch", "roll"):
            parts.append(f"{k} {_num(v)}°")
        elif k == "kind":
            parts.append(v)
        else:
            parts.append(f"{k} {v}")
    return ", ".join(parts)
