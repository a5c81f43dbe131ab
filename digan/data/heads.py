"""Procedural clay-warrior head busts with exactly known 3D shape (depth maps and albedo).

Each identity is a small vector of named parameters (:data:`PARAMS`) drawn from a seeded
generator; :func:`head_maps` turns it into canonical (frontal) maps at any resolution:

* ``depth`` (1,S,S): camera depth of a height field ``depth = BACK_DEPTH - h(x, y)`` in
  head coordinates ``x, y`` (x right, y down; the image shows ``[-ZOOM, ZOOM]`` around
  ``(0, CENTRE_Y)``), with the background plane at :data:`BACKGROUND_DEPTH`;
* ``albedo`` (3,S,S) in [-1, 1]; ``mask`` (1,S,S): the bust's silhouette; ``damage`` (1,S,S): chips
  and missing parts.

The surface and the textures are continuous functions of ``(x, y)`` (noise comes from fixed
random lattices interpolated bicubically), so the same identity sampled at 64, 128 or 256 px is
the same object; only the sampling changes.

Shape (heights in camera-depth units; at depth 1 the image spans ``+-tan(5 deg) = +-0.0875``):
an egg-shaped cranium (``sqrt`` profile, half-width ~0.04, relief ~0.045 so front-to-outline
depth is ~1.4x the half-width, as for human heads), ears, neck and shoulders (a bust), a
topknot (the Terracotta Army's hair bun, often off-centre), and face features as smooth bumps
and grooves: eye sockets with eyeballs and lids, brow ridge, nose ridge and tip with nostril
wings, cheeks, lips with a mouth groove, chin, moustache, hair combed upwards.

Albedo: a clay base colour between grey and orange terracotta, multi-scale mottling and
speckle, soil deposits darkening crevices (from the height field's curvature), and
painted-pigment remnants (pink flesh, black hair, brows and moustache, red lips, white/black
eyes) in patches, as on excavated figures. Damage: chips (shallow craters with light fresh-clay
colour) and missing parts (broken nose tip, topknot, ear), each recorded in the damage mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "PARAMS",
    "PARAM_NAMES",
    "BACK_DEPTH",
    "BACKGROUND_DEPTH",
    "HeadMaps",
    "sample_identity",
    "params_to_vector",
    "vector_to_params",
    "head_maps",
    "undamaged",
]

BACK_DEPTH = 1.04  # depth of the silhouette outline (height 0); the head's middle sits near the pivot 1.0
BACKGROUND_DEPTH = BACK_DEPTH  # canonical depth outside the bust: a flat plane at the outline's depth,
# like DIGAN/LiftedGAN's border depth (1.04), so normals at the outline are those of the plane
ZOOM = 0.8  # half-width of the image in head coordinates (the head is ~0.44 wide)
CENTRE_Y = 0.06  # head coordinate at the image centre (the face sits slightly above)

# name: (low, high, meaning). Damage parameters are drawn as 0/1 flags and counts.
PARAMS: dict[str, tuple[float, float, str]] = {
    "head_width": (0.88, 1.08, "cranium width scale"),
    "head_height": (0.93, 1.05, "cranium height scale"),
    "jaw": (0.72, 0.92, "jaw width relative to the cranium"),
    "face_relief": (0.85, 1.15, "depth of the whole head"),
    "brow": (0.4, 1.0, "brow ridge prominence"),
    "eye_spacing": (0.92, 1.08, "distance between the eyes"),
    "eye_depth": (0.7, 1.3, "eye socket depth"),
    "nose_length": (0.85, 1.15, "nose length"),
    "nose_width": (0.85, 1.25, "nose width"),
    "nose_height": (0.8, 1.25, "nose protrusion"),
    "cheeks": (0.3, 1.0, "cheek fullness"),
    "mouth_width": (0.85, 1.15, "mouth width"),
    "lips": (0.6, 1.3, "lip fullness"),
    "chin": (0.4, 1.2, "chin prominence"),
    "moustache": (0.0, 1.0, "moustache strength (0 = none)"),
    "topknot": (0.6, 1.2, "topknot (hair bun) size"),
    "topknot_x": (-0.25, 0.25, "topknot horizontal offset"),
    "ears": (0.85, 1.15, "ear size"),
    "neck": (0.85, 1.1, "neck width"),
    "clay_tone": (0.0, 1.0, "clay colour: 0 grey, 1 orange terracotta"),
    "clay_light": (0.85, 1.12, "clay brightness"),
    "paint": (0.0, 1.0, "amount of surviving pigment"),
    "flesh_tint": (0.0, 1.0, "flesh pigment hue: 0 pale pink, 1 warm pink"),
    "soil": (0.3, 1.0, "soil deposits in crevices"),
    "damage_chips": (0.0, 4.0, "number of chips (integer)"),
    "broken_nose": (0.0, 1.0, "nose tip missing (0/1)"),
    "broken_topknot": (0.0, 1.0, "topknot missing (0/1)"),
    "broken_ear": (0.0, 1.0, "one ear missing (0/1)"),
}
PARAM_NAMES: list[str] = list(PARAMS)
_NOISE_SEEDS = ("mottle", "speckle", "paint", "hair", "chips")


@dataclass
class HeadMaps:
    """Canonical maps of one identity at one resolution (see the module docstring)."""

    depth: torch.Tensor  # (1,S,S)
    albedo: torch.Tensor  # (3,S,S) in [-1, 1]
    mask: torch.Tensor  # (1,S,S) float {0,1}
    damage: torch.Tensor  # (1,S,S) float {0,1}


def sample_identity(seed: int, index: int, damage_prob: float = 0.5, missing_prob: float = 0.3) -> dict[str, float]:
    """Identity ``index`` of a seed: parameters uniform in their ranges, damage drawn as flags.

    With probability ``damage_prob`` the head is damaged: 1-4 chips, and each missing part
    (nose tip, topknot, ear) with probability ``missing_prob`` (0.3). Depends only on
    ``(seed, index)``; ``missing_prob`` only moves the thresholds, not the random stream.
    """
    rng = np.random.default_rng([int(seed), int(index), 1])
    p = {k: float(rng.uniform(lo, hi)) for k, (lo, hi, _) in PARAMS.items()}
    damaged = rng.uniform() < damage_prob
    p["damage_chips"] = float(rng.integers(1, 5)) if damaged else 0.0
    for k in ("broken_nose", "broken_topknot", "broken_ear"):
        p[k] = float(damaged and rng.uniform() < missing_prob)
    p["moustache"] = 0.0 if rng.uniform() < 0.25 else p["moustache"]
    p["noise_seed"] = float(rng.integers(0, 2**31 - 1))
    return p


def undamaged(p: dict[str, float]) -> dict[str, float]:
    """The same identity without damage (no chips, nothing missing): its undamaged twin. Every
    other parameter, including the noise seed and so the textures, is kept."""
    q = dict(p)
    q["damage_chips"] = 0.0
    for k in ("broken_nose", "broken_topknot", "broken_ear"):
        q[k] = 0.0
    return q


def params_to_vector(p: dict[str, float]) -> np.ndarray:
    """Parameters in :data:`PARAM_NAMES` order, then ``noise_seed``."""
    return np.array([p[k] for k in PARAM_NAMES] + [p["noise_seed"]], dtype=np.float64)


def vector_to_params(v) -> dict[str, float]:
    v = [float(x) for x in v]
    out = dict(zip(PARAM_NAMES, v[: len(PARAM_NAMES)]))
    out["noise_seed"] = v[len(PARAM_NAMES)]
    return out


# ----------------------------------------------------------------------------- helpers
def _lattice_noise(seed: int, name: str, cells: int, size: int, channels: int = 1) -> torch.Tensor:
    """Smooth noise in [-1, 1]: a (cells+1)^2 random lattice, bicubic to (C,S,S) (resolution-free)."""
    rng = np.random.default_rng([int(seed), _NOISE_SEEDS.index(name), cells])
    lat = torch.from_numpy(rng.uniform(-1, 1, (1, channels, cells + 1, cells + 1)).astype(np.float32))
    return F.interpolate(lat, size=(size, size), mode="bicubic", align_corners=True)[0]


def _fbm(seed: int, name: str, size: int, octaves=(4, 8, 16, 32), channels: int = 1) -> torch.Tensor:
    out, amp, tot = 0.0, 1.0, 0.0
    for c in octaves:
        out = out + amp * _lattice_noise(seed, name, c, size, channels)
        tot += amp
        amp *= 0.55
    return out / tot


def _smoothstep(e0: float, e1: float, x: torch.Tensor) -> torch.Tensor:
    t = ((x - e0) / (e1 - e0)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def _gauss(x, y, x0, y0, sx, sy):
    # exactly 0 beyond ~6 sigma: tiny tails would become float32 denormals, whose arithmetic
    # is orders of magnitude slower on CPUs
    q = (((x - x0) / sx) ** 2 + ((y - y0) / sy) ** 2) / 2
    return torch.where(q < 18.0, torch.exp(-q.clamp(max=18.0)), torch.zeros_like(q))


def _dome(x, y, x0, y0, rx, ry, power: float = 0.5):
    """``(1 - r^2)^power`` inside the ellipse, 0 outside, and the inside mask."""
    r2 = ((x - x0) / rx) ** 2 + ((y - y0) / ry) ** 2
    inside = r2 < 1
    return (1 - r2).clamp(min=0) ** power, inside


def _mix(base: torch.Tensor, colour, alpha: torch.Tensor) -> torch.Tensor:
    c = torch.as_tensor(colour, dtype=base.dtype).view(3, 1, 1)
    return base * (1 - alpha) + c * alpha


# ----------------------------------------------------------------------------- the head
def head_maps(p: dict[str, float], size: int) -> HeadMaps:
    """Canonical depth, albedo, silhouette and damage mask of identity ``p`` at ``size`` px."""
    s = int(size)
    lin = torch.linspace(-1.0, 1.0, s, dtype=torch.float32)
    # head coordinates: the image shows [-ZOOM, ZOOM] around (0, CENTRE_Y)
    y, x = torch.meshgrid(lin * ZOOM + CENTRE_Y, lin * ZOOM, indexing="ij")
    nseed = int(p["noise_seed"])
    relief = p["face_relief"]

    # ---- silhouette parts (heights >= 0 inside each part)
    cy = -0.06
    a = 0.44 * p["head_width"]
    b = 0.58 * p["head_height"]
    taper = 1 - (1 - p["jaw"]) * _smoothstep(-0.05, 0.55, y - cy)
    r2 = (x / (a * taper)) ** 2 + ((y - cy) / b) ** 2
    head_in = r2 < 1
    h_head = 0.046 * relief * (1 - r2).clamp(min=0) ** 0.5

    ear_x = a * 0.97
    ear_h = torch.zeros_like(x)
    ear_in = torch.zeros_like(x, dtype=torch.bool)
    for side in (-1, 1):
        if p["broken_ear"] > 0.5 and side == 1:
            continue
        d, m = _dome(x, y, side * ear_x, cy + 0.02, 0.075 * p["ears"], 0.14 * p["ears"], 0.6)
        ear_h = torch.maximum(ear_h, 0.010 * relief * d)
        ear_in |= m

    neck_w = 0.25 * p["neck"]
    neck_d, neck_in = _dome(x, y, 0.0, 0.75, neck_w, 0.6, 0.5)
    neck_in &= y > 0.1
    h_neck = 0.022 * relief * neck_d

    sh_d, sh_in = _dome(x, y, 0.0, 1.2, 1.0, 0.5, 0.5)
    # lamellar armour: rows of small plates, each row overlapping the one below
    plate_row = (y - 0.7) / 0.075
    plate_col = x / 0.085 + 0.5 * (torch.floor(plate_row) % 2)
    fr_r, fr_c = plate_row - torch.floor(plate_row), plate_col - torch.floor(plate_col)
    plates = 0.0025 * (1 - fr_r) - 0.0015 * _gauss(fr_c, 0.0 * fr_c, 0.0, 0.0, 0.07, 1.0) - 0.0015 * _gauss(1 - fr_c, 0.0 * fr_c, 0.0, 0.0, 0.07, 1.0)
    collar_d, collar_in = _dome(x, y, 0.0, 0.76, 0.36 * p["neck"], 0.11, 0.5)
    h_sh = (0.030 * sh_d + plates * _smoothstep(0.0, 0.25, sh_d)) * relief
    h_collar = (0.032 + 0.012 * collar_d) * relief

    tk_in = torch.zeros_like(head_in)
    h_tk = torch.zeros_like(x)
    tk_y = cy - b * 0.92
    if p["broken_topknot"] < 0.5:
        tk_d, tk_in = _dome(x, y, p["topknot_x"], tk_y, 0.13 * p["topknot"], 0.11 * p["topknot"], 0.5)
        h_tk = (0.012 + 0.018 * tk_d) * relief * tk_in

    # ---- face features on the cranium
    face = _smoothstep(1.0, 0.55, r2) * head_in  # fades out toward the outline
    f = torch.zeros_like(x)
    ex, ey = 0.165 * p["eye_spacing"], -0.08
    for side in (-1, 1):
        f -= 0.011 * p["eye_depth"] * _gauss(x, y, side * ex, ey, 0.085, 0.055)  # socket
        f += 0.0065 * _gauss(x, y, side * ex, ey + 0.005, 0.05, 0.03)  # eyeball
        f += 0.002 * _gauss(x, y, side * ex, ey - 0.035, 0.06, 0.012)  # upper lid
        f += 0.007 * p["brow"] * _gauss(x, y, side * (ex + 0.01), ey - 0.095 + 0.25 * (x - side * ex) ** 2, 0.1, 0.03)
        f += 0.008 * p["cheeks"] * _gauss(x, y, side * 0.2, 0.1, 0.09, 0.09)
        f += 0.0025 * _gauss(x, y, side * 0.08, 0.18, 0.03, 0.03)  # nostril wing
    nl = p["nose_length"]
    tip_y = 0.13 * nl
    t = ((y - (ey - 0.02)) / (tip_y - (ey - 0.02))).clamp(0, 1)  # 0 at the bridge, 1 at the tip
    nose_w = (0.028 + 0.03 * t) * p["nose_width"]
    ridge = torch.exp(-(x / nose_w) ** 2 / 2) * (0.35 + 0.65 * t) * (y < tip_y + 0.02).float()
    ridge = ridge * _smoothstep(ey - 0.07, ey - 0.02, y)
    nose = 0.016 * p["nose_height"] * ridge + 0.008 * p["nose_height"] * _gauss(x, y, 0.0, tip_y, 0.045 * p["nose_width"], 0.04)
    nose = nose * (1 - 0.8 * _smoothstep(tip_y + 0.0, tip_y + 0.06, y))
    if p["broken_nose"] > 0.5:
        nose = nose.clamp(max=0.009 * p["nose_height"])
    f += nose
    f -= 0.003 * _gauss(x, y, 0.0, tip_y + 0.055, 0.03, 0.015)  # under the nose
    my = tip_y + 0.15
    mw = 0.12 * p["mouth_width"]
    lip_env = torch.exp(-(x / mw) ** 4)
    f += 0.0045 * p["lips"] * lip_env * _gauss(x, y, 0.0, my - 0.025, 1.0, 0.018)
    f += 0.0055 * p["lips"] * lip_env * _gauss(x, y, 0.0, my + 0.03, 1.0, 0.022)
    f -= 0.0035 * lip_env * _gauss(x, y, 0.0, my + 0.002, 1.0, 0.007)  # mouth line
    f += 0.011 * p["chin"] * _gauss(x, y, 0.0, my + 0.17, 0.09, 0.06)
    for side in (-1, 1):  # nasolabial folds
        fx = side * (0.1 + 0.35 * (y - 0.15).clamp(min=0))
        f -= 0.0018 * _gauss(x, y, fx, 0.23, 0.012, 0.08)
    # moustache: a bar above the upper lip whose ends curl up
    mus_y = my - 0.055 - 0.9 * (x.abs() - 0.05).clamp(min=0) ** 2 * 4
    mus = p["moustache"] * (x.abs() < 0.19).float() * _gauss(x, y, 0.0, mus_y, 1.0, 0.014) * _smoothstep(0.02, 0.06, x.abs())
    f += 0.004 * mus
    # hair: above a hairline, with fine combed-up grooves
    hairline = cy - 0.33 * b / 0.58 + 0.05 * torch.cos(x * 5.0)
    hair = _smoothstep(hairline.add(0.02), hairline.sub(0.03), y) * head_in
    strands = torch.sin(70 * torch.atan2(x, (cy + 0.3) - y) + 6 * _fbm(nseed, "hair", s, (4, 8))[0])
    f += hair * (0.002 + 0.0012 * strands)
    h_face = h_head + relief * f * face

    # ---- union of parts: the nearest surface wins
    h = torch.where(head_in, h_face, torch.zeros_like(x))
    h = torch.where(ear_in, torch.maximum(h, ear_h), h)
    h = torch.where(neck_in, torch.maximum(h, h_neck), h)
    h = torch.where(sh_in, torch.maximum(h, h_sh), h)
    h = torch.where(collar_in, torch.maximum(h, h_collar), h)
    h = torch.where(tk_in, torch.maximum(h, h_tk), h)
    mask = head_in | ear_in | neck_in | sh_in | tk_in | collar_in

    # ---- damage: chips are shallow craters
    rng = np.random.default_rng([nseed, 7])
    damage = torch.zeros_like(x)
    for ci in range(int(p["damage_chips"])):
        cx_, cy_ = rng.uniform(-0.4, 0.4), rng.uniform(-0.55, 0.5)
        rx, ry = rng.uniform(0.04, 0.1), rng.uniform(0.03, 0.08)
        rough = 1 + 0.35 * _lattice_noise(nseed + ci, "chips", 12, s)[0]
        d, m = _dome(x, y, cx_, cy_, rx * rough, ry * rough, 0.5)
        m &= mask
        h = h - 0.006 * d * m
        damage = torch.maximum(damage, m.float())
    if p["broken_nose"] > 0.5:
        damage = torch.maximum(damage, ((nose >= 0.009 * p["nose_height"] - 1e-6) & head_in & (ridge > 0.2)).float())
    if p["broken_topknot"] > 0.5:
        damage = torch.maximum(damage, (_dome(x, y, p["topknot_x"], tk_y + 0.05, 0.12, 0.06)[1] & head_in).float())
    if p["broken_ear"] > 0.5:  # the fracture where the right ear was attached
        damage = torch.maximum(damage, (_dome(x, y, ear_x, cy + 0.02, 0.075 * p["ears"], 0.14 * p["ears"])[1] & head_in).float())

    h = h / ZOOM  # heights were designed for a [-1, 1] field of view
    # the mesh keeps a one-pixel ring at height 0 around the silhouette: rotated views then
    # show the side walls down to an outline at constant depth instead of the comb-like ends
    # of pixel rows whose last vertex happens to sit high on the steep outline
    inner = mask
    mask = F.max_pool2d(inner.float()[None, None], 3, 1, 1)[0, 0] > 0
    depth = torch.where(mask, BACK_DEPTH - h, torch.full_like(h, BACKGROUND_DEPTH))

    # ---- albedo
    grey, terra = torch.tensor([0.56, 0.54, 0.50]), torch.tensor([0.70, 0.48, 0.37])
    clay = (grey + (terra - grey) * p["clay_tone"]) * p["clay_light"]
    mottle = _fbm(nseed, "mottle", s, (3, 6, 12, 24))
    speck = _lattice_noise(nseed, "speckle", 96, s)
    alb = clay.view(3, 1, 1) * (1 + 0.10 * mottle + 0.05 * speck)
    # soil in crevices: positive where the surface is concave (height below its blur)
    hb = F.avg_pool2d(F.pad(h[None, None], (2, 2, 2, 2), mode="replicate"), 5, 1)[0, 0]
    cavity = ((hb - h) / 0.003).clamp(0, 1)
    alb = alb * (1 - 0.35 * p["soil"] * cavity)
    pn = _fbm(nseed, "paint", s, (5, 10, 20))[0]
    keep = p["paint"]

    def patches(level: float) -> torch.Tensor:  # surviving pigment: noise above a threshold
        return _smoothstep(level, level + 0.15, pn + 0.6 * keep - 0.3)

    skin = (head_in | ear_in | (neck_in & ~collar_in & ~sh_in)).float() * (1 - hair)
    robe = (sh_in | collar_in) & ~head_in
    armour_col = torch.tensor([0.30, 0.27, 0.25]) if p["clay_tone"] < 0.5 else torch.tensor([0.33, 0.25, 0.22])
    alb = torch.where(robe, _mix(alb, armour_col, 0.55 * patches(-0.2)), alb)
    alb = torch.where(collar_in & ~head_in, _mix(alb, [0.62, 0.30, 0.26], 0.5 * patches(-0.1)), alb)
    rivets = _gauss(fr_c, fr_r, 0.5, 0.3, 0.06, 0.08) * sh_in.float() * (~collar_in).float()
    alb = alb * (1 - 0.3 * rivets)
    flesh = torch.tensor([0.86, 0.64, 0.58]) + (torch.tensor([0.90, 0.58, 0.48]) - torch.tensor([0.86, 0.64, 0.58])) * p["flesh_tint"]
    alb = _mix(alb, flesh * p["clay_light"], 0.55 * skin * patches(0.05))
    dark = torch.tensor([0.13, 0.11, 0.10])
    alb = _mix(alb, dark, 0.8 * (hair + tk_in.float()).clamp(0, 1) * patches(-0.25))
    for side in (-1, 1):
        bx = x - side * (ex + 0.01)
        brow_line = _gauss(bx, y, 0.0, ey - 0.075 + 0.8 * bx**2, 0.075, 0.013)
        alb = _mix(alb, dark, 0.85 * brow_line * (0.4 + 0.6 * patches(-0.4)))
        eye = _gauss(x, y, side * ex, ey + 0.005, 0.048, 0.02)
        alb = _mix(alb, [0.88, 0.85, 0.78], 0.7 * eye * (0.5 + 0.5 * patches(-0.3)))
        lid = _gauss(x, y, side * ex, ey - 0.018 + 2.0 * (x - side * ex) ** 2, 0.055, 0.008)
        alb = _mix(alb, dark, 0.8 * lid)
        pupil = _gauss(x, y, side * ex, ey + 0.004, 0.016, 0.016)
        alb = _mix(alb, dark, 0.9 * pupil)
        nostril = _gauss(x, y, side * 0.028, tip_y + 0.035, 0.012, 0.008)
        alb = _mix(alb, dark, 0.6 * nostril)
    lips_m = lip_env * (_gauss(x, y, 0.0, my - 0.022, 1.0, 0.016) + _gauss(x, y, 0.0, my + 0.028, 1.0, 0.02)).clamp(0, 1)
    alb = _mix(alb, [0.62, 0.28, 0.24], 0.6 * lips_m * (0.5 + 0.5 * patches(-0.3)))
    alb = _mix(alb, dark, 0.75 * lip_env * _gauss(x, y, 0.0, my + 0.002, 1.0, 0.006))
    alb = _mix(alb, dark, 0.85 * (mus / max(p["moustache"], 1e-6)).clamp(0, 1) * min(1.0, p["moustache"] * 1.5))
    # a band holding the topknot
    if p["broken_topknot"] < 0.5:
        band = (((y - (tk_y + 0.085 * p["topknot"])).abs() < 0.018) & tk_in).float()
        alb = _mix(alb, [0.55, 0.22, 0.18], 0.8 * band)
    # fresh fractures are lighter and more orange than the weathered surface
    alb = _mix(alb, (terra * 1.12).clamp(max=1), 0.7 * damage * (0.8 + 0.2 * speck.clamp(-1, 1)))
    alb = alb.clamp(0, 1)
    # the ring takes the mean colour of its inner neighbours
    wsum = F.avg_pool2d(inner.float()[None, None], 3, 1, 1)[0]
    ring = F.avg_pool2d((alb * inner)[None], 3, 1, 1)[0] / wsum.clamp(min=1e-6)
    alb = torch.where(inner, alb, torch.where(mask, ring, torch.ones_like(alb)))
    albedo = alb * 2 - 1
    return HeadMaps(depth=depth[None], albedo=albedo, mask=mask.float()[None], damage=damage[None])
