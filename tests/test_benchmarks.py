"""The benchmarks are not run by the suite (they want a quiet machine), but each must still start:
its imports resolve and its command line answers --help. The peak benchmark, which drives every
flow at once, also runs end to end at a hundredth of its load for a few seconds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each benchmark as a subprocess, and valgrind

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


SPINNER = """
import sys
print("ready", flush=True)
for line in sys.stdin:
    total = 0
    for i in range(int(line)):
        total += i
    print("done", flush=True)
"""


def test_instruction_counter_counts_only_between_start_and_stop(tmp_path: Path) -> None:
    """The counter behind `bench_full_flow.py --instructions`: a process under valgrind that runs a
    loop of N steps on request; ten times the steps must count about ten times the instructions,
    and what runs outside start/stop must not count."""
    sys.path.insert(0, str(BENCHMARKS[0].parent))
    from harness import InstructionCounter

    if shutil.which("valgrind") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("valgrind is missing (scripts/services installs it)")
        pytest.skip("valgrind is not installed")
    counter = InstructionCounter(tmp_path, "spinner")
    with subprocess.Popen(
        [*counter.wrapper, sys.executable, "-c", SPINNER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        assert proc.stdin is not None
        assert proc.stdout is not None
        stdin, stdout = proc.stdin, proc.stdout

        def spin(steps: int) -> None:
            stdin.write(f"{steps}\n")
            stdin.flush()
            assert stdout.readline().strip() == "done"

        try:
            assert stdout.readline().strip() == "ready"
            spin(3_000_000)  # not counted: instrumentation is off
            counter.start(proc.pid)
            spin(20_000)
            small = counter.stop(proc.pid)
            spin(3_000_000)  # not counted either
            counter.start(proc.pid)
            spin(200_000)
            large = counter.stop(proc.pid)
        finally:
            proc.kill()
    assert small > 20_000 * 10  # a Python loop step is tens of instructions
    assert 8 < large / small < 12


def test_peak_benchmark_runs_at_a_hundredth_of_its_load(tmp_path: Path) -> None:
    """bench_peak.py end to end for 4 s at 1/100 of its load (50 waiting desktops, 1.5 QR logins/s, ...):
    every kind of operation succeeds with no error, the push, memory and open-file figures are read,
    and the report ends with its verdicts. Rates and latencies are not asserted: the machine is shared."""
    figures_path = tmp_path / "peak.json"
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS[0].parent / "bench_peak.py"), "--seconds", "4", "--scale", "0.01",
         "--json", str(figures_path)],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(figures_path.read_text())
    for name in ("qr_login", "password_login", "refresh", "unit_verify", "desktop_remint"):
        operation = figures["operations"][name]
        assert operation["errors"] == 0, (name, operation["error_kinds"])
    for name in ("qr_login", "password_login", "refresh", "unit_verify"):
        assert figures["operations"][name]["ok"] > 0, (name, figures["operations"][name])
    assert figures["push_ms"]["samples"] > 0
    assert figures["desktops"]["target"] == 50
    assert figures["desktops"]["open_min"] > 0
    gateway = figures["gateway"]
    assert 0 < gateway["rss_kib"]["start"] <= gateway["rss_kib"]["max"]
    assert gateway["fds"]["end"] > 50  # the waiting desktops' sockets among them
    assert gateway["healthz_after"] == 200
    assert "PASS  errors: 0 (the deliberate slow clients apart)" in result.stdout
    assert any(line.startswith(("PASS  push p99", "FAIL  push p99")) for line in result.stdout.splitlines())
