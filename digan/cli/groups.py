"""Command groups shared by several areas: each area adds its sub-commands from its own module.

* ``digan-bench data ...``  data sets (``synth``: synthetic heads; ``faces``: real-photo folders)
* ``digan-bench bench ...`` benchmarks that print speed and memory figures
"""

from __future__ import annotations

import typer

from digan.cli import app

data_app = typer.Typer(help="Build data sets: synthetic ground-truth heads, aligned real-photo folders.", no_args_is_help=True)
bench_app = typer.Typer(help="Speed and memory benchmarks (print figures and write JSON).", no_args_is_help=True)

app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")
