"""The short subset of the fault-injection suite (``faults/``), run in CI.

Two scenarios, each with its own topology, three real app processes (uvicorn + ASGI, gunicorn
+ Flask, gunicorn + Django) and 30 round-robin clients, ``durability="replicated"``:

* Sentinel: kill -9 of the primary;
* Cluster (3 primaries, 2 replicas each): kill -9 of a primary.

Each must keep every acknowledged write (every request answered 200 is in the store at the
end), answer nothing 5xx but 503, let every app process recover by itself, and finish within
60 s. The whole suite: ``.venv/bin/python -m faults`` (see docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from faults.report import describe, log_digest  # noqa: E402
from faults.runner import Options, run_scenario  # noqa: E402
from faults.scenarios import SCENARIOS  # noqa: E402

pytestmark = pytest.mark.timeout(150)

BOUND = 60.0


@pytest.mark.parametrize("name", [s.name for s in SCENARIOS.values() if s.short])
def test_fault_loses_no_acknowledged_write(name: str, tmp_path: Path) -> None:
    options = Options(warmup=2.0, max_after=20.0, log_dir=tmp_path)
    started = time.monotonic()
    result = asyncio.run(run_scenario(SCENARIOS[name], "replicated", options))
    took = time.monotonic() - started
    report = describe(result) + "\n" + log_digest(tmp_path)
    print(report)
    assert result.error is None, report
    assert result.requests >= 500 and result.ok >= 300, report  # the load really ran
    assert len(result.faults) == 1, report
    assert result.lost == 0, report
    assert result.other_5xx == 0, report
    assert result.recovered, report  # every app process answered 200 again by itself
    assert took <= BOUND, f"took {took:.1f} s\n{report}"
