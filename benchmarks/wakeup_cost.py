"""What a round trip costs the server: the command, or waking the client that waits for it.

    .venv/bin/python benchmarks/wakeup_cost.py [--url redis://...] [--rounds 7] [--calls 3000]

The "Valkey CPU per request" figures of docs/benchmarks.md are the server process's own CPU
time (``used_cpu_sys + used_cpu_user``). This measures, per round trip, on one connection,
each request sent only after the previous reply (as a web request sends them):

* the command's work, at equal client timing: ``PING``, ``GET`` of a 300-byte blob, and
  ``HGETALL`` + ``PTTL`` of a 10-key stickless session's hash (a load);
* the client's timing, at equal command: a ``GET`` whose client stays busy for 10, 30 or 60
  µs after sending it, before it blocks for the reply; and, as the control, one that is
  busy for 30 µs after the reply (the same client work while the server has nothing to do);
* two asyncio clients, as starsessions and stickless's ASGI adapter run them: a
  ``redis.asyncio`` ``GET`` and ``AsyncSessionStore.load``.

The client's busy wait is a measurement device, not something stickless does. Medians over
``--rounds`` interleaved rounds of ``--calls`` round trips. Without ``--url`` it starts an
embedded Valkey; with it, use a quiet server (the CPU counters are the whole server's): the
URL's database gets the key ``slwake.blob`` and one session under ``slwake:``, deleted at
the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis
import redis.asyncio

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import bench_apps as apps  # noqa: E402
import bench_core as core  # noqa: E402

from stickless import AsyncSessionStore, SessionConfig, SessionStore  # noqa: E402
from stickless.store.base import packed  # noqa: E402

PREFIX = "slwake"
BLOB = PREFIX + ".blob"

RoundTrips = Callable[[int], None]
"""Runs n round trips, one after the other."""


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _raw(
    client: redis.Redis,
    *commands: tuple[str, ...],
    busy_before: float = 0.0,
    busy_after: float = 0.0,
) -> RoundTrips:
    """Round trips of ``commands`` (one write) on one pooled connection, the replies read
    straight off it; the client busy for ``busy_before`` s between the write and the read,
    and ``busy_after`` s after the read."""
    wire = [packed(list(commands))]

    def run(n: int) -> None:
        pool: Any = client.connection_pool  # its connections: redis-py's, untyped
        connection = pool.get_connection()
        try:
            for _ in range(n):
                connection.send_packed_command(wire)
                if busy_before:
                    _busy(busy_before)
                for _ in commands:
                    connection.read_response()
                if busy_after:
                    _busy(busy_after)
        finally:
            pool.release(connection)

    return run


def _looped(loop: asyncio.AbstractEventLoop, call: Callable[[], Awaitable[Any]]) -> RoundTrips:
    async def calls(n: int) -> None:
        for _ in range(n):
            await call()

    return lambda n: loop.run_until_complete(calls(n))


def _server_cpu(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


def _measure(client: redis.Redis, run: RoundTrips, calls: int) -> tuple[float, float]:
    """(client µs, server CPU µs) per round trip."""
    before, started = _server_cpu(client), time.perf_counter()
    run(calls)
    elapsed, after = time.perf_counter() - started, _server_cpu(client)
    return elapsed / calls * 1e6, (after - before) / calls * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a quiet standalone Redis/Valkey (default: embedded)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args(argv)
    loop = asyncio.new_event_loop()
    with core.valkey(args.url) as (url, _):
        client = redis.Redis.from_url(url)
        aclient = redis.asyncio.Redis.from_url(url)
        config = SessionConfig(key_prefix=PREFIX)
        store, astore = SessionStore.from_url(url, config), AsyncSessionStore.from_url(url, config)
        try:
            client.set(BLOB, b"x" * 300)
            session = store.new()
            session.update(apps.SETUP_DATA)
            store.save(session)
            key = store.plan.layout.data(session.token_id.family)
            get = ("GET", BLOB)
            variants: dict[str, RoundTrips] = {
                "PING": _raw(client, ("PING",)),
                "GET, 300-byte blob": _raw(client, get),
                "HGETALL + PTTL, a 10-key session (a load)": _raw(
                    client, ("HGETALL", key), ("PTTL", key)
                ),
                "GET, client busy 10 µs before the reply": _raw(client, get, busy_before=10e-6),
                "GET, client busy 30 µs before the reply": _raw(client, get, busy_before=30e-6),
                "GET, client busy 60 µs before the reply": _raw(client, get, busy_before=60e-6),
                "GET, client busy 30 µs after the reply": _raw(client, get, busy_after=30e-6),
                "redis.asyncio GET": _looped(loop, lambda: aclient.get(BLOB)),
                "AsyncSessionStore.load": _looped(loop, lambda: astore.load(session.token)),
            }
            results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
            for warm_up in variants.values():
                warm_up(200)  # connections open, scripts and caches warm
            for r in range(args.rounds):
                names = list(variants)
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    results[name].append(_measure(client, variants[name], args.calls))
        finally:
            store.destroy(session.token)
            client.delete(BLOB)
            loop.run_until_complete(astore.aclose())
            loop.run_until_complete(aclient.aclose())
            store.close()
            client.close()
            loop.close()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"per round trip, median of {args.rounds} rounds x {args.calls} ({when})")
    print(f"  {'':45} {'client':>8} {'server CPU':>11}")
    for name, values in results.items():
        spent = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        print(f"  {name:45} {spent:6.1f} µs {cpu:8.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
