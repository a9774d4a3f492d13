"""SessionStore: the blocking store. A thin executor of the plans in ``plan.py``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.cluster import RedisCluster
from redis.exceptions import ResponseError

from stickless.config import SessionConfig
from stickless.session import Session
from stickless.store import connect
from stickless.store.plan import (
    Batch,
    Command,
    Op,
    Pause,
    Planner,
    SaveResult,
    SessionInfo,
    is_moved,
    order_replies,
    pipeline_commands,
)

T = TypeVar("T")


def drive(op: Op[T], store: SessionStore) -> T:
    """Run a planned operation to completion with blocking I/O."""
    try:
        step = next(op)
        while True:
            if isinstance(step, Pause):
                time.sleep(step.seconds)
                step = op.send(None)
                continue
            try:
                replies = store.send(step)
            except Exception as exc:  # handed to the plan, which decides
                step = op.throw(exc)
            else:
                step = op.send(replies)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


class SessionStore:
    """Sessions in Redis / Valkey, for blocking code (WSGI, Flask, Django, scripts).

    ``SessionStore.from_url(url, config=SessionConfig())`` is the usual way in; see
    :mod:`stickless.store.connect` for the URL forms. Thread-safe: share one store per
    process. Every method may raise :class:`~stickless.errors.StoreUnavailable`.
    """

    def __init__(
        self,
        client: Any = None,
        config: SessionConfig | None = None,
        *,
        address: str | None = None,
        client_factory: Callable[[], Any] | None = None,
        endpoint: connect.Endpoint | None = None,
    ) -> None:
        """Wrap a ready redis-py ``client``, or pass ``client_factory``: a callable creating it on
        first use (``from_url`` does this, so building a store never touches the network)."""
        if (client is None) == (client_factory is None):
            raise TypeError("pass exactly one of client= or client_factory=")
        self.config = config or SessionConfig()
        self._client = client
        self._client_factory = client_factory
        self._endpoint = endpoint
        self._lock = threading.Lock()
        self._plan = Planner(self.config, address or repr(client))
        self._node_clients: dict[str, redis.Redis] = {}

    @classmethod
    def from_url(cls, url: str, config: SessionConfig | None = None) -> SessionStore:
        """A store on the server(s) named by ``url`` (no connection is made yet)."""
        config = config or SessionConfig()
        endpoint = connect.parse_url(url)
        return cls(
            config=config,
            address=endpoint.address,
            endpoint=endpoint,
            client_factory=lambda: connect.create_client(endpoint, config, redis),
        )

    # ----------------------------------------------------------------- public API
    def new(self) -> Session:
        """A new, empty session with a fresh token. Nothing is written until ``save``."""
        return self._plan.new()

    def load(self, token: object) -> Session | None:
        """The session of a client-presented token, or None when it is unknown, expired,
        destroyed, malformed or forged (the last two without contacting Redis).
        One round trip; refreshes the idle TTL at most once per ``touch_interval``."""
        return drive(self._plan.load(token), self)

    def save(self, session: Session) -> SaveResult:
        """Write the session's changes (one round trip; none when nothing changed).
        A loaded session that was destroyed or expired meanwhile is *not* brought back
        (outcome ``"gone"``). Raises SessionTooLarge, SessionConflict, ReplicationTimeout."""
        return drive(self._plan.save(session), self)

    def destroy(self, token: object) -> bool:
        """Destroy a session now, by client token or Session. True if it was live."""
        return drive(self._plan.destroy(token), self)

    def sessions_for(self, user_id: str) -> list[SessionInfo]:
        """The user's live sessions (devices), oldest first."""
        return drive(self._plan.sessions_for(user_id), self)

    def revoke_user(self, user_id: str, keep: object = None) -> int:
        """Log the user out everywhere, except ``keep`` (a Session or token); returns how
        many sessions were destroyed."""
        return drive(self._plan.revoke_user(user_id, keep), self)

    def close(self) -> None:
        """Release all connections."""
        for client in self._node_clients.values():
            client.close()
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> SessionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- executor
    @property
    def client(self) -> Any:
        """The redis-py client (created on first use)."""
        if self._client is None:
            with self._lock:
                if self._client is None and self._client_factory is not None:
                    self._client = self._client_factory()
        return self._client

    def send(self, batch: Batch) -> list[Any]:
        """Send one planned batch; replies in order, server errors as values."""
        if isinstance(self.client, RedisCluster):
            return self._send_cluster(batch)
        return self._pipeline(self.client, batch)

    @staticmethod
    def _pipeline(client: Any, batch: Batch) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for command in pipeline_commands(batch):
            pipe.execute_command(*command)
        return order_replies(batch, pipe.execute(raise_on_error=False))

    def _send_cluster(self, batch: Batch) -> list[Any]:
        if all(isinstance(call, Command) for call in batch.calls):
            return self._pipeline(self.client, batch)
        replies: list[Any] = []
        for i, call in enumerate(batch.calls):
            if i == 0 and batch.wait is not None:
                replies += self._on_owner(Batch((call,), batch.idempotent, batch.wait))
                continue
            try:
                replies.append(self.client.execute_command(*call.command()))
            except ResponseError as exc:
                replies.append(exc)
        if batch.wait is not None:
            replies.append(replies.pop(1))
        return replies

    def _on_owner(self, batch: Batch) -> list[Any]:
        """Script + WAIT on one connection of the node owning the key's slot."""
        for _ in range(2):
            node = self.client.get_node_from_key(batch.calls[0].routing_key)
            client = self._node_clients.get(node.name)
            if client is None:
                client = connect.node_client(
                    self._endpoint, self.config, redis, node.host, node.port
                )
                self._node_clients[node.name] = client
            replies = self._pipeline(client, batch)
            if not is_moved(replies[0]):
                return replies
            self.client.nodes_manager.initialize()
        return replies
