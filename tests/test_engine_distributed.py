"""torchrun: 2 CPU processes (gloo) shard the faces and produce the same records as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluate.records import load_records

TESTS = Path(__file__).resolve().parent

SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {tests!r})
    import _engine_fakes  # registers fake2d/fake3d and the test metrics
    from evaluate.metrics import fid as F
    from evaluate.engine import RunConfig, run_benchmark

    F.register_feature_extractor(
        "test-pooled",
        lambda ctx: F.FeatureExtractor(name="pooled", key="pooled-v1",
                                       fn=lambda x: __import__("torch").nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)),
    )
    cfg = RunConfig(**json.loads(sys.argv[1]))
    run_benchmark(cfg, echo=False)
    """
)


def _reference(folder: Path) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(9):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")


@pytest.mark.slow
def test_two_gloo_processes_match_one(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=str(TESTS)))
    _reference(tmp_path / "ref")
    base = dict(methods=["fake2d", "fake3d"], metrics=["test_mean", "test_pose", "fid", "kid"], n_faces=11,
                batch_size=3, device="cpu", yaws=[-30.0, 30.0], data={"ref": str(tmp_path / "ref")},
                metric_options={"fid": {"dataset": "ref", "extractor": "test-pooled"},
                                "kid": {"dataset": "ref", "extractor": "test-pooled", "num_subsets": 5}})
    env = {**os.environ, "DIGAN_BENCH_QUIET": "1", "OMP_NUM_THREADS": "1"}
    single = {**base, "out": str(tmp_path / "one"), "cache_dir": str(tmp_path / "c1")}
    subprocess.run([sys.executable, str(script), json.dumps(single)], check=True, env=env, timeout=300)
    multi = {**base, "out": str(tmp_path / "two"), "cache_dir": str(tmp_path / "c2")}
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), json.dumps(multi)],
        env=env, timeout=600, capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    one, two = load_records(tmp_path / "one"), load_records(tmp_path / "two")
    assert [x.key for x in one] == [x.key for x in two] and len(one) == 5 + 7
    for a, b in zip(one, two):
        assert a.status == b.status
        if a.value is not None:
            assert b.value == pytest.approx(a.value, rel=1e-9, abs=1e-12), a.key
        assert a.stats.get("n") == b.stats.get("n")
    run = json.loads((tmp_path / "two" / "run.json").read_text())
    assert run["world_size"] == 2
    # only rank 0 wrote: exactly one records file per method x metric, no stray temp files
    files = sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two" / "records").rglob("*"))
    assert all(not p.name.startswith(".") for p in files)
