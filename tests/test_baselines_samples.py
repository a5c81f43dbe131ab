"""The rendered-samples format: names, writer/reader round trip against the method that rendered
the images, capabilities (views, face count, no speed), flat 2D folders, one-line validation
errors, and FID/speed through the engine."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from baselines.samples import (
    SamplesManifest,
    SamplesMethod,
    format_angle,
    image_name,
    open_samples,
    read_manifest,
    view_dir_name,
    write_manifest,
    write_samples,
)
from digan.errors import DiganError
from digan.utils.seeding import latents as seeded_latents
from evaluate.methods import Capabilities, Method, Rendered

SIZE = 16


class PoseFake(Method):
    """Deterministic renders ``tanh(z P + yaw/60 - pitch/90)``; ``pose`` switchable."""

    def __init__(self, pose: bool = True):
        self.name = "posefake"
        self._pose = pose
        self.P = torch.randn(6, 3 * SIZE * SIZE, generator=torch.Generator().manual_seed(7))

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(pose=self._pose, image_size=SIZE, reasons={} if self._pose else {"pose": "2D GAN: no pose control"})

    def latents(self, n: int, seed: int, start: int = 0) -> torch.Tensor:
        return seeded_latents(n, 6, seed, start)

    def render(self, latents, yaw=0.0, pitch=0.0, light=None) -> Rendered:
        return Rendered(image=torch.tanh(latents @ self.P + yaw / 60 - pitch / 90).reshape(-1, 3, SIZE, SIZE))

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "test"}


@pytest.fixture()
def exported(tmp_path) -> Path:
    out = tmp_path / "views"
    write_samples(PoseFake(), out, n=5, yaws=[-30, 0, 30], pitches=[0, 10], seed=3, batch_size=2)
    return out


def test_names():
    assert [format_angle(a) for a in (-45.0, 0.0, -0.0, 30, 12.5, -7.25)] == ["-45", "0", "0", "30", "12.5", "-7.25"]
    assert view_dir_name(-45) == "yaw_-45" and view_dir_name(30, 10) == "yaw_30_pitch_10" and view_dir_name(0, -5.5) == "yaw_0_pitch_-5.5"
    assert image_name(42) == "000042.png" and image_name(7, "jpg") == "000007.jpg"


def test_write_read_round_trip(exported):
    ref = PoseFake()
    assert sorted(p.name for p in exported.iterdir()) == sorted(
        ["manifest.json", "run.json", "yaw_-30", "yaw_0", "yaw_30", "yaw_-30_pitch_10", "yaw_0_pitch_10", "yaw_30_pitch_10"])
    man = read_manifest(exported)
    assert (man.method, man.n_faces, man.yaws, man.pitches, man.image_size, man.seed) == ("posefake", 5, [-30, 0, 30], [0, 10], SIZE, 3)
    assert man.info["kind"] == "test"
    m = SamplesMethod(exported)
    caps = m.capabilities
    assert caps.pose and caps.yaws == (-30.0, 0.0, 30.0) and caps.max_faces == 5 and caps.image_size == SIZE
    assert not (caps.light or caps.depth or caps.mesh or caps.reconstruct or caps.generate)
    assert "no speed" in caps.missing_reason("generate")
    idx = m.latents(3, seed=99, start=1)
    assert idx.tolist() == [1, 2, 3]  # the folder is a fixed set: the seed cannot change it
    for yaw, pitch in ((30, 10), (-30, 0), (0, 0)):
        got = m.render(idx, yaw=yaw, pitch=pitch).image
        want = ref.render(ref.latents(3, 3, 1), yaw=yaw, pitch=pitch).image
        assert (got - want).abs().max() <= 1 / 127.5 + 1e-6  # 8-bit quantisation only
    with pytest.raises(DiganError, match="already exists"):
        write_samples(PoseFake(), exported, n=2)
    # a samples folder can itself be re-exported (subset of its views and faces)
    sub = exported.parent / "sub"
    write_samples(m, sub, n=2, yaws=[0, 30], pitches=[10])
    torch.testing.assert_close(SamplesMethod(sub).render(torch.tensor([1]), 30, 10).image, m.render(torch.tensor([1]), 30, 10).image)


def test_frontal_only_and_flat_folders(tmp_path):
    fr = tmp_path / "frontal"
    write_samples(PoseFake(pose=False), fr, n=3, yaws=[0])
    caps = SamplesMethod(fr).capabilities
    assert not caps.pose and "only the frontal view" in caps.missing_reason("pose") and caps.max_faces == 3
    with pytest.raises(DiganError, match="cannot render other views"):
        write_samples(PoseFake(pose=False), tmp_path / "x", n=1, yaws=[0, 30])
    # flat folder of 2D samples: any names, sorted order
    flat = tmp_path / "flat"
    flat.mkdir()
    rng = np.random.default_rng(0)
    arrs = {}
    for name in ("b.png", "a.png", "c.jpg"):
        a = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(a).save(flat / name, quality=100)
        arrs[name] = a
    m = SamplesMethod(flat)
    assert m.folder.kind == "flat" and m.folder.n_faces == 3
    caps = m.capabilities
    assert not caps.pose and "2D samples" in caps.missing_reason("pose") and caps.max_faces == 3
    img = m.render(torch.tensor([0, 1])).image
    np.testing.assert_allclose(((img[0].permute(1, 2, 0).numpy() + 1) * 127.5), arrs["a.png"], atol=1e-3)
    np.testing.assert_allclose(((img[1].permute(1, 2, 0).numpy() + 1) * 127.5), arrs["b.png"], atol=1e-3)
    with pytest.raises(DiganError, match="no view yaw 30"):
        m.render(torch.tensor([0]), yaw=30)
    # the layout of 'digan-bench sample': OUT/images/*.png
    nested = tmp_path / "sampled"
    (nested / "images").mkdir(parents=True)
    shutil.copy(flat / "a.png", nested / "images" / "000000.png")
    assert SamplesMethod(nested).folder.n_faces == 1


def test_validation_errors(exported, tmp_path):
    m = SamplesMethod(exported)
    with pytest.raises(DiganError, match=r"no view yaw 15, pitch 0 \(available: yaw_-30, yaw_0, yaw_30, yaw_-30_pitch_10"):
        m.render(torch.tensor([0]), yaw=15)
    with pytest.raises(DiganError, match="has 5 faces"):
        m.latents(6, seed=0)
    with pytest.raises(DiganError, match="cannot be relit"):
        from digan.render.types import Light

        m.render(torch.tensor([0]), light=Light.make(1, 0))

    def copy() -> Path:
        d = tmp_path / f"c{len(list(tmp_path.iterdir()))}"
        shutil.copytree(exported, d)
        return d

    d = copy()
    (d / "manifest.json").unlink()
    with pytest.raises(DiganError, match=r"has view folders \(yaw_-30 \.\.\.\) but no manifest\.json"):
        open_samples(d)
    d = copy()
    shutil.rmtree(d / "yaw_30")
    with pytest.raises(DiganError, match=r"view folder yaw_30 \(yaw 30, pitch 0\) listed in .* is missing"):
        open_samples(d)
    d = copy()
    (d / "yaw_0_pitch_10" / "000002.png").unlink()
    with pytest.raises(DiganError, match=r"yaw_0_pitch_10 holds 4 files but the manifest says n_faces=5 \(first missing 000002\.png\)"):
        open_samples(d)
    d = copy()
    (d / "yaw_0" / "extra.png").write_bytes(b"x")
    with pytest.raises(DiganError, match=r"holds 6 files .* \(unexpected extra\.png\)"):
        open_samples(d)
    d = copy()
    (d / "yaw_0" / "000001.png").write_bytes(b"not a png")
    sm = SamplesMethod(d)  # structure is fine; the image fails when read
    with pytest.raises(DiganError, match=r"image .*yaw_0/000001\.png is unreadable"):
        sm.render(torch.tensor([0, 1]))
    with pytest.raises(DiganError, match="unreadable"):
        open_samples(d, check_images=True)
    d = copy()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "yaw_30" / "000004.png")
    with pytest.raises(DiganError, match=r"000004\.png is 8x8, but the samples folder's images are 16x16"):
        SamplesMethod(d).render(torch.tensor([4]), yaw=30)
    # manifests
    d = copy()
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(DiganError, match="not valid JSON"):
        open_samples(d)
    man = json.loads((exported / "manifest.json").read_text())
    for change, msg in (({"colour": 1}, "unknown key 'colour'"), ({"version": 2}, "newer than this digan-bench"),
                        ({"format": "other"}, "format is 'other'"), ({"yaws": [0, 0.0]}, "same angle twice"),
                        ({"n_faces": "many"}, "wrong type")):
        d = copy()
        (d / "manifest.json").write_text(json.dumps({**man, **change}))
        with pytest.raises(DiganError, match=msg):
            open_samples(d)
    d = copy()
    (d / "manifest.json").write_text(json.dumps({k: v for k, v in man.items() if k != "n_faces"}))
    with pytest.raises(DiganError, match="required key 'n_faces' is missing"):
        open_samples(d)
    with pytest.raises(DiganError, match="holds no images"):
        (tmp_path / "empty").mkdir()
        open_samples(tmp_path / "empty")
    with pytest.raises(DiganError, match="not found"):
        open_samples(tmp_path / "nowhere")


def test_manifest_written_by_hand(tmp_path):
    """The documented snippet for other code bases: images + write_manifest."""
    d = tmp_path / "external"
    for yaw in (-20, 0, 20):
        (d / view_dir_name(yaw)).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((SIZE, SIZE, 3), 10 * i + yaw + 40, np.uint8)).save(d / view_dir_name(yaw) / image_name(i))
    write_manifest(d, SamplesManifest(method="discofacegan", n_faces=2, yaws=[-20, 0, 20], image_size=SIZE, source="by hand"))
    m = SamplesMethod(d)
    assert m.info()["method"] == "discofacegan" and m.capabilities.yaws == (-20.0, 0.0, 20.0)
    img = m.render(torch.tensor([1]), yaw=20).image
    assert float((img[0, 0, 0, 0] + 1) * 127.5) == pytest.approx(70)


@pytest.mark.filterwarnings("ignore:Matrix is singular")
def test_engine_fid_on_samples_and_speed_na(exported, tmp_path):
    from evaluate.engine import RunConfig, run_benchmark

    flat = tmp_path / "ref"
    flat.mkdir()
    rng = np.random.default_rng(1)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(flat / f"{i:03d}.png")
    cfg = RunConfig(methods=[f"samples:{exported}", f"samples:{flat}"], metrics=["fid", "speed"], n_faces=5, batch_size=2,
                    device="cpu", data={"ref": str(flat)}, out=str(tmp_path / "res"), cache_dir=str(tmp_path / "cache"),
                    metric_options={"fid": {"dataset": "ref", "extractor": "randproj"}})
    recs = [r for r in run_benchmark(cfg, echo=False) if r.setting == "overall"]
    # pose on a flat folder is n/a, so it needs no face detector (inputs are checked only where a metric applies)
    cfg = RunConfig(methods=[f"samples:{flat}"], metrics=["pose"], n_faces=5, device="cpu", out=str(tmp_path / "res2"),
                    cache_dir=str(tmp_path / "cache"), models={"detector": str(tmp_path / "absent.onnx")})
    recs += [r for r in run_benchmark(cfg, echo=False) if r.setting == "overall"]
    by = {(r.method, r.metric): r for r in recs}
    for label in ("samples:views", "samples:ref"):
        assert by[(label, "fid")].status == "ok" and by[(label, "fid")].value >= 0
        sp = by[(label, "speed")]
        assert sp.status == "n/a" and sp.value is None and "nothing is generated" in sp.reason
    assert by[("samples:views", "fid")].n_faces == 5 and by[("samples:ref", "fid")].n_faces == 5  # capped by the folders
    pose = by[("samples:ref", "pose")]
    assert pose.status == "n/a" and pose.value is None and "2D samples" in pose.reason
