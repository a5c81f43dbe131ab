"""Face detection (SCRFD ONNX), 5-point ArcFace alignment, ArcFace embeddings and head pose from
landmarks, on onnxruntime. Used by the identity and pose metrics and the real-photo data set.

* :class:`~digan.faces.detector.FaceDetector`: images -> per image list of (bbox, score, 5 kps)
* :mod:`digan.faces.align`: Umeyama similarity to the ArcFace (or FFHQ-style) template, crops
* :class:`~digan.faces.recognizer.FaceRecognizer`: aligned crops -> L2-normalised embeddings
* :func:`~digan.faces.pose.estimate_pose`: 5 keypoints -> yaw, pitch, roll (renderer's signs)
* :class:`~digan.faces.pipeline.FacePipeline`: all of it for batches of generated images
* :mod:`digan.faces.verification`: ROC AUC of labelled same/different photo pairs

Model files resolve from an explicit path, ``$DIGAN_BENCH_MODELS``, then
``~/.insightface/models/buffalo_l/`` (:func:`~digan.faces.onnx_models.resolve_model`).
"""

from digan.faces.align import ARCFACE_TEMPLATE, FFHQ_TEMPLATE, align_faces, estimate_norm, norm_crop, umeyama
from digan.faces.detector import Face, FaceDetector
from digan.faces.onnx_models import DEFAULT_MODELS, resolve_model
from digan.faces.pipeline import FaceAnalysis, FacePipeline
from digan.faces.pose import FACE5_3D, PoseEstimate, estimate_pose
from digan.faces.recognizer import FaceRecognizer, cosine_similarity
from digan.faces.verification import roc_auc, verify_pairs

__all__ = [
    "ARCFACE_TEMPLATE",
    "FFHQ_TEMPLATE",
    "align_faces",
    "estimate_norm",
    "norm_crop",
    "umeyama",
    "Face",
    "FaceDetector",
    "DEFAULT_MODELS",
    "resolve_model",
    "FACE5_3D",
    "PoseEstimate",
    "estimate_pose",
    "FaceRecognizer",
    "cosine_similarity",
    "FaceAnalysis",
    "FacePipeline",
    "roc_auc",
    "verify_pairs",
]
