"""One hook for whatever watches a store's operations: the Prometheus metrics
(:mod:`stickless.ops.metrics`) and the OpenTelemetry spans and metrics
(:mod:`stickless.ops.tracing`) are both observers of it.

The hook sits in the store's *planner* (:attr:`stickless.SessionStore.plan`), not around
the store's methods: every operation of :class:`~stickless.SessionStore` and
:class:`~stickless.AsyncSessionStore` is one plan generator there, and so are the
operations Django's engine composes from the same plans. One wrapper generator follows
each plan step by step, so it works for the blocking and the asyncio store alike (no
second copy for ``async``), counts the round trips exactly (one :class:`Batch` yielded is
one round trip) and reads the replies (a save applied through a renew forward, a touch).
The only thing that must be sync or async is the wrapper of the store's ``send``, which lets
an observer run code around each round trip (tracing makes a span current there, so that
spans of redis-py's own instrumentation become its children).

An observer implements ``start(call) -> Watch``; the watch gets ``sending(batch)`` (a
context manager around each round trip) and ``finish(call)`` once the operation is over,
when :class:`Call` holds the result or the error, the duration and the facts derived from
them (the user id and the session id too, as methods, for observers that are told to record
them).

A ``Call`` keeps the operation's arguments and result (a token, a Session) only to derive
those facts; the observers of stickless record the facts, never a token or a value.

What both exporters need besides: :class:`OwnWatch` (an observer that is its own watch),
:func:`attach_once` / :func:`attached` (one observer per store and exporter, kept in an
attribute of the store) and :class:`Shared` (collectors shared per provider and namespace).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import threading
import time
import weakref
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, Self, TypeVar

from stickless import tokens
from stickless.errors import (
    ReplicationTimeout,
    SessionConflict,
    SessionTooLarge,
    StoreMisconfigured,
    StoreUnavailable,
)
from stickless.session import Session, SessionStatus
from stickless.store.plan import Batch, Planner, SaveStatus, ScriptCall

__all__ = [
    "OPERATIONS",
    "Call",
    "Observer",
    "OwnWatch",
    "Shared",
    "Watch",
    "attach",
    "attach_once",
    "attached",
    "observers_of",
    "topology_of",
]

OPERATIONS = ("load", "save", "destroy", "sessions_for", "revoke_user")
"""The planned operations the hook observes (the store methods of the same names)."""

_HOOK = "_stickless_hook"
_current: contextvars.ContextVar[Call | None] = contextvars.ContextVar(
    "stickless_call", default=None
)
_attach_lock = threading.Lock()
S = TypeVar("S")
T = TypeVar("T")


class Watch(Protocol):
    """What an observer keeps for one operation."""

    def sending(self, batch: Batch) -> AbstractContextManager[object]:
        """Entered around each round trip of the operation (in the executor)."""
        ...

    def finish(self, call: Call) -> None:
        """The operation is over: ``call`` has its result or error."""
        ...


class Observer(Protocol):
    def start(self, call: Call) -> Watch:
        """An operation starts (``call`` has its name and the store's facts only)."""
        ...


class OwnWatch:
    """Base of an observer that is its own watch: nothing kept per operation, nothing done
    around a round trip; a subclass implements ``finish(call)``."""

    def start(self, call: Call) -> Self:
        return self

    def sending(self, batch: Batch) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()


@dataclass(eq=False)
class Call:
    """One observed store operation, as its observers see it."""

    operation: str
    """``load``, ``save``, ``destroy``, ``sessions_for`` or ``revoke_user``."""
    topology: str
    """``standalone``, ``sentinel`` or ``cluster``."""
    durability: str
    """The store's ``SessionConfig.durability`` (``none`` or ``replicated``)."""
    round_trips: int = 0
    """Batches sent (one pipeline each), retries included."""
    result: Any = None
    error: BaseException | None = None
    cancelled: bool = False
    """The operation was abandoned before it finished (its task was cancelled)."""
    seconds: float = 0.0
    touched: bool = False
    """A load refreshed the idle TTL (the touch script ran and found the session)."""
    save_status: int | None = None
    """The save script's status (``SaveStatus``), when it answered."""
    _hook: _Hook | None = field(default=None, repr=False)
    _args: tuple[Any, ...] = field(default=(), repr=False)
    _token_before: str | None = field(default=None, repr=False)
    _restarted: bool = field(default=False, repr=False)
    _stepping: bool = field(default=False, repr=False)
    _done: bool = field(default=False, repr=False)
    _watches: list[Watch] = field(default_factory=list, repr=False)

    # ------------------------------------------------------------------ derived facts
    @property
    def outcome(self) -> str:
        """What happened, in one word: load ``hit`` / ``miss``; save ``saved``,
        ``unchanged``, ``destroyed``, ``gone``; destroy ``destroyed`` / ``missing``;
        ``listed`` (sessions_for), ``revoked`` (revoke_user); on an error ``unavailable``,
        ``misconfigured``, ``not_replicated`` (applied, fewer replicas than required),
        ``conflict``, ``too_large`` or ``error``; ``cancelled``."""
        if self.cancelled:
            return "cancelled"
        if self.error is not None:
            return _error_outcome(self.error)
        if self.operation == "load":
            return "miss" if self.result is None else "hit"
        if self.operation == "save":
            return str(getattr(self.result, "outcome", "saved"))
        if self.operation == "destroy":
            return "destroyed" if self.result else "missing"
        return "listed" if self.operation == "sessions_for" else "revoked"

    @property
    def renewed(self) -> bool | None:
        """A save gave the session a new token (renew, login, identity change); None for
        the other operations."""
        if self.operation != "save":
            return None
        session = self._args[0] if self._args else None
        return (
            self.outcome == "saved"
            and not self._restarted
            and isinstance(session, Session)
            and session.token != self._token_before
        )

    @property
    def forwarded(self) -> bool | None:
        """A save was applied through a renew forward (a request still carrying the token a
        plain rotation replaced: its data went into the renewed session); None for the other
        operations."""
        if self.operation != "save":
            return None
        return self.error is None and self.save_status == SaveStatus.FORWARDED

    @property
    def replicas(self) -> int | None:
        """Replicas that acknowledged a save (``durability="replicated"``), else None."""
        if isinstance(self.error, ReplicationTimeout):
            return self.error.acknowledged
        replicas = getattr(self.result, "replicas", None)
        return replicas if isinstance(replicas, int) else None

    @property
    def count(self) -> int | None:
        """Sessions listed (sessions_for) or destroyed (revoke_user), else None."""
        if self.error is not None:
            return None
        if self.operation == "sessions_for" and isinstance(self.result, list):
            return len(self.result)
        if self.operation == "revoke_user" and isinstance(self.result, int):
            return self.result
        return None

    def user_id(self) -> str | None:
        """The user the operation is about (sensitive: record it only when told to)."""
        if self.operation in ("sessions_for", "revoke_user"):
            user = self._args[0] if self._args else None
            return user if isinstance(user, str) else None
        session = self._session()
        return session.user_id if session is not None else None

    def session_id(self) -> str | None:
        """The session's id (its token family, as ``stickless sessions ls`` shows it; it
        cannot be used as a cookie), for load, save and destroy; else None."""
        session = self._session()
        raw: str | None = session.raw_token if session is not None else None
        if raw is None and self.operation == "destroy" and self._args and self._hook:
            raw = self._hook.planner.codec.parse(self._args[0])
        return tokens.token_id(raw).session_id if raw else None

    def _session(self) -> Session | None:
        if self.operation == "save" or (self.operation == "destroy" and self._args):
            found = self._args[0] if self._args else None
        elif self.operation == "load":
            found = self.result
        else:
            return None
        return found if isinstance(found, Session) else None

    # ------------------------------------------------------------- the hook's side
    def _advance(self, step: Callable[..., Any], *args: Any) -> Any:
        self._stepping = True
        try:
            return step(*args)
        finally:
            self._stepping = False

    def _follow(self, op: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
        """``yield from op``, counting its batches and reading their replies."""
        try:
            step = self._advance(op.send, None)
            while True:
                if isinstance(step, Batch):
                    self.round_trips += 1
                try:
                    replies = yield step
                except GeneratorExit:
                    op.close()
                    raise
                except BaseException as exc:  # the executor's failure: the plan decides
                    step = self._advance(op.throw, exc)
                    continue
                if isinstance(step, Batch):
                    self._read(step, replies)
                step = self._advance(op.send, replies)
        except StopIteration as stop:
            return stop.value

    def _read(self, batch: Batch, replies: Any) -> None:
        first = batch.calls[0] if batch.calls else None
        if not isinstance(first, ScriptCall) or not isinstance(replies, list) or not replies:
            return
        reply = replies[0]
        try:
            if first.script.name == "save" and isinstance(reply, list):
                self.save_status = int(reply[0])
            elif first.script.name == "touch" and not isinstance(reply, Exception):
                self.touched = bool(int(reply))
        except (TypeError, ValueError, IndexError):
            pass  # the plan judges the reply; the facts stay unknown

    def _sending(self, batch: Batch) -> AbstractContextManager[object]:
        if len(self._watches) == 1:
            return self._watches[0].sending(batch)
        return self._all_sending(batch)

    @contextlib.contextmanager
    def _all_sending(self, batch: Batch) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for watch in self._watches:
                stack.enter_context(watch.sending(batch))
            yield


def _error_outcome(error: BaseException) -> str:
    if isinstance(error, ReplicationTimeout):
        return "not_replicated"
    if isinstance(error, StoreMisconfigured):
        return "misconfigured"
    if isinstance(error, StoreUnavailable):
        return "unavailable"
    if isinstance(error, SessionConflict):
        return "conflict"
    if isinstance(error, SessionTooLarge):
        return "too_large"
    return "error"


class _Hook:
    """What one store's planner and executor are wrapped with."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.planner: Planner = store.plan
        self.observers: list[Observer] = []
        self._topology: str | None = None

    @property
    def topology(self) -> str:
        if self._topology is None:
            self._topology = topology_of(self.store)
        return self._topology

    def wrap_op(self, operation: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def observed(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            return self._run(operation, method(*args, **kwargs), args)

        return observed

    def _run(
        self, operation: str, op: Generator[Any, Any, Any], args: tuple[Any, ...]
    ) -> Generator[Any, Any, Any]:
        outer = _current.get()
        if not self.observers or (outer is not None and outer._hook is self and outer._stepping):
            # no observer, or a plan inside an observed one (a save destroying an
            # invalidated session): part of the outer operation
            return (yield from op)
        call = Call(operation, self.topology, self.planner.config.durability, _hook=self)
        call._args = args
        if operation == "save" and args and isinstance(args[0], Session):
            call._token_before = args[0].token
            call._restarted = args[0].status is SessionStatus.INVALIDATED
        call._watches = [observer.start(call) for observer in list(self.observers)]
        token = _current.set(call)
        start = time.perf_counter()
        try:
            call.result = yield from call._follow(op)
            return call.result
        except GeneratorExit:
            call.cancelled = True
            raise
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            call.seconds = time.perf_counter() - start
            call._done = True
            with contextlib.suppress(ValueError):  # closed in another context (abandoned)
                _current.reset(token)
            for watch in reversed(call._watches):
                watch.finish(call)

    def current(self) -> Call | None:
        call = _current.get()
        return call if call is not None and call._hook is self and not call._done else None

    def wrap_send(self, send: Callable[..., Any]) -> Callable[..., Any]:
        """The executor's ``send`` with the watches entered around each round trip (async
        for a store whose class sends asynchronously, whatever ``send`` was replaced with)."""
        if inspect.iscoroutinefunction(getattr(type(self.store), "send", send)):

            @functools.wraps(send)
            async def async_send(batch: Batch) -> Any:
                call = self.current()
                if call is None or not call._watches:
                    return await send(batch)
                with call._sending(batch):
                    return await send(batch)

            return async_send

        @functools.wraps(send)
        def sync_send(batch: Batch) -> Any:
            call = self.current()
            if call is None or not call._watches:
                return send(batch)
            with call._sending(batch):
                return send(batch)

        return sync_send


def topology_of(store: Any) -> str:
    """``standalone``, ``sentinel`` or ``cluster``, without connecting."""
    endpoint = getattr(store, "_endpoint", None)
    if endpoint is not None:
        return str(endpoint.kind)
    if getattr(store, "_follower", None) is not None:
        return "sentinel"
    client = getattr(store, "_client", None)
    flavour = getattr(store, "_flavour", None)
    if flavour is not None and isinstance(client, flavour.cluster.RedisCluster):
        return "cluster"
    pool = getattr(client, "connection_pool", None)
    return "sentinel" if type(pool).__name__ == "SentinelConnectionPool" else "standalone"


def attach(store: Any, observer: Observer) -> None:
    """Let ``observer`` watch every operation of ``store`` (a ``SessionStore`` or an
    ``AsyncSessionStore``; Django's engine included, as it runs the same plans). Attaching
    the same observer twice does nothing. Raises TypeError for anything but a store."""
    planner = getattr(store, "plan", None)
    if not isinstance(planner, Planner) or not callable(getattr(store, "send", None)):
        raise TypeError(f"{type(store).__name__} is not a session store")
    with _attach_lock:
        hook = store.__dict__.get(_HOOK)
        if hook is None:
            hook = _Hook(store)
            for operation in OPERATIONS:
                setattr(planner, operation, hook.wrap_op(operation, getattr(planner, operation)))
            store.send = hook.wrap_send(store.send)
            setattr(store, _HOOK, hook)
        if not any(existing is observer for existing in hook.observers):
            hook.observers.append(observer)


def observers_of(store: Any) -> list[Observer]:
    """The observers attached to ``store`` (in the order they were attached)."""
    hook = getattr(store, "__dict__", {}).get(_HOOK)
    return list(hook.observers) if hook is not None else []


def attach_once(store: S, mark: str, make: Callable[[], Observer]) -> S:
    """``attach(store, make())`` unless ``store`` already holds an observer in its attribute
    ``mark`` (so instrumenting a store twice does nothing the second time); the new one is
    kept there, for :func:`attached`. Returns ``store``; TypeError for anything but a store."""
    if getattr(store, mark, None) is None:
        observer = make()
        attach(store, observer)
        setattr(store, mark, observer)
    return store


def attached(store: object, mark: str, kind: type[T]) -> T | None:
    """The observer :func:`attach_once` kept in ``store``'s attribute ``mark`` if it is a
    ``kind``, else None."""
    found = getattr(store, mark, None)
    return found if isinstance(found, kind) else None


class Shared(Generic[T]):
    """One ``make(provider, namespace)`` per provider (a metrics registry or meter provider,
    held weakly) and namespace: the collectors the stores instrumented alike share."""

    def __init__(self, make: Callable[[Any, str], T]) -> None:
        self._make = make
        self._made: weakref.WeakKeyDictionary[Any, dict[str, T]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self, provider: Any, namespace: str) -> T:
        with self._lock:
            by_namespace = self._made.setdefault(provider, {})
            found = by_namespace.get(namespace)
            if found is None:
                found = by_namespace[namespace] = self._make(provider, namespace)
            return found
