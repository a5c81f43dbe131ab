"""Teacher checkpoints: save/load round trip, one-line errors (missing, corrupt, mismatching
layout), rosinality files without our config, and NVIDIA stylegan2-ada-pytorch conversion (state
dict and network pickle) checked by rendering the same images."""

from __future__ import annotations

import argparse
import pickle
import sys
import types

import pytest
import torch
import torch.nn as nn

from digan.errors import DiganError
from digan.teacher import Discriminator, Generator, StyleGAN2Config, Teacher, load_teacher
from digan.teacher.checkpoint import make_checkpoint, read_checkpoint, save_checkpoint
from digan.utils.io import save_torch

CFG = StyleGAN2Config(size=32, style_dim=24, n_mlp=2, channels={4: 32, 8: 32, 16: 16, 32: 8})


def _models(seed: int = 0):
    torch.manual_seed(seed)
    g, d = Generator(CFG), Discriminator(CFG)
    # non-trivial noise strengths and biases so that every tensor matters
    for p in g.parameters():
        if p.ndim <= 1:
            p.data.normal_(0, 0.3)
    return g, d


def test_save_load_round_trip_same_images(tmp_path):
    g, d = _models()
    t0 = Teacher(g, n_mean=1000)
    path = save_checkpoint(tmp_path / "t.pt", make_checkpoint(g, CFG, d=d, g=g, latent_avg=t0.w_mean, extra={"step": 7}))
    t1 = load_teacher(path)
    assert t1.config == CFG and t1.w_mean_source.startswith("latent_avg")
    assert torch.equal(t1.w_mean, t0.w_mean)
    assert torch.equal(t0.sample(3, seed=4, psi=0.7), t1.sample(3, seed=4, psi=0.7))
    raw = torch.load(path, weights_only=False)
    assert {"g_ema", "g", "d", "latent_avg", "args", "config"} <= set(raw) and raw["step"] == 7
    assert raw["args"].size == 32 and raw["args"].latent == 24 and raw["args"].n_mlp == 2


def test_rosinality_file_without_config_infers_architecture(tmp_path):
    g, d = _models(1)
    args = argparse.Namespace(size=32, latent=24, n_mlp=2, channel_multiplier=2, r1=10)
    p = tmp_path / "ros.pt"
    torch.save({"g_ema": g.state_dict(), "g": g.state_dict(), "d": d.state_dict(), "args": args}, p)
    t = load_teacher(p, n_mean=500)
    assert t.config.channels == CFG.channels and t.config.size == 32
    assert "mean of w" in t.w_mean_source
    w = t.sample_w(2, seed=0)
    assert torch.equal(t.synthesis(w), Teacher(g, n_mean=10).synthesis(w))
    # a bare g_ema state dict works too
    torch.save(g.state_dict(), tmp_path / "bare.pt")
    assert load_teacher(tmp_path / "bare.pt", n_mean=10).size == 32
    # args inconsistent with the weights
    torch.save({"g_ema": g.state_dict(), "args": argparse.Namespace(size=64)}, tmp_path / "bad_args.pt")
    with pytest.raises(DiganError, match="size 64"):
        load_teacher(tmp_path / "bad_args.pt")


def test_mismatching_config_names_first_key_and_shapes(tmp_path):
    g, _ = _models()
    p = save_checkpoint(tmp_path / "t.pt", make_checkpoint(g, CFG))
    other = StyleGAN2Config(size=32, style_dim=24, n_mlp=2, channels={4: 32, 8: 32, 16: 32, 32: 8})
    with pytest.raises(DiganError) as e:
        load_teacher(p, config=other)
    msg = str(e.value)
    assert "'convs.2.conv.weight'" in msg and "(1, 16, 32, 3, 3)" in msg and "(1, 32, 32, 3, 3)" in msg
    assert "\n" not in msg
    with pytest.raises(DiganError, match=r"'style\.3\.weight': missing"):
        load_teacher(p, config=StyleGAN2Config(size=32, style_dim=24, n_mlp=3, channels=CFG.channels))
    with pytest.raises(DiganError, match=r"unexpected key 'style\.2\.weight'"):
        load_teacher(p, config=StyleGAN2Config(size=32, style_dim=24, n_mlp=1, channels=CFG.channels))


def test_missing_and_corrupt_files_give_one_line_errors(tmp_path):
    with pytest.raises(DiganError, match="not found"):
        load_teacher(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(DiganError, match="corrupt"):
        load_teacher(bad)
    save_torch(tmp_path / "list.pt", [1, 2, 3])
    with pytest.raises(DiganError, match="not a dict"):
        load_teacher(tmp_path / "list.pt")
    save_torch(tmp_path / "other.pt", {"model": {"fc.weight": torch.zeros(2)}})
    with pytest.raises(DiganError, match="no generator weights"):
        load_teacher(tmp_path / "other.pt")
    g, _ = _models()
    sd = g.state_dict()
    sd["convs.1.conv.weight"] = sd["convs.1.conv.weight"][:, :, :4]  # truncated tensor
    save_torch(tmp_path / "trunc.pt", {"g_ema": sd, "config": {"model": {"size": 32, "style_dim": 24, "n_mlp": 2, "channels": CFG.channels}}})
    with pytest.raises(DiganError, match="convs.1.conv.weight"):
        load_teacher(tmp_path / "trunc.pt")


# ---------------------------------------------------------------- NVIDIA ADA ----------------

def to_ada_generator(sd: dict, n_mlp: int, size: int, w_avg: torch.Tensor) -> dict:
    """rosinality -> NVIDIA stylegan2-ada-pytorch names, written independently of the converter."""
    out = {f"mapping.fc{i}.{p}": sd[f"style.{i + 1}.{p}"] for i in range(n_mlp) for p in ("weight", "bias")}
    out["mapping.w_avg"] = w_avg
    out["synthesis.b4.const"] = sd["input.input"][0]
    out["synthesis.b4.resample_filter"] = torch.tensor([1.0, 3, 3, 1]).outer(torch.tensor([1.0, 3, 3, 1])) / 64

    def lay(dst, src, noise_key):
        out[f"{dst}.weight"] = sd[f"{src}.conv.weight"][0]
        out[f"{dst}.affine.weight"] = sd[f"{src}.conv.modulation.weight"]
        out[f"{dst}.affine.bias"] = sd[f"{src}.conv.modulation.bias"]
        out[f"{dst}.noise_strength"] = sd[f"{src}.noise.weight"][0]  # a 0-d tensor in NVIDIA's code
        out[f"{dst}.bias"] = sd[f"{src}.activate.bias"]
        out[f"{dst}.noise_const"] = sd[noise_key][0, 0]

    def rgb(dst, src):
        out[f"{dst}.weight"] = sd[f"{src}.conv.weight"][0]
        out[f"{dst}.affine.weight"] = sd[f"{src}.conv.modulation.weight"]
        out[f"{dst}.affine.bias"] = sd[f"{src}.conv.modulation.bias"]
        out[f"{dst}.bias"] = sd[f"{src}.bias"].flatten()

    lay("synthesis.b4.conv1", "conv1", "noises.noise_0")
    rgb("synthesis.b4.torgb", "to_rgb1")
    r, j = 8, 0
    while r <= size:
        lay(f"synthesis.b{r}.conv0", f"convs.{2 * j}", f"noises.noise_{2 * j + 1}")
        lay(f"synthesis.b{r}.conv1", f"convs.{2 * j + 1}", f"noises.noise_{2 * j + 2}")
        rgb(f"synthesis.b{r}.torgb", f"to_rgbs.{j}")
        r, j = r * 2, j + 1
    return out


def to_ada_discriminator(sd: dict, size: int) -> dict:
    out = {f"b{size}.fromrgb.weight": sd["convs.0.0.weight"], f"b{size}.fromrgb.bias": sd["convs.0.1.bias"]}
    r, k = size, 1
    while r > 4:
        out[f"b{r}.conv0.weight"] = sd[f"convs.{k}.conv1.0.weight"]
        out[f"b{r}.conv0.bias"] = sd[f"convs.{k}.conv1.1.bias"]
        out[f"b{r}.conv1.weight"] = sd[f"convs.{k}.conv2.1.weight"]
        out[f"b{r}.conv1.bias"] = sd[f"convs.{k}.conv2.2.bias"]
        out[f"b{r}.skip.weight"] = sd[f"convs.{k}.skip.1.weight"]
        r, k = r // 2, k + 1
    for a, b in (("conv", "final_conv.0.weight"), ("fc", "final_linear.0.weight"), ("out", "final_linear.1.weight")):
        out[f"b4.{a}.weight"] = sd[b]
    out["b4.conv.bias"] = sd["final_conv.1.bias"]
    out["b4.fc.bias"] = sd["final_linear.0.bias"]
    out["b4.out.bias"] = sd["final_linear.1.bias"]
    return out


def test_ada_state_dict_conversion_reproduces_images(tmp_path):
    g, d = _models(2)
    w_avg = torch.randn(24)
    ada_g = to_ada_generator(g.state_dict(), 2, 32, w_avg)
    ada_d = to_ada_discriminator(d.state_dict(), 32)
    torch.save({"G_ema": ada_g, "D": ada_d}, tmp_path / "ada.pt")
    t = load_teacher(tmp_path / "ada.pt")
    assert torch.equal(t.w_mean, w_avg)
    ref = Teacher(g, w_mean=w_avg)
    assert torch.equal(t.sample(2, seed=1, psi=0.5), ref.sample(2, seed=1, psi=0.5))
    ck = read_checkpoint(tmp_path / "ada.pt")
    assert ck.source_format == "nvidia-ada"
    d2 = Discriminator(ck.config)
    d2.load_state_dict({**d2.state_dict(), **ck.d})
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(d2(x), d(x), atol=1e-6)
    # a bare G_ema state dict is recognised too
    torch.save(ada_g, tmp_path / "ada_g.pt")
    assert torch.equal(load_teacher(tmp_path / "ada_g.pt").sample(1, seed=0), ref.sample(1, seed=0))
    # conditional models are refused with a clear message
    torch.save({**ada_g, "mapping.embed.weight": torch.zeros(24, 10)}, tmp_path / "cond.pt")
    with pytest.raises(DiganError, match="conditional"):
        load_teacher(tmp_path / "cond.pt")


def _tree(flat: dict) -> nn.Module:
    """Nested nn.Modules with the given flat parameter names (stand-in for NVIDIA's classes)."""
    root = nn.Module()
    for name, v in flat.items():
        parts = name.split(".")
        m = root
        for p in parts[:-1]:
            if not hasattr(m, p):
                m.add_module(p, nn.Module())
            m = getattr(m, p)
        if parts[-1] in ("noise_const", "w_avg", "resample_filter"):
            m.register_buffer(parts[-1], v.clone())
        else:
            m.register_parameter(parts[-1], nn.Parameter(v.clone()))
    return root


def test_ada_network_pickle_read_without_nvidia_code(tmp_path, monkeypatch):
    """Build a pickle the way NVIDIA's torch_utils.persistence does (module source + state), then
    read it with the real modules absent."""
    persistence = types.ModuleType("torch_utils.persistence")
    torch_utils = types.ModuleType("torch_utils")

    def _reconstruct_persistent_obj(meta):  # never called by our reader
        raise AssertionError("NVIDIA code must not run")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    dnnlib = types.ModuleType("dnnlib")
    dnnlib_util = types.ModuleType("dnnlib.util")

    class EasyDict(dict):
        pass

    EasyDict.__module__ = "dnnlib.util"
    EasyDict.__qualname__ = "EasyDict"
    dnnlib_util.EasyDict = EasyDict
    for name, mod in (("torch_utils", torch_utils), ("torch_utils.persistence", persistence), ("dnnlib", dnnlib), ("dnnlib.util", dnnlib_util)):
        monkeypatch.setitem(sys.modules, name, mod)

    class Pickler(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, nn.Module):
                meta = dict(type="class", version=4, module_src="raise RuntimeError('must not run')",
                            class_name="SynthesisLayer", state=dict(obj.__dict__))
                return _reconstruct_persistent_obj, (meta,)
            return NotImplemented

    g, d = _models(3)
    w_avg = torch.randn(24)
    data = {"G": _tree(to_ada_generator(g.state_dict(), 2, 32, w_avg)), "D": _tree(to_ada_discriminator(d.state_dict(), 32)),
            "G_ema": _tree(to_ada_generator(g.state_dict(), 2, 32, w_avg)), "augment_pipe": None,
            "training_set_kwargs": EasyDict(path="x", resolution=32)}
    pkl = tmp_path / "network-snapshot-000100.pkl"
    with open(pkl, "wb") as f:
        Pickler(f, protocol=4).dump(data)
    for name in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"):
        monkeypatch.delitem(sys.modules, name)
    t = load_teacher(pkl)
    ref = Teacher(g, w_mean=w_avg)
    assert torch.equal(t.sample(2, seed=5), ref.sample(2, seed=5))
    assert read_checkpoint(pkl).d is not None


def test_half_precision_export_is_smaller_and_equivalent(tmp_path):
    from digan.teacher.checkpoint import export_teacher

    g, d = _models(4)
    t0 = Teacher(g, n_mean=500)
    src = save_checkpoint(tmp_path / "full.pt", make_checkpoint(g, CFG, d=d, g=g, latent_avg=t0.w_mean))
    dst = export_teacher(src, tmp_path / "slim.pt", half=True, extra={"step": 3})
    assert dst.stat().st_size < 0.4 * src.stat().st_size  # no g, float16
    raw = torch.load(dst, weights_only=False)
    assert raw["g_ema"]["convs.1.conv.weight"].dtype == torch.float16 and raw["latent_avg"].dtype == torch.float32
    t1 = load_teacher(dst)
    assert t1.generator.input.input.dtype == torch.float32
    a, b = t0.sample(4, seed=0), t1.sample(4, seed=0)
    assert (a - b).abs().max() < 0.05 * a.abs().max()  # float16 rounding of the weights only
    assert torch.equal(t1.w_mean, t0.w_mean)


def test_bundled_tiny_teacher_matches_its_provenance():
    import json

    from digan.teacher import bundled_teacher_path
    from digan.teacher.train import preset_config
    from digan.utils.io import sha256_file

    p = bundled_teacher_path()
    if not p.is_file():
        pytest.skip(f"bundled teacher {p} not present")
    meta = json.loads(p.with_suffix(".json").read_text())
    assert meta["sha256"] == sha256_file(p)
    t = load_teacher("tiny")
    assert t.size == 64 and t.config == preset_config("tiny").model
    assert meta["config"]["model"]["size"] == 64 and meta["steps"] > 0
    img = t.sample(8, seed=0, psi=0.7)
    assert img.shape == (8, 3, 64, 64) and torch.isfinite(img).all()
    assert img.std(0).mean() > 0.02  # different seeds give different faces
    assert 0.2 < (img.abs() < 1).float().mean()  # mostly within [-1, 1], not saturated
    assert p.stat().st_size < 8 * 2**20
