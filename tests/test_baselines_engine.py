"""Every kind of baseline in one ``digan-bench run``: DIGAN, LiftGAN, HoloGAN, a samples folder and a
2D StyleGAN2, with identity, pose and FID. Methods lacking pose control get n/a records with the
reason (never a number); the others get values. Models are randomly initialised (the metrics'
plumbing, not the quality, is under test)."""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.filterwarnings("ignore:VGG16 weights not found"), pytest.mark.filterwarnings("ignore:no torch face recogniser"),
              pytest.mark.filterwarnings("ignore:Matrix is singular")]


def _save_untrained(model: str, out, teacher, tpath, extra: list[str]) -> None:
    """A student.pt of a freshly initialised model (what 'train --steps 0' would leave)."""
    from digan.student.config import make_config
    from digan.student.registry import get_builder
    from digan.student.train import checkpoint_payload, teacher_hash, teacher_tensor_hash
    from digan.utils.io import save_torch

    cfg = make_config("tiny", model=model, overrides=["train.w_stats_samples=256", "loss.identity=0", "loss.perc=0", *extra])
    built = get_builder(model)(cfg, teacher, "cpu")
    save_torch(out / "student.pt", checkpoint_payload(cfg, built.core, built.info, teacher_hash(teacher, tpath), str(tpath), 0,
                                                      teacher_tensor_hash(teacher)))


def test_run_with_every_kind_of_baseline(tmp_path, face_models):
    from baselines.samples import write_samples
    from digan.student.testing import save_random_teacher
    from evaluate.engine import RunConfig, run_benchmark
    from evaluate.methods import create_method

    tpath = tmp_path / "teacher.pt"
    teacher = save_random_teacher(tpath, size=32, style_dim=32, width=16)
    for model, extra in (("digan", []), ("liftgan", []), ("hologan", ["model.options.z_dim=16"])):
        d = tmp_path / model
        d.mkdir()
        torch.manual_seed(1)
        _save_untrained(model, d, teacher, tpath, extra)
    samples = tmp_path / "holo_renders"
    write_samples(create_method(f"hologan:{tmp_path / 'hologan'}"), samples, n=4, yaws=[-30, 0, 30], seed=0)
    ref = tmp_path / "ref"
    write_samples(create_method(f"teacher:{tpath}"), ref, n=6, yaws=[0], seed=9)

    methods = [f"digan:{tmp_path / 'digan' / 'student.pt'}", f"liftgan:{tmp_path / 'liftgan'}", f"hologan:{tmp_path / 'hologan'}",
               f"samples:{samples}", f"stylegan2:{tpath}"]
    cfg = RunConfig(methods=methods, metrics=["identity", "pose", "fid"], n_faces=4, batch_size=4, device="cpu", yaws=(-30.0, 30.0),
                    data={"ref": str(ref / "yaw_0")}, out=str(tmp_path / "res"), cache_dir=str(tmp_path / "cache"),
                    models={"detector": str(face_models / "det_500m.onnx"), "recognizer": str(face_models / "mobilefacenet_arcface_w128.onnx")},
                    metric_options={"fid": {"dataset": "ref", "extractor": "randproj"}, "identity": {"align": "fixed"}})
    recs = run_benchmark(cfg, echo=False)
    overall = {(r.method.split(":")[0], r.metric): r for r in recs if r.setting == "overall"}
    assert {m for m, _ in overall} == {"digan", "liftgan", "hologan", "samples", "stylegan2"}
    for name in ("digan", "liftgan", "hologan", "samples", "stylegan2"):
        fid = overall[(name, "fid")]
        assert fid.status == "ok" and fid.value is not None and fid.value >= 0, (name, fid.reason)
    for name in ("digan", "liftgan", "hologan", "samples"):
        ident = overall[(name, "identity")]
        assert ident.status == "ok" and -1 <= ident.value <= 1, (name, ident.reason)
        assert overall[(name, "pose")].status != "n/a"
    # the samples folder holds HoloGAN's faces 0..3 of seed 0: same numbers up to 8-bit quantisation
    assert overall[("samples", "fid")].value == pytest.approx(overall[("hologan", "fid")].value, rel=0.02)
    assert overall[("samples", "identity")].value == pytest.approx(overall[("hologan", "identity")].value, abs=0.01)
    # per-yaw identity records exist for the posable methods, at the requested yaws only
    assert sorted(r.setting for r in recs if r.method.startswith("samples") and r.metric == "identity") == ["overall", "yaw=-30", "yaw=30"]
    for metric in ("identity", "pose"):
        r = overall[("stylegan2", metric)]
        assert r.status == "n/a" and r.value is None and r.reason == "2D GAN: no pose control"
    md = (tmp_path / "res" / "summary.md").read_text()
    assert "stylegan2:teacher / identity: n/a (2D GAN: no pose control)" in md
