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
# One CPU thread per test process (and the CLI subprocesses tests start) unless
# DIGAN_BENCH_TEST_THREADS says otherwise: the tests use small tensors, where OpenMP threads only
# add contention (on a busy 2-core runner a test ran 40x slower with 2 threads than with 1), and
# one thread gives the same float32 sums on every machine.
TEST_THREADS = os.environ.get("DIGAN_BENCH_TEST_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", TEST_THREADS)
os.environ.setdefault("MKL_NUM_THREADS", TEST_THREADS)

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


def pytest_configure(config):
    import torch

    torch.set_num_threads(int(TEST_THREADS))


@pytest.fixture(autouse=True)
def _torch_determinism():
    import torch

    torch.manual_seed(0)
    yield
