"""AsyncSessionStore: the asyncio store. The same plans as ``sync.py``, awaited."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any, ClassVar, TypeVar

import redis.asyncio as aredis
from redis.exceptions import ResponseError

from stickless.session import Session
from stickless.store import check as checks
from stickless.store.base import SlotMapReloads, StoreBase, packed
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


async def drive(op: Op[T], store: AsyncSessionStore) -> T:
    """Run a planned operation to completion with asyncio I/O."""
    try:
        step = next(op)
        sent = time.monotonic()
        while True:
            if isinstance(step, Pause):
                await asyncio.sleep(step.seconds)
                step = op.send(None)
                continue
            if isinstance(step, Refresh):  # about the batch sent last
                await store.refresh(sent)
                step = op.send(None)
                continue
            if isinstance(step, Locate):
                step = op.send(store.owner_of(step.key))
                continue
            try:
                sent = time.monotonic()
                replies = await store.send(step)
            except Exception as exc:  # handed to the plan, which decides
                step = op.throw(exc)
            else:
                step = op.send(replies)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


@dataclass
class _LoopClients:
    client: Any
    reloads: SlotMapReloads
    nodes: dict[str, Any] = field(default_factory=dict)


class AsyncSessionStore(StoreBase):
    """Sessions in Redis / Valkey for asyncio code (ASGI, Starlette, FastAPI).

    The same methods as :class:`~stickless.SessionStore`, as coroutines (``new`` stays a
    plain method: it does no I/O). Share one store per event loop.
    """

    _flavour: ClassVar[ModuleType] = aredis

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClients] = (
            weakref.WeakKeyDictionary()
        )

    # ----------------------------------------------------------------- public API
    async def load(self, token: object, *, touch: bool = True) -> Session | None:
        """See :meth:`SessionStore.load`."""
        return await drive(self._plan.load(token, touch=touch), self)

    async def save(self, session: Session) -> SaveResult:
        """See :meth:`SessionStore.save`."""
        return await drive(self._plan.save(session), self)

    async def pop_once(self, session: Session, key: str, default: Any = None) -> Any:
        """See :meth:`SessionStore.pop_once`."""
        return await drive(self._plan.pop_once(session, key, default), self)

    async def destroy(self, token: object) -> bool:
        """See :meth:`SessionStore.destroy`."""
        return await drive(self._plan.destroy(token), self)

    async def destroy_id(self, session_id: str, *, user_id: str | None = None) -> bool:
        """See :meth:`SessionStore.destroy_id`."""
        return await drive(self._plan.destroy_id(parse_session_id(session_id), user_id), self)

    async def sessions_for(self, user_id: str) -> list[SessionInfo]:
        """See :meth:`SessionStore.sessions_for`."""
        return await drive(self._plan.sessions_for(user_id), self)

    async def revoke_user(self, user_id: str, keep: object = None) -> int:
        """See :meth:`SessionStore.revoke_user`."""
        return await drive(self._plan.revoke_user(user_id, keep), self)

    @property
    def client(self) -> Any:
        """The redis.asyncio client of the running event loop.

        asyncio connections belong to the loop that opened them, so a store built by
        ``from_url`` keeps one client per event loop (created on first use in that loop):
        one store can serve several loops (threads, test clients) safely. A client passed
        to the constructor is used as is."""
        if self._client_factory is None:
            return self._client
        try:
            return self._loop_clients().client
        except RuntimeError:  # no running loop: a client that binds to the first loop using it
            return super().client

    def _loop_clients(self) -> _LoopClients:
        assert self._client_factory is not None
        loop = asyncio.get_running_loop()  # RuntimeError outside a loop
        state = self._per_loop.get(loop)
        if state is None:
            state = self._per_loop[loop] = _LoopClients(
                self._client_factory(), SlotMapReloads(self._reloads.gap)
            )
        return state

    def _node_cache(self) -> dict[str, Any]:
        if self._client_factory is None:
            return self._node_clients
        return self._loop_clients().nodes

    def _slot_map_reloads(self) -> SlotMapReloads:
        if self._client_factory is None:
            return self._reloads
        return self._loop_clients().reloads

    async def check(self) -> checks.CheckReport:
        """See :meth:`SessionStore.check`."""
        return await checks.arun(self)

    async def aclose(self) -> None:
        """Release the connections of the running loop (all of them for a given client)."""
        if self._client_factory is None:
            clients = [*self._node_clients.values(), self._client]
        else:
            state = self._per_loop.pop(asyncio.get_running_loop(), None)
            clients = [*state.nodes.values(), state.client] if state else []
        for client in clients:
            await client.aclose()
        if self._follower is not None and not self._per_loop:
            self._follower.close()  # no loop uses it any more (a later use starts again)

    async def __aenter__(self) -> AsyncSessionStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -------------------------------------------------------------- executor
    async def send(self, batch: Batch) -> list[Any]:
        """Send one planned batch; replies in order, server errors as values. Raises
        :class:`~stickless.store.failures.Unavailable` when the store cannot serve it now
        (the verdicts are :class:`StoreBase`'s, shared with the other store)."""
        ticket: int | InFlight | None = None
        try:
            if self.is_cluster:  # the slot map, to know the nodes (once loaded: no-op)
                await self.client.initialize()
            ticket = self._admit(batch)
            if self.is_cluster:
                replies = await self._send_cluster(batch)
            else:
                replies = await self._pipeline(self.client, batch)
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
    async def _pipeline(client: Any, batch: Batch) -> list[Any]:
        """See :meth:`SessionStore._pipeline`. The connection's ``socket_timeout`` bounds the
        whole batch, as one deadline: redis-py would start a task for the write and a timer
        for each reply, which cost more than the round trip."""
        commands = pipeline_commands(batch)
        pool = client.connection_pool
        connection = await pool.get_connection()
        limit = connection.socket_timeout
        try:
            async with asyncio.timeout(limit):  # TimeoutError (an OSError): unavailable
                connection.socket_timeout = None
                try:
                    await connection.send_packed_command([packed(commands)])
                    replies: list[Any] = []
                    for _ in commands:
                        try:
                            replies.append(await connection.read_response())
                        except ResponseError as exc:  # an error reply: the next ones follow
                            replies.append(exc)
                finally:
                    connection.socket_timeout = limit
        except BaseException:
            await connection.disconnect()
            raise
        finally:
            await pool.release(connection)
        return order_replies(batch, replies)

    async def _send_cluster(self, batch: Batch) -> list[Any]:
        if all(isinstance(call, Command) for call in batch.calls):
            pipe = self.client.pipeline(transaction=False)  # routed per key by redis-py
            for command in pipeline_commands(batch):
                pipe.execute_command(*command)
            return order_replies(batch, await pipe.execute(raise_on_error=False))
        replies: list[Any] = []
        for i, call in enumerate(batch.calls):
            if i == 0 and not batch.idempotent:  # pinned (see Batch)
                replies += await self._on_owner(replace(batch, calls=(call,)))
                continue
            try:
                replies.append(await self.client.execute_command(*call.command()))
            except ResponseError as exc:
                replies.append(exc)
        if batch.wait is not None:
            replies.append(replies.pop(1))
        return replies

    async def _on_owner(self, batch: Batch) -> list[Any]:
        """See :meth:`SessionStore._on_owner`."""
        await self.client.initialize()  # the slot map must be known (no-op once loaded)
        replies = await self._pipeline(self._pinned_client(batch), batch)
        target = self._ask_target(replies[0])
        if target is not None:  # the key moved on with a slot being migrated
            replies = await self._pipeline(target, replace(batch, asking=True))
        return replies

    async def refresh(self, sent: float | None = None) -> None:
        """See :meth:`SessionStore.refresh`."""
        if not self._reload_due(sent):
            return
        try:
            await self.client.nodes_manager.initialize()
        except Exception as exc:  # the cluster is down: the next send reports it
            log.info("cluster slot map not reloaded: %s", type(exc).__name__)
            return
        for client in self._stale_node_clients():
            await client.connection_pool.disconnect(inuse_connections=False)
