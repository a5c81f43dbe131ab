"""Face detector and 5-point alignment against independent references: insightface's own SCRFD
class and ``norm_crop``, skimage's similarity estimate, FFHQ's 68-point ground truth."""

from __future__ import annotations

import glob
import os
import warnings

import cv2
import numpy as np
import pytest

from digan.errors import DiganError, MissingAssetError
from digan.faces import align
from digan.faces.detector import FaceDetector, images_to_uint8, nms
from digan.faces.onnx_models import resolve_model


def _rgb(path) -> np.ndarray:
    im = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert im is not None, path
    return np.ascontiguousarray(im[:, :, ::-1])


def _five_from_68(l68: np.ndarray) -> np.ndarray:
    """Eye centres, nose tip, mouth corners from 68-point landmarks."""
    return np.stack([l68[36:42].mean(0), l68[42:48].mean(0), l68[30], l68[48], l68[54]])


@pytest.fixture(scope="module")
def det(face_models):
    return FaceDetector(face_models / "det_500m.onnx", threads=2)


@pytest.fixture(scope="module")
def photos(shared_data):
    files = sorted(glob.glob(str(shared_data / "faces/verification_pairs/img*.jpg")))[:12]
    return [(os.path.basename(f), _rgb(f)) for f in files]


@pytest.fixture(scope="module")
def ffhq(shared_data):
    out = []
    for f in sorted(glob.glob(str(shared_data / "faces/ffhq/*.png"))):
        out.append((_rgb(f), _five_from_68(np.load(f[:-4] + ".npy")[:, :2].astype(np.float64))))
    assert len(out) == 10
    return out


def test_detector_matches_insightface_scrfd(face_models, photos, det):
    """Our SCRFD decoding equals insightface's on real photos (boxes, keypoints, scores, count)."""
    from insightface.model_zoo.scrfd import SCRFD

    ref = SCRFD(str(face_models / "det_500m.onnx"))
    ref.prepare(-1, input_size=(640, 640))
    plain = FaceDetector(face_models / "det_500m.onnx", crop_side=0, retry_pad=0, threads=2)
    n_faces = 0
    for name, rgb in photos:
        ours = plain.detect([rgb])[0]
        boxes, kps = ref.detect(np.ascontiguousarray(rgb[:, :, ::-1]), input_size=(640, 640))
        assert len(ours) == len(boxes), name
        for f, b, k in zip(ours, boxes, kps):
            np.testing.assert_allclose(f.bbox, b[:4], atol=1e-2)
            np.testing.assert_allclose(f.kps, k, atol=1e-2)
            assert abs(f.score - b[4]) < 1e-4
        n_faces += len(ours)
    assert n_faces >= len(photos)


def test_batched_detection_equals_one_by_one(det, ffhq):
    small = [cv2.resize(im, (64, 64), interpolation=cv2.INTER_AREA) for im, _ in ffhq]
    assert det._batched, "freeing the batch dimension of SCRFD should work"
    batch = det.detect(np.stack(small))
    for im, faces in zip(small, batch):
        single = det.detect([im])[0]
        assert len(single) == len(faces)
        for a, b in zip(single, faces):
            np.testing.assert_allclose(a.kps, b.kps, atol=1e-3)
            np.testing.assert_allclose(a.score, b.score, atol=1e-5)


def test_tensor_input_matches_uint8(det, ffhq):
    from digan.utils.images import from_uint8

    ims = np.stack([cv2.resize(im, (64, 64), interpolation=cv2.INTER_AREA) for im, _ in ffhq[:4]])
    t = from_uint8(ims)
    assert t.shape == (4, 3, 64, 64) and float(t.min()) >= -1 and float(t.max()) <= 1
    np.testing.assert_array_equal(np.stack(images_to_uint8(t)), ims)
    a = det.detect_best(t)
    b = det.detect_best(ims)
    for fa, fb in zip(a, b):
        np.testing.assert_allclose(fa.kps, fb.kps, atol=1e-4)


def test_keypoints_agree_with_ffhq_68_point_ground_truth(det, ffhq):
    """At 256 px: 5 detected points within a few pixels of eye centres, nose tip, mouth corners."""
    errs = []
    for im, gt in ffhq:
        f = det.detect_best([im])[0]
        assert f is not None
        errs.append(np.linalg.norm(f.kps - gt, axis=1))
    errs = np.array(errs)
    assert errs.mean() < 4.0, errs.mean()
    assert np.median(errs) < 4.0
    assert errs.max() < 12.0


@pytest.mark.parametrize("size", [64, 128])
def test_small_face_crops_are_found_with_accurate_keypoints(det, ffhq, shared_data, size):
    """64/128-px generator-like crops: every FFHQ and CelebA face is found (padding + upsampling),
    keypoints within 0.12 inter-ocular distances of the (scaled) ground truth."""
    for im, gt in ffhq:
        small = cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA)
        f = det.detect_best([small])[0]
        assert f is not None
        g = gt * size / 256.0
        iod = np.linalg.norm(g[1] - g[0])
        assert np.linalg.norm(f.kps - g, axis=1).mean() / iod < 0.12
    celeba = [_rgb(f) for f in sorted(glob.glob(str(shared_data / "faces/celeba_aligned/*.jpg")))[:40]]
    crops = [cv2.resize(c[20:198], (size, size), interpolation=cv2.INTER_AREA) for c in celeba]
    found = [f is not None for f in det.detect_best(crops)]
    assert np.mean(found) == 1.0


def test_no_face_in_noise_or_flat_images(det):
    rng = np.random.default_rng(0)
    ims = [np.full((64, 64, 3), 128, np.uint8), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
           np.zeros((700, 900, 3), np.uint8)]
    assert det.detect_best(ims) == [None, None, None]


def test_pick_prefers_large_central_face_like_insightface(face_models, shared_data, det):
    from insightface.model_zoo.scrfd import SCRFD

    rgb = _rgb(shared_data / "faces/verification_pairs/couple.jpg")
    faces = det.detect([rgb])[0]
    assert len(faces) >= 2
    ref = SCRFD(str(face_models / "det_500m.onnx"))
    ref.prepare(-1, input_size=(640, 640))
    boxes, _ = ref.detect(np.ascontiguousarray(rgb[:, :, ::-1]), input_size=(640, 640), max_num=1)
    best = det.pick(faces, rgb.shape)
    np.testing.assert_allclose(best.bbox, boxes[0, :4], atol=1e-2)


def test_nms_suppresses_overlaps():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)
    assert nms(boxes, np.array([0.9, 0.8, 0.7]), 0.4) == [0, 2]
    assert nms(boxes, np.array([0.7, 0.8, 0.9]), 0.4) == [2, 1]


def test_umeyama_recovers_known_similarity():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(5, 2)) * 30
    th, s, t = 0.3, 1.7, np.array([12.0, -4.0])
    r = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    dst = src @ (s * r).T + t
    m = align.umeyama(src, dst)
    np.testing.assert_allclose(m[:2, :2], s * r, atol=1e-10)
    np.testing.assert_allclose(m[:2, 2], t, atol=1e-9)
    # a mirrored target is fitted by a proper rotation, never a reflection
    m2 = align.umeyama(src, dst * np.array([-1.0, 1.0]))
    assert np.linalg.det(m2[:2, :2]) > 0


def test_alignment_matches_insightface_norm_crop(det, photos):
    """Pixel agreement with insightface.utils.face_align.norm_crop on real photos; the matrix
    agrees with skimage's float64 similarity estimate to 1e-9."""
    from insightface.utils import face_align
    from skimage.transform import SimilarityTransform

    for name, rgb in photos:
        f = det.detect_best([rgb])[0]
        assert f is not None, name
        ours = align.norm_crop(rgb, f.kps)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = face_align.norm_crop(rgb, f.kps)
            t = SimilarityTransform()
            t.estimate(f.kps.astype(np.float64), align.ARCFACE_TEMPLATE)
        np.testing.assert_allclose(align.estimate_norm(f.kps), t.params[:2], atol=1e-9)
        np.testing.assert_allclose(align.ARCFACE_TEMPLATE, face_align.arcface_dst, atol=1e-4)
        diff = np.abs(ours.astype(int) - ref.astype(int))
        # insightface estimates in float32; that moves a few pixels by one grey level at most
        assert diff.max() <= 1, name
        assert (diff > 0).mean() < 0.005, name
        # the keypoints land on the template
        mapped = align.transform_points(align.estimate_norm(f.kps), f.kps)
        assert np.abs(mapped - align.ARCFACE_TEMPLATE).max() < 8.0


def test_templates():
    np.testing.assert_allclose(align.template_points(224), align.ARCFACE_TEMPLATE * 2)
    p128 = align.template_points(128)
    np.testing.assert_allclose(p128[:, 0], align.ARCFACE_TEMPLATE[:, 0] + 8.0)
    with pytest.raises(DiganError):
        align.template_points(100)
    # FFHQ-style template: symmetric, eyes at 0.38/0.62 of the width
    f = align.FFHQ_TEMPLATE
    assert abs(f[0, 0] + f[1, 0] - 1.0) < 0.01 and 0.35 < f[0, 0] < 0.4


def test_ffhq_template_matches_ffhq_landmarks(ffhq):
    mean = np.mean([gt / 256.0 for _, gt in ffhq], axis=0)
    assert np.abs(mean - align.FFHQ_TEMPLATE).max() < 0.03


def test_model_resolution(tmp_path, monkeypatch, face_models):
    monkeypatch.setenv("DIGAN_BENCH_MODELS", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(MissingAssetError) as e:
        resolve_model("recognizer")
    msg = str(e.value)
    assert "w600k_r50.onnx" in msg and "buffalo_l.zip" in msg and str(tmp_path) in msg and "\n" not in msg
    with pytest.raises(MissingAssetError, match="--detector"):
        resolve_model("detector", tmp_path / "nope" / "det.onnx")
    (tmp_path / "det_500m.onnx").write_bytes((face_models / "det_500m.onnx").read_bytes())
    assert resolve_model("detector", "det_500m.onnx") == tmp_path / "det_500m.onnx"
    assert resolve_model("detector", face_models / "det_500m.onnx") == face_models / "det_500m.onnx"


def test_corrupt_model_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(DiganError, match="not a valid ONNX file"):
        FaceDetector(bad)


def test_recognizer_file_is_rejected_as_detector(face_models):
    with pytest.raises(DiganError, match="SCRFD"):
        FaceDetector(face_models / "mobilefacenet_arcface_w128.onnx")
