"""What the sync and async stores share and that does no I/O: construction, the lazily
created client, the planner, routing a save to the cluster node owning its slot, and the
executors' verdicts on failures (in :mod:`stickless.store.failures`) and on the followed
Sentinel primary (in :mod:`stickless.store.sentinel`)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any, ClassVar, Self

import hiredis
from redis import exceptions as redis_errors

from stickless.config import SessionConfig
from stickless.errors import ServerError
from stickless.session import Session
from stickless.store import connect
from stickless.store.check import ensure_no_retries
from stickless.store.failures import (
    SlotMoved,
    Unavailable,
    classify_error,
    error_code,
    screen_replies,
)
from stickless.store.plan import Batch, Planner
from stickless.store.sentinel import Follower
from stickless.store.stalls import InFlight, StallGuard

REFRESH_GAP = 0.05
"""Least seconds between two reloads of a cluster's slot map asked for by failing requests
(lowered to ``SessionConfig.retry_backoff`` if that is shorter, so that a load's last retry
always runs on a map loaded after its first attempt failed; never below
:data:`MIN_REFRESH_GAP`)."""

MIN_REFRESH_GAP = 0.01
"""The gap with ``retry_backoff=0``: a dead node answers at once, and each reload costs a
round of ``CLUSTER SLOTS`` (or a connect timeout on a frozen node)."""

UNAVAILABLE_TYPES: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,  # also LOADING (BusyLoadingError), auth, pool exhausted
    redis_errors.TimeoutError,
    OSError,  # socket errors (and the builtin TimeoutError of asyncio)
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
    redis_errors.ClusterError,  # "TTL exhausted": redirected or TRYAGAIN past its retries
    redis_errors.RedisClusterException,  # the cluster client found no node to answer
    redis_errors.ChildDeadlockedError,
)
"""redis-py's exception types meaning "not available right now" (error replies are
judged by their code, see :func:`stickless.store.failures.classify_error`)."""

TIMEOUT_TYPES: tuple[type[BaseException], ...] = (redis_errors.TimeoutError, TimeoutError)
"""A node that did not answer in time (the builtin one: asyncio's, and ``socket.timeout``)."""


class StoreBase:
    """Base of :class:`~stickless.SessionStore` and :class:`~stickless.AsyncSessionStore`."""

    _flavour: ClassVar[ModuleType]
    """``redis`` or ``redis.asyncio``: the client classes this store uses."""

    def __init__(
        self,
        client: Any = None,
        config: SessionConfig | None = None,
        *,
        address: str | None = None,
        client_factory: Callable[[], Any] | None = None,
        endpoint: connect.Endpoint | None = None,
        follower: Follower | None = None,
    ) -> None:
        """Wrap a ready redis-py ``client`` (of this store's flavour: sync or asyncio), or
        pass ``client_factory``, a callable creating it on first use (``from_url`` does
        this, so building a store never touches the network). ``follower``: what follows
        the Sentinel primary of the factory's clients (``from_url`` makes it)."""
        if (client is None) == (client_factory is None):
            raise TypeError("pass exactly one of client= or client_factory=")
        if client is not None:
            ensure_no_retries(client)  # a resent save would apply twice
        self.config = config or SessionConfig()
        self._client = client
        self._client_factory = client_factory
        self._endpoint = endpoint
        self._lock = threading.Lock()
        cluster = (
            endpoint.kind == "cluster"
            if endpoint is not None
            else isinstance(client, self._flavour.cluster.RedisCluster)
        )
        self._cluster = cluster
        self._plan = Planner(
            self.config,
            address or repr(client),
            probe_scripts=not cluster,
            locate=cluster,
            hsetex=False if cluster else None,
        )
        self._node_clients: dict[str, Any] = {}
        gap = max(MIN_REFRESH_GAP, min(REFRESH_GAP, self.config.retry_backoff))
        self._reloads = SlotMapReloads(gap)
        self._follower = follower
        limit = self.config.stall_limit
        horizon = self.config.socket_timeout + limit
        self._stalls = StallGuard(limit, horizon) if cluster and limit else None

    @classmethod
    def from_url(cls, url: str, config: SessionConfig | None = None) -> Self:
        """A store on the server(s) named by ``url`` (no connection is made yet).
        Raises :class:`~stickless.errors.ConfigurationError` for a bad URL."""
        config = config or SessionConfig()
        endpoint = connect.parse_url(url)
        flavour = cls._flavour
        follower = connect.follower_for(endpoint, config)
        return cls(
            config=config,
            address=endpoint.address,
            endpoint=endpoint,
            client_factory=lambda: connect.create_client(endpoint, config, flavour, follower),
            follower=follower,
        )

    def new(self) -> Session:
        """A new, empty session with a fresh token. Nothing is written until ``save``."""
        return self._plan.new()

    @property
    def plan(self) -> Planner:
        """The planner of this store's operations (no I/O). An adapter that composes
        several store operations into one of its own (the Django engine) yields from these
        plans and runs the whole with this store's ``drive``."""
        return self._plan

    @property
    def client(self) -> Any:
        """The redis-py client (created on first use)."""
        if self._client is None:
            with self._lock:
                if self._client is None and self._client_factory is not None:
                    self._client = self._client_factory()
        return self._client

    @property
    def is_cluster(self) -> bool:
        """Whether the store talks to a Valkey / Redis Cluster (known from the URL or the
        client given: an ``isinstance`` of redis-py's cluster class costs 0.5 µs, a
        protocol check, and every batch asks)."""
        return self._cluster

    def owner_of(self, key: str) -> str | None:
        """The cluster node (``host:port``) owning ``key``'s slot by the client's slot map
        (no I/O; a planner's :class:`~stickless.store.plan.Locate`): None outside a
        cluster, or before the map is loaded."""
        if not self.is_cluster:
            return None
        try:
            return str(self.client.get_node_from_key(key).name)
        except Exception:  # no map yet (the asyncio client loads it on first use)
            return None

    def _pinned_client(self, batch: Batch) -> Any:
        """A plain client for the node a pinned batch goes to (no I/O): the node its origin
        check passed for (the slot map read once: a reload in another thread between check
        and send cannot redirect it), else the owner of its first key's slot. Used to
        pipeline a save with its WAIT on one connection."""
        origin = batch.origin
        node = self.client.get_node(node_name=origin.node) if origin and origin.node else None
        if node is None:
            node = self.client.get_node_from_key(batch.calls[0].routing_key)
        return self._client_for(node)

    def _ask_target(self, reply: object) -> Any:
        """For an ``ASK`` reply (the key moved on with a slot being migrated): a plain
        client for the node it names, to resend there after ``ASKING``; else None."""
        if not isinstance(reply, redis_errors.AskError) or isinstance(
            reply,
            redis_errors.MovedError,  # a subclass: the slot moved for good
        ):
            return None
        node = self.client.get_node(host=reply.host, port=reply.port)
        return None if node is None else self._client_for(node)

    def _client_for(self, node: Any) -> Any:
        """The plain client kept for cluster node ``node`` (redis-py's ``ClusterNode``)."""
        cache = self._node_cache()
        client = cache.get(node.name)
        if client is None:
            if self._endpoint is None:  # a ready client: its own settings for its nodes
                client = connect.node_client_like(node, self._flavour)
            else:
                client = connect.node_client(
                    self._endpoint, self.config, self._flavour, node.host, node.port
                )
            cache[node.name] = client
        return client

    def _reload_due(self, sent: float | None) -> bool:
        """Whether a ``Refresh`` about a batch sent at ``sent`` (default now) must reload the
        slot map (a cluster only; see :class:`SlotMapReloads`)."""
        if not self.is_cluster:
            return False
        return self._slot_map_reloads().due(time.monotonic() if sent is None else sent)

    def _slot_map_reloads(self) -> SlotMapReloads:
        """When the slot map of :attr:`client` was last reloaded (the async store keeps one
        per loop, as it keeps one client per loop)."""
        return self._reloads

    def _stale_node_clients(self) -> list[Any]:
        """Forget the clients pinned to nodes that are no primary in the slot map just
        loaded (a dead or demoted node), and return them: the caller closes their idle
        connections only, as other threads or tasks may still be using the others (those
        close once released and dropped). Clients of live primaries stay: a reload asked
        for by one dead node must not cut the saves running on the healthy ones."""
        primaries = {node.name for node in self.client.get_primaries()}
        cache = self._node_cache()
        stale = [cache.pop(name, None) for name in list(cache) if name not in primaries]
        return [client for client in stale if client is not None]

    def _node_cache(self) -> dict[str, Any]:
        """Where per-node clients are kept (the async store keeps one cache per loop)."""
        return self._node_clients

    # ------------------------------------------------- executors' verdicts (no I/O)
    def _admit(self, batch: Batch) -> int | InFlight | None:
        """Before sending ``batch``: raises ``Unavailable`` for a write while the Sentinel
        primary is being moved. The ticket :meth:`_check` judges the answer by: the Sentinel
        primary's generation, or (in a cluster) the batch in flight, for the stall guard."""
        if self._follower is not None:
            return self._follower.admit(batch)
        if batch.origin is not None:
            self._ensure_owner(batch, batch.origin.node)
        if self._stalls is None:
            return None
        nodes: dict[str, None] = {}
        for call in batch.calls:
            with contextlib.suppress(Exception):  # no slot yet: redis-py finds it on sending
                nodes[self.client.get_node_from_key(call.routing_key).name] = None
        waits = batch.wait[1] / 1000 if batch.wait is not None else 0.0
        return self._stalls.sent(tuple(nodes), waits) if nodes else None

    def _ensure_owner(self, batch: Batch, loaded_from: str) -> None:
        """Raises ``Unavailable`` (nothing sent) when the first call's key is no longer owned
        by the node the session was loaded from (see :class:`~stickless.store.plan.Locate`)."""
        now = self.owner_of(batch.calls[0].routing_key)
        if now is not None and now == loaded_from:
            return
        raise SlotMoved(
            None,
            f"the session's cluster slot moved to node {now or '(unknown)'} since it was "
            f"loaded from {loaded_from or 'a node that changed during the read'}: the load "
            "may have been answered by a primary that had been replaced, and the new "
            "owner does not hold the session as loaded, so this save could overwrite "
            "newer values; nothing was written",
            applied=False,
        )

    def _check(self, batch: Batch, replies: list[Any], ticket: int | InFlight | None) -> list[Any]:
        """``replies`` when they mean the batch was served; raises ``Unavailable`` when one
        says "not available right now", when a save straddled a primary switch, or when a
        cluster node that answered is suspect of a stall (:mod:`stickless.store.stalls`)."""
        if isinstance(ticket, InFlight):
            assert self._stalls is not None
            self._stalls.settle(ticket, writes=not batch.idempotent)
        screen_replies(replies, batch.idempotent)
        if isinstance(ticket, int) and self._follower is not None:
            self._follower.settle(ticket, batch)
        checked: list[Any] = []
        for i, reply in enumerate(replies):
            if not isinstance(reply, Exception):
                checked.append(reply)
                continue
            # a pipeline can hand back a connection error as a reply (a cluster node died
            # under it): an outage, judged as the batch's own error would be
            verdict = self._verdict(reply)
            if isinstance(verdict, Unavailable) and (batch.idempotent or i == 0):
                raise verdict
            checked.append(_as_server_error(reply))
        return checked

    def _abandoned(self, ticket: int | InFlight | None) -> None:
        """The send of a batch was interrupted (a cancelled task, ``KeyboardInterrupt``):
        the stall guard stops waiting for it."""
        if isinstance(ticket, InFlight) and self._stalls is not None:
            self._stalls.forget(ticket)

    def _verdict(self, error: BaseException, ticket: int | InFlight | None = None) -> BaseException:
        """``error`` (raised while sending a batch) as the planner must see it: an
        ``Unavailable`` when the store cannot serve right now, else ``error`` itself. Any
        error makes a Sentinel store re-check the primary; a cluster node that timed out, or
        took over ``stall_limit`` to fail, is suspect as if it had answered that late."""
        if isinstance(ticket, InFlight) and self._stalls is not None:
            self._stalls.ended(ticket, timed_out=isinstance(error, TIMEOUT_TYPES))
        verdict = classify_error(error, UNAVAILABLE_TYPES)
        if self._follower is not None:
            self._follower.failed(verdict)
        return verdict


class SlotMapReloads:
    """Whether a failed or redirected cluster batch needs the slot map reloaded; thread-safe.

    A batch sent at ``sent`` ran on the map of the last reload that *began* before it. If a
    reload began after it, that map is newer than the one that failed: no need for another
    (all the requests failing at once during a failover share one reload). Otherwise it is
    reloaded, at most once per ``gap`` seconds. A throttle by time alone would not do: a
    process that reloaded a moment before the promotion, while the dead primary was still
    listed, would fail every request until the throttle let it reload again, however
    long ago the cluster settled.
    """

    def __init__(self, gap: float) -> None:
        self.gap = gap
        self._began = -gap
        self._lock = threading.Lock()

    def due(self, sent: float) -> bool:
        """True (and the reload counts as begun now) if the map must be reloaded for a batch
        sent at ``sent`` (``time.monotonic()``)."""
        now = time.monotonic()
        with self._lock:
            if self._began > sent or now - self._began < self.gap:
                return False
            self._began = now
            return True


def packed(commands: list[tuple[str | bytes | int, ...]]) -> bytes:
    """``commands`` in the wire format, as one buffer, by hiredis's C packer (the same bytes
    redis-py writes; redis.asyncio packs in Python, at 37 µs for a save's script call)."""
    pack: Callable[[tuple[str | bytes | int, ...]], bytes] = hiredis.pack_command  # type: ignore[assignment]
    return b"".join(map(pack, commands))


def _as_server_error(reply: Exception) -> ServerError:
    """An error reply as the planner sees it (it knows no redis-py types)."""
    return (
        reply
        if isinstance(reply, ServerError)
        else ServerError(error_code(reply) or "ERR", str(reply))
    )
