"""Typed configuration: dataclasses that load from YAML/JSON, accept ``key.sub=value`` overrides
from the command line, validate types, and are saved beside every output.

Every configurable part of digan-bench declares a (possibly nested) ``@dataclass``. This module
turns those into plain dicts and back, with one-line errors for unknown keys and bad values::

    cfg = StudentConfig()
    cfg = apply_overrides(cfg, ["loss.flip=0.0", "model.use_kan=false"])
    save_config(cfg, run_dir / "config.json")
    cfg2 = load_config(StudentConfig, run_dir / "config.json")

Supported field types: bool, int, float, str, Optional[...], Literal[...], list[...],
tuple[...], dict[str, ...] and nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from digan.errors import DiganError

T = TypeVar("T")

__all__ = [
    "to_dict",
    "from_dict",
    "apply_overrides",
    "check_training_numbers",
    "load_config",
    "save_config",
    "config_hash",
]


def to_dict(cfg: Any) -> dict:
    """A JSON-serialisable dict of a (nested) dataclass config; tuples become lists."""
    if not dataclasses.is_dataclass(cfg):
        raise TypeError(f"expected a dataclass instance, got {type(cfg).__name__}")
    return _plain(dataclasses.asdict(cfg))


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    return x


def config_hash(cfg: Any) -> str:
    """Short stable hash of a config (dataclass or dict), used for resume checks."""
    d = to_dict(cfg) if dataclasses.is_dataclass(cfg) else _plain(cfg)
    blob = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert ``value`` to type ``tp``; raise DiganError naming ``where`` if impossible."""
    origin = get_origin(tp)
    args = get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except DiganError as e:  # try the next member of the union
                errors.append(str(e))
        if len(errors) == 1:  # Optional[X]: X's own message ("expected a list"), not "expected Optional"
            raise DiganError(errors[0] + " (or null)")
        raise DiganError(f"bad value {value!r} for {where}: expected {_tname(tp)}")
    if origin is Literal:
        if value in args:
            return value
        raise DiganError(f"bad value {value!r} for {where}: choose one of {', '.join(map(repr, args))}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise DiganError(f"bad value {value!r} for {where}: expected a mapping")
        return from_dict(tp, value, _prefix=where + ".")
    if origin in (list, typing.List):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise DiganError(f"bad value {value!r} for {where}: expected a list")
        (a,) = args or (Any,)
        return [_coerce(v, a, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (tuple, typing.Tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise DiganError(f"bad value {value!r} for {where}: expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise DiganError(f"bad value {value!r} for {where}: expected {len(args)} items")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args or [Any] * len(value))))
    if origin in (dict, typing.Dict):
        if not isinstance(value, dict):
            raise DiganError(f"bad value {value!r} for {where}: expected a mapping")
        ka, va = args or (Any, Any)
        return {_coerce(k, ka, where): _coerce(v, va, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0", "on", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise DiganError(f"bad value {value!r} for {where}: expected true or false")
    if tp is int:
        if isinstance(value, bool):
            raise DiganError(f"bad value {value!r} for {where}: expected an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise DiganError(f"bad value {value!r} for {where}: expected an integer")
    if tp is float:
        if isinstance(value, bool):
            raise DiganError(f"bad value {value!r} for {where}: expected a number")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise DiganError(f"bad value {value!r} for {where}: expected a number")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise DiganError(f"bad value {value!r} for {where}: expected a string")
    return value


def _tname(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def from_dict(cls: type[T], data: dict, *, _prefix: str = "") -> T:
    """Build dataclass ``cls`` from a dict, validating every value; unknown keys are errors."""
    if not isinstance(data, dict):
        raise DiganError(f"config for {_prefix.rstrip('.') or cls.__name__} must be a mapping, got {type(data).__name__}")
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in names]
    if unknown:
        raise DiganError(
            f"unknown config key '{_prefix}{unknown[0]}'; valid keys here: {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(v, hints[k], _prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def check_finite_numbers(cfg: Any, prefix: str, non_negative: dict[str, Any], signed: dict[str, Any] | None = None,
                         hint: str = "") -> None:
    """One-line :class:`DiganError` unless each field of ``non_negative`` is finite and >= 0
    (``lr`` > 0) and each of ``signed`` finite. The dicts map a field to the example the message
    gives; ``prefix`` is the fields' ``--set`` path; ``hint`` is added after the value read."""
    import math

    for name, example in {**non_negative, **(signed or {})}.items():
        v = float(getattr(cfg, name))
        sign = "" if name in (signed or {}) else "positive " if name == "lr" else "non-negative "
        if not math.isfinite(v) or (sign and v < 0) or (name == "lr" and v == 0):
            raise DiganError(f"{prefix}{name} must be a {sign}finite number (got {getattr(cfg, name)}{hint}); "
                             f"e.g. --set {prefix}{name}={example}")


def check_training_numbers(cfg: Any, prefix: str, non_negative: dict[str, str], at_least_one: dict[str, Any],
                           betas_example: str) -> None:
    """One-line :class:`DiganError` for the numbers of a training config (student ``train`` or
    teacher) that torch would reject with a traceback, before any output exists: each field of
    ``non_negative`` finite and >= 0 (``lr`` > 0), each of ``at_least_one`` >= 1, ``betas`` two
    numbers in [0, 1), ``seed`` in 0..2**62-1. The dicts map a field to the example the message
    gives; ``prefix`` is the fields' ``--set`` path (``"train."`` or ``""``)."""
    import math

    check_finite_numbers(cfg, prefix, non_negative)
    for name, example in at_least_one.items():
        if int(getattr(cfg, name)) < 1:
            raise DiganError(f"{prefix}{name} must be at least 1 (got {getattr(cfg, name)}); e.g. --set {prefix}{name}={example}")
    if not 0 <= int(cfg.seed) < 2**62:  # torch seeds are 64-bit; seed + offsets per rank must fit
        raise DiganError(f"{prefix}seed must be in 0..2**62-1 (got {cfg.seed}); e.g. --set {prefix}seed=0")
    if not all(math.isfinite(float(b)) and 0.0 <= float(b) < 1.0 for b in cfg.betas):
        raise DiganError(f"{prefix}betas must be two numbers in [0, 1) (got {list(cfg.betas)}); e.g. --set {prefix}betas={betas_example}")


def apply_overrides(cfg: T, overrides: list[str] | tuple[str, ...] | None) -> T:
    """Return a copy of ``cfg`` with ``key.sub=value`` overrides applied (values parsed as YAML)."""
    if not overrides:
        return cfg
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise DiganError(f"bad override {item!r}: write it as key=value, e.g. train.lr=1e-4")
        key, text = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        node = data
        for i, p in enumerate(parts[:-1]):
            if not isinstance(node, dict) or p not in node or not isinstance(node[p], dict):
                raise DiganError(f"unknown config key '{'.'.join(parts[: i + 1])}' in override {item!r}")
            node = node[p]
        if parts[-1] not in node:
            valid = ", ".join(sorted(node)) if isinstance(node, dict) else ""
            raise DiganError(f"unknown config key '{key}' in override {item!r}; valid keys here: {valid}")
        value = _parse_scalar(text)
        if isinstance(value, dict) and any(v is None for v in value.values()) and re.search(r":[^\s/]", text):
            # YAML reads {4:8} as {248: null} (4:8 is base 60) and {a:1} as {"a:1": null}
            raise DiganError(f"bad value {text.strip()!r} for {key}: put a space after each ':' in a mapping, "
                             "e.g. {4: 8, 8: 8}")
        node[parts[-1]] = value
    return from_dict(type(cfg), data)


def load_config(cls: type[T], path: str | Path, overrides: list[str] | None = None) -> T:
    """Load a YAML or JSON config file into ``cls``, then apply overrides."""
    p = Path(path)
    if not p.is_file():
        raise DiganError(f"config file {p} not found; pass an existing .yaml or .json file")
    from digan.utils.io import read_text

    text = read_text(p, "pass a .yaml or .json config", label=f"config file {p}")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise DiganError(f"config file {p} is not valid YAML/JSON ({str(e).splitlines()[0]}); fix the syntax") from e
    return apply_overrides(from_dict(cls, data), overrides)


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write ``cfg`` atomically as JSON (``.json``) or YAML (``.yaml``/``.yml``)."""
    from digan.utils.io import write_json, write_text

    p = Path(path)
    d = to_dict(cfg) if dataclasses.is_dataclass(cfg) else _plain(cfg)
    if p.suffix in (".yaml", ".yml"):
        write_text(p, yaml.safe_dump(d, sort_keys=False))
    else:
        write_json(p, d)
    return p
