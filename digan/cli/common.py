"""Options and helpers shared by the CLI modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, TypeVar

import typer

from digan.config import apply_overrides, load_config

T = TypeVar("T")

SetOption = typer.Option(
    None, "--set", "-s", help="Override a config value: key.sub=value (repeatable)."
)
ConfigOption = typer.Option(None, "--config", "-c", help="YAML or JSON config file.", dir_okay=False)


def build_config(cls: type[T], config_path: Optional[Path], overrides: Optional[list[str]], base: T | None = None) -> T:
    """Config from (base or defaults) <- file <- --set overrides."""
    if config_path is not None:
        return load_config(cls, config_path, overrides)
    return apply_overrides(base if base is not None else cls(), overrides)


def parse_float_list(text: str, what: str) -> list[float]:
    """'-45,-30,0,30' -> [-45.0, -30.0, 0.0, 30.0] with a one-line error naming ``what``."""
    from digan.errors import DiganError

    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError as e:
        raise DiganError(f"bad {what} list {text!r}: write comma-separated numbers, e.g. -30,0,30") from e


def echo_kv(title: str, items: dict[str, Any]) -> None:
    from rich.table import Table

    from digan.utils.progress import console

    t = Table(title=title, show_header=False)
    for k, v in items.items():
        t.add_row(str(k), str(v))
    console.print(t)
