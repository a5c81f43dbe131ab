"""Restoration of damaged heads: region scores against independent references, the masked
inversion, the symmetric completion with true geometry (a missing ear completed from the other
one), the ``restore`` command, the ``restore`` metric and its report table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from digan.cli import main
from digan.data.heads import BACKGROUND_DEPTH, head_maps, sample_identity, undamaged
from digan.data.synth import SynthConfig, generate_synth
from digan.render import MeshRenderer, RendererConfig
from digan.render.types import Light, View
from digan.restore.core import align_view_by_symmetry, harmonize, masked_inversion, symmetric_completion
from digan.restore.quality import depth_error_region, psnr_region, ssim_map, ssim_region, telea_inpaint

REPO = Path(__file__).resolve().parents[1]
STUDENT = REPO / "digan" / "assets" / "tiny_student_64.pt"


# ------------------------------------------------------------------ scores
def test_psnr_region_closed_form():
    a = torch.zeros(2, 3, 8, 8)
    b = a.clone()
    region = torch.zeros(2, 1, 8, 8)
    region[:, :, 2:5, 2:5] = 1
    b[:, :, 2:5, 2:5] += 0.2  # 0.1 in [0, 1] units inside the region
    b[:, :, 6:, 6:] = 1.0  # outside the region: ignored
    assert torch.allclose(psnr_region(b, a, region), torch.full((2,), 20.0, dtype=torch.float64))
    assert math.isnan(float(psnr_region(a, b, torch.zeros_like(region))[0]))


def test_ssim_matches_scikit_image_inside_the_border():
    skm = pytest.importorskip("skimage.metrics")
    g = torch.Generator().manual_seed(0)
    a = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    b = (a + 0.3 * torch.randn(1, 3, 32, 32, generator=g)).clamp(-1, 1)
    mine = ssim_map(a, b)[0, 0].numpy()
    x, y = ((a[0] + 1) / 2).permute(1, 2, 0).double().numpy(), ((b[0] + 1) / 2).permute(1, 2, 0).double().numpy()
    _, ref = skm.structural_similarity(x, y, data_range=1.0, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False, full=True)
    ref = ref.mean(2)
    # windows reach the border within 5 px (truncate 3.5 sigma); inside they are the same windows
    assert np.allclose(mine[6:-6, 6:-6], ref[6:-6, 6:-6], atol=1e-6)
    assert float(ssim_region(a, a, torch.ones(1, 1, 32, 32))[0]) == pytest.approx(1.0)


def test_depth_error_ignores_scale_and_measures_the_damage():
    d = torch.full((1, 1, 8, 8), 1.0)
    fg = torch.ones_like(d)
    region = torch.zeros_like(d)
    region[..., 2:4, 2:4] = 1
    assert float(depth_error_region(d * 1.05, d, region, fg)[0]) == pytest.approx(0.0, abs=1e-12)
    bumped = d.clone()
    bumped[..., 2:4, 2:4] = 1.02
    assert float(depth_error_region(bumped * 0.9, d, region, fg)[0]) == pytest.approx(math.log(1.02), rel=1e-6)  # float32 inputs


def test_telea_fills_a_constant_image_with_the_constant():
    img = torch.full((1, 3, 16, 16), 0.2)
    dmg = img.clone()
    region = torch.zeros(1, 1, 16, 16)
    region[..., 5:9, 6:10] = 1
    dmg[..., 5:9, 6:10] = -1
    out = telea_inpaint(dmg, region)
    assert float((out - img).abs().max()) <= 2.5 / 127.5  # OpenCV works in 8 bits: within 2 levels


def test_harmonize_removes_a_constant_colour_offset():
    img = torch.rand(1, 3, 24, 24) * 0.5
    known = torch.ones(1, 1, 24, 24)
    known[..., 8:14, 8:14] = 0
    fill = img - 0.3  # right detail, wrong brightness
    out = harmonize(fill, img, known, 3.0)
    assert torch.allclose(out, img, atol=1e-5)


# ------------------------------------------------------------------ masked inversion
def test_masked_inversion_never_looks_at_the_damage():
    from digan.teacher import load_teacher

    t = load_teacher("tiny")
    img = torch.rand(2, 3, 64, 64) * 2 - 1
    known = torch.ones(2, 1, 64, 64)
    known[..., 20:36, 30:50] = 0
    other = img.clone()
    other[..., 20:36, 30:50] = torch.rand(2, 3, 16, 20) * 2 - 1
    w_std = torch.ones(t.style_dim)
    w1 = masked_inversion(t, img, known, w_std, steps=3)
    w2 = masked_inversion(t, other, known, w_std, steps=3)
    w3 = masked_inversion(t, other, torch.ones_like(known), w_std, steps=3)
    assert torch.equal(w1, w2)
    assert not torch.allclose(w1, w3)


# ------------------------------------------------------------------ symmetry with true geometry
def _symmetric_head(missing_ear: bool):
    """A mirror-symmetric head (depth and albedo averaged with their mirror images); with
    ``missing_ear`` its +x ear is removed from depth and mask (the fracture is not painted)."""
    p = undamaged(sample_identity(2, 0))
    p["topknot_x"] = 0.0
    m = head_maps(p, 64)
    d = (m.depth + m.depth.flip(-1)) / 2
    a = (m.albedo + m.albedo.flip(-1)) / 2
    mk = torch.maximum(m.mask, m.mask.flip(-1))
    if not missing_ear:
        return d, a, mk
    q = dict(p)
    q["broken_ear"] = 1.0
    ear = ((m.mask > 0.5) & (head_maps(q, 64).mask < 0.5)).float()
    return torch.where(ear > 0.5, torch.full_like(d, BACKGROUND_DEPTH), d), a, mk * (1 - ear)


@pytest.mark.parametrize("yaw", [-10.0, 10.0])
def test_missing_ear_is_completed_from_the_other_one_with_true_geometry(yaw):
    """The mechanism behind the 3D + symmetry row, free of any learnt model: with the true
    canonical depth, view and light, the missing +x ear is rebuilt from the -x one (mirrored
    depth gives it its shape, the mirrored observation its colour), far closer to the twin than
    the damaged input or Telea."""
    r = MeshRenderer(RendererConfig(image_size=64, fov=10.0))
    d, a, mk = _symmetric_head(False)
    dd, _, mkd = _symmetric_head(True)
    view, light = View.from_angles(yaw, 5.0), Light.make(0.5, 0.6, 0.0, 0.3)  # dx = 0: symmetric shading
    twin = r.render(d[None], a[None], view, light, vertex_mask=mk[None])
    dam = r.render(dd[None], a[None], view, light, vertex_mask=mkd[None])
    bg = 0.2
    twin_img = twin.image * twin.mask + bg * (1 - twin.mask)
    dam_img = dam.image * dam.mask + bg * (1 - dam.mask)
    region = F.max_pool2d(((twin.mask > 0.5) & (dam.mask < 0.5)).float(), 3, 1, 1)
    assert region.sum() > 40
    known = 1 - region
    model = r.render(dd[None], a[None], view, light)  # "the model": the damaged geometry, shaded texture
    comp = symmetric_completion(r, dam_img, known, dd[None], model.canonical_image, view, Light.make(1.0, 0.0), view_grid=model.grid)
    assert comp["mirrored"].sum() > 20
    out = r.render(comp["depth"], comp["texture"], view, Light.make(1.0, 0.0))
    restored = dam_img * known + out.image * region
    p_sym = float(psnr_region(restored, twin_img, region))
    p_dam = float(psnr_region(dam_img, twin_img, region))
    p_tel = float(psnr_region(telea_inpaint(dam_img, region), twin_img, region))
    assert p_sym > p_dam + 8 and p_sym > p_tel + 5, (p_sym, p_dam, p_tel)
    # without the mirror (the model alone: no ear) it stays near the damaged input
    plain = symmetric_completion(r, dam_img, known, dd[None], model.canonical_image, view, Light.make(1.0, 0.0),
                                 view_grid=model.grid, symmetry=False)
    assert torch.equal(plain["depth"], dd[None])


def test_symmetry_alignment_recovers_a_yaw_error():
    r = MeshRenderer(RendererConfig(image_size=64, fov=10.0))
    d, a, mk = _symmetric_head(False)
    light = Light.make(0.5, 0.6, 0.0, 0.3)
    img = r.render(d[None], a[None], View.from_angles(12.0), light, vertex_mask=mk[None]).image
    wrong = View.from_angles(4.0)
    _, off = align_view_by_symmetry(r, img, torch.ones(1, 1, 64, 64), d[None], wrong, yaw_range=12.0, step=2.0)
    assert abs(float(off[0]) - 8.0) <= 2.0


# ------------------------------------------------------------------ the bundled student end to end
@pytest.fixture(scope="module")
def twin_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("restore") / "set"
    generate_synth(out, config=SynthConfig(n=4, size=64, seed=3, views_per_identity=1, damage_prob=1.0, missing_prob=0.6,
                                           twins=True, batch_size=4))
    return out


@pytest.fixture(scope="module")
def student():
    from digan.student.inference import Student

    return Student.load(STUDENT, device="cpu")


def test_restore_keeps_known_pixels_and_fills_the_region(twin_set, student):
    from digan.data.synthetic import SynthDataset
    from digan.restore import RestoreConfig, restore

    ds = SynthDataset(twin_set, canonical=False)
    b = {k: torch.stack([ds[i][k] for i in range(2)]) for k in ("image", "restore_mask")}
    res = restore(student, b["image"], b["restore_mask"], RestoreConfig(inversion_steps=2, refine_steps=1))
    reg = b["restore_mask"]
    assert torch.equal(res.image * (1 - reg), b["image"] * (1 - reg))
    assert torch.equal(res.fill_3d, res.fill_render)  # symmetry off (default)
    assert not torch.allclose(res.fill_sym, res.fill_render)
    assert res.canonical_depth.shape == (2, 1, 64, 64) and res.canonical_texture.shape == (2, 3, 64, 64)
    assert res.mirrored.sum() > 0
    on = restore(student, b["image"], reg, RestoreConfig(inversion_steps=2, refine_steps=1, symmetry=True))
    assert torch.equal(on.fill_3d, on.fill_sym) and torch.equal(on.fill_sym, res.fill_sym)


def test_restore_command_writes_every_output(twin_set, tmp_path):
    out = tmp_path / "out"
    rc = main(["restore", "--student", str(STUDENT), "--images", str(twin_set / "images"), "--masks",
               str(twin_set / "restore_masks"), "--out", str(out), "--steps", "2", "--symmetry", "--set", "refine_steps=1"])
    assert rc == 0
    for f in ("input.png", "mask.png", "restored.png", "restored_2d.png", "canonical.png", "depth.png", "normal.png",
              "head.glb", "before_after.png"):
        assert (out / "000001" / f).is_file(), f
    assert (out / "sheet.png").is_file() and (out / "run.json").is_file()
    assert json.loads((out / "config.json").read_text())["restore"]["symmetry"] is True
    import trimesh

    mesh = trimesh.load(out / "000001" / "head.glb", force="mesh")
    assert len(mesh.faces) > 100
    from PIL import Image

    given = np.asarray(Image.open(twin_set / "restore_masks" / "000001.png")) > 127
    saved = np.asarray(Image.open(out / "000001" / "mask.png").convert("L")) > 127
    assert np.array_equal(given, saved)
    summary = json.loads((out / "summary.json").read_text())
    assert [s["mask"] for s in summary["images"]] == ["given"] * 4


def test_restore_command_estimates_and_saves_the_mask(twin_set, tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    (imgs / "a.png").write_bytes((twin_set / "images" / "000000.png").read_bytes())
    out = tmp_path / "out"
    rc = main(["restore", "--student", str(STUDENT), "--images", str(imgs), "--out", str(out), "--steps", "1",
               "--set", "estimate_steps=2", "--set", "refine_steps=1"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())["images"][0]
    assert summary["mask"] == "estimated" and 0 < summary["mask_fraction"] < 0.98
    assert (out / "a" / "mask.png").is_file()


def test_restore_command_one_line_errors(twin_set, tmp_path, capsys):
    from PIL import Image

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    (imgs / "a.png").write_bytes((twin_set / "images" / "000000.png").read_bytes())
    base = ["restore", "--student", str(STUDENT), "--images", str(imgs), "--steps", "1"]

    def run(masks: Path, name: str) -> str:
        capsys.readouterr()
        assert main(base + ["--masks", str(masks), "--out", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
        return err

    def mask_dir(name: str, arr: np.ndarray | None) -> Path:
        d = tmp_path / name
        d.mkdir()
        if arr is not None:
            Image.fromarray(arr).save(d / "a.png")
        return d

    assert "no mask for a.png" in run(mask_dir("none", None), "o1")
    assert "is 32x32 but image" in run(mask_dir("small2", np.full((32, 32), 255, np.uint8)), "o3")
    assert "is empty" in run(mask_dir("empty", np.zeros((64, 64), np.uint8)), "o4")
    assert "covers" in run(mask_dir("full", np.full((64, 64), 255, np.uint8)), "o5")
    capsys.readouterr()
    assert main(["restore", "--student", str(STUDENT), "--images", str(tmp_path / "nope"), "--out", str(tmp_path / "o6")]) == 2
    assert "not found" in capsys.readouterr().err


# ------------------------------------------------------------------ the metric and the report
def test_restore_metric_rows_match_independent_computation(twin_set, tmp_path):
    from digan.data.synthetic import SynthDataset
    from evaluate.engine import RunConfig, run_benchmark
    from evaluate.records import Record

    cfg = RunConfig(methods=["digan", "teacher"], metrics=["restore"], n_faces=3, batch_size=2, device="cpu",
                    data={"restore": str(twin_set)}, out=str(tmp_path / "res"),
                    metric_options={"restore": {"inversion_steps": 2, "refine_steps": 1, "figure_faces": 2}})
    recs = run_benchmark(cfg, echo=False)
    by = {(r.method, r.metric, r.setting): r for r in recs}
    assert by[("teacher", "restore", "overall")].status == "n/a"
    psnr = by[("digan", "restore_psnr", "overall")]
    assert psnr.status == "ok" and psnr.n_faces == 3 and psnr.unit == "dB"
    refs = psnr.stats["references"]
    assert set(refs) == {"damaged", "telea", "inversion_2d", "render_3d", "symmetric_3d"}
    assert psnr.value == pytest.approx(refs["render_3d"]["value"])  # symmetry off: the render is the method's value
    # the damaged-input and Telea rows, recomputed here with numpy and OpenCV directly
    import cv2

    ds = SynthDataset(twin_set, canonical=False)
    dam, tel = [], []
    for i in range(3):
        a = np.asarray(ds.arrays["images"][i]).astype(np.float64) / 255
        t = np.asarray(ds.arrays["twin_images"][i]).astype(np.float64) / 255
        m = np.asarray(ds.arrays["restore_mask"][i]) > 0
        dam.append(10 * np.log10(1 / ((a - t)[m] ** 2).mean()))
        inp = cv2.inpaint(np.asarray(ds.arrays["images"][i]).copy(), m.astype(np.uint8) * 255, 3, cv2.INPAINT_TELEA) / 255.0
        tel.append(10 * np.log10(1 / ((inp - t)[m] ** 2).mean()))
    assert refs["damaged"]["value"] == pytest.approx(np.mean(dam), abs=2e-3)
    assert refs["telea"]["value"] == pytest.approx(np.mean(tel), abs=2e-3)
    depth = by[("digan", "restore_depth", "overall")]
    assert depth.higher_is_better is False and depth.stats["references"]["telea"]["status"] == "n/a"
    assert list((tmp_path / "res" / "restore").glob("*/examples.npz"))

    from reports.restore import LIFTGAN_NA, restore_figure, restore_table

    table = restore_table(recs)
    md = table.to_markdown()
    assert "OpenCV inpainting (Telea)" in md and "LiftGAN" in md and LIFTGAN_NA in md
    assert "3D render (reported)" in md
    fig = restore_figure(tmp_path / "res")
    assert fig is not None
    assert restore_table([Record(method="digan", metric="fid", value=1.0)]) is None


def test_restore_metric_needs_twins(tmp_path):
    from evaluate.engine import RunConfig, run_benchmark

    plain = generate_synth(tmp_path / "plain", config=SynthConfig(n=2, size=64, seed=0))
    cfg = RunConfig(methods=["digan"], metrics=["restore"], n_faces=2, device="cpu", data={"restore": str(plain)},
                    out=str(tmp_path / "res"), metric_options={"restore": {"inversion_steps": 1}})
    recs = run_benchmark(cfg, echo=False)
    assert recs[0].status == "error" and "data synth --twins" in recs[0].reason


def test_restore_demo_preset_adds_liftgan_only_when_bundled(tmp_path, monkeypatch):
    import evaluate.restore_demo as rd

    monkeypatch.setattr(rd, "liftgan_asset", lambda: tmp_path / "absent.pt")
    cfg = rd.restore_demo_config(cache_dir=tmp_path, prepare=False)
    assert cfg.methods == ["digan"] and cfg.metrics == ["restore"]
    fake = tmp_path / "tiny_liftgan_64.pt"
    fake.write_bytes(b"x")
    monkeypatch.setattr(rd, "liftgan_asset", lambda: fake)
    assert rd.restore_demo_config(cache_dir=tmp_path, prepare=False).methods == ["digan", f"liftgan:{fake}"]
    from evaluate.presets import available_presets

    assert "restore-demo" in available_presets()


def test_liftgan_student_restores_through_the_same_pipeline(twin_set, tmp_path, capsys):
    """A LiftGAN student (``train --model liftgan``) is scored by the metric as its own row and
    restores through the command; the report then needs no LiftGAN n/a row."""
    from digan.student.config import make_config
    from digan.student.testing import save_random_teacher
    from digan.student.train import train
    from evaluate.engine import RunConfig, run_benchmark
    from reports.restore import restore_table

    tpath = tmp_path / "t.pt"
    save_random_teacher(tpath, size=64, style_dim=32, width=16)
    cfg = make_config("tiny", model="liftgan", overrides=["train.batch=2", "train.steps=1", "train.w_stats_samples=64", "loss.identity=0"])
    train(cfg, tmp_path / "run", teacher_path=tpath, show_progress=False)
    run = RunConfig(methods=[f"liftgan:{tmp_path / 'run'}"], metrics=["restore"], n_faces=2, batch_size=2, device="cpu",
                    data={"restore": str(twin_set)}, out=str(tmp_path / "res"), metric_options={"restore": {"inversion_steps": 1, "refine_steps": 1}})
    recs = run_benchmark(run, echo=False)
    psnr = [r for r in recs if r.metric == "restore_psnr" and r.setting == "overall"]
    assert len(psnr) == 1 and psnr[0].status == "ok" and psnr[0].method.startswith("liftgan")
    md = restore_table(recs).to_markdown()
    assert "LiftGAN" in md and "tiny_liftgan_64.pt is not there" not in md
    rc = main(["restore", "--student", str(tmp_path / "run" / "student.pt"), "--images", str(twin_set / "images"),
               "--masks", str(twin_set / "restore_masks"), "--out", str(tmp_path / "out"), "--steps", "1", "--set", "refine_steps=1"])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "000000" / "restored.png").is_file()
