"""Metric regression check against a committed baseline (``digan-bench check``).

Baseline file (JSON, written by :func:`write_baseline`)::

    {
      "format": "digan-bench-baseline", "version": 1,
      "created": "...", "source": "results/demo", "git": "<commit>",
      "default_tolerances": {"fid": {"abs": 2.0, "rel": 0.05}, ...},
      "entries": [
        {"method": "digan", "variant": "full", "metric": "fid", "setting": "overall",
         "dataset": "synth", "status": "ok", "value": 212.4, "unit": "",
         "higher_is_better": false, "n_faces": 64, "seeds": {"latents": 0},
         "tolerance": {"abs": 2.0, "rel": 0.05}},          # optional per-entry override
        {"method": "teacher", ..., "status": "n/a", "value": null, "reason": "..."}
      ]
    }

Rule (direction-aware): with ``allowed = max(abs, rel * |baseline|)`` and ``bad`` the move in
the worse direction (``baseline - value`` when higher is better, ``value - baseline`` when lower
is better), a result **regressed** when ``bad > allowed`` and **improved** when
``-bad > allowed`` (not a failure; update the baseline to lock it in). A metric without a
known direction fails on a move beyond tolerance either way ("changed").

A baseline without entries, or ``metrics`` the baseline does not hold, is an error: comparing
nothing is not a pass.

Other outcomes: a baseline entry missing from the results -> **missing** (failure); a result
that is ``error`` or not finite -> **error** (failure); a measured baseline that became n/a ->
**lost** (failure); n/a in both -> ok; a new key, or n/a that became a number -> **new** (noted);
a different number of faces or seeds than the baseline -> **protocol** (failure: the numbers
are not comparable; rewrite the baseline on purpose).

Tolerances written with the baseline (:func:`scaled_tolerance`): ``--write-baseline`` gives every
entry a tolerance scaled to its metric, its feature extractor, its value and its number of faces,
marked ``"tolerance_auto": true``, so regenerating the baseline after a retrain rescales them
(a hand-edited entry tolerance, without that mark, is kept). The baseline is compared with a
rerun of the same preset and seeds (the CI demo is bit-reproducible offline on one thread), so a
tolerance only has to cover floating-point differences between machines and library versions and
a few faces changing (a detection flipping), not sampling noise between different faces:

* ``fid``/``kid`` on the demo-only ``randproj`` features (records marked "not Inception"): 1 %
  of the value (demo FID is ~0.3, KID ~0.003: a fixed 2.0 / 0.005 could never fail);
* ``fid`` with Inception: 5 % or min(2.0, 10 % of the value); ``kid``: 20 % or min(0.005, 20 %);
* ``identity``: 1 % or 0.5 / n_faces (one face's similarity swinging by 0.5); ``pose``: 5 % or
  10 deg / n_faces; ``side``: 5 %; ``mad``: 2 % or 0.25 deg.

:data:`DEFAULT_TOLERANCES` (the file's ``default_tolerances``) apply to entries without one (older
baselines, new keys). ``speed`` and ``memory`` depend on the machine (a CI runner is not the
machine that wrote the baseline; one loaded runner showed "speed regressed -76 %"), so they are
**not gated** (:data:`UNGATED`): a move beyond tolerance is reported as ``ungated`` and does not
fail the check, unless the entry says ``"gate": true``. Unknown metrics: 5 % (no absolute slack).
Edit a single entry's ``tolerance`` (and drop its ``tolerance_auto``) to change one by hand.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from digan.errors import DiganError
from digan.utils.io import read_json, write_json
from digan.utils.provenance import git_revision
from evaluate.records import Record, load_records
from reports.labels import metric_spec

__all__ = [
    "Tolerance",
    "DEFAULT_TOLERANCES",
    "Comparison",
    "CheckResult",
    "baseline_from_records",
    "write_baseline",
    "read_baseline",
    "compare",
    "check",
    "FAILING",
    "UNGATED",
    "scaled_tolerance",
]

FORMAT = "digan-bench-baseline"
VERSION = 1


@dataclass(frozen=True)
class Tolerance:
    """Allowed move: ``max(abs, rel * |baseline|)``."""

    abs: float = 0.0
    rel: float = 0.05

    def allowed(self, baseline: float) -> float:
        return max(self.abs, self.rel * abs(baseline))

    def to_dict(self) -> dict[str, float]:
        return {"abs": self.abs, "rel": self.rel}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "Tolerance":
        if not isinstance(d, dict) or not set(d) <= {"abs", "rel"}:
            raise DiganError(f"bad tolerance {d!r} in {where}: write {{\"abs\": 1.0, \"rel\": 0.05}}")
        try:
            t = cls(float(d.get("abs", 0.0)), float(d.get("rel", 0.0)))
        except (TypeError, ValueError) as e:
            raise DiganError(f"bad tolerance {d!r} in {where}: abs and rel must be numbers") from e
        if t.abs < 0 or t.rel < 0 or not (math.isfinite(t.abs) and math.isfinite(t.rel)):
            raise DiganError(f"bad tolerance {d!r} in {where}: abs and rel must be finite and >= 0")
        return t


#: per-metric defaults (see the module docstring for the reasoning)
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fid": Tolerance(abs=2.0, rel=0.05),
    "kid": Tolerance(abs=0.005, rel=0.20),
    "identity": Tolerance(abs=0.02, rel=0.05),
    "pose": Tolerance(abs=1.5, rel=0.10),
    "pose_mae": Tolerance(abs=1.5, rel=0.10),
    "side": Tolerance(abs=0.002, rel=0.10),
    "mad": Tolerance(abs=1.5, rel=0.10),
    "speed": Tolerance(abs=0.0, rel=0.75),
    "memory": Tolerance(abs=256.0, rel=0.50),
}
FALLBACK_TOLERANCE = Tolerance(abs=0.0, rel=0.05)

#: machine-dependent metrics: reported, never failing (unless an entry says ``"gate": true``)
UNGATED = ("speed", "memory")

#: outcomes that make ``check`` fail
FAILING = ("regressed", "changed", "missing", "error", "lost", "protocol")
_ORDER = ("regressed", "changed", "error", "lost", "missing", "protocol", "improved", "ungated", "new", "within", "same")


def _not_inception(dataset: str) -> bool:
    return "not Inception" in (dataset or "")


def scaled_tolerance(metric: str, value: float | None, dataset: str = "", n_faces: int | None = None) -> Tolerance | None:
    """The tolerance ``--write-baseline`` gives an entry (module docstring); None: use the defaults."""
    if value is None or not math.isfinite(value):
        return None
    v = abs(float(value))
    n = max(1, int(n_faces)) if n_faces else None
    if metric in ("fid", "kid") and _not_inception(dataset):
        return Tolerance(abs=0.0, rel=0.01)
    if metric == "fid":
        return Tolerance(abs=min(2.0, 0.10 * v), rel=0.05)
    if metric == "kid":
        return Tolerance(abs=min(0.005, 0.20 * v), rel=0.20)
    if metric == "identity":
        return Tolerance(abs=0.5 / n if n else 0.02, rel=0.01)
    if metric in ("pose", "pose_mae"):
        return Tolerance(abs=10.0 / n if n else 1.5, rel=0.05)
    if metric == "side":
        return Tolerance(abs=0.0, rel=0.05)
    if metric == "mad":
        return Tolerance(abs=0.25, rel=0.02)
    return None

Key = tuple[str, str, str, str, str]


def _key(d: dict[str, Any]) -> Key:
    return (d["method"], d.get("variant", "full"), d["metric"], d.get("setting", "overall"), d.get("dataset", ""))


def _key_text(k: Key) -> str:
    m, v, metric, s, d = k
    return f"{m}{'' if v in ('', 'full') else '@' + v}/{metric}/{s}" + (f"/{d}" if d else "")


# --------------------------------------------------------------------------------------------
# baseline file
# --------------------------------------------------------------------------------------------
def _entry(r: Record) -> dict[str, Any]:
    e: dict[str, Any] = {
        "method": r.method, "variant": r.variant, "metric": r.metric, "setting": r.setting,
        "dataset": r.dataset, "status": r.status, "value": r.value, "unit": r.unit,
        "higher_is_better": r.higher_is_better if r.higher_is_better is not None else metric_spec(r.metric).higher_is_better,
        "n_faces": r.n_faces, "seeds": r.seeds,
    }
    if r.status != "ok":
        e["reason"] = r.reason
    return e


def _auto_tolerance(entry: dict[str, Any]) -> bool:
    """Whether an entry's tolerance is the one :func:`scaled_tolerance` wrote (not edited by hand:
    an edit that keeps the ``tolerance_auto`` mark but changes the numbers counts as by hand)."""
    if not entry.get("tolerance_auto"):
        return False
    t = scaled_tolerance(entry.get("metric", ""), entry.get("value"), entry.get("dataset", ""), entry.get("n_faces"))
    return t is not None and t.to_dict() == entry.get("tolerance")


def baseline_from_records(
    records: Sequence[Record],
    source: str = "",
    previous: dict[str, Any] | None = None,
    tolerances: dict[str, Tolerance] | None = None,
) -> dict[str, Any]:
    """A baseline document from ``records``.

    Every measured entry gets :func:`scaled_tolerance` (marked ``tolerance_auto``). From a
    ``previous`` baseline it keeps the ``default_tolerances``, every hand-set per-entry
    ``tolerance`` (no ``tolerance_auto``) and ``gate`` flag whose key is still present;
    ``tolerances`` (per metric) override all of them.
    Records with status ``error`` or a non-finite value are refused: a baseline must be healthy.
    """
    bad = [r for r in records if r.status == "error" or (r.status == "ok" and not math.isfinite(r.value))]
    if bad:
        r = bad[0]
        why = r.reason if r.status == "error" else "value is not finite"
        raise DiganError(
            f"cannot write a baseline from results with failures ({len(bad)}; first: {_key_text(r.key)}: {why}); "
            "fix the run and rerun it first")
    if not records:
        raise DiganError("no result records to write a baseline from; run 'digan-bench run' first")
    defaults = {k: v.to_dict() for k, v in DEFAULT_TOLERANCES.items()}
    old_entries: dict[Key, dict[str, Any]] = {}
    if previous:
        defaults.update(previous.get("default_tolerances", {}))
        old_entries = {_key(e): e for e in previous.get("entries", [])}
    for m, t in (tolerances or {}).items():
        defaults[m] = t.to_dict()
    entries = []
    seen: set[Key] = set()
    for r in records:
        if r.key in seen:
            raise DiganError(f"the results hold {_key_text(r.key)} twice; rebuild them with digan-bench run")
        seen.add(r.key)
        e = _entry(r)
        old = old_entries.get(r.key)
        if old and "tolerance" in old and not _auto_tolerance(old) and r.metric not in (tolerances or {}):
            e["tolerance"] = old["tolerance"]  # set by hand: kept
        elif r.metric not in (tolerances or {}) and r.status == "ok":
            t = scaled_tolerance(r.metric, r.value, r.dataset, r.n_faces)
            if t is not None:
                e["tolerance"], e["tolerance_auto"] = t.to_dict(), True
        if old and "gate" in old:
            e["gate"] = old["gate"]
        entries.append(e)
    return {
        "format": FORMAT,
        "version": VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "git": git_revision(),
        "default_tolerances": dict(sorted(defaults.items())),
        "entries": entries,
    }


def read_baseline(path: str | Path) -> dict[str, Any]:
    """Load and validate a baseline file (one-line errors naming the fix)."""
    p = Path(path)
    if not p.is_file():
        raise DiganError(f"baseline {p} not found; create it with 'digan-bench check --results DIR --baseline {p} --write-baseline'")
    doc = read_json(p)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DiganError(f"{p} is not a digan-bench baseline (no \"format\": \"{FORMAT}\"); recreate it with --write-baseline")
    if doc.get("version") != VERSION:
        raise DiganError(f"{p} has baseline version {doc.get('version')!r}, this digan-bench reads {VERSION}; recreate it with --write-baseline")
    entries = doc.get("entries")
    if not isinstance(entries, list):
        raise DiganError(f"{p} has no 'entries' list; recreate it with --write-baseline")
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or "method" not in e or "metric" not in e:
            raise DiganError(f"{p} entry {i} lacks 'method' or 'metric'; fix or recreate the baseline")
        text = [f for f in ("method", "variant", "metric", "setting", "dataset", "status") if f in e and not isinstance(e[f], str)]
        if text:
            raise DiganError(f"{p} entry {i} has a non-text '{text[0]}' ({e[text[0]]!r}); fix or recreate the baseline")
        value = e.get("value")
        if e.get("status", "ok") == "ok" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise DiganError(f"{p} entry {i} ({_key_text(_key(e))}) has status ok but no numeric value; fix or recreate the baseline")
        if e.get("status", "ok") == "ok" and not math.isfinite(value):
            raise DiganError(f"{p} entry {i} ({_key_text(_key(e))}) has the non-finite value {value}, which no result can be "
                             "compared with; fix or recreate the baseline")
        if e.get("higher_is_better") is not None and not isinstance(e["higher_is_better"], bool):
            raise DiganError(f"{p} entry {i} ({_key_text(_key(e))}) has higher_is_better {e['higher_is_better']!r}; "
                             "write true, false or null")
        n = e.get("n_faces")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int)):
            raise DiganError(f"{p} entry {i} ({_key_text(_key(e))}) has n_faces {n!r}; write a whole number or null")
        if e.get("seeds") is not None and not isinstance(e["seeds"], dict):
            raise DiganError(f"{p} entry {i} ({_key_text(_key(e))}) has seeds {e['seeds']!r}; write an object such as "
                             "{\"latents\": 0}")
        if "tolerance" in e:
            Tolerance.from_dict(e["tolerance"], f"{p} entry {i}")
    defaults = doc.get("default_tolerances") or {}
    if not isinstance(defaults, dict):
        raise DiganError(f"{p} has default_tolerances {defaults!r}; write an object of METRIC: "
                         "{\"abs\": 1.0, \"rel\": 0.05}, or recreate the baseline")
    for m, t in defaults.items():
        Tolerance.from_dict(t, f"{p} default_tolerances.{m}")
    return doc


def write_baseline(
    results: str | Path,
    baseline: str | Path,
    tolerances: dict[str, Tolerance] | None = None,
    records: Sequence[Record] | None = None,
) -> tuple[dict[str, Any], dict[str, int]]:
    """Create or update ``baseline`` from ``results`` (atomic write).

    Returns the document and counts ``{"added", "removed", "updated", "unchanged"}`` relative to
    the previous file (all "added" for a new one). Tolerance overrides in an existing file are kept.
    """
    recs = list(records) if records is not None else load_records(results)
    p = Path(baseline)
    previous = None
    if p.exists():
        try:
            previous = read_baseline(p)
        except DiganError as e:
            # the existing file is kept (it may hold hand-set tolerances): the user decides
            problem = str(e).split("; ")[0]  # the problem without its "recreate it" advice, which is this command
            raise DiganError(f"cannot update the existing baseline ({problem}); it was left as it is: move or delete {p} "
                             "to write a new one") from e
    doc = baseline_from_records(recs, source=str(results), previous=previous, tolerances=tolerances)
    old = {_key(e): e for e in (previous or {}).get("entries", [])}
    new = {_key(e): e for e in doc["entries"]}
    counts = {"added": len(new.keys() - old.keys()), "removed": len(old.keys() - new.keys()), "updated": 0, "unchanged": 0}
    for k in new.keys() & old.keys():
        same = (new[k].get("status"), new[k].get("value")) == (old[k].get("status", "ok"), old[k].get("value"))
        counts["unchanged" if same else "updated"] += 1
    write_json(p, doc)
    return doc, counts


# --------------------------------------------------------------------------------------------
# comparison
# --------------------------------------------------------------------------------------------
@dataclass
class Comparison:
    """One key's outcome: ``status`` is one of regressed, changed, improved, within, same, missing,
    error, lost, new, protocol (see the module docstring)."""

    key: Key
    status: str
    baseline: float | None = None
    current: float | None = None
    allowed: float | None = None
    higher_is_better: bool | None = None
    note: str = ""

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.current is None:
            return None
        return self.current - self.baseline

    @property
    def rel_delta(self) -> float | None:
        d = self.delta
        if d is None or self.baseline == 0:
            return None
        return d / abs(self.baseline)

    @property
    def failed(self) -> bool:
        return self.status in FAILING


@dataclass
class CheckResult:
    """All comparisons, and whether the check passed."""

    comparisons: list[Comparison] = field(default_factory=list)

    @property
    def failures(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.failed]

    @property
    def passed(self) -> bool:
        return not self.failures

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.comparisons:
            out[c.status] = out.get(c.status, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: _ORDER.index(kv[0])))

    def moved(self) -> list[Comparison]:
        """Comparisons worth showing (everything but exact matches), worst first."""
        rows = [c for c in self.comparisons if c.status != "same"]
        return sorted(rows, key=lambda c: (_ORDER.index(c.status), c.key))

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "counts": self.counts(),
            "comparisons": [
                {"key": list(c.key), "status": c.status, "baseline": c.baseline, "current": c.current,
                 "delta": c.delta, "allowed": c.allowed, "higher_is_better": c.higher_is_better, "note": c.note}
                for c in self.comparisons
            ],
        }


def _tolerance(entry: dict[str, Any], defaults: dict[str, Any], overrides: dict[str, Tolerance] | None) -> Tolerance:
    metric = entry["metric"]
    if overrides and metric in overrides:
        return overrides[metric]
    if "tolerance" in entry:
        return Tolerance.from_dict(entry["tolerance"], _key_text(_key(entry)))
    if metric in defaults:
        return Tolerance.from_dict(defaults[metric], f"default_tolerances.{metric}")
    return DEFAULT_TOLERANCES.get(metric, FALLBACK_TOLERANCE)


def compare(
    baseline: dict[str, Any],
    records: Sequence[Record],
    tolerances: dict[str, Tolerance] | None = None,
    metrics: Sequence[str] | None = None,
) -> CheckResult:
    """Compare ``records`` with a baseline document (see the module docstring for the rules).

    ``tolerances`` override the file's per metric; ``metrics`` restricts the check to those metrics.
    """
    defaults = baseline.get("default_tolerances") or {}
    base = {_key(e): e for e in baseline.get("entries", [])}
    if not base:
        raise DiganError("the baseline has no entries, so there is nothing to check against (comparing nothing is not a "
                         "pass); write it from a results folder with 'digan-bench check --results DIR --baseline FILE --write-baseline'")
    cur: dict[Key, Record] = {}
    for r in records:
        cur[r.key] = r
    if metrics:
        known = sorted({k[2] for k in base})
        unknown = [m for m in metrics if m not in known]
        if unknown:
            raise DiganError(f"--metric {unknown[0]}: the baseline has no such metric (it has {', '.join(known)}); "
                             "comparing nothing is not a pass")
    keep = (lambda m: m in metrics) if metrics else (lambda m: True)
    out: list[Comparison] = []
    for k, e in base.items():
        if not keep(k[2]):
            continue
        r = cur.get(k)
        b_status = e.get("status", "ok")
        b_val = float(e["value"]) if b_status == "ok" else None
        hib = e.get("higher_is_better")
        if hib is None and r is not None:
            hib = r.higher_is_better
        if hib is None:
            hib = metric_spec(k[2]).higher_is_better
        tol = _tolerance(e, defaults, tolerances)
        c = Comparison(k, "same", baseline=b_val, higher_is_better=hib,
                       allowed=tol.allowed(b_val) if b_val is not None else None)
        if r is None:
            c.status, c.note = "missing", "not in the results"
        elif r.status == "error":
            c.status, c.note = "error", r.reason
        elif r.status == "ok" and not math.isfinite(r.value):
            c.status, c.current, c.note = "error", r.value, "value is not finite"
        elif _protocol_differs(e, r):
            # (speed times a wall-clock budget, so its face count varies by machine: ungated too)
            c.status = "ungated" if k[2] in UNGATED and e.get("gate") is not True else "protocol"
            c.current = r.value
            c.note = (f"measured on n_faces={r.n_faces}, seeds={r.seeds}; baseline n_faces={e.get('n_faces')}, "
                      f"seeds={e.get('seeds')}; rewrite the baseline on purpose with --write-baseline")
        elif b_status != "ok":
            if r.status == "ok":
                c.status, c.current, c.note = "new", r.value, f"was {b_status} ({e.get('reason', '')}), now measured"
            else:
                c.status, c.note = "same", r.reason
        elif r.status != "ok":
            c.status, c.note = "lost", f"now {r.status}: {r.reason}"
        else:
            c.current = r.value
            delta = r.value - b_val
            if delta == 0:
                c.status = "same"
            elif hib is None:
                c.status = "changed" if abs(delta) > c.allowed else "within"
                if c.status == "changed":
                    c.note = "direction unknown: any move beyond tolerance fails"
            else:
                bad = -delta if hib else delta
                if bad > c.allowed and k[2] in UNGATED and e.get("gate") is not True:
                    c.status, c.note = "ungated", "machine-dependent: reported, not gated (set \"gate\": true in the entry to gate it)"
                elif bad > c.allowed:
                    c.status = "regressed"
                elif -bad > c.allowed:
                    c.status, c.note = "improved", "beyond tolerance: update the baseline (--write-baseline)"
                else:
                    c.status = "within"
        out.append(c)
    for k, r in cur.items():
        if k not in base and keep(k[2]):
            out.append(Comparison(k, "new", current=r.value, higher_is_better=r.higher_is_better,
                                  note="not in the baseline" + ("" if r.status == "ok" else f" ({r.status}: {r.reason})")))
    return CheckResult(out)


def _protocol_differs(entry: dict[str, Any], r: Record) -> bool:
    bn, bs = entry.get("n_faces"), entry.get("seeds") or {}
    if bn is not None and r.n_faces is not None and int(bn) != int(r.n_faces):
        return True
    return bool(bs) and bool(r.seeds) and bs != r.seeds


def check(
    results: str | Path,
    baseline: str | Path,
    tolerances: dict[str, Tolerance] | None = None,
    metrics: Sequence[str] | None = None,
) -> CheckResult:
    """Load ``results`` and ``baseline`` and :func:`compare` them."""
    doc = read_baseline(baseline)
    return compare(doc, load_records(results), tolerances=tolerances, metrics=metrics)


def parse_tolerance_option(text: str) -> tuple[str, Tolerance]:
    """``"fid=3"`` (abs), ``"fid=3,0.1"`` (abs, rel) or ``"fid=rel:0.1"`` -> (metric, Tolerance)."""
    metric, sep, rest = text.partition("=")
    if not sep or not metric.strip():
        raise DiganError(f"bad tolerance {text!r}: write METRIC=ABS[,REL], e.g. fid=2,0.05")
    abs_, rel = 0.0, 0.0
    try:
        parts = [p.strip() for p in rest.split(",") if p.strip()]
        if not parts:
            raise ValueError
        for i, part in enumerate(parts):
            if part.startswith("abs:"):
                abs_ = float(part[4:])
            elif part.startswith("rel:"):
                rel = float(part[4:])
            elif i == 0:
                abs_ = float(part)
            elif i == 1:
                rel = float(part)
            else:
                raise ValueError
    except ValueError as e:
        raise DiganError(f"bad tolerance {text!r}: write METRIC=ABS[,REL], e.g. fid=2,0.05") from e
    return metric.strip(), Tolerance.from_dict({"abs": abs_, "rel": rel}, f"--tolerance {text}")
