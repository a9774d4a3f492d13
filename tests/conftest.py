"""Shared test helpers: one contract, run against both stores and every topology.

Topology fixtures (``stickless_valkey``, ``stickless_sentinel``, ``stickless_cluster``) come
from our own pytest plugin, :mod:`stickless.testing`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from stickless import AsyncSessionStore, SessionConfig, SessionStore


class BlockingFacade:
    """Drives an AsyncSessionStore from test code with the SessionStore's blocking API,
    so every contract test runs unchanged against both stores."""

    def __init__(self, store: AsyncSessionStore) -> None:
        self._store = store
        self._loop = asyncio.new_event_loop()
        self.config = store.config

    @property
    def client(self) -> Any:
        async def current() -> Any:
            return self._store.client

        return self._run(current())

    def _run(self, coro: Any) -> Any:
        return self._loop.run_until_complete(coro)

    def new(self) -> Any:
        return self._store.new()

    def load(self, token: object, **options: Any) -> Any:
        return self._run(self._store.load(token, **options))

    def save(self, session: Any) -> Any:
        return self._run(self._store.save(session))

    def destroy(self, token: object) -> Any:
        return self._run(self._store.destroy(token))

    def sessions_for(self, user: str) -> Any:
        return self._run(self._store.sessions_for(user))

    def revoke_user(self, user: str, keep: object = None) -> Any:
        return self._run(self._store.revoke_user(user, keep))

    def pop_once(self, session: Any, key: str, default: Any = None) -> Any:
        return self._run(self._store.pop_once(session, key, default))

    def send(self, batch: Any) -> Any:
        return self._run(self._store.send(batch))

    def close(self) -> None:
        self._run(self._store.aclose())
        self._loop.close()


def make_store(kind: str, url: str, config: SessionConfig | None = None) -> Any:
    if kind == "sync":
        return SessionStore.from_url(url, config)
    return BlockingFacade(AsyncSessionStore.from_url(url, config))


@pytest.fixture(params=["standalone", "sentinel", "cluster"])
def topology_url(request: pytest.FixtureRequest) -> str:
    """The URL of each embedded topology in turn (the plugin's session fixtures)."""
    fixture = {
        "standalone": "stickless_valkey",
        "sentinel": "stickless_sentinel",
        "cluster": "stickless_cluster",
    }[request.param]
    return str(request.getfixturevalue(fixture).url)


@pytest.fixture(params=["sync", "async"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_factory(store_kind: str) -> Iterator[Callable[..., Any]]:
    """Build stores of the current kind; all are closed at the end of the test."""
    made: list[Any] = []

    def build(url: str, config: SessionConfig | None = None) -> Any:
        store = make_store(store_kind, url, config)
        made.append(store)
        return store

    yield build
    for store in made:
        with contextlib.suppress(Exception):
            store.close()


class CommandLog:
    """Counts the commands clients really sent, with MONITOR (commands run inside a Lua
    script are tagged ``lua`` by the server and are not counted)."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url, decode_responses=True)
        self._monitor = self._client.monitor()  # type: ignore[no-untyped-call]  # redis-py: untyped
        self._monitor.__enter__()
        self._marker_client = redis.Redis.from_url(url, decode_responses=True)
        self.commands: list[str] = []
        self._lines: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._stop = threading.Event()
        self._thread.start()

    def _pump(self) -> None:
        while not self._stop.is_set():
            try:
                self._lines.append(self._monitor.next_command())
            except Exception:
                return

    def _mark(self, name: str) -> None:
        self._marker_client.echo(name)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if any(line["command"] == f"ECHO {name}" for line in self._lines):
                return
            time.sleep(0.005)
        raise AssertionError("MONITOR never saw the marker")

    @contextlib.contextmanager
    def counting(self) -> Iterator[list[str]]:
        """Yields a list filled, on exit, with the names of the commands sent inside."""
        start = f"mark-start-{time.monotonic_ns()}"
        end = f"mark-end-{time.monotonic_ns()}"
        self._mark(start)
        seen: list[str] = []
        yield seen
        self._mark(end)
        inside = False
        for line in list(self._lines):
            if line["command"] == f"ECHO {start}":
                inside = True
            elif line["command"] == f"ECHO {end}":
                break
            elif inside and line.get("client_type") != "lua":
                seen.append(line["command"].split()[0].upper())

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            self._client.connection_pool.disconnect()
        self._marker_client.close()


@pytest.fixture
def command_log(stickless_url: str) -> Iterator[CommandLog]:
    """MONITOR-based counter of the commands sent to the standalone server."""
    log = CommandLog(stickless_url)
    yield log
    log.close()
