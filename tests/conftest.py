"""Shared test fixtures.

``shared_data`` points at the read-only real test files (``$DIGAN_BENCH_TEST_DATA``, default
``../shared/data`` beside the checkout); tests that need it skip with a reason when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("DIGAN_BENCH_QUIET", "1")
# hermetic tests: never reach for the network (tests of the downloader unset it themselves)
os.environ.setdefault("DIGAN_BENCH_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    return Path(os.environ.get("DIGAN_BENCH_TEST_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    p = _shared_data()
    if not p.is_dir():
        pytest.skip(f"shared test data not found at {p}; set DIGAN_BENCH_TEST_DATA to the folder")
    return p


@pytest.fixture(scope="session")
def face_models(shared_data: Path) -> Path:
    p = shared_data / "face-models"
    if not (p / "det_500m.onnx").is_file():
        pytest.skip(f"face models not found in {p}")
    return p


@pytest.fixture(autouse=True)
def _torch_determinism():
    import torch

    torch.manual_seed(0)
    yield
