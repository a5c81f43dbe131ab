"""`digan-bench bench renderer`: the command runs a tiny case and reports well-formed figures."""

from __future__ import annotations

import json

from digan.cli import main


def test_bench_renderer_cli_writes_figures(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["bench", "renderer", "--cases", "2x16", "--repeats", "1", "--device", "cpu", "--threads", "1", "--out", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    (r,) = data["results"]
    assert (r["device"], r["batch"], r["size"]) == ("cpu", 2, 16)
    assert r["faces_per_mesh"] == 2 * 15 * 15
    assert r["forward_ms"] > 0 and r["forward_backward_ms"] > 0 and r["peak_mem_mb"] >= 0
    assert abs(r["images_per_s"] - 2 / (r["forward_backward_ms"] / 1e3)) < 1e-6 * r["images_per_s"] + 1e-9
    assert data["provenance"]["kind"] == "bench" and r["threads"] == 1


def test_bench_renderer_bad_cases_is_a_one_line_error(capsys):
    assert main(["bench", "renderer", "--cases", "8by64"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: bad case") and "\n" not in err
