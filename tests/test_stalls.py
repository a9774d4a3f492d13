"""A cluster node that stalled (SIGSTOP) is not trusted for ``stall_limit`` afterwards: the
save it answered late is not reported saved, its next answers are refused for a moment,
other nodes carry on, and then it is used again (``stickless.store.stalls``)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import pytest

from stickless import AsyncSessionStore, SessionConfig, SessionStore, StoreUnavailable
from stickless.embedded import ClusterSetup, Node, start_cluster
from stickless.session import Session
from stickless.store.failures import Unavailable
from stickless.store.keys import KeyLayout
from stickless.store.stalls import StallGuard
from stickless.tokens import token_id

LIMIT = 0.3
FREEZE = 0.8
"""Longer than LIMIT, far shorter than the cluster's node timeout: no failover."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterSetup]:
    with start_cluster(primaries=2, replicas_per_primary=0, node_timeout_ms=15000) as setup:
        yield setup


def _config() -> SessionConfig:
    # retries=0: a refused load raises at once, well within the LIMIT the node is suspect
    return SessionConfig(key_prefix=f"st{uuid.uuid4().hex[:6]}", stall_limit=LIMIT, retries=0)


def _primary(cluster: ClusterSetup, config: SessionConfig, session: Session) -> Node:
    key = KeyLayout(config.key_prefix).data(token_id(session.token).family)
    return cluster.primary_for_key(key)


def _two_nodes(cluster: ClusterSetup, config: SessionConfig, store: SessionStore) -> list[Session]:
    """Saved sessions on two different primaries: [on the one to freeze, on another]."""
    by_node: dict[int, Session] = {}
    while len(by_node) < 2:
        s = store.new()
        s["v"] = 1
        store.save(s)
        by_node.setdefault(_primary(cluster, config, s).port, s)
    return list(by_node.values())


def _placed(
    cluster: ClusterSetup, config: SessionConfig
) -> tuple[SessionStore, Session, Session, Node]:
    """A store, a session on the node to freeze, one on another node, and that node."""
    store = SessionStore.from_url(cluster.url, config)
    frozen_one, other = _two_nodes(cluster, config, store)
    return store, frozen_one, other, _primary(cluster, config, frozen_one)


def _loaded(store: SessionStore, session: Session) -> Session:
    loaded = store.load(session.token)
    assert loaded is not None
    return loaded


@asynccontextmanager
async def _async_placed(
    cluster: ClusterSetup,
) -> AsyncIterator[tuple[AsyncSessionStore, Session, Session, Node]]:
    """:func:`_placed` for the asyncio store, its slot map loaded; the node resumed and the
    store closed at the end."""
    config = _config()
    sync_store, frozen_one, other, node = _placed(cluster, config)
    sync_store.close()
    store = AsyncSessionStore.from_url(cluster.url, config)
    try:
        assert await store.load(other.token) is not None  # slot map loaded
        yield store, frozen_one, other, node
    finally:
        node.resume()
        await store.aclose()


def _frozen(node: Node, seconds: float) -> threading.Timer:
    node.pause()
    timer = threading.Timer(seconds, node.resume)
    timer.start()
    return timer


def test_a_save_answered_after_a_stall_is_not_reported_saved(cluster: ClusterSetup) -> None:
    config = _config()
    store, frozen_one, other, node = _placed(cluster, config)
    loaded = _loaded(store, frozen_one)
    loaded["v"] = 2
    timer = _frozen(node, FREEZE)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as saved:
            store.save(loaded)  # answered once the node wakes up
        assert time.monotonic() - started >= FREEZE - 0.05
        assert saved.value.applied is None  # may have been applied: not "saved"
        assert "stall_limit" in str(saved.value)
        # for a moment, the woken node's quick answers are refused too...
        with pytest.raises(StoreUnavailable) as read:
            store.load(frozen_one.token)
        assert read.value.applied is False
        # ...but not another node's
        assert store.load(other.token) is not None
        time.sleep(LIMIT + 0.1)
        again = store.load(frozen_one.token)
        assert again is not None and again["v"] == 2  # no failover: the late save stood
    finally:
        timer.cancel()
        node.resume()
        store.close()


def test_a_quick_answer_at_the_wake_up_is_refused_too(cluster: ClusterSetup) -> None:
    """The woken node answers everything at once: a read sent just before the wake-up
    (its own wait well under LIMIT) is refused, whether it is checked before or after the
    answer to the read that waited the whole freeze."""
    config = _config()
    store, frozen_one, other, node = _placed(cluster, config)
    timer = _frozen(node, FREEZE)
    try:
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(store.load, frozen_one.token)  # waits the whole freeze
            time.sleep(FREEZE - LIMIT / 2)
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                store.load(frozen_one.token)
            assert time.monotonic() - started < LIMIT + 0.2  # answered at the wake-up
            with pytest.raises(StoreUnavailable):
                slow.result()
        assert store.load(other.token) is not None
        time.sleep(LIMIT + 0.1)
        assert store.load(frozen_one.token) is not None
    finally:
        timer.cancel()
        node.resume()
        store.close()


def test_a_login_spread_over_two_nodes_that_stalled_is_not_reported_saved(
    cluster: ClusterSetup,
) -> None:
    """A login saves the session on its node and the user index on the user's: a stall of
    that batch is not trusted although it went to two nodes."""
    config = _config()
    store = SessionStore.from_url(cluster.url, config)
    layout = KeyLayout(config.key_prefix)
    frozen_one, _ = _two_nodes(cluster, config, store)
    node = _primary(cluster, config, frozen_one)
    user = next(
        f"u{i}" for i in range(1000) if cluster.primary_for_key(layout.user_index(f"u{i}")) != node
    )
    loaded = _loaded(store, frozen_one)
    loaded.login(user)
    timer = _frozen(node, FREEZE)
    try:
        with pytest.raises(StoreUnavailable) as saved:
            store.save(loaded)
        assert saved.value.applied is None
    finally:
        timer.cancel()
        node.resume()
        store.close()


async def test_a_cancelled_request_leaves_no_suspicion(cluster: ClusterSetup) -> None:
    """A load cancelled while the node is frozen (a client that went away) is not waited
    for: once the node is back, its answers are taken at once."""
    async with _async_placed(cluster) as (store, frozen_one, _, node):
        node.pause()
        try:
            pending = asyncio.ensure_future(store.load(frozen_one.token))
            await asyncio.sleep(0.1)
            pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pending
        finally:
            node.resume()
        await asyncio.sleep(LIMIT + 0.1)  # the cancelled load would be "waiting" by now
        assert await store.load(frozen_one.token) is not None


def test_stall_limit_zero_trusts_a_late_answer(cluster: ClusterSetup) -> None:
    config = _config().with_options(stall_limit=0)
    store, frozen_one, _, node = _placed(cluster, config)
    loaded = _loaded(store, frozen_one)
    loaded["v"] = 3
    timer = _frozen(node, FREEZE)
    try:
        assert store.save(loaded).outcome == "saved"
        again = store.load(frozen_one.token)
        assert again is not None and again["v"] == 3
    finally:
        timer.cancel()
        node.resume()
        store.close()


async def test_async_store_refuses_a_stalled_node_too(cluster: ClusterSetup) -> None:
    async with _async_placed(cluster) as (store, frozen_one, other, node):
        timer = _frozen(node, FREEZE)
        try:
            with pytest.raises(StoreUnavailable):
                await store.load(frozen_one.token)  # late answer of a stalled node
            assert await store.load(other.token) is not None
            await asyncio.sleep(LIMIT + 0.1)
            assert await store.load(frozen_one.token) is not None
        finally:
            timer.cancel()
            node.resume()


def test_stall_limit_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="stall_limit"):
        SessionConfig(stall_limit=-1)


def test_a_timeout_shorter_than_the_limit_still_makes_the_node_suspect() -> None:
    """With ``socket_timeout`` below ``stall_limit`` no batch waits that long: a timeout
    counts as a stall by itself (the guard's own bookkeeping, no server needed)."""
    guard = StallGuard(limit=5.0, horizon=6.0)
    timed_out = guard.sent(("127.0.0.1:7000",), 0.0)
    guard.ended(timed_out, timed_out=True)
    with pytest.raises(Unavailable):
        guard.settle(guard.sent(("127.0.0.1:7000",), 0.0), writes=True)
    guard.settle(guard.sent(("127.0.0.1:7001",), 0.0), writes=True)  # another node: fine
