"""Result records: the one format shared by the benchmark engine, reports and regression checks.

One :class:`Record` per (method, variant, metric, setting). A metric run writes all of its
records for one method as a JSON list at ``RESULTS/records/<method_key>/<metric>.json`` (atomic;
its presence marks the work as done for resume), and the engine rebuilds the flat views
``RESULTS/records.jsonl`` and ``RESULTS/records.csv`` from those files.

A record whose metric cannot apply to a method (a 2D GAN has no pose control) has
``status="n/a"``, ``value=None`` and a ``reason``; reports show it as "n/a", never as a number.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from digan.errors import DiganError
from digan.utils.io import read_json, read_text, write_json, write_text

__all__ = [
    "Record",
    "method_key",
    "record_path",
    "write_records",
    "read_records",
    "load_records",
    "rebuild_flat_views",
    "CSV_FIELDS",
    "STATUSES",
    "VALUED",
]

STATUSES = ("ok", "warn", "n/a", "error")
#: statuses that carry a number (``warn``: a number with a caveat in ``reason``, e.g. too few detections)
VALUED = ("ok", "warn")


@dataclass
class Record:
    """One measured number (or the reason there is none).

    Attributes
    ----------
    method: registry name of the method, e.g. ``"digan"``, ``"liftgan"``, ``"samples:ffhq-sg2"``.
    metric: metric name, e.g. ``"fid"``, ``"kid"``, ``"identity"``, ``"pose_mae"``, ``"side"``.
    setting: what the number is conditioned on, as ``key=value`` pairs joined by ``,`` in a fixed
        order (``"yaw=30"``, ``"pitch=0,yaw=-45"``) or ``"overall"`` for the summary value.
    value: the number (None unless ``status`` is ``"ok"`` or ``"warn"``).
    status: ``"ok"``, ``"warn"`` (a number that is not a reliable result, e.g. computed from
        fewer detected faces than ``RunConfig.min_detection_rate``; ``reason`` says why),
        ``"n/a"`` (metric does not apply; see ``reason``) or ``"error"``.
    unit: e.g. ``"cos"``, ``"deg"``, ``"faces/s"``, ``"MiB"``, ``""``.
    higher_is_better: direction used by reports (best marking) and ``check``.
    stats: spread and counts: ``std``, ``n``, ``ci95``, ``missed`` (faces not detected), ...
    variant: ablation variant of the method (``"full"``, ``"no_flip"``, ...).
    dataset: name of the reference/evaluation data set, when one is used.
    n_faces: number of faces the number is computed over.
    seeds: seeds used (``{"latents": 0}``...).
    config: the metric and method configuration.
    versions: package versions (``digan.utils.provenance.package_versions``).
    weights: ``{name: hash}`` of every weight file or module used.
    created: ISO timestamp.
    """

    method: str
    metric: str
    setting: str = "overall"
    value: float | None = None
    status: str = "ok"
    reason: str = ""
    unit: str = ""
    higher_is_better: bool | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    variant: str = "full"
    dataset: str = ""
    n_faces: int | None = None
    seeds: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, Any] = field(default_factory=dict)
    created: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"record status must be one of {STATUSES}, got {self.status!r}")
        if self.status in VALUED:
            if self.value is None:
                raise ValueError(f"record {self.method}/{self.metric}/{self.setting} has status {self.status} but no value")
            self.value = float(self.value)
            if self.status == "warn" and not self.reason:
                raise ValueError(f"record {self.method}/{self.metric}/{self.setting} has status warn but no reason")
        else:
            self.value = None
            if not self.reason:
                raise ValueError(f"record {self.method}/{self.metric}/{self.setting} has status {self.status} but no reason")

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """Identity of the measurement: (method, variant, metric, setting, dataset)."""
        return (self.method, self.variant, self.metric, self.setting, self.dataset)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "") -> "Record":
        """A record from its dict; ``where`` (e.g. ``"results/records.jsonl line 3"``) is named in errors."""
        at = f" in {where}" if where else ""
        if not isinstance(d, dict):
            raise DiganError(f"result record{at} is not an object (got {type(d).__name__}); the results file is damaged: "
                             "rerun digan-bench run")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise DiganError(f"result record{at} has unknown field '{unknown[0]}'; it was written by an incompatible version")
        missing = [n for n in ("method", "metric") if n not in d]
        if missing:
            raise DiganError(f"result record{at} lacks the field '{missing[0]}'; the results file is damaged")
        bad = [n for n in ("method", "metric", "setting", "status", "variant", "dataset") if n in d and not isinstance(d[n], str)]
        if bad:
            raise DiganError(f"result record{at} has a non-text '{bad[0]}' ({d[bad[0]]!r}); the results file is damaged")
        try:
            return cls(**d)
        except (TypeError, ValueError) as e:
            raise DiganError(f"invalid result record{at}: {e}; the results file is damaged") from e


def method_key(method: str, variant: str = "full") -> str:
    """Folder-safe name for a method and variant, e.g. ``digan``, ``digan@no_flip``, ``samples_ffhq``."""
    name = method if variant in ("", "full") else f"{method}@{variant}"
    return re.sub(r"[^A-Za-z0-9_.@=-]+", "_", name).strip("_")


def record_path(results_dir: str | Path, method: str, metric: str, variant: str = "full") -> Path:
    return Path(results_dir) / "records" / method_key(method, variant) / f"{metric}.json"


def write_records(path: str | Path, records: Iterable[Record]) -> Path:
    """Write one metric's records for one method atomically (a JSON list)."""
    return write_json(path, [r.to_dict() for r in records])


def read_records(path: str | Path) -> list[Record]:
    data = read_json(path)
    if not isinstance(data, list):
        raise DiganError(f"{path} is not a list of result records; regenerate it with digan-bench run")
    return [Record.from_dict(d, f"{path} item {i}") for i, d in enumerate(data)]


def load_records(results_dir: str | Path) -> list[Record]:
    """Every record under ``RESULTS/records`` (or a single ``.json``/``.jsonl`` file), sorted."""
    p = Path(results_dir)
    records: list[Record] = []
    if p.is_file():
        if p.suffix == ".jsonl":
            lines = read_text(p, "regenerate the results", "a JSON-lines text file").splitlines()
            for i, line in enumerate(lines):
                if line.strip():
                    try:
                        d = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DiganError(f"{p} line {i + 1} is not valid JSON; regenerate the results") from e
                    records.append(Record.from_dict(d, f"{p} line {i + 1}"))
        else:
            records = read_records(p)
    elif (p / "records").is_dir():
        for f in sorted((p / "records").glob("*/*.json")):
            records.extend(read_records(f))
    elif p.is_dir() and (p / "records.jsonl").is_file():
        return load_records(p / "records.jsonl")
    else:
        raise DiganError(f"no results found in {p}; run 'digan-bench run --out {p}' first")
    records.sort(key=lambda r: (r.method, r.variant, r.metric, r.dataset, _setting_sort_key(r.setting)))
    return records


def _setting_sort_key(setting: str) -> tuple:
    """Sort settings so that numeric values order numerically and 'overall' comes last."""
    if setting == "overall":
        return (1,)
    parts = []
    for kv in setting.split(","):
        k, _, v = kv.partition("=")
        try:
            parts.append((k, 0, float(v), ""))
        except ValueError:
            parts.append((k, 1, 0.0, v))
    return (0, tuple(parts))


CSV_FIELDS = [
    "method", "variant", "metric", "setting", "dataset", "value", "unit", "status", "reason",
    "higher_is_better", "n_faces", "std", "n", "missed", "detection_rate", "seeds", "created",
]


def _csv_row(r: Record) -> dict[str, Any]:
    return {
        "method": r.method, "variant": r.variant, "metric": r.metric, "setting": r.setting,
        "dataset": r.dataset, "value": "" if r.value is None else repr(r.value), "unit": r.unit,
        "status": r.status, "reason": r.reason,
        "higher_is_better": "" if r.higher_is_better is None else str(r.higher_is_better).lower(),
        "n_faces": "" if r.n_faces is None else r.n_faces,
        "std": r.stats.get("std", ""), "n": r.stats.get("n", ""), "missed": r.stats.get("missed", ""),
        "detection_rate": r.stats.get("detection_rate", ""),
        "seeds": json.dumps(r.seeds, sort_keys=True), "created": r.created,
    }


def rebuild_flat_views(results_dir: str | Path) -> list[Record]:
    """Regenerate ``records.jsonl`` and ``records.csv`` from the per-metric files."""
    p = Path(results_dir)
    records = load_records(p) if (p / "records").is_dir() else []
    write_text(p / "records.jsonl", "".join(json.dumps(r.to_dict(), sort_keys=True) + "\n" for r in records))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    w.writeheader()
    for r in records:
        w.writerow(_csv_row(r))
    write_text(p / "records.csv", buf.getvalue())
    return records
