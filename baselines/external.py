"""Adapters for DiscoFaceGAN and CONFIG-Net, which need assets that cannot ship here (their code,
their weights, a 3D morphable model) and their own TensorFlow environments (DiscoFaceGAN: TF 1.x,
Python <= 3.7; CONFIG-Net: TF 2.x), so they cannot be imported into digan-bench's process.

Each adapter checks a **user-supplied install**, runs a small exporter script *in that install's
Python* (a subprocess, working directory = the install) that renders faces at the requested views,
and writes them in the rendered-samples format (:mod:`baselines.samples`); the benchmark then
reads that folder. The same folder can be made by hand (see "Exporting by hand" below) and
evaluated as ``samples:FOLDER``.

Benchmark methods (options via ``--set method_options={discofacegan: {...}}``):

* ``discofacegan:NETWORK_PKL``: install folder ``home`` (option) or ``$DISCOFACEGAN_HOME``; Python
  ``python`` (option) or ``$DISCOFACEGAN_PYTHON`` (default ``python``).
* ``confignet[:RESOLUTION]`` (256 or 512, default 256): ``home`` or ``$CONFIGNET_HOME``,
  ``python`` or ``$CONFIGNET_PYTHON``.

Common options: ``n_faces`` (default 1000), ``yaws`` (default -45 ... 45 in 15 degree steps,
including 0), ``pitches`` ([0]), ``seed`` (0), ``truncation`` (1.0, the FID protocol),
``cache`` (folder of exports, default ``~/.cache/digan-bench/external``; an export is reused when
its settings hash matches), ``device`` (ignored: the install decides). Face ``i`` is drawn from
``numpy.random.RandomState([seed, i])`` inside the install, so it is reproducible but is not the
same identity as face ``i`` of a PyTorch method.

Pose mapping (degrees in digan-bench: positive yaw turns the nose toward image right, positive
pitch toward image down, see :mod:`digan.render.types`):

* DiscoFaceGAN (:func:`discofacegan_angles`): its generator is conditioned on 3DMM coefficients
  ``[identity 160 | expression 64 | rotation 3 | lighting 27]`` plus 32 noise values; the rotation
  coefficients are the Euler angles ``(x, y, z)`` in radians of Deng et al.'s face model, applied
  as ``R = Rz Ry Rx`` to the face in a frame with y up and z toward the camera. That frame is ours
  turned by 180 degrees about x (``C = diag(1, -1, -1)``), and ``C Rx(a) C = Rx(a)``,
  ``C Ry(b) C = Ry(-b)``, ``C Rz(c) C = Rz(-c)``; our renderer's yaw is a right-handed rotation
  by ``-yaw`` about y. Hence ``(x, y, z) = (pitch, yaw, -roll)`` in radians. The exporter keeps
  the identity, expression and lighting from the VAEs of DiscoFaceGAN's ``generate_images.py``
  (``z_to_lambda_mapping``) and overwrites the 3 rotation coefficients.
* CONFIG-Net (:func:`confignet_rotation`): ``ConfigNet.generate_images(latents, rotations)``
  takes ``rotations`` (N, 3) in radians ordered (yaw, pitch, roll): in its
  ``euler_angles_to_matrix`` element 0 turns about the image's vertical axis and element 1 about
  the horizontal one, and its demo maps the D/A keys to +-element 0 and S/W to +-element 1. The
  signs follow that demo (D = head turns right on screen, S = down); they come from CONFIG-Net's
  training data, not from the architecture, so verify them once with the pose metric and use the
  options ``yaw_sign``/``pitch_sign`` (+1/-1) if a sign is mirrored.

Exporting by hand (any other method, or these two without the adapter)::

    from baselines.samples import SamplesManifest, image_name, view_dir_name, write_manifest
    from baselines.external import discofacegan_angles
    for yaw in [-45, -30, 0, 30, 45]:
        coeff_rot = discofacegan_angles(yaw, 0.0)       # put into INPUTcoeff[:, 224:227]
        ...                                             # render face i -> FOLDER/yaw_{yaw}/000000.png
    write_manifest(FOLDER, SamplesManifest(method="discofacegan", n_faces=N, yaws=[-45, -30, 0, 30, 45],
                                           image_size=256, source="DiscoFaceGAN, rotation coefficients set per yaw"))
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from digan.errors import DiganError, MissingAssetError
from evaluate.methods import Method, register_method

__all__ = [
    "discofacegan_angles",
    "confignet_rotation",
    "ExternalInstall",
    "discofacegan_install",
    "confignet_install",
    "export_external",
    "DEFAULT_YAWS",
]

DEFAULT_YAWS = (-45.0, -30.0, -15.0, 0.0, 15.0, 30.0, 45.0)

DISCOFACEGAN_URL = "https://github.com/microsoft/DiscoFaceGAN"
CONFIGNET_URL = "https://github.com/microsoft/ConfigNet"


def discofacegan_angles(yaw: float, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """DiscoFaceGAN rotation coefficients (radians, its order x, y, z) for digan-bench degrees."""
    return np.array([math.radians(pitch), math.radians(yaw), -math.radians(roll)], dtype=np.float32)


def confignet_rotation(yaw: float, pitch: float = 0.0, roll: float = 0.0, yaw_sign: float = 1.0, pitch_sign: float = 1.0) -> np.ndarray:
    """CONFIG-Net ``rotations`` row (radians, its order yaw, pitch, roll) for digan-bench degrees."""
    if yaw_sign not in (1, -1, 1.0, -1.0) or pitch_sign not in (1, -1, 1.0, -1.0):
        raise DiganError(f"confignet yaw_sign/pitch_sign must be 1 or -1, got {yaw_sign}, {pitch_sign}")
    return np.array([yaw_sign * math.radians(yaw), pitch_sign * math.radians(pitch), math.radians(roll)], dtype=np.float32)


@dataclass
class ExternalInstall:
    """A checked external install: ``home``, the ``python`` that runs it, files it needs."""

    kind: str  # "discofacegan" | "confignet"
    home: Path
    python: str
    network: Path | None = None
    resolution: int = 256
    files: dict[str, Path] = field(default_factory=dict)


def _home(kind: str, home: str | None, env: str, url: str) -> Path:
    h = home or os.environ.get(env)
    if not h:
        raise MissingAssetError(f"{kind} install", f"${env} (not set)",
                                f"clone {url}, set up its environment and weights, then set {env}=/path/to/it or pass the 'home' option")
    p = Path(h).expanduser()
    if not p.is_dir():
        raise MissingAssetError(f"{kind} install", str(p), f"clone {url} there or point {env} / the 'home' option at your clone")
    return p


def _need(base: Path, rel: str, what: str, how: str) -> Path:
    p = base / rel
    if not p.exists():
        raise MissingAssetError(what, str(p), how)
    return p


def _python(python: str | None, env: str, kind: str) -> str:
    exe = python or os.environ.get(env) or "python"
    found = shutil.which(exe) if os.sep not in exe else (exe if Path(exe).is_file() else None)
    if not found:
        raise MissingAssetError(f"Python of the {kind} environment", exe,
                                f"create that environment (see its README) and pass its interpreter with ${env} or the 'python' option")
    return found


def discofacegan_install(home: str | None = None, network: str | None = None, python: str | None = None) -> ExternalInstall:
    """Check a DiscoFaceGAN install (one-line errors naming the first missing file and its source).

    Needed: the repository (``generate_images.py``, ``dnnlib/``, ``training/``), the four VAE
    checkpoints ``vae/weights/{id,exp,gamma,rot}/stage1_epoch_395.ckpt.*`` (in the repository),
    the generator pickle (``network``, the pre-trained FFHQ model linked in its README) and a
    Python with TensorFlow 1.x (``$DISCOFACEGAN_PYTHON``). The Basel Face Model
    (``renderer/BFM face model/BFM_model_front_gan.mat``) is only needed for DiscoFaceGAN's
    training and preprocessing, not for generation.
    """
    h = _home("DiscoFaceGAN", home, "DISCOFACEGAN_HOME", DISCOFACEGAN_URL)
    repo = f"part of the DiscoFaceGAN repository ({DISCOFACEGAN_URL}); re-clone it"
    files = {
        "generate_images": _need(h, "generate_images.py", "DiscoFaceGAN generate_images.py", repo),
        "dnnlib": _need(h, "dnnlib/__init__.py", "DiscoFaceGAN dnnlib package", repo),
        "misc": _need(h, "training/misc.py", "DiscoFaceGAN training/misc.py", repo),
    }
    for part in ("id", "exp", "gamma", "rot"):
        for suffix in (".index", ".data-00000-of-00001"):
            rel = f"vae/weights/{part}/stage1_epoch_395.ckpt{suffix}"
            files[f"vae_{part}{suffix}"] = _need(h, rel, f"DiscoFaceGAN {part} VAE weights",
                                                 f"they are in the repository's vae/weights ({DISCOFACEGAN_URL}); fetch them with git lfs pull")
    if not network:
        raise MissingAssetError("DiscoFaceGAN generator pickle", "(no path given)",
                                f"download the pre-trained FFHQ model linked in the DiscoFaceGAN README ({DISCOFACEGAN_URL}) and "
                                "pass it as discofacegan:PATH.pkl")
    net = Path(network).expanduser()
    if not net.is_file():
        raise MissingAssetError("DiscoFaceGAN generator pickle", str(net),
                                f"download the pre-trained FFHQ model linked in the DiscoFaceGAN README ({DISCOFACEGAN_URL})")
    return ExternalInstall("discofacegan", h, _python(python, "DISCOFACEGAN_PYTHON", "DiscoFaceGAN"), net.resolve(), 256, files)


def confignet_install(home: str | None = None, resolution: int = 256, python: str | None = None) -> ExternalInstall:
    """Check a CONFIG-Net install: the repository (``confignet/``), the models
    ``models/confignet_{R}/model.json`` and ``models/latentgan_{R}/model.json`` with their
    ``.npz`` weights (``python setup/download_deps.py`` in the repository) and a Python with its
    TensorFlow 2 environment (``$CONFIGNET_PYTHON``)."""
    if int(resolution) not in (256, 512):
        raise DiganError(f"CONFIG-Net comes in 256 and 512 px; got confignet:{resolution}")
    h = _home("CONFIG-Net", home, "CONFIGNET_HOME", CONFIGNET_URL)
    r = int(resolution)
    deps = f"run 'python setup/download_deps.py' in the ConfigNet repository ({CONFIGNET_URL})"
    files = {
        "package": _need(h, "confignet/__init__.py", "CONFIG-Net confignet package", f"part of {CONFIGNET_URL}; re-clone it"),
        "confignet": _need(h, f"models/confignet_{r}/model.json", f"CONFIG-Net {r} px model", deps),
        "confignet_weights": _need(h, f"models/confignet_{r}/model.npz", f"CONFIG-Net {r} px weights", deps),
        "latentgan": _need(h, f"models/latentgan_{r}/model.json", f"CONFIG-Net latent GAN ({r} px)", deps),
        "latentgan_weights": _need(h, f"models/latentgan_{r}/model.npz", f"CONFIG-Net latent GAN weights ({r} px)", deps),
    }
    return ExternalInstall("confignet", h, _python(python, "CONFIGNET_PYTHON", "CONFIG-Net"), None, r, files)


# ----------------------------------------------------------------------------------------------
# exporter scripts: run by the install's Python (no digan-bench imports; Python 3.6+ syntax)

_COMMON = r'''
import json, os, sys
import numpy as np
from PIL import Image

job = json.load(open(sys.argv[1]))
sys.path.insert(0, os.getcwd())

def face_latent(seed, i, dim):
    return np.random.RandomState([int(seed), int(i)]).normal(size=dim)

def save(view_dir, i, rgb):
    d = os.path.join(job["out"], view_dir)
    if not os.path.isdir(d):
        os.makedirs(d)
    arr = np.clip(np.rint(np.asarray(rgb, dtype=np.float64)), 0, 255).astype(np.uint8)
    Image.fromarray(arr, "RGB").save(os.path.join(d, "%06d.png" % i))
'''

DISCOFACEGAN_EXPORTER = _COMMON + r'''
import tensorflow as tf
import dnnlib.tflib as tflib
from training import misc
import generate_images as dfg

tflib.init_tf()
_G, _D, Gs = misc.load_pkl(job["network"])
latents = tf.placeholder(tf.float32, name="latents", shape=[1, 128 + 32 + 16 + 3])
noise = tf.placeholder(tf.float32, name="noise", shape=[1, 32])
rot = tf.placeholder(tf.float32, name="rot", shape=[1, 3])
coeff = dfg.z_to_lambda_mapping(latents)            # [id 160 | exp 64 | rot 3 | gamma 27]
coeff = tf.concat([coeff[:, :224], rot, coeff[:, 227:]], axis=1)
coeff = tf.concat([coeff, noise], axis=1)
psi = float(job["truncation"])
if psi < 1.0:
    _, avg = dfg.get_model_and_average_w_id(job["network"])
else:
    avg = np.zeros([14 * 512], np.float32)          # unused: rate 1 leaves w unchanged
images = dfg.truncate_generation(Gs, coeff, rate=psi, dlatent_average_id=avg)
dfg.restore_weights_and_initialize()
for i in range(int(job["n"])):
    z = face_latent(job["seed"], i, 128 + 32 + 16 + 32)
    lat = np.concatenate([z[:176], np.zeros(3)])[None]
    nz = z[176:][None]
    for view in job["views"]:
        img = tflib.run(images, {latents: lat, noise: nz, rot: np.asarray(view["angles"], np.float32)[None]})
        save(view["dir"], i, img[0])
print("exported", job["n"], "faces x", len(job["views"]), "views")
'''

CONFIGNET_EXPORTER = _COMMON + r'''
from confignet import ConfigNet, LatentGAN

res = int(job["resolution"])
latentgan = LatentGAN.load(os.path.join("models", "latentgan_%d" % res, "model.json"))
model = ConfigNet.load(os.path.join("models", "confignet_%d" % res, "model.json"))
dim = int(latentgan.config["latent_dim"])
psi = float(job["truncation"])
for i in range(int(job["n"])):
    z = face_latent(job["seed"], i, dim)[None] * psi   # LatentGAN.generate_latents: N(0,1) * truncation
    emb = latentgan.generator_smoothed.predict(z)
    for view in job["views"]:
        bgr = model.generate_images(emb, np.asarray(view["angles"], np.float32)[None])
        save(view["dir"], i, np.asarray(bgr)[0][:, :, ::-1])
print("exported", job["n"], "faces x", len(job["views"]), "views")
'''


def _views(kind: str, yaws: Sequence[float], pitches: Sequence[float], yaw_sign: float, pitch_sign: float) -> list[dict[str, Any]]:
    from baselines.samples import view_dir_name

    out = []
    for p in pitches:
        for y in yaws:
            ang = discofacegan_angles(y, p) if kind == "discofacegan" else confignet_rotation(y, p, 0.0, yaw_sign, pitch_sign)
            out.append({"dir": view_dir_name(y, p), "yaw": float(y), "pitch": float(p), "angles": [float(a) for a in ang]})
    return out


def export_external(inst: ExternalInstall, out_dir: str | Path, n: int, yaws: Sequence[float] = DEFAULT_YAWS,
                    pitches: Sequence[float] = (0.0,), seed: int = 0, truncation: float = 1.0, yaw_sign: float = 1.0,
                    pitch_sign: float = 1.0, force: bool = False, timeout: float | None = None):
    """Run the install's exporter and write a validated samples folder at ``out_dir`` (atomic).

    Returns the opened :class:`baselines.samples.SamplesFolder`. A failing exporter is a one-line
    error quoting the last line of its output.
    """
    from digan.utils.io import atomic_dir

    from baselines.samples import SamplesManifest, open_samples, write_manifest

    if n < 1:
        raise DiganError(f"n_faces must be at least 1, got {n}")
    script = DISCOFACEGAN_EXPORTER if inst.kind == "discofacegan" else CONFIGNET_EXPORTER
    views = _views(inst.kind, yaws, pitches, yaw_sign, pitch_sign)
    with atomic_dir(out_dir, force=force) as tmp:
        with tempfile.TemporaryDirectory(prefix="digan-export-") as work:
            job = {"out": str(tmp), "n": int(n), "seed": int(seed), "truncation": float(truncation), "views": views,
                   "network": str(inst.network) if inst.network else None, "resolution": inst.resolution}
            (Path(work) / "job.json").write_text(json.dumps(job))
            (Path(work) / "export.py").write_text(script)
            proc = subprocess.run([inst.python, str(Path(work) / "export.py"), str(Path(work) / "job.json")], cwd=str(inst.home),
                                  capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            lines = [ln for ln in (proc.stderr or proc.stdout or "").strip().splitlines() if ln.strip()]
            last = lines[-1].strip() if lines else f"exit status {proc.returncode}"
            raise DiganError(f"the {inst.kind} exporter failed in {inst.home} with {inst.python}: {last}")
        from PIL import Image

        first = tmp / views[0]["dir"] / "000000.png"
        if not first.is_file():
            raise DiganError(f"the {inst.kind} exporter wrote no image {first}; check the install")
        with Image.open(first) as im:
            size = int(im.size[0])
        write_manifest(tmp, SamplesManifest(
            method=inst.kind, n_faces=int(n), yaws=[float(y) for y in yaws], pitches=[float(p) for p in pitches], image_size=size,
            seed=int(seed), source=f"{inst.kind} install {inst.home} via digan-bench (baselines.external)",
            notes=f"truncation {truncation}; face i from numpy RandomState([seed, i])",
            info={"network": str(inst.network) if inst.network else None, "resolution": inst.resolution,
                  "views": views, "yaw_sign": yaw_sign, "pitch_sign": pitch_sign}))
        open_samples(tmp)  # structure check before the folder appears
    return open_samples(out_dir)


def _settings_key(inst: ExternalInstall, **kw: Any) -> str:
    net = ""
    if inst.network is not None:
        st = inst.network.stat()
        net = f"{inst.network}:{st.st_size}:{st.st_mtime_ns}"
    blob = json.dumps({"kind": inst.kind, "home": str(inst.home), "network": net, "res": inst.resolution, **kw}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _external_method(inst: ExternalInstall, n_faces: int, yaws: Sequence[float], pitches: Sequence[float], seed: int,
                     truncation: float, cache: str | None, yaw_sign: float = 1.0, pitch_sign: float = 1.0) -> Method:
    from baselines.samples import SamplesMethod

    key = _settings_key(inst, n=int(n_faces), yaws=[float(y) for y in yaws], pitches=[float(p) for p in pitches], seed=int(seed),
                        psi=float(truncation), ys=float(yaw_sign), ps=float(pitch_sign))
    root = Path(cache or "~/.cache/digan-bench/external").expanduser()
    folder = root / f"{inst.kind}-{key}"
    if not (folder / "manifest.json").is_file():
        export_external(inst, folder, int(n_faces), yaws, pitches, seed, truncation, yaw_sign, pitch_sign, force=folder.exists())
    m = SamplesMethod(folder)
    m.name = inst.kind
    return m


_COMMON_OPTS = "n_faces, yaws, pitches, seed, truncation, cache, home, python"


@register_method("discofacegan", help="DiscoFaceGAN from a user install (exports renders, then evaluates them). discofacegan:NETWORK.pkl")
def _make_discofacegan(arg: str | None, variant: str = "full", home: str | None = None, python: str | None = None,
                       n_faces: int = 1000, yaws: Sequence[float] = DEFAULT_YAWS, pitches: Sequence[float] = (0.0,), seed: int = 0,
                       truncation: float = 1.0, cache: str | None = None, device: str | None = None, **unknown: Any) -> Method:
    if unknown:
        raise DiganError(f"discofacegan has no option '{sorted(unknown)[0]}'; valid options: {_COMMON_OPTS}")
    if variant != "full":
        raise DiganError(f"discofacegan has no variant '{variant}'")
    inst = discofacegan_install(home, arg, python)
    return _external_method(inst, n_faces, yaws, pitches, seed, truncation, cache)


@register_method("confignet", help="CONFIG-Net from a user install (exports renders, then evaluates them). confignet[:256|512]")
def _make_confignet(arg: str | None, variant: str = "full", home: str | None = None, python: str | None = None,
                    n_faces: int = 1000, yaws: Sequence[float] = DEFAULT_YAWS, pitches: Sequence[float] = (0.0,), seed: int = 0,
                    truncation: float = 1.0, cache: str | None = None, yaw_sign: float = 1.0, pitch_sign: float = 1.0,
                    device: str | None = None, **unknown: Any) -> Method:
    if unknown:
        raise DiganError(f"confignet has no option '{sorted(unknown)[0]}'; valid options: {_COMMON_OPTS}, yaw_sign, pitch_sign")
    if variant != "full":
        raise DiganError(f"confignet has no variant '{variant}'")
    try:
        res = int(arg) if arg else 256
    except ValueError as e:
        raise DiganError(f"confignet:{arg}: the argument is the resolution, 256 or 512") from e
    inst = confignet_install(home, res, python)
    return _external_method(inst, n_faces, yaws, pitches, seed, truncation, cache, yaw_sign, pitch_sign)
