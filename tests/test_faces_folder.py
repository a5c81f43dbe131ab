"""Real-photo folder data set (``data faces``): statuses and counts, alignment of the crops,
atomic output with --force, resume after an interruption, and the CLI."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from digan.data.faces_folder import FacesFolderConfig, build_faces_folder, crop_face, list_images, read_image
from digan.errors import DiganError
from digan.faces.align import FFHQ_TEMPLATE
from digan.faces.detector import FaceDetector


@pytest.fixture(scope="module")
def det(face_models):
    return FaceDetector(face_models / "det_500m.onnx", threads=2)


@pytest.fixture()
def src(tmp_path, shared_data):
    d = tmp_path / "photos"
    (d / "nested").mkdir(parents=True)
    for n in ("00000", "00001", "00002"):
        shutil.copy(shared_data / f"faces/ffhq/{n}.png", d / "nested" / f"{n}.png")
    for n in ("img1.jpg", "img13.jpg"):
        shutil.copy(shared_data / f"faces/verification_pairs/{n}", d / n)
    shutil.copy(shared_data / "faces/afhq_cats/pixabay_cat_000181.jpg", d / "cat.JPG")
    (d / "broken.jpg").write_bytes(b"not an image")
    cv2.imwrite(str(d / "flat.png"), np.full((200, 240, 3), 90, np.uint8))
    (d / "notes.txt").write_text("ignored")
    (d / ".hidden.png").write_bytes(b"")
    return d


def _cfg(src, out, face_models, **kw):
    return FacesFolderConfig(src=str(src), out=str(out), detector=str(face_models / "det_500m.onnx"), threads=2, **kw)


def test_build_counts_statuses_and_aligns(src, tmp_path, face_models, det):
    out = tmp_path / "aligned"
    s = build_faces_folder(_cfg(src, out, face_models, size=64), detector=det)
    assert s.total == 8  # txt and hidden files are not images
    assert s.counts["ok"] == 5 and s.counts["unreadable"] == 1 and s.counts["no_face"] == 2
    m = json.loads((out / "manifest.json").read_text())
    assert m["summary"]["total"] == 8 and m["summary"]["ok"] == 5
    st = {e["src"]: e["status"] for e in m["files"]}
    assert st["broken.jpg"] == "unreadable" and st["flat.png"] == "no_face" and st["cat.JPG"] == "no_face"
    assert st["nested/00000.png"] == "ok"
    outs = sorted(p.name for p in (out / "images").iterdir())
    assert outs == sorted(e["out"] for e in m["files"] if e["status"] == "ok")
    assert (out / "run.json").is_file() and (out / "config.json").is_file()
    assert not any(p.name.startswith(".aligned") for p in tmp_path.iterdir())  # no partial left
    # the crops put the detected face on the FFHQ-style template
    for name in outs:
        im = read_image(out / "images" / name)
        assert im.shape == (64, 64, 3)
        f = det.detect_best([im])[0]
        assert f is not None
        assert np.abs(f.kps - FFHQ_TEMPLATE * 64).max() < 0.06 * 64


def test_ffhq_template_reproduces_ffhq_framing(shared_data, det):
    """An FFHQ image re-aligned with the FFHQ-style template at 256 px is close to itself."""
    im = read_image(shared_data / "faces/ffhq/00003.png")
    f = det.detect_best([im])[0]
    crop, outside = crop_face(im, f.kps, 256, "ffhq")
    diff = np.abs(crop.astype(float) - im.astype(float)).mean()
    shifted = np.abs(np.roll(im, 16, axis=1).astype(float) - im.astype(float)).mean()
    assert diff < 0.6 * shifted and outside < 0.15


def test_large_photos_are_area_reduced_before_warping(shared_data, det):
    im = read_image(shared_data / "faces/ffhq/00004.png")
    f = det.detect_best([im])[0]
    small, _ = crop_face(im, f.kps, 64)
    big = cv2.resize(im, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    from_big, _ = crop_face(big, f.kps * 4.0, 64)
    # same crop whether the photo came at 256 or 1024 px (no aliasing from a 16x bilinear shrink)
    assert np.abs(small.astype(float) - from_big.astype(float)).mean() < 4.0


def test_existing_output_needs_force_and_is_replaced_atomically(src, tmp_path, face_models, det):
    out = tmp_path / "o"
    out.mkdir()
    (out / "old.txt").write_text("keep me until the new one is complete")
    with pytest.raises(DiganError, match="--force"):
        build_faces_folder(_cfg(src, out, face_models), detector=det)
    empty = tmp_path / "empty"
    empty.mkdir()
    cv2.imwrite(str(empty / "flat.png"), np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(DiganError, match="no face found"):
        build_faces_folder(_cfg(empty, out, face_models, force=True), detector=det)
    assert (out / "old.txt").is_file()  # a failed run keeps the old output
    build_faces_folder(_cfg(src, out, face_models, force=True), detector=det)
    assert not (out / "old.txt").exists() and (out / "manifest.json").is_file()


def test_resume_after_interruption(src, tmp_path, face_models, det):
    out = tmp_path / "r"
    cfg = _cfg(src, out, face_models, size=64)

    class Stop(Exception):
        pass

    def stop_after_four(done, total, counts):
        if done == 4:
            raise Stop

    with pytest.raises(Stop):
        build_faces_folder(cfg, on_progress=stop_after_four, detector=det)
    assert not out.exists()
    partial = [p for p in tmp_path.iterdir() if p.name.startswith(".r.partial-")]
    assert len(partial) == 1
    s = build_faces_folder(cfg, detector=det)
    assert s.resumed == 4 and s.counts["ok"] == 5 and s.total == 8
    fresh = build_faces_folder(_cfg(src, tmp_path / "fresh", face_models, size=64), detector=det)
    a = json.loads((out / "manifest.json").read_text())["files"]
    b = json.loads((tmp_path / "fresh/manifest.json").read_text())["files"]
    assert [(e["src"], e["status"], e.get("out")) for e in a] == [(e["src"], e["status"], e.get("out")) for e in b]
    for e in a:
        if e["status"] == "ok":
            np.testing.assert_array_equal(read_image(out / "images" / e["out"]), read_image(tmp_path / "fresh/images" / e["out"]))


def test_validation_errors(tmp_path, src):
    with pytest.raises(DiganError, match="--size"):
        build_faces_folder(FacesFolderConfig(src=str(src), out=str(tmp_path / "x"), size=100))
    with pytest.raises(DiganError, match="not found"):
        build_faces_folder(FacesFolderConfig(src=str(tmp_path / "missing"), out=str(tmp_path / "x")))
    with pytest.raises(DiganError, match="inside the source"):
        build_faces_folder(FacesFolderConfig(src=str(src), out=str(src / "out")))
    assert [p.name for p in list_images(src, recursive=False)] == ["broken.jpg", "cat.JPG", "flat.png", "img1.jpg", "img13.jpg"]


def test_cli(src, tmp_path, face_models, capsys):
    from digan.cli import main

    out = tmp_path / "cli"
    rc = main(["data", "faces", "--src", str(src), "--out", str(out), "--size", "64",
               "--detector", str(face_models / "det_500m.onnx"), "--set", "threads=2"])
    assert rc == 0
    assert len(list((out / "images").iterdir())) == 5
    assert "no face" in capsys.readouterr().out
    rc = main(["data", "faces", "--src", str(src), "--out", str(out), "--detector", str(face_models / "det_500m.onnx")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "--force" in err and err.count("\n") == 1
    rc = main(["data", "faces", "--src", str(src), "--out", str(tmp_path / "t"), "--template", "round"])
    assert rc == 2 and "template" in capsys.readouterr().err


def test_cli_missing_default_detector_names_the_download(src, tmp_path, monkeypatch, capsys):
    from digan.cli import main

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DIGAN_BENCH_MODELS", raising=False)
    rc = main(["data", "faces", "--src", str(src), "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert rc == 2 and "det_10g.onnx" in err and "buffalo_l.zip" in err and "--detector" in err
    assert not (tmp_path / "m").exists()
