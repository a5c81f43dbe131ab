"""ArcFace embeddings and verification: cosine similarity of known vectors, a hand-computed ROC
AUC, batched vs one-by-one inference, and the labelled verification pairs (the pipeline must
separate same from different people)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from digan.faces.pipeline import FacePipeline
from digan.faces.recognizer import FaceRecognizer, cosine_similarity
from digan.faces.verification import average_ranks, read_pairs, roc_auc, verify_pairs


@pytest.fixture(scope="module")
def rec(face_models):
    return FaceRecognizer(face_models / "mobilefacenet_arcface_w128.onnx", threads=2)


@pytest.fixture(scope="module")
def pipe(face_models, rec):
    return FacePipeline(face_models / "det_500m.onnx", rec, threads=2)


def test_cosine_similarity_of_known_vectors():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0], [1.0, 2.0]])
    b = np.array([[0.0, 2.0], [2.0, 2.0], [-3.0, -4.0], [2.0, -1.0]])
    np.testing.assert_allclose(cosine_similarity(a, b), [0.0, 1.0, -1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(cosine_similarity([[1.0, 0.0]], [[1.0, 1.0]]), [2**-0.5])


def test_roc_auc_hand_computed():
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: 3 of 4 positive-negative pairs ordered -> 0.75
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert roc_auc([0.5, 0.5], [0, 1]) == pytest.approx(0.5)  # a tie counts one half
    assert roc_auc([3, 2, 1], [1, 0, 0]) == 1.0 and roc_auc([1, 2, 3], [1, 0, 0]) == 0.0
    np.testing.assert_allclose(average_ranks([10, 20, 20, 5]), [2, 3.5, 3.5, 1])
    # against the pairwise definition on random data with ties
    rng = np.random.default_rng(0)
    s = rng.integers(0, 20, 200).astype(float)
    y = rng.random(200) < 0.3
    pos, neg = s[y], s[~y]
    brute = np.mean([(p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)])
    assert roc_auc(s, y) == pytest.approx(brute, abs=1e-12)
    with pytest.raises(ValueError):
        roc_auc([1, 2], [1, 1])


def test_embeddings_are_unit_batched_equals_single(rec):
    assert rec.dim == 128 and rec.batched
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (5, 112, 112, 3), dtype=np.uint8)
    e = rec.embed(crops)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    single = np.concatenate([rec.embed(crops[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(e, single, atol=1e-5)
    # preprocessing: RGB, (x - 127.5) / 127.5, NCHW, raw output L2-normalised
    x = ((crops.astype(np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2)
    raw = np.concatenate([rec.session.run(None, {rec.input_name: x[i : i + 1]})[0] for i in range(5)])
    np.testing.assert_allclose(e, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)


def test_verification_pairs_are_separated(shared_data, pipe):
    """ROC AUC of same/different pairs in master.csv (measured 1.000, d' 7.7)."""
    csv_path = shared_data / "faces/verification_pairs/master.csv"
    pairs = read_pairs(csv_path)
    assert len(pairs) >= 290
    res = verify_pairs(csv_path, pipe)
    assert res.n_pairs == len(pairs) - len(res.skipped) and len(res.skipped) == 0
    assert res.n_same >= 30
    assert res.auc > 0.97, res.auc
    assert res.d_prime > 5.0, res.d_prime
    assert res.mean_same > 0.6 and res.mean_diff < 0.2


def test_wrong_preprocessing_is_measurably_worse(shared_data, face_models, pipe):
    """The test above can fail: raw [0, 255] input ruins the separation (same crops)."""
    import cv2

    from digan.faces.align import norm_crop

    root = shared_data / "faces/verification_pairs"
    pairs = read_pairs(root / "master.csv")
    files = sorted({a for a, _, _ in pairs} | {b for _, b, _ in pairs})
    crops = {}
    for name in files:
        im = np.ascontiguousarray(cv2.imread(str(root / name))[:, :, ::-1])
        crops[name] = norm_crop(im, pipe.detector.detect_best([im])[0].kps)
    bad = FaceRecognizer(face_models / "mobilefacenet_arcface_w128.onnx", mean=0.0, std=1.0, threads=2)
    scores = {}
    for tag, rec in (("good", pipe.recognizer), ("bad", bad)):
        e = dict(zip(files, rec.embed(np.stack([crops[f] for f in files]))))
        scores[tag] = [float(e[a] @ e[b]) for a, b, _ in pairs]
    labels = [same for _, _, same in pairs]
    assert roc_auc(scores["good"], labels) > 0.97
    assert roc_auc(scores["bad"], labels) < 0.85
