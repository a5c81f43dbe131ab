"""Mirror averaging at inference (``model.flip_average``): the mirror of an estimate renders the
mirror image, and a reconstruction with mirror averaging is exactly mirror-equivariant."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from digan.errors import DiganError
from digan.student.build import build_g3d
from digan.student.config import make_config
from digan.student.inference import Student
from digan.student.model import MIRROR_VIEW_SIGN, make_renderer
from digan.student.testing import random_teacher

pytestmark = [pytest.mark.filterwarnings("ignore:VGG16 weights not found"), pytest.mark.filterwarnings("ignore:no torch face recogniser")]


@pytest.fixture(scope="module")
def student():
    teacher = random_teacher(size=32, style_dim=32, width=8, seed=0)
    cfg = make_config("tiny", overrides=["train.w_stats_samples=256"])
    torch.manual_seed(0)
    g3d = build_g3d(cfg, teacher)
    with torch.no_grad():  # an asymmetric depth, so a wrong mirror shows in the render
        for p in g3d.depth_net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return Student(g3d, teacher, cfg)


def _posed(g, est, raw_view, raw_light):
    vr, lr = torch.tensor([raw_view] * est.depth.shape[0]), torch.tensor([raw_light] * est.depth.shape[0])
    return replace(est, view_raw=vr, light_raw=lr, view=g.view_net.to_view(vr), light=g.light_net.to_light(lr))


def test_mirrored_estimate_renders_the_mirror_image(student):
    g = student.g3d
    with torch.no_grad():
        est = _posed(g, g.estimate(student.style(student.latents(3, seed=1)), student.teacher),
                     [0.2, 0.45, 0.15, 0.6, -0.3, 0.2], [0.1, 0.3, 0.7, -0.2])
        assert (est.depth - est.depth.flip(3)).abs().max() > 1e-3  # the depth is not symmetric
        ren = make_renderer(student.cfg, g.size)
        ref = g.render(est, ren, filter_grads=False).image.flip(3)
        err = (g.render(g.mirror_estimate(est), ren, filter_grads=False).image - ref).abs().mean()
        # each sign matters: a mirror that keeps the yaw, the roll, the x shift or the light's dx
        # (or negates the pitch) renders something else
        for i, wrong in ((1, "yaw"), (2, "roll"), (3, "x shift"), (0, "pitch")):
            bad_sign = list(MIRROR_VIEW_SIGN)
            bad_sign[i] = -bad_sign[i]
            m = g.mirror_estimate(est)
            vr = est.view_raw * torch.tensor(bad_sign)
            bad = g.render(replace(m, view_raw=vr, view=g.view_net.to_view(vr)), ren, filter_grads=False).image
            assert (bad - ref).abs().mean() > 4 * err, wrong
        m = g.mirror_estimate(est)
        lr = m.light_raw * torch.tensor([1.0, 1.0, -1.0, 1.0])
        bad = g.render(replace(m, light_raw=lr, light=g.light_net.to_light(lr)), ren, filter_grads=False).image
        assert (bad - ref).abs().mean() > 4 * err, "light dx"
    assert err < 0.04  # turned, the mesh's triangulation (one diagonal per cell) is not mirror-symmetric
    with torch.no_grad():  # frontal, with a side light, it plays no part: the mirror is exact
        est = _posed(g, est, [0.0] * 6, [0.1, 0.3, 0.7, -0.2])
        ref = g.render(est, ren, filter_grads=False).image.flip(3)
        torch.testing.assert_close(g.render(g.mirror_estimate(est), ren, filter_grads=False).image, ref, rtol=0, atol=1e-5)


def test_mirror_twice_and_average(student):
    g = student.g3d
    with torch.no_grad():
        a = g.estimate(student.style(student.latents(2, seed=2)), student.teacher)
        b = g.estimate(student.style(student.latents(2, seed=3)), student.teacher)
        back = g.mirror_estimate(g.mirror_estimate(a))
        for name in ("depth", "albedo", "canonical", "transform_map", "view_raw", "light_raw"):
            assert torch.equal(getattr(back, name), getattr(a, name)), name
        avg = g.average_estimates([a, b])
        torch.testing.assert_close(avg.depth, (a.depth + b.depth) / 2)
        torch.testing.assert_close(avg.view.rotation, (a.view.rotation + b.view.rotation) / 2)
        torch.testing.assert_close(avg.light.direction, (a.light.direction + b.light.direction) / 2)
    with pytest.raises(DiganError, match="at least one"):
        g.average_estimates([])


def test_reconstruct_with_mirror_averaging_is_mirror_equivariant(student):
    g = student.g3d
    with torch.no_grad():
        imgs = student.teacher_image(student.style(student.latents(2, seed=4)))
    imgs = (imgs + 0.3 * torch.linspace(-1, 1, imgs.shape[-1])).clamp(-1, 1)  # not mirror-symmetric
    a = student.reconstruct(imgs, steps=3)
    b = student.reconstruct(imgs.flip(3), steps=3)
    assert student.cfg.model.flip_average and a.w_mirror is not None
    mb = g.mirror_estimate(b.estimate)
    for name in ("depth", "albedo", "view_raw", "light_raw"):
        torch.testing.assert_close(getattr(mb, name), getattr(a.estimate, name), rtol=0, atol=1e-6, msg=name)
    # one inversion per image (the paper) has no such symmetry: the test can tell
    a1 = student.reconstruct(imgs, steps=3, flip_average=False)
    b1 = student.reconstruct(imgs.flip(3), steps=3, flip_average=False)
    assert a1.w_mirror is None and torch.equal(a1.w, a.w)
    assert (g.mirror_estimate(b1.estimate).view_raw - a1.estimate.view_raw).abs().max() > 1e-3
    # codes given: only the mirror is inverted, the result is the same
    c = student.reconstruct(imgs, steps=3, w=a.w)
    assert torch.equal(c.estimate.depth, a.estimate.depth)


def test_method_option_flip_average(student, tmp_path):
    from digan.student.method import BUNDLED_STUDENT
    from evaluate.methods import create_method

    m = create_method("digan", inversion_steps=2)
    assert m.flip_average is True and m.info()["inversion"]["flip_average"] is True
    assert create_method("digan", flip_average=False).info()["inversion"]["flip_average"] is False
    with pytest.raises(DiganError, match="flip_average must be true or false"):
        create_method(f"digan:{BUNDLED_STUDENT}", flip_average="maybe")
    assert create_method("liftgan", flip_average=False).flip_average is False
    with pytest.raises(DiganError, match="flip_average must be true or false"):
        create_method("liftgan", flip_average=1)


def test_reconstruct_rejects_images_it_cannot_invert(student):
    size = student.g3d.size
    for bad in (torch.zeros(2, 3, size // 2, size // 2), torch.zeros(2, 1, size, size), torch.zeros(3, size, size)):
        with pytest.raises(DiganError, match=f"expects images \\(B,3,{size},{size}\\)"):
            student.reconstruct(bad, steps=1)
    with pytest.raises(DiganError, match="one code per image"):
        student.reconstruct(torch.zeros(2, 3, size, size), steps=1, w=torch.zeros(3, student.g3d.style_dim))


def test_shift_images_closed_form():
    from digan.student.method import shift_images

    x = torch.arange(2 * 3 * 6 * 7, dtype=torch.float32).reshape(2, 3, 6, 7)
    y = shift_images(x, torch.tensor([[2.0, 0.0], [0.0, -1.0]]))
    # content at p moves to p + shift; the uncovered margin repeats the border
    torch.testing.assert_close(y[0, :, :, 2:], x[0, :, :, :-2])
    torch.testing.assert_close(y[0, :, :, :2], x[0, :, :, :1].expand(3, 6, 2))
    torch.testing.assert_close(y[1, :, :-1], x[1, :, 1:])
    # a fractional shift interpolates linearly between the neighbours
    z = shift_images(x[:1], torch.tensor([[0.25, 0.0]]))
    torch.testing.assert_close(z[0, :, :, 1:], 0.75 * x[0, :, :, 1:] + 0.25 * x[0, :, :, :-1])
    torch.testing.assert_close(shift_images(x, torch.zeros(2, 2)), x)


def test_shifted_estimate_moves_the_render_by_the_shift(student):
    """d px of image shift -> d / f of view translation: the render moves by d px (exactly at the
    pivot's depth; the face, a few percent nearer, moves a few percent more)."""
    from digan.student.method import shift_images

    g = student.g3d
    with torch.no_grad():
        est = student.estimate(student.style(student.latents(2, seed=5)))
        d = torch.tensor([[1.5, 0.0], [-1.0, 2.0]])
        moved = student.shifted_estimate(est, d)
        assert torch.equal(moved.depth, est.depth) and torch.equal(moved.view.rotation, est.view.rotation)
        torch.testing.assert_close(g.view_net.to_view(moved.view_raw).translation, moved.view.translation)
        a = student.render(est).image
        b = student.render(moved).image
    inner = (slice(None), slice(None), slice(6, -6), slice(6, -6))
    err_moved = (shift_images(a, d) - b)[inner].abs().mean()
    err_static = (a - b)[inner].abs().mean()
    assert err_moved < 0.25 * err_static
    assert student.shifted_estimate(est, torch.zeros(2, 2)) is est


def test_reconstruct_with_image_shift_stays_mirror_equivariant_and_fits_a_shift(student):
    g = student.g3d
    with torch.no_grad():
        imgs = student.teacher_image(student.style(student.latents(2, seed=4)))
    imgs = (imgs + 0.3 * torch.linspace(-1, 1, imgs.shape[-1])).clamp(-1, 1)
    a = student.reconstruct(imgs, steps=3, shift_lr=0.2)
    b = student.reconstruct(imgs.flip(3), steps=3, shift_lr=0.2)
    assert a.shift.shape == (2, 2) and a.shift.abs().max() > 0
    mb = g.mirror_estimate(b.estimate)
    for name in ("depth", "albedo", "view_raw", "light_raw"):
        torch.testing.assert_close(getattr(mb, name), getattr(a.estimate, name), rtol=0, atol=1e-6, msg=name)
    plain = student.reconstruct(imgs, steps=3, shift_lr=0.0)
    assert torch.equal(plain.shift, torch.zeros(2, 2)) and not torch.equal(plain.estimate.view_raw, a.estimate.view_raw)
    with pytest.raises(DiganError, match="inversion_shift_lr must be a finite number >= 0"):
        student.reconstruct(imgs, steps=1, shift_lr=-1.0)


def test_inversion_with_shift_finds_a_known_shift(student):
    """The teacher's mean face moved by 2 px right and 1 px up: the fitted shift finds it (the
    code starts at the mean, where that shift is the exact answer)."""
    from digan.student.method import invert_teacher, shift_images

    t = student.teacher
    with torch.no_grad():
        img = student.teacher_image(t.w_mean.reshape(1, -1))
    target = shift_images(img, torch.tensor([[2.0, -1.0]]))
    w, d = invert_teacher(t, target, student.g3d.w_std, steps=80, lr=0.01, shift_lr=0.1, return_shift=True)
    torch.testing.assert_close(d, torch.tensor([[2.0, -1.0]]), atol=0.3, rtol=0)
    w0, d0 = invert_teacher(t, target, student.g3d.w_std, steps=2, return_shift=True)
    assert torch.equal(d0, torch.zeros(1, 2))


def test_method_option_inversion_shift_lr():
    from evaluate.methods import create_method

    m = create_method("digan", inversion_steps=2)
    assert m.info()["inversion"]["shift_lr"] == 0.15 and m.info()["inversion"]["shift_view"] == 0.5  # the default
    assert create_method("digan", inversion_shift_lr=0).info()["inversion"]["shift_lr"] == 0.0
    assert create_method("liftgan", inversion_shift_lr="0.3").student.cfg.model.inversion_shift_lr == 0.3
    for bad in (-1, "abc", True, float("inf")):
        with pytest.raises(DiganError, match="inversion_shift_lr must be a number >= 0"):
            create_method("digan", inversion_shift_lr=bad)
