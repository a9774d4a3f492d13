"""Session lifecycle events from Redis keyspace notifications (best effort).

::

    from stickless.ops.events import EventSubscriber

    with EventSubscriber("redis://127.0.0.1:6379/0") as events:
        for event in events.listen(timeout=60):
            print(event.kind, event.session_id, event.at)

Kinds, from the notifications Valkey / Redis publish about the session hashes
(``<prefix>:s:*``):

``created``
    ``new``: the session hash appeared (first save of a new session).
``renewed``
    ``expire`` on the session's forward key (``<prefix>:f:*``, set by every renew): the
    token was renewed (login, or an identity change). The session id stays the same.
``destroyed``
    ``del``: destroyed by logout, ``store.destroy``, ``revoke_user`` or ``stickless sessions rm``.
``expired``
    ``expired``: Redis dropped it at the end of its TTL (idle or absolute timeout).

**Best effort, by design.** Pub/Sub keeps nothing: events published while the subscriber is
disconnected are lost; a cluster publishes each key's events on the node that owns it only
(the subscriber keeps one connection per primary and follows failovers, with a gap); many
managed services refuse ``CONFIG SET`` (the events must then be enabled in the provider's
settings). The source of truth stays the store: ``stickless sessions ls`` (SCAN) and the
per-user index, which is pruned lazily.

Notifications are enabled on each node the subscriber connects to, by adding the flags
``K`` (keyspace channels), ``g`` (del, expire), ``x`` (expired) and ``n`` (new keys) to
whatever ``notify-keyspace-events`` already holds; they are left on when the subscriber
closes (other subscribers may rely on them; the cost of publishing with no subscriber is
small). Pass ``enable=False`` to leave the server configuration alone.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Self

import redis

from stickless.config import SessionConfig
from stickless.errors import StoreUnavailable
from stickless.ops._nodes import FAILURES, text
from stickless.store import connect, keys
from stickless.store.keys import KeyLayout

__all__ = [
    "REQUIRED_FLAGS",
    "EventKind",
    "EventSubscriber",
    "NodeStatus",
    "SessionEvent",
    "merge_flags",
]

log = logging.getLogger("stickless.events")

EventKind = Literal["created", "renewed", "destroyed", "expired"]

REQUIRED_FLAGS = "Kgxn"
"""``notify-keyspace-events`` flags the subscriber needs: keyspace channels, generic
commands (del, expire), expired, new keys."""

_ALL_ALIAS = "g$lshzxetd"
"""What the ``A`` flag stands for (it does not include ``n``, ``m`` or ``K``/``E``)."""
_RECONNECT_DELAY = 0.5
_REFRESH_INTERVAL = 2.0


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """Something happened to a session. Carries no token and no value."""

    kind: EventKind
    session_id: str
    """The session's id (its token family; the same across renewals)."""
    at: datetime
    """When the subscriber received the notification (UTC; Redis does not timestamp them)."""
    node: str = ""
    """The primary that published it (``host:port``)."""


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """How notifications were set up on one node."""

    node: str
    flags: str
    """``notify-keyspace-events`` after set-up (as read from the server, or as found)."""
    enabled: bool | None
    """True when the node publishes everything the subscriber needs, False when it does
    not, None when it could not be told (``CONFIG GET`` refused, as on many managed
    services: the events may well be enabled in the provider's settings)."""
    error: str | None = None
    """Why the flags could not be read or set (e.g. CONFIG disabled on a managed service)."""


def merge_flags(current: str, required: str = REQUIRED_FLAGS) -> str:
    """``current`` plus whatever of ``required`` it lacks (``A`` counts as its letters)."""
    have = set(current.replace("A", _ALL_ALIAS))
    return current + "".join(flag for flag in required if flag not in have)


def _missing(flags: str) -> str:
    have = set(flags.replace("A", _ALL_ALIAS))
    return "".join(flag for flag in REQUIRED_FLAGS if flag not in have)


class _Translator:
    """Turns one node's keyspace notifications into session events (see module doc)."""

    def __init__(self, layout: KeyLayout, node: str, emit: Callable[[SessionEvent], None]):
        self.layout = layout
        self.node = node
        self.emit = emit

    def feed(self, key: str, event: str) -> None:
        family = self.layout.family_of(key)
        if family is not None:
            kind = _SESSION_EVENTS.get(event)
        else:
            family = self.layout.family_of(key, keys.FORWARD)
            kind = "renewed" if event == "expire" else None  # SET ... PX of the forward
        if family is not None and kind is not None:
            self.emit(SessionEvent(kind, family, datetime.now(UTC), self.node))


_SESSION_EVENTS: dict[str, EventKind] = {"new": "created", "del": "destroyed", "expired": "expired"}
"""Notifications about a session hash, and the event each one is."""


class _NodeListener:
    """One pub/sub connection (one primary), pumped by its own thread."""

    def __init__(
        self,
        owner: EventSubscriber,
        name: str,
        factory: Callable[[], Any],
    ) -> None:
        self.owner = owner
        self.name = name
        self.factory = factory
        self.client: Any = None
        self.pubsub: Any = None
        self.status: NodeStatus | None = None
        self.failed = False
        self.stopped = threading.Event()
        self.translator = _Translator(owner.layout, name, owner._queue.put)
        self.thread = threading.Thread(
            target=self._run, name=f"stickless-events {name}", daemon=True
        )

    def connect(self) -> None:
        """Enable notifications (if allowed), PSUBSCRIBE, and wait for the confirmation."""
        self.disconnect()
        client = self.factory()
        self.client = client
        self.status = self.owner._enable(client, self.name)
        pubsub = client.pubsub()
        pubsub.psubscribe(self.owner.channel_pattern)
        deadline = time.monotonic() + max(1.0, self.owner.config.socket_timeout)
        while True:
            message = pubsub.get_message(timeout=0.1)
            if message is not None and message.get("type") == "psubscribe":
                break
            if time.monotonic() > deadline:
                pubsub.close()
                raise redis.TimeoutError("no PSUBSCRIBE confirmation")
        self.pubsub = pubsub
        self.failed = False

    def disconnect(self) -> None:
        pubsub, client = self.pubsub, self.client
        self.pubsub = self.client = None
        with contextlib.suppress(Exception):
            if pubsub is not None:
                pubsub.close()
        with contextlib.suppress(Exception):
            if client is not None:
                client.close()

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                if self.pubsub is None:
                    self.connect()
                    log.info("events: resubscribed on %s", self.name)
                message = self.pubsub.get_message(timeout=0.25)
            except FAILURES as exc:
                if self.stopped.is_set():
                    break
                if not self.failed:
                    log.warning(
                        "events: lost connection to %s (%s: %s); events are lost until it "
                        "reconnects",
                        self.name,
                        type(exc).__name__,
                        exc,
                    )
                self.failed = True
                self.disconnect()
                self.stopped.wait(_RECONNECT_DELAY)
                continue
            if message is None or message.get("type") != "pmessage":
                continue
            channel = text(message["channel"])
            key = channel.split("__:", 1)[1] if "__:" in channel else channel
            self.translator.feed(key, text(message["data"]))
        self.disconnect()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()

    def join(self, timeout: float = 2.0) -> None:
        if self.thread.is_alive():
            self.thread.join(timeout)


class EventSubscriber:
    """Subscribes to the session events of every primary behind ``url``.

    ``start()`` (or ``with``, or the first ``listen``/``get``) connects to each primary,
    enables the notifications (``enable=True``, see :data:`REQUIRED_FLAGS`) and returns once
    every subscription is confirmed: from then on every event is seen (while connected).
    One thread per primary reads the notifications; on a cluster the primaries are looked
    up again every couple of seconds after a connection failed (failover). Raises
    :class:`StoreUnavailable` when a node cannot be reached at start.
    """

    def __init__(
        self,
        url: str,
        config: SessionConfig | None = None,
        *,
        enable: bool = True,
    ) -> None:
        self.url = url
        self.config = config or SessionConfig()
        self.enable = enable
        self.endpoint = connect.parse_url(url)
        self.layout = KeyLayout(self.config.key_prefix)
        db = 0 if self.endpoint.kind == "cluster" else self.endpoint.db
        # the session hashes and their forwards: <prefix>:s:* and <prefix>:f:*
        self.channel_pattern = f"__keyspace@{db}__:" + self.layout.pattern(
            keys.SESSION, keys.FORWARD
        )
        self._queue: queue.Queue[SessionEvent] = queue.Queue()
        self._listeners: dict[str, _NodeListener] = {}
        self._cluster: Any = None
        self._supervisor: threading.Thread | None = None
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._started = False

    # ------------------------------------------------------------------ set-up
    def _enable(self, client: Any, name: str) -> NodeStatus:
        try:
            reply = client.config_get("notify-keyspace-events")
            current = text(next(iter(reply.values()), "")) if reply else ""
        except redis.ResponseError as exc:
            log.warning(
                "events: cannot read notify-keyspace-events on %s (%s); make sure %r are "
                "enabled in the server or provider settings",
                name,
                exc,
                REQUIRED_FLAGS,
            )
            return NodeStatus(name, "?", None, f"CONFIG GET refused: {exc}")
        if not _missing(current):
            return NodeStatus(name, current, True)
        if not self.enable:
            return NodeStatus(
                name, current, False, f"flags {_missing(current)!r} missing (enable=False)"
            )
        wanted = merge_flags(current)
        try:
            client.config_set("notify-keyspace-events", wanted)
            reply = client.config_get("notify-keyspace-events")
            now = text(next(iter(reply.values()), "")) if reply else wanted
        except redis.ResponseError as exc:
            log.warning(
                "events: CONFIG SET notify-keyspace-events %s refused on %s: %s (enable "
                "keyspace notifications %r in the server or provider settings)",
                wanted,
                name,
                exc,
                REQUIRED_FLAGS,
            )
            return NodeStatus(name, current, False, f"CONFIG SET refused: {exc}")
        return NodeStatus(name, now, not _missing(now))

    def _targets(self) -> dict[str, Callable[[], Any]]:
        """Name -> client factory, one per primary to subscribe on."""
        endpoint, config = self.endpoint, self.config
        if endpoint.kind != "cluster":
            return {endpoint.address: lambda: connect.create_client(endpoint, config, redis)}
        if self._cluster is None:
            self._cluster = connect.create_client(endpoint, config, redis)
        else:
            self._cluster.nodes_manager.initialize()
        cluster: Any = self._cluster
        return {
            node.name: functools.partial(
                connect.node_client, endpoint, config, redis, node.host, node.port
            )
            for node in cluster.get_primaries()
        }

    def _add(self, name: str, factory: Callable[[], Any]) -> _NodeListener:
        listener = _NodeListener(self, name, factory)
        listener.connect()
        listener.start()
        self._listeners[name] = listener
        return listener

    def start(self) -> Self:
        """Connect and subscribe everywhere (idempotent); see the class doc."""
        with self._lock:
            if self._started:
                return self
            try:
                for name, factory in self._targets().items():
                    self._add(name, factory)
            except FAILURES as exc:
                self._stop_all()
                raise StoreUnavailable(self.endpoint.address, exc) from exc
            self._started = True
            if self.endpoint.kind == "cluster":
                self._supervisor = threading.Thread(
                    target=self._supervise, name="stickless-events supervisor", daemon=True
                )
                self._supervisor.start()
        return self

    def _supervise(self) -> None:
        """Cluster: after a connection failure, follow the new set of primaries."""
        while not self._closed.wait(_REFRESH_INTERVAL):
            with self._lock:
                if not any(listener.failed for listener in self._listeners.values()):
                    continue
                try:
                    targets = self._targets()
                except FAILURES as exc:
                    log.warning("events: cluster topology refresh failed: %s", exc)
                    continue
                for name in list(self._listeners):
                    if name not in targets:
                        self._listeners.pop(name).stop()
                for name, factory in targets.items():
                    if name not in self._listeners:
                        try:
                            self._add(name, factory)
                        except FAILURES as exc:
                            log.warning("events: cannot subscribe on %s: %s", name, exc)

    @property
    def nodes(self) -> list[NodeStatus]:
        """The notification set-up of each node subscribed to (after ``start``)."""
        with self._lock:
            return [lst.status for lst in self._listeners.values() if lst.status is not None]

    # ---------------------------------------------------------------- reading
    def get(self, timeout: float | None = None) -> SessionEvent | None:
        """The next event, waiting up to ``timeout`` seconds (None: forever); None if none
        came."""
        self.start()
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def listen(
        self, timeout: float | None = None, *, count: int | None = None
    ) -> Iterator[SessionEvent]:
        """Events as they come, for at most ``timeout`` seconds in all (None: until
        :meth:`close`) and at most ``count`` events (None: no limit)."""
        self.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = 0
        while not self._closed.is_set() and (count is None or seen < count):
            if deadline is None:
                wait = 0.5
            else:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    return
                wait = min(wait, 0.5)
            try:
                event = self._queue.get(timeout=wait)
            except queue.Empty:
                continue
            seen += 1
            yield event

    def __iter__(self) -> Iterator[SessionEvent]:
        return self.listen()

    # ----------------------------------------------------------------- closing
    def _stop_all(self) -> None:
        listeners = list(self._listeners.values())
        self._listeners.clear()
        for listener in listeners:
            listener.stop()
        for listener in listeners:
            listener.join()
            listener.disconnect()

    def close(self) -> None:
        """Unsubscribe everywhere and stop the threads (idempotent)."""
        self._closed.set()
        with self._lock:
            self._stop_all()
            if self._cluster is not None:
                with contextlib.suppress(Exception):
                    self._cluster.close()
                self._cluster = None
        if self._supervisor is not None:
            self._supervisor.join(timeout=_REFRESH_INTERVAL + 1)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
