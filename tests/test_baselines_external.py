"""DiscoFaceGAN / CONFIG-Net adapters: the pose mappings against re-implementations of each
method's own rotation code and our renderer's convention, one-line errors for missing installs,
and the CONFIG-Net exporter run end to end in a subprocess against a stand-in install."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.external import (
    CONFIGNET_EXPORTER,
    DISCOFACEGAN_EXPORTER,
    confignet_rotation,
    discofacegan_angles,
)
from digan.errors import DiganError
from evaluate.methods import create_method


def dfg_rotation(angles: np.ndarray) -> np.ndarray:
    """DiscoFaceGAN's Compute_rotation_matrix (renderer/face_decoder.py) before its transpose:
    R = Rz Ry Rx with right-handed rotations; a face point v (row) maps to (R v)."""
    x, y, z = angles
    rx = np.array([[1, 0, 0], [0, math.cos(x), -math.sin(x)], [0, math.sin(x), math.cos(x)]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rz = np.array([[math.cos(z), -math.sin(z), 0], [math.sin(z), math.cos(z), 0], [0, 0, 1]])
    return rz @ ry @ rx


def dfg_project(p: np.ndarray, focal: float = 1015.0 * 1.22, half: float = 128.0) -> tuple[float, float]:
    """DiscoFaceGAN's Projection_block: camera at z=10 looking at the origin, y up -> (u right, row down)."""
    xc, yc, zc = p[0], p[1], 10.0 - p[2]
    u = focal * xc / zc + half
    v = focal * yc / zc + half
    return u, 2 * half - v


def test_discofacegan_angles_equal_our_rotation():
    from digan.render.camera import rotation_matrix

    c = np.diag([1.0, -1.0, -1.0])  # BFM frame (y up, z toward the camera) -> ours (y down, z away)
    rng = np.random.default_rng(0)
    for yaw, pitch, roll in [(30, 0, 0), (0, 20, 0), (0, 0, 10), *rng.uniform(-60, 60, (5, 3)).tolist()]:
        ours = rotation_matrix(torch.tensor([[pitch, yaw, roll]], dtype=torch.float64))[0].numpy()
        theirs = c @ dfg_rotation(discofacegan_angles(yaw, pitch, roll).astype(np.float64)) @ c
        np.testing.assert_allclose(theirs, ours, atol=1e-6)
    # and in pixels: the nose tip (toward the camera) moves right for +yaw and down for +pitch
    nose = np.array([0.0, 0.0, 1.0])
    u0, r0 = dfg_project(nose)
    u1, r1 = dfg_project(dfg_rotation(discofacegan_angles(30, 0)) @ nose)
    u2, r2 = dfg_project(dfg_rotation(discofacegan_angles(0, 20)) @ nose)
    assert u1 > u0 + 10 and abs(r1 - r0) < 1e-6
    assert r2 > r0 + 10 and abs(u2 - u0) < 1e-6


def cn_matrix(a: np.ndarray) -> np.ndarray:
    """CONFIG-Net's euler_angles_to_matrix (confignet_utils.py) for one angle vector."""
    s, c = np.sin(a), np.cos(a)
    return np.array([
        [c[2] * c[1], -s[2], c[2] * s[1]],
        [s[0] * s[1] + c[0] * c[1] * s[2], c[0] * c[2], c[0] * s[2] * s[1] - c[1] * s[0]],
        [c[1] * s[0] * s[2] - c[0] * s[1], c[2] * s[0], c[0] * c[1] + s[0] * s[1] * s[2]],
    ])


def _axis_angle(m: np.ndarray) -> tuple[np.ndarray, float]:
    ang = math.acos(np.clip((np.trace(m) - 1) / 2, -1, 1))
    w, v = np.linalg.eig(m)
    axis = np.real(v[:, np.argmin(np.abs(w - 1))])
    return axis / np.linalg.norm(axis), ang


def test_confignet_rotation_axes():
    # CONFIG-Net's volume axes: 0 = image rows (vertical), 1 = image columns, 2 = depth
    m = cn_matrix(confignet_rotation(30.0, 0.0).astype(np.float64))
    axis, ang = _axis_angle(m)
    assert abs(abs(axis[0]) - 1) < 1e-9 and ang == pytest.approx(math.radians(30))  # yaw turns about the vertical axis
    m = cn_matrix(confignet_rotation(0.0, -15.0).astype(np.float64))
    axis, ang = _axis_angle(m)
    assert abs(abs(axis[1]) - 1) < 1e-9 and ang == pytest.approx(math.radians(15))  # pitch about the horizontal axis
    m = cn_matrix(confignet_rotation(25.0, 10.0).astype(np.float64))
    np.testing.assert_allclose(m @ m.T, np.eye(3), atol=1e-9)
    assert np.linalg.det(m) == pytest.approx(1.0)
    np.testing.assert_allclose(confignet_rotation(20, 5, yaw_sign=-1), [-math.radians(20), math.radians(5), 0], rtol=1e-6)
    with pytest.raises(DiganError, match="must be 1 or -1"):
        confignet_rotation(1, 2, yaw_sign=2)


def test_exporter_scripts_compile():
    compile(DISCOFACEGAN_EXPORTER, "discofacegan_export.py", "exec")
    compile(CONFIGNET_EXPORTER, "confignet_export.py", "exec")


def _touch(p: Path, text: str = "") -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def test_discofacegan_missing_install_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("DISCOFACEGAN_HOME", raising=False)
    with pytest.raises(DiganError, match=r"DiscoFaceGAN install not found at \$DISCOFACEGAN_HOME \(not set\); clone https://github.com/microsoft/DiscoFaceGAN"):
        create_method("discofacegan:net.pkl")
    home = tmp_path / "dfg"
    monkeypatch.setenv("DISCOFACEGAN_HOME", str(home))
    with pytest.raises(DiganError, match=f"DiscoFaceGAN install not found at {home}"):
        create_method("discofacegan:net.pkl")
    for f in ("generate_images.py", "dnnlib/__init__.py", "training/misc.py"):
        _touch(home / f)
    with pytest.raises(DiganError, match=r"DiscoFaceGAN id VAE weights not found at .*vae/weights/id/stage1_epoch_395\.ckpt\.index; .*git lfs pull") as e:
        create_method("discofacegan:net.pkl")
    assert "\n" not in str(e.value)
    for part in ("id", "exp", "gamma", "rot"):
        for suffix in (".index", ".data-00000-of-00001"):
            _touch(home / f"vae/weights/{part}/stage1_epoch_395.ckpt{suffix}")
    with pytest.raises(DiganError, match=r"generator pickle not found at \(no path given\); download the pre-trained FFHQ model"):
        create_method("discofacegan")
    with pytest.raises(DiganError, match=f"generator pickle not found at {tmp_path / 'nope.pkl'}"):
        create_method(f"discofacegan:{tmp_path / 'nope.pkl'}")
    _touch(tmp_path / "net.pkl")
    with pytest.raises(DiganError, match="Python of the DiscoFaceGAN environment not found at /no/such/python"):
        create_method(f"discofacegan:{tmp_path / 'net.pkl'}", python="/no/such/python")
    with pytest.raises(DiganError, match="discofacegan has no option 'psi'"):
        create_method(f"discofacegan:{tmp_path / 'net.pkl'}", psi=0.7)


def test_confignet_missing_install_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("CONFIGNET_HOME", raising=False)
    with pytest.raises(DiganError, match=r"\$CONFIGNET_HOME"):
        create_method("confignet")
    home = tmp_path / "cn"
    _touch(home / "confignet" / "__init__.py")
    with pytest.raises(DiganError, match=r"CONFIG-Net 256 px model not found at .*models/confignet_256/model\.json; run 'python setup/download_deps\.py'"):
        create_method("confignet", home=str(home))
    with pytest.raises(DiganError, match="256 and 512"):
        create_method("confignet:300", home=str(home))


FAKE_CONFIGNET = r'''
import json, os
import numpy as np

class LatentGAN:
    def __init__(self, config):
        self.config = config
        self.generator_smoothed = self

    @classmethod
    def load(cls, path):
        with open(os.path.join(os.path.dirname(__file__), "..", "loads.log"), "a") as f:
            f.write("load\n")
        return cls(json.load(open(path)))

    def predict(self, z):
        return np.asarray(z, np.float32) * 2.0

class ConfigNet:
    @classmethod
    def load(cls, path):
        o = cls()
        o.res = json.load(open(path))["res"]
        return o

    def generate_images(self, emb, rot):
        if os.environ.get("FAKE_CONFIGNET_FAIL"):
            raise RuntimeError("boom in generate_images")
        n = emb.shape[0]
        img = np.zeros((n, self.res, self.res, 3), np.uint8)   # BGR, like cv2
        img[..., 0] = np.clip(np.rint(128 + 100 * rot[:, 0]), 0, 255)[:, None, None]
        img[..., 1] = np.clip(np.rint(128 + 100 * rot[:, 1]), 0, 255)[:, None, None]
        img[..., 2] = np.clip(np.rint(128 + 20 * emb[:, 0]), 0, 255)[:, None, None]
        return img
'''


def _fake_confignet(home: Path) -> None:
    _touch(home / "confignet" / "__init__.py", FAKE_CONFIGNET)
    _touch(home / "models" / "confignet_256" / "model.json", json.dumps({"res": 16}))
    _touch(home / "models" / "confignet_256" / "model.npz")
    _touch(home / "models" / "latentgan_256" / "model.json", json.dumps({"latent_dim": 4}))
    _touch(home / "models" / "latentgan_256" / "model.npz")


def test_confignet_adapter_end_to_end_with_a_stand_in_install(tmp_path, monkeypatch):
    home = tmp_path / "ConfigNet"
    _fake_confignet(home)
    opts = dict(home=str(home), python=sys.executable, n_faces=3, yaws=[-30, 0, 30], pitches=[0, 10], seed=5, truncation=0.5,
                cache=str(tmp_path / "cache"))
    m = create_method("confignet", **opts)
    assert m.name == "confignet" and m.capabilities.pose and m.capabilities.yaws == (-30.0, 0.0, 30.0)
    assert m.capabilities.max_faces == 3 and m.info()["method"] == "confignet"
    img = m.render(torch.tensor([0, 1, 2]), yaw=30, pitch=10).image
    rgb = ((img[:, :, 0, 0] + 1) * 127.5).round().numpy()  # (3 faces, RGB)
    # the exporter turned BGR into RGB and passed our rotation mapping through
    np.testing.assert_allclose(rgb[:, 2], round(128 + 100 * math.radians(30)))
    np.testing.assert_allclose(rgb[:, 1], round(128 + 100 * math.radians(10)))
    # latents: N(0,1) from RandomState([seed, i]) times the truncation, through the latent GAN (x2 here)
    z0 = [np.random.RandomState([5, i]).normal(size=4)[0] for i in range(3)]
    np.testing.assert_allclose(rgb[:, 0], [np.clip(np.rint(128 + 20 * 2 * 0.5 * z), 0, 255) for z in z0])
    # the export is cached by its settings
    m2 = create_method("confignet", **opts)
    assert m2.folder.root == m.folder.root
    assert (home / "loads.log").read_text().count("load") == 1
    # a failing exporter is one line quoting its error
    monkeypatch.setenv("FAKE_CONFIGNET_FAIL", "1")
    with pytest.raises(DiganError, match=r"the confignet exporter failed in .*: RuntimeError: boom in generate_images") as e:
        create_method("confignet", **{**opts, "seed": 6})
    assert "\n" not in str(e.value)
    assert not any(p.name.startswith("confignet-") and p.is_dir() and not (p / "manifest.json").exists()
                   for p in (tmp_path / "cache").iterdir())  # nothing half-written left behind
