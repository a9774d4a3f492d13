"""A primary killed with SIGKILL: sessions saved with durability="replicated" survive the
failover (Sentinel and Cluster), and writes resume without restarting anything."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from stickless import (
    AsyncSessionStore,
    ReplicationTimeout,
    Session,
    SessionConfig,
    SessionStore,
    StoreUnavailable,
)
from stickless.embedded import ClusterSetup, SentinelSetup, start_cluster, start_sentinel
from stickless.store.failures import error_code
from stickless.store.keys import KeyLayout
from stickless.tokens import token_id

DURABLE = dict(durability="replicated", min_replicas=1, wait_timeout=2.0, retries=3)


@pytest.fixture(scope="module")
def sentinel() -> Iterator[SentinelSetup]:
    with start_sentinel(down_after_ms=800, failover_timeout_ms=2000) as setup:
        yield setup


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterSetup]:
    with start_cluster(node_timeout_ms=800) as setup:
        yield setup


def until_ok(action: Any, timeout: float = 15.0) -> Any:
    """Retry ``action`` while the store reports itself unavailable (during the election)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def save_many(store: SessionStore, n: int) -> list[tuple[str, int]]:
    saved = []
    for i in range(n):
        s = store.new()
        s["i"] = i
        s.user_id = f"user{i % 3}"
        result = store.save(s)
        assert result.replicas is not None and result.replicas >= 1
        saved.append((s.token, i))
    return saved


def test_sentinel_failover_keeps_replicated_sessions(sentinel: SentinelSetup) -> None:
    config = SessionConfig(key_prefix=f"fo{uuid.uuid4().hex[:6]}", **DURABLE)  # type: ignore[arg-type]
    store = SessionStore.from_url(sentinel.url, config)
    saved = save_many(store, 30)
    old = sentinel.kill_primary()
    started = time.monotonic()
    new = sentinel.wait_for_failover(old, timeout=30)
    assert new.port != old.port
    for token, i in saved:
        loaded = until_ok(lambda token=token: store.load(token))
        assert loaded is not None and loaded["i"] == i
    # writes resume on the new primary (still replicated to the remaining replica)
    s = until_ok(lambda: store.load(saved[0][0]))
    s.incr("i", 100)
    assert until_ok(lambda: store.save(s)).outcome == "saved"
    after = store.load(saved[0][0])
    assert after is not None and after["i"] == 100
    print(f"sentinel failover took {time.monotonic() - started:.1f} s")
    store.close()


async def test_async_store_after_the_failover(sentinel: SentinelSetup) -> None:
    config = SessionConfig(key_prefix=f"fa{uuid.uuid4().hex[:6]}", **DURABLE)  # type: ignore[arg-type]
    store = AsyncSessionStore.from_url(sentinel.url, config)
    s = store.new()
    s["after"] = True
    await store.save(s)
    loaded = await store.load(s.token)
    assert loaded is not None and loaded["after"] is True
    await store.aclose()


def test_cluster_failover_keeps_replicated_sessions(cluster: ClusterSetup) -> None:
    config = SessionConfig(key_prefix=f"fc{uuid.uuid4().hex[:6]}", **DURABLE)  # type: ignore[arg-type]
    store = SessionStore.from_url(cluster.url, config)
    saved = save_many(store, 30)
    layout = KeyLayout(config.key_prefix)
    victim_key = layout.data(token_id(saved[0][0]).family)
    victim = cluster.primary_for_key(victim_key)
    on_victim = [
        t for t, _ in saved if cluster.primary_for_key(layout.data(token_id(t).family)) == victim
    ]
    assert on_victim, "at least one session lives on the killed primary"
    cluster.kill_primary(victim)
    started = time.monotonic()
    cluster.wait_for_failover(victim, timeout=30)
    for token, i in saved:
        loaded = until_ok(lambda token=token: store.load(token))
        assert loaded is not None and loaded["i"] == i
    # The promoted replica has no replica of its own now: a replicated save is applied but
    # reported honestly as not replicated.
    s = until_ok(lambda: store.load(on_victim[0]))
    s["resumed"] = True
    with pytest.raises(ReplicationTimeout) as info:
        store.save(s)
    assert info.value.acknowledged == 0
    resumed = store.load(on_victim[0])
    assert resumed is not None and resumed["resumed"] is True
    plain = SessionStore.from_url(cluster.url, config.with_options(durability="none"))
    s = plain.load(on_victim[0])
    assert s is not None
    s.incr("i", 1)
    assert plain.save(s).outcome == "saved"
    again = plain.load(on_victim[0])
    assert again is not None and again["i"] == s["i"]
    plain.close()
    print(f"cluster failover took {time.monotonic() - started:.1f} s; {len(on_victim)} on victim")
    store.close()


async def test_async_cluster_replicated_save_on_a_fresh_store(cluster: ClusterSetup) -> None:
    """The very first call of a new async store may be a replicated save: the slot owner
    must be looked up after the cluster client loaded its slot map."""
    config = SessionConfig(key_prefix=f"fr{uuid.uuid4().hex[:6]}", **DURABLE)  # type: ignore[arg-type]
    store = AsyncSessionStore.from_url(cluster.url, config)
    s = store.new()
    s["first"] = True
    try:
        result = await store.save(s)
        assert result.replicas is not None and result.replicas >= 1
    except ReplicationTimeout as exc:  # a primary whose replica was promoted earlier
        assert exc.acknowledged == 0
    loaded = await store.load(s.token)
    assert loaded is not None and loaded["first"] is True
    await store.aclose()


def test_cluster_replicated_saves_recover_without_any_load() -> None:
    """After a primary dies, replicated saves (routed to the slot owner by the store itself)
    must find the promoted replica, even when no other command refreshes the slot map."""
    with start_cluster(node_timeout_ms=800) as setup:
        config = SessionConfig(key_prefix="fs", durability="replicated", min_replicas=0, retries=0)
        store = SessionStore.from_url(setup.url, config)
        layout = KeyLayout(config.key_prefix)
        victim = setup.primaries[0]
        on_victim = 0
        while on_victim < 3:  # warm: the store holds a client for the victim
            s = store.new()
            s["warm"] = True
            store.save(s)
            on_victim += setup.primary_for_key(layout.data(token_id(s.raw_token).family)) == victim
        setup.kill_primary(victim)
        setup.wait_for_failover(victim, timeout=30)
        outcomes: list[str] = []  # SaveOutcome is a str
        for _ in range(40):
            s = store.new()
            s["after"] = True
            try:
                outcomes.append(store.save(s).outcome)
            except StoreUnavailable:
                outcomes.append("unavailable")
        assert outcomes[-20:] == ["saved"] * 20, outcomes
        assert outcomes.count("unavailable") <= 3, outcomes
        store.close()


def test_every_process_serves_again_once_a_replica_is_promoted() -> None:
    """Processes that kept failing while a killed primary's replica was promoted serve
    again as soon as the cluster has settled, whenever they last reloaded the slot map:
    a load on its retries (async: redis.asyncio's pipeline does not reload the map itself),
    a replicated save (pinned to the owner's node by the store) within REFRESH_GAP. Each
    store stands for one process; one that reloaded a moment before the promotion (while
    the dead primary was still listed) used to fail until its throttle let it reload.
    Meanwhile the reloads asked for by a process's failing loads do not cut its saves on
    the healthy primaries (they fail only while the cluster is down, CLUSTERDOWN)."""
    with start_cluster(node_timeout_ms=800) as setup:
        config = SessionConfig(key_prefix="fp", durability="replicated", min_replicas=0)
        layout = KeyLayout(config.key_prefix)
        victim = setup.primaries[0]

        def on_victim(store: SessionStore, victim_wanted: bool = True) -> Session:
            s = store.new()
            while (
                setup.primary_for_key(layout.data(token_id(s.raw_token).family)) == victim
            ) != victim_wanted:
                s = store.new()
            return s

        seed = SessionStore.from_url(setup.url, config)
        session = on_victim(seed)
        session["kept"] = 1
        seed.save(session)
        seed.close()
        token = session.token
        loaders = [AsyncSessionStore.from_url(setup.url, config) for _ in range(6)]
        savers = [SessionStore.from_url(setup.url, config) for _ in range(4)]
        promoted = threading.Event()
        promoted_at = [0.0]

        def save(store: SessionStore, s: Session) -> str:
            s.incr("n")
            try:
                return store.save(s).outcome
            except StoreUnavailable:
                return "unavailable"

        def hammer_saves(store: SessionStore, s: Session) -> list[str]:
            """Saves from 0.1 s after the promotion was seen until 0.3 s after it."""
            while not promoted.is_set():
                save(store, s)
                time.sleep(0.01)
            outcomes = []
            while (since := time.monotonic() - promoted_at[0]) < 0.3:
                outcome = save(store, s)
                if since >= 0.1:
                    outcomes.append(str(outcome))
                time.sleep(0.01)
            return outcomes

        shared = SessionStore.from_url(setup.url, config)  # one process, many threads
        healthy_failures: list[str] = []

        def hammer_shared_loads() -> None:
            while not promoted.is_set():
                with contextlib.suppress(StoreUnavailable):
                    shared.load(token)

        def hammer_healthy_saves(s: Session) -> None:
            while time.monotonic() - promoted_at[0] < 0.3 or not promoted.is_set():
                s.incr("n")
                try:
                    shared.save(s)
                except StoreUnavailable as exc:
                    healthy_failures.append(error_code(exc.cause) or type(exc.cause).__name__)

        async def hammer_loads(store: AsyncSessionStore) -> str:
            while not promoted.is_set():
                with contextlib.suppress(StoreUnavailable):
                    await store.load(token)
                await asyncio.sleep(0.01)
            try:
                loaded = await store.load(token)
            except StoreUnavailable:
                return "unavailable"
            finally:
                await store.aclose()
            return "loaded" if loaded is not None and loaded["kept"] == 1 else "lost"

        async def failover() -> list[str]:
            for store in loaders:  # warm: each holds the slot map naming the victim
                assert await store.load(token) is not None
            setup.kill_primary(victim)
            tasks = [asyncio.create_task(hammer_loads(store)) for store in loaders]
            await asyncio.to_thread(setup.wait_for_failover, victim, 30)
            promoted_at[0] = time.monotonic()
            promoted.set()
            return list(await asyncio.gather(*tasks))

        healthy = [on_victim(shared, victim_wanted=False) for _ in range(3)]
        with ThreadPoolExecutor(len(savers) + 6) as pool:
            mine = [on_victim(store) for store in savers]
            assert [save(store, s) for store, s in zip(savers, mine)] == ["saved"] * len(savers)
            assert [save(shared, s) for s in healthy] == ["saved"] * len(healthy)
            saves = [pool.submit(hammer_saves, store, s) for store, s in zip(savers, mine)]
            busy = [pool.submit(hammer_healthy_saves, s) for s in healthy]
            busy += [pool.submit(hammer_shared_loads) for _ in range(3)]
            loads = asyncio.run(failover())
            after = [future.result() for future in saves]
            for future in busy:
                future.result()
        for store in [*savers, shared]:
            store.close()
        assert loads == ["loaded"] * len(loaders), loads
        assert all(outcomes and set(outcomes) == {"saved"} for outcomes in after), after
        assert set(healthy_failures) <= {"CLUSTERDOWN"}, Counter(healthy_failures)
