"""Report figures: data plotted equals the records, files are real PNG/PDF with content, shape and
shading images match closed forms, model figures place the right renders in the right cells."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from digan.errors import DiganError
from digan.render.types import Light
from evaluate.methods import Capabilities, Method, Rendered
from evaluate.records import Record
from reports import figures as F


class SphereMethod(Method):
    """Test double: a Lambertian sphere (normals n_z > 0 toward the camera) whose centre moves to
    image x = 0.4 sin(yaw); latents are RGB albedos. Shared with test_reports_html.py."""

    def __init__(self, name="fake", variant="full", size=32, pose=True, light=True, depth=True, normals=True):
        self.name, self.variant, self.size, self.normals = name, variant, size, normals
        reasons = {} if pose else {"pose": "2D GAN: no pose control"}
        if not depth:
            reasons["depth"] = "no 3D output"
        self._caps = Capabilities(pose=pose, light=light, depth=depth, image_size=size, reasons=reasons)

    @property
    def capabilities(self):
        return self._caps

    def latents(self, n, seed, start=0):
        return torch.stack([torch.rand(3, generator=torch.Generator().manual_seed(seed * 1000003 + i)) for i in range(start, start + n)])

    def render(self, latents, yaw=0.0, pitch=0.0, light=None):
        b, s = latents.shape[0], self.size
        v, u = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
        cx, r = 0.4 * math.sin(math.radians(yaw)), 0.45
        dx, dy = (u - cx) / r, v / r
        inside = (dx ** 2 + dy ** 2) < 1
        nz = torch.sqrt((1 - dx ** 2 - dy ** 2).clamp_min(0))
        n = (torch.stack([dx, dy, nz]) * inside)[None].expand(b, -1, -1, -1)
        mask = inside.float()[None, None].expand(b, 1, -1, -1)
        light = light or Light.make(0.5, 0.5, 0.0, 0.0, batch=b)
        shade = light.ambient.view(-1, 1, 1, 1) + light.diffuse.view(-1, 1, 1, 1) * (
            n * light.unit_direction().view(-1, 3, 1, 1)).sum(1, keepdim=True).clamp_min(0)
        img = (latents.view(b, 3, 1, 1) * shade) * mask + (1 - mask)
        depth = (1.0 - 0.1 * nz)[None, None].expand(b, 1, -1, -1) * mask + 2.0 * (1 - mask)
        return Rendered(img * 2 - 1, depth=depth if self._caps.depth else None,
                        normal=n if (self.normals and self._caps.depth) else None, mask=mask)


def _yaw_records():
    out = []
    for m, base in (("liftgan", 0.5), ("digan", 0.6)):
        for y in (45, -45, 0, -15, 15):  # unsorted on purpose
            out.append(Record(m, "identity", setting=f"pitch=0,yaw={y}", value=base - abs(y) / 300, unit="cos",
                              higher_is_better=True, stats={"std": 0.01 * (1 + abs(y) / 15)}))
        out.append(Record(m, "identity", setting="pitch=10,yaw=15", value=0.0, higher_is_better=True))  # not pitch 0: left out
        out.append(Record(m, "identity", value=base - 0.1, higher_is_better=True))
    out.append(Record("teacher", "identity", setting="yaw=15", status="n/a", reason="2D GAN: no pose control"))
    return out


def _png_array(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(float)


def test_metric_vs_yaw_plots_the_records(tmp_path):
    fig = F.metric_vs_yaw_figure(_yaw_records(), "identity")
    ax = fig.axes[0]
    series = {c.get_label(): c for c in ax.containers}  # one ErrorbarContainer per method
    assert set(series) == {"LiftGAN", "DIGAN (ours)"}
    x, y = series["DIGAN (ours)"].lines[0].get_data()
    assert list(x) == [-45, -15, 0, 15, 45]
    np.testing.assert_allclose(y, [0.6 - abs(v) / 300 for v in x])
    # error bars: one vertical segment per point spanning +-std
    segs = series["DIGAN (ours)"].lines[2][0].get_segments()
    spans = [float(sg[1][1] - sg[0][1]) for sg in segs]
    np.testing.assert_allclose(spans, [2 * 0.01 * (1 + abs(v) / 15) for v in x])
    assert "2D GAN: no pose control" in " ".join(t.get_text() for t in fig.texts)
    png, pdf = F.save_figure(fig, tmp_path, "id")
    arr = _png_array(png.read_bytes())
    assert arr.shape[0] > 200 and arr.std() > 10
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF") and len(data) > 5000
    assert F.metric_vs_yaw_figure([r for r in _yaw_records() if r.setting == "overall"], "identity") is None


def test_metric_bars_values_and_best(tmp_path):
    recs = [Record("a", "fid", value=30.0, higher_is_better=False, stats={"std": 1.0}), Record("b", "fid", value=20.0, higher_is_better=False),
            Record("c", "fid", status="n/a", reason="x"), Record("a", "identity", value=0.5, higher_is_better=True)]
    fig = F.metric_bars_figure(recs)
    ax = fig.axes[0]
    widths = [p.get_width() for p in ax.patches]
    assert widths == [30.0, 20.0, 0.0]
    colors = [p.get_facecolor() for p in ax.patches]
    assert colors[1] != colors[0]  # best (lowest FID) highlighted
    assert any(t.get_text().strip() == "n/a" for t in ax.texts)
    png, _ = F.save_figure(fig, tmp_path, "bars")
    assert _png_array(png.read_bytes()).std() > 10


def test_loss_curves_from_several_runs(tmp_path):
    for k, name in enumerate(("run_a", "run_b")):
        d = tmp_path / name
        d.mkdir()
        steps = np.arange(0, 1000, 5)
        lines = ["step,rec,flip,lr"] + [f"{s},{2 * math.exp(-s / (200 + 100 * k)) + 0.01},{0.5 + 0.1 * k},1e-4" for s in steps]
        (d / "losses.csv").write_text("\n".join(lines) + "\n")
    fig = F.loss_curves_figure([tmp_path / "run_a", tmp_path / "run_b"])
    titles = [a.get_title() for a in fig.axes if a.get_visible() and a.get_title()]
    assert titles == ["rec", "flip"]  # 'lr' and 'step' are not losses
    rec_ax = fig.axes[0]
    assert rec_ax.get_yscale() == "log"  # 2.01 -> ~0.01: spans more than 20x
    labelled = [l for l in rec_ax.get_lines() if l.get_label() in ("run_a", "run_b")]
    assert len(labelled) == 2
    raw = [l for l in rec_ax.get_lines() if l.get_label().startswith("_")][0]
    np.testing.assert_allclose(raw.get_ydata()[:3], [2 * math.exp(-s / 200) + 0.01 for s in (0, 5, 10)])
    png, pdf = F.save_figure(fig, tmp_path, "loss")
    assert _png_array(png.read_bytes()).std() > 5 and pdf.stat().st_size > 3000
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "losses.csv").write_text("iter,rec\n1,2\n")
    with pytest.raises(DiganError, match="no 'step' column"):
        F.loss_curves_figure([tmp_path / "bad"])
    with pytest.raises(DiganError, match="no losses.csv"):
        F.loss_curves_figure([tmp_path / "missing"])


def test_normals_from_depth_of_a_tilted_plane():
    # plane Z = z0 + k X in camera space; its normal is normalize(-k, 0, 1)
    s, fov, z0, k = 33, 10.0, 1.0, 0.7
    f = (s - 1) / 2 / math.tan(math.radians(fov) / 2)
    u = torch.arange(s, dtype=torch.float64).view(1, -1).expand(s, -1)
    depth = z0 / (1 - k * (u - (s - 1) / 2) / f)
    n = F.normals_from_depth(depth[None, None], fov)
    expected = torch.tensor([-k, 0.0, 1.0], dtype=torch.float64)
    expected = expected / expected.norm()
    np.testing.assert_allclose(n[0, :, 5:-5, 5:-5].reshape(3, -1).T.numpy(), expected.expand((s - 10) ** 2, 3).numpy(), atol=1e-6)


def test_clay_and_shading_closed_forms():
    n = torch.zeros(1, 3, 4, 4)
    n[:, 2] = 1.0
    mask = torch.ones(1, 1, 4, 4)
    mask[..., 0] = 0
    l = torch.tensor([-0.5, -0.6, 1.0])
    shade = 0.15 + 0.85 * float(l[2] / l.norm())
    clay = F.clay_render(n, mask)
    assert clay.shape == (1, 3, 4, 4)
    np.testing.assert_allclose(((clay[0, 0, :, 1:] + 1) / 2).numpy(), 0.85 * shade, atol=1e-6)
    assert torch.all(clay[..., 0] == 1)  # white background
    np.testing.assert_allclose(F.clay_render(-n, mask).numpy(), clay.numpy())  # two-sided
    light = Light.make(0.3, 0.6, 1.0, 0.0)
    s = F.shading_map(n, light, mask)
    np.testing.assert_allclose(s[0, 0, :, 1:].numpy(), 0.3 + 0.6 / math.sqrt(2), atol=1e-6)
    assert torch.all(s[..., 0] == 0)


def _centroid_x(cell: np.ndarray) -> float:
    fg = cell.mean(axis=2) < 0.99
    return float(np.nonzero(fg)[1].mean())


def test_sample_rows_views_in_order_and_missing_capabilities():
    methods = [SphereMethod("digan"), SphereMethod("teacher", pose=False, depth=False, light=False)]
    cells, cols, rows = F._sample_rows(methods, 2, 0, (-45.0, 0.0, 45.0), (60.0,), lambda m: m.name)
    assert cols == ["yaw -45°", "yaw 0°", "yaw 45°", "shape 60°"] and rows == ["digan", "", "teacher", ""]
    left, mid, right, shape = cells[0]
    assert _centroid_x(left) < _centroid_x(mid) < _centroid_x(right)
    # the frontal cell is exactly the method's render
    expected = ((methods[0].render(methods[0].latents(2, 0)).image[0] + 1) / 2).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(mid, expected, atol=1e-6)
    assert shape.std(axis=2).max() < 1e-6  # clay is grey
    # 2D method: frontal image only, the reason in every other cell
    assert cells[2][0] == "2D GAN: no pose control" and isinstance(cells[2][1], np.ndarray)
    # a method with depth but no normals still gets a shape from its depth
    cells, *_ = F._sample_rows([SphereMethod(normals=False)], 1, 0, (0.0,), (0.0,), lambda m: m.name)
    assert isinstance(cells[0][1], np.ndarray) and cells[0][1].std() > 0.01


def test_relight_rows_follow_the_light():
    cells, cols, _ = F._relight_rows([SphereMethod("digan")], 1, 0, F.DEFAULT_LIGHTS)
    assert cols[:2] == ["relit: left", "relit: front"] and cols[-1] == "normals"
    shading_left = cells[0][4].mean(axis=2)
    h, w = shading_left.shape
    sphere = shading_left < 0.999
    lhs = shading_left[:, : w // 2][sphere[:, : w // 2]].mean()
    rhs = shading_left[:, w // 2:][sphere[:, w // 2:]].mean()
    assert lhs > rhs + 0.1  # lit from the left (dx = -1)
    normals = cells[0][-1]
    assert normals[h // 2, w // 2, 2] == pytest.approx(1.0, abs=0.05)  # frontal normal (0,0,1) -> blue


def test_model_figures_saved(tmp_path):
    ms = [SphereMethod("digan"), SphereMethod("liftgan", light=False)]
    for stem, fig in (("s", F.sample_grid_figure(ms, n_faces=2)), ("r", F.relighting_figure(ms, n_faces=1)),
                      ("a", F.ablation_figure([SphereMethod("digan", v) for v in ("no_flip", "full")], n_faces=1))):
        png, pdf = F.save_figure(fig, tmp_path, stem)
        arr = _png_array(png.read_bytes())
        assert arr.std() > 10 and pdf.read_bytes().startswith(b"%PDF-")
    assert F.relighting_figure([SphereMethod(light=False)]) is None
    assert F.ablation_figure([SphereMethod()]) is None
