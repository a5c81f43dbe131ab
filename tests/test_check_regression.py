"""`digan-bench check`: direction-aware tolerances, injected regressions both ways, improvements,
n/a and errors, protocol changes, baseline writing/updating, and the CLI exit status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from digan.cli import main
from digan.errors import DiganError
from evaluate.records import Record, record_path, write_records
from reports.check import (
    DEFAULT_TOLERANCES,
    Tolerance,
    baseline_from_records,
    compare,
    parse_tolerance_option,
    read_baseline,
    write_baseline,
)

KW = dict(n_faces=64, seeds={"latents": 0})


def _records(**changes) -> list[Record]:
    """A demo-like result set; ``changes`` maps 'method/metric/setting' to a new value or a Record."""
    recs = [
        Record("digan", "fid", value=100.0, higher_is_better=False, dataset="synth", **KW),
        Record("digan", "identity", setting="pitch=0,yaw=30", value=0.60, unit="cos", higher_is_better=True, **KW),
        Record("digan", "identity", value=0.70, unit="cos", higher_is_better=True, **KW),
        Record("digan", "speed", value=40.0, unit="faces/s", higher_is_better=True, **KW),
        Record("teacher", "identity", status="n/a", reason="2D GAN: no pose control"),
        # a metric whose name gives no hint: the record says higher is better
        Record("digan", "sharpness", value=10.0, higher_is_better=True, **KW),
    ]
    out = []
    for r in recs:
        key = f"{r.method}/{r.metric}/{r.setting}"
        if key in changes:
            c = changes.pop(key)
            if c is None:
                continue
            if isinstance(c, Record):
                out.append(c)
                continue
            r = Record(**{**r.to_dict(), "value": c})
        out.append(r)
    out.extend(v for v in changes.values() if isinstance(v, Record))
    return out


def _status(res, method, metric, setting="overall"):
    return next(c for c in res.comparisons if c.key[0] == method and c.key[2] == metric and c.key[3] == setting).status


@pytest.fixture()
def base() -> dict:
    return baseline_from_records(_records(), source="demo")


def test_identical_results_pass(base):
    res = compare(base, _records())
    assert res.passed and set(c.status for c in res.comparisons) == {"same"} and res.moved() == []


def test_lower_is_better_regression_and_improvement(base):
    # FID 100: allowed = max(2.0, 5% of 100) = 5
    assert _status(compare(base, _records(**{"digan/fid/overall": 104.9})), "digan", "fid") == "within"
    res = compare(base, _records(**{"digan/fid/overall": 105.1}))
    assert not res.passed and _status(res, "digan", "fid") == "regressed"
    c = res.failures[0]
    assert c.delta == pytest.approx(5.1) and c.allowed == pytest.approx(5.0) and c.rel_delta == pytest.approx(0.051)
    res = compare(base, _records(**{"digan/fid/overall": 90.0}))
    assert res.passed and _status(res, "digan", "fid") == "improved"


def test_higher_is_better_regression_and_improvement(base):
    # identity 0.60 on 64 faces: allowed = max(0.5 / 64, 1 % of 0.60) = 0.0078 (scaled_tolerance)
    res = compare(base, _records(**{"digan/identity/pitch=0,yaw=30": 0.59}))
    assert not res.passed and _status(res, "digan", "identity", "pitch=0,yaw=30") == "regressed"
    res = compare(base, _records(**{"digan/identity/pitch=0,yaw=30": 0.593}))
    assert res.passed and _status(res, "digan", "identity", "pitch=0,yaw=30") == "within"
    res = compare(base, _records(**{"digan/identity/pitch=0,yaw=30": 0.70}))
    assert res.passed and _status(res, "digan", "identity", "pitch=0,yaw=30") == "improved"


def test_direction_from_the_record_for_an_unknown_metric(base):
    # 'sharpness' is unknown to the label table; the record says higher is better: a drop fails
    res = compare(base, _records(**{"digan/sharpness/overall": 9.0}))  # allowed 5% of 10 = 0.5
    assert _status(res, "digan", "sharpness") == "regressed"
    assert _status(compare(base, _records(**{"digan/sharpness/overall": 11.0})), "digan", "sharpness") == "improved"
    # no direction anywhere: any move beyond tolerance fails
    nodir = [Record("m", "mystery", value=1.0)]
    b = baseline_from_records(nodir)
    assert _status(compare(b, [Record("m", "mystery", value=1.2)]), "m", "mystery") == "changed"
    assert _status(compare(b, [Record("m", "mystery", value=0.8)]), "m", "mystery") == "changed"
    assert compare(b, [Record("m", "mystery", value=1.04)]).passed


def test_missing_new_na_error_and_nonfinite(base):
    res = compare(base, _records(**{"digan/speed/overall": None}))
    assert not res.passed and _status(res, "digan", "speed") == "missing"
    extra = Record("liftgan", "fid", value=50.0, higher_is_better=False, dataset="synth")
    res = compare(base, _records(extra=extra))
    assert res.passed and _status(res, "liftgan", "fid") == "new"
    # n/a stays n/a: fine; a measured value becomes n/a: failure; n/a becomes a number: noted
    lost = Record("digan", "identity", status="n/a", reason="pose head removed")
    res = compare(base, _records(**{"digan/identity/overall": lost}))
    assert not res.passed and _status(res, "digan", "identity") == "lost"
    now = Record("teacher", "identity", value=0.3, higher_is_better=True)
    res = compare(base, _records(**{"teacher/identity/overall": now}))
    assert res.passed and _status(res, "teacher", "identity") == "new"
    err = Record("digan", "fid", status="error", reason="Inception missing", dataset="synth")
    res = compare(base, _records(**{"digan/fid/overall": err}))
    assert not res.passed and _status(res, "digan", "fid") == "error"
    res = compare(base, _records(**{"digan/fid/overall": float("nan")}))
    assert not res.passed and _status(res, "digan", "fid") == "error"


def test_protocol_change_is_not_compared(base):
    r = Record("digan", "fid", value=100.0, higher_is_better=False, dataset="synth", n_faces=128, seeds={"latents": 0})
    res = compare(base, _records(**{"digan/fid/overall": r}))
    assert not res.passed and _status(res, "digan", "fid") == "protocol" and "n_faces=128" in res.failures[0].note


def test_tolerances_from_file_entry_and_override(base):
    e = next(e for e in base["entries"] if e["metric"] == "fid")
    assert e["tolerance_auto"] is True
    del e["tolerance"], e["tolerance_auto"]  # file defaults apply to entries without their own
    base["default_tolerances"]["fid"] = {"abs": 20.0, "rel": 0.0}
    assert compare(base, _records(**{"digan/fid/overall": 115.0})).passed
    e["tolerance"] = {"abs": 1.0, "rel": 0.0}
    assert not compare(base, _records(**{"digan/fid/overall": 101.5})).passed
    assert compare(base, _records(**{"digan/fid/overall": 101.5}), tolerances={"fid": Tolerance(3.0, 0.0)}).passed
    assert compare(base, _records(**{"digan/fid/overall": 200.0}), metrics=["identity"]).passed
    assert parse_tolerance_option("fid=3,0.1") == ("fid", Tolerance(3.0, 0.1))
    assert parse_tolerance_option("kid=rel:0.2") == ("kid", Tolerance(0.0, 0.2))
    with pytest.raises(DiganError, match="METRIC=ABS"):
        parse_tolerance_option("fid")
    with pytest.raises(DiganError, match=">= 0"):
        parse_tolerance_option("fid=-1")


def test_defaults_cover_the_engine_metrics():
    for m in ("fid", "kid", "identity", "pose", "side", "mad", "speed", "memory"):
        assert m in DEFAULT_TOLERANCES


def _write_results(root: Path, records: list[Record]) -> Path:
    groups: dict = {}
    for r in records:
        groups.setdefault((r.method, r.variant, r.metric), []).append(r)
    for (m, v, metric), rs in groups.items():
        write_records(record_path(root, m, metric, v), rs)
    return root


def test_write_baseline_create_update_keeps_overrides(tmp_path):
    res = _write_results(tmp_path / "res", _records())
    bl = tmp_path / "ci" / "baseline.json"
    doc, counts = write_baseline(res, bl)
    assert counts == {"added": 6, "removed": 0, "updated": 0, "unchanged": 0}
    on_disk = read_baseline(bl)
    assert on_disk["entries"] == doc["entries"] and on_disk["format"] == "digan-bench-baseline"
    assert not [p for p in bl.parent.iterdir() if p.name != "baseline.json"]  # no temp files left
    # hand-edit a tolerance, then update from new results: the override survives
    on_disk["entries"][0]["tolerance"] = {"abs": 7.0, "rel": 0.0}
    bl.write_text(json.dumps(on_disk))
    res2 = _write_results(tmp_path / "res2", _records(**{"digan/fid/overall": 90.0, "digan/speed/overall": None}))
    doc, counts = write_baseline(res2, bl)
    assert counts == {"added": 0, "removed": 1, "updated": 1, "unchanged": 4}
    fid = next(e for e in doc["entries"] if e["metric"] == "fid")
    assert fid["value"] == 90.0 and fid["tolerance"] == {"abs": 7.0, "rel": 0.0}
    # a baseline is never written from failing results
    bad = _write_results(tmp_path / "bad", _records(**{"digan/fid/overall": Record("digan", "fid", status="error", reason="x", dataset="synth")}))
    with pytest.raises(DiganError, match="failures"):
        write_baseline(bad, bl)
    assert read_baseline(bl)["entries"] == doc["entries"]


def test_read_baseline_errors(tmp_path):
    with pytest.raises(DiganError, match="--write-baseline"):
        read_baseline(tmp_path / "nope.json")
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"entries": []}))
    with pytest.raises(DiganError, match="not a digan-bench baseline"):
        read_baseline(p)
    p.write_text(json.dumps({"format": "digan-bench-baseline", "version": 1, "entries": [{"method": "a", "metric": "fid", "value": "x"}]}))
    with pytest.raises(DiganError, match="no numeric value"):
        read_baseline(p)


def test_cli_check_exit_status(tmp_path, capsys):
    res = _write_results(tmp_path / "res", _records())
    bl = tmp_path / "baseline.json"
    assert main(["check", "--results", str(res), "--baseline", str(bl)]) == 2  # no baseline yet
    assert main(["check", "--results", str(res), "--baseline", str(bl), "--write-baseline"]) == 0
    assert main(["check", "--results", str(res), "--baseline", str(bl)]) == 0
    assert "check passed" in capsys.readouterr().out
    worse = _write_results(tmp_path / "worse", _records(**{"digan/fid/overall": 130.0, "digan/identity/overall": 0.5}))
    out_json = tmp_path / "cmp.json"
    assert main(["check", "--results", str(worse), "--baseline", str(bl), "--json", str(out_json)]) == 1
    out = capsys.readouterr().out
    assert "regressed" in out and "check failed" in out and "digan/fid/overall/synth" in out
    data = json.loads(out_json.read_text())
    assert data["passed"] is False and data["counts"] == {"regressed": 2, "same": 4}
    # raw speed is machine-dependent: a 4x slowdown is reported, not gated
    slow = _write_results(tmp_path / "slow", _records(**{"digan/speed/overall": 5.0}))
    assert main(["check", "--results", str(slow), "--baseline", str(bl)]) == 0
    assert "ungated" in capsys.readouterr().out
    # the same regression passes with a looser tolerance given on the command line
    assert main(["check", "-r", str(worse), "-b", str(bl), "--tolerance", "fid=40", "--tolerance", "identity=0.3"]) == 0
    better = _write_results(tmp_path / "better", _records(**{"digan/fid/overall": 50.0}))
    assert main(["check", "-r", str(better), "-b", str(bl)]) == 0
    assert "--write-baseline" in capsys.readouterr().out


def test_machine_dependent_metrics_are_reported_not_gated():
    b = baseline_from_records([Record("m", "memory", value=0.0, unit="MiB", higher_is_better=False),
                               Record("m", "speed", value=100.0, unit="faces/s", higher_is_better=True)])
    assert compare(b, [Record("m", "memory", value=200.0, higher_is_better=False),
                       Record("m", "speed", value=30.0, higher_is_better=True)]).passed
    res = compare(b, [Record("m", "memory", value=300.0, higher_is_better=False),
                      Record("m", "speed", value=20.0, higher_is_better=True)])
    assert res.passed and [c.status for c in res.comparisons] == ["ungated", "ungated"]
    for e in b["entries"]:
        e["gate"] = True  # on purpose: gate them after all
    res = compare(b, [Record("m", "memory", value=300.0, higher_is_better=False),
                      Record("m", "speed", value=20.0, higher_is_better=True)])
    assert [c.status for c in res.comparisons] == ["regressed", "regressed"]
