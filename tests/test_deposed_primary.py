"""A save built on a read that a deposed cluster primary answered is refused.

The attack, on a real cluster: a primary is frozen (SIGSTOP) and one of its replicas is
promoted; another process saves a newer cart on the new primary (acknowledged). Then a
process that had sent nothing to the frozen node since it froze loads the session: its slot
map still names the old primary, so the read waits there, and when the node wakes up it
answers it first, as the primary it still believes it is: the old cart. That answer came
quickly (the stall guard of ``stickless.store.stalls`` judges by time, and this process
has nothing else pending there). The save built on it must not overwrite the newer cart on
the new primary (``Batch.owner`` / ``Locate`` in ``stickless.store.plan``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from stickless import AsyncSessionStore, SessionConfig, SessionStore, StoreUnavailable
from stickless.embedded import ClusterSetup, Node, start_cluster
from stickless.store.keys import KeyLayout
from stickless.tokens import token_id

QUEUED = 0.3
"""How long the stale read waits at the frozen node before it wakes (below stall_limit)."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterSetup]:
    with start_cluster(replicas_per_primary=2, node_timeout_ms=800) as setup:
        yield setup


def _config(durability: str, touch_interval: float = 60.0) -> SessionConfig:
    return SessionConfig(
        key_prefix=f"dp{uuid.uuid4().hex[:6]}",
        durability=durability,  # type: ignore[arg-type]
        min_replicas=1,
        wait_timeout=2.0,
        touch_interval=touch_interval,
    )


def _role(node: Node) -> list[Any]:
    reply: list[Any] = node.client(timeout=0.5).execute_command("ROLE")  # type: ignore[no-untyped-call]
    return reply


def _in_sync(cluster: ClusterSetup, primary: Node) -> bool:
    """``primary`` leads the cluster for its slots and both its replicas are attached."""
    try:
        role = _role(primary)
    except Exception:
        return False
    return role[0] == "master" and len(role[2]) == 2


def _wait(what: str, check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _promoted(cluster: ClusterSetup, old: Node) -> Node | None:
    for node in cluster.nodes:
        if node is old or node.role == "sentinel":
            continue
        try:
            role = _role(node)
        except Exception:
            continue
        if role[0] == "master" and node not in cluster.primaries:
            return node
    return None


def _primary_of(cluster: ClusterSetup, config: SessionConfig, token: str) -> Node:
    key = KeyLayout(config.key_prefix).data(token_id(token).family)
    primary = cluster.primary_for_key(key)
    _wait("the previous test's old primary to rejoin", lambda: _in_sync(cluster, primary))
    return primary


def _freeze_and_promote(cluster: ClusterSetup, primary: Node) -> Node:
    primary.pause()
    new = _wait("a replica to take over", lambda: _promoted(cluster, primary))
    cluster.primaries[cluster.primaries.index(primary)] = new
    return new  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("durability", "touch_interval"),
    [("replicated", 60.0), ("none", 60.0), ("replicated", 0.5)],
    ids=["replicated", "none", "touched"],
)
def test_a_save_on_a_stale_read_from_a_woken_primary_is_refused(
    cluster: ClusterSetup, durability: str, touch_interval: float
) -> None:
    """``touched``: the stale load also refreshes the idle TTL (due after the freeze); that
    touch, redirected to the new primary, must not vouch for the stale read."""
    config = _config(durability, touch_interval)
    late = SessionStore.from_url(cluster.url, config)  # the process that sent nothing there
    s = late.new()
    s["cart"] = [1]
    late.save(s)
    assert late.load(s.token) is not None  # its slot map names the primary
    primary = _primary_of(cluster, config, s.token)
    with ThreadPoolExecutor(1) as pool:
        try:
            _freeze_and_promote(cluster, primary)
            other = SessionStore.from_url(cluster.url, config)
            _wait("an acknowledged save", lambda: _add_to_cart(other, s.token, [1, 2]))
            other.close()
            pending = pool.submit(late.load, s.token)  # waits at the frozen node
            time.sleep(QUEUED)
        finally:
            primary.resume()
        stale = pending.result(timeout=10)
    assert stale is not None
    # the attack needs the woken node's answer; it must not be refused for the wrong reason
    assert stale["cart"] == [1], "the read was not answered by the woken old primary"
    stale["cart"] = [*stale["cart"], 3]
    with pytest.raises(StoreUnavailable):  # slot moved (or the cluster not settled yet)
        late.save(stale)
    after = SessionStore.from_url(cluster.url, config)
    kept = _wait("a load on the settled cluster", lambda: _try_load(after, s.token))
    assert kept["cart"] == [1, 2]
    late.close()
    after.close()


async def test_the_async_store_refuses_it_too(cluster: ClusterSetup) -> None:
    config = _config("replicated")
    setup = SessionStore.from_url(cluster.url, config)
    s = setup.new()
    s["cart"] = [1]
    setup.save(s)
    late = AsyncSessionStore.from_url(cluster.url, config)
    assert await late.load(s.token) is not None
    primary = _primary_of(cluster, config, s.token)
    try:
        await asyncio.to_thread(_freeze_and_promote, cluster, primary)
        _wait("an acknowledged save", lambda: _add_to_cart(setup, s.token, [1, 2]))
        pending = asyncio.ensure_future(late.load(s.token))
        await asyncio.sleep(QUEUED)
    finally:
        primary.resume()
    stale = await asyncio.wait_for(pending, 10)
    assert stale is not None and stale["cart"] == [1]
    stale["cart"] = [1, 3]
    with pytest.raises(StoreUnavailable):  # slot moved (or the cluster not settled yet)
        await late.save(stale)
    kept = _wait("a load on the settled cluster", lambda: _try_load(setup, s.token))
    assert kept["cart"] == [1, 2]
    await late.aclose()
    setup.close()


@pytest.mark.parametrize("durability", ["replicated", "none"])
def test_a_save_across_a_planned_failover_is_kept(cluster: ClusterSetup, durability: str) -> None:
    """CLUSTER FAILOVER between a load and its save: the old primary handed over cleanly,
    so the new owner holds the session as loaded and the save goes there (no 503)."""
    config = _config(durability)
    store = SessionStore.from_url(cluster.url, config)
    s = store.new()
    s["cart"] = [1]
    store.save(s)
    loaded = store.load(s.token)
    assert loaded is not None
    primary = _primary_of(cluster, config, s.token)
    replica = _wait("a replica of the primary", lambda: _a_replica_of(cluster, primary))
    replica.client(timeout=2).execute_command("CLUSTER", "FAILOVER")
    _wait("the replica to take over", lambda: _role(replica)[0] == "master")
    cluster.primaries[cluster.primaries.index(primary)] = replica
    loaded["cart"] = [1, 2]
    result = store.save(loaded)
    assert result.outcome == "saved"
    loaded["cart"] = [1, 2, 4]  # a second save in the same request: checked against the first
    assert store.save(loaded).outcome == "saved"
    assert store.owner_of(_data_key(config, s.token)) == f"{replica.host}:{replica.port}"
    again = store.load(s.token)
    assert again is not None and again["cart"] == [1, 2, 4]
    store.close()


def _a_replica_of(cluster: ClusterSetup, primary: Node) -> Node | None:
    for node in cluster.nodes:
        try:
            role = _role(node)
        except Exception:
            continue
        if role[0] == "slave" and int(role[2]) == primary.port and role[3] == "connected":
            return node
    return None


def _data_key(config: SessionConfig, token: str) -> str:
    return KeyLayout(config.key_prefix).data(token_id(token).family)


def test_a_session_loaded_and_saved_on_a_stable_cluster_keeps_its_node(
    cluster: ClusterSetup,
) -> None:
    config = _config("none")
    store = SessionStore.from_url(cluster.url, config)
    s = store.new()
    s["n"] = 1
    store.save(s)
    assert s.loaded_from is None  # new: nothing was read
    loaded = store.load(s.token)
    assert loaded is not None
    owner = cluster.primary_for_key(KeyLayout(config.key_prefix).data(token_id(s.token).family))
    assert loaded.loaded_from == f"{owner.host}:{owner.port}"
    loaded["n"] = 2
    store.save(loaded)
    again = store.load(s.token)
    assert again is not None and again["n"] == 2
    store.close()


def _try_load(store: SessionStore, token: str) -> Any:
    try:
        return store.load(token)
    except StoreUnavailable:
        return None


def _add_to_cart(store: SessionStore, token: str, cart: list[int]) -> bool:
    """Load, set the cart, save: True once acknowledged (loads and saves during the
    failover may be refused: tried again)."""
    try:
        session = store.load(token)
        assert session is not None
        session["cart"] = cart
        store.save(session)
    except StoreUnavailable:
        return False
    return True
