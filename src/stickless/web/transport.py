"""How the token travels between client and server: cookie and/or header, for every adapter.

Adapters call :meth:`Transport.read_token` on the way in and :meth:`Transport.response_headers`
on the way out; both are pure functions of their inputs (no I/O, no framework imports).

The cookie is sent only when something changed for the client: a session saved for the first
time or renewed (new token), or a session that ended (the cookie is deleted). Its ``Max-Age``
runs to the session's *absolute* deadline (the idle timeout is enforced by Redis), so a
sliding expiry never needs a new ``Set-Cookie``. With ``max_age=None`` the cookie is a browser
session cookie instead.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from stickless.errors import ConfigurationError
from stickless.session import Session

SameSite = Literal["lax", "strict", "none"]


@dataclass(frozen=True, slots=True)
class CookieSettings:
    """The session cookie. Defaults are the secure ones."""

    name: str = "session"
    """Cookie name. Default ``"session"`` (Starlette's and Flask's name)."""
    path: str = "/"
    domain: str | None = None
    secure: bool | None = None
    """True: always ``Secure``; False: never; None (default): ``Secure`` on https requests."""
    httponly: bool = True
    samesite: SameSite | None = "lax"
    partitioned: bool = False
    persistent: bool = True
    """True (default): ``Max-Age`` until the session's absolute deadline. False: a browser
    session cookie (gone when the browser closes)."""

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in ' ;,="\t\r\n'):
            raise ConfigurationError(f"invalid cookie name {self.name!r}")
        if self.samesite is not None and self.samesite not in ("lax", "strict", "none"):
            raise ConfigurationError("samesite must be 'lax', 'strict', 'none' or None")


@dataclass(frozen=True, slots=True)
class Transport:
    """Where the token is read from and written to.

    ``cookie`` (default: a :class:`CookieSettings`) and/or ``header`` (e.g.
    ``"X-Session-Token"``, for API and mobile clients). When both are set the header wins
    on the way in, and both are written on the way out.
    """

    cookie: CookieSettings | None = field(default_factory=CookieSettings)
    header: str | None = None

    def __post_init__(self) -> None:
        if self.cookie is None and not self.header:
            raise ConfigurationError("a transport needs a cookie, a header or both")

    # ------------------------------------------------------------------ inbound
    def read_token(self, cookie_header: str | None, token_header: str | None) -> str | None:
        """The presented token (unvalidated: the store validates), or None."""
        if self.header and token_header and token_header.strip():
            return token_header.strip()
        if self.cookie is not None and cookie_header:
            return cookie_value(cookie_header, self.cookie.name)
        return None

    # ----------------------------------------------------------------- outbound
    def response_headers(
        self, presented: str | None, session: Session | None, *, https: bool
    ) -> list[tuple[str, str]]:
        """Headers to add to the response, after the session was saved (or not loaded).

        ``presented`` is the token the request carried; ``session`` the request's session
        after ``store.save`` (None when the app never touched it).
        """
        if session is None:
            return []
        meta = session.meta
        if meta is None:  # not stored: unknown / expired / destroyed, or new and empty
            return self.token_headers(presented, None, https=https)
        if session.lifetime_changed:  # set_lifetime: the cookie's Max-Age follows it
            return self._issue(session.token, meta.deadline_ms, https)
        return self.token_headers(
            presented, session.token, https=https, deadline_ms=meta.deadline_ms
        )

    def token_headers(
        self,
        presented: str | None,
        issued: str | None,
        *,
        https: bool = False,
        deadline_ms: int | None = None,
    ) -> list[tuple[str, str]]:
        """Headers telling a client that presented ``presented`` to hold ``issued`` (the
        stored session's token, None when there is none): the new token when it changed
        (saved first time, renewed, restarted), a deletion when the presented one is dead,
        nothing otherwise. ``deadline_ms``: the session's absolute deadline (the persistent
        cookie's ``Max-Age``)."""
        if issued is not None and issued != presented:
            return self._issue(issued, deadline_ms, https)
        if presented and issued is None:
            return self._revoke(https)
        return []

    def _issue(self, token: str, deadline_ms: int | None, https: bool) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = []
        if self.cookie is not None:
            max_age = None
            if self.cookie.persistent and deadline_ms is not None:
                max_age = max(0, round(deadline_ms / 1000 - time.time()))
            headers.append(("Set-Cookie", self._cookie(token, max_age, https)))
        if self.header:
            headers.append((self.header, token))
        return headers

    def _revoke(self, https: bool) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = []
        if self.cookie is not None:
            headers.append(("Set-Cookie", self._cookie("", 0, https, deleting=True)))
        if self.header:
            headers.append((self.header, ""))
        return headers

    def _cookie(self, value: str, max_age: int | None, https: bool, deleting: bool = False) -> str:
        """The ``Set-Cookie`` value, attributes spelled as Starlette writes them (user agents
        match attribute names case-insensitively, RFC 6265 5.2)."""
        c = self.cookie
        assert c is not None
        parts = [f"{c.name}={value}", f"path={c.path}"]
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        if deleting:
            parts.append("expires=Thu, 01 Jan 1970 00:00:00 GMT")
        if c.httponly:
            parts.append("httponly")
        if c.samesite:
            parts.append(f"samesite={c.samesite}")
        secure = c.secure if c.secure is not None else https
        if secure or c.samesite == "none" or c.partitioned:
            parts.append("secure")
        if c.domain:
            parts.append(f"domain={c.domain}")
        if c.partitioned:
            parts.append("partitioned")
        return "; ".join(parts)


def cookie_value(cookie_header: str, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` request header; tolerant of junk (never
    raises). With duplicates the first wins, as browsers send the most specific path first."""
    for item in _split(cookie_header):
        key, sep, value = item.partition("=")
        if sep and key.strip() == name:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value or None
    return None


def _split(header: str) -> Iterable[str]:
    return header.split(";")
