"""The keyword options the session middlewares share, turned into core objects.

The ASGI and WSGI middlewares (and any adapter that wants Starlette-compatible keywords) take
the same options as ``starlette.middleware.sessions.SessionMiddleware`` plus a few of ours;
:class:`MiddlewareOptions` checks them once and derives the :class:`SessionConfig`, the
:class:`Transport` and the store URL from them, so every adapter maps them identically.

Mapping (see docs/adapters/starlette.md):

* ``max_age`` (seconds, default 14 days): when the middleware builds its own store from a URL
  *and* no ``config`` is given, it becomes ``SessionConfig.idle_timeout`` and the absolute
  timeout is raised to at least ``max_age``. With an explicit ``config`` or ``store``, their
  timeouts win and ``max_age`` only chooses the cookie kind. ``None``: a browser-session
  cookie (``CookieSettings(persistent=False)``) and the config's idle timeout.
* ``secret_key``: ``SessionConfig.secret_key`` (token signing). Optional: tokens are 256-bit
  random values either way.
* ``https_only=True``: cookie always ``Secure``; False (default): ``Secure`` on https only.
* ``cookie=False``: no cookie at all (then ``header`` is required).
* ``passive_paths``: path prefixes whose requests read the session without sliding its idle
  timeout (:func:`stickless.web.cycle.is_passive_path`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, TypedDict

from stickless.config import SessionConfig
from stickless.errors import ConfigurationError
from stickless.web.cycle import FailurePolicy, SessionCycle, is_passive_path, passive_prefixes
from stickless.web.transport import CookieSettings, Transport

URL_ENV = "STICKLESS_URL"
"""Environment variable read when a middleware gets neither ``url`` nor ``store``."""

DEFAULT_MAX_AGE = 14 * 24 * 60 * 60
"""Starlette's default ``max_age``: 14 days."""

SecretKey = str | Sequence[str] | None


def resolve_url(url: str | None, *, needs: str = "pass url='redis://...' or store=...") -> str:
    """``url``, or the ``STICKLESS_URL`` environment variable when ``url`` is None or empty:
    the same rule for every adapter (a URL in the app's own settings wins over the
    environment).

    Raises :class:`ConfigurationError` when neither is set; ``needs`` says what the adapter's
    user can do instead (its own setting).
    """
    if url:
        return url
    from_env = os.environ.get(URL_ENV, "").strip()
    if from_env:
        return from_env
    raise ConfigurationError(
        f"no session store (e.g. 'redis://127.0.0.1:6379/0'): {needs}, or set the {URL_ENV} "
        "environment variable"
    )


def _secret(value: object) -> str | Sequence[str]:
    """Accept str, a sequence of str (rotation), or an object with a str() such as
    ``starlette.datastructures.Secret``."""
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return str(value)


class MiddlewareKwargs(TypedDict, total=False):
    """The keyword options of the middlewares (see :class:`MiddlewareOptions` for defaults)."""

    secret_key: SecretKey
    session_cookie: str
    max_age: int | None
    path: str
    same_site: Literal["lax", "strict", "none"]
    https_only: bool
    domain: str | None
    partitioned: bool
    config: SessionConfig | None
    header: str | None
    cookie: bool
    exclude_paths: Sequence[str]
    passive_paths: Sequence[str]
    fail_open: bool
    lazy: bool


@dataclass(frozen=True, slots=True)
class MiddlewareOptions:
    """Validated middleware options. Field defaults are the middlewares' defaults."""

    secret_key: SecretKey = None
    session_cookie: str = "session"
    max_age: int | None = DEFAULT_MAX_AGE
    path: str = "/"
    same_site: Literal["lax", "strict", "none"] = "lax"
    https_only: bool = False
    domain: str | None = None
    partitioned: bool = False
    config: SessionConfig | None = None
    header: str | None = None
    cookie: bool = True
    exclude_paths: Sequence[str] = ()
    passive_paths: Sequence[str] = ()
    """Path prefixes of *passive* requests: their load does not slide the idle timeout (a
    poll such as "how long until I am logged out?" must not keep the session alive). Same
    matching as ``exclude_paths``. Default none."""
    fail_open: bool = False
    lazy: bool = False
    """ASGI only: do not load at the start of each request; a route that needs the session
    awaits :func:`stickless.asgi.load_session` (or declares the FastAPI dependency), so a
    route that never uses it costs no round trip even when a cookie is present. Default
    False (``request.session`` is ready in every route, as with Starlette's middleware)."""
    policy: FailurePolicy = field(init=False)
    transport: Transport = field(init=False)

    def __post_init__(self) -> None:
        if self.max_age is not None and (
            isinstance(self.max_age, bool) or not isinstance(self.max_age, int | float)
        ):
            raise ConfigurationError("max_age must be a number of seconds or None")
        if self.max_age is not None and self.max_age <= 0:
            raise ConfigurationError("max_age must be > 0 (or None for a browser-session cookie)")
        if isinstance(self.exclude_paths, str):
            raise ConfigurationError("exclude_paths must be a sequence of path prefixes, not a str")
        if any(not p.startswith("/") for p in self.exclude_paths):
            raise ConfigurationError("exclude_paths entries must start with '/'")
        cookie = None
        if self.cookie:
            cookie = CookieSettings(
                name=self.session_cookie,
                path=self.path,
                domain=self.domain,
                secure=True if self.https_only else None,
                samesite=self.same_site,
                partitioned=self.partitioned,
                persistent=self.max_age is not None,
            )
        object.__setattr__(self, "exclude_paths", tuple(self.exclude_paths))
        object.__setattr__(self, "passive_paths", passive_prefixes(self.passive_paths))
        object.__setattr__(self, "transport", Transport(cookie=cookie, header=self.header))
        object.__setattr__(self, "policy", FailurePolicy(fail_open=self.fail_open))

    def session_config(self) -> SessionConfig:
        """The config of a store the middleware builds itself (from a URL).

        ``config`` (default ``SessionConfig()``) with ``secret_key`` applied when given, and,
        only when no ``config`` was passed, ``idle_timeout=max_age`` and
        ``absolute_timeout=max(default, max_age)``.
        """
        config = self.config or SessionConfig()
        changes: dict[str, object] = {}
        if self.secret_key is not None:
            changes["secret_key"] = _secret(self.secret_key)
        if self.config is None and self.max_age is not None:
            changes["idle_timeout"] = self.max_age
            changes["absolute_timeout"] = max(config.absolute_timeout, self.max_age)
        return config.with_options(**changes) if changes else config

    def store_url(self, url: str | None, store: object | None) -> str:
        """The URL to build the store from: ``url``, or ``STICKLESS_URL`` when it is None.
        ``""`` when a ready-made ``store`` is given: it carries its own config, so ``url``,
        ``config`` and ``secret_key`` are refused with it."""
        if store is None:
            return resolve_url(url)
        if url is not None:
            raise ConfigurationError("pass url or store, not both")
        if self.config is not None:
            raise ConfigurationError("pass config to the store, not to the middleware")
        if self.secret_key is not None:
            raise ConfigurationError(
                "pass secret_key in the store's SessionConfig, not to the middleware"
            )
        return ""

    def cycle(
        self,
        *,
        cookie_header: str | None,
        token_header: str | None,
        https: bool,
        path: str = "",
        user_agent: str | None = None,
        address: str | None = None,
    ) -> SessionCycle:
        """A request's :class:`SessionCycle` under these options (passive when ``path`` starts
        with one of ``passive_paths``; ``user_agent`` and the client ``address`` for the
        device list)."""
        cycle = SessionCycle(
            self.transport,
            self.policy,
            cookie_header=cookie_header,
            token_header=token_header,
            https=https,
        )
        cycle.passive = is_passive_path(path, self.passive_paths)
        cycle.user_agent, cycle.address = user_agent, address
        return cycle

    def excluded(self, path: str) -> bool:
        """True when ``path`` starts with one of ``exclude_paths`` (such requests get no
        session). A plain string prefix: ``"/static"`` also matches ``"/staticfiles"``; end
        it with ``/`` (``"/static/"``) to match a folder only."""
        return any(path.startswith(prefix) for prefix in self.exclude_paths)
