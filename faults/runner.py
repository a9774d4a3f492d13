"""One run: topology, three app processes, the load, the fault, the check.

::

    result = asyncio.run(run_scenario(SCENARIOS["sentinel-kill9"], "replicated", Options()))

Timeline: start the topology and the apps (not measured), start the load, wait ``warmup``
seconds, inject the fault (in a worker thread, the load goes on), then keep the load running
until every app process answered 200 again after its last failure and no request failed for
``quiet`` seconds (at least ``min_after``, at most ``max_after`` seconds after the fault
ended), stop the load, let the topology settle, and read every client's session back
through the library. Every process is stopped by PID in ``finally``.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from faults.farm import HOST, KINDS, App, start_apps, stop_apps
from faults.load import ClientState, LoadGenerator, Record
from faults.report import Result, Stored, analyse, write_requests
from faults.scenarios import Scenario, Timeline
from faults.topology import Topology, start_topology
from stickless import SessionConfig, SessionStore, StoreUnavailable

INJECT_TIMEOUT: Final = 90.0
READ_BACK_TIMEOUT: Final = 20.0


@dataclass(frozen=True)
class Options:
    clients: int = 30
    think: float = 0.1
    """Pause of each client between two requests (seconds): 30 clients at 0.1 s make
    roughly 250-280 requests per second on the 3 servers."""
    warmup: float = 3.0
    min_after: float = 4.0
    quiet: float = 3.0
    max_after: float = 25.0
    apps: tuple[str, ...] = KINDS
    min_replicas: int = 1
    log_dir: Path | None = None
    """Keep the app servers' logs there (default: a temporary directory, removed)."""

    def describe(self) -> str:
        return (
            f"{self.clients} clients (each its own session, {self.think * 1000:g} ms between "
            f"requests), round-robin over {len(self.apps)} app processes "
            f"({', '.join(self.apps)}: uvicorn for ASGI, gunicorn gthread for Flask and "
            f"Django); `replicated` = min_replicas {self.min_replicas}; library defaults "
            "otherwise"
        )


def _read_back(url: str, prefix: str, clients: Sequence[ClientState]) -> dict[int, Stored]:
    """Each client's session as the store holds it now (loads retried while unavailable)."""
    stored: dict[int, Stored] = {}
    deadline = time.monotonic() + READ_BACK_TIMEOUT
    with SessionStore.from_url(url, SessionConfig(key_prefix=prefix)) as store:
        for client in clients:
            if client.token is None:
                stored[client.index] = Stored(False, None, [])
                continue
            while True:
                try:
                    session = store.load(client.token)
                    break
                except StoreUnavailable:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            if session is None:
                stored[client.index] = Stored(False, None, [])
                continue
            cart = session.get("cart") or []
            counter = session.get("n")
            stored[client.index] = Stored(
                True,
                counter if isinstance(counter, int) else None,
                [int(i) for i in cart if isinstance(i, int)],
            )
    return stored


def _quiet_since(records: Sequence[Record], servers: int, since: float, quiet: float) -> bool:
    """Every app answered 200 after its last failure, and nothing failed in ``quiet`` s."""
    now = time.monotonic()
    last_bad = [since] * servers
    last_ok = [0.0] * servers
    for record in reversed(records):
        if record.end < since:
            break
        if record.status == 200:
            last_ok[record.server] = max(last_ok[record.server], record.end)
        else:
            last_bad[record.server] = max(last_bad[record.server], record.end)
    return all(ok > bad for ok, bad in zip(last_ok, last_bad, strict=True)) and all(
        now - bad >= quiet for bad in last_bad
    )


async def run_scenario(scenario: Scenario, durability: str, options: Options) -> Result:
    """Run ``scenario`` once with ``durability``; never raises for a failed run (the
    result's ``error`` says what went wrong), only for KeyboardInterrupt and the like."""
    result = Result(
        scenario.name, scenario.title, scenario.topology, durability, list(options.apps)
    )
    prefix = f"faults{uuid.uuid4().hex[:8]}"
    own_logs = options.log_dir is None
    log_dir = options.log_dir or Path(tempfile.mkdtemp(prefix="stickless-faults-"))
    run_logs = log_dir / f"{scenario.name}-{durability}"
    for repeat in itertools.count(2):  # --repeat: each run keeps its own logs
        if not run_logs.exists():
            break
        run_logs = log_dir / f"{scenario.name}-{durability}-{repeat}"
    topo: Topology | None = None
    apps: list[App] = []
    load: LoadGenerator | None = None
    timeline = Timeline()
    try:
        topo = await asyncio.to_thread(
            start_topology, scenario.topology, sentinel_replicas=scenario.sentinel_replicas
        )
        apps = await asyncio.to_thread(
            start_apps,
            options.apps,
            store_url=topo.url,
            durability=durability,
            prefix=prefix,
            log_dir=run_logs,
            min_replicas=options.min_replicas,
        )
        result.apps = [app.kind for app in apps]
        load = LoadGenerator(
            [(HOST, app.port) for app in apps], clients=options.clients, think=options.think
        )
        load.start()
        await asyncio.sleep(options.warmup)
        await asyncio.wait_for(asyncio.to_thread(scenario.inject, topo, timeline), INJECT_TIMEOUT)
        ended = time.monotonic()
        first_fault = timeline.faults[0][0] if timeline.faults else ended
        while True:
            await asyncio.sleep(0.25)
            elapsed = time.monotonic() - ended
            if elapsed >= options.max_after:
                break
            if elapsed >= options.min_after and _quiet_since(
                load.records, len(apps), first_fault, options.quiet
            ):
                break
        await load.stop()
        result.settled = await asyncio.to_thread(topo.settle)
        result.failover_log = topo.failovers()
        result.failovers = len(result.failover_log)
        stored = await asyncio.to_thread(_read_back, topo.url, prefix, load.clients)
        analyse(
            result,
            records=load.records,
            clients=load.clients,
            stored=stored,
            fault_times=[t for t, _ in timeline.faults],
            servers=len(apps),
        )
    except Exception as exc:  # the run failed: report it, keep going with the next
        result.error = f"{type(exc).__name__}: {exc}"
        tails = "\n".join(f"--- {app.name} log ---\n{app.log_tail()}" for app in apps)
        if tails:
            result.error += "\n" + tails
    finally:
        if load is not None:
            await load.stop()
            result.duration = time.monotonic() - load.started
            result.rate = len(load.records) / result.duration if result.duration else 0.0
            result.faults = [(t - load.started, label) for t, label in timeline.faults]
            result.notes = [(t - load.started, label) for t, label in timeline.notes]
            if not own_logs and run_logs.exists():
                marks = sorted([*result.faults, *result.notes])
                write_requests(
                    run_logs / "requests.csv", load.records, load.started, result.apps, marks
                )
        try:
            await asyncio.to_thread(stop_apps, apps)
        finally:
            if topo is not None:
                await asyncio.to_thread(topo.stop)
            if own_logs:
                shutil.rmtree(log_dir, ignore_errors=True)
    return result
