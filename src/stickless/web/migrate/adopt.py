"""Adopting a foreign session: the part every migration path shares.

A *migration source* knows where another library kept a session and how to read it safely
(:mod:`~stickless.web.migrate.flask_session`, :mod:`~stickless.web.migrate.starsessions`,
:mod:`~stickless.web.migrate.starlette_cookie`; Django's engines have their own path,
:mod:`stickless.web.django_migrate`, which shares :data:`LEGACY_GRACE` and :func:`adopt`).
This module holds what they have in common:

* **when** to ask a source (:func:`migrate` / :func:`amigrate`): the request presented a
  value that is not a well-formed stickless token (:func:`foreign`) and therefore loaded no
  stickless session. One stickless load, then, once per migrated user, the source's read;
  a request with a live stickless token never reaches a source;
* **how** the data moves (:func:`adopt`): key by key into the request's *new* stickless
  session, which the end of the request saves under a new token (the cookie is replaced).
  Identity keys (``_user_id``, ``user``...) come along: it is the same user, who stays
  logged in. A value the session cannot hold is dropped with a warning naming the key;
* **what is never done**: no value is ever unpickled. Sources decode JSON (and, for
  Flask-Session, msgpack through ``msgspec``, which builds only plain types); a payload that
  looks pickled (:func:`looks_pickled`) or decodes to anything but an object is *no
  session*: the user gets a fresh one, and the old value is left alone;
* **retiring the old session** after :data:`LEGACY_GRACE` seconds
  (:func:`retire_script`): not at once, because a page fires parallel requests with the
  same old cookie right after the deploy, and each must still find the user (each gets its
  own new stickless session with the same data; the browser keeps the last cookie it is
  sent); later uses do not extend the grace, so after it a replayed old cookie is worth
  nothing;
* **failures**: a source whose server cannot be reached raises
  :class:`~stickless.errors.StoreUnavailable`, handled as a failed load (503, or with
  fail-open an unsaved stand-in session: the old cookie is left in place for the next try).

Logs never show a token, a cookie, a key's value or session contents: one INFO line per
migrated session (source and key count), and warnings naming only the source and, for a
dropped value, its key.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol, runtime_checkable

from redis import exceptions as redis_errors

from stickless import codec
from stickless.errors import StoreUnavailable
from stickless.session import Session
from stickless.store.aio import AsyncSessionStore
from stickless.store.base import UNAVAILABLE_TYPES, StoreBase
from stickless.store.failures import Unavailable, classify_error
from stickless.store.sync import SessionStore
from stickless.web.cycle import SessionCycle

log = logging.getLogger("stickless.web.migrate")

LEGACY_GRACE: Final = 60
"""Seconds a migrated old session stays readable (for the parallel requests of the same
page); every migration path uses it as its default."""

MAX_PRESENTED: Final = 8192
"""Longest presented value offered to a source (a Starlette cookie session can reach the
browser's 4 KiB cookie limit); longer ones are no session, without I/O."""

RETIRE_LUA: Final = """
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 then return 0 end
if ttl == -1 or ttl > tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1
"""
"""Shorten a key's TTL to ARGV[1] ms, never lengthen it (a second migration within the
grace does not extend it). Lua rather than ``PEXPIRE ... LT``: Redis 6.2 has no ``LT``."""

_PICKLE_PROTOCOLS: Final = frozenset(range(2, 6))


@runtime_checkable
class SyncSource(Protocol):
    """A migration source for blocking adapters (Flask)."""

    @property
    def name(self) -> str:
        """What the logs call it (``"Flask-Session"``)."""
        ...

    def take(self, presented: str, store: SessionStore) -> dict[str, Any] | None:
        """The data of the old session ``presented`` names (and retire it), or None when
        there is none (malformed, forged, unknown, expired, undecodable, pickled). Raises
        :class:`~stickless.errors.StoreUnavailable` when the old store cannot be reached.
        ``store``: stickless's own (some sources keep state or read there)."""
        ...


@runtime_checkable
class AsyncSource(Protocol):
    """A migration source for asyncio adapters (the ASGI middleware)."""

    @property
    def name(self) -> str:
        """What the logs call it (``"starsessions"``)."""
        ...

    async def take(self, presented: str, store: AsyncSessionStore) -> dict[str, Any] | None:
        """See :meth:`SyncSource.take`."""
        ...


def is_async_source(source: object) -> bool:
    """True for an :class:`AsyncSource` (its ``take`` is a coroutine function)."""
    return isinstance(source, AsyncSource) and inspect.iscoroutinefunction(source.take)


def is_sync_source(source: object) -> bool:
    """True for a :class:`SyncSource` (its ``take`` is a plain function)."""
    return isinstance(source, SyncSource) and not inspect.iscoroutinefunction(source.take)


# --------------------------------------------------------------------------- decisions
def foreign(presented: str | None, store: StoreBase) -> bool:
    """True when ``presented`` may name an old session: present, not too long, and not a
    well-formed stickless token (those are ours: unknown means expired or destroyed, and no
    old store is asked). No I/O."""
    return (
        bool(presented)
        and len(presented or "") <= MAX_PRESENTED
        and store.plan.codec.parse(presented) is None
    )


def looks_pickled(raw: bytes) -> bool:
    """True for bytes that start like a pickle of protocol 2 or later (``0x80``, then the
    protocol number): what Flask-Session < 0.7 wrote. Older protocols fail every decoder
    here anyway (they never start like a JSON object or a msgpack map)."""
    return len(raw) >= 2 and raw[0] == 0x80 and raw[1] in _PICKLE_PROTOCOLS


def json_object(raw: bytes) -> dict[str, Any] | None:
    """``raw`` decoded as a JSON object, or None (not JSON, not an object)."""
    try:
        value = codec.decode(raw)
    except (ValueError, TypeError):
        return None
    return value if type(value) is dict else None


def session_data(
    value: object, source: str, *, size: int, max_size: int, drop: tuple[str, ...] = ()
) -> dict[str, Any] | None:
    """The session data of a decoded old value: a ``dict`` (its ``drop`` keys, a source's
    own metadata, removed), or None when it is no dict, or when its stored form (``size``
    bytes) exceeds stickless's ``max_size`` (it could not be saved: logged, fresh session)."""
    if type(value) is not dict:
        log.info("%s session is not a mapping: ignored, fresh session", source)
        return None
    if size > max_size:
        log.warning(
            "%s session of %d bytes exceeds max_size (%d): not migrated, fresh session",
            source,
            size,
            max_size,
        )
        return None
    return {k: v for k, v in value.items() if k not in drop}


def refuse_pickle(raw: bytes, source: str) -> bool:
    """True (and one INFO line) when ``raw`` looks pickled: it is treated as no session and
    never unpickled."""
    if looks_pickled(raw):
        log.info("%s session value is a pickle: never unpickled, fresh session", source)
        return True
    return False


# ----------------------------------------------------------------------------- moving
def adopt(put: Callable[[str, Any], None], data: Mapping[Any, Any], *, source: str) -> int:
    """Copy ``data`` into the new session through ``put`` (its ``__setitem__``), key by
    key. A key that is not a ``str``, or a value ``put`` refuses (``TypeError`` /
    ``ValueError``: not JSON, not one of the adapter's tagged types), is dropped with a
    warning naming the key (never the value). Returns how many keys were moved; logs one
    INFO line with the count."""
    moved = 0
    for key, value in data.items():
        if not isinstance(key, str):
            log.warning("%s session: a key that is not a str was dropped", source)
            continue
        try:
            put(key, value)
        except (TypeError, ValueError) as exc:
            log.warning(
                "%s session: key %.60r cannot be stored (%s), dropped",
                source,
                key,
                type(exc).__name__,
            )
            continue
        moved += 1
    log.info("session migrated from %s (%d keys) into a new stickless session", source, moved)
    return moved


def migrate(
    cycle: SessionCycle,
    store: SessionStore,
    source: SyncSource,
    put: Callable[[str, Any], None] | None = None,
) -> Session:
    """After ``cycle.open(store)``: when the request presented a :func:`foreign` value and
    so got a new session, give that session the old session's data (through ``put``,
    default the Session's own ``__setitem__``). Returns the request's session (a stand-in
    after a fail-open failure of the source)."""
    session = cycle.open(store)
    if not _wanted(cycle, session, store):
        return session
    assert cycle.presented is not None
    try:
        data = source.take(cycle.presented, store)
    except StoreUnavailable as exc:
        return cycle.fail_load(exc, store)
    if data:
        adopt(put or session.__setitem__, data, source=source.name)
    return session


async def amigrate(cycle: SessionCycle, store: AsyncSessionStore, source: AsyncSource) -> Session:
    """:func:`migrate` for asyncio adapters, after ``await cycle.aopen(store)``."""
    session = cycle.session
    if session is None:
        session = await cycle.aopen(store)
    if not _wanted(cycle, session, store):
        return session
    assert cycle.presented is not None
    try:
        data = await source.take(cycle.presented, store)
    except StoreUnavailable as exc:
        return cycle.fail_load(exc, store)
    if data:
        adopt(session.__setitem__, data, source=source.name)
    return session


def _wanted(cycle: SessionCycle, session: Session, store: StoreBase) -> bool:
    return (
        session.is_new
        and cycle.saveable
        and dict.__len__(session) == 0
        and foreign(cycle.presented, store)
    )


# ------------------------------------------------------------------------- old stores
def unavailable(address: str, exc: BaseException) -> StoreUnavailable | None:
    """The :class:`~stickless.errors.StoreUnavailable` a redis-py error of an old store
    means, judged as stickless judges its own (:func:`stickless.store.failures.classify_error`:
    unreachable, timed out, ``READONLY``, ``LOADING``, credentials refused...), or None for
    an error reply that only means "no session here" (``WRONGTYPE``: the key holds
    something else)."""
    verdict = classify_error(exc, UNAVAILABLE_TYPES)
    return StoreUnavailable(address, verdict) if isinstance(verdict, Unavailable) else None


REDIS_ERRORS: Final = (redis_errors.RedisError, OSError)
"""What a read of an old store may raise (judged by :func:`old_store_failed`)."""


def old_store_failed(where: str, exc: BaseException) -> None:
    """A redis-py error while reading an old store (``where`` names it): raise the
    :class:`~stickless.errors.StoreUnavailable` it means (see :func:`unavailable`), or log
    it (error type only) and return: the request gets a fresh session."""
    error = unavailable(where, exc)
    if error is not None:
        raise error from exc
    log.warning("%s could not be read (%s): fresh session", where, type(exc).__name__)


def retire_script(client: Any) -> Any:
    """:data:`RETIRE_LUA` registered on ``client`` (sync or asyncio redis-py; reloaded by
    redis-py after ``NOSCRIPT``). Call it with ``keys=[key], args=[grace_ms]``."""
    return client.register_script(RETIRE_LUA)


def grace_ms(grace: float) -> int:
    """``grace`` seconds as the whole milliseconds the scripts take (at least 1)."""
    return max(1, round(grace * 1000))
