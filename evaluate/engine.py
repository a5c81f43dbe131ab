"""The benchmark engine behind ``digan-bench run``: plan, resume, sharding, records, summary.

:func:`run_benchmark` evaluates every requested metric on every requested method and returns the
:class:`~evaluate.records.Record` list of the plan. For each (method, variant, metric) it

1. builds the method once (``evaluate.methods.create_method``) and moves it to the device;
2. computes a **config hash** over everything that can change the numbers: the metric's protocol
   (``metric.config(ctx)``), the run context (n_faces, seed, yaws, pitches, data and model paths),
   the method (spec, ``method.info()``) and the hashes of its weights. Batch size and device are
   not part of it (they do not change the numbers), except for metrics that put them in their own
   ``config`` (speed does);
3. **resume**: when ``RESULTS/records/<method>/<metric>.json`` exists, holds no error record and
   carries the same hash, the work is skipped and the stored records are reused; a changed hash
   reruns it; ``force`` reruns everything;
4. asks ``metric.applicable`` first: a reason becomes one ``"n/a"`` record (``reason`` filled);
5. runs ``metric.compute`` under a progress bar (one per method and metric); a
   :class:`~digan.errors.DiganError` becomes an ``"error"`` record with its message and the run
   goes on with the rest (the exit status is non-zero at the end, see :func:`has_errors`);
   programming errors propagate;
6. fills provenance into every record (method label/variant, seeds, merged config with the hash,
   package versions, weight hashes, timestamp) and writes the metric's records atomically, so a
   crash never leaves half-written results. An error never replaces an earlier successful
   result file: the old file is kept and the error is only reported.

At the end it writes ``run.json`` (provenance), ``plan.json`` (what was run, skipped or failed),
rebuilds ``records.jsonl`` / ``records.csv`` and prints a rich summary table (method x metric,
the ``overall`` values, ``n/a`` shown as n/a), also saved as ``summary.md``.

**torchrun**: every rank builds the methods and runs every metric on its shard of the faces
(``ctx.shard``); per-face results are gathered (``ctx.gather``) so all ranks see the same numbers;
only rank 0 decides resume (its decision is broadcast), writes files and prints.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch
from rich.progress import Progress

from digan.config import config_hash, to_dict
from digan.errors import DiganError, InputsError
from digan.utils import dist
from digan.utils.io import refuse_other_outputs, write_json, write_text
from digan.utils.progress import console, progress
from digan.utils.provenance import package_versions, weights_hashes, write_run_info
from evaluate.methods import Method, available_methods, create_method, parse_method_spec
from evaluate.metrics.base import EvalContext, Metric, available_metrics, metric_class
from evaluate.records import (
    VALUED,
    Record,
    method_key,
    read_records,
    rebuild_flat_views,
    record_path,
    write_records,
)

__all__ = [
    "RunConfig",
    "PlanItem",
    "run_benchmark",
    "has_errors",
    "method_label",
    "summary_table",
    "summary_markdown",
    "apply_run_overrides",
    "apply_record_floors",
]

DEFAULT_METRICS = ["fid", "kid", "identity", "pose", "side", "mad", "speed"]


@dataclass
class RunConfig:
    """Everything ``digan-bench run`` needs; saved in ``run.json`` and ``plan.json``.

    Attributes
    ----------
    methods: method specs ``name[@variant][:arg]`` (``digan``, ``digan@no_flip``, ``teacher:ckpt.pt``).
    metrics: metric names (see ``digan-bench run --help`` for the registered ones).
    n_faces: faces per method and metric (FID: paper numbers use 50,000; FID depends on it).
    seed: latent seed; face ``i`` of a seed is the same in every run, shard and resume.
    batch_size: faces rendered per batch (does not change the numbers except speed).
    device: ``auto`` (CUDA when present, else CPU; ``cuda:LOCAL_RANK`` under torchrun), ``cpu``, ``cuda``.
    yaws, pitches: degrees for pose-dependent metrics (identity, pose).
    data: ``{name: folder}`` data sets (FID reference images, the synthetic ground-truth set ``synth``).
    models: ``{role: file}`` model files (``detector``, ``recognizer``, ``inception``).
    out: results folder.
    cache_dir: reusable statistics (FID reference features), shared between runs.
    force: rerun everything, even work whose records and config hash already exist.
    method_options: ``{method name: {option: value}}`` passed to the method factory
        (e.g. ``{"teacher": {"truncation": 0.7}}``).
    metric_options: ``{metric name: {option: value}}`` passed to the metric's constructor and
        visible as ``ctx.options`` (e.g. ``{"fid": {"dataset": "ffhq"}}``).
    preset: name of the preset this config came from (informational).
    min_detection_rate: identity/pose numbers computed from fewer detected views than this
        fraction (``stats.detection_rate``) get status ``warn``: too few detections to be a result.
    min_turn: identity numbers whose rotated views turned less than this fraction of the asked
        yaw from the frontal view (``stats.turn``, landmark yaw) get status ``warn``: a face that
        hardly turns keeps its identity, which is not identity across poses (0 turns it off).
    """

    methods: list[str] = field(default_factory=lambda: ["digan"])
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    n_faces: int = 1000
    seed: int = 0
    batch_size: int = 16
    device: str = "auto"
    yaws: tuple[float, ...] = (-45.0, -30.0, -15.0, 15.0, 30.0, 45.0)
    pitches: tuple[float, ...] = (0.0,)
    data: dict[str, str] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    out: str = "results"
    cache_dir: str = "~/.cache/digan-bench"
    force: bool = False
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    metric_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    preset: str = ""
    min_detection_rate: float = 0.5
    min_turn: float = 0.5


#: RunConfig fields that do not change which numbers a results folder holds (not compared when
#: a second run goes into the same folder, see :func:`check_same_run`); the detection floor only
#: sets statuses, which are re-derived from the stored stats on resume
_RUN_IDENTITY_IGNORED = ("out", "force", "device", "batch_size", "cache_dir", "preset", "min_detection_rate",
                         "min_turn")


@dataclass
class PlanItem:
    """One (method, variant, metric) unit of work and what happened to it."""

    spec: str
    method: str
    variant: str
    metric: str
    action: str = "pending"  # run | skip (resume) | rerun (config changed) | n/a | error | force
    config_hash: str = ""
    records_file: str = ""
    message: str = ""


_OPEN_MAPPINGS = ("method_options", "metric_options", "data", "models")


def apply_run_overrides(cfg: RunConfig, overrides: list[str] | tuple[str, ...] | None) -> RunConfig:
    """``--set key=value`` for a RunConfig. Besides the plain keys (``n_faces=50``), the open
    mappings accept new entries without restating the others:
    ``metric_options.fid.extractor=inception``, ``method_options.teacher.truncation=0.7``,
    ``data.ffhq=/data/ffhq256``, ``models.inception=/models/inception-2015-12-05.pt``.
    Values are parsed as YAML; everything is validated by :func:`digan.config.from_dict`.
    """
    import yaml

    from digan.config import apply_overrides, from_dict

    plain: list[str] = []
    d = to_dict(cfg)
    for item in overrides or []:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if sep and parts[0] in _OPEN_MAPPINGS and len(parts) > 1:
            depth = 3 if parts[0].endswith("_options") else 2
            if len(parts) != depth:
                example = f"{parts[0]}.NAME.OPTION=VALUE" if depth == 3 else f"{parts[0]}.NAME=PATH"
                raise DiganError(f"bad override {item!r}: write it as {example}")
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError:
                value = text
            node = d[parts[0]]
            if depth == 3:
                node = node.setdefault(parts[1], {})
                if not isinstance(node, dict):
                    raise DiganError(f"bad override {item!r}: {parts[0]}.{parts[1]} is not a mapping")
            node[parts[-1]] = value if depth == 3 else text
        else:
            plain.append(item)
    return apply_overrides(from_dict(RunConfig, d), plain)


def method_label(spec: str) -> str:
    """The method name stored in records: ``name``, or ``name:ARG`` with a path argument
    shortened to its file stem (``teacher:/ckpt/ffhq256.pt`` -> ``teacher:ffhq256``)."""
    name, arg, _ = parse_method_spec(spec)
    if arg is None:
        return name
    a = arg.rstrip("/\\")
    if "/" in a or "\\" in a or a.endswith((".pt", ".pth", ".pkl", ".ckpt")):
        a = Path(a).stem or Path(a).name
    return f"{name}:{a}"


def has_errors(records: Iterable[Record]) -> bool:
    """True when any record of the run has status ``error`` (the CLI then exits non-zero)."""
    return any(r.status == "error" for r in records)


# --------------------------------------------------------------------------------------------
# validation


def _validate_names(cfg: RunConfig) -> None:
    if not cfg.methods:
        raise DiganError("no methods given; pass e.g. --methods digan,teacher")
    if not cfg.metrics:
        raise DiganError("no metrics given; pass e.g. --metrics fid,identity,pose")
    valid_methods = available_methods()
    for spec in cfg.methods:
        name, _, _ = parse_method_spec(spec)
        if name not in valid_methods:
            raise DiganError(f"unknown method '{name}'; choose from: {', '.join(valid_methods) or '(none registered)'}")
    valid_metrics = available_metrics()
    for m in cfg.metrics:
        if m not in valid_metrics:
            raise DiganError(f"unknown metric '{m}'; choose from: {', '.join(valid_metrics) or '(none registered)'}")
    seen: set[tuple[str, str]] = set()
    for spec in cfg.methods:
        key = (method_label(spec), parse_method_spec(spec)[2])
        if key in seen:
            raise DiganError(f"method '{spec}' is listed twice; list each method once")
        seen.add(key)
    if len(set(cfg.metrics)) != len(cfg.metrics):
        raise DiganError("a metric is listed twice in --metrics; list each metric once")
    if cfg.n_faces < 1:
        raise DiganError(f"--n-faces must be at least 1, got {cfg.n_faces}")
    if cfg.batch_size < 1:
        raise DiganError(f"--batch-size must be at least 1, got {cfg.batch_size}")
    unknown_m = sorted(set(cfg.metric_options) - set(valid_metrics))
    if unknown_m:
        raise DiganError(f"metric_options names unknown metric '{unknown_m[0]}'; choose from: {', '.join(valid_metrics)}")


def _make_metric(name: str, options: dict[str, Any]) -> Metric:
    """Build metric ``name``; its options go to the constructor when it accepts them."""
    cls = metric_class(name)
    if not options:
        return cls()
    params = inspect.signature(cls.__init__).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    names = {k for k, p in params.items() if k != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    if accepts_any:
        return cls(**options)
    unknown = sorted(set(options) - names)
    if unknown and not names:
        # a metric without constructor options reads them from ctx.options
        return cls()
    if unknown:
        raise DiganError(
            f"metric '{name}' has no option '{unknown[0]}'; valid options: {', '.join(sorted(names))}"
        )
    return cls(**options)


# --------------------------------------------------------------------------------------------
# records


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _context_for_hash(ctx: EvalContext) -> dict[str, Any]:
    return {
        "n_faces": ctx.n_faces,
        "seed": ctx.seed,
        "yaws": list(ctx.yaws),
        "pitches": list(ctx.pitches),
        "data": dict(sorted(ctx.data.items())),
        "models": dict(sorted(ctx.models.items())),
    }


def _existing(path: Path) -> list[Record] | None:
    if not path.is_file():
        return None
    try:
        return read_records(path)
    except DiganError:
        return None  # damaged file: recompute (it is replaced atomically)


def _finish_records(
    records: list[Record],
    *,
    label: str,
    variant: str,
    metric: Metric,
    metric_name: str,
    ctx: EvalContext,
    method_info: dict[str, Any],
    weights: dict[str, str],
    chash: str,
    versions: dict[str, Any],
) -> list[Record]:
    base_cfg = _safe_metric_config(metric, ctx)
    created = _now()
    out = []
    for r in records:
        r.method = label
        r.variant = variant
        if not r.metric:
            r.metric = metric_name
        if r.higher_is_better is None:
            r.higher_is_better = metric.higher_is_better
        if not r.unit and r.metric == metric_name:
            r.unit = metric.unit
        r.seeds = {"latents": ctx.seed, **(r.seeds or {})}
        r.config = {
            **base_cfg,
            **(r.config or {}),
            "metric_class": metric_name,
            "method": method_info,
            "context": _context_for_hash(ctx),
            "config_hash": chash,
        }
        r.versions = versions
        r.weights = {**weights, **(r.weights or {})}
        r.created = r.created or created
        out.append(r)
    return out


def _safe_metric_config(metric: Metric, ctx: EvalContext) -> dict[str, Any]:
    try:
        return dict(metric.config(ctx))
    except DiganError:
        return {"n_faces": ctx.n_faces, "seed": ctx.seed}


def _status_record(label: str, variant: str, metric_name: str, status: str, reason: str, metric: Metric | None) -> Record:
    return Record(
        method=label,
        variant=variant,
        metric=metric_name,
        setting="overall",
        status=status,
        reason=reason,
        unit=metric.unit if metric else "",
        higher_is_better=metric.higher_is_better if metric else None,
    )


# --------------------------------------------------------------------------------------------
# checks before the slow work


def _base_context(cfg: RunConfig, out: Path, device: torch.device) -> EvalContext:
    return EvalContext(
        out_dir=out,
        n_faces=cfg.n_faces,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        device=str(device),
        yaws=tuple(float(y) for y in cfg.yaws),
        pitches=tuple(float(p) for p in cfg.pitches),
        data={k: str(Path(v).expanduser()) for k, v in cfg.data.items()},
        models={k: str(Path(v).expanduser()) for k, v in cfg.models.items()},
        cache_dir=Path(cfg.cache_dir).expanduser(),
    )


def check_inputs(cfg: RunConfig, ctx: EvalContext) -> tuple[dict[str, Method], list[str]]:
    """Build every method and ask every metric for its inputs, before any slow work.

    Returns the built methods (``{spec: Method}``, reused by the run) and the problems: one line
    per missing or unusable checkpoint, data set or model file, identical lines once. Every
    ``data`` path must exist, even one that no metric of the run reads. A metric's
    inputs are only required when some method can be scored by it (a 2D GAN's SIDE is n/a and
    needs no ground truth); when a method could not be built its metrics' inputs count.
    """
    problems: list[str] = []
    built: dict[str, Method] = {}
    broken = False
    for spec in cfg.methods:
        name, _, _ = parse_method_spec(spec)
        try:
            built[spec] = create_method(spec, **dict(cfg.method_options.get(name, {})))
        except DiganError as e:
            broken = True
            msg = str(e)
            problems.append(msg if msg.startswith((name, spec)) else f"{spec}: {msg}")
    for m in cfg.metrics:
        opts = dict(cfg.metric_options.get(m, {}))
        metric = _make_metric(m, opts)
        mctx = dataclasses.replace(ctx, options=opts)
        needed = broken or any(metric.applicable(meth, mctx) is None for meth in built.values())
        if needed:
            problems.extend(metric.check_inputs(mctx))
    # every data set given must exist, whichever metrics read it: a typo in a path that no metric
    # of this run reads would otherwise be recorded in run.json/plan.json as if it had been used
    for name, path in sorted(ctx.data.items()):
        if not Path(path).exists() and not any(path in p for p in problems):
            problems.append(f"data set '{name}' {path} not found; fix --data {name}=PATH (an existing folder) "
                            f"or leave it out")
    return built, list(dict.fromkeys(problems))


def run_identity(cfg: RunConfig) -> dict[str, Any]:
    """The settings of ``cfg`` that decide which numbers a results folder holds."""
    d = to_dict(cfg)
    return {k: v for k, v in d.items() if k not in _RUN_IDENTITY_IGNORED}


def _describe_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    parts = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a != b:
            show = (lambda v: ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v))
            text = f"{k} {show(a)} -> {show(b)}"
            parts.append(text if len(text) <= 60 else f"{k} differs")
    return "; ".join(parts[:3]) + ("; ..." if len(parts) > 3 else "")


def check_same_run(out: Path, cfg: RunConfig) -> list[Path]:
    """Refuse to mix two runs in one results folder.

    When ``out`` holds records of a run with other settings (methods, metrics, faces, seed, views,
    data, models, options: :func:`run_identity`), that is an error naming the difference, unless
    ``cfg.force``: then the record files that the new plan does not produce are returned, to be
    removed so that ``records.jsonl``, ``summary.md`` and reports hold this run only.

    A ``plan.json`` that cannot be read (binary, not JSON, not a plan) is no evidence of the same
    run: its records may come from any settings, so it is refused like another run's (``--force``
    replaces them), never taken for an empty folder.
    """
    plan_file = out / "plan.json"
    if not (out / "records").is_dir() or not (plan_file.exists() or plan_file.is_symlink()):
        return []
    keep = {record_path(out, method_label(s), m, parse_method_spec(s)[2]).resolve() for s in cfg.methods for m in cfg.metrics}
    stale = lambda: [f for f in sorted((out / "records").glob("*/*.json")) if f.resolve() not in keep]  # noqa: E731
    try:
        old = {k: v for k, v in from_dict_loose(_read_plan_config(plan_file)).items() if k not in _RUN_IDENTITY_IGNORED}
    except (OSError, ValueError, TypeError, DiganError) as e:
        if cfg.force:
            return stale()
        why = (e.strerror or type(e).__name__) if isinstance(e, OSError) else str(e).rstrip(".")
        raise DiganError(
            f"{plan_file} is damaged ({why}), so the settings of the records in {out} are unknown and this run "
            f"would mix with them; pass --force to replace them, or move {out} away / choose another --out"
        ) from None
    new = run_identity(cfg)
    if old == new:
        return []
    if not cfg.force:
        raise DiganError(
            f"{out} holds the results of a run with other settings ({_describe_change(old, new)}); "
            f"pass --force to replace them, or choose another --out"
        )
    return stale()


def _read_plan_config(plan_file: Path) -> dict[str, Any]:
    """The ``config`` object of a ``plan.json``; ValueError (one short reason) when the file is
    not a readable plan."""
    import json

    if not plan_file.is_file():
        raise ValueError("not a regular file")
    try:
        text = plan_file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not a text file: byte {e.start} is not UTF-8") from None
    try:
        plan = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON: line {e.lineno}") from None
    if not isinstance(plan, dict) or not isinstance(plan.get("config"), dict) or not plan["config"]:
        raise ValueError("not a plan: no 'config' object")
    return plan["config"]


def from_dict_loose(d: dict[str, Any]) -> dict[str, Any]:
    """A stored RunConfig dict normalised like :func:`to_dict` (tuples as lists, defaults filled)."""
    from digan.config import from_dict

    known = {f.name for f in dataclasses.fields(RunConfig)}
    return to_dict(from_dict(RunConfig, {k: v for k, v in d.items() if k in known}))


def _own_reason(reason: str) -> bool:
    """Whether a warn reason is one :func:`apply_record_floors` wrote (and may rewrite)."""
    return (reason.startswith("only ") and "detected face" in reason) or reason.startswith("renders turn only")


def apply_record_floors(records: list[Record], min_detection_rate: float, min_turn: float = 0.0) -> bool:
    """Statuses from two floors, re-derived from the stored stats (so a resumed run follows a
    changed floor):

    * records that count missed detections (identity, pose) get ``stats.detection_rate``
      (detected / (detected + missed) views) and status ``warn`` when it is below
      ``min_detection_rate``: a number from a handful of detected faces is not a result;
    * records with ``stats.turn`` (identity: how far the rotated views turned from the frontal
      ones, as a fraction of the asked yaw) get ``warn`` when it is below ``min_turn``: a render
      that hardly turns keeps its identity for free, so the number is not identity across poses.

    Other records are left alone. Returns True when a status changed."""
    changed = False
    for r in records:
        st = r.stats if isinstance(r.stats, dict) else {}
        if r.status not in ("ok", "warn"):
            continue
        reasons: list[str] = []
        measured = False
        if "missed" in st and "n" in st:
            try:
                n, missed = int(st["n"]), int(st["missed"])
            except (TypeError, ValueError):
                n = missed = 0
            if n + missed > 0:
                measured = True
                rate = n / (n + missed)
                st["detection_rate"] = rate
                if rate < min_detection_rate:
                    reasons.append(f"only {n} of {n + missed} views had a detected face ({100 * rate:.0f}% < "
                                   f"{100 * min_detection_rate:.0f}%, set by min_detection_rate): too few to be a result")
        turn = st.get("turn")
        if isinstance(turn, (int, float)) and not isinstance(turn, bool) and math.isfinite(turn):
            measured = True
            if turn < min_turn:
                reasons.append(f"renders turn only {turn:.2f}x the asked yaw (< {min_turn:g}, set by min_turn): "
                               "a face that hardly turns keeps its identity, so this is not identity across poses")
        if not measured:
            continue
        if r.status == "warn" and not _own_reason(r.reason):
            continue  # a metric's own warning stays
        status = "warn" if reasons else "ok"
        if status != r.status:
            changed = True
        r.status = status
        if reasons:
            r.reason = "; ".join(reasons)
        elif _own_reason(r.reason):
            r.reason = ""
    return changed


# --------------------------------------------------------------------------------------------
# main loop


def run_benchmark(cfg: RunConfig, *, echo: bool = True) -> list[Record]:
    """Run the plan of ``cfg`` (see the module docstring) and return its records.

    Records of skipped (resumed) work are read back from their files, so the returned list is
    always the complete result of the plan. ``echo`` prints the summary table on rank 0.
    """
    _validate_names(cfg)
    distributed = dist.init_distributed()
    main = dist.is_main()
    device = dist.device_for_rank(cfg.device, "--device")
    out = Path(cfg.out).expanduser()
    base_ctx = _base_context(cfg, out, device)
    # every input of every method and metric is checked before the slow work (one line each)
    built, problems = check_inputs(cfg, base_ctx)
    if problems:
        raise InputsError(problems)
    # a training run, report or sample folder is never written into (its run.json would be lost)
    refuse_other_outputs(out, ("run",), "benchmark results folder", force_replaces=False)
    stale = check_same_run(out, cfg)  # a run with other settings is refused without --force
    if main:
        out.mkdir(parents=True, exist_ok=True)
        for f in stale:  # --force over another run: its records must not mix with this one's
            f.unlink(missing_ok=True)

    plan = [
        PlanItem(spec=s, method=method_label(s), variant=parse_method_spec(s)[2], metric=m)
        for s in cfg.methods
        for m in cfg.metrics
    ]
    if main:
        _write_plan(out, cfg, plan, device)

    versions = package_versions()
    all_records: list[Record] = []
    used_weights: dict[str, Any] = {}

    # one bar per (method, metric); ranks other than 0 stay silent
    with (progress() if main else Progress(disable=True)) as bar:
        bar_enabled = main

        for spec in cfg.methods:
            label = method_label(spec)
            name, _, variant = parse_method_spec(spec)
            items = [p for p in plan if p.spec == spec]
            # ---- build the method; a user-facing failure fails all its metrics
            try:
                method = built.pop(spec)
                method = method.to(device) or method
                info = method.info()
                weights_used = method.weights()
                whash = weights_hashes(weights_used)
            except DiganError as e:
                for it in items:
                    it.action, it.message = "error", f"method could not be built: {e}"
                    rec = _status_record(label, variant, it.metric, "error", f"method {spec} could not be built: {e}", None)
                    rec.created = _now()
                    rec.versions = versions
                    all_records.append(rec)
                    if main:
                        _write_error(out, rec, it)
                continue
            for k, v in weights_used.items():
                used_weights[f"{method_key(label, variant)}/{k}"] = v

            for it in items:
                opts = dict(cfg.metric_options.get(it.metric, {}))
                metric = _make_metric(it.metric, opts)
                ctx = dataclasses.replace(base_ctx, options=opts)
                chash = config_hash(
                    {
                        "metric": it.metric,
                        "metric_config": _safe_metric_config(metric, ctx),
                        "metric_options": opts,
                        "context": _context_for_hash(ctx),
                        "method": {"spec": spec, "info": info, "weights": whash},
                    }
                )
                it.config_hash = chash
                rpath = record_path(out, label, it.metric, variant)
                it.records_file = str(rpath.relative_to(out))

                # ---- resume decision (rank 0 reads, everyone follows)
                decision: tuple[str, list[dict] | None] = ("run", None)
                if main:
                    old = _existing(rpath)
                    if old is not None and not cfg.force:
                        if all(r.config.get("config_hash") == chash for r in old) and not any(
                            r.status == "error" for r in old
                        ):
                            decision = ("skip", [r.to_dict() for r in old])
                        else:
                            decision = ("rerun", None)
                    elif old is not None:
                        decision = ("force", None)
                if distributed:
                    decision = dist.all_gather_objects(decision)[0]
                action, stored = decision
                if action == "skip":
                    it.action = "skip (resume)"
                    old_recs = [Record.from_dict(d) for d in stored or []]
                    if apply_record_floors(old_recs, cfg.min_detection_rate, cfg.min_turn) and main:
                        write_records(rpath, old_recs)  # a floor changed: statuses follow it
                    all_records.extend(old_recs)
                    continue
                it.action = {"run": "run", "rerun": "rerun (config changed)", "force": "rerun (--force)"}[action]

                # ---- applicability
                reason = metric.applicable(method, ctx)
                if reason is not None:
                    rec = _status_record(label, variant, it.metric, "n/a", reason, metric)
                    recs = _finish_records(
                        [rec], label=label, variant=variant, metric=metric, metric_name=it.metric, ctx=ctx,
                        method_info=info, weights=whash, chash=chash, versions=versions,
                    )
                    it.action, it.message = "n/a", reason
                    if main:
                        write_records(rpath, recs)
                    all_records.extend(recs)
                    continue

                # ---- compute under a progress bar
                total = max(1, int(metric.work_units(method, ctx)))
                task = bar.add_task(f"{label}{'' if variant == 'full' else '@' + variant} {it.metric}", total=total, info="")

                def _adv(k: int, _task=task) -> None:
                    if bar_enabled:
                        bar.advance(_task, k)

                ctx = dataclasses.replace(ctx, advance=_adv)
                try:
                    recs = metric.compute(method, ctx)
                except DiganError as e:
                    rec = _status_record(label, variant, it.metric, "error", str(e), metric)
                    recs = _finish_records(
                        [rec], label=label, variant=variant, metric=metric, metric_name=it.metric, ctx=ctx,
                        method_info=info, weights=whash, chash=chash, versions=versions,
                    )
                    it.action, it.message = "error", str(e)
                    all_records.extend(recs)
                    if main:
                        _write_error(out, recs[0], it)
                    bar.update(task, completed=total, info="[red]error")
                    continue
                if not isinstance(recs, list) or not all(isinstance(r, Record) for r in recs) or not recs:
                    raise TypeError(f"metric {it.metric}.compute must return a non-empty list of Record")
                recs = _finish_records(
                    recs, label=label, variant=variant, metric=metric, metric_name=it.metric, ctx=ctx,
                    method_info=info, weights=whash, chash=chash, versions=versions,
                )
                apply_record_floors(recs, cfg.min_detection_rate, cfg.min_turn)
                if main:
                    write_records(rpath, recs)
                all_records.extend(recs)
                bar.update(task, completed=total)
            del method

    if main:
        _write_plan(out, cfg, plan, device)
        write_run_info(
            out / "run.json",
            "run",
            config=cfg,
            seeds={"latents": cfg.seed},
            weights=used_weights,
            extra={"device_used": str(device), "world_size": dist.world_size(), "plan": [dataclasses.asdict(p) for p in plan]},
        )
        rebuild_flat_views(out)
        md = summary_markdown(all_records, cfg.metrics)
        write_text(out / "summary.md", md)
        if echo:
            console.print(summary_table(all_records, cfg.metrics))
            n_err = sum(1 for p in plan if p.action == "error")
            skipped = sum(1 for p in plan if p.action.startswith("skip"))
            console.print(
                f"results in {out} ({len(plan)} method x metric, {skipped} resumed, {n_err} failed)", soft_wrap=True
            )
    dist.barrier()
    return all_records


def _write_error(out: Path, rec: Record, it: PlanItem) -> None:
    """Write an error record unless an earlier successful result exists (never destroy results)."""
    path = record_path(out, rec.method, rec.metric, rec.variant)
    it.records_file = str(path.relative_to(out))
    old = _existing(path)
    if old is not None and any(r.status in VALUED for r in old):
        it.message += " (earlier results kept)"
        return
    write_records(path, [rec])


def _write_plan(out: Path, cfg: RunConfig, plan: list[PlanItem], device: torch.device) -> None:
    write_json(
        out / "plan.json",
        {
            "config": to_dict(cfg),
            "device": str(device),
            "world_size": dist.world_size(),
            "items": [dataclasses.asdict(p) for p in plan],
        },
    )


# --------------------------------------------------------------------------------------------
# summary


def _fmt(v: float) -> str:
    a = abs(v)
    if a != 0 and (a < 1e-3 or a >= 1e5):
        return f"{v:.3e}"
    return f"{v:.4g}"


def _summary_grid(records: list[Record], metrics: list[str]) -> tuple[list[str], list[str], dict[tuple[str, str], str], list[str]]:
    """Rows (method labels), column headers (record metric names with their unit), cells and
    footnotes (n/a reasons, errors, warnings, non-Inception features)."""
    rows: list[str] = []
    cols: list[str] = []
    units: dict[str, str] = {}
    cells: dict[tuple[str, str], str] = {}
    notes: list[str] = []
    # columns follow the plan's metric order; a metric class may emit several record metrics
    order = {m: i for i, m in enumerate(metrics)}
    overall = [r for r in records if r.setting == "overall"]
    overall.sort(key=lambda r: (order.get(r.config.get("metric_class", r.metric), len(order)),))
    for r in overall:
        if r.status in VALUED and r.unit:
            units.setdefault(r.metric, r.unit)
    for r in overall:
        row = r.method if r.variant in ("", "full") else f"{r.method}@{r.variant}"
        if row not in rows:
            rows.append(row)
        col = r.metric
        if col not in cols:
            cols.append(col)
        if r.status in VALUED:
            text = _fmt(r.value)  # type: ignore[arg-type]
            if r.unit and r.unit != units.get(col):
                text += f" {r.unit}"
            if r.dataset and ("not Inception" in r.dataset):
                text += " *"
                note = f"* {r.dataset}: not comparable with Inception FID/KID"
                if note not in notes:
                    notes.append(note)
            if r.status == "warn":
                text += " !"
                notes.append(f"{row} / {col}: ! {r.reason}")
        elif r.status == "n/a":
            text = "n/a"
            notes.append(f"{row} / {col}: n/a ({r.reason})")
        else:
            text = "error"
            notes.append(f"{row} / {col}: error ({r.reason})")
        cells[(row, col)] = text
    headers = [f"{c} [{units[c]}]" if c in units else c for c in cols]
    cells = {(r, headers[cols.index(c)]): v for (r, c), v in cells.items()}
    notes.sort(key=lambda n: n.startswith("*"))
    return rows, headers, cells, notes


class _SummaryView:
    """The run summary for a terminal of any width (80 columns included) without splitting a
    number, unit or name: one row per metric, one column per method; methods that do not fit
    the width go to a further table with the same rows. Notes follow, word-wrapped."""

    def __init__(self, records: list[Record], metrics: list[str]):
        self.rows, self.cols, self.cells, self.notes = _summary_grid(records, metrics)

    def tables(self, width: int) -> list:
        from rich import box
        from rich.table import Table
        from rich.text import Text

        methods, metrics = self.rows, self.cols
        if not methods:
            return []
        first = max([len("metric")] + [len(m) for m in metrics]) + 3
        widths = [max([len(m)] + [len(self.cells.get((m, c), "-")) for c in metrics]) + 3 for m in methods]
        chunks: list[list[int]] = []
        cur: list[int] = []
        used = first + 1
        for i, w in enumerate(widths):
            if cur and used + w > width:
                chunks.append(cur)
                cur, used = [], first + 1
            cur.append(i)
            used += w
        chunks.append(cur)
        out = []
        for k, idx in enumerate(chunks):
            title = "digan-bench results (overall)" if k == 0 else "(continued)"
            t = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
            t.add_column("metric", style="bold", no_wrap=True)
            for i in idx:  # Text, not markup: "[cos]" or a method name must print as written
                t.add_column(Text(methods[i]), justify="right", no_wrap=True)
            for c in metrics:
                t.add_row(Text(c), *[Text(self.cells.get((methods[i], c), "-")) for i in idx])
            out.append(t)
        return out

    def __rich_console__(self, console, options):
        from rich.text import Text

        yield from self.tables(options.max_width)
        for n in self.notes:
            yield Text(n)


def summary_table(records: list[Record], metrics: list[str] | None = None):
    """A rich renderable of the ``overall`` values: metric rows x method columns, split into
    several tables when the methods do not fit the console width (no value is ever wrapped)."""
    return _SummaryView(records, metrics or [])


def summary_markdown(records: list[Record], metrics: list[str] | None = None) -> str:
    """The summary table as GitHub markdown, with n/a reasons and errors as footnotes."""
    rows, cols, cells, notes = _summary_grid(records, metrics or [])
    lines = ["| method | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for r in rows:
        lines.append(f"| {r} | " + " | ".join(cells.get((r, c), "-").replace("|", "/") for c in cols) + " |")
    if notes:
        lines.append("")
        lines.extend(f"- {n}" for n in notes)
    return "\n".join(lines) + "\n"
