"""Head pose from 5 landmarks: exact recovery of points projected from the 3D template, the
renderer's sign convention, flipped photos, FFHQ near-frontal faces, and the template's
derivation."""

from __future__ import annotations

import glob
import os
import pickle

import cv2
import numpy as np
import pytest
import torch

from digan.faces import align
from digan.faces.detector import FaceDetector
from digan.faces.pose import FACE5_3D, estimate_pose, project, rotation_matrix


def _rgb(path) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1])


@pytest.fixture(scope="module")
def det(face_models):
    return FaceDetector(face_models / "det_500m.onnx", threads=2)


def test_recovers_projected_template_exactly():
    rng = np.random.default_rng(0)
    n = 400
    pitch, yaw, roll = rng.uniform(-35, 35, n), rng.uniform(-70, 70, n), rng.uniform(-25, 25, n)
    q = project(pitch, yaw, roll, scale=rng.uniform(10, 300, n), tx=rng.uniform(-50, 150, n), ty=rng.uniform(-50, 150, n))
    est = estimate_pose(q)
    np.testing.assert_allclose(est.yaw, yaw, atol=1e-4)
    np.testing.assert_allclose(est.pitch, pitch, atol=1e-4)
    np.testing.assert_allclose(est.roll, roll, atol=1e-4)
    assert est.residual.max() < 1e-6


def test_closed_form_yaw_projection():
    """Pure yaw theta: x = s (x0 cos theta - z0 sin theta) with the renderer's Ry(-theta)."""
    for theta in (-45.0, -15.0, 30.0):
        t = np.deg2rad(theta)
        x = FACE5_3D[:, 0] * np.cos(t) - FACE5_3D[:, 2] * np.sin(t)
        pts = np.stack([x, FACE5_3D[:, 1]], 1) * 50.0 + 60.0
        est = estimate_pose(pts)
        assert est.yaw[0] == pytest.approx(theta, abs=1e-5)
        assert abs(est.pitch[0]) < 1e-5 and abs(est.roll[0]) < 1e-5


def test_noise_robustness():
    rng = np.random.default_rng(1)
    n = 300
    yaw = rng.uniform(-45, 45, n)
    q = project(0.0, yaw, 0.0, scale=40.0) + rng.normal(0, 0.4, (n, 5, 2))  # 1% of the IOD
    est = estimate_pose(q)
    assert np.abs(est.yaw - yaw).mean() < 1.5


def test_sign_convention_matches_renderer():
    """Same rotation matrix as digan.render.camera; positive yaw moves the nose to +x, positive
    pitch to +y."""
    from digan.render.camera import rotation_matrix as render_rot

    ang = np.array([[10.0, 25.0, -7.0], [-20.0, -40.0, 15.0]])
    ours = rotation_matrix(ang[:, 0], ang[:, 1], ang[:, 2])
    theirs = render_rot(torch.tensor(ang, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-12)
    nose = FACE5_3D[2] - FACE5_3D.mean(0)
    assert (rotation_matrix(0, 30, 0)[0] @ nose)[0] > nose[0]
    assert (rotation_matrix(30, 0, 0)[0] @ nose)[1] > nose[1]


def test_flipped_photo_negates_yaw(det, shared_data):
    files = sorted(glob.glob(str(shared_data / "faces/ffhq/*.png"))) + sorted(
        glob.glob(str(shared_data / "faces/verification_pairs/img1*.jpg")))
    ims = [_rgb(f) for f in files]
    a = det.detect_best(ims)
    b = det.detect_best([np.ascontiguousarray(im[:, ::-1]) for im in ims])
    ok = [i for i in range(len(ims)) if a[i] is not None and b[i] is not None]
    assert len(ok) >= 0.9 * len(ims)
    ya = estimate_pose(np.stack([a[i].kps for i in ok]))
    yb = estimate_pose(np.stack([b[i].kps for i in ok]))
    # detector keypoints are not exactly mirror-symmetric: a few degrees of disagreement
    assert np.abs(ya.yaw + yb.yaw).mean() < 3.0
    assert np.abs(ya.yaw + yb.yaw).max() < 8.0
    assert np.abs(ya.pitch - yb.pitch).mean() < 4.0
    assert np.corrcoef(ya.yaw, -yb.yaw)[0, 1] > 0.9


def test_ffhq_near_frontal_and_consistent_with_ground_truth(det, shared_data):
    yaws, gt_yaws = [], []
    for f in sorted(glob.glob(str(shared_data / "faces/ffhq/*.png"))):
        face = det.detect_best([_rgb(f)])[0]
        l = np.load(f[:-4] + ".npy")[:, :2].astype(np.float64)
        gt = np.stack([l[36:42].mean(0), l[42:48].mean(0), l[30], l[48], l[54]])
        yaws.append(estimate_pose(face.kps).yaw[0])
        gt_yaws.append(estimate_pose(gt).yaw[0])
    yaws, gt_yaws = np.array(yaws), np.array(gt_yaws)
    assert np.abs(yaws).max() < 30 and np.median(np.abs(yaws)) < 10
    # the detector's 5 points and the 68-point ground truth give nearly the same yaw
    assert np.abs(yaws - gt_yaws).mean() < 4.0


def test_template_derivation(det, shared_data):
    """z from insightface's 3D mean shape, x/y from the mean detected layout of real photos."""
    import insightface

    m = np.asarray(pickle.load(open(os.path.join(os.path.dirname(insightface.__file__), "data/objects/meanshape_68.pkl"), "rb")), np.float64)
    p = np.stack([m[36:42].mean(0), m[42:48].mean(0), m[30], m[48], m[54]])
    z = -(p[:, 2] + p[[1, 0, 2, 4, 3], 2]) / 2
    z = (z - z.mean()) / np.linalg.norm(p[0] - p[1])
    np.testing.assert_allclose(FACE5_3D[:, 2], z, atol=1e-4)
    files = sorted(glob.glob(str(shared_data / "faces/celeba_aligned/*.jpg"))) + sorted(glob.glob(str(shared_data / "faces/ffhq/*.png")))
    faces = det.detect_best([_rgb(f) for f in files])
    norm = [align.transform_points(align.umeyama(f.kps, align.ARCFACE_TEMPLATE)[:2], f.kps) for f in faces if f is not None]
    mean = np.mean(norm, 0)
    mean = (mean + np.stack([112 - mean[[1, 0, 2, 4, 3], 0], mean[[1, 0, 2, 4, 3], 1]], 1)) / 2
    xy = (mean - mean.mean(0)) / np.linalg.norm(mean[1] - mean[0])
    np.testing.assert_allclose(FACE5_3D[:, :2], xy, atol=0.02)
    assert abs(FACE5_3D.mean(0)).max() < 1e-4 and np.linalg.norm(FACE5_3D[1] - FACE5_3D[0]) == pytest.approx(1.0)
