"""run_in_fresh_process: results and errors come back, and a worker that dies without reporting
is a one-line error instead of a parent that waits forever."""

from __future__ import annotations

import math
import os

import pytest

from digan.errors import DiganError
from digan.utils.isolate import run_in_fresh_process


def test_result_and_child_error_come_back():
    assert run_in_fresh_process(math.hypot, (3.0, 4.0), "hypot") == 5.0
    with pytest.raises(DiganError, match=r"^sqrt case failed: ValueError"):
        run_in_fresh_process(math.sqrt, (-1.0,), "sqrt case")


def test_worker_that_exits_without_a_result_is_an_error():
    with pytest.raises(DiganError, match=r"exit case failed: its worker process ended without a result \(exit code 3\)"):
        run_in_fresh_process(os._exit, (3,), "exit case")


@pytest.mark.skipif(os.name != "posix", reason="signals are POSIX")
def test_worker_killed_by_a_signal_is_named():
    with pytest.raises(DiganError, match=r"ended without a result \(killed by SIGABRT\)"):
        run_in_fresh_process(os.abort, (), "abort case")
