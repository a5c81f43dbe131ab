"""`digan-bench report` end to end: files, the self-contained HTML page (parsed, every image
decoded, and loaded in headless chromium when installed), --force semantics, the CLI."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digan.cli import main
from digan.errors import DiganError
from digan.utils.io import write_json
from evaluate.records import Record, load_records, record_path, write_records
from reports.report import ReportConfig, build_report, method_specs
from reports.tables import build_tables

_spec = importlib.util.spec_from_file_location("_reports_fig_tests", Path(__file__).with_name("test_reports_figures.py"))
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
SphereMethod = _mod.SphereMethod

CHROMIUM = "/usr/bin/chromium"


def _records() -> list[Record]:
    prov = dict(versions={"torch": "2.14.1", "numpy": "2.0"}, seeds={"latents": 0}, n_faces=64)
    out = []
    for m, fid, idv in (("liftgan", 40.0, 0.5), ("digan", 35.0, 0.6)):
        for v, d in (("full", 0.0), ("no_flip", 1.0), ("mlp", -2.0)) if m == "digan" else (("full", 0.0),):
            out.append(Record(m, "fid", variant=v, value=fid + d, higher_is_better=False, dataset="synth",
                              weights={"student": f"file:{'ab' * 32}"}, **prov))
            for y in (-30, 30):
                out.append(Record(m, "identity", variant=v, setting=f"pitch=0,yaw={y}", value=idv - d / 10, unit="cos",
                                  higher_is_better=True, stats={"std": 0.05}, **prov))
            out.append(Record(m, "identity", variant=v, value=idv - d / 10, unit="cos", higher_is_better=True, **prov))
    out.append(Record("teacher", "fid", value=20.0, higher_is_better=False, dataset="synth", **prov))
    out.append(Record("teacher", "identity", setting="pitch=0,yaw=30", status="n/a", reason="2D GAN: no pose control <b>"))
    out.append(Record("liftgan", "side", status="error", reason="renderer crashed"))
    return out


@pytest.fixture()
def results(tmp_path) -> Path:
    res = tmp_path / "results"
    groups: dict = {}
    for r in _records():
        groups.setdefault((r.method, r.variant, r.metric), []).append(r)
    for (m, v, metric), rs in groups.items():
        write_records(record_path(res, m, metric, v), rs)
    write_json(res / "run.json", {"kind": "run", "git": "0123456789abcdef", "created": "2025-01-01T00:00:00+00:00",
                                  "argv": ["digan-bench", "run", "--preset", "demo"], "config": {"preset": "demo"}})
    run = tmp_path / "train_run"
    run.mkdir()
    (run / "losses.csv").write_text("step,rec,flip\n" + "".join(f"{s},{1 / (1 + s)},{0.3}\n" for s in range(0, 400, 4)))
    return res


class _PageParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _parse(path: Path) -> _PageParser:
    p = _PageParser()
    p.feed(path.read_text(encoding="utf-8"))
    p.close()
    return p


def _decode_png(src: str) -> np.ndarray:
    assert src.startswith("data:image/png;base64,")
    data = base64.b64decode(src.split(",", 1)[1], validate=True)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    im = Image.open(io.BytesIO(data))
    im.verify()  # structural check of the PNG chunks and CRCs
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _build(results: Path, out: Path, **kw):
    cfg = ReportConfig(runs=[str(results.parent / "train_run")], n_faces=2, n_faces_relight=1, n_faces_ablation=1, cell_px=48)
    methods = [SphereMethod("digan"), SphereMethod("liftgan", light=False), SphereMethod("digan", "no_flip"),
               SphereMethod("teacher", pose=False, depth=False, light=False)]
    return build_report(results, out, cfg, methods=methods, **kw)


def test_report_files_and_self_contained_page(results, tmp_path):
    out = tmp_path / "report"
    res = _build(results, out)
    names = {Path(p).name for p in res.figures}
    for stem in ("identity_vs_yaw", "identity_vs_yaw_ablation", "metrics", "loss_curves", "samples", "relighting", "ablation_samples"):
        assert {f"{stem}.png", f"{stem}.pdf"} <= names
    # tables on disk are exactly the tables of the records, in every format
    tables = build_tables(load_records(results))
    for t in tables:
        assert (out / "tables" / f"{t.name}.md").read_text() == t.to_markdown()
        assert (out / "tables" / f"{t.name}.tex").read_text() == t.to_latex()
        assert (out / "tables" / f"{t.name}.csv").read_text() == t.to_csv()
    assert "\\usepackage{booktabs}" in (out / "tables" / "tables.tex").read_text()
    assert json.loads((out / "tables" / "tables.json").read_text())[0]["name"] == "table1_fid"

    page = _parse(res.html)
    tags = page.tags
    assert not [t for t, _ in tags if t in ("script", "link", "iframe", "object", "embed")]
    for t, a in tags:
        for attr in ("src", "href"):
            if attr in a:
                assert a[attr].startswith(("data:image/png;base64,", "#")), (t, a[attr][:60])
    imgs = [a for t, a in tags if t == "img"]
    assert len(imgs) == len(names) // 2
    for a in imgs:
        arr = _decode_png(a["src"])
        assert arr.shape[0] > 50 and arr.shape[1] > 50 and arr.std() > 5
    # the inlined images are the figure files
    inlined = {base64.b64decode(a["src"].split(",", 1)[1]) for a in imgs}
    assert (out / "figures" / "samples.png").read_bytes() in inlined
    ids = {a.get("id") for _, a in tags}
    assert {"summary", "tables", "figures", "provenance", "table1_fid", "table2_identity", "table3_ablation"} <= ids
    text = " ".join(page.text)
    assert "2D GAN: no pose control <b>" in text  # reason shown, escaped
    assert "renderer crashed" in text and "0123456789abcdef" in text and "2.14.1" in text
    assert "digan-bench run --preset demo" in text
    title_attrs = [a.get("title") for _, a in tags if a.get("title")]
    assert "2D GAN: no pose control <b>" in title_attrs and f"file:{'ab' * 32}" in title_attrs
    assert (out / "run.json").is_file() and json.loads((out / "config.json").read_text())["n_faces"] == 2
    mask = os.umask(0)
    os.umask(mask)
    assert (out / "index.html").stat().st_mode & 0o777 == 0o666 & ~mask  # not the 0600 of temp files
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask


def test_report_without_models_notes_what_is_missing(results, tmp_path):
    res = build_report(results, tmp_path / "r", ReportConfig())
    assert {Path(p).stem for p in res.figures} == {"identity_vs_yaw", "identity_vs_yaw_ablation", "metrics"}
    assert any("Figures 2-4" in s for s in res.skipped) and any("loss curves" in s for s in res.skipped)
    assert "no models given" in res.html.read_text()


def test_force_semantics_keep_old_report_on_failure(results, tmp_path):
    out = tmp_path / "report"
    build_report(results, out, ReportConfig())
    first = (out / "index.html").read_text()
    with pytest.raises(DiganError, match="--force"):
        build_report(results, out, ReportConfig())

    class Broken(SphereMethod):
        def render(self, *a, **k):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        build_report(results, out, ReportConfig(), force=True, methods=[Broken("digan")])
    assert (out / "index.html").read_text() == first
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".report")] == []
    build_report(results, out, ReportConfig(title="second"), force=True)
    assert "second" in (out / "index.html").read_text()


def test_method_specs_merge_checkpoints():
    cfg = ReportConfig(methods=["digan", "liftgan:lg.pt", "digan@no_flip"], checkpoints={"digan": "s.pt", "digan@no_flip": "b.pt", "hologan": "h.pt"})
    assert method_specs(cfg) == ["digan:s.pt", "liftgan:lg.pt", "digan@no_flip:b.pt", "hologan:h.pt"]


def test_cli_report(results, tmp_path, capsys):
    out = tmp_path / "cli_report"
    rc = main(["report", "--results", str(results), "--out", str(out), "--runs", str(results.parent / "train_run"),
               "--set", "title=CLI report"])
    assert rc == 0 and "CLI report" in (out / "index.html").read_text()
    assert (out / "figures" / "loss_curves.pdf").is_file()
    assert main(["report", "--results", str(results), "--out", str(out)]) == 2  # exists, no --force
    assert main(["report", "--results", str(results), "--out", str(tmp_path / "x"), "--checkpoint", "nopath"]) == 2
    assert main(["report", "--results", str(tmp_path / "none"), "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert "--force" in err and "NAME=PATH" in err and "no results found" in err


_PROBE = ("<script>window.addEventListener('load',function(){var r=[];for(var i=0;i<document.images.length;i++){"
          "var im=document.images[i];r.push([im.complete,im.naturalWidth,im.naturalHeight]);}"
          "document.body.setAttribute('data-imgs',JSON.stringify(r));});</script>")


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", f"--user-data-dir={profile}", "--hide-scrollbars"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="chromium not installed (Debian: apt-get install chromium)")
def test_page_renders_in_headless_chromium(results, tmp_path):
    res = _build(results, tmp_path / "report")
    html = res.html.read_text()
    expected = [(_decode_png(a["src"]).shape[1], _decode_png(a["src"]).shape[0])
                for t, a in _parse(res.html).tags if t == "img"]
    # a copy with a probe that records, after load, whether each image decoded and its size
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", _PROBE + "</body>"))
    p = _chromium(["--virtual-time-budget=10000", "--dump-dom", probe.as_uri()], tmp_path / "profile")
    assert p.returncode == 0, p.stderr[-1000:]
    dom = _PageParser()
    dom.feed(p.stdout)
    body = next(a for t, a in dom.tags if t == "body")
    seen = json.loads(body["data-imgs"])
    assert [tuple(s[1:]) for s in seen] == expected and all(s[0] for s in seen)
    assert sum(t == "table" for t, _ in dom.tags) >= 4
    # screenshot of the real page: not blank, and the header colour is there
    shot = tmp_path / "shot.png"
    p = _chromium(["--window-size=1200,1600", f"--screenshot={shot}", res.html.as_uri()], tmp_path / "profile2")
    assert p.returncode == 0 and shot.is_file(), p.stderr[-1000:]
    arr = np.asarray(Image.open(shot).convert("RGB")).astype(float)
    assert arr.shape[:2] == (1600, 1200) and arr.std() > 20
    header = np.median(arr[2:60, 2:1190].reshape(-1, 3), axis=0)  # the dark header bar (text is a minority)
    np.testing.assert_allclose(header, [0x22, 0x30, 0x3C], atol=12)


def _wide_records() -> list[Record]:
    """A full demo-style run: DIGAN with every ablation, LiftGAN and the teacher on every metric,
    with the long data set names the demo writes (Table 3 used to need horizontal scrolling)."""
    prov = dict(versions={"torch": "2.14.1"}, seeds={"latents": 0}, n_faces=64)
    rp = "synth [randproj features, not Inception]"
    out = []
    rows = [("digan", v) for v in ("full", "no_flip", "no_identity", "no_albedo", "mlp", "plain_conv")]
    rows += [("liftgan", "full"), ("teacher", "full")]
    for k, (m, v) in enumerate(rows):
        out.append(Record(m, "fid", variant=v, value=0.2808 + k, higher_is_better=False, dataset=rp, **prov))
        out.append(Record(m, "kid", variant=v, value=0.002761 * (k + 1), higher_is_better=False, dataset=rp, **prov))
        if m == "teacher":
            for metric in ("identity", "pose", "side", "mad"):
                out.append(Record(m, metric, status="n/a", reason="2D GAN: no pose control"))
        else:
            for y in (-30, -15, 15, 30):
                out.append(Record(m, "identity", variant=v, setting=f"yaw={y}", value=0.6 + k / 100, unit="cos",
                                  higher_is_better=True, stats={"std": 0.123456}, **prov))
                out.append(Record(m, "pose", variant=v, setting=f"yaw={y}", value=5.5 + k, unit="deg",
                                  higher_is_better=False, stats={"std": 3.21}, **prov))
            out.append(Record(m, "identity", variant=v, value=0.6 + k / 100, unit="cos", higher_is_better=True,
                              stats={"std": 0.123456}, **prov))
            out.append(Record(m, "pose", variant=v, value=5.5 + k, unit="deg", higher_is_better=False, stats={"std": 3.21},
                              **prov))
            out.append(Record(m, "side", variant=v, value=0.01379, dataset="synth", higher_is_better=False,
                              stats={"std": 0.004567, "flat_side": 0.0131}, **prov))
            out.append(Record(m, "mad", variant=v, value=40.11, unit="deg", dataset="synth", higher_is_better=False,
                              stats={"std": 4.567, "flat_mad": 41.9}, **prov))
        out.append(Record(m, "speed", variant=v, value=46.89, unit="faces/s", higher_is_better=True, **prov))
        out.append(Record(m, "memory", variant=v, value=147.1, unit="MiB", higher_is_better=False, **prov))
    return out


_WIDTH_PROBE = ("<script>window.addEventListener('load',()=>{const r={page:document.documentElement.scrollWidth,"
                "view:window.innerWidth,tables:[...document.querySelectorAll('div.table')].map(d=>[d.id,d.scrollWidth,"
                "d.clientWidth])};document.body.setAttribute('data-widths',JSON.stringify(r));});</script>")


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="chromium not installed (Debian: apt-get install chromium)")
def test_page_needs_no_horizontal_scrolling_at_1280px(tmp_path):
    """Issue 13: at a 1280 px wide window neither the page nor any table scrolls sideways."""
    from evaluate.records import rebuild_flat_views

    res = tmp_path / "results"
    groups: dict = {}
    for r in _wide_records():
        groups.setdefault((r.method, r.variant, r.metric), []).append(r)
    for (m, v, metric), rs in groups.items():
        write_records(record_path(res, m, metric, v), rs)
    rebuild_flat_views(res)
    rep = build_report(res, tmp_path / "report", ReportConfig())
    probe = tmp_path / "probe.html"
    probe.write_text(rep.html.read_text().replace("</body>", _WIDTH_PROBE + "</body>"))
    p = _chromium(["--window-size=1280,900", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()], tmp_path / "profile")
    assert p.returncode == 0, p.stderr[-1000:]
    dom = _PageParser()
    dom.feed(p.stdout)
    body = next(a for t, a in dom.tags if t == "body")
    w = json.loads(body["data-widths"])
    assert w["view"] == 1280, w
    assert w["page"] <= w["view"], w
    assert len(w["tables"]) >= 4 and all(sw <= cw for _, sw, cw in w["tables"]), w["tables"]
