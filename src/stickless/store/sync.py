"""SessionStore: the blocking store. A thin executor of the plans in ``plan.py``."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from types import ModuleType
from typing import Any, ClassVar, TypeVar

import redis
from redis.exceptions import ResponseError

from stickless.session import Session
from stickless.store import check as checks
from stickless.store.base import StoreBase, packed
from stickless.store.plan import (
    Batch,
    Command,
    Locate,
    Op,
    Pause,
    Refresh,
    SaveResult,
    SessionInfo,
    order_replies,
    pipeline_commands,
)
from stickless.store.stalls import InFlight
from stickless.tokens import parse_session_id

T = TypeVar("T")
log = logging.getLogger("stickless.store")


def drive(op: Op[T], store: SessionStore) -> T:
    """Run a planned operation to completion with blocking I/O."""
    try:
        step = next(op)
        sent = time.monotonic()
        while True:
            if isinstance(step, Pause):
                time.sleep(step.seconds)
                step = op.send(None)
                continue
            if isinstance(step, Refresh):  # about the batch sent last
                store.refresh(sent)
                step = op.send(None)
                continue
            if isinstance(step, Locate):
                step = op.send(store.owner_of(step.key))
                continue
            try:
                sent = time.monotonic()
                replies = store.send(step)
            except Exception as exc:  # handed to the plan, which decides
                step = op.throw(exc)
            else:
                step = op.send(replies)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


class SessionStore(StoreBase):
    """Sessions in Redis / Valkey, for blocking code (WSGI, Flask, Django, scripts).

    ``SessionStore.from_url(url, config=SessionConfig())`` is the usual way in; see
    :mod:`stickless.store.connect` for the URL forms. Thread-safe: share one store per
    process. Every method may raise :class:`~stickless.errors.StoreUnavailable`.
    """

    _flavour: ClassVar[ModuleType] = redis

    # ----------------------------------------------------------------- public API
    def load(self, token: object, *, touch: bool = True) -> Session | None:
        """The session of a client-presented token, or None when it is unknown, expired,
        destroyed, malformed or forged (the last two without contacting Redis).
        One round trip; refreshes the idle TTL at most once per ``touch_interval`` (one more
        round trip then). ``touch=False``: a passive read that never refreshes it (a poll
        that must not keep the session alive; ``session.seconds_left`` tells the time
        left)."""
        return drive(self._plan.load(token, touch=touch), self)

    def save(self, session: Session) -> SaveResult:
        """Write the session's changes (one round trip; none when nothing changed).
        A loaded session that was destroyed or expired meanwhile is *not* brought back
        (outcome ``"gone"``). Raises SessionTooLarge, SessionConflict, ReplicationTimeout."""
        return drive(self._plan.save(session), self)

    def pop_once(self, session: Session, key: str, default: Any = None) -> Any:
        """Take ``key`` out of the session exactly once across requests: of several requests
        (tabs) popping it at once, one gets the value, the others ``default`` (a flash
        message shown once, a one-time token used once). One round trip, at the call."""
        return drive(self._plan.pop_once(session, key, default), self)

    def destroy(self, token: object) -> bool:
        """Destroy a session now, by client token or Session. True if it was live."""
        return drive(self._plan.destroy(token), self)

    def destroy_id(self, session_id: str, *, user_id: str | None = None) -> bool:
        """Destroy a session by its id (``SessionInfo.session_id``, ``stickless sessions
        ls``), as :meth:`destroy` does; with ``user_id``, only if the session is bound to
        that user (checked atomically: a "sign out that device" page passes the signed-in
        user). True if it was live. Raises ValueError for a malformed id."""
        return drive(self._plan.destroy_id(parse_session_id(session_id), user_id), self)

    def sessions_for(self, user_id: str) -> list[SessionInfo]:
        """The user's live sessions (devices), oldest first."""
        return drive(self._plan.sessions_for(user_id), self)

    def revoke_user(self, user_id: str, keep: object = None) -> int:
        """Log the user out everywhere, except ``keep`` (a Session or token); returns how
        many sessions were destroyed."""
        return drive(self._plan.revoke_user(user_id, keep), self)

    def check(self) -> checks.CheckReport:
        """Can this store's server serve stickless? Connects and authenticates, then reports
        server and version, topology, role, eviction policy, keyspace-event flags and whether
        the URL's user may run every command stickless sends (``WAIT`` too with
        ``durability="replicated"``); ``report.ok``, ``report.cause`` (one line),
        ``report.raise_for_errors()``. Writes nothing a session uses (see
        :mod:`stickless.store.check`)."""
        return checks.run(self)

    def close(self) -> None:
        """Release all connections (and stop following the Sentinel primary; any later use
        starts again)."""
        for client in self._node_clients.values():
            client.close()
        if self._client is not None:
            self._client.close()
        if self._follower is not None:
            self._follower.close()

    def __enter__(self) -> SessionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- executor
    def send(self, batch: Batch) -> list[Any]:
        """Send one planned batch; replies in order, server errors as values. Raises
        :class:`~stickless.store.failures.Unavailable` when the store cannot serve it now
        (the verdicts are :class:`StoreBase`'s, shared with the other store)."""
        ticket: int | InFlight | None = None
        try:
            ticket = self._admit(batch)
            if self.is_cluster:
                replies = self._send_cluster(batch)
            else:
                replies = self._pipeline(self.client, batch)
            return self._check(batch, replies, ticket)
        except Exception as exc:
            verdict = self._verdict(exc, ticket)
            if verdict is exc:
                raise
            raise verdict from exc
        except BaseException:
            self._abandoned(ticket)
            raise

    @staticmethod
    def _pipeline(client: Any, batch: Batch) -> list[Any]:
        """The batch's commands written at once on one pooled connection of ``client`` (a
        plain, non-cluster client), their replies read in order: one round trip, without
        redis-py's pipeline machinery (which costs more than the round trip) or its retries
        (a save is never resent). A connection that failed mid-way is discarded."""
        commands = pipeline_commands(batch)
        pool = client.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_packed_command([packed(commands)])
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(connection.read_response())
                except ResponseError as exc:  # an error reply: the next ones still follow
                    replies.append(exc)
        except BaseException:
            connection.disconnect()
            raise
        finally:
            pool.release(connection)
        return order_replies(batch, replies)

    def _send_cluster(self, batch: Batch) -> list[Any]:
        if all(isinstance(call, Command) for call in batch.calls):
            pipe = self.client.pipeline(transaction=False)  # routed per key by redis-py
            for command in pipeline_commands(batch):
                pipe.execute_command(*command)
            return order_replies(batch, pipe.execute(raise_on_error=False))
        replies: list[Any] = []
        for i, call in enumerate(batch.calls):
            if i == 0 and not batch.idempotent:  # pinned (see Batch)
                replies += self._on_owner(replace(batch, calls=(call,)))
                continue
            try:
                replies.append(self.client.execute_command(*call.command()))
            except ResponseError as exc:
                replies.append(exc)
        if batch.wait is not None:
            replies.append(replies.pop(1))
        return replies

    def _on_owner(self, batch: Batch) -> list[Any]:
        """Script + WAIT on one connection of the node owning the key's slot, or of the node
        an ``ASK`` names (a slot being migrated); a ``MOVED`` or a dead node makes the
        planner ask for a :class:`Refresh`."""
        replies = self._pipeline(self._pinned_client(batch), batch)
        target = self._ask_target(replies[0])
        if target is not None:  # the key moved on with a slot being migrated
            replies = self._pipeline(target, replace(batch, asking=True))
        return replies

    def refresh(self, sent: float | None = None) -> None:
        """Reload the cluster's slot map and drop the clients pinned to nodes that are no
        primary in it (a ``Refresh`` step of the planner; nothing outside a cluster).
        ``sent``: when the batch that failed or was redirected was sent
        (``time.monotonic()``; default now): nothing is done if a reload began since, or
        less than ``REFRESH_GAP`` ago (see :class:`SlotMapReloads`). Never raises: if no
        node answers, the next batch says so."""
        if self._client is None or not self._reload_due(sent):
            return
        try:
            self.client.nodes_manager.initialize()
        except Exception as exc:  # the cluster is down: the next send reports it
            log.info("cluster slot map not reloaded: %s", type(exc).__name__)
            return
        for client in self._stale_node_clients():
            client.connection_pool.disconnect(inuse_connections=False)
