"""Benchmark engine: plan, resume, config-change rerun, n/a, errors, records/CSV/summary, CLI."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _engine_fakes as fakes  # noqa: E402

from digan.cli import main  # noqa: E402
from digan.errors import DiganError, InputsError  # noqa: E402
from evaluate.engine import RunConfig, has_errors, method_label, run_benchmark, summary_markdown  # noqa: E402
from evaluate.methods import create_method  # noqa: E402
from evaluate.records import load_records, record_path  # noqa: E402


def _cfg(tmp_path: Path, **kw) -> RunConfig:
    base = dict(methods=["fake2d", "fake3d"], metrics=["test_mean", "test_pose"], n_faces=10, batch_size=4,
                yaws=(-30.0, 30.0), out=str(tmp_path / "res"), cache_dir=str(tmp_path / "cache"), device="cpu")
    base.update(kw)
    return RunConfig(**base)


def _get(records, method, metric, setting="overall"):
    (r,) = [r for r in records if r.method == method and r.metric == metric and r.setting == setting]
    return r


def test_records_values_na_and_files(tmp_path):
    recs = run_benchmark(_cfg(tmp_path), echo=False)
    out = tmp_path / "res"
    for name in ("fake2d", "fake3d"):
        m = create_method(name)
        r = _get(recs, name, "test_mean")
        # independent: one big batch instead of sharded batches of 4; the images are float32 and
        # BLAS blocks a batch of 10 differently from batches of 4, so agree to float32 precision
        assert r.value == pytest.approx(fakes.mean_brightness(m, 10, 0), rel=1e-6)
        assert r.status == "ok" and r.unit == "px" and r.higher_is_better is True
        assert r.seeds["latents"] == 0 and r.versions["torch"] == torch.__version__.split("+")[0] or r.versions["torch"]
        assert r.weights["proj"].startswith("tensors:")
        assert r.config["config_hash"] and r.config["method"]["name"] == name
        assert r.config["scale"] == 1.0 and r.config["context"]["yaws"] == [-30.0, 30.0]
    na = _get(recs, "fake2d", "test_pose")
    assert na.status == "n/a" and na.value is None and na.reason == "2D GAN: no pose control"
    posed = [r for r in recs if r.method == "fake3d" and r.metric == "test_pose"]
    assert {r.setting for r in posed} == {"yaw=-30", "yaw=30", "overall"}

    # files: per-metric JSON, flat views, provenance, plan, summary
    assert record_path(out, "fake2d", "test_pose").is_file()
    on_disk = load_records(out)
    assert {r.key for r in on_disk} == {r.key for r in recs}
    rows = list(csv.DictReader((out / "records.csv").open()))
    assert len(rows) == len(recs)
    row = [x for x in rows if x["method"] == "fake2d" and x["metric"] == "test_pose"][0]
    assert row["status"] == "n/a" and row["value"] == "" and "no pose" in row["reason"]
    assert len((out / "records.jsonl").read_text().splitlines()) == len(recs)
    run = json.loads((out / "run.json").read_text())
    assert run["kind"] == "run" and run["config"]["n_faces"] == 10 and run["seeds"] == {"latents": 0}
    assert any(k.endswith("/proj") for k in run["weights"])
    plan = json.loads((out / "plan.json").read_text())
    assert [(i["method"], i["metric"], i["action"]) for i in plan["items"]] == [
        ("fake2d", "test_mean", "run"), ("fake2d", "test_pose", "n/a"),
        ("fake3d", "test_mean", "run"), ("fake3d", "test_pose", "run")]
    md = (out / "summary.md").read_text()
    lines = md.splitlines()
    assert lines[0] == "| method | test_mean [px] | test_pose [deg] |"
    fake2d_row = [l for l in lines if l.startswith("| fake2d")][0]
    assert "n/a" in fake2d_row and f"| {_get(recs, 'fake2d', 'test_mean').value:.4g} |" in fake2d_row
    assert "fake2d / test_pose: n/a (2D GAN: no pose control)" in md


def test_resume_skips_and_config_change_reruns(tmp_path):
    fakes.CALLS.clear()
    cfg = _cfg(tmp_path, methods=["fake3d"])
    first = run_benchmark(cfg, echo=False)
    assert fakes.CALLS == {"test_mean": 1, "test_pose": 1}
    path = record_path(cfg.out, "fake3d", "test_mean")
    mtime = path.stat().st_mtime_ns
    again = run_benchmark(cfg, echo=False)
    assert fakes.CALLS == {"test_mean": 1, "test_pose": 1}, "resume must skip finished work"
    assert path.stat().st_mtime_ns == mtime
    assert sorted(r.to_dict()["value"] or 0 for r in again) == sorted(r.to_dict()["value"] or 0 for r in first)
    plan = json.loads((Path(cfg.out) / "plan.json").read_text())
    assert {i["action"] for i in plan["items"]} == {"skip (resume)"}

    # another configuration into the same folder is refused (runs never mix silently) ...
    cfg2 = _cfg(tmp_path, methods=["fake3d"], metric_options={"test_mean": {"scale": 2.0}})
    with pytest.raises(DiganError, match=r"holds the results of a run with other settings \(metric_options .*--force"):
        run_benchmark(cfg2, echo=False)
    assert fakes.CALLS == {"test_mean": 1, "test_pose": 1}
    # ... and replaces it with --force: everything reruns
    cfg2.force = True
    recs = run_benchmark(cfg2, echo=False)
    assert fakes.CALLS == {"test_mean": 2, "test_pose": 2}
    assert _get(recs, "fake3d", "test_mean").value == pytest.approx(2 * _get(first, "fake3d", "test_mean").value)
    plan = json.loads((Path(cfg.out) / "plan.json").read_text())
    assert {i["action"] for i in plan["items"]} == {"rerun (--force)"}
    # the same settings again (without --force) resume
    cfg2.force = False
    run_benchmark(cfg2, echo=False)
    assert fakes.CALLS == {"test_mean": 2, "test_pose": 2}
    # a stored record whose metric protocol changed (same run settings) reruns exactly that work
    stored = json.loads(path.read_text())
    for d in stored:
        d["config"]["config_hash"] = "old"
    path.write_text(json.dumps(stored))
    run_benchmark(cfg2, echo=False)
    assert fakes.CALLS == {"test_mean": 3, "test_pose": 2}
    plan = json.loads((Path(cfg.out) / "plan.json").read_text())
    assert [i["action"] for i in plan["items"]] == ["rerun (config changed)", "skip (resume)"]


def test_second_run_with_other_settings_does_not_mix(tmp_path):
    """The scenario of a default --out: a small run, then one with other methods and faces."""
    out = tmp_path / "res"
    run_benchmark(_cfg(tmp_path, methods=["fake2d", "fake3d"], n_faces=4), echo=False)
    with pytest.raises(DiganError) as e:
        run_benchmark(_cfg(tmp_path, methods=["fake3d"], n_faces=6), echo=False)
    msg = str(e.value)
    assert "methods fake2d,fake3d -> fake3d" in msg and "n_faces 4 -> 6" in msg and "\n" not in msg
    assert main(["run", "--methods", "fake3d", "--metrics", "test_mean,test_pose", "--n-faces", "6", "--yaws", "-30,30",
                 "--batch-size", "4", "--device", "cpu", "--out", str(out), "--set", f"cache_dir={tmp_path / 'cache'}"]) == 2
    recs = run_benchmark(_cfg(tmp_path, methods=["fake3d"], n_faces=6, force=True), echo=False)
    # only the new run's records remain, in the per-metric files, the flat views and the summary
    assert {r.method for r in load_records(out)} == {"fake3d"} == {r.method for r in recs}
    assert {r.n_faces for r in load_records(out) if r.metric == "test_mean" and r.setting == "overall"} == {6}
    assert "fake2d" not in (out / "records.csv").read_text() and "fake2d" not in (out / "summary.md").read_text()


@pytest.mark.parametrize("damage", [bytes(range(256)) * 4, b"{\"config\": {\"methods\": [\"fake2d\"", b"", b"[1, 2]\n"],
                         ids=["binary", "truncated", "empty", "not-a-plan"])
def test_damaged_plan_is_not_taken_for_an_empty_folder(tmp_path, damage):
    """A results folder whose plan.json cannot be read holds records of unknown settings: a run
    with other settings stops with one line naming --force, and writes nothing there."""
    out = tmp_path / "res"
    run_benchmark(_cfg(tmp_path, methods=["fake2d", "fake3d"], n_faces=4), echo=False)
    (out / "plan.json").write_bytes(damage)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(DiganError) as e:
        run_benchmark(_cfg(tmp_path, methods=["fake3d"], n_faces=6), echo=False)
    msg = str(e.value)
    assert f"{out / 'plan.json'} is damaged" in msg and "--force" in msg and "\n" not in msg
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    # --force starts over: only the new run's records remain
    recs = run_benchmark(_cfg(tmp_path, methods=["fake3d"], n_faces=6, force=True), echo=False)
    assert {r.method for r in load_records(out)} == {"fake3d"} == {r.method for r in recs}
    assert json.loads((out / "plan.json").read_text())["config"]["n_faces"] == 6


def test_error_record_run_continues_and_keeps_old_results(tmp_path):
    fakes.FAIL["on"] = False
    try:
        cfg = _cfg(tmp_path, methods=["fake2d"], metrics=["test_fail", "test_mean"])
        ok = run_benchmark(cfg, echo=False)
        assert not has_errors(ok)
        fakes.FAIL["on"] = True
        cfg.force = True
        recs = run_benchmark(cfg, echo=False)
    finally:
        fakes.FAIL["on"] = True
    err = _get(recs, "fake2d", "test_fail")
    assert err.status == "error" and "pass --data ref=FOLDER" in err.reason
    assert _get(recs, "fake2d", "test_mean").status == "ok"
    assert has_errors(recs)
    # the earlier successful file is not replaced by the failure
    stored = load_records(record_path(cfg.out, "fake2d", "test_fail"))
    assert [r.status for r in stored] == ["ok"]
    plan = json.loads((Path(cfg.out) / "plan.json").read_text())
    item = [i for i in plan["items"] if i["metric"] == "test_fail"][0]
    assert item["action"] == "error" and "earlier results kept" in item["message"]


def test_error_is_written_when_nothing_earlier_and_retried(tmp_path):
    fakes.CALLS.clear()
    cfg = _cfg(tmp_path, methods=["fake2d"], metrics=["test_fail"])
    recs = run_benchmark(cfg, echo=False)
    assert [r.status for r in load_records(record_path(cfg.out, "fake2d", "test_fail"))] == ["error"]
    assert "error (reference folder missing" in (Path(cfg.out) / "summary.md").read_text()
    run_benchmark(cfg, echo=False)
    assert fakes.CALLS["test_fail"] == 2, "error records are never resumed"
    assert has_errors(recs)


def test_missing_inputs_are_listed_before_any_work(tmp_path, capsys):
    """A method that cannot be built and the inputs of every metric are checked first: one line
    each, identical lines once (FID and KID share a reference folder), nothing computed."""
    fakes.CALLS.clear()
    cfg = _cfg(tmp_path, methods=["fakebroken", "fake2d", "fake3d"], metrics=["test_mean", "fid", "kid", "side", "mad"],
               metric_options={"fid": {"dataset": "ffhq"}, "kid": {"dataset": "ffhq"}})
    with pytest.raises(InputsError) as e:
        run_benchmark(cfg, echo=False)
    probs = e.value.problems
    assert probs[0] == "fakebroken: fake checkpoint not found at /nowhere/fake.pt; train it first"
    assert sum("reference images 'ffhq'" in p for p in probs) == 1
    assert sum("SIDE/MAD need the synthetic ground-truth set" in p for p in probs) == 1
    assert sum("Inception" in p for p in probs) == 1
    assert len(probs) == 4 and all("\n" not in p for p in probs)
    assert fakes.CALLS == {} and not (tmp_path / "res" / "records").exists()
    # the CLI: exit 2, a header line, then one line per problem naming options that exist
    args = ["run", "--methods", "fakebroken,fake2d", "--metrics", "fid,kid", "--out", str(tmp_path / "o"),
            "--set", f"cache_dir={tmp_path / 'cache'}", "--data", "ffhq=/nowhere/ffhq"]
    assert main(args) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error: 3 inputs missing or unusable; nothing was run:"
    assert err[1].startswith("  - fakebroken: fake checkpoint not found")
    assert err[2] == "  - FID/KID reference folder /nowhere/ffhq not found; fix --data ffhq=FOLDER"
    assert "--model inception=PATH" in err[3] and len(err) == 4


def test_data_path_that_does_not_exist_is_refused_whatever_the_metrics(tmp_path, capsys):
    """--data synth=/nowhere with metrics that do not read it used to run and record the bad path
    in run.json and plan.json; now it is an input problem found before anything is written."""
    fakes.CALLS.clear()
    good = tmp_path / "synth"
    good.mkdir()
    cfg = _cfg(tmp_path, methods=["fake2d"], metrics=["test_mean"], data={"ffhq": str(good), "synth": "/nowhere/synth"})
    with pytest.raises(InputsError) as e:
        run_benchmark(cfg, echo=False)
    assert e.value.problems == ["data set 'synth' /nowhere/synth not found; fix --data synth=PATH (an existing folder) "
                                "or leave it out"]
    assert fakes.CALLS == {} and not (tmp_path / "res").exists()
    args = ["run", "--methods", "fake2d", "--metrics", "test_mean", "--n-faces", "2", "--device", "cpu",
            "--out", str(tmp_path / "o"), "--set", f"cache_dir={tmp_path / 'cache'}", "--data", "synth=/nowhere/synth"]
    assert main(args) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: 1 input missing or unusable; nothing was run:",
                   "  - data set 'synth' /nowhere/synth not found; fix --data synth=PATH (an existing folder) or leave it out"]
    assert not (tmp_path / "o").exists()
    # an existing folder is fine, as before
    assert main(args[:-1] + [f"synth={good}"]) == 0


def test_programming_errors_propagate(tmp_path):
    with pytest.raises(ZeroDivisionError):
        run_benchmark(_cfg(tmp_path, methods=["fake2d"], metrics=["test_bug"]), echo=False)


@pytest.mark.parametrize(
    "kw, fragment",
    [
        ({"methods": ["nope"]}, "unknown method 'nope'; choose from:"),
        ({"metrics": ["nope"]}, "unknown metric 'nope'; choose from:"),
        ({"methods": ["fake2d", "fake2d"]}, "listed twice"),
        ({"n_faces": 0}, "--n-faces must be at least 1"),
        ({"metric_options": {"test_mean": {"bogus": 1}}}, "metric 'test_mean' has no option 'bogus'; valid options: scale"),
    ],
)
def test_bad_names_and_options(tmp_path, kw, fragment):
    with pytest.raises(DiganError, match=fragment.replace("(", r"\(")):
        run_benchmark(_cfg(tmp_path, **kw), echo=False)


def test_unknown_method_lists_valid_names(tmp_path):
    with pytest.raises(DiganError) as e:
        run_benchmark(_cfg(tmp_path, methods=["nope"]), echo=False)
    assert "fake2d" in str(e.value) and "fake3d" in str(e.value) and "\n" not in str(e.value)


def test_method_label():
    assert method_label("digan") == "digan"
    assert method_label("digan@no_flip") == "digan"
    assert method_label("teacher:/ckpt/ffhq256.pt") == "teacher:ffhq256"
    assert method_label("samples:ffhq-sg2") == "samples:ffhq-sg2"


def test_cli_run_exit_codes_and_summary(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["run", "--methods", "fake2d,fake3d", "--metrics", "test_mean,test_pose", "--n-faces", "6",
            "--batch-size", "3", "--yaws", "-15,15", "--device", "cpu", "--out", str(out),
            "--set", f"cache_dir={tmp_path / 'cache'}", "--set", "metric_options.test_mean.scale=3"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "test_mean" in text and "n/a" in text and "fake3d" in text
    recs = load_records(out)
    assert _get(recs, "fake3d", "test_pose", "yaw=-15").status == "ok"
    m = create_method("fake3d")
    assert _get(recs, "fake3d", "test_mean").value == pytest.approx(3 * fakes.mean_brightness(m, 6, 0))
    assert main(args) == 0  # resumed
    assert main(["run", "--methods", "fake2d", "--metrics", "test_fail", "--out", str(tmp_path / "cli2"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "1 measurement(s) failed" in err
    assert main(["run", "--methods", "nope", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown method 'nope'; choose from:") and "\n" not in err
    assert main(["run", "--methods", "fake2d", "--data", "noequals", "--out", str(out)]) == 2
    assert "NAME=PATH" in capsys.readouterr().err


def test_summary_marks_non_inception_features():
    from evaluate.records import Record

    recs = [Record(method="a", metric="fid", value=12.5, dataset="synth [randproj features, not Inception]",
                   config={"metric_class": "fid"})]
    md = summary_markdown(recs, ["fid"])
    assert "| a | 12.5 * |" in md and "not comparable with Inception" in md


def test_run_overrides_extend_open_mappings():
    from evaluate.engine import apply_run_overrides

    cfg = RunConfig(metric_options={"fid": {"dataset": "synth", "extractor": "randproj"}}, data={"synth": "/s"})
    cfg = apply_run_overrides(cfg, ["metric_options.fid.extractor=inception", "metric_options.kid.num_subsets=10",
                                    "method_options.teacher.truncation=0.7", "data.ffhq=/data/ffhq", "n_faces=50",
                                    "yaws=[-30, 30]"])
    assert cfg.metric_options == {"fid": {"dataset": "synth", "extractor": "inception"}, "kid": {"num_subsets": 10}}
    assert cfg.method_options == {"teacher": {"truncation": 0.7}}
    assert cfg.data == {"synth": "/s", "ffhq": "/data/ffhq"} and cfg.n_faces == 50 and cfg.yaws == (-30.0, 30.0)
    with pytest.raises(DiganError, match="metric_options.NAME.OPTION=VALUE"):
        apply_run_overrides(cfg, ["metric_options.fid=3"])
    with pytest.raises(DiganError, match="unknown config key 'n_face'"):
        apply_run_overrides(cfg, ["n_face=3"])
