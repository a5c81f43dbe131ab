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


def parse_float_list(text: str, what: str, angle: bool = False) -> list[float]:
    """'-45,-30,0,30' -> [-45.0, -30.0, 0.0, 30.0] with a one-line error naming ``what``.

    ``angle``: the numbers are view angles in degrees (yaw, pitch), each strictly between -90
    and 90: a face is a relief seen from the front, and at 90 or beyond it shows its edge or
    its back (a typo such as 200 for 20 would otherwise render a blank)."""
    from digan.errors import DiganError

    import math

    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError as e:
        raise DiganError(f"bad {what} list {text!r}: write comma-separated numbers, e.g. -30,0,30") from e
    if not all(math.isfinite(v) for v in values):
        raise DiganError(f"bad {what} list {text!r}: every number must be finite (no nan or inf), e.g. -30,0,30")
    if angle and any(abs(v) >= 90.0 for v in values):
        raise DiganError(f"bad {what} list {text!r}: view angles must lie strictly between -90 and 90 degrees "
                         "(a face seen edge-on or from behind shows nothing), e.g. -30,0,30")
    return values


def resolve_device_option(device: str | None) -> str | None:
    """``--device`` means the same in every command: ``auto`` (the default of the commands that
    run on one device) is CUDA when a GPU is visible, else the CPU; ``cpu``, ``cuda``, ``cuda:N``
    are used as given. None stays None (the library's own default, which is ``auto`` too)."""
    if device is None:
        return device
    from digan.utils.dist import check_device

    check_device(device)  # one error line for 'gpu', 'cuda:x', or cuda without a GPU
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def write_command_info(out: Path, kind: str, config: dict[str, Any], seeds: dict[str, Any] | None = None,
                       weights: dict[str, Any] | None = None) -> None:
    """``OUT/config.json`` (the command's settings) and ``OUT/run.json`` (provenance: versions,
    git, device, seeds, weight hashes) beside a command's outputs, written atomically."""
    import json

    from digan.utils.io import write_text
    from digan.utils.provenance import write_run_info

    out = Path(out)
    write_text(out / "config.json", json.dumps(config, indent=2, default=str) + "\n")
    write_run_info(out / "run.json", kind, config=config, seeds=seeds or {}, weights={k: v for k, v in (weights or {}).items() if v})


def echo_kv(title: str, items: dict[str, Any]) -> None:
    """A key/value summary: a two-column table when it fits the terminal, else ``key: value``
    lines that the terminal may wrap but that are never broken inside a value (paths stay
    copy-pasteable)."""
    print_table(title, ["", ""], [[str(k), str(v)] for k, v in items.items()], justify=["left", "left"], show_header=False)


def print_table(title: str | None, columns: list[str], rows: list[list[Any]], justify: list[str] | None = None,
                show_header: bool = True, console: Any = None) -> None:
    """Print a table that never splits a number, unit or name: a rich table when its natural
    width fits the console (80 columns included), otherwise one block per row, ``first column``
    then ``header value`` pairs joined by `` · `` and wrapped only between pairs."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from digan.utils.progress import console as default_console

    from rich.measure import Measurement

    con = console or default_console
    cells = [[str(c) for c in r] for r in rows]
    t = Table(title=title and escape(title), show_header=show_header, box=box.SIMPLE_HEAD if show_header else box.SIMPLE,
              pad_edge=False, show_edge=False, collapse_padding=True)
    for j, h in enumerate(columns):
        t.add_column(Text(h), justify=(justify[j] if justify else ("left" if j == 0 else "right")), no_wrap=True)
    for r in cells:
        t.add_row(*[Text(c) for c in r])
    if Measurement.get(con, con.options.update(max_width=100_000), t).maximum <= con.width:
        con.print(t)
        return
    if title:
        con.print(Text(title, style="bold"), soft_wrap=True)
    for r in cells:
        if show_header:
            pairs = [f"{h} {c}" if h else c for h, c in zip(columns[1:], r[1:]) if c not in ("", "-")]
        else:
            pairs = r[1:]
        joiner = " · " if show_header else ": "
        lines, cur = [], "  " + r[0]
        for k, pair in enumerate(pairs):
            piece = (joiner if k == 0 else " · ") + pair
            if k > 0 and len(cur) + len(piece) > con.width:
                lines.append(cur)
                cur = "    " + pair
            else:
                cur += piece
        lines.append(cur)
        for line in lines:
            con.print(Text(line), soft_wrap=True)
