"""Face verification on labelled photo pairs: does the pipeline separate same from different
people? Used by the tests (``verification_pairs/master.csv`` of the test data) and available to
users who want to check a recognizer file before benchmarking with it.

:func:`roc_auc` is the Mann-Whitney form of the area under the ROC curve: the probability that a
random positive pair scores higher than a random negative one, ties counted one half (average
ranks). No scipy or sklearn needed.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digan.errors import DiganError

__all__ = ["roc_auc", "average_ranks", "VerificationResult", "read_pairs", "verify_pairs"]


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` with ties given their average rank."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    i = 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (1/True = positive)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    n_pos = int(y.sum())
    n_neg = int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC needs at least one positive and one negative pair")
    r = average_ranks(s)
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


@dataclass
class VerificationResult:
    """AUC and separation of same/different pairs; ``skipped`` lists pairs without a face."""

    auc: float
    n_pairs: int
    n_same: int
    mean_same: float
    mean_diff: float
    d_prime: float
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    scores: np.ndarray | None = None
    labels: np.ndarray | None = None


def read_pairs(csv_path: str | Path) -> list[tuple[str, str, bool]]:
    """``(file_x, file_y, same)`` rows of a pairs CSV with columns file_x, file_y, Decision
    (Yes/No; the column name is matched case-insensitively)."""
    p = Path(csv_path)
    if not p.is_file():
        raise DiganError(f"pairs file {p} not found; pass a CSV with columns file_x,file_y,Decision")
    with open(p, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise DiganError(f"pairs file {p} has no rows")
    keys = {k.lower(): k for k in rows[0]}
    if not {"file_x", "file_y", "decision"} <= set(keys):
        raise DiganError(f"pairs file {p} needs the columns file_x, file_y, Decision; it has {', '.join(rows[0])}")
    out = []
    for r in rows:
        dec = r[keys["decision"]].strip().lower()
        if dec not in ("yes", "no"):
            raise DiganError(f"pairs file {p}: Decision must be Yes or No, got {r[keys['decision']]!r}")
        out.append((r[keys["file_x"]].strip(), r[keys["file_y"]].strip(), dec == "yes"))
    return out


def verify_pairs(csv_path: str | Path, pipeline, image_dir: str | Path | None = None) -> VerificationResult:
    """Embed every photo of a pairs CSV once (detect, align, embed with ``pipeline``, a
    :class:`digan.faces.pipeline.FacePipeline`) and score each pair by cosine similarity.

    Paths in the CSV are taken relative to ``image_dir`` (default: the CSV's folder; only the
    file name is used when the CSV's path does not exist there). Photos that cannot be read or
    have no detected face are skipped and listed in ``skipped`` with the reason.
    """
    import cv2

    p = Path(csv_path)
    root = Path(image_dir) if image_dir is not None else p.parent
    pairs = read_pairs(p)
    files = sorted({a for a, _, _ in pairs} | {b for _, b, _ in pairs})
    emb: dict[str, np.ndarray] = {}
    why: dict[str, str] = {}
    for name in files:
        f = root / name
        if not f.is_file():
            f = root / Path(name).name
        im = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if im is None:
            why[name] = "unreadable"
            continue
        res = pipeline.analyze([np.ascontiguousarray(im[:, :, ::-1])], embed=True, pose=False)
        if not res.found[0]:
            why[name] = "no face"
            continue
        emb[name] = res.embedding[0]
    scores, labels, skipped = [], [], []
    for a, b, same in pairs:
        if a in emb and b in emb:
            scores.append(float(np.dot(emb[a], emb[b])))
            labels.append(same)
        else:
            skipped.append((a, b, why.get(a) or why.get(b) or "missing"))
    s = np.asarray(scores)
    y = np.asarray(labels, dtype=bool)
    auc = roc_auc(s, y)
    d = (s[y].mean() - s[~y].mean()) / np.sqrt((s[y].var() + s[~y].var()) / 2.0)
    return VerificationResult(
        auc=auc, n_pairs=len(s), n_same=int(y.sum()), mean_same=float(s[y].mean()), mean_diff=float(s[~y].mean()),
        d_prime=float(d), skipped=skipped, scores=s, labels=y,
    )
