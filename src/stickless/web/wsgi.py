"""WSGI session middleware: server-side sessions in Redis / Valkey for any WSGI app.

::

    from stickless.wsgi import SessionMiddleware, get_session

    def app(environ, start_response):
        session = environ["stickless.session"]      # a LazySession: loads on first use
        session["visits"] = session.get("visits", 0) + 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(session["visits"]).encode()]

    app = SessionMiddleware(app, url="redis://127.0.0.1:6379/0")

``environ["stickless.session"]`` is a :class:`LazySession`: a mutable mapping that loads the
session on first access, so a request that never touches it costs no round trip and gets no
header. ``get_session(environ)`` (or ``environ["stickless.session"].load()``) returns the
real :class:`stickless.Session` (a ``dict`` subclass, for ``json.dumps`` and friends).
``environ["stickless.store"]`` is the :class:`SessionStore`.

When the save happens: the middleware holds back the app's ``start_response`` until the
first body chunk (or ``write()``), or the end of an empty body; it saves then and passes the
status and headers, plus the cookie / token header, to the server. So a generator app that
calls ``start_response`` first and changes the session before yielding works. Changes made
after the first chunk are saved when the server closes the response, as long as they need
no new token (see :meth:`~stickless.web.cycle.SessionCycle.late_save_allowed`). An app that
raises saves nothing.

Store unavailable: ``503`` with ``Retry-After``, or with ``fail_open=True`` a fresh session
that is never saved. A load fails inside the app (at first access): the
:class:`~stickless.errors.StoreUnavailable` it raises is turned into the 503 when it leaves
the app; a framework that turns every exception into its own 500 hides it (use the
framework's adapter: ``stickless.flask``, ``stickless.django``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from http import HTTPStatus
from types import TracebackType
from typing import Any, Protocol, Unpack

from stickless.errors import StoreUnavailable
from stickless.session import Session
from stickless.store.sync import SessionStore
from stickless.web.cycle import LazySession, SessionCycle
from stickless.web.options import MiddlewareKwargs, MiddlewareOptions

ExcInfo = tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]
Headers = list[tuple[str, str]]
Write = Callable[[bytes], object]


class StartResponse(Protocol):
    def __call__(
        self, status: str, headers: Headers, exc_info: ExcInfo | None = ..., /
    ) -> Write: ...


WSGIEnviron = dict[str, Any]
WSGIApp = Callable[[WSGIEnviron, StartResponse], Iterable[bytes]]

SESSION_KEY = "stickless.session"
"""The ``environ`` key of the request's :class:`LazySession`."""
STORE_KEY = "stickless.store"
"""The ``environ`` key of the :class:`SessionStore`."""

__all__ = ["SESSION_KEY", "STORE_KEY", "LazySession", "SessionMiddleware", "get_session"]


def get_session(environ: Mapping[str, Any]) -> Session:
    """The request's real :class:`Session` (loading it if needed). KeyError outside the
    middleware or on an excluded path."""
    lazy = environ[SESSION_KEY]
    if not isinstance(lazy, LazySession):
        raise TypeError(f"environ[{SESSION_KEY!r}] is not a stickless LazySession")
    return lazy.load()


class SessionMiddleware:
    """Server-side sessions for any WSGI app, in ``environ["stickless.session"]``.

    The options are those of :class:`stickless.asgi.SessionMiddleware` (Starlette's names),
    with a blocking :class:`SessionStore` as ``store``:

    Args:
        app: the WSGI app to wrap.
        url: store URL. Default None: ``store`` if given, else ``STICKLESS_URL``.
        store: a ready :class:`SessionStore` (its config then governs; passing ``config`` or
            ``secret_key`` too raises).
        secret_key, session_cookie, max_age, path, same_site, https_only, domain,
        partitioned, config, header, cookie, exclude_paths, passive_paths, fail_open: as for
            the ASGI middleware (``exclude_paths`` and ``passive_paths`` match ``PATH_INFO``;
            ``https`` is ``wsgi.url_scheme == "https"``).
    """

    def __init__(
        self,
        app: WSGIApp,
        url: str | None = None,
        *,
        store: SessionStore | None = None,
        **options: Unpack[MiddlewareKwargs],
    ) -> None:
        self.app = app
        self.options = MiddlewareOptions(**options)
        url = self.options.store_url(url, store)
        self.store = (
            store
            if store is not None
            else SessionStore.from_url(url, self.options.session_config())
        )
        header_name = self.options.transport.header
        self._header_key = "HTTP_" + header_name.upper().replace("-", "_") if header_name else None

    def __call__(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        if self.options.excluded(environ.get("PATH_INFO", "")):
            return self.app(environ, start_response)
        cycle = self.options.cycle(
            cookie_header=environ.get("HTTP_COOKIE"),
            token_header=environ.get(self._header_key) if self._header_key else None,
            https=environ.get("wsgi.url_scheme") == "https",
            path=environ.get("PATH_INFO", ""),
            user_agent=environ.get("HTTP_USER_AGENT"),
            address=environ.get("REMOTE_ADDR"),  # what the server (or ProxyFix) trusts
        )
        environ[SESSION_KEY] = LazySession(cycle, self.store)
        environ[STORE_KEY] = self.store
        exchange = _Exchange(self.store, cycle, start_response)
        try:
            result = self.app(environ, exchange.start_response)
        except StoreUnavailable as exc:
            return exchange.refuse_after(exc)
        return _Body(result, exchange)


class _Exchange:
    """Holds the app's status and headers back until the first body byte, then saves the
    session and hands everything to the server (or the 503 in its place)."""

    __slots__ = (
        "_headers",
        "_replaced",
        "_server_start",
        "_status",
        "_write",
        "cycle",
        "store",
    )

    def __init__(self, store: SessionStore, cycle: SessionCycle, server_start: StartResponse):
        self.store = store
        self.cycle = cycle
        self._server_start = server_start
        self._status: str | None = None
        self._headers: Headers = []
        self._write: Write | None = None
        self._replaced = False

    @property
    def flushed(self) -> bool:
        return self._write is not None

    def start_response(
        self, status: str, headers: Headers, exc_info: ExcInfo | None = None, /
    ) -> Write:
        """The ``start_response`` the app sees: only records status and headers. A second
        call (with ``exc_info``) replaces them while nothing went out; after that it
        re-raises, as PEP 3333 requires. The server later sees a single, first call."""
        if exc_info is not None and exc_info[1] is not None and self.flushed:
            raise exc_info[1].with_traceback(exc_info[2])
        self._status, self._headers = status, list(headers)
        return self.write

    def write(self, data: bytes) -> None:
        """The ``write`` callable of legacy apps: flushes the headers first."""
        if self._replaced:
            return
        flushed = self.flush()
        assert self._write is not None
        self._write(data if flushed else self.cycle.policy.body)

    def flush(self) -> bool:
        """Save, then pass status and headers on. False when the 503's status and headers
        went out instead: the caller sends the policy's body and drops the app's."""
        if self.flushed:
            return not self._replaced
        if self._status is None:
            raise RuntimeError("the WSGI app returned a body before calling start_response")
        if not self.cycle.save(self.store):
            self._refuse()
            return False
        headers = self._headers + self.cycle.response_headers()
        self._write = self._server_start(self._status, headers)
        return True

    def _refuse(self) -> None:
        policy = self.cycle.policy
        self._replaced = True
        status = f"{policy.status} {HTTPStatus(policy.status).phrase}"
        self._write = self._server_start(status, policy.headers)

    def refuse_after(self, exc: StoreUnavailable) -> list[bytes]:
        """The app raised StoreUnavailable (a load at first access, or its own store call):
        answer 503 if the headers are not out yet (returns its body), else re-raise."""
        if self.flushed:
            raise exc
        self.cycle.refuse(exc)
        self._refuse()
        return [self.cycle.policy.body]

    def finish(self) -> None:
        """After the server closed the response: save changes made after the headers went
        out, when they can be saved under the token the client holds (the cycle knows
        whether the headers went out, and whether the request was refused)."""
        self.cycle.save(self.store, late=True)


class _Body:
    """The response iterable: flushes the held-back headers before the first chunk and
    runs the late save after ``close()``."""

    __slots__ = ("_exchange", "_result")

    def __init__(self, result: Iterable[bytes], exchange: _Exchange) -> None:
        self._result = result
        self._exchange = exchange

    def __iter__(self) -> Iterator[bytes]:
        exchange = self._exchange
        try:
            for chunk in self._result:
                if not exchange.flush():
                    yield exchange.cycle.policy.body
                    return
                yield chunk
            if not exchange.flushed and not exchange.flush():
                yield exchange.cycle.policy.body
        except StoreUnavailable as exc:
            yield from exchange.refuse_after(exc)

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._exchange.finish()
