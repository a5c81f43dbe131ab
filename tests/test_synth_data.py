"""Synthetic ground-truth heads: determinism, ground-truth consistency, manifest, atomic writes,
errors, loaders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from digan.cli import main
from digan.data.heads import PARAM_NAMES, head_maps, sample_identity
from digan.data.synth import SynthConfig, generate_synth, render_views, sample_view_light
from digan.data.synthetic import ImageFolderDataset, SynthDataset, load_synth
from digan.errors import DiganError
from digan.render import MeshRenderer, RendererConfig, normals_from_depth

SMALL = dict(n=10, size=64, seed=5, views_per_identity=3, batch_size=4)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "set"
    generate_synth(out, config=SynthConfig(**SMALL))
    return out


def _arrays(root: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.load(p) for p in sorted((root / "arrays").glob("*.npy"))}


# ------------------------------------------------------------------ determinism
def test_same_seed_same_data_regardless_of_batching(synth_dir, tmp_path):
    other = generate_synth(tmp_path / "again", config=SynthConfig(**{**SMALL, "batch_size": 7}))
    a, b = _arrays(synth_dir), _arrays(other)
    assert a.keys() == b.keys()
    for k in a:
        if a[k].dtype.kind == "f":
            assert np.allclose(a[k], b[k], atol=1e-5), k
        else:
            # 8-bit images may differ by one level where a float lands on a rounding boundary
            assert np.abs(a[k].astype(np.int64) - b[k].astype(np.int64)).max() <= 1, k
    assert np.array_equal(a["view"], b["view"]) and np.array_equal(a["light"], b["light"])
    ma, mb = (json.loads((r / "manifest.json").read_text()) for r in (synth_dir, other))
    assert ma["samples"] == mb["samples"] and ma["identities"] == mb["identities"]


def test_sample_depends_only_on_seed_and_index():
    cfg = SynthConfig(**SMALL)
    v1 = sample_view_light(cfg, 7)
    v2 = sample_view_light(SynthConfig(**{**SMALL, "n": 500}), 7)
    assert all(np.array_equal(x, y) for x, y in zip(v1, v2))
    assert not np.array_equal(sample_view_light(cfg, 8)[0], v1[0])
    assert not np.array_equal(sample_view_light(SynthConfig(**{**SMALL, "seed": 6}), 7)[0], v1[0])
    assert sample_identity(5, 3) == sample_identity(5, 3) != sample_identity(6, 3)


def test_different_seed_different_faces(synth_dir, tmp_path):
    other = generate_synth(tmp_path / "s6", config=SynthConfig(**{**SMALL, "seed": 6, "n": 3}))
    a = np.load(synth_dir / "arrays" / "images.npy")[:3].astype(float)
    b = np.load(other / "arrays" / "images.npy").astype(float)
    assert np.abs(a - b).mean() > 5


# ------------------------------------------------------------------ ground truth
def test_stored_ground_truth_equals_a_rerender(synth_dir):
    ds = SynthDataset(synth_dir)
    idx = [0, 4, 9]
    params = [ds.identity_params(int(ds.arrays["identity"][i])) for i in idx]
    res = render_views(params, np.asarray(ds.arrays["view"][idx]), np.asarray(ds.arrays["light"][idx]), ds.size)
    for j, i in enumerate(idx):
        it = ds[i]
        assert torch.equal(it["mask"], res["mask"][j])
        assert torch.allclose(it["depth"], res["depth"][j], atol=1e-6)
        assert torch.allclose(it["normal"], res["normal"][j], atol=1e-3)  # stored as float16
        assert torch.equal(it["damage"], res["damage"][j])


def test_views_are_renders_of_the_stored_canonical_head(synth_dir):
    # an independent path: the renderer called directly on the stored canonical arrays
    ds = SynthDataset(synth_dir)
    r = MeshRenderer(RendererConfig(image_size=ds.size))
    for i in (1, 5, 8):
        it = ds[i]
        depth, mask = r.render_depth(it["canonical_depth"][None], ds.views([i]), vertex_mask=it["canonical_mask"][None])
        assert torch.equal(mask[0], it["mask"])
        assert torch.allclose(depth[0], it["depth"], atol=1e-6)
    # and the canonical maps are those of the procedural head
    p = ds.identity_params(2)
    m = head_maps(p, ds.size)
    assert torch.allclose(ds[6]["canonical_depth"], m.depth) and int(ds.arrays["identity"][6]) == 2
    assert torch.allclose(ds[6]["canonical_albedo"], m.albedo, atol=1e-3)


def test_normals_agree_with_finite_differences_of_the_depth(synth_dir):
    ds = SynthDataset(synth_dir)
    med, med_mirrored = [], []
    for i in range(len(ds)):
        it = ds[i]
        n_fd = normals_from_depth(it["depth"][None], 10.0)[0]
        inner = (F.avg_pool2d(it["mask"][None], 5, 1, 2) > 0.999)[0, 0]  # 2 px from the outline
        ang = torch.rad2deg(torch.acos((n_fd * it["normal"]).sum(0).clamp(-1, 1)))[inner]
        med.append(ang.median().item())
        wrong = it["normal"] * torch.tensor([-1.0, 1.0, 1.0]).view(3, 1, 1)  # a mirrored x convention
        med_mirrored.append(torch.rad2deg(torch.acos((n_fd * wrong).sum(0).clamp(-1, 1)))[inner].median().item())
        assert inner.sum() > 300
    assert max(med) < 3.0
    assert min(med_mirrored) > 4 * max(med)
    # canonical normals are unit vectors of the canonical depth
    it = ds[0]
    cn = normals_from_depth(it["canonical_depth"][None], 10.0)[0]
    assert torch.allclose(cn, it["canonical_normal"], atol=2e-3)


def test_yaw_sign_in_the_data(synth_dir):
    # the canonical nose tip lands right of the head's centre for positive yaw, left for negative,
    # and the stored depth there is the nose's posed depth (it is visible where the view says)
    from digan.render import depth_to_points, project_points, transform_points

    ds = SynthDataset(synth_dir)
    checked = 0
    for i in range(len(ds)):
        it = ds[i]
        yaw = it["rotation"][1].item()
        if abs(yaw) < 15:
            continue
        cd = it["canonical_depth"][0].clone()
        cd[: ds.size // 3] = 9.0  # below the forehead: the nearest point is the nose tip
        k = int(torch.argmin(cd))
        pts = depth_to_points(it["canonical_depth"][None], 10.0).reshape(1, -1, 3)[:, k : k + 1]
        centre = depth_to_points(it["canonical_depth"][None], 10.0)[:, ds.size // 2, ds.size // 2][:, None]
        centre[..., 2] = 1.02  # the middle of the head
        tip, mid = (project_points(transform_points(p, ds.views([i]), 1.0), ds.size, 10.0)[0, 0] for p in (pts, centre))
        assert (tip[0] - mid[0]).item() * yaw > 0, (i, yaw)
        u, v = int(round(tip[0].item())), int(round(tip[1].item()))
        near = it["depth"][0, v - 1 : v + 2, u - 1 : u + 2]  # the tip is at the nose's contour
        assert abs(near.min().item() - tip[2].item()) < 3e-3
        checked += 1
    assert checked >= 3


# ------------------------------------------------------------------ files and manifest
def test_manifest_schema_and_files(synth_dir):
    m = json.loads((synth_dir / "manifest.json").read_text())
    assert m["format"] == "digan-synth-heads" and m["version"] == 1
    assert (m["n"], m["size"], m["n_identities"], m["views_per_identity"]) == (10, 64, 4, 3)
    assert m["identity_param_names"] == PARAM_NAMES + ["noise_seed"]
    for name, spec in m["fields"].items():
        a = np.load(synth_dir / spec["file"], mmap_mode="r")
        assert list(a.shape) == spec["shape"], name
        assert str(a.dtype) == spec["dtype"], name
        assert spec["units"] and spec["description"]
    assert len(m["samples"]) == 10 and len(m["identities"]) == 4
    views = np.load(synth_dir / "arrays" / "view.npy")
    for s in m["samples"]:
        assert (synth_dir / s["image"]).is_file()
        assert s["identity"] == s["index"] // 3
        assert s["view"]["yaw"] == pytest.approx(float(views[s["index"], 1]))
        assert abs(s["view"]["yaw"]) <= 35.0 and abs(s["view"]["pitch"]) <= 12.0
    assert m["provenance"]["kind"] == "data" and m["provenance"]["seeds"] == {"seed": 5}
    assert json.loads((synth_dir / "config.json").read_text()) == m["config"]
    assert json.loads((synth_dir / "run.json").read_text())["kind"] == "data"
    for sheet in ("contact_sheet.png", "ground_truth_sheet.png"):
        assert Image.open(synth_dir / sheet).size[0] > 64
    # the PNGs are the stored images
    imgs = np.load(synth_dir / "arrays" / "images.npy")
    assert np.array_equal(np.asarray(Image.open(synth_dir / "images" / "000003.png")), imgs[3])


def test_existing_output_needs_force_and_failures_keep_the_old_one(synth_dir, tmp_path, monkeypatch):
    out = tmp_path / "keep"
    generate_synth(out, config=SynthConfig(**{**SMALL, "n": 2}))
    before = (out / "manifest.json").read_text()
    with pytest.raises(DiganError, match="already exists"):
        generate_synth(out, config=SynthConfig(**{**SMALL, "n": 2}))

    import digan.data.synth as synth

    def boom(*a, **k):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(synth, "render_views", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        generate_synth(out, config=SynthConfig(**{**SMALL, "n": 3}), force=True)
    assert (out / "manifest.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep"]  # no temporary folders left
    monkeypatch.undo()
    generate_synth(out, config=SynthConfig(**{**SMALL, "n": 3}), force=True)
    assert json.loads((out / "manifest.json").read_text())["n"] == 3


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--size", "100"], "bad size 100"),
        (["--n", "0"], "bad n 0"),
        (["--set", "yaw_range=100"], "bad yaw_range"),
        (["--set", "nope=1"], "unknown config key 'nope'"),
        (["--views-per-identity", "0"], "bad views_per_identity"),
    ],
)
def test_bad_inputs_are_one_line_errors(tmp_path, capsys, args, fragment):
    rc = main(["data", "synth", "--out", str(tmp_path / "x"), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and fragment in err and "\n" not in err
    assert not (tmp_path / "x").exists()


def test_cli_writes_a_data_set(tmp_path):
    out = tmp_path / "cli"
    assert main(["data", "synth", "--out", str(out), "--n", "3", "--size", "64", "--seed", "1", "--set", "views_per_identity=1"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["n"] == 3 and m["n_identities"] == 3 and m["config"]["seed"] == 1
    assert main(["data", "synth", "--out", str(out), "--n", "3"]) == 2


# ------------------------------------------------------------------ loaders
def test_synth_dataset_items(synth_dir):
    ds = load_synth(synth_dir)
    assert len(ds) == 10
    it = ds[4]
    shapes = {k: tuple(v.shape) for k, v in it.items()}
    assert shapes["image"] == (3, 64, 64) and shapes["depth"] == (1, 64, 64) and shapes["normal"] == (3, 64, 64)
    assert shapes["canonical_albedo"] == (3, 64, 64) and shapes["rotation"] == (3,) and shapes["light"] == (4,)
    assert it["image"].min() >= -1 and it["image"].max() <= 1
    png = torch.from_numpy(np.array(Image.open(synth_dir / "images" / "000004.png"))).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.allclose(it["image"], png)
    n = it["normal"][:, it["mask"][0] > 0]
    assert torch.allclose(n.norm(dim=0), torch.ones(n.shape[1]), atol=2e-3)
    assert torch.all(it["depth"][it["mask"] > 0] < 1.1)
    bg = it["depth"][it["mask"] == 0]
    assert torch.allclose(bg, torch.full_like(bg, 1.2))
    m = json.loads((synth_dir / "manifest.json").read_text())
    v, li = ds.views([4]), ds.lights([4])
    assert v.yaw.item() == pytest.approx(m["samples"][4]["view"]["yaw"])
    assert li.direction[0, 0].item() == pytest.approx(m["samples"][4]["light"]["dx"])
    loader = torch.utils.data.DataLoader(ds, batch_size=4)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 64, 64) and batch["identity"].tolist() == [0, 0, 0, 1]


def test_synth_dataset_rejects_other_folders(tmp_path):
    with pytest.raises(DiganError, match="not a synthetic data set"):
        SynthDataset(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(DiganError, match="format"):
        SynthDataset(tmp_path)


def test_image_folder_dataset(synth_dir, tmp_path):
    ds = ImageFolderDataset(synth_dir)  # the preview sheets are skipped
    assert len(ds) == 10 and ds.size == 64
    assert torch.allclose(ds[4], SynthDataset(synth_dir)[4]["image"])
    with pytest.raises(DiganError, match="expected 32x32"):
        ImageFolderDataset(synth_dir / "images", size=32)
    with pytest.raises(DiganError, match="no .png/.jpg"):
        ImageFolderDataset(tmp_path)
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    Image.new("RGB", (32, 32)).save(tmp_path / "b.jpg")
    mixed = ImageFolderDataset(tmp_path)
    with pytest.raises(DiganError, match="expected 64x64"):
        mixed[1]


def test_heads_fit_digan_depth_range_and_look_like_their_parameters():
    # every head lies inside DIGAN's depth range [0.9, 1.1], so a DIGAN depth net can express it
    for i in range(12):
        p = sample_identity(11, i)
        m = head_maps(p, 64)
        d = m.depth[m.mask > 0]
        assert d.min() >= 0.9 and d.max() <= 1.1
        assert torch.all(m.depth[m.mask == 0] == 1.04)
        damaged = p["damage_chips"] > 0 or p["broken_nose"] or p["broken_topknot"] or p["broken_ear"]
        assert (m.damage.sum() > 0) == bool(damaged)
    # a longer nose protrudes further: the parameters act on the shape as named
    p = sample_identity(11, 0)
    p.update(broken_nose=0.0, damage_chips=0.0)
    short = head_maps({**p, "nose_height": 0.8}, 64).depth.min()
    tall = head_maps({**p, "nose_height": 1.25}, 64).depth.min()
    assert tall < short - 0.003
