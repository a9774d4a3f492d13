"""Review of 7fc2e5f (the async executor bounds a batch with one ``asyncio.timeout`` and sets
``connection.socket_timeout = None`` inside it): no pooled connection is ever left with
``socket_timeout`` None, after an error reply, a timeout, a cancellation or an outer
timeout, and a frozen (SIGSTOP) server still answers ``StoreUnavailable`` in bounded time."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis

from stickless import AsyncSessionStore, SessionConfig
from stickless.embedded import Standalone, start_standalone
from stickless.errors import StoreUnavailable

TIMEOUT = 0.5
CONFIG = SessionConfig(socket_timeout=TIMEOUT, connect_timeout=TIMEOUT, retries=0)


@pytest.fixture(scope="module")
def server() -> Iterator[Standalone]:
    with start_standalone() as valkey:
        yield valkey


@pytest.fixture
async def store(server: Standalone) -> AsyncIterator[AsyncSessionStore]:
    made = AsyncSessionStore.from_url(server.url, CONFIG)
    yield made
    await made.aclose()


@contextlib.contextmanager
def frozen(server: Standalone) -> Iterator[None]:
    server.node.pause()
    try:
        yield
    finally:
        server.node.resume()


def timeouts(store: AsyncSessionStore) -> list[float | None]:
    pool = store.client.connection_pool
    conns: list[Any] = [*pool._available_connections, *pool._in_use_connections]
    return [conn.socket_timeout for conn in conns]


async def stored(store: AsyncSessionStore) -> str:
    session = store.new()
    session["a"] = 1
    await store.save(session)
    return session.token


async def test_an_error_reply_leaves_the_connection_as_it_was(
    store: AsyncSessionStore, server: Standalone
) -> None:
    token = await stored(store)
    family = token.split(".")[0]
    client: Any = redis.Redis.from_url(server.url)
    try:
        key = f"stickless:s:{{{family}}}"
        client.delete(key)
        client.set(key, "not a hash")  # HGETALL answers WRONGTYPE
    finally:
        client.close()
    assert await store.load(token) is None
    assert timeouts(store) == [TIMEOUT]


@pytest.mark.parametrize("operation", ["load", "save"])
async def test_a_frozen_server_is_bounded_and_the_timeout_restored(
    store: AsyncSessionStore, server: Standalone, operation: str
) -> None:
    token = await stored(store)
    session = await store.load(token)
    assert session is not None
    session["b"] = 2
    with frozen(server):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            if operation == "load":
                await store.load(token)
            else:
                await store.save(session)
        elapsed = time.monotonic() - started
    assert TIMEOUT * 0.8 <= elapsed < TIMEOUT + 1.0
    assert None not in timeouts(store)
    assert (await store.load(token)) is not None
    assert timeouts(store) == [TIMEOUT]


async def test_a_cancelled_batch_restores_the_timeout(
    store: AsyncSessionStore, server: Standalone
) -> None:
    token = await stored(store)
    with frozen(server):
        task = asyncio.ensure_future(store.load(token))
        await asyncio.sleep(0.15)
        assert timeouts(store) == [None]  # inside the batch: one deadline instead
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert timeouts(store) == [TIMEOUT]
    assert (await store.load(token)) is not None
    assert timeouts(store) == [TIMEOUT]


async def test_an_outer_timeout_restores_the_timeout(
    store: AsyncSessionStore, server: Standalone
) -> None:
    token = await stored(store)
    with frozen(server):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.15):
                await store.load(token)
        assert timeouts(store) == [TIMEOUT]
    assert (await store.load(token)) is not None


async def test_many_batches_some_cancelled_leave_every_timeout_set(
    store: AsyncSessionStore,
) -> None:
    token = await stored(store)
    for pause in (0, 0, 0.0005, 0.001, 0.002):
        tasks = [asyncio.ensure_future(store.load(token)) for _ in range(40)]
        await asyncio.sleep(pause)
        for task in tasks[::3]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert None not in timeouts(store)
    assert set(timeouts(store)) == {TIMEOUT}
