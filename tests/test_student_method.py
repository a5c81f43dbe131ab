"""The ``digan`` benchmark method: checkpoint/variant resolution, rendering at requested poses
and lights, and reconstruction by teacher inversion."""

from __future__ import annotations

import pytest
import torch

from digan.errors import DiganError
from digan.render.types import Light
from digan.student.config import make_config
from digan.student.method import DiganMethod, invert_teacher, resolve_checkpoint
from digan.student.testing import save_random_teacher
from digan.student.train import train
from evaluate.methods import create_method

pytestmark = [pytest.mark.filterwarnings("ignore:VGG16 weights not found"), pytest.mark.filterwarnings("ignore:no torch face recogniser")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("digan_method")
    tpath = d / "teacher.pt"
    teacher = save_random_teacher(tpath, size=32, style_dim=32, width=16)
    for variant in ("full", "no_flip"):
        cfg = make_config("tiny", variant, ["train.w_stats_samples=256", "train.batch=2", "train.steps=2", "loss.identity=0"])
        train(cfg, d / "runs" / variant, teacher_path=tpath, show_progress=False)
    return d, tpath, teacher


def test_resolve_checkpoint_and_variants(trained):
    d, _, _ = trained
    runs = d / "runs"
    assert resolve_checkpoint(str(runs), "no_flip") == runs / "no_flip" / "student.pt"
    assert resolve_checkpoint(None, "no_flip", {"no_flip": str(runs / "no_flip" / "student.pt")}) == runs / "no_flip" / "student.pt"
    with pytest.raises(DiganError, match="no checkpoint for digan@mlp"):
        resolve_checkpoint(str(runs), "mlp")
    with pytest.raises(DiganError, match="no checkpoint for digan@no_albedo"):
        resolve_checkpoint(None, "no_albedo")
    with pytest.raises(DiganError, match="trained as digan@full"):
        DiganMethod(runs / "full" / "student.pt", variant="no_flip")
    m = create_method(f"digan@no_flip:{runs}")
    assert m.variant == "no_flip" and m.capabilities.reconstruct and m.capabilities.pose


def test_render_pose_light_and_determinism(trained):
    d, _, _ = trained
    m = create_method(f"digan:{d / 'runs' / 'full' / 'student.pt'}")
    z = m.latents(3, seed=1)
    a = m.render(z, yaw=30.0, pitch=10.0)
    assert a.image.shape == (3, 3, 32, 32) and a.depth.shape == (3, 1, 32, 32) and a.normal.shape == (3, 3, 32, 32)
    assert a.image.min() >= -1 and a.image.max() <= 1
    b = m.render(m.latents(3, seed=1), yaw=30.0, pitch=10.0)
    torch.testing.assert_close(a.image, b.image)
    c = m.render(z, yaw=-30.0)
    assert (a.image - c.image).abs().mean() > 1e-3  # the pose changes the image
    dark = m.render(z, light=Light.make(0.2, 0.0, batch=3))
    bright = m.render(z, light=Light.make(1.0, 0.0, batch=3))
    fg = (dark.mask > 0).expand(-1, 3, -1, -1)
    assert (bright.image[fg] + 1).mean() > (dark.image[fg] + 1).mean() * 2  # ambient scales the colour
    # the render's mask is the head: at the frontal view exactly the canonical foreground
    # (depth in front of the background plane), not every covered pixel
    front = m.render(z, yaw=0.0)
    est = m.student.estimate(m.student.style(z, m.truncation))
    head = m.student.g3d.foreground(est.depth)
    torch.testing.assert_close(front.mask, head)
    assert 0 < float(front.mask.mean()) < 1


def test_inversion_reproduces_teacher_images(trained):
    _, _, teacher = trained
    torch.manual_seed(0)
    w_true = teacher.truncate(teacher.mapping(torch.randn(2, 32)), 0.7)
    with torch.no_grad():
        img = teacher.synthesis(w_true).clamp(-1, 1)
        start = teacher.synthesis(teacher.w_mean.reshape(1, -1).expand(2, -1)).clamp(-1, 1)
    std = teacher.mapping(torch.randn(512, 32)).std(0).detach()
    w = invert_teacher(teacher, img, std, steps=60, lr=0.05)
    with torch.no_grad():
        rec = teacher.synthesis(w).clamp(-1, 1)
    assert (rec - img).abs().mean() < 0.5 * (start - img).abs().mean()


def test_reconstruct_returns_view_space_geometry(trained):
    d, _, teacher = trained
    m = create_method(f"digan:{d / 'runs' / 'full' / 'student.pt'}", inversion_steps=5)
    with torch.no_grad():
        img = teacher.sample(2, seed=3, psi=0.7)
    r = m.reconstruct(img)
    assert r.depth.shape == (2, 1, 32, 32) and r.normal.shape == (2, 3, 32, 32) and r.mask.shape == (2, 1, 32, 32)
    inside = r.mask > 0
    assert inside.any()
    assert r.depth[inside].min() > 0.8 and r.depth[inside].max() < 1.2
    torch.testing.assert_close(r.normal.norm(dim=1, keepdim=True)[inside], torch.ones_like(r.depth[inside]), atol=1e-3, rtol=0)


def test_sample_faces_writes_views_maps_relighting_and_turntable(trained, tmp_path):
    import imageio.v2 as imageio
    from PIL import Image

    from digan.student.inference import Student, sample_faces

    d, _, teacher = trained
    Student.load(d / "runs" / "full" / "student.pt", teacher=teacher)  # same weights, given as an object
    s = Student.load(d / "runs" / "full" / "student.pt")
    res = sample_faces(s, tmp_path / "out", n=3, seed=0, yaws=(-20.0, 0.0, 20.0), pitches=(0.0, 10.0),
                       lights=((0.5, 0.5, 0.5, 0.0),), turntable="gif", n_frames=5, batch=2)
    face = tmp_path / "out" / "face_0002"
    names = {p.name for p in face.iterdir()}
    assert {"teacher.png", "yaw-20_pitch+0.png", "yaw+20_pitch+10.png", "albedo.png", "depth.png", "normal.png",
            "shading.png", "relit_0.png", "turntable.gif"} <= names
    assert res.n_faces == 3 and res.n_images == 3 * (1 + 6 + 4 + 1)
    assert len(imageio.mimread(face / "turntable.gif")) == 5
    grid = Image.open(tmp_path / "out" / "grid.png")
    assert grid.size == (7 * 34 + 2, 3 * 34 + 2)  # 3 faces x (teacher + 6 views), 32 px + 2 px padding
    with pytest.raises(DiganError, match="already exists"):
        sample_faces(s, tmp_path / "out", n=1)
