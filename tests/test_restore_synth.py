"""``data synth --twins``: each damaged head's undamaged twin and its restore mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from digan.cli import main
from digan.data.heads import head_maps, sample_identity, undamaged
from digan.data.synth import SynthConfig, generate_synth, render_views, sample_view_light
from digan.data.synthetic import SynthDataset

CFG = dict(n=6, size=64, seed=3, views_per_identity=1, damage_prob=1.0, missing_prob=0.6, twins=True, batch_size=4)


@pytest.fixture(scope="module")
def twin_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("twins") / "set"
    generate_synth(out, config=SynthConfig(**CFG))
    return out


def test_undamaged_keeps_identity_and_drops_damage():
    p = sample_identity(3, 0, damage_prob=1.0, missing_prob=1.0)
    q = undamaged(p)
    assert p["damage_chips"] >= 1 and p["broken_ear"] == 1.0
    assert q["damage_chips"] == 0 and q["broken_ear"] == q["broken_nose"] == q["broken_topknot"] == 0
    assert {k: v for k, v in q.items() if not k.startswith(("damage", "broken"))} == \
        {k: v for k, v in p.items() if not k.startswith(("damage", "broken"))}
    m = head_maps(q, 64)
    assert float(m.damage.sum()) == 0.0
    # missing_prob moves thresholds only: the rest of the identity is the same draw
    a, b = sample_identity(3, 1, 1.0, 0.0), sample_identity(3, 1, 1.0, 1.0)
    assert {k: v for k, v in a.items() if not k.startswith("broken")} == {k: v for k, v in b.items() if not k.startswith("broken")}


def test_twin_is_an_independent_render_of_the_undamaged_identity(twin_dir):
    ds = SynthDataset(twin_dir)
    assert ds.has_twins
    cfg = SynthConfig(**CFG)
    for i in range(len(ds)):
        it = ds[i]
        p = ds.identity_params(int(it["identity"]))
        v, li, back = sample_view_light(cfg, i)
        ref = render_views([undamaged(p)], v[None], li[None], 64, cfg.fov, cfg.supersample, back[None])
        img8 = ((ref["image"].clamp(-1, 1) + 1) * 127.5).round()[0]
        assert torch.equal(((it["twin_image"] + 1) * 127.5).round(), img8)
        assert torch.equal(it["twin_mask"], ref["mask"][0])
        assert torch.allclose(it["twin_depth"], ref["depth"][0])


def test_restore_mask_covers_damage_and_missing_parts(twin_dir):
    ds = SynthDataset(twin_dir)
    saw_ear = False
    for i in range(len(ds)):
        it = ds[i]
        region = it["restore_mask"] > 0.5
        assert bool(region[it["damage"] > 0.5].all())
        missing = (it["twin_mask"] > 0.5) & (it["mask"] < 0.5)
        assert bool(region[missing].all())
        # away from the region (2 px margin for soil in crevices around chips) damaged == twin
        near = torch.nn.functional.max_pool2d(region.float()[None], 5, 1, 2)[0] > 0
        diff = (it["image"] - it["twin_image"]).abs().amax(0, keepdim=True)
        assert float(diff[~near].max()) <= 2 / 127.5 + 1e-6
        assert float(diff[region].mean()) > 0.02
        p = ds.identity_params(int(it["identity"]))
        saw_ear |= p["broken_ear"] > 0.5 and bool(missing.any())
        png = np.asarray(Image.open(twin_dir / "restore_masks" / f"{i:06d}.png"))
        assert np.array_equal(png > 127, region[0].numpy())
        assert (twin_dir / "twins" / f"{i:06d}.png").is_file()
    assert saw_ear, "the fixture should hold a head with a missing ear"


def test_undamaged_sample_is_its_own_twin(tmp_path):
    out = generate_synth(tmp_path / "clean", config=SynthConfig(**{**CFG, "n": 2, "damage_prob": 0.0}))
    ds = SynthDataset(out)
    for i in range(2):
        it = ds[i]
        assert torch.equal(it["image"], it["twin_image"]) and float(it["restore_mask"].sum()) == 0


def test_sets_without_twins_load_as_before(tmp_path):
    out = generate_synth(tmp_path / "plain", config=SynthConfig(n=2, size=64, seed=0))
    ds = SynthDataset(out)
    assert not ds.has_twins and "twin_image" not in ds[0]
    assert not (out / "twins").exists()


def test_cli_twins_flag(tmp_path, capsys):
    rc = main(["data", "synth", "--out", str(tmp_path / "s"), "--n", "2", "--seed", "4", "--twins"])
    assert rc == 0
    assert (tmp_path / "s" / "restore_masks" / "000001.png").is_file()
    assert main(["data", "synth", "--out", str(tmp_path / "t"), "--n", "2", "--set", "missing_prob=2"]) == 2
    assert "missing_prob" in capsys.readouterr().err
