"""Model downloads: atomic, checked, offline-aware (tested with local file:// URLs)."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from digan.errors import MissingAssetError
from digan.utils.download import DownloadError, fetch, fetch_and_unzip


@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv("DIGAN_BENCH_OFFLINE", raising=False)


def test_fetch_checks_sha_and_is_atomic(tmp_path, online):
    src = tmp_path / "src.bin"
    src.write_bytes(b"weights" * 1000)
    good = hashlib.sha256(src.read_bytes()).hexdigest()
    out = fetch(src.as_uri(), tmp_path / "dl" / "w.bin", "test weights", sha256=good)
    assert out.read_bytes() == src.read_bytes()
    with pytest.raises(DownloadError, match="sha256"):
        fetch(src.as_uri(), tmp_path / "dl" / "bad.bin", "test weights", sha256="0" * 64)
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["w.bin"]  # nothing half-written
    with pytest.raises(DownloadError, match="could not download"):
        fetch((tmp_path / "nope").as_uri(), tmp_path / "dl" / "x.bin", "test weights")


def test_offline_mode_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("DIGAN_BENCH_OFFLINE", "1")
    src = tmp_path / "src.bin"
    src.write_bytes(b"x")
    with pytest.raises(DownloadError, match="DIGAN_BENCH_OFFLINE"):
        fetch(src.as_uri(), tmp_path / "w.bin", "test weights")
    assert not (tmp_path / "w.bin").exists()


def test_unzip_flattens_and_requires_members(tmp_path, online):
    z = tmp_path / "pack.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("buffalo_l/a.onnx", b"A")
        f.writestr("buffalo_l/b.onnx", b"B")
    d = fetch_and_unzip(z.as_uri(), tmp_path / "models", "pack", members=("a.onnx",))
    assert (d / "a.onnx").read_bytes() == b"A" and (d / "b.onnx").read_bytes() == b"B"
    with pytest.raises(DownloadError, match="lacks c.onnx"):
        fetch_and_unzip(z.as_uri(), tmp_path / "models2", "pack", members=("c.onnx",))
    assert not (tmp_path / "models2").exists()
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DownloadError, match="not a valid zip"):
        fetch_and_unzip(bad.as_uri(), tmp_path / "models3", "pack")


def test_face_model_downloaded_when_missing_else_clear_error(tmp_path, online, monkeypatch):
    from digan.faces import onnx_models

    z = tmp_path / "buffalo_l.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("w600k_r50.onnx", b"onnx bytes")
    home = tmp_path / "home" / "buffalo_l"
    monkeypatch.delenv("DIGAN_BENCH_MODELS", raising=False)
    monkeypatch.setattr(onnx_models, "BUFFALO_L_DIR", home)
    monkeypatch.setattr(onnx_models, "BUFFALO_L_URL", z.as_uri())
    got = onnx_models.resolve_model("recognizer")
    assert got == home / "w600k_r50.onnx" and got.read_bytes() == b"onnx bytes"
    # offline and absent: the one-line error names the file, where it goes and the pack
    monkeypatch.setenv("DIGAN_BENCH_OFFLINE", "1")
    with pytest.raises(MissingAssetError, match="det_10g.onnx.*buffalo_l.zip") as e:
        onnx_models.resolve_model("detector")
    assert "\n" not in str(e.value)


def test_inception_downloaded_when_missing(tmp_path, online, monkeypatch):
    from evaluate.metrics import fid
    from evaluate.metrics.base import EvalContext

    src = tmp_path / "inception.pt"
    src.write_bytes(b"torchscript")
    monkeypatch.setattr(fid, "INCEPTION_URL", src.as_uri())
    monkeypatch.setattr(fid, "_cleanfid_cache_dir", lambda: tmp_path / "cfcache")
    ctx = EvalContext(out_dir=tmp_path, cache_dir=tmp_path / "cache")
    p = fid.find_inception(ctx)
    assert p == tmp_path / "cfcache" / fid.INCEPTION_FILE and p.read_bytes() == b"torchscript"
    monkeypatch.setenv("DIGAN_BENCH_OFFLINE", "1")
    monkeypatch.setattr(fid, "_cleanfid_cache_dir", lambda: tmp_path / "empty")
    with pytest.raises(MissingAssetError, match="Inception"):
        fid.find_inception(ctx)
