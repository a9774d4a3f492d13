"""Reading starsessions' Redis sessions (``starsessions.stores.redis.RedisStore``).

What starsessions 2.x writes: the cookie (``cookie_name``, default ``"session"``) holds the
session id (``secrets.token_hex(16)``; starsessions also adopts ids a client chose); the
Redis key is ``prefix + id`` (default prefix ``"starsessions."``; a callable prefix maps
the id to the key); the value is the session dict as JSON (its default ``JsonSerializer``)
with starsessions' metadata under ``"__metadata__"`` (``lifetime``, ``created``,
``last_access``), and a TTL (the remaining lifetime, or ``gc_ttl`` for session-only
cookies). The metadata is not session data: it is dropped, and the new stickless session
gets stickless's own timestamps and lifetimes.
"""

from __future__ import annotations

import asyncio
import re
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import redis.asyncio

from stickless.errors import ConfigurationError
from stickless.store.aio import AsyncSessionStore
from stickless.web.migrate import adopt
from stickless.web.migrate.adopt import LEGACY_GRACE

DEFAULT_PREFIX: Final = "starsessions."
"""starsessions' ``RedisStore`` prefix default."""
METADATA_KEY: Final = "__metadata__"
"""Where starsessions keeps its own metadata inside the session dict."""

_ID: Final = re.compile(r"[A-Za-z0-9\-._~+/=]{1,256}")
"""The ids starsessions 2.3 accepts from a cookie (2.2 accepted anything; those ids are
not read here)."""


@dataclass(frozen=True)
class StarsessionsRedis:
    """starsessions' Redis store, as a migration source for
    :class:`stickless.asgi.SessionMiddleware` (``migrate_from=``).

    Args:
        url: the Redis URL starsessions used (``RedisStore(url=...)``); a client is made
            per event loop. Default None.
        client: or its ``redis.asyncio.Redis`` client (``RedisStore(connection=...)``),
            used as is. Default None. With neither: stickless's own client (same server
            and database as the middleware's ``url``).
        prefix: its ``prefix``: a str, or the callable mapping a session id to its key.
            Default ``"starsessions."``.
        grace: seconds the old session stays readable once migrated. Default
            :data:`~stickless.web.migrate.adopt.LEGACY_GRACE` (60).
    """

    url: str | None = None
    client: Any = None
    prefix: str | Callable[[str], str] = DEFAULT_PREFIX
    grace: float = LEGACY_GRACE
    _per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = field(
        init=False, repr=False, compare=False, default_factory=weakref.WeakKeyDictionary
    )

    name = "starsessions"

    def __post_init__(self) -> None:
        if self.url is not None and self.client is not None:
            raise ConfigurationError("pass url or client, not both")
        if not isinstance(self.prefix, str) and not callable(self.prefix):
            raise ConfigurationError("prefix must be a str or a callable (session id -> key)")
        if self.grace <= 0:
            raise ConfigurationError("grace must be > 0 seconds")

    def key(self, session_id: str) -> str:
        """The Redis key of ``session_id``."""
        return self.prefix + session_id if isinstance(self.prefix, str) else self.prefix(session_id)

    async def take(self, presented: str, store: AsyncSessionStore) -> dict[str, Any] | None:
        """See :meth:`~stickless.web.migrate.adopt.AsyncSource.take`: one GET, and once the
        value is a session, one script shortening its TTL to ``grace``."""
        if not _ID.fullmatch(presented):
            return None
        client = self._client(store)
        key = self.key(presented)
        try:
            raw = await client.get(key)
        except adopt.REDIS_ERRORS as exc:
            adopt.old_store_failed(f"{self.name}'s Redis", exc)
            return None
        if not isinstance(raw, bytes) or not raw or adopt.refuse_pickle(raw, self.name):
            return None
        value = adopt.json_object(raw)
        if value is None:
            adopt.log.info("%s session value is not a JSON object: fresh session", self.name)
            return None
        data = adopt.session_data(
            value,
            self.name,
            size=len(raw),
            max_size=store.config.max_size,
            drop=(METADATA_KEY,),
        )
        if data is None:
            return None
        try:
            await adopt.retire_script(client)(keys=[key], args=[adopt.grace_ms(self.grace)])
        except adopt.REDIS_ERRORS as exc:
            adopt.old_store_failed(f"{self.name}'s Redis", exc)
            return None
        return data

    def _client(self, store: AsyncSessionStore) -> Any:
        if self.client is not None:
            return self.client
        if self.url is None:
            return store.client
        loop = asyncio.get_running_loop()  # asyncio connections belong to one loop
        client = self._per_loop.get(loop)
        if client is None:
            client = self._per_loop[loop] = redis.asyncio.Redis.from_url(self.url)
        return client
