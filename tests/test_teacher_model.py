"""Teacher model: FIR resampling against an independent numpy/scipy reference, the rosinality
parameter layout (an independently written table), shapes, determinism, the fused/non-fused
modulated convolution, gradients against finite differences, truncation closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch

from digan.errors import DiganError
from digan.teacher import Generator, Discriminator, StyleGAN2Config, Teacher
from digan.teacher.model import Blur, ModulatedConv2d, Upsample
from digan.teacher.upfirdn import make_kernel, upfirdn2d


# ---------------------------------------------------------------- FIR resampling ------------

def ref_upfirdn(x: np.ndarray, k: np.ndarray, up: int, down: int, pad: tuple[int, int, int, int]) -> np.ndarray:
    """Zero insertion, pad/crop, 2D true convolution ('valid'), decimation: one 2D plane."""
    px0, px1, py0, py1 = pad
    h, w = x.shape
    u = np.zeros((h * up, w * up))
    u[::up, ::up] = x
    u = np.pad(u, ((max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0))))
    u = u[max(-py0, 0): u.shape[0] - max(-py1, 0), max(-px0, 0): u.shape[1] - max(-px1, 0)]
    out = scipy.signal.convolve2d(u, k, mode="valid")
    return out[::down, ::down]


@pytest.mark.parametrize(
    "up, down, pad, ksize",
    [
        (1, 1, (1, 2, 1, 2), 4),
        (2, 1, (2, 1, 2, 1), 4),   # ToRGB skip upsampling
        (1, 2, (1, 1, 1, 1), 4),   # downsampling
        (1, 1, (2, 2, 2, 2), 4),   # discriminator blur before stride-2 conv
        (2, 2, (0, 1, 3, -1), 3),  # mixed, asymmetric, negative pad (crop)
        (3, 1, (-1, 2, 0, 0), 5),
    ],
)
def test_upfirdn_matches_numpy_reference(up, down, pad, ksize):
    rng = np.random.default_rng(up * 100 + down * 10 + ksize)
    x = rng.standard_normal((2, 3, 7, 9))
    k = rng.standard_normal((ksize, ksize))  # not symmetric: catches a flipped kernel
    out = upfirdn2d(torch.from_numpy(x).float(), torch.from_numpy(k).float(), up=up, down=down, pad=pad).double().numpy()
    for b in range(2):
        for c in range(3):
            ref = ref_upfirdn(x[b, c], k, up, down, pad)
            assert out.shape[2:] == ref.shape
            np.testing.assert_allclose(out[b, c], ref, rtol=1e-5, atol=1e-5)


def test_blur_and_upsample_modules_match_reference():
    x = torch.randn(1, 2, 6, 6)
    k = make_kernel([1, 3, 3, 1]).numpy()
    assert np.isclose(k.sum(), 1.0) and np.allclose(k, np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64)
    up = Upsample([1, 3, 3, 1])(x).numpy()
    assert up.shape == (1, 2, 12, 12)
    np.testing.assert_allclose(up[0, 1], ref_upfirdn(x[0, 1].double().numpy(), 4 * k, 2, 1, (2, 1, 2, 1)), atol=1e-5)
    bl = Blur([1, 3, 3, 1], pad=(2, 2))(x).numpy()
    np.testing.assert_allclose(bl[0, 0], ref_upfirdn(x[0, 0].double().numpy(), k, 1, 1, (2, 2, 2, 2)), atol=1e-5)
    # a constant image stays constant inside (the upsampling kernel has DC gain 4 = 2x2 zeros)
    c = Upsample([1, 3, 3, 1])(torch.ones(1, 1, 8, 8))
    assert torch.allclose(c[..., 2:-2, 2:-2], torch.ones(1), atol=1e-6)


# ---------------------------------------------------------------- layout --------------------

def reference_layout_64(style_dim: int, n_mlp: int, ch: dict[int, int]) -> dict[str, tuple[int, ...]]:
    """Names and shapes of rosinality's Generator state dict at 64 px, written out by hand."""
    D = style_dim
    t: dict[str, tuple[int, ...]] = {}
    for i in range(1, n_mlp + 1):
        t[f"style.{i}.weight"] = (D, D)
        t[f"style.{i}.bias"] = (D,)
    t["input.input"] = (1, ch[4], 4, 4)
    t["conv1.conv.weight"] = (1, ch[4], ch[4], 3, 3)
    t["conv1.conv.modulation.weight"] = (ch[4], D)
    t["conv1.conv.modulation.bias"] = (ch[4],)
    t["conv1.noise.weight"] = (1,)
    t["conv1.activate.bias"] = (ch[4],)
    t["to_rgb1.bias"] = (1, 3, 1, 1)
    t["to_rgb1.conv.weight"] = (1, 3, ch[4], 1, 1)
    t["to_rgb1.conv.modulation.weight"] = (ch[4], D)
    t["to_rgb1.conv.modulation.bias"] = (ch[4],)
    resolutions = [8, 16, 32, 64]
    prev = ch[4]
    for j, r in enumerate(resolutions):
        a, b = f"convs.{2 * j}", f"convs.{2 * j + 1}"
        t[f"{a}.conv.weight"] = (1, ch[r], prev, 3, 3)
        t[f"{a}.conv.blur.kernel"] = (4, 4)
        t[f"{a}.conv.modulation.weight"] = (prev, D)
        t[f"{a}.conv.modulation.bias"] = (prev,)
        t[f"{a}.noise.weight"] = (1,)
        t[f"{a}.activate.bias"] = (ch[r],)
        t[f"{b}.conv.weight"] = (1, ch[r], ch[r], 3, 3)
        t[f"{b}.conv.modulation.weight"] = (ch[r], D)
        t[f"{b}.conv.modulation.bias"] = (ch[r],)
        t[f"{b}.noise.weight"] = (1,)
        t[f"{b}.activate.bias"] = (ch[r],)
        prev = ch[r]
    for j, r in enumerate(resolutions):
        t[f"to_rgbs.{j}.bias"] = (1, 3, 1, 1)
        t[f"to_rgbs.{j}.upsample.kernel"] = (4, 4)
        t[f"to_rgbs.{j}.conv.weight"] = (1, 3, ch[r], 1, 1)
        t[f"to_rgbs.{j}.conv.modulation.weight"] = (ch[r], D)
        t[f"to_rgbs.{j}.conv.modulation.bias"] = (ch[r],)
    noise_res = [4, 8, 8, 16, 16, 32, 32, 64, 64]
    for i, r in enumerate(noise_res):
        t[f"noises.noise_{i}"] = (1, 1, r, r)
    return t


def reference_d_layout_64(ch: dict[int, int]) -> dict[str, tuple[int, ...]]:
    t: dict[str, tuple[int, ...]] = {"convs.0.0.weight": (ch[64], 3, 1, 1), "convs.0.1.bias": (ch[64],)}
    for k, r in enumerate([64, 32, 16, 8], start=1):
        cin, cout = ch[r], ch[r // 2]
        t[f"convs.{k}.conv1.0.weight"] = (cin, cin, 3, 3)
        t[f"convs.{k}.conv1.1.bias"] = (cin,)
        t[f"convs.{k}.conv2.0.kernel"] = (4, 4)
        t[f"convs.{k}.conv2.1.weight"] = (cout, cin, 3, 3)
        t[f"convs.{k}.conv2.2.bias"] = (cout,)
        t[f"convs.{k}.skip.0.kernel"] = (4, 4)
        t[f"convs.{k}.skip.1.weight"] = (cout, cin, 1, 1)
    t["final_conv.0.weight"] = (ch[4], ch[4] + 1, 3, 3)
    t["final_conv.1.bias"] = (ch[4],)
    t["final_linear.0.weight"] = (ch[4], ch[4] * 16)
    t["final_linear.0.bias"] = (ch[4],)
    t["final_linear.1.weight"] = (1, ch[4])
    t["final_linear.1.bias"] = (1,)
    return t


CH64 = {4: 64, 8: 64, 16: 32, 32: 16, 64: 8}


def test_generator_and_discriminator_layout_match_reference_table():
    cfg = StyleGAN2Config(size=64, style_dim=32, n_mlp=3, channels=CH64)
    g_sd = Generator(cfg).state_dict()
    ref = reference_layout_64(32, 3, CH64)
    assert {k: tuple(v.shape) for k, v in g_sd.items()} == ref
    assert list(g_sd) == list(ref)  # same order as the reference module registration
    d_sd = Discriminator(cfg).state_dict()
    assert {k: tuple(v.shape) for k, v in d_sd.items()} == reference_d_layout_64(CH64)


def test_default_channel_table_is_rosinality_formula():
    g = Generator(StyleGAN2Config(size=64, style_dim=16, n_mlp=1, channel_multiplier=1))
    assert g.channels[4] == 512 and g.channels[32] == 512 and g.channels[64] == 256
    assert tuple(g.convs[6].conv.weight.shape) == (1, 256, 512, 3, 3)
    assert g.n_latent == 10 and g.num_layers == 9


def test_reference_state_dict_loads_into_teacher():
    from digan.teacher.checkpoint import read_checkpoint, build_generator

    torch.manual_seed(3)
    ref = reference_layout_64(32, 2, CH64)
    sd = {k: torch.randn(s) for k, s in ref.items()}
    ckpt = read_checkpoint({"g_ema": sd})  # config inferred from shapes alone
    assert ckpt.config.size == 64 and ckpt.config.style_dim == 32 and ckpt.config.n_mlp == 2
    assert ckpt.config.channels == CH64
    g = build_generator(ckpt)
    got = g.state_dict()
    for k in ("style.2.weight", "convs.5.conv.weight", "to_rgbs.3.bias", "noises.noise_8"):
        assert torch.equal(got[k], sd[k])
    img = Teacher(g).sample(2, seed=0)
    assert img.shape == (2, 3, 64, 64) and torch.isfinite(img).all()


def test_liftedgan_channel_table_round_trips_through_inference():
    from digan.teacher.checkpoint import infer_config

    lifted = {4: 512, 8: 512, 16: 256, 32: 128, 64: 64, 128: 32, 256: 16}
    cfg = StyleGAN2Config(size=256, style_dim=64, n_mlp=2, channels=lifted)
    g = Generator(cfg)
    inf = infer_config(g.state_dict(), Discriminator(cfg).state_dict())
    assert inf.size == 256 and inf.channels == lifted and inf.d_channels is None
    inf2 = infer_config(Generator(StyleGAN2Config(size=32, style_dim=16, n_mlp=1, channel_multiplier=1)).state_dict())
    assert inf2.channels is None and inf2.channel_multiplier in (1, 2, 4, 8)  # 32 px: all 512, any multiplier fits


def test_bad_config_values_raise_one_line_errors():
    with pytest.raises(DiganError, match="power of two"):
        StyleGAN2Config(size=48).validate()
    with pytest.raises(DiganError, match="resolution 64"):
        Generator(StyleGAN2Config(size=64, style_dim=8, n_mlp=1, channels={4: 8, 8: 8, 16: 8, 32: 8}))


# ---------------------------------------------------------------- behaviour -----------------

def small_cfg() -> StyleGAN2Config:
    return StyleGAN2Config(size=32, style_dim=32, n_mlp=2, channels={4: 32, 8: 32, 16: 16, 32: 8})


@pytest.mark.parametrize("up, down", [(False, False), (True, False), (False, True)])
def test_fused_and_nonfused_modulated_conv_agree(up, down):
    torch.manual_seed(0)
    m = ModulatedConv2d(6, 5, 3, 8, upsample=up, downsample=down)
    x, s = torch.randn(3, 6, 8, 8), torch.randn(3, 8)
    a = m(x, s)
    m.fused = True
    b = m(x, s)
    # explicit per-sample reference: modulate, demodulate, convolve one sample at a time
    ref = []
    for i in range(3):
        st = m.modulation(s[i: i + 1])[0]
        w = m.weight[0] * m.scale * st.view(1, -1, 1, 1)
        w = w / torch.sqrt(w.square().sum([1, 2, 3], keepdim=True) + 1e-8)
        xi = x[i: i + 1]
        if up:
            o = m.blur(torch.nn.functional.conv_transpose2d(xi, w.transpose(0, 1), stride=2))
        elif down:
            o = torch.nn.functional.conv2d(m.blur(xi), w, stride=2)
        else:
            o = torch.nn.functional.conv2d(xi, w, padding=1)
        ref.append(o)
    ref = torch.cat(ref)
    assert a.shape == b.shape == ref.shape
    assert torch.allclose(a, ref, atol=1e-5) and torch.allclose(b, ref, atol=1e-5)


def test_shapes_features_and_fixed_noise_determinism():
    torch.manual_seed(1)
    t = Teacher(Generator(small_cfg()))
    assert (t.size, t.style_dim, t.n_latent, t.num_layers) == (32, 32, 8, 7)
    w = t.sample_w(3, seed=5)
    assert w.shape == (3, 32)
    img, feats = t.synthesis(w, return_features=True)
    assert img.shape == (3, 3, 32, 32)
    assert [f.shape[-1] for f in feats] == [4, 8, 16, 32] and feats[-1].shape[1] == t.channels[32]
    assert torch.equal(img, t.synthesis(w))                          # fixed noise: identical
    assert torch.equal(img, t.synthesis(t.to_wplus(w)))              # w and its w+ agree
    t.generator.convs[3].noise.weight.data.fill_(0.5)                # make noise visible
    a, b = t.synthesis(w, noise="random"), t.synthesis(w, noise="random")
    assert not torch.allclose(a, b)
    # samples depend only on (seed, index): a shifted window gives the same faces
    assert torch.allclose(t.sample(5, seed=2)[3:], t.sample(2, seed=2, start=3), atol=1e-4)
    assert not torch.allclose(t.sample(2, seed=2), t.sample(2, seed=3))


def test_truncation_closed_form_and_w_mean():
    torch.manual_seed(2)
    g = Generator(small_cfg())
    t = Teacher(g, n_mean=2000)
    w = t.sample_w(4, seed=0)
    assert torch.allclose(t.truncate(w, 0.0), t.w_mean.expand(4, -1))
    assert torch.equal(t.truncate(w, 1.0), w)
    assert torch.allclose(t.truncate(w, 0.7), 0.3 * t.w_mean + 0.7 * w, atol=1e-6)
    wp = t.to_wplus(w)
    assert torch.allclose(t.truncate(wp, 0.5)[:, 3], t.truncate(w, 0.5), atol=1e-6)
    # w_mean is a mean over z: compare with an independent estimate (many fresh samples)
    with torch.no_grad():
        est = g.mapping(torch.randn(20000, 32)).mean(0)
    spread = g.mapping(torch.randn(2000, 32)).std(0).detach()
    assert ((t.w_mean - est).abs() < 5 * spread / np.sqrt(2000) + 1e-6).all()


def test_gradient_to_w_matches_finite_difference():
    torch.manual_seed(4)
    t = Teacher(Generator(small_cfg())).double()
    w = t.sample_w(1, seed=1).double().requires_grad_(True)
    probe = torch.randn(1, 3, 32, 32, dtype=torch.float64)

    def f(wv):
        return (t.synthesis(wv) * probe).sum()

    f(w).backward()
    assert all(not p.requires_grad for p in t.parameters())  # teacher frozen, input differentiable
    eps = 1e-6
    for idx in (0, 7, 19):
        e = torch.zeros_like(w)
        e[0, idx] = eps
        fd = (f(w.detach() + e) - f(w.detach() - e)) / (2 * eps)
        assert abs(fd.item() - w.grad[0, idx].item()) < 1e-5 * max(1.0, abs(fd.item()))


def test_discriminator_minibatch_stddev_against_explicit_formula():
    torch.manual_seed(5)
    d = Discriminator(small_cfg())
    x = torch.randn(8, 3, 32, 32)
    feats = {}
    d.final_conv.register_forward_hook(lambda m, i, o: feats.update(inp=i[0]))
    out = d(x)
    assert out.shape == (8, 1)
    body = d.convs(x)
    # group of 4: samples i, i+2, i+4, i+6 form a group (view(4, -1, ...)); std over the group
    y = body.view(4, 2, *body.shape[1:])
    sd = torch.sqrt(y.var(0, unbiased=False) + 1e-8).mean([1, 2, 3])  # (2,)
    expect = sd.repeat(4)
    assert torch.allclose(feats["inp"][:, -1, 0, 0], expect, atol=1e-6)
    assert torch.allclose(feats["inp"][:, :-1], body)
    # odd batch: group falls back to a divisor (3 -> group 3), still runs
    assert d(torch.randn(3, 3, 32, 32)).shape == (3, 1)
