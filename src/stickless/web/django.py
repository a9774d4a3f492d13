"""The Django session engine: ``SESSION_ENGINE = "stickless.django"``.

Settings::

    SESSION_ENGINE = "stickless.django"
    STICKLESS_URL = "redis://127.0.0.1:6379/0"        # default: the environment's STICKLESS_URL
    STICKLESS_CONFIG = SessionConfig(...)             # optional (or a dict of its fields)
    STICKLESS_FAILURE_POLICY = FailurePolicy(...)     # optional: 503 (default) or fail-open
    STICKLESS_MIGRATE_FROM = "django.contrib.sessions.backends.cache"   # optional, see below
    MIDDLEWARE = [..., "stickless.django.SessionMiddleware", ...]   # instead of Django's

``request.session`` keeps Django's whole API (``SessionBase``): the cookie is still written by
Django's session middleware, with Django's ``SESSION_COOKIE_*`` settings. What changes is below
it: one Redis hash per session, one field per key, JSON values (never pickle), and a save writes
only what the request changed (the stickless change log), so overlapping requests that change
different keys keep both changes, and a request that ends after a logout cannot bring the
session back.

How Django's model maps onto stickless:

* ``session_key`` is the stickless token (the cookie value, ``<family>.<secret>``).
* Django code works on a plain dict (``self._session_cache``). The engine remembers the JSON of
  every value it handed out; at save it compares and applies only the differences (sets and
  deletes) to the underlying :class:`stickless.Session`, which writes them in one script.
  Values are shared with that Session, so in-place changes of nested values
  (``request.session["cart"].append(x)``) are saved without ``modified = True``.
* ``request.session.stickless`` is that :class:`stickless.Session`: use it for atomic counters
  (``request.session.stickless.incr("views")``), metadata (``created_at``, ``expires_at``) and
  the user binding (``user_id``). Read and write data through ``request.session``.
* Round trips: untouched session 0; read 1 (the load, which also refreshes the idle TTL); write 2
  (load + save); a brand-new session's first write 1 (no "does this key exist?" query: the save
  script refuses an existing key).
* ``cycle_key()`` (called by ``django.contrib.auth.login``) renews the token in place (one
  atomic script: same data, new key, the old key dead at once). ``flush()`` (``logout``)
  destroys the session.
* The session's user binding (``stickless.Session.user_id``, used by ``sessions_for`` and
  ``revoke_user``) follows ``django.contrib.auth``'s ``_auth_user_id``: whenever a save sees
  that key set or changed, the session is bound to ``str(value)``; when it is removed, the
  binding is dropped.
* Expiry: without ``STICKLESS_CONFIG`` the store's ``idle_timeout`` is
  ``SESSION_COOKIE_AGE`` and its ``absolute_timeout`` is ``max(SESSION_COOKIE_AGE, 24 h)``;
  Redis expires the keys, so ``clear_expired()`` is a no-op. ``set_expiry()`` is kept in
  ``_session_expiry`` as in Django and becomes the session's own lifetime
  (``Session.set_lifetime``), enforced by the server; it shortens *and* extends, up to
  ``SessionConfig.max_idle_timeout`` / ``max_absolute_timeout`` (a longer value raises
  ``ValueError`` at the call). ``set_expiry(seconds)``: that idle timeout, and the absolute
  deadline moves at each save to at least ``seconds`` ahead (capped by
  ``max_absolute_timeout`` from creation), as Django's own engines push ``expire_date`` at
  each save; a ``datetime`` / ``timedelta``: that deadline (one in the past: the session is
  dropped at save); ``0`` (browser-close cookie) or ``None``: the configured lifetime.
* Passive requests (a poll that must not keep the session alive): paths starting with one
  of ``STICKLESS_PASSIVE_PATHS`` and views decorated with :func:`passive_session` load the
  session without sliding its idle timeout.
* ``STICKLESS_MIGRATE_FROM`` (default None) names the previous engine: a cookie holding one
  of its keys (no dot in it) has that session's data moved into a new stickless session on
  first use (and deleted from the old engine, so a replayed old cookie is worthless); see
  :mod:`stickless.web.django_migrate`.
* Keys starting with ``"_stickless:"`` are the engine's own (an empty-session marker);
  they are never shown to Django code, and setting one raises.
* ``SESSION_SERIALIZER`` is not used: each value is stored as JSON by stickless's codec (the
  same values Django's ``JSONSerializer`` accepts, except that non-``str`` dict keys raise
  ``TypeError`` instead of being turned into strings, and tuples come back as lists).

Implementation note: every operation is written once, as a plan (a generator that yields
from the store's own plans, :attr:`stickless.SessionStore.plan`); :func:`_run` runs it with
the blocking :class:`~stickless.SessionStore`'s driver, :func:`_arun` with the driver of the
process's :class:`~stickless.AsyncSessionStore` for the running event loop. So ``save`` and
``asave`` cannot drift apart, and there is one driver of each kind, the store's.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Final, TypeVar

from django.conf import settings
from django.contrib.sessions.backends.base import CreateError, SessionBase, UpdateError
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.http import HttpResponse
from django.utils import timezone
from django.utils.cache import patch_vary_headers

from stickless import codec
from stickless.config import SessionConfig
from stickless.errors import ConfigurationError, SessionConflict, StoreUnavailable
from stickless.session import Session
from stickless.store import aio, sync
from stickless.store.aio import AsyncSessionStore
from stickless.store.plan import Op, Planner
from stickless.store.sync import SessionStore as BlockingStore
from stickless.tokens import MAX_TOKEN_LENGTH
from stickless.web import django_migrate
from stickless.web.cycle import (
    FailurePolicy,
    apply_lifetime,
    configured_lifetime,
    current_lifetime,
    is_marked_passive,
    is_passive_path,
    passive,
    passive_prefixes,
    session_age_ms,
)
from stickless.web.migrate.adopt import adopt
from stickless.web.options import resolve_url
from stickless.web.transport import Transport

__all__ = [
    "SessionMiddleware",
    "SessionStore",
    "get_async_store",
    "get_store",
    "passive_session",
]

_T = TypeVar("_T")

AUTH_USER_KEY = "_auth_user_id"
"""``django.contrib.auth.SESSION_KEY`` (not imported: that would need the app registry)."""

HIDDEN_PREFIX = "_stickless:"
"""Session keys starting with this are the engine's own and never shown to Django code."""
_CREATED = HIDDEN_PREFIX + "created"
"""Written only when a session is created empty (``create()``): stickless stores nothing for
an empty new session, but Django's ``create()`` promises a stored record."""
EXPIRY_KEY = "_session_expiry"
"""Where Django's ``set_expiry()`` keeps its value (Django's own key)."""
_SETTINGS = frozenset(
    {"STICKLESS_URL", "STICKLESS_CONFIG", "STICKLESS_FAILURE_POLICY", "SESSION_COOKIE_AGE"}
)


# ----------------------------------------------------------------------------- the stores
class _Stores:
    """The process's stores, built from settings on first use: one blocking store and one
    async store (which keeps a connection pool per event loop itself). Rebuilt when a
    ``STICKLESS_*`` setting changes (tests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sync: BlockingStore | None = None
        self._async: AsyncSessionStore | None = None
        self._policy: FailurePolicy | None = None

    def sync(self) -> BlockingStore:
        store = self._sync
        if store is None:
            with self._lock:
                if self._sync is None:
                    self._sync = BlockingStore.from_url(_url(), _config())
                store = self._sync
        return store

    def for_running_loop(self) -> AsyncSessionStore:
        with self._lock:
            if self._async is None:
                self._async = AsyncSessionStore.from_url(_url(), _config())
            return self._async

    def policy(self) -> FailurePolicy:
        policy = self._policy
        if policy is None:
            value = getattr(settings, "STICKLESS_FAILURE_POLICY", None) or FailurePolicy()
            if not isinstance(value, FailurePolicy):
                raise ImproperlyConfigured(
                    "STICKLESS_FAILURE_POLICY must be a stickless.web.policy.FailurePolicy"
                )
            policy = self._policy = value
        return policy

    def reset(self) -> None:
        """Forget the stores (the blocking one is closed; async ones are dropped, as they can
        only be closed from their own loop)."""
        with self._lock:
            old, self._sync = self._sync, None
            self._async = None  # its pools belong to their loops: dropped, not closed
            self._policy = None
        if old is not None:
            old.close()


_stores = _Stores()


def _url() -> str:
    """``STICKLESS_URL`` from settings, else from the environment (as every adapter)."""
    url = getattr(settings, "STICKLESS_URL", None)
    if url is not None and not isinstance(url, str):
        raise ImproperlyConfigured("STICKLESS_URL must be a str, e.g. 'redis://127.0.0.1:6379/0'")
    try:
        return resolve_url(url, needs='SESSION_ENGINE = "stickless.django" needs STICKLESS_URL')
    except ConfigurationError as exc:
        raise ImproperlyConfigured(str(exc)) from None


def _config() -> SessionConfig:
    value = getattr(settings, "STICKLESS_CONFIG", None)
    if value is None:
        age = float(settings.SESSION_COOKIE_AGE)
        return SessionConfig(
            idle_timeout=age, absolute_timeout=max(age, SessionConfig().absolute_timeout)
        )
    if isinstance(value, SessionConfig):
        return value
    if isinstance(value, Mapping):
        return SessionConfig(**value)
    raise ImproperlyConfigured("STICKLESS_CONFIG must be a stickless.SessionConfig or a dict")


def _on_setting_changed(*, setting: str, **_: Any) -> None:
    if setting in _SETTINGS:
        _stores.reset()
    _header_transport.cache_clear()
    _passive_prefixes.cache_clear()


setting_changed.connect(_on_setting_changed, dispatch_uid="stickless.django")


def get_store() -> BlockingStore:
    """The process's blocking :class:`stickless.SessionStore` (built from settings on first
    use), e.g. ``get_store().revoke_user(str(user.pk))`` to log a user out everywhere."""
    return _stores.sync()


def get_async_store() -> AsyncSessionStore:
    """The :class:`stickless.AsyncSessionStore` of the running event loop (one per loop).
    Raises ``RuntimeError`` outside a running loop."""
    return _stores.for_running_loop()


# ---------------------------------------------------------------------- running plans
def _run(flow: Callable[[Planner], Op[_T]]) -> _T:
    """Run an operation with the blocking store (and its driver)."""
    store = _stores.sync()
    return sync.drive(flow(store.plan), store)


async def _arun(flow: Callable[[Planner], Op[_T]]) -> _T:
    """Run an operation with the running loop's async store (and its driver)."""
    store = _stores.for_running_loop()
    return await aio.drive(flow(store.plan), store)


def _hidden(key: object) -> bool:
    return isinstance(key, str) and key.startswith(HIDDEN_PREFIX)


def _encode(key: object, value: object) -> bytes:
    try:
        return codec.encode(value)
    except TypeError as exc:
        raise TypeError(f"session[{key!r}]: value cannot be stored as JSON: {exc}") from None


def _as_stored(sl: Session, data: Mapping[str, Any]) -> dict[str, bytes]:
    """Each value's JSON as ``sl`` stored it (encoded only where it holds none): after a
    load or a save, ``sl`` holds the JSON of exactly the keys of ``data``."""
    stored = sl.stored_jsons()
    if stored.keys() == data.keys():
        return stored
    return {key: stored.get(key) or _encode(key, value) for key, value in data.items()}


def _deadline_ms(expiry: str) -> int:
    """A ``set_expiry()`` datetime (Django keeps its ISO form) in epoch milliseconds; a
    naive one is local time, as Django's ``timezone.now()`` without ``USE_TZ``."""
    return int(datetime.fromisoformat(expiry).timestamp() * 1000)


def _check_expiry(value: object, sl: Session | None) -> None:
    """``set_expiry(value)`` within the store's maxima, else ValueError (nothing changed)."""
    config = _stores.sync().config
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        if value * 1000 > config.max_idle_ms:
            raise ValueError(
                f"set_expiry({value}) is longer than SessionConfig.max_idle_timeout "
                f"({config.max_idle_ms / 1000:g} s): raise that setting to allow it"
            )
        return
    if isinstance(value, timedelta):
        value = timezone.now() + value
    if isinstance(value, datetime):
        now_ms = int(time.time() * 1000)
        created = sl.meta.created_ms if sl is not None and sl.meta is not None else now_ms
        if int(value.timestamp() * 1000) - created > config.max_absolute_ms:
            raise ValueError(
                f"set_expiry({value.isoformat()}) is later than SessionConfig."
                f"max_absolute_timeout ({config.max_absolute_ms / 1000:g} s) after the "
                "session's creation: raise that setting to allow it"
            )


# ---------------------------------------------------------------------------- the engine
class SessionStore(SessionBase):  # type: ignore[misc]
    """Django's ``SessionBase`` on a stickless store. See the module docstring.

    Per-request state: ``_sl`` is the stickless :class:`~stickless.Session` (None until
    loaded or created), ``_seen`` the JSON of each value handed to Django code (what a save
    compares with), ``_degraded`` is set when the store was unreachable at load and the
    failure policy is fail-open (nothing is saved then).
    """

    # Declared for the type checker only: both are SessionBase's (a property and a lazily set
    # attribute); annotations without a value do not shadow them at run time.
    _session_key: str | None
    _session_cache: dict[str, Any]

    def __init__(self, session_key: str | None = None) -> None:
        self._sl: Session | None = None
        self._seen: dict[str, bytes] = {}
        self._degraded = False
        self._modified = False
        self._dropped = False
        self.passive = False
        """True: the load does not slide the idle timeout (``STICKLESS_PASSIVE_PATHS``,
        :func:`passive_session`); set it before the session is first used."""
        self.device_source: tuple[str | None, str | None] = (None, None)
        """The request's ``User-Agent`` and ``REMOTE_ADDR`` (set by the middleware),
        recorded for the device list when the session is created or logs in."""
        super().__init__(session_key)

    # ------------------------------------------------------------------ Django hooks
    @property
    def modified(self) -> bool:
        """Django's flag, or True when the stickless Session has something to write (an
        ``incr``, a user binding, a renewal, an in-place change of a nested value)."""
        return self._modified or self._stickless_modified()

    @modified.setter
    def modified(self, value: bool) -> None:
        self._modified = bool(value)

    def _validate_session_key(self, key: object) -> bool:
        """Django's rule (a string of at least 8 characters) plus an upper bound; whether
        the key is a well-formed (and, with a ``secret_key``, correctly signed) token is
        checked by the store, which answers "unknown" for anything else without I/O."""
        return isinstance(key, str) and 8 <= len(key) <= MAX_TOKEN_LENGTH

    def _get_new_session_key(self) -> str:
        """A fresh token (no "does it exist?" query: 256 random bits, and the save script
        refuses a token that exists). The session becomes a new, unsaved one."""
        return self._new_session().token

    async def _aget_new_session_key(self) -> str:
        return self._get_new_session_key()

    def is_empty(self) -> bool:
        """Django's check, plus: a new session with changes made through :attr:`stickless`
        (an ``incr`` on an empty session) is not empty. With ``SESSION_SAVE_EVERY_REQUEST``
        a session that was never loaded is loaded first (the save that follows needs that
        round trip anyway), so a cookie naming an unknown session is deleted instead of
        being saved into."""
        if self._sl is not None and self._sl.is_new and self._stickless_modified():
            return False
        if (
            settings.SESSION_SAVE_EVERY_REQUEST
            and self._session_key is not None
            and "_session_cache" not in self.__dict__
        ):
            self._get_session()
        return bool(super().is_empty())

    @classmethod
    def clear_expired(cls) -> None:
        """No-op: Redis expires sessions by itself."""

    @classmethod
    async def aclear_expired(cls) -> None:
        """No-op: Redis expires sessions by itself."""

    # ------------------------------------------------------------------ public API
    def load(self) -> dict[str, Any]:
        """The session's data (``{}`` and no key when it is unknown, expired or destroyed).
        With ``STICKLESS_MIGRATE_FROM``, a key of the old engine brings its data over."""
        presented = self.session_key
        data = _run(self._load_flow)
        if self.session_key is None:
            self._take_over(django_migrate.take(presented, SessionStore))
        return data

    async def aload(self) -> dict[str, Any]:
        presented = self.session_key
        data = await _arun(self._load_flow)
        if self.session_key is None:
            self._take_over(await django_migrate.atake(presented, SessionStore))
        return data

    def exists(self, session_key: str | None) -> bool:
        """True when ``session_key`` names a live session (one round trip; a malformed key
        is answered without I/O)."""
        return _run(partial(self._exists_flow, session_key=session_key))

    async def aexists(self, session_key: str | None) -> bool:
        return await _arun(partial(self._exists_flow, session_key=session_key))

    def create(self) -> None:
        """Store the session under a new key, with the current data (possibly empty), now.
        Raises ``CreateError`` if the token exists (that means a broken random generator:
        it is not retried)."""
        _run(self._create_flow)

    async def acreate(self) -> None:
        await _arun(self._create_flow)

    def save(self, must_create: bool = False) -> None:
        """Write what this request changed, in one round trip (plus one load when the
        session was not read in this request, e.g. after ``clear()``).

        ``must_create=True`` (or no key yet) creates a new session under a key minted here:
        a key chosen by the client is never adopted. Raises ``UpdateError`` when the session
        was destroyed or expired since it was loaded: it is not brought back (Django's
        middleware then answers 400, ``SessionInterrupted``).
        """
        _run(partial(self._save_flow, must_create=must_create))

    async def asave(self, must_create: bool = False) -> None:
        await _arun(partial(self._save_flow, must_create=must_create))

    def delete(self, session_key: str | None = None) -> None:
        """Destroy a session now (default: this one). Unknown keys are ignored."""
        _run(partial(self._delete_flow, session_key=session_key))

    async def adelete(self, session_key: str | None = None) -> None:
        await _arun(partial(self._delete_flow, session_key=session_key))

    def cycle_key(self) -> None:
        """Give the session a new key, keeping its data; the old key stops working at once.
        A stored session is renewed now (one atomic script, with this request's pending
        changes); a session not stored yet just gets its key, and is written at save."""
        _run(self._cycle_flow)

    async def acycle_key(self) -> None:
        await _arun(self._cycle_flow)

    def set_expiry(self, value: Any) -> None:
        """Django's ``set_expiry()``, as the session's own lifetime (see the module
        docstring): ``ValueError`` past ``SessionConfig.max_idle_timeout`` /
        ``max_absolute_timeout``."""
        self._get_session()  # loads (Django's set_expiry would): the creation time counts
        _check_expiry(value, self._sl)
        super().set_expiry(value)

    async def aset_expiry(self, value: Any) -> None:
        await self._aget_session()
        _check_expiry(value, self._sl)
        await super().aset_expiry(value)

    @property
    def stickless(self) -> Session:
        """The underlying :class:`stickless.Session` (loaded on first use, like
        ``request.session``). Use it for ``incr`` (atomic counters), ``user_id``,
        ``created_at`` / ``expires_at``; read and write data through ``request.session``
        (values written here directly are saved, but only show up in ``request.session``
        after the save)."""
        return _run(self._attach_flow)

    async def astickless(self) -> Session:
        """:attr:`stickless` for async code."""
        return await _arun(self._attach_flow)

    # ------------------------------------------------------------------ the operations
    def _load_flow(self, plan: Planner) -> Op[dict[str, Any]]:
        key = self.session_key
        sl: Session | None = None
        if key is not None:
            try:
                sl = yield from self._fetch(plan, key)
            except StoreUnavailable as exc:
                _stores.policy().answering(exc).survive(exc, "load")
                self._degraded = True
                return self._forget()
        if sl is None:
            self._session_key = None
            return self._forget()
        return self._adopt(sl, keep_cache=False)

    def _exists_flow(self, plan: Planner, session_key: str | None) -> Op[bool]:
        if not self._validate_session_key(session_key):
            return False
        return (yield from self._fetch(plan, session_key)) is not None

    def _fetch(self, plan: Planner, key: object) -> Op[Session | None]:
        """Load ``key`` (without sliding the idle timeout when :attr:`passive`)."""
        return (yield from plan.load(key, touch=not self.passive))

    def _attach_flow(self, plan: Planner) -> Op[Session]:
        """Make sure the stickless Session is there (loading it if needed)."""
        if "_session_cache" not in self.__dict__:
            yield from self._load_flow(plan)
        elif self._sl is None and self.session_key is not None and not self._degraded:
            sl = yield from self._fetch(plan, self.session_key)
            if sl is None:
                self._session_key = None
            else:
                self._adopt(sl, keep_cache=True)
        self.accessed = True
        return self._sl if self._sl is not None else self._new_session()

    def _create_flow(self, plan: Planner) -> Op[None]:
        sl = self._sl
        if sl is None or not sl.is_new:
            sl = self._new_session()  # a stored session starts over, with the current data
        self._seen = {}
        self._session_key = sl.token
        yield from self._save_flow(plan, must_create=True)
        self._modified = True

    def _save_flow(self, plan: Planner, must_create: bool) -> Op[None]:
        if self._degraded:  # fail-open after a failed load: never write a partial view
            if self.session_key is None:
                self._session_key = self._new_session().token
            return
        if self.session_key is None:
            yield from self._create_flow(plan)
            return
        sl = self._sl
        if must_create or (sl is not None and sl.is_new):
            if sl is None or not sl.is_new or sl.token != self.session_key:
                yield from self._create_flow(plan)  # never adopt a key we did not mint
                return
            data: dict[str, Any] = self._get_session(no_load=True)
        elif sl is None:  # not read in this request: clear(), SAVE_EVERY_REQUEST, ...
            cache: dict[str, Any] | None = self.__dict__.get("_session_cache")
            try:
                sl = yield from self._fetch(plan, self.session_key)
            except StoreUnavailable as exc:
                _stores.policy().answering(exc).survive(exc, "save")
                return
            if sl is None:
                self._session_key = None
                if cache is not None:  # data written blind: it goes into a new session
                    yield from self._create_flow(plan)
                return
            data = self._adopt(sl, keep_cache=True)
        elif "_session_cache" in self.__dict__:
            data = self._session_cache
        else:  # loaded, then `del session._session_cache`: nothing changed on Django's side
            data = self._adopt(sl, keep_cache=False)
        was_new = sl.is_new
        self._apply(sl, data)
        user_agent, address = self.device_source
        sl.note_device(user_agent=user_agent, address=address)
        if self._dropped:  # set_expiry() with a deadline already past: the session ends
            self._dropped = False
            if sl.meta is not None:
                yield from plan.destroy(sl)
            self._forget()
            self._session_key = self._new_session().token  # names nothing stored
            return
        try:
            result = yield from plan.save(sl)
        except SessionConflict as exc:
            if was_new:
                raise CreateError(str(exc)) from exc
            raise
        except StoreUnavailable as exc:
            _stores.policy().answering(exc).survive(exc, "save")
            return
        if result.outcome == "gone":
            self._sl, self._seen = None, {}
            raise UpdateError("the session was destroyed or expired since it was loaded")
        if result.outcome == "destroyed":  # the app invalidated it through .stickless
            self._session_key = None
            self._sl, self._seen = None, {}
            data.clear()
            return
        self._synced(sl, data)

    def _delete_flow(self, plan: Planner, session_key: str | None) -> Op[None]:
        own = session_key is None or session_key == self.session_key
        key = self.session_key if session_key is None else session_key
        if key is None:
            return
        if own:
            sl, self._sl, self._seen = self._sl, None, {}
            if sl is not None and sl.is_new and sl.token == key:
                return  # never stored
        yield from plan.destroy(key)

    def _cycle_flow(self, plan: Planner) -> Op[None]:
        yield from self._attach_flow(plan)
        self._modified = True
        sl = self._sl
        if self._degraded or sl is None:
            return
        if sl.is_new:  # not stored yet: it gets its key now and is written at save
            self._session_key = sl.token
            return
        sl.renew(forward=False)  # as Django's engines delete the old key: it keeps no power
        try:
            yield from self._save_flow(plan, must_create=False)
        except UpdateError:
            # destroyed meanwhile: the data goes on under a brand-new key, as with Django's
            # own cycle_key (create + delete); it is written at the next save
            self._session_key = self._new_session().token

    # ------------------------------------------------------------------ helpers
    def _take_over(self, moved: Mapping[str, Any] | None) -> None:
        """Data of the old engine (if any) becomes this (new) session's: written, under a
        new stickless key, by the save at the end of the request."""
        if moved:
            adopt(self._session_cache.__setitem__, moved, source=django_migrate.source_name())
            self._modified = True

    def _stickless_modified(self) -> bool:
        sl = self._sl
        if sl is None:
            return False
        try:
            return sl.modified
        except TypeError:  # a non-JSON value put in place: let save() raise the clear error
            return True

    def _forget(self) -> dict[str, Any]:
        """No stickless Session (unknown key, or store down with fail-open): empty data."""
        self._sl, self._seen = None, {}
        cache: dict[str, Any] = {}
        self._session_cache = cache
        return cache

    def _new_session(self) -> Session:
        self._sl = _stores.sync().new()  # no I/O
        self._seen = {}
        return self._sl

    def _adopt(self, sl: Session, *, keep_cache: bool) -> dict[str, Any]:
        """Take ``sl`` as this request's session; return the dict Django code works on."""
        self._sl = sl
        if self._session_key is not None and sl.token != self._session_key:
            # the cookie was signed with an older key of the rotation: Django sends the
            # newest one only for a modified session (the save writes nothing)
            self._modified = True
        self._session_key = sl.token
        data = dict(dict.items(sl))  # C speed: dict.copy(sl) calls sl.__getitem__ per key
        for key in [key for key in data if _hidden(key)]:
            del data[key]
        self._seen = _as_stored(sl, data)
        cache: dict[str, Any] | None = self.__dict__.get("_session_cache")
        if keep_cache and cache is not None:
            return cache
        self._session_cache = data
        return data

    def _apply(self, sl: Session, data: dict[str, Any]) -> None:
        """Replay on ``sl`` what Django code changed in ``data`` since it was handed out."""
        seen = self._seen
        for key in [key for key in seen if key not in data]:
            if dict.__contains__(sl, key):
                del sl[key]
            if key == AUTH_USER_KEY:
                sl.user_id = None
        for key, value in data.items():
            if _hidden(key):
                raise ValueError(
                    f"session key {key!r}: keys starting with {HIDDEN_PREFIX!r} "
                    "are reserved by stickless"
                )
            if type(value) in _IMMUTABLE and key in seen and value is dict.get(sl, key):
                continue  # the very value handed out, and it cannot change in place
            if seen.get(key) != _encode(key, value):
                sl[key] = value
                if key == AUTH_USER_KEY:
                    sl.user_id = None if value in (None, "") else str(value)
        self._map_expiry(sl, data)
        if sl.is_new and not dict.__len__(sl) and sl.user_id is None:
            sl[_CREATED] = True
        elif data and dict.__contains__(sl, _CREATED):
            del sl[_CREATED]  # not needed once there is data: the hash exists anyway

    def _map_expiry(self, sl: Session, data: dict[str, Any]) -> None:
        """``set_expiry()`` as ``sl``'s own lifetime, when it changed in this request or the
        save writes anyway (an int's deadline follows each save; a passive read writes
        nothing). Sets ``_dropped`` for a deadline already past."""
        expiry = data.get(EXPIRY_KEY)
        changed = self._seen.get(EXPIRY_KEY) != (
            _encode(EXPIRY_KEY, expiry) if EXPIRY_KEY in data else None
        )
        if not changed and (expiry is None or not sl.modified):
            return
        if sl.lifetime is not None:
            return  # the app set one itself through .stickless: it wins
        config = _stores.sync().config
        if isinstance(expiry, int) and not isinstance(expiry, bool) and expiry < 0:
            self._dropped = True
        elif isinstance(expiry, int) and not isinstance(expiry, bool) and expiry > 0:
            ahead = session_age_ms(sl) + expiry * 1000
            apply_lifetime(sl, config, expiry * 1000, max(config.absolute_ms, ahead))
        elif isinstance(expiry, str):
            try:
                deadline = _deadline_ms(expiry)
            except ValueError:
                return  # not Django's: left as it is
            created = sl.meta.created_ms if sl.meta is not None else int(time.time() * 1000)
            if deadline <= time.time() * 1000:
                self._dropped = True
            else:
                apply_lifetime(sl, config, config.max_idle_ms, deadline - created)
        elif current_lifetime(sl, config) != (config.idle_ms, config.absolute_ms):
            apply_lifetime(sl, config, *configured_lifetime(sl, config))

    def _synced(self, sl: Session, data: dict[str, Any]) -> None:
        """After a save: the key may have changed (renewal), counters hold Redis's values."""
        self._session_key = sl.token
        for key in [key for key in data if not dict.__contains__(sl, key)]:
            del data[key]
        for key, value in dict.items(sl):
            if not _hidden(key) and data.get(key, _MISSING) is not value:
                data[key] = value
        self._seen = _as_stored(sl, data)


_MISSING: Any = object()
_IMMUTABLE: Final = frozenset({str, int, float, bool, type(None)})


# ---------------------------------------------------------------------- the middleware
class SessionMiddleware(DjangoSessionMiddleware):  # type: ignore[misc]
    """Django's ``SessionMiddleware``, plus: an unreachable store answers the failure
    policy's response (503 with ``Retry-After`` by default) instead of a 500.

    Use it *instead of* ``django.contrib.sessions.middleware.SessionMiddleware``, at the same
    place in ``MIDDLEWARE``. It covers the save in ``process_response`` and a load or save
    from a view (``process_exception``). A separate middleware could not do this: Django
    turns an exception of ``SessionMiddleware.process_response`` into a 500 response before
    any other middleware sees it.

    Header transport: with ``STICKLESS_HEADER = "X-Session-Token"`` in settings, a token in
    that request header is used instead of the cookie (API and mobile clients), and the
    response carries the header whenever the session key changed (new, renewed; empty when
    the session ended). The cookie keeps working beside it.

    Passive requests: ``STICKLESS_PASSIVE_PATHS = ["/api/session-status"]`` (path prefixes)
    and views decorated with :func:`passive_session` read the session without sliding its
    idle timeout.
    """

    def process_request(self, request: Any) -> None:
        transport = _header_transport()
        presented = None
        if transport is not None:
            presented = transport.read_token(None, request.headers.get(transport.header))
        if presented is None:
            super().process_request(request)
            presented = request.session.session_key
        else:
            request.session = self.SessionStore(presented)
        request.stickless_presented = presented
        if isinstance(request.session, SessionStore):
            meta = request.META  # REMOTE_ADDR: as the server (or your proxy middleware) set it
            request.session.device_source = (meta.get("HTTP_USER_AGENT"), meta.get("REMOTE_ADDR"))
        prefixes = _passive_prefixes()
        if prefixes and is_passive_path(request.path_info, prefixes):
            _make_passive(request)

    def process_view(self, request: Any, view_func: Any, *args: Any) -> None:
        """A view marked with :func:`passive_session` makes its request passive before the
        later middlewares' ``process_view`` (CSRF's, with ``CSRF_USE_SESSIONS``) or the view
        use the session."""
        if is_marked_passive(view_func):
            _make_passive(request)

    def process_response(self, request: Any, response: Any) -> Any:
        try:
            response = super().process_response(request, response)
        except StoreUnavailable as exc:
            return _unavailable_response(exc, "save")
        transport = _header_transport()
        session = getattr(request, "session", None)
        if transport is not None and transport.header and session is not None:
            presented = getattr(request, "stickless_presented", None)
            for name, value in transport.token_headers(presented, session.session_key):
                response.headers[name] = value
            patch_vary_headers(response, (transport.header,))
        return response

    def process_exception(self, request: Any, exception: Exception) -> Any:
        if isinstance(exception, StoreUnavailable):
            return _unavailable_response(exception, "load")
        return None


_V = TypeVar("_V", bound=Callable[..., Any])


def passive_session(view: _V) -> _V:
    """Decorate a view (function, ``async def``, or ``as_view()``'s result; on a class-based
    view use ``method_decorator(passive_session, name="dispatch")``) whose request reads the
    session without sliding its idle timeout: a poll ("are you still there?",
    ``request.session.stickless.seconds_left``) that must not keep the session alive.
    A save (the view writes) still slides it, as any save does (when due).

    The session must not have been used before the view (a ``process_request`` of another
    middleware): then list the path in ``STICKLESS_PASSIVE_PATHS`` instead."""
    if inspect.iscoroutinefunction(view):

        @functools.wraps(view)
        async def awrapped(request: Any, *args: Any, **kwargs: Any) -> Any:
            _make_passive(request)
            return await view(request, *args, **kwargs)

        return passive(awrapped)  # type: ignore[return-value]

    @functools.wraps(view)
    def wrapped(request: Any, *args: Any, **kwargs: Any) -> Any:
        _make_passive(request)
        return view(request, *args, **kwargs)

    return passive(wrapped)  # type: ignore[return-value]


def _make_passive(request: Any) -> None:
    session = getattr(request, "session", None)
    if isinstance(session, SessionStore):
        session.passive = True


# Read once, until a setting changes (override_settings): a missing setting costs Django's
# LazySettings an exception at every read.
@functools.cache
def _header_transport() -> Transport | None:
    """``STICKLESS_HEADER`` from settings: the token's header transport (None: cookie only;
    the cookie is Django's)."""
    header = getattr(settings, "STICKLESS_HEADER", None)
    return Transport(cookie=None, header=str(header)) if header else None


@functools.cache
def _passive_prefixes() -> tuple[str, ...]:
    """``STICKLESS_PASSIVE_PATHS`` from settings, checked."""
    value = getattr(settings, "STICKLESS_PASSIVE_PATHS", None)
    return passive_prefixes(value, "STICKLESS_PASSIVE_PATHS")


def _unavailable_response(exc: StoreUnavailable, during: str) -> HttpResponse:
    """The failure policy's response for ``exc`` (logged once, without token or data)."""
    policy = _stores.policy().answering(exc)
    policy.report(exc, during)
    return HttpResponse(policy.body, status=policy.status, headers=dict(policy.headers))
