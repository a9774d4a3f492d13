"""Reading Starlette's signed-cookie sessions (``starlette.middleware.sessions``).

What Starlette's ``SessionMiddleware`` writes: the cookie (``session_cookie``, default
``"session"``) holds ``base64(JSON of the session)``, signed by
``itsdangerous.TimestampSigner(str(secret_key))`` (``<data>.<timestamp>.<signature>``); it
accepts the cookie while the signature is not older than ``max_age`` (default 14 days;
None: forever). There is no server-side copy to expire.

So the "old session" to retire is the cookie itself: the first migration of a cookie leaves
a small *mark* in stickless's Redis (key ``<key_prefix>:migrated:<SHA-256 of the cookie>``,
holding the server time of that first use, living as long as the cookie's signature stays
valid). The same cookie is migrated again only within ``grace`` of that first use (the
parallel requests of one page); after it, the cookie is worth nothing here: a copy of the
old cookie cannot bring a logged-out user back. One script, one round trip, once per user.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from itsdangerous import BadSignature, TimestampSigner

from stickless.errors import ConfigurationError, StoreUnavailable
from stickless.store.aio import AsyncSessionStore
from stickless.store.base import StoreBase
from stickless.web.migrate import adopt
from stickless.web.migrate.adopt import LEGACY_GRACE

DEFAULT_MAX_AGE: Final = 14 * 24 * 60 * 60
"""Starlette's ``max_age`` default (14 days)."""
UNBOUNDED_MARK_TTL: Final = 400 * 24 * 60 * 60
"""How long a mark lives when the cookie's signature never expires (``max_age=None``):
400 days, the longest lifetime browsers give a cookie (RFC 6265bis)."""

MARK_LUA: Final = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local first = redis.call('GET', KEYS[1])
if not first then
  redis.call('SET', KEYS[1], ms, 'PX', ARGV[2])
  return 1
end
if ms - tonumber(first) <= tonumber(ARGV[1]) then return 1 end
return 0
"""
"""1 when the cookie may be migrated (first use, or within ARGV[1] ms of it), else 0. The
server's clock decides, so app servers with skewed clocks agree."""


def mark_key(store: StoreBase, presented: str) -> str:
    """The mark of a migrated cookie (the cookie itself is never stored)."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(presented.encode()).digest())
    return f"{store.config.key_prefix}:migrated:{digest.rstrip(b'=').decode('ascii')}"


@dataclass(frozen=True)
class StarletteCookie:
    """Starlette's signed-cookie sessions, as a migration source for
    :class:`stickless.asgi.SessionMiddleware` (``migrate_from=``).

    Args:
        secret_key: the ``secret_key`` Starlette signed with (a str, Starlette's
            ``Secret``, or a sequence of keys, the newest last). Required.
        max_age: Starlette's ``max_age``: older signatures are refused. Default 14 days;
            None: any age (as Starlette then accepts them).
        grace: seconds after its first migration during which the same cookie is migrated
            again (parallel requests). Default
            :data:`~stickless.web.migrate.adopt.LEGACY_GRACE` (60).
    """

    secret_key: Any
    max_age: int | None = DEFAULT_MAX_AGE
    grace: float = LEGACY_GRACE
    _signer: TimestampSigner = field(init=False, repr=False, compare=False)

    name = "Starlette's cookie session"

    def __post_init__(self) -> None:
        keys: list[str]
        if isinstance(self.secret_key, str):
            keys = [self.secret_key]
        elif isinstance(self.secret_key, Sequence):
            keys = [str(key) for key in self.secret_key]
        else:
            keys = [str(self.secret_key)] if self.secret_key is not None else []
        if not keys or not all(keys):
            raise ConfigurationError("StarletteCookie needs the secret_key Starlette signed with")
        if self.max_age is not None and self.max_age <= 0:
            raise ConfigurationError("max_age must be > 0 seconds or None")
        if self.grace <= 0:
            raise ConfigurationError("grace must be > 0 seconds")
        object.__setattr__(self, "_signer", TimestampSigner(keys))

    def __repr__(self) -> str:  # never the secret
        return f"StarletteCookie(max_age={self.max_age!r}, grace={self.grace!r})"

    def read(self, presented: str) -> tuple[bytes, int] | None:
        """The JSON bytes inside a validly signed, unexpired cookie and its signing time
        (epoch seconds), or None. No I/O."""
        try:
            payload, signed_at = self._signer.unsign(
                presented.encode("utf-8", "replace"), max_age=self.max_age, return_timestamp=True
            )
            return base64.b64decode(payload), int(signed_at.timestamp())
        except (BadSignature, binascii.Error, ValueError):
            return None

    async def take(self, presented: str, store: AsyncSessionStore) -> dict[str, Any] | None:
        """See :meth:`~stickless.web.migrate.adopt.AsyncSource.take`: no I/O for a cookie
        that is not a valid session; else one script (the mark)."""
        inside = self.read(presented)
        if inside is None:
            return None
        raw, signed_at = inside
        if adopt.refuse_pickle(raw, self.name):
            return None
        value = adopt.json_object(raw)
        if value is None:
            adopt.log.info("%s does not hold a JSON object: fresh session", self.name)
            return None
        data = adopt.session_data(value, self.name, size=len(raw), max_size=store.config.max_size)
        if data is None:
            return None
        if not await self._first_use(presented, signed_at, store):
            adopt.log.info("%s was migrated before (grace over): fresh session", self.name)
            return None
        return data

    async def _first_use(self, presented: str, signed_at: int, store: AsyncSessionStore) -> bool:
        """Mark the cookie migrated; True on its first use and within ``grace`` of it."""
        ttl: float
        if self.max_age is None:
            ttl = UNBOUNDED_MARK_TTL
        else:  # until the signature expires anyway (plus the grace, for clock skew)
            ttl = max(1, signed_at + self.max_age - int(time.time())) + self.grace
        script = store.client.register_script(MARK_LUA)
        try:
            allowed = await script(
                keys=[mark_key(store, presented)],
                args=[adopt.grace_ms(self.grace), adopt.grace_ms(ttl)],
            )
        except adopt.REDIS_ERRORS as exc:  # our own script: any failure is an outage
            error = adopt.unavailable("stickless's Redis (migration mark)", exc)
            raise error or StoreUnavailable("stickless's Redis (migration mark)", exc) from exc
        return bool(allowed)
