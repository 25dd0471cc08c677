"""The benchmarks are not run by the suite (they want a quiet machine), but each must still start:
its imports resolve and its command line answers --help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("bench_*.py"))


def test_there_are_benchmarks() -> None:
    names = {path.stem for path in BENCHMARKS}
    assert {"bench_idle_waiters", "bench_push_latency", "bench_full_flow", "bench_tokens"} <= names


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_starts(path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(path), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()
