"""The teacher as a benchmark method: renders match the teacher API, capabilities say 2D."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
import torch

from digan.errors import DiganError
from digan.render.types import Light
from digan.teacher import load_teacher
from digan.teacher.checkpoint import make_checkpoint, save_checkpoint
from digan.teacher.model import Generator, StyleGAN2Config
from digan.utils.seeding import latents as seeded_latents
from evaluate.engine import RunConfig, run_benchmark
from evaluate.methods import available_methods, create_method

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _engine_fakes  # noqa: E402,F401  (test metrics)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = StyleGAN2Config(size=16, style_dim=16, n_mlp=2, channels={4: 16, 8: 16, 16: 16})
    g = Generator(cfg)
    p = tmp_path_factory.mktemp("teacher") / "tiny16.pt"
    save_checkpoint(p, make_checkpoint(g, cfg, latent_avg=torch.randn(16) * 0.1))
    return p


def test_registered_and_capabilities(tiny_ckpt):
    assert "teacher" in available_methods()
    m = create_method(f"teacher:{tiny_ckpt}")
    caps = m.capabilities
    assert caps.generate and not (caps.pose or caps.light or caps.depth or caps.mesh or caps.reconstruct)
    assert caps.missing_reason("pose") == "2D GAN: no pose control" and caps.image_size == 16
    assert "reconstruct" in caps.reasons and "light" in caps.reasons


def test_render_matches_teacher_api_and_truncation(tiny_ckpt):
    T = load_teacher(tiny_ckpt)
    z = seeded_latents(5, 16, seed=7)
    for psi in (1.0, 0.5):
        m = create_method(f"teacher:{tiny_ckpt}", truncation=psi)
        lat = m.latents(5, 7)
        assert torch.equal(lat, z)
        img = m.render(lat).image
        w = T.mapping(z)
        w = T.w_mean + psi * (w - T.w_mean)
        ref = T.generator.synthesis(w, noise=T.generator.fixed_noise()).clamp(-1, 1)
        assert img.shape == (5, 3, 16, 16) and torch.allclose(img, ref, atol=1e-5)
        assert img.abs().max() <= 1.0
    a = create_method(f"teacher:{tiny_ckpt}").render(z).image
    b = create_method(f"teacher:{tiny_ckpt}", truncation=0.5).render(z).image
    assert not torch.allclose(a, b)
    # per-index latents: a shard starting at 2 sees faces 2.. of the full run
    assert torch.equal(m.latents(3, 7, start=2), z[2:])


def test_refuses_views_and_lights(tiny_ckpt):
    m = create_method(f"teacher:{tiny_ckpt}")
    z = m.latents(1, 0)
    with pytest.raises(DiganError, match="frontal view only"):
        m.render(z, yaw=30)
    with pytest.raises(DiganError, match="no light control"):
        m.render(z, light=Light.make(0.5, 0.5))
    with pytest.raises(DiganError, match="teacher has no option 'psi'; valid options: truncation, noise"):
        create_method(f"teacher:{tiny_ckpt}", psi=0.7)
    with pytest.raises(DiganError, match="no variant 'no_flip'"):
        create_method(f"teacher@no_flip:{tiny_ckpt}")
    with pytest.raises(DiganError, match="not found"):
        create_method("teacher:/nowhere/t.pt")


def test_teacher_in_the_engine(tiny_ckpt, tmp_path):
    cfg = RunConfig(methods=[f"teacher:{tiny_ckpt}"], metrics=["test_mean", "test_pose"], n_faces=6, batch_size=4,
                    device="cpu", out=str(tmp_path / "r"), cache_dir=str(tmp_path / "c"),
                    method_options={"teacher": {"truncation": 0.7}})
    recs = {(r.metric, r.setting): r for r in run_benchmark(cfg, echo=False)}
    na = recs[("test_pose", "overall")]
    assert na.status == "n/a" and na.reason == "2D GAN: no pose control" and na.method == "teacher:tiny16"
    ok = recs[("test_mean", "overall")]
    m = create_method(f"teacher:{tiny_ckpt}", truncation=0.7)
    assert ok.value == pytest.approx(float(m.render(m.latents(6, 0)).image.double().mean()), rel=1e-6)
    assert ok.config["method"]["truncation"] == 0.7 and ok.config["method"]["checkpoint"] == str(tiny_ckpt)
    assert ok.weights["teacher"] == "file:" + hashlib.sha256(tiny_ckpt.read_bytes()).hexdigest()
