"""LiftGAN: LiftedGAN's settings on the shared G3D, the official-checkpoint loader (an independent
table of LiftedGAN's names and shapes, an independent re-implementation of its modules), training
through ``--model liftgan`` and the ``liftgan`` method."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from digan.errors import DiganError

pytestmark = [pytest.mark.filterwarnings("ignore:VGG16 weights not found"), pytest.mark.filterwarnings("ignore:no torch face recogniser")]


# ----------------------------------------------------------------------------------------------
# independent reference: LiftedGAN's module definitions (models/networks.py), re-typed from the
# published source, parameterised only by the number of upsampling blocks (LiftedGAN: 5 at 256 px)


class RefScaleShift(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, n))
        self.bias = nn.Parameter(torch.randn(1, n))

    def forward(self, x):
        return self.bias + self.weight * x


class RefMLP(nn.Module):
    def __init__(self, cin, cout, n_layer=4, dim=512, normalize=False, activation=None):
        super().__init__()
        mlp = []
        for i in range(n_layer - 1):
            mlp.append(nn.Linear(cin if i == 0 else dim, dim))
            if normalize:
                mlp.append(nn.GroupNorm(dim // 4, dim))
            mlp.append(nn.LeakyReLU(0.2))
        mlp.append(nn.Linear(dim, cout))
        if activation is not None:
            mlp.append(activation)
        self.mlp = nn.Sequential(*mlp)

    def forward(self, x):
        return self.mlp(x)


class RefSD(nn.Module):
    def __init__(self, style_dim, dim):
        super().__init__()
        self.model_style = RefMLP(style_dim, style_dim, dim=dim, normalize=True)
        self.model_light = RefMLP(style_dim, 4, dim=dim, activation=nn.Tanh())
        self.model_view = RefMLP(style_dim, 6, dim=dim, activation=nn.Tanh())


class RefSC(nn.Module):
    def __init__(self, style_dim):
        super().__init__()
        d = style_dim
        self.embed_style = RefMLP(d, d, dim=d, normalize=True, activation=RefScaleShift(d))
        self.embed_light = RefMLP(4, d, dim=d, normalize=True, activation=RefScaleShift(d))
        self.embed_view = RefMLP(6, d, dim=d, normalize=True, activation=RefScaleShift(d))
        self.model = RefMLP(d, d, dim=d, normalize=True)

    def forward(self, s, light, view):
        return self.model(self.embed_style(s) + self.embed_light(light) + self.embed_view(view))


class RefDepth(nn.Module):
    def __init__(self, in_dim, inject_dim, z_dim, nf, n_mlp, n_up):
        super().__init__()
        mlp = []
        for _ in range(n_mlp):
            mlp += [nn.Linear(in_dim, z_dim), nn.LeakyReLU(0.2)]
            in_dim = z_dim
        self.mlp = nn.Sequential(*mlp)
        ndim = nf * 2**n_up
        net = [nn.ConvTranspose2d(z_dim, ndim, 4, 1, 0, bias=False), nn.ReLU(), nn.Conv2d(ndim, ndim, 3, 1, 1, bias=False), nn.ReLU()]
        for _ in range(n_up):
            ndim //= 2
            net += [nn.ConvTranspose2d(ndim * 2, ndim, 4, 2, 1, bias=False), nn.GroupNorm(ndim // 4, ndim), nn.ReLU(),
                    nn.Conv2d(ndim, ndim, 3, 1, 1, bias=False), nn.GroupNorm(ndim // 4, ndim), nn.ReLU()]
        net += [nn.Upsample(scale_factor=2, mode="nearest")]
        self.network = nn.Sequential(*net)
        self.inject = nn.Conv2d(inject_dim, ndim, 1, 1, 0, bias=False)
        self.head = nn.Sequential(nn.Conv2d(ndim, ndim, 3, 1, 1, bias=False), nn.GroupNorm(ndim // 4, ndim), nn.ReLU(),
                                  nn.Conv2d(ndim, ndim, 5, 1, 2, bias=False), nn.GroupNorm(ndim // 4, ndim), nn.ReLU(),
                                  nn.Conv2d(ndim, 1, 5, 1, 2, bias=True))

    def forward(self, x, x2):
        out = self.mlp(x)
        out = self.network(out[:, :, None, None]) + self.inject(x2)
        return self.head(out)


class RefTrans(nn.Module):
    def __init__(self, in_dim, z_dim, nf, n_mlp, n_up):
        super().__init__()
        mlp = []
        for _ in range(n_mlp):
            mlp += [nn.Linear(in_dim, z_dim), nn.LeakyReLU(0.2)]
            in_dim = z_dim
        self.mlp = nn.Sequential(*mlp)
        net = [nn.ConvTranspose2d(z_dim, nf * 2**n_up, 4, padding=0, bias=False), nn.ReLU()]
        indim, outdim = nf * 2**n_up, nf * 2 ** (n_up - 1)
        for _ in range(n_up):
            net += [nn.ConvTranspose2d(indim, outdim, 4, 2, 1, bias=False), nn.GroupNorm(outdim // 4, outdim), nn.ReLU()]
            indim, outdim = outdim, outdim // 2
        net += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(nf, nf, 3, 1, 1, bias=False), nn.GroupNorm(nf // 4, nf),
                nn.ReLU(), nn.Conv2d(nf, 1, 5, 1, 2, bias=False)]
        self.network = nn.Sequential(*net)

    def forward(self, x):
        return self.network(self.mlp(x)[:, :, None, None])


def _randomise(m: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


# ----------------------------------------------------------------------------------------------
# independent table: names and shapes of the official 256 px FFHQ checkpoint (LiftedGAN's
# initialize(): DepthNet(512, 1, z_dim=512, n_mlp=4, nf=16, inject 16), TransformationNet(512, 1,
# z_dim=16, n_mlp=4, nf=16), StyleDecomposeNet(512), StyleComposeNet(512))


def liftedgan_256_table() -> dict[str, tuple[int, ...]]:
    t: dict[str, tuple[int, ...]] = {}

    def lin(prefix, cout, cin, bias=True):
        t[prefix + ".weight"] = (cout, cin)
        if bias:
            t[prefix + ".bias"] = (cout,)

    def gn(prefix, c):
        t[prefix + ".weight"] = (c,)
        t[prefix + ".bias"] = (c,)

    # netSD
    for i, (o, c) in zip((0, 3, 6, 9), ((512, 512),) * 4):
        lin(f"netSD.model_style.mlp.{i}", o, c)
    for i in (1, 4, 7):
        gn(f"netSD.model_style.mlp.{i}", 512)
    for name, out in (("model_light", 4), ("model_view", 6)):
        for i in (0, 2, 4):
            lin(f"netSD.{name}.mlp.{i}", 512, 512)
        lin(f"netSD.{name}.mlp.6", out, 512)
    # netSC
    for name, cin in (("embed_style", 512), ("embed_light", 4), ("embed_view", 6), ("model", 512)):
        lin(f"netSC.{name}.mlp.0", 512, cin)
        for i in (3, 6, 9):
            lin(f"netSC.{name}.mlp.{i}", 512, 512)
        for i in (1, 4, 7):
            gn(f"netSC.{name}.mlp.{i}", 512)
        if name != "model":
            t[f"netSC.{name}.mlp.10.weight"] = (1, 512)
            t[f"netSC.{name}.mlp.10.bias"] = (1, 512)
    # netD
    for i in (0, 2, 4, 6):
        lin(f"netD.mlp.{i}", 512, 512)
    t["netD.network.0.weight"] = (512, 512, 4, 4)
    t["netD.network.2.weight"] = (512, 512, 3, 3)
    n = 512
    for b in range(5):
        base = 4 + 6 * b
        t[f"netD.network.{base}.weight"] = (n, n // 2, 4, 4)
        gn(f"netD.network.{base + 1}", n // 2)
        t[f"netD.network.{base + 3}.weight"] = (n // 2, n // 2, 3, 3)
        gn(f"netD.network.{base + 4}", n // 2)
        n //= 2
    t["netD.inject.weight"] = (16, 16, 1, 1)
    t["netD.head.0.weight"] = (16, 16, 3, 3)
    gn("netD.head.1", 16)
    t["netD.head.3.weight"] = (16, 16, 5, 5)
    gn("netD.head.4", 16)
    t["netD.head.6.weight"] = (1, 16, 5, 5)
    t["netD.head.6.bias"] = (1,)
    # netT
    lin("netT.mlp.0", 16, 512)
    for i in (2, 4, 6):
        lin(f"netT.mlp.{i}", 16, 16)
    t["netT.network.0.weight"] = (16, 512, 4, 4)
    n = 512
    for b in range(5):
        base = 2 + 3 * b
        t[f"netT.network.{base}.weight"] = (n, n // 2, 4, 4)
        gn(f"netT.network.{base + 1}", n // 2)
        n //= 2
    t["netT.network.18.weight"] = (16, 16, 3, 3)
    gn("netT.network.19", 16)
    t["netT.network.21.weight"] = (1, 16, 5, 5)
    return t


#: the expected native names, written out independently of the loader's rules
PREFIXES = {
    "netSD.model_view.mlp.": "view_net.net.", "netSD.model_light.mlp.": "light_net.net.",
    "netSC.embed_style.mlp.": "compose.embed_style.", "netSC.embed_light.mlp.": "compose.embed_light.",
    "netSC.embed_view.mlp.": "compose.embed_view.", "netSC.model.mlp.": "compose.model.",
    "netD.mlp.": "depth_net.mlp.", "netD.network.": "depth_net.network.", "netD.inject.": "depth_net.inject.",
    "netD.head.": "depth_net.head.", "netT.mlp.": "trans_net.mlp.", "netT.network.": "trans_net.network.",
}


def native_name(key: str) -> str | None:
    if key.startswith("netSD.model_style."):
        return None
    for a, b in PREFIXES.items():
        if key.startswith(a):
            return b + key[len(a):]
    raise AssertionError(key)


def _ckpt_from_table(table: dict[str, tuple[int, ...]], seed: int = 0, scale: float = 0.05) -> dict:
    g = torch.Generator().manual_seed(seed)
    ck: dict = {"netD": {}, "netT": {}, "netSD": {}, "netSC": {}}
    for k, shape in table.items():
        net, rest = k.split(".", 1)
        ck[net][rest] = torch.randn(shape, generator=g) * scale  # small weights keep the random networks tame
    ck.update({"optimizer": {"state": {}, "param_groups": []}, "global_step": 50000, "epoch": 10})
    return ck


def _small_ckpt(style: int = 32, hidden: int = 48, n_up: int = 2):
    """(checkpoint dict, reference modules) of re-implemented LiftedGAN modules at 2**(n_up+3) px."""
    sd, sc = RefSD(style, hidden), RefSC(style)
    dn = RefDepth(style, 16, z_dim=40, nf=8, n_mlp=3, n_up=n_up)
    tn = RefTrans(style, z_dim=12, nf=8, n_mlp=2, n_up=n_up)
    for i, m in enumerate((sd, sc, dn, tn)):
        _randomise(m, i)
    ck = {"netD": dn.state_dict(), "netT": tn.state_dict(), "netSD": sd.state_dict(), "netSC": sc.state_dict(),
          "optimizer": {}, "global_step": 3, "epoch": 0}
    return ck, (sd, sc, dn, tn)


@pytest.fixture(scope="module")
def teacher256(tmp_path_factory):
    from digan.student.testing import save_random_teacher

    p = tmp_path_factory.mktemp("lg") / "liftedgan_teacher.pt"
    t = save_random_teacher(p, size=256, style_dim=512, width=16, n_mlp=2)
    return p, t


def test_official_checkpoint_round_trip_and_method(tmp_path, teacher256):
    """The official 256 px layout (independent table) loads 1:1; ``liftgan:checkpoint_XXX.pth``
    with the teacher option renders it."""
    from baselines.liftgan_checkpoint import load_liftedgan_checkpoint
    from evaluate.methods import create_method

    tpath, teacher = teacher256
    table = liftedgan_256_table()
    ck = _ckpt_from_table(table)
    path = tmp_path / "checkpoint_010.pth"
    torch.save(ck, path)
    s = load_liftedgan_checkpoint(path, teacher)
    native = s.g3d.state_dict()
    placed = 0
    for k, shape in table.items():
        nk = native_name(k)
        net, rest = k.split(".", 1)
        if nk is None:
            continue
        assert tuple(native[nk].shape) == shape, k
        torch.testing.assert_close(native[nk], ck[net][rest], rtol=0, atol=0)
        placed += 1
    n_params = sum(1 for k in native if k not in
                   ("w_mean", "w_std", "w_sigma_inv", "view_net.w_mean", "view_net.w_std", "light_net.w_mean", "light_net.w_std"))
    assert placed == n_params  # every native parameter came from the file
    assert s.info["global_step"] == 50000 and s.info["epoch"] == 10
    assert sorted(s.info["ignored"]) == sorted(k for k in table if k.startswith("netSD.model_style."))
    m = s.cfg.model
    assert (s.cfg.model.name, m.use_kan, m.pose_norm, m.pose_standardize, m.partial_conv, m.depth_norm) == \
        ("liftgan", False, False, False, False, "post")
    assert (m.pose_hidden, m.depth_nf, m.depth_z, m.trans_nf, m.trans_z, m.compose_hidden) == (512, 16, 512, 16, 16, 512)
    # as a benchmark method
    with pytest.raises(DiganError, match="holds no teacher"):
        create_method(f"liftgan:{path}")
    meth = create_method(f"liftgan:{path}", teacher=str(tpath))
    assert meth.info()["source"] == "official LiftedGAN checkpoint" and meth.info()["step"] == 50000
    out = meth.render(meth.latents(1, seed=0), yaw=20.0)
    assert out.image.shape == (1, 3, 256, 256) and torch.isfinite(out.image).all()
    assert out.depth[out.mask > 0].min() >= 0.85 and out.depth[out.mask > 0].max() <= 1.2


def test_official_checkpoint_errors(tmp_path):
    from baselines.liftgan_checkpoint import load_liftedgan_checkpoint, map_liftedgan_key
    from digan.student.testing import random_teacher

    teacher = random_teacher(32, 32, 16)
    with pytest.raises(DiganError, match=r"'netD\.extra\.weight' cannot be placed"):
        map_liftedgan_key("netD.extra.weight")
    # unknown tensor inside a network
    ck, _ = _small_ckpt()
    ck["netD"]["extra.weight"] = torch.zeros(3)
    torch.save(ck, tmp_path / "a.pth")
    with pytest.raises(DiganError, match=r"'netD\.extra\.weight'") as e:
        load_liftedgan_checkpoint(tmp_path / "a.pth", teacher)
    assert "\n" not in str(e.value)
    # unknown top-level key
    ck, _ = _small_ckpt()
    ck["netE"] = {}
    torch.save(ck, tmp_path / "b.pth")
    with pytest.raises(DiganError, match=r"'netE' cannot be placed"):
        load_liftedgan_checkpoint(tmp_path / "b.pth", teacher)
    # a native parameter missing from the file
    ck, _ = _small_ckpt()
    del ck["netT"]["network.12.weight"]
    torch.save(ck, tmp_path / "c.pth")
    with pytest.raises(DiganError, match=r"lacks .netT\.network\.12\.weight."):
        load_liftedgan_checkpoint(tmp_path / "c.pth", teacher)
    # a teacher of another architecture
    ck, _ = _small_ckpt()
    torch.save(ck, tmp_path / "e.pth")
    with pytest.raises(DiganError, match="32 px teacher"):
        load_liftedgan_checkpoint(tmp_path / "e.pth", random_teacher(64, 32, 16))
    # not a LiftedGAN file at all
    torch.save({"g_ema": {}}, tmp_path / "d.pth")
    with pytest.raises(DiganError, match="not an official LiftedGAN checkpoint"):
        load_liftedgan_checkpoint(tmp_path / "d.pth", teacher)


def test_official_weights_compute_what_liftedgan_computes(tmp_path):
    """Load weights of re-implemented LiftedGAN modules through the loader; the native modules
    must give the same outputs for the same inputs (small 32 px layout, same code path)."""
    from baselines.liftgan_checkpoint import load_liftedgan_checkpoint
    from digan.student.model import teacher_synthesis
    from digan.student.testing import random_teacher

    teacher = random_teacher(32, 32, 16)
    ck, (sd, sc, dn, tn) = _small_ckpt()
    style = 32
    torch.save(ck, tmp_path / "small.pth")
    g3d = load_liftedgan_checkpoint(tmp_path / "small.pth", teacher).g3d.eval()
    g = torch.Generator().manual_seed(5)
    w = torch.randn(3, style, generator=g) * 2
    light, view = torch.rand(3, 4, generator=g) * 2 - 1, torch.rand(3, 6, generator=g) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(g3d.light_net(w), sd.model_light(w))
        torch.testing.assert_close(g3d.view_net(w), sd.model_view(w))
        torch.testing.assert_close(g3d.compose(w, light, view), sc(w, light, view))
        _, feat = teacher_synthesis(teacher, w, features=True)
        torch.testing.assert_close(g3d.depth_net(w, feat), dn(w, feat), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(g3d.trans_net(w), tn(w), rtol=1e-4, atol=1e-4)
        # LiftedGAN's estimate(): neutral light (a, b, 0, 0), zero view, then M; depth tanh(d - mean) -> [0.9, 1.1]
        est = g3d.estimate(w, teacher)
        l0 = torch.cat([sd.model_light(w)[:, :2], torch.zeros(3, 2)], 1)
        w0 = sc(w, l0, torch.zeros(3, 6))
        torch.testing.assert_close(est.w0, w0)
        _, feat0 = teacher_synthesis(teacher, w0, features=True)
        raw = dn(w0, feat0)[:, 0]
        d = torch.tanh(raw - raw.reshape(3, -1).mean(1).view(3, 1, 1))
        d = (1 + d) / 2 * 1.1 + (1 - d) / 2 * 0.9
        d[:, :, :2] = 1.05
        d[:, :, -2:] = 1.05
        torch.testing.assert_close(est.depth[:, 0], d, rtol=1e-4, atol=1e-4)


def test_liftgan_config_and_training(tmp_path):
    from baselines.liftgan import LIFTGAN_DEFAULTS
    from digan.student.config import make_config
    from digan.student.partialconv import PartialConv2d
    from digan.student.testing import save_random_teacher
    from digan.student.train import train
    from digan.utils.io import load_torch

    paper = make_config("paper", model="liftgan")
    assert (paper.train.steps, paper.train.batch, paper.train.w_stats_samples, paper.loss.albedo_filter) == (50000, 8, 50000, "blur_residual")
    assert "model.pose_norm=false" in LIFTGAN_DEFAULTS and paper.model.depth_zero_init is False  # LiftedGAN's random init
    tpath = tmp_path / "t.pt"
    save_random_teacher(tpath, size=32, style_dim=32, width=16)
    cfg = make_config("tiny", model="liftgan", overrides=["train.batch=2", "train.steps=2", "train.w_stats_samples=256", "loss.identity=0"])
    res = train(cfg, tmp_path / "run", teacher_path=tpath, show_progress=False)
    assert math.isfinite(res.last_losses["total"]) and res.steps == 2
    ck = load_torch(tmp_path / "run" / "student.pt")
    assert ck["model"] == "liftgan" and ck["config"]["model"]["use_kan"] is False
    # the built network really is LiftedGAN's: no GroupNorm in DV/DL, no partial convolutions
    from evaluate.methods import create_method

    m = create_method(f"liftgan:{tmp_path / 'run'}")
    g3d = m.student.g3d
    assert not any(isinstance(x, nn.GroupNorm) for x in g3d.view_net.modules())
    assert not any(isinstance(x, PartialConv2d) for x in g3d.depth_net.modules())
    # the method renders the trained model at requested views with depth
    assert m.name == "liftgan" and m.capabilities.pose and m.capabilities.depth and m.info()["source"].startswith("digan-bench")
    z = m.latents(2, seed=3)
    a, b = m.render(z, yaw=25.0), m.render(z, yaw=-25.0)
    assert a.image.shape == (2, 3, 32, 32) and a.depth is not None and (a.image - b.image).abs().mean() > 1e-4
    with pytest.raises(DiganError, match="trained as liftgan@full"):
        create_method(f"liftgan@no_flip:{tmp_path / 'run'}")
    import baselines.liftgan as bl

    real_bundled = bl.BUNDLED_LIFTGAN
    try:  # 'liftgan' alone is the bundled tiny student; until it is installed, one line says what to pass
        bl.BUNDLED_LIFTGAN = tmp_path / "absent" / "tiny_liftgan_64.pt"
        with pytest.raises(DiganError, match="bundled tiny LiftGAN tiny_liftgan_64.pt is not installed; pass liftgan:PATH"):
            create_method("liftgan")
        bl.BUNDLED_LIFTGAN = tmp_path / "run" / "student.pt"
        assert create_method("liftgan").path == tmp_path / "run" / "student.pt"
    finally:
        bl.BUNDLED_LIFTGAN = real_bundled
    with pytest.raises(DiganError, match="holds a 'liftgan' model"):
        create_method(f"digan:{tmp_path / 'run' / 'student.pt'}")
