"""Where the data lives: the data nodes of a store, whatever its topology (internal).

The session store talks to "the server" through one redis-py client; the operations tools
need more: a SCAN must run on *every* primary of a cluster, a key's details are read on
the node owning its slot. Everything here is read-only plumbing over the store's client.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError
from redis.sentinel import SentinelConnectionPool

from stickless.errors import StoreUnavailable
from stickless.store.sync import SessionStore

T = TypeVar("T")


UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    OSError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.RedisClusterException,
)
"""The errors meaning "the server could not be reached" (mapped to StoreUnavailable)."""

FAILURES = (redis.RedisError, OSError)
"""Any failure talking to a server (unreachable, or an error reply raised by redis-py)."""


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class DataNode:
    """A primary holding (part of) the sessions, with a client bound to it."""

    address: str
    client: Any


def is_cluster(client: object) -> bool:
    return isinstance(client, RedisCluster)


def topology_of(store: SessionStore) -> str:
    """``"standalone"``, ``"sentinel"`` or ``"cluster"``, from the store's client."""
    client = store.client
    if isinstance(client, RedisCluster):
        return "cluster"
    if isinstance(getattr(client, "connection_pool", None), SentinelConnectionPool):
        return "sentinel"
    return "standalone"


def _is_sentinel_pool(pool: object) -> bool:
    return isinstance(pool, SentinelConnectionPool)


def _address_of(client: Any) -> str:
    pool: Any = client.connection_pool
    if _is_sentinel_pool(pool):
        host, port = pool.get_master_address()
        return f"{host}:{port}"
    kwargs = pool.connection_kwargs
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"


def guarded(store: SessionStore, action: Callable[[], T]) -> T:
    """Run ``action``, turning connection failures into :class:`StoreUnavailable`."""
    try:
        return action()
    except StoreUnavailable:
        raise
    except UNAVAILABLE as exc:
        planner = getattr(store, "_plan", None)  # the store's own address text, if it has one
        address = getattr(planner, "address", None) or type(store).__name__
        raise StoreUnavailable(str(address), exc) from exc


def data_nodes(store: SessionStore) -> list[DataNode]:
    """Every primary of the store: one for standalone and sentinel, all of a cluster's."""

    def find() -> list[DataNode]:
        client: Any = store.client
        if is_cluster(client):
            primaries = sorted(client.get_primaries(), key=lambda n: (n.host, n.port))
            return [DataNode(n.name, client.get_redis_connection(n)) for n in primaries]
        return [DataNode(_address_of(client), client)]

    return guarded(store, find)


def node_for_key(store: SessionStore, key: str) -> DataNode:
    """The primary owning ``key`` (its slot's primary on a cluster)."""

    def find() -> DataNode:
        client: Any = store.client
        if is_cluster(client):
            node = client.get_node_from_key(key)
            return DataNode(node.name, client.get_redis_connection(node))
        return DataNode(_address_of(client), client)

    return guarded(store, find)


def scan_keys(client: Any, pattern: str, count: int = 1000) -> Iterator[str]:
    """SCAN one node for ``pattern`` (keys as text; may repeat a key, as SCAN may)."""
    cursor: int | bytes | str = 0
    while True:
        cursor, batch = client.scan(cursor=cursor, match=pattern, count=count)
        for key in batch:
            yield text(key)
        if int(cursor) == 0:
            return


def pipeline(client: Any, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Send ``commands`` in one pipeline (no transaction); server errors as values."""
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return list(pipe.execute(raise_on_error=False))


@dataclass(frozen=True, slots=True)
class ReadScript:
    """A read-only Lua script of the ops tools, sent by SHA and by source after NOSCRIPT."""

    source: str
    sha: str

    @classmethod
    def of(cls, source: str) -> ReadScript:
        return cls(source, hashlib.sha1(source.encode()).hexdigest())  # noqa: S324

    def calls(self, keys: Sequence[str]) -> list[tuple[Any, ...]]:
        return [("EVALSHA", self.sha, 1, key) for key in keys]

    def run(self, client: Any, keys: Sequence[str]) -> list[Any]:
        """Run the script on each key (one pipeline; a second one for the scripts the
        server did not know). Replies in order, server errors as values."""
        replies = pipeline(client, self.calls(keys))
        missing = [i for i, r in enumerate(replies) if _noscript(r)]
        if missing:
            again = pipeline(client, [("EVAL", self.source, 1, keys[i]) for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies


def _noscript(reply: object) -> bool:
    return isinstance(reply, NoScriptError) or (
        isinstance(reply, ResponseError) and str(reply).startswith("NOSCRIPT")
    )


def raise_if_error(reply: object) -> None:
    if isinstance(reply, Exception):
        raise reply
