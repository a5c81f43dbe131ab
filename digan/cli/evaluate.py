"""``digan-bench run``: benchmark methods on metrics and write result records (thin CLI).

Everything happens in :func:`evaluate.engine.run_benchmark`; this module only turns options
into an :class:`evaluate.engine.RunConfig`. Precedence: defaults (or ``--preset``) <- ``--config``
file <- explicit options <- ``--set key=value``. Exit status: 0 when every record is ``ok`` or
``n/a``, 1 when a metric failed (its ``error`` record says why), 2 for a usage error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from digan.cli import app
from digan.cli.common import ConfigOption, parse_float_list
from digan.errors import DiganError

_MODEL_ROLES = ("detector", "recognizer", "inception")


def listing_lines(table: dict[str, str], width: int = 80, name_width: int = 14) -> list[str]:
    """``run --list`` rows: name, then its description wrapped at spaces under the description
    column (a hanging indent), so that no line is wider than ``width`` unless one word is."""
    import textwrap

    lines: list[str] = []
    indent = " " * (name_width + 3)
    for k, v in table.items():
        head = f"  {k:{name_width}s} "
        lines += textwrap.wrap(" ".join(str(v).split()), width=max(width, len(head) + 20), initial_indent=head, subsequent_indent=indent,
                               break_long_words=False, break_on_hyphens=False) or [head.rstrip()]
    return lines


def _parse_pairs(items: Optional[list[str]], what: str, example: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise DiganError(f"bad {what} {item!r}: write it as NAME=PATH, e.g. {example}")
        out[key.strip()] = value.strip()
    return out


def _split_names(text: str, what: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise DiganError(f"--{what} is empty; give comma-separated names")
    return names


#: methods with a bundled tiny model (``digan``, ``liftgan``, ``teacher``): with these only and no
#: data or model option, ``run`` uses the demo's data (:func:`evaluate.presets.bundled_config`)
_BUNDLED_METHODS = ("digan", "liftgan", "teacher")


def _bundled(methods: Optional[str]) -> bool:
    from evaluate.engine import RunConfig
    from evaluate.methods import parse_method_spec

    names = _split_names(methods, "methods") if methods is not None else list(RunConfig().methods)
    return all(parse_method_spec(n)[0] in _BUNDLED_METHODS for n in names)


@app.command("run")
def run_cmd(
    methods: Optional[str] = typer.Option(None, "--methods", "-m", help="Comma-separated method specs: name[@variant][:arg], e.g. digan,teacher,liftgan."),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="Comma-separated metrics, e.g. fid,kid,identity,pose,side,mad,speed."),
    n_faces: Optional[int] = typer.Option(None, "--n-faces", "-n", help="Faces per method and metric (paper FID: 50000)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Latent seed (face i is the same in every run)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Faces per batch."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N."),
    yaws: Optional[str] = typer.Option(None, "--yaws", help="Yaw angles in degrees, e.g. -45,-30,-15,15,30,45."),
    pitches: Optional[str] = typer.Option(None, "--pitches", help="Pitch angles in degrees, e.g. 0 or -15,0,15."),
    data: Optional[list[str]] = typer.Option(None, "--data", help="Data set NAME=PATH (repeatable), e.g. ffhq=data/ffhq256, synth=data/synth."),
    model: Optional[list[str]] = typer.Option(None, "--model", help="Model file ROLE=PATH (repeatable): detector, recognizer, inception."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Results folder (default results/)."),
    force: bool = typer.Option(False, "--force", help="Recompute everything, even finished work with the same config; replace another run's results in --out."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Start from a named preset: demo (tiny bundled models, synthetic data, CPU minutes)."),
    list_: bool = typer.Option(False, "--list", help="List the registered methods, metrics and presets, then exit."),
    config: Optional[Path] = ConfigOption,
    set_: Optional[list[str]] = typer.Option(
        None, "--set", "-s",
        help="Override a config value (repeatable): key=value, e.g. n_faces=50, metric_options.fid.extractor=inception, "
             "method_options.teacher.truncation=0.7.",
    ),
) -> None:
    """Run the benchmark plan and write one record per (method, metric, setting) to --out.

    Without --data, --model, --preset or --config, methods with a bundled model (digan, liftgan,
    teacher) run on the demo's synthetic faces and face models (one line says so). Every input of
    every method and metric is checked first; missing ones are listed, one line each (exit 2).
    Work already done with the same configuration is skipped (resume); a run with other settings
    into the same --out is refused unless --force replaces it. Records go to
    OUT/records/<method>/<metric>.json, OUT/records.jsonl, OUT/records.csv and OUT/summary.md.
    Under torchrun every process renders its share of the faces and rank 0 writes.
    """
    from digan.config import load_config
    from evaluate.engine import RunConfig, apply_run_overrides, has_errors, run_benchmark
    from evaluate.presets import available_presets, build_preset

    if list_:
        from evaluate.methods import available_methods
        from evaluate.metrics import available_metrics
        from digan.utils.progress import console

        for title, table in (("methods", available_methods()), ("metrics", available_metrics()), ("presets", available_presets())):
            console.print(f"[bold]{title}[/bold]")
            for line in listing_lines(table, width=console.width):
                console.print(line, soft_wrap=True, markup=False, highlight=False)
        return

    # a preset prepares its data in the cache folder: honour --set cache_dir=... already here
    cache = [s.split("=", 1)[1] for s in (set_ or []) if s.strip().startswith("cache_dir=")]
    cache_kw = {"cache_dir": cache[-1]} if cache else {}
    sets_inputs = any(s.split("=", 1)[0].strip().split(".")[0] in ("data", "models") for s in (set_ or []))
    if preset:
        cfg = build_preset(preset, **cache_kw)
    elif not (data or model or config is not None or sets_inputs) and _bundled(methods):
        # the README's main command as typed on a fresh machine: bundled models, demo data
        from digan.utils.progress import err_console
        from evaluate.presets import bundled_config

        names = _split_names(methods, "methods") if methods is not None else list(RunConfig().methods)
        err_console.print("no --data/--model: using the bundled models and demo data (as --preset demo)", soft_wrap=True)
        cfg = bundled_config(names, metrics=_split_names(metrics, "metrics") if metrics is not None else None, **cache_kw)
    else:
        cfg = RunConfig()
    if config is not None:
        # a config file overrides the keys it names (validated with one-line errors)
        import yaml

        from digan.config import from_dict, to_dict

        load_config(RunConfig, config)
        named = yaml.safe_load(Path(config).read_text()) or {}
        cfg = from_dict(RunConfig, {**to_dict(cfg), **named})
    if methods is not None:
        cfg.methods = _split_names(methods, "methods")
    if metrics is not None:
        cfg.metrics = _split_names(metrics, "metrics")
    if n_faces is not None:
        cfg.n_faces = n_faces
    if seed is not None:
        cfg.seed = seed
    if batch_size is not None:
        cfg.batch_size = batch_size
    if device is not None:
        cfg.device = device
    if yaws is not None:
        cfg.yaws = tuple(parse_float_list(yaws, "--yaws", angle=True))
    if pitches is not None:
        cfg.pitches = tuple(parse_float_list(pitches, "--pitches", angle=True))
    if data:
        cfg.data = {**cfg.data, **_parse_pairs(data, "--data", "ffhq=data/ffhq256")}
    if model:
        models = _parse_pairs(model, "--model", "inception=~/models/inception-2015-12-05.pt")
        for role in models:
            if role not in _MODEL_ROLES:
                raise DiganError(f"unknown model role '{role}' in --model; choose from: {', '.join(_MODEL_ROLES)}")
        cfg.models = {**cfg.models, **models}
    if out is not None:
        cfg.out = str(out)
    if force:
        cfg.force = True
    cfg = apply_run_overrides(cfg, set_)

    from digan.utils.io import claim_output

    with claim_output(Path(cfg.out).expanduser()):  # one writer per results folder; stale temporaries removed
        records = run_benchmark(cfg)
    if has_errors(records):
        from digan.utils.progress import err_console

        n = sum(1 for r in records if r.status == "error")
        err_console.print(f"error: {n} measurement(s) failed; see the error records in {cfg.out}/summary.md",
                          soft_wrap=True, markup=False, highlight=False)
        raise typer.Exit(1)


from digan.cli.groups import bench_app  # noqa: E402


@bench_app.command("speed")
def bench_speed_cmd(
    methods: str = typer.Option("teacher", "--methods", "-m", help="Comma-separated method specs."),
    batch_size: int = typer.Option(16, "--batch-size", help="Faces per batch."),
    batches: int = typer.Option(8, "--batches", help="Timed batches (all of them: no time limit here)."),
    warmup: int = typer.Option(2, "--warmup", help="Untimed warm-up batches."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N."),
    yaws: str = typer.Option("-30,30", "--yaws", help="Yaws for the multi-view figure (posable methods)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the records as JSON here."),
) -> None:
    """Print generation speed (faces/s) and peak memory of methods (the ``speed`` metric's protocol)."""
    from digan.cli.common import print_table
    from digan.utils.io import write_json
    from digan.utils.dist import device_for_rank
    from evaluate.engine import method_label
    from evaluate.methods import create_method, parse_method_spec
    from evaluate.metrics.base import EvalContext
    from evaluate.metrics.speed import Speed

    dev = device_for_rank(device, "--device")
    ctx = EvalContext(out_dir=Path("."), batch_size=batch_size, device=str(dev),
                      yaws=tuple(parse_float_list(yaws, "--yaws", angle=True)))
    metric = Speed(warmup=warmup, batches=batches, max_seconds=None)
    rows = []
    all_recs = []
    for spec in _split_names(methods, "methods"):
        m = create_method(spec)
        m = m.to(dev) or m
        recs = metric.compute(m, ctx)
        for r in recs:
            r.method, r.variant = method_label(spec), parse_method_spec(spec)[2]
        by = {(r.metric, r.setting): r for r in recs}
        mv = by.get(("speed", "stage=multiview"))
        rows.append([spec, f"{by[('speed', 'overall')].value:.1f}", f"{by[('memory', 'overall')].value:.1f}",
                     f"{mv.value:.1f}" if mv else "n/a (no pose)", by[("speed", "overall")].config["memory_method"]])
        all_recs.extend(recs)
    print_table(f"speed on {dev} ({ctx.batch_size} faces/batch, {batches} timed batches)",
                ["method", "faces/s", "peak MiB", "multi-view images/s", "memory measure"], rows)
    if out is not None:
        write_json(out, [r.to_dict() for r in all_recs])
