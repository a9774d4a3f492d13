"""The core example and the benchmark run as documented (the benchmark's numbers are
reported, never asserted: the machines are shared and noisy)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python <script> <args>`` (``script`` relative to the repository), output captured."""
    command = [sys.executable, str(ROOT / script), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_contract_check_example_passes(stickless_url: str) -> None:
    done = run("examples/contract_check.py", stickless_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("PASS") == 4 and "FAIL" not in done.stdout


def test_idle_warning_example_polls_without_keeping_the_session_alive(stickless_url: str) -> None:
    done = run("examples/idle_warning.py", "--check", stickless_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("PASS") == 2 and "FAIL" not in done.stdout


def test_benchmark_runs_side_by_side(stickless_url: str) -> None:
    done = run("benchmarks/run.py", "--url", stickless_url, "--quick", "--only", "store")
    assert done.returncode == 0, done.stderr
    kept = next(line for line in done.stdout.splitlines() if "changes kept" in line)
    assert "50 of 50" in kept.split("│")[2]  # stickless keeps all 50; the blob's count is reported
