"""Cluster saves are pinned to the node owning the session's slot (``Batch`` in
``stickless.store.plan``), with no redirection followed by redis-py: what that must still
do on a real cluster. An ``ASK`` (a slot being migrated) is followed by the store; a script
a node has not cached is resent without losing the save's check; a store built on a ready
cluster client uses that client's settings for its nodes; an asyncio client whose slot map
is not loaded yet still saves."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

from stickless import AsyncSessionStore, SessionConfig, SessionStore
from stickless.embedded import ClusterSetup, Node, start_cluster
from stickless.session import Session
from stickless.store.keys import KeyLayout
from stickless.tokens import token_id


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterSetup]:
    with start_cluster(primaries=3, replicas_per_primary=0) as setup:
        yield setup


def _config(**options: object) -> SessionConfig:
    return SessionConfig(key_prefix=f"pn{uuid.uuid4().hex[:6]}", **options)  # type: ignore[arg-type]


def _node_of(cluster: ClusterSetup, key: str) -> Node:
    return cluster.primary_for_key(key)


def _data_key(config: SessionConfig, session: Session) -> str:
    return KeyLayout(config.key_prefix).data(token_id(session.token).family)


def _cmd(node: Node, *args: object) -> object:
    return node.client().execute_command(*args)  # type: ignore[no-untyped-call]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@pytest.mark.parametrize("durability", ["none", "replicated"])
def test_saves_and_pops_follow_a_slot_being_migrated(
    cluster: ClusterSetup, durability: str
) -> None:
    """The session's key moved to the importing node (MIGRATE) while its slot is still
    being migrated: the source answers ASK, and the store resends there after ASKING."""
    config = _config(durability=durability, min_replicas=0)
    store = SessionStore.from_url(cluster.url, config)
    s = store.new()
    s["x"] = 1
    s["flash"] = "hi"
    store.save(s)
    key = _data_key(config, s)
    source = _node_of(cluster, key)
    target = next(n for n in cluster.primaries if n is not source)
    slot = _cmd(source, "CLUSTER", "KEYSLOT", key)
    source_id, target_id = (_text(_cmd(n, "CLUSTER", "MYID")) for n in (source, target))
    _cmd(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    _cmd(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    try:
        _cmd(source, "MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", key)
        loaded = store.load(s.token)
        assert loaded is not None and loaded["x"] == 1
        assert store.pop_once(loaded, "flash") == "hi"
        loaded["x"] = 2
        assert store.save(loaded).outcome == "saved"
        assert _cmd(target, "CLUSTER", "COUNTKEYSINSLOT", slot) == 1  # written there
        assert _cmd(source, "CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    finally:
        for node in cluster.primaries:  # the slot ends on the target, known to everyone
            _cmd(node, "CLUSTER", "SETSLOT", slot, "NODE", target_id)
    again = store.load(s.token)
    assert again is not None and again["x"] == 2 and "flash" not in again
    store.close()


def test_a_login_whose_index_node_lost_its_scripts_is_saved(cluster: ClusterSetup) -> None:
    """The user index lives on another node than the session, and that node no longer has
    the index script (NOSCRIPT: restarted, promoted, flushed): only that call is resent, and
    the save's check (which concerns the session's key) does not refuse it."""
    config = _config()
    layout = KeyLayout(config.key_prefix)
    store = SessionStore.from_url(cluster.url, config)
    first = store.new()
    first["x"] = 1
    first.login("first")  # the index script goes by source once
    store.save(first)
    s = store.new()
    s["x"] = 1
    store.save(s)
    home = _node_of(cluster, _data_key(config, s))
    user = next(
        f"u{i}" for i in range(1000) if _node_of(cluster, layout.user_index(f"u{i}")) is not home
    )
    index_node = _node_of(cluster, layout.user_index(user))
    _cmd(index_node, "SCRIPT", "FLUSH")
    loaded = store.load(s.token)
    assert loaded is not None and loaded.loaded_from
    loaded.login(user)
    assert store.save(loaded).outcome == "saved"
    assert [info.session_id for info in store.sessions_for(user)] == [
        token_id(loaded.token).session_id
    ]
    after = store.load(loaded.token)
    assert after is not None and after.user_id == user
    store.close()


def test_an_async_client_without_a_slot_map_yet_saves(cluster: ClusterSetup) -> None:
    """Loaded in one event loop (or by the blocking store), saved in another, whose client
    has not loaded its slot map yet; ``stall_limit=0`` (the stall guard loads it too)."""
    config = _config(stall_limit=0.0)
    sync_store = SessionStore.from_url(cluster.url, config)
    s = sync_store.new()
    s["n"] = 1
    sync_store.save(s)
    store = AsyncSessionStore.from_url(cluster.url, config)
    loaded = asyncio.run(store.load(s.token))
    assert loaded is not None
    loaded["n"] = 2
    assert asyncio.run(store.save(loaded)).outcome == "saved"  # another loop: a new client
    by_sync = sync_store.load(s.token)
    assert by_sync is not None
    by_sync["n"] = 3
    fresh = AsyncSessionStore.from_url(cluster.url, config)
    assert asyncio.run(fresh.save(by_sync)).outcome == "saved"
    final = sync_store.load(s.token)
    assert final is not None and final["n"] == 3
    sync_store.close()


def test_saves_on_a_ready_cluster_client_go_to_the_owner_with_its_settings(
    cluster: ClusterSetup,
) -> None:
    """A store built on the user's own cluster client (no URL) pins its saves to the owner
    node with the connection settings that client gave its nodes."""
    nodes = [ClusterNode(n.host, n.port) for n in cluster.primaries]  # type: ignore[no-untyped-call]
    client = RedisCluster(startup_nodes=nodes, socket_timeout=5, retry=Retry(NoBackoff(), 0))
    store = SessionStore(client, SessionConfig(key_prefix=f"rc{uuid.uuid4().hex[:6]}"))
    s = store.new()
    s["n"] = 1
    store.save(s)
    loaded = store.load(s.token)
    assert loaded is not None and loaded.loaded_from
    loaded["n"] = 2
    store.save(loaded)
    pinned = store._node_clients[loaded.loaded_from]
    assert pinned.connection_pool.connection_kwargs["socket_timeout"] == 5
    again = store.load(s.token)
    assert again is not None and again["n"] == 2
    client.close()


async def test_async_saves_on_a_ready_cluster_client_go_to_the_owner(
    cluster: ClusterSetup,
) -> None:
    nodes = [AsyncClusterNode(n.host, n.port) for n in cluster.primaries]
    client = AsyncRedisCluster(
        startup_nodes=nodes, socket_timeout=5, retry=AsyncRetry(NoBackoff(), 0)
    )
    store = AsyncSessionStore(client, SessionConfig(key_prefix=f"rc{uuid.uuid4().hex[:6]}"))
    s = store.new()
    s["n"] = 1
    await store.save(s)
    loaded = await store.load(s.token)
    assert loaded is not None and loaded.loaded_from
    loaded["n"] = 2
    await store.save(loaded)
    again = await store.load(s.token)
    assert again is not None and again["n"] == 2
    await store.aclose()
