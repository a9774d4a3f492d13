"""ASGI session middleware: a drop-in for Starlette's ``SessionMiddleware``, on Redis.

::

    from starlette.middleware import Middleware
    from stickless.asgi import SessionMiddleware

    app = Starlette(routes=..., middleware=[Middleware(SessionMiddleware, url="redis://...")])
    # FastAPI: app.add_middleware(SessionMiddleware, url="redis://...")

``scope["session"]`` (so ``request.session`` / ``websocket.session``) is a
:class:`stickless.Session`, a ``dict`` subclass, and ``scope["stickless.store"]`` the
:class:`AsyncSessionStore` (for ``sessions_for`` / ``revoke_user``). It is a pure ASGI
middleware: it imports nothing from Starlette and works with any ASGI framework.

Round trips per request: 0 when no token arrives and the app writes nothing; 1 when a token
arrives (the load) and the app only reads; 2 when it also writes (load + one save).
Loading is *eager* when a token is present: ``scope["session"]`` must be a real ``dict``
(``JSONResponse(request.session)`` serializes it at C level), and a dict cannot load itself
on first access from synchronous code. No token, no load.

The save runs when the app sends ``http.response.start`` (or ``websocket.accept``), before
that message is passed on; the cookie / token header is added to it. Changes the app makes
after that (streaming bodies, background tasks, a WebSocket conversation) are saved when
the app returns, as long as they need no new token (see
:meth:`~stickless.web.cycle.SessionCycle.late_save_allowed`). A request whose app raises
saves nothing; a WebSocket app that raises (an uncaught ``WebSocketDisconnect`` is a
common way for a socket to end) still gets its changes since the accept saved.

Store unavailable: ``503`` with ``Retry-After`` (at load, or at save, replacing the app's
response), or, with ``fail_open=True``, a fresh session that is never saved. WebSockets are
refused with a ``503`` handshake response when the server supports the
``websocket.http.response`` extension, else closed with code 1013 (try again later).
Lifespan and other scope types pass through untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Unpack

from stickless.config import SessionConfig
from stickless.errors import ConfigurationError, StoreUnavailable
from stickless.session import Session
from stickless.store.aio import AsyncSessionStore
from stickless.web.cycle import FailurePolicy, SessionCycle
from stickless.web.migrate.adopt import AsyncSource, amigrate, is_async_source
from stickless.web.options import MiddlewareKwargs, MiddlewareOptions

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

WS_TRY_AGAIN_LATER = 1013
"""WebSocket close code sent when the store is unavailable and no HTTP denial is possible."""

_STARTS = frozenset({"http.response.start", "websocket.accept", "websocket.http.response.start"})


def _request_tokens(scope: Scope, header: str | None) -> tuple[str | None, str | None]:
    """The ``Cookie`` header (several joined with ``; ``) and the token header, as str.
    Bytes are decoded as latin-1, which never fails; the store validates the token."""
    cookies: list[str] = []
    token: str | None = None
    wanted = header.lower().encode("latin-1") if header else None
    for name, value in scope.get("headers") or ():
        lowered = bytes(name).lower()
        if lowered == b"cookie":
            cookies.append(bytes(value).decode("latin-1"))
        elif wanted is not None and lowered == wanted and token is None:
            token = bytes(value).decode("latin-1")
    return ("; ".join(cookies) or None), token


def _header(scope: Scope, name: bytes) -> str | None:
    """The first request header ``name`` (lower case), as str (latin-1), or None."""
    for key, value in scope.get("headers") or ():
        if bytes(key).lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _client(scope: Scope) -> str | None:
    """The client's host as the server set ``scope["client"]`` (behind a proxy: as the
    server's proxy-headers support, e.g. uvicorn's ``--forwarded-allow-ips``, rewrote it;
    never read from ``X-Forwarded-For`` here)."""
    client = scope.get("client")
    host = client[0] if isinstance(client, list | tuple) and client else None
    return host if isinstance(host, str) else None


def _encoded(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]


class SessionMiddleware:
    """Server-side sessions in Redis / Valkey for any ASGI app (Starlette, FastAPI, ...).

    Args:
        app: the ASGI app to wrap.
        url: store URL (``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``,
            ``redis+cluster://``). Default None: ``store`` if given, else the
            ``STICKLESS_URL`` environment variable; neither raises ConfigurationError.
        store: a ready :class:`AsyncSessionStore` instead of ``url`` (then ``config`` and
            ``secret_key`` belong to the store and passing them here raises).
        secret_key: signs tokens (``SessionConfig.secret_key``). Default None: unsigned
            256-bit random tokens, which is already safe. Starlette's ``Secret`` works.
        session_cookie: cookie name. Default ``"session"``.
        max_age: seconds. Default 14 days. Becomes the idle timeout (absolute timeout at
            least as long) when the middleware builds its store and no ``config`` is given.
            None: a browser-session cookie (no ``Max-Age``).
        path, domain, same_site, partitioned: cookie attributes. Defaults ``"/"``, None,
            ``"lax"``, False.
        https_only: True: cookie always ``Secure``. Default False: ``Secure`` on https/wss.
        config: :class:`SessionConfig` of the store built from ``url``. Default
            ``SessionConfig()`` adjusted by ``max_age`` / ``secret_key``.
        header: also carry the token in this header (e.g. ``"X-Session-Token"``); it wins
            over the cookie on the way in and is set on the response whenever the cookie is.
            Default None.
        cookie: False: no cookie (``header`` required). Default True.
        exclude_paths: path prefixes that get no session (no ``scope["session"]``, no store
            traffic). Default none.
        passive_paths: path prefixes whose requests load the session without sliding its
            idle timeout (a poll that must not keep the session alive). Default none. Per
            route with ``lazy=True``: ``await load_session(request, touch=False)`` or the
            FastAPI dependency :func:`stickless.fastapi.passive_session`.
        fail_open: True: when the store is unavailable go on with an empty, unsaved session.
            Default False: answer 503.
        lazy: True: load nothing up front; routes await :func:`load_session`. Default False.
        migrate_from: the sessions of the library used before, read on first use so users
            stay logged in (:class:`stickless.migrate.StarsessionsRedis`,
            :class:`stickless.migrate.StarletteCookie`; any
            :class:`~stickless.web.migrate.adopt.AsyncSource`). The old session's cookie
            must have the middleware's cookie name. Default None.
    """

    def __init__(
        self,
        app: ASGIApp,
        url: str | None = None,
        *,
        store: AsyncSessionStore | None = None,
        migrate_from: AsyncSource | None = None,
        **options: Unpack[MiddlewareKwargs],
    ) -> None:
        self.app = app
        if migrate_from is not None and not is_async_source(migrate_from):
            raise ConfigurationError(
                "migrate_from must be an asyncio migration source such as "
                "stickless.migrate.StarsessionsRedis or StarletteCookie"
            )
        self.migrate_from = migrate_from
        """The migration source (None: no migration)."""
        self.options = MiddlewareOptions(**options)
        self._url = self.options.store_url(url, store)
        self._config = store.config if store is not None else self.options.session_config()
        # from_url makes no connection; a bad URL fails here, not at the first request. The
        # store keeps one client per event loop itself (asyncio connections cannot cross
        # loops: Starlette's TestClient without ``with`` runs each request in a new loop).
        self._store = (
            store if store is not None else AsyncSessionStore.from_url(self._url, self._config)
        )

    @property
    def config(self) -> SessionConfig:
        """The store's configuration."""
        return self._config

    @property
    def store(self) -> AsyncSessionStore:
        """The store: the one given as ``store=``, or the one built from ``url`` (it keeps
        one connection pool per event loop)."""
        return self._store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or self.options.excluded(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        cookie_header, token_header = _request_tokens(scope, self.options.transport.header)
        cycle = self.options.cycle(
            cookie_header=cookie_header,
            token_header=token_header,
            https=scope.get("scheme") in ("https", "wss"),
            path=scope.get("path", ""),
            user_agent=_header(scope, b"user-agent"),
            address=_client(scope),
        )
        store = self.store
        scope["stickless.store"] = store
        scope["stickless.cycle"] = cycle
        if self.options.lazy:
            scope["stickless.migrate_from"] = self.migrate_from
            scope["session"] = _NOT_LOADED
        else:
            try:
                scope["session"] = await _open(cycle, store, self.migrate_from)
            except StoreUnavailable:
                await self._refuse(scope, receive, send, cycle.policy, connect_pending=True)
                return

        async def send_wrapper(message: Message) -> None:
            if cycle.refused:
                return  # the app's response was replaced by the failure response
            if message["type"] in _STARTS and not cycle.delivered:
                if not await cycle.asave(store):
                    await self._refuse(scope, receive, send, cycle.policy, connect_pending=False)
                    return
                extra = cycle.response_headers()
                if extra:
                    message = dict(message)
                    message["headers"] = [*message.get("headers", ()), *_encoded(extra)]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except StoreUnavailable as exc:  # a lazy load, or a store call of the app's own
            if cycle.delivered:
                raise
            cycle.refuse(exc)
            await self._refuse(scope, receive, send, cycle.policy, connect_pending=False)
            return
        except Exception:
            if kind == "websocket":  # a dropped connection is how many sockets end
                await cycle.asave(store, late=True)
            raise
        await cycle.asave(store, late=True)

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        policy: FailurePolicy,
        *,
        connect_pending: bool,
    ) -> None:
        """Answer with the failure policy's response (503 + Retry-After). For a WebSocket
        whose app has not run yet (``connect_pending``), ``websocket.connect`` is received
        first, as the ASGI spec expects before any handshake answer."""
        headers = _encoded(policy.headers)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": policy.status, "headers": headers})
            await send({"type": "http.response.body", "body": policy.body, "more_body": False})
            return
        if connect_pending:
            await receive()  # websocket.connect
        if "websocket.http.response" in (scope.get("extensions") or {}):
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": policy.status,
                    "headers": headers,
                }
            )
            await send(
                {"type": "websocket.http.response.body", "body": policy.body, "more_body": False}
            )
        else:
            await send({"type": "websocket.close", "code": WS_TRY_AGAIN_LATER})


class _NotLoaded(dict[str, Any]):
    """``scope["session"]`` in lazy mode until :func:`load_session` ran: any use says so."""

    def _refuse(self, *args: object, **kwargs: object) -> Any:
        raise RuntimeError(
            "the session is not loaded: the middleware runs with lazy=True, so await "
            "stickless.asgi.load_session(request) first (or declare the FastAPI dependency)"
        )

    __getitem__ = __setitem__ = __delitem__ = __contains__ = __iter__ = __len__ = _refuse
    get = keys = values = items = pop = update = setdefault = clear = _refuse


_NOT_LOADED = _NotLoaded()


async def load_session(request: Any, *, touch: bool = True) -> Session:
    """The request's session, loaded now (one round trip when a token was presented; none
    when it is already loaded). ``request`` is a Starlette/FastAPI ``Request``,
    ``WebSocket`` or an ASGI scope. With ``lazy=True`` routes call this (or use it as a
    FastAPI dependency: ``session: Session = Depends(load_session)``); without, it just
    returns the session the middleware loaded. When the store is unavailable and the policy
    refuses, it raises :class:`~stickless.errors.StoreUnavailable` and the middleware
    answers 503, as it would have before the route ran.

    ``touch=False``: a passive read, which does not slide the idle timeout (a poll that must
    not keep the session alive; ``session.seconds_left`` is the time left as it stands).
    It needs ``lazy=True`` (or the path in ``passive_paths``): a session the middleware
    already loaded and refreshed raises ``RuntimeError``."""
    scope: Scope = getattr(request, "scope", request)
    cycle: SessionCycle | None = scope.get("stickless.cycle")
    session = scope.get("session")
    if isinstance(session, Session):
        if not touch and cycle is not None and not cycle.passive and cycle.presented:
            raise RuntimeError(
                "load_session(touch=False): the middleware loaded this session already and "
                "refreshed its idle timeout; use SessionMiddleware(lazy=True), or list the "
                "path in passive_paths"
            )
        return session
    if cycle is None:
        raise RuntimeError("stickless.asgi.SessionMiddleware is not installed for this route")
    if not touch:
        cycle.passive = True
    loaded = await _open(cycle, scope["stickless.store"], scope.get("stickless.migrate_from"))
    scope["session"] = loaded
    return loaded


async def _open(
    cycle: SessionCycle, store: AsyncSessionStore, migrate_from: AsyncSource | None
) -> Session:
    """Load the request's session; a new one takes over the old library's session the
    request presented, if any (``migrate_from``)."""
    session = await cycle.aopen(store)
    if migrate_from is not None:
        session = await amigrate(cycle, store, migrate_from)
    return session


def session_of(scope: Scope) -> Session:
    """The stickless session of an ASGI scope (raises KeyError outside the middleware or on
    an excluded path)."""
    session = scope["session"]
    if not isinstance(session, Session):
        raise TypeError("scope['session'] is not a stickless Session")
    return session
