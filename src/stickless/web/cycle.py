"""One request's session, from the presented token to the response headers.

Every adapter (ASGI, WSGI, Flask, Django) leaves each per-request decision to this module and
only translates its framework's request and response:

* which token the request presented (:meth:`~stickless.web.transport.Transport.read_token`);
* when the session is loaded (:meth:`SessionCycle.open`: on first use, through
  :class:`LazySession`; the ASGI middleware loads before the app, with
  :meth:`SessionCycle.aopen`);
* what the store being unavailable means (:class:`FailurePolicy`): answer 503, or go on with a
  fresh session that is never saved (fail-open);
* what is saved, and when (:meth:`SessionCycle.save`): a stored session the request emptied
  ends; changes made *after* the response headers went out are saved only when they need no
  token the client has not got (:meth:`SessionCycle.late_save_allowed`);
* which headers the response gets (:meth:`SessionCycle.response_headers`): the cookie / token
  header is touched only when the session was used, and every response that used it carries
  ``Vary``;
* whether the request is *passive* (:func:`is_passive_path`, :func:`passive`,
  :attr:`SessionCycle.passive`): its load does not slide the idle timeout;
* what a framework's own lifetime knob (Flask's ``session.permanent``, Django's
  ``set_expiry()``) means for the session's lifetime (:func:`apply_lifetime`,
  :func:`configured_lifetime`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar

from stickless.config import SessionConfig
from stickless.errors import ConfigurationError, StoreMisconfigured, StoreUnavailable
from stickless.session import Session, SessionMeta, SessionStatus
from stickless.store.aio import AsyncSessionStore
from stickless.store.sync import SessionStore
from stickless.web.transport import Transport

log = logging.getLogger("stickless.web")

_MISSING: Any = object()
_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """What adapters do when the session store is unreachable: one policy for all of them.

    Fail closed (default): the request is answered ``503 Service Unavailable`` with a short
    plain-text body and ``Retry-After``, never after more than the store's configured timeouts
    (``connect_timeout`` / ``socket_timeout`` times ``retries + 1`` for a load). Nothing is
    retried across requests: the next request tries Redis again, so the app recovers by
    itself as soon as Redis is back.

    Fail open (``fail_open=True``): the request goes on with an empty session that is *not*
    saved, and a warning is logged (without the token). Use it when serving anonymous pages
    matters more than the session.

    A :class:`~stickless.StoreMisconfigured` (``WRONGPASS``, ``NOAUTH``, ``NOPERM``: no
    client can wait that out) is answered by :data:`MISCONFIGURED` instead, whatever the
    policy: ``500`` without ``Retry-After``, never failing open (see :meth:`answering`).
    """

    fail_open: bool = False
    status: int = 503
    body: bytes = b"Session store unavailable, please retry shortly.\n"
    retry_after: int | None = 1

    @property
    def headers(self) -> list[tuple[str, str]]:
        retry = [("Retry-After", str(self.retry_after))] if self.retry_after is not None else []
        return [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(self.body))),
            *retry,
            ("Cache-Control", "no-store"),
        ]

    def answering(self, exc: BaseException) -> FailurePolicy:
        """The policy that answers ``exc``: this one for an outage, :data:`MISCONFIGURED`
        for a :class:`~stickless.StoreMisconfigured`."""
        return MISCONFIGURED if isinstance(exc, StoreMisconfigured) else self

    def report(self, exc: StoreUnavailable, during: str) -> None:
        """Log the failure once (address and cause only: no token, no session data)."""
        action = (
            "continuing with an unsaved empty session"
            if self.fail_open
            else f"answering {self.status}"
        )
        log.warning("session %s failed, %s: %s", during, action, exc)

    def survive(self, exc: StoreUnavailable, during: str) -> None:
        """Fail open: log the failure and return (the caller goes on without the store).
        Fail closed: raise ``exc``, for the adapter to answer with this policy's response."""
        if not self.fail_open:
            raise exc
        self.report(exc, during)


MISCONFIGURED: Final = FailurePolicy(
    status=500,
    body=b"Internal server error: the session store refused this server's credentials.\n",
    retry_after=None,
)
"""How every adapter answers a :class:`~stickless.StoreMisconfigured` (the store logged the
cause, and what to fix, at ERROR)."""


# ------------------------------------------------------------------ passive requests
PASSIVE_ATTRIBUTE: Final = "stickless_passive"
"""The attribute :func:`passive` sets on a view (``functools.wraps`` copies it along)."""


def passive(view: _F) -> _F:
    """Mark a view *passive*: its request reads the session without sliding the idle
    timeout (``store.load(token, touch=False)``), so a poll ("are you still there?") does not
    keep the session alive. The view is returned as it is, with one attribute set; the
    Flask and Django adapters look for it (``stickless.flask.passive``,
    ``stickless.django.passive_session``). A save (the view writes) still slides the
    idle timeout, as any save does (refreshed when due, see docs/expiry.md)."""
    setattr(view, PASSIVE_ATTRIBUTE, True)
    return view


def is_marked_passive(view: object) -> bool:
    """True when :func:`passive` marked ``view``."""
    return getattr(view, PASSIVE_ATTRIBUTE, False) is True


def passive_prefixes(value: object, setting: str = "passive_paths") -> tuple[str, ...]:
    """``value`` (a sequence of path prefixes, each starting with ``/``) checked once, for
    every adapter; ``setting`` names it in the error."""
    if value is None:
        return ()
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ConfigurationError(f"{setting} must be a sequence of path prefixes, not a str")
    prefixes = tuple(value)
    if any(not isinstance(p, str) or not p.startswith("/") for p in prefixes):
        raise ConfigurationError(f"{setting} entries must be str starting with '/'")
    return prefixes


def is_passive_path(path: str, prefixes: Sequence[str]) -> bool:
    """True when ``path`` starts with one of ``prefixes`` (``passive_paths``): a plain
    string prefix, as ``exclude_paths``: ``"/api/ping"`` also matches ``"/api/pings"``; end it
    with ``/`` to match a folder only."""
    return any(path.startswith(prefix) for prefix in prefixes)


# ------------------------------------------------------------------------ lifetimes
_SLACK_MS: Final = 1000
"""A lifetime within this of the one wanted is left alone (no write for a rounding)."""


def current_lifetime(session: Session, config: SessionConfig) -> tuple[int, int]:
    """``(idle_ms, absolute_ms)`` that apply to ``session`` now: its pending
    ``set_lifetime``, else what is stored, else the configured ones (a new session)."""
    meta = session.meta
    idle = meta.idle_ms if meta is not None else config.idle_ms
    absolute = meta.deadline_ms - meta.created_ms if meta is not None else config.absolute_ms
    pending = session.lifetime
    if pending is not None:
        idle = pending.idle_ms if pending.idle_ms is not None else idle
        absolute = pending.absolute_ms if pending.absolute_ms is not None else absolute
    return idle, absolute


def session_age_ms(session: Session) -> int:
    """Milliseconds since the session was created (0 while new; local clock against the
    server's creation stamp, which only matters to within the lifetimes' slack)."""
    meta = session.meta
    return 0 if meta is None else max(0, int(time.time() * 1000) - meta.created_ms)


def configured_lifetime(session: Session, config: SessionConfig) -> tuple[int, int]:
    """The lifetime to go back to when the app drops the session's own one (Flask's
    ``permanent = False``, Django's ``set_expiry(None)``): the configured idle timeout, and
    the configured absolute timeout, except that a session already older than that keeps
    at most one more idle window (it is never cut off at once)."""
    _, absolute = current_lifetime(session, config)
    age = session_age_ms(session)
    return config.idle_ms, max(config.absolute_ms, min(absolute, age + config.idle_ms))


def apply_lifetime(session: Session, config: SessionConfig, idle_ms: int, absolute_ms: int) -> bool:
    """Give ``session`` this lifetime (``session.set_lifetime``), each part capped by
    ``SessionConfig.max_idle_timeout`` / ``max_absolute_timeout``, and only the parts that
    differ from its current ones by more than a second (nothing to write otherwise). True
    when something changed."""
    idle_ms = max(1, min(idle_ms, config.max_idle_ms))
    absolute_ms = max(1, min(absolute_ms, config.max_absolute_ms))
    current_idle, current_absolute = current_lifetime(session, config)
    idle = idle_ms / 1000 if abs(idle_ms - current_idle) > _SLACK_MS else None
    absolute = absolute_ms / 1000 if abs(absolute_ms - current_absolute) > _SLACK_MS else None
    if idle is None and absolute is None:
        return False
    session.set_lifetime(idle=idle, absolute=absolute)
    return True


class SessionCycle:
    """Bookkeeping of one request's session. Adapters create one per request.

    ``session`` is None until :meth:`open` (or :meth:`aopen`) ran: a lazy adapter calls it on
    first access only, so an untouched request costs no round trip and sends no header.
    ``markers`` are keys that alone do not make a session worth keeping (Flask's
    ``"_permanent"``).
    """

    __slots__ = (
        "address",
        "delivered",
        "failure",
        "https",
        "markers",
        "passive",
        "policy",
        "presented",
        "referenced",
        "refused",
        "saveable",
        "session",
        "transport",
        "user_agent",
    )

    def __init__(
        self,
        transport: Transport,
        policy: FailurePolicy,
        *,
        cookie_header: str | None,
        token_header: str | None,
        https: bool,
        markers: frozenset[str] = frozenset(),
    ) -> None:
        self.transport = transport
        """Writes the response headers; an adapter may set another one before them (Flask's
        cookie kind follows ``session.permanent``)."""
        self.policy = policy
        self.https = https
        self.markers = markers
        self.presented: str | None = transport.read_token(cookie_header, token_header)
        """The token the request carried (unvalidated; the store validates), or None."""
        self.session: Session | None = None
        self.saveable = True
        """False after a fail-open: the session is a stand-in and is never saved."""
        self.failure: StoreUnavailable | None = None
        """The load failure the request is refused for (raised again on any later use)."""
        self.referenced = False
        """True when the framework saw the session used in a way the Session cannot record
        (Flask sets ``session.accessed`` whenever ``flask.session`` is used)."""
        self.delivered = False
        """True once the response headers (with the session's) were handed on."""
        self.refused = False
        """True once the request is answered with the failure policy's response."""
        self.passive = False
        """True for a passive request (``passive_paths``, a :func:`passive` view, a
        ``load_session(request, touch=False)``): the load does not slide the idle timeout.
        Adapters set it before the session is loaded."""
        self.user_agent: str | None = None
        """The request's ``User-Agent`` (adapters set it; recorded for the device list)."""
        self.address: str | None = None
        """The client address as the framework trusts it (adapters set it)."""

    # --------------------------------------------------------------------------- load
    def open(self, store: SessionStore) -> Session:
        """The request's session, loaded the first time (one round trip when a token was
        presented, none without). Store unavailable: fail closed raises
        :class:`StoreUnavailable` (now and on every later call), fail open gives a fresh
        session that is never saved."""
        if self.session is not None:
            return self.session
        if self.failure is not None:
            raise self.failure  # already refused: no second wait for the store
        try:
            loaded = (
                store.load(self.presented, touch=not self.passive)
                if self.presented is not None
                else None
            )
        except StoreUnavailable as exc:
            return self._load_failed(exc, store)
        return self._hand_out(store.new() if loaded is None else loaded)

    async def aopen(self, store: AsyncSessionStore) -> Session:
        """:meth:`open` for asyncio adapters."""
        try:
            loaded = (
                await store.load(self.presented, touch=not self.passive)
                if self.presented is not None
                else None
            )
        except StoreUnavailable as exc:
            return self._load_failed(exc, store)
        return self._hand_out(store.new() if loaded is None else loaded)

    def _hand_out(self, session: Session) -> Session:
        """The request's session from now on, knowing the request's device (whoever saves
        it, the save that creates it or logs it in records the device)."""
        self.session = session
        # ASGI's client, WSGI's REMOTE_ADDR (behind the app's own proxy middleware): never
        # a raw X-Forwarded-For; neither it nor the user agent is ever logged
        session.note_device(user_agent=self.user_agent, address=self.address)
        return session

    def fail_load(self, exc: StoreUnavailable, store: SessionStore | AsyncSessionStore) -> Session:
        """A failure while opening the session after the load itself (a migration source's
        read, :mod:`stickless.web.migrate`), handled as a failed load: raised (and on
        every later use) when failing closed, else a fresh stand-in that is never saved."""
        self.session = None
        return self._load_failed(exc, store)

    def _load_failed(
        self, exc: StoreUnavailable, store: SessionStore | AsyncSessionStore
    ) -> Session:
        self.policy = self.policy.answering(exc)
        self.policy.report(exc, "load")
        if not self.policy.fail_open:
            self.refused = True
            self.failure = exc
            raise exc
        self.saveable = False
        self.session = store.new()
        return self.session

    def refuse(self, exc: StoreUnavailable) -> None:
        """The app let ``exc`` out (a load at first access, or a store call of its own): the
        request is answered with the failure policy's response. Logged unless it was the
        load, which logged already."""
        if not self.refused:
            self.policy = self.policy.answering(exc)
            self.policy.report(exc, "request")
            self.refused = True

    # --------------------------------------------------------------------------- save
    def save(self, store: SessionStore, *, late: bool = False) -> bool:
        """Save what this point of the request calls for (see :meth:`_to_save`); ``late``:
        after the response headers went out. False when the request must be refused (the
        save failed, closed, before the headers): the adapter answers the policy's
        response instead of the app's."""
        session = self._to_save(late)
        try:
            if session is not None:
                store.save(session)
        except StoreUnavailable as exc:
            return self._save_failed(exc, late)
        return True

    async def asave(self, store: AsyncSessionStore, *, late: bool = False) -> bool:
        """:meth:`save` for asyncio adapters."""
        session = self._to_save(late)
        try:
            if session is not None:
                await store.save(session)
        except StoreUnavailable as exc:
            return self._save_failed(exc, late)
        return True

    def _to_save(self, late: bool) -> Session | None:
        """The session to hand to ``store.save`` now, or None. Never a fail-open stand-in,
        nor, late, anything :meth:`late_save_allowed` refuses. A stored session the request
        emptied ends (destroyed, cookie deleted), as with Starlette's and Flask's own
        sessions; a new one holding nothing but ``markers`` is not stored."""
        session = self.session
        if session is None or not self.saveable:
            return None
        if late and (not self.delivered or self.refused or not self.late_save_allowed()):
            return None
        if session.status is SessionStatus.LOADED and not session.modified:
            return None  # a read: nothing to write (what the store would find, sooner)
        bare = session.user_id is None and all(key in self.markers for key in dict.keys(session))
        if bare and session.is_new:
            return None
        if (
            bare
            and session.status is SessionStatus.LOADED  # stored, no renew pending
            and session.meta is not None
            and session.pending_changes()  # this request removed what it held
        ):
            session.invalidate()
        return session

    def _save_failed(self, exc: StoreUnavailable, late: bool) -> bool:
        self.policy = self.policy.answering(exc)
        if late:  # the headers are out: it can only be logged
            self.policy.report(exc, "late save")
            return True
        self.policy.report(exc, "save")
        if not self.policy.fail_open:
            self.refused = True
            return False
        self.saveable = False
        return True

    def late_save_allowed(self) -> bool:
        """After the headers went out: True when the session has changes that can still be
        saved under the token the client already holds (data changes, ``incr``, ``logout``
        of a stored session). A brand-new session, a pending renewal (``renew()``, or an
        identity change, which renews by itself), or data written after ``logout()`` would
        need a new token that can no longer reach the client: those changes are dropped,
        with a warning (never showing the data)."""
        session = self.session
        if session is None or not self.saveable or not session.modified:
            return False
        needs_new_token = (
            session.meta is None
            or session.renew_pending
            or (session.status is SessionStatus.INVALIDATED and dict.__len__(session) > 0)
        )
        if needs_new_token:
            log.warning(
                "session changed after the response headers were sent in a way that needs a "
                "new token (new session, renew/login, or data after logout): not saved"
            )
            return False
        return True

    # ----------------------------------------------------------------------- response
    def response_headers(self) -> list[tuple[str, str]]:
        """Headers to add to the response, after the save.

        ``Set-Cookie`` / token header only when the request used the session (read or
        wrote it, or logged out) and the client's token changed (first save, renewal) or
        ended: a route that never touches the session leaves even an unknown or expired
        cookie alone. ``Vary`` (``Cookie`` and the token header) whenever the session was
        used, hence on every response that sets or deletes the cookie: a shared cache must
        never hand one client's ``Set-Cookie`` to another, even when the app marked the
        response ``Cache-Control: public``. Nothing for an untouched request.
        """
        self.delivered = True
        session = self.session
        used = self.referenced or (session is not None and self._used(session))
        if not used:
            return []
        headers: list[tuple[str, str]] = []
        if self.saveable:
            headers = self.transport.response_headers(self.presented, session, https=self.https)
        if self.transport.cookie is not None:
            headers.append(("Vary", "Cookie"))
        if self.transport.header:
            headers.append(("Vary", self.transport.header))
        return headers

    def _used(self, session: Session) -> bool:
        """True when the request used the session (after the save): it read or wrote it,
        ended it, or the save gave it a token the client does not hold yet."""
        return (
            session.accessed
            or session.status is SessionStatus.INVALIDATED
            or (session.meta is not None and session.token != self.presented)
        )


def _view(name: str, doc: str) -> Any:
    """A read-only property of :class:`LazySession`: attribute ``name`` of the loaded
    Session (loading it first)."""
    return property(lambda self: getattr(self.load(), name), doc=doc)


class LazySession(MutableMapping[str, Any]):
    """The request's session, loaded from the store on first access.

    Every mapping operation (``s[k]``, ``get``, ``in``, ``len``, iteration, ``pop``,
    ``update``, ``|=``...) and the session API (``login``, ``logout``, ``incr``,
    ``user_id``, ``token``, ``status``...) goes to the real :class:`Session`, loading it
    first; reads are recorded by that Session (``Vary``). :meth:`load` returns the Session.
    Not a ``dict``: pass ``load()`` to code that needs one (``json.dumps``).

    The WSGI middleware's ``environ["stickless.session"]``; Flask's ``flask.session`` is this
    class plus Flask's value tagging (it overrides :meth:`_encode`, :meth:`_decode` and
    :meth:`_wrote`).
    """

    __slots__ = ("_cycle", "_store")

    def __init__(self, cycle: SessionCycle, store: SessionStore) -> None:
        self._cycle = cycle
        self._store = store

    @property
    def cycle(self) -> SessionCycle:
        """The request's :class:`SessionCycle`."""
        return self._cycle

    def load(self) -> Session:
        """The real Session (one round trip the first time when a token was presented, none
        without a token). Raises StoreUnavailable when the store is down (fail closed)."""
        return self._cycle.open(self._store)

    @property
    def loaded(self) -> bool:
        """True once the session was loaded (or created) in this request."""
        return self._cycle.session is not None

    # ---------------------------------------------------- value translation (overridden)
    def _encode(self, key: str, value: Any) -> Any:
        """The form in which ``value`` is put into the Session."""
        return value

    def _decode(self, key: str, stored: Any) -> Any:
        """The value handed out for ``stored``, the Session's value at ``key``."""
        return stored

    def _wrote(self, key: str | None = None, value: Any = _MISSING) -> None:
        """Called after every change: ``key`` set to ``value``, or removed (no ``value``);
        no ``key``: a change of the session as a whole."""

    # ------------------------------------------------------------------------ mapping
    def __getitem__(self, key: str) -> Any:
        return self._decode(key, self.load()[key])

    def __setitem__(self, key: str, value: Any) -> None:
        self.load()[key] = self._encode(key, value)
        self._wrote(key, value)

    def __delitem__(self, key: str) -> None:
        del self.load()[key]
        self._wrote(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.load())

    def __len__(self) -> int:
        return len(self.load())

    def __contains__(self, key: object) -> bool:
        return key in self.load()

    def popitem(self) -> tuple[str, Any]:
        key, stored = self.load().popitem()
        value = self._decode(key, stored)
        self._wrote(key)
        return key, value

    def clear(self) -> None:
        """See :meth:`Session.clear`: data set afterwards is a new identity (new token)."""
        self.load().clear()
        self._wrote()

    def __ior__(self, other: Any) -> LazySession:
        self.update(other)
        return self

    def copy(self) -> dict[str, Any]:
        """A plain ``dict`` of the values (not tracked)."""
        return {key: self[key] for key in list(self)}

    def __repr__(self) -> str:
        # Never shows values; never loads (a debugger's repr must not do I/O).
        session = self._cycle.session
        state = "(not loaded)" if session is None else repr(session)
        return f"<{type(self).__name__} {state}>"

    def __reduce__(self) -> Any:
        raise TypeError("sessions are not picklable (stickless never pickles)")

    # -------------------------------------------------------------------- session API
    def login(self, user_id: str) -> None:
        """See :meth:`Session.login`: bind the user and renew the token at save."""
        self.load().login(user_id)
        self._wrote()

    def logout(self) -> None:
        """See :meth:`Session.logout`: destroyed at save."""
        self.invalidate()

    def invalidate(self) -> None:
        """See :meth:`Session.invalidate`."""
        self.load().invalidate()
        self._wrote()

    def renew(self) -> None:
        """See :meth:`Session.renew`: new token at save, same data."""
        self.load().renew()
        self._wrote()

    def incr(self, key: str, amount: int = 1) -> int:
        """See :meth:`Session.incr`: atomic at save."""
        value = self.load().incr(key, amount)
        self._wrote(key)
        return value

    @property
    def user_id(self) -> str | None:
        """The bound user (None: anonymous); see :attr:`Session.user_id`."""
        return self.load().user_id

    @user_id.setter
    def user_id(self, value: str | None) -> None:
        self.load().user_id = value
        self._wrote()

    @property
    def device_name(self) -> str | None:
        """See :attr:`Session.device_name` ("work laptop"): written at save."""
        return self.load().device_name

    @device_name.setter
    def device_name(self, value: str | None) -> None:
        self.load().device_name = value
        self._wrote()

    def set_lifetime(
        self, idle: float | timedelta | None = None, absolute: float | timedelta | None = None
    ) -> None:
        """See :meth:`Session.set_lifetime` ("remember me"): applied at save."""
        self.load().set_lifetime(idle=idle, absolute=absolute)
        self._wrote()

    token: str = _view("token", "The token the client keeps (never log it).")
    status: SessionStatus = _view("status", "See :attr:`Session.status`.")
    is_new: bool = _view("is_new", "True until the session was saved once.")
    modified: bool = _view("modified", "True when a save would write something.")
    meta: SessionMeta | None = _view("meta", "Timestamps kept by the store (None while new).")
    created_at: datetime | None = _view("created_at", "See :attr:`Session.created_at`.")
    last_access: datetime | None = _view("last_access", "See :attr:`Session.last_access`.")
    expires_at: datetime | None = _view("expires_at", "See :attr:`Session.expires_at`.")
    absolute_expires_at: datetime | None = _view(
        "absolute_expires_at", "See :attr:`Session.absolute_expires_at`."
    )
    seconds_left: float | None = _view("seconds_left", "See :attr:`Session.seconds_left`.")
    session_id: str = _view("session_id", "See :attr:`Session.session_id`.")
