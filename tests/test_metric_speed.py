"""Speed / memory metric: the measurement logic against fake methods with known cost.

These check how the numbers are computed (warm-up excluded, faces counted, memory growth seen),
with loose bounds: the figures themselves are reported by ``digan-bench bench speed``.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from evaluate.engine import RunConfig, run_benchmark
from evaluate.methods import Capabilities, Method, Rendered, register_method
from evaluate.metrics.speed import PeakMemory, Speed, time_batches
from evaluate.metrics.base import EvalContext

SLEEP = 0.02
ALLOC_MIB = 96


class Slow(Method):
    """Each render sleeps SLEEP s (the first two calls 0.3 s) and touches ALLOC_MIB of memory."""

    name = "slow"

    def __init__(self, pose: bool = False):
        self.calls: list[tuple[int, float]] = []
        self._pose = pose

    @property
    def capabilities(self):
        return Capabilities(pose=self._pose, image_size=4, reasons={"pose": "2D"})

    def latents(self, n, seed, start=0):
        return torch.arange(start, start + n, dtype=torch.float32)[:, None]

    def render(self, latents, yaw=0.0, pitch=0.0, light=None):
        self.calls.append((len(latents), yaw))
        time.sleep(0.3 if len(self.calls) <= 2 else SLEEP)
        buf = np.ones(ALLOC_MIB * 1024 * 1024 // 8)  # working memory, released after the batch
        del buf
        return Rendered(image=torch.zeros(len(latents), 3, 4, 4))


register_method("slow", help="test: slow")(lambda arg, pose=False, **kw: Slow(pose=pose))


def test_time_batches_excludes_warmup():
    seen = []

    def fn(i):
        seen.append(i)
        time.sleep(0.25 if i < 2 else 0.01)

    total, peak, method, per = time_batches(fn, n_batches=5, warmup=2, device=torch.device("cpu"))
    assert seen == list(range(7)) and len(per) == 5
    assert 0.05 <= total < 0.25 and sum(per) <= total + 1e-6  # the 0.25 s warm-up is not in it


def test_peak_memory_sees_temporary_allocations():
    with PeakMemory(torch.device("cpu")) as m:
        a = np.ones(64 * 1024 * 1024 // 8)
        del a
    assert m.method.startswith("cpu.rss")
    assert 60 <= m.peak / 2**20 < 200


def test_speed_records_generation_and_multiview():
    ctx = EvalContext(out_dir=".", batch_size=4, yaws=(-20.0, 20.0), seed=0)
    meth = Slow(pose=True)
    recs = Speed(warmup=2, batches=3).compute(meth, ctx)
    by = {(r.metric, r.setting): r for r in recs}
    assert set(by) == {("speed", "overall"), ("memory", "overall"), ("speed", "stage=multiview"), ("memory", "stage=multiview")}
    gen = by[("speed", "overall")]
    # 3 timed batches of 4 faces, each >= SLEEP s: at most 4 / SLEEP faces/s (a physical bound).
    # No lower bound: on a loaded runner any batch may take longer; that the 0.3 s warm-up
    # batches are not timed is checked by the call log below (2 warm-up + 3 timed, 12 faces)
    assert 0 < gen.value <= 4 / SLEEP * 1.001
    assert gen.unit == "faces/s" and gen.higher_is_better is True and gen.stats["n"] == 12
    mem = by[("memory", "overall")]
    assert mem.unit == "MiB" and mem.higher_is_better is False
    assert ALLOC_MIB * 0.9 <= mem.value < ALLOC_MIB * 3
    mv = by[("speed", "stage=multiview")]
    assert mv.unit == "images/s" and mv.value <= 4 / SLEEP * 1.001 and mv.stats["views"] == 2
    # frontal for generation, each yaw for multiview; every batch of the fixed size
    assert meth.calls[:5] == [(4, 0.0)] * 5
    assert sorted({y for _, y in meth.calls[5:]}) == [-20.0, 20.0] and {b for b, _ in meth.calls} == {4}
    cfg = gen.config
    assert cfg["batch_size"] == 4 and cfg["device"] == "cpu" and cfg["threads"] == torch.get_num_threads()
    assert cfg["warmup_batches"] == 2 and cfg["timed_batches"] == 3 and cfg["memory_method"].startswith("cpu.")


def test_speed_through_the_engine_without_pose(tmp_path):
    cfg = RunConfig(methods=["slow"], metrics=["speed"], batch_size=2, device="cpu", out=str(tmp_path / "r"),
                    cache_dir=str(tmp_path / "c"), metric_options={"speed": {"warmup": 1, "batches": 2}})
    recs = run_benchmark(cfg, echo=False)
    assert sorted((r.metric, r.setting) for r in recs) == [("memory", "overall"), ("speed", "overall")]
    md = (tmp_path / "r" / "summary.md").read_text()
    assert "| method | speed [faces/s] | memory [MiB] |" in md
    # batch size and device are part of the speed config hash: a new batch size reruns
    cfg.batch_size = 3
    recs2 = run_benchmark(cfg, echo=False)
    assert recs2[0].config["batch_size"] == 3


def test_multiview_yaws_option():
    ctx = EvalContext(out_dir=".", batch_size=2, yaws=(-45.0, -15.0, 15.0, 45.0))
    meth = Slow(pose=True)
    recs = Speed(warmup=1, batches=1, multiview_yaws=[10]).compute(meth, ctx)
    mv = [r for r in recs if r.setting == "stage=multiview" and r.metric == "speed"][0]
    assert mv.stats["views"] == 1 and mv.config["multiview_yaws"] == [10.0]
    assert sorted({y for _, y in meth.calls}) == [0.0, 10.0]


def test_time_budget_keeps_speed_short():
    """Issue 13: the speed metric takes seconds, not minutes: each stage's timed part stops once it
    has run max_seconds (after at least one batch), and the records count the batches timed."""
    ctx = EvalContext(out_dir=".", batch_size=2, yaws=(-30.0, 30.0))
    meth = Slow(pose=True)
    recs = Speed(warmup=1, batches=1000, max_seconds=0.1).compute(meth, ctx)
    # the loop stopped long before its 1000 batches per stage (counted, not timed: a wall-clock
    # bound fails on a loaded runner); each stage renders its warm-up batch plus those it timed
    assert len(meth.calls) < 2 * (1 + 20)
    gen = next(r for r in recs if r.metric == "speed" and r.setting == "overall")
    n_timed = len(gen.stats["per_batch_s"])
    assert 1 <= n_timed < 20 and gen.stats["n"] == 2 * n_timed and gen.n_faces == 2 * n_timed
    assert gen.value == pytest.approx(gen.stats["n"] / gen.stats["seconds"])
    assert gen.config["max_seconds"] == 0.1
    # at least one batch is timed even when the budget is below one batch
    recs = Speed(warmup=0, batches=5, multiview=False, max_seconds=1e-9).compute(Slow(pose=False), ctx)
    assert len(recs[0].stats["per_batch_s"]) == 1
    assert Speed().max_seconds == 10.0 and Speed(max_seconds=0).max_seconds is None
