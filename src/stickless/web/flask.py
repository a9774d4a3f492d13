"""Flask adapter: ``Stickless(app)`` and ``flask.session`` lives in Redis / Valkey.

Public face: :mod:`stickless.flask` (``from stickless.flask import Stickless``); the code is
here. This module only translates Flask to the core: every per-request decision (loading,
the store being down, what is saved, which headers go out) is
:class:`~stickless.web.cycle.SessionCycle`'s, the cookie's attributes come from Flask's
settings, and values Flask can put in its cookie session but plain JSON cannot hold go
through :class:`~stickless.web.tagged.TaggedValues`.

How a request goes:

* ``open_session`` reads the presented token (cookie, or the ``STICKLESS_HEADER`` header)
  and returns a :class:`FlaskSession` **without any I/O**.
* The first time the view reads or writes the session, it is loaded (one round trip; none
  when the request carried no token).
* ``save_session`` (run by Flask before the response leaves) writes only the change log
  (one round trip; none when nothing changed) and adds ``Set-Cookie`` only when the token
  changed or the session ended, plus ``Vary: Cookie`` when the session was accessed.

So: untouched request 0 round trips, read 1, write 2 (1 for a brand-new session).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any, Final

from flask import Flask, current_app, request
from flask import has_request_context as flask_has_request_context
from flask import session as flask_session
from flask.json.tag import TaggedJSONSerializer
from flask.sessions import SecureCookieSessionInterface, SessionInterface, SessionMixin
from flask.wrappers import Request, Response
from itsdangerous import BadData

from stickless import codec
from stickless.codec import Tagged
from stickless.config import SessionConfig
from stickless.errors import ConfigurationError, StoreUnavailable
from stickless.session import Session
from stickless.store.sync import SessionStore
from stickless.web.cycle import (
    FailurePolicy,
    LazySession,
    SessionCycle,
    configured_lifetime,
    is_marked_passive,
    is_passive_path,
    passive,
    passive_prefixes,
)
from stickless.web.migrate import adopt
from stickless.web.migrate.adopt import SyncSource
from stickless.web.migrate.flask_session import from_flask_config
from stickless.web.options import resolve_url
from stickless.web.tagged import TaggedValues
from stickless.web.transport import CookieSettings, SameSite, Transport

__all__ = [
    "FlaskSession",
    "Stickless",
    "SticklessState",
    "current_session",
    "current_store",
    "passive",
]

log = logging.getLogger("stickless.web")

EXTENSION_KEY: Final = "stickless"
"""Key of :class:`SticklessState` in ``app.extensions``."""

PERMANENT_KEY: Final = "_permanent"
"""Where ``session.permanent`` lives in the session data (Flask's own key)."""
CYCLE_KEY: Final = "stickless.flask.cycle"
"""The ``request.environ`` key of the request's :class:`SessionCycle`."""

_MARKERS: Final = frozenset({PERMANENT_KEY})
"""Alone, ``_permanent`` does not make a session worth keeping (see SessionCycle)."""
_MISSING: Any = object()
_TOKEN_SIGNING_SALT: Final = b"stickless.flask.session-token"
_FLASK_DEFAULT_LIFETIME: Final = timedelta(days=31)
_SAMESITE: Final[dict[str, SameSite]] = {"lax": "lax", "strict": "strict", "none": "none"}


# --------------------------------------------------------------------------- state
@dataclass(frozen=True, slots=True)
class SticklessState:
    """What :meth:`Stickless.init_app` keeps per app, as ``app.extensions["stickless"]``."""

    store: SessionStore
    """The app's session store (use it for ``revoke_user`` / ``sessions_for``)."""
    policy: FailurePolicy
    """503 (default) or fail-open, from ``STICKLESS_FAIL_OPEN``."""
    header: str | None
    """``STICKLESS_HEADER``: header transport next to the cookie (None: cookie only)."""
    import_cookie_sessions: bool
    """``STICKLESS_IMPORT_COOKIE_SESSIONS``: adopt Flask's signed cookie sessions."""
    configured_url: object = None
    """``app.config["STICKLESS_URL"]`` as ``init_app`` read it (``_PASSED``: a store was
    passed in): a later change is refused, as the store cannot follow it."""
    migrate_from: SyncSource | None = None
    """Where sessions of the library used before are read (``STICKLESS_MIGRATE_FROM``, or
    Flask-Session's ``SESSION_TYPE = "redis"``). Default None: no migration."""
    permanent_default: bool = False
    """New sessions start permanent (Flask-Session's ``SESSION_PERMANENT``). Default False,
    as Flask."""
    refresh_each_request: bool = True
    """``SESSION_REFRESH_EACH_REQUEST``: False makes every load passive (reads do not slide
    the idle timeout; saves do, as they always do)."""


def current_store() -> SessionStore:
    """The :class:`~stickless.SessionStore` of ``flask.current_app`` (for log-out-everywhere,
    listing a user's devices...). Raises RuntimeError when Stickless is not set up on it."""
    return _state(current_app).store


def current_session() -> FlaskSession:
    """``flask.session``, typed as :class:`FlaskSession` (``flask.session`` is typed as
    Flask's ``SessionMixin``, which has no ``login``, ``incr``...). Raises RuntimeError
    outside a request or when the app's sessions are not Stickless's."""
    session = flask_session
    if not isinstance(session, FlaskSession):
        raise RuntimeError("flask.session is not a stickless session (is Stickless(app) set up?)")
    return session


# ------------------------------------------------------------------------- session
class FlaskSession(LazySession, SessionMixin):
    """``flask.session`` when Stickless is installed: the lazy session proxy of every
    adapter (:class:`~stickless.web.cycle.LazySession`) plus Flask's value tagging.

    Why a proxy rather than a subclass of the core ``Session`` (a ``dict`` subclass):

    * **laziness**: the session is loaded on the first read or write, so a request that
      never touches it costs no round trip even when it carries a cookie; a ``dict``
      subclass cannot defer filling its own storage (C-level readers such as ``json.dumps``
      would see it empty);
    * **Flask's value types**: the core holds the tagged JSON form (``{" t": [1, 2]}``) of a
      tuple, while Flask code expects the tuple back; a proxy can hand out the decoded
      value and keep the stored form apart.

    The cost: it is a ``MutableMapping`` (Flask's ``SessionMixin``), not a ``dict``:
    ``isinstance(session, dict)`` is False; use ``dict(session)`` or :meth:`copy` where a
    real ``dict`` is needed.

    Mapping behaviour follows Flask's cookie session, with these stickless additions:

    * a value Flask's tagged JSON cannot carry (a ``set``, an object, a dict with non-str
      keys, a ``date``) raises ``TypeError`` at the assignment, naming the key;
    * in-place changes of nested values are saved without ``session.modified = True``;
    * :meth:`clear` ends the session (destroyed in Redis, cookie deleted; anything set
      afterwards goes into a new session with a new token), as Flask's cookie session
      deletes its cookie when emptied;
    * :meth:`login`, :meth:`logout`, :meth:`renew`, :meth:`incr`, :attr:`user_id`,
      :attr:`token` and :attr:`core` reach the core session.
    """

    def __init__(
        self,
        cycle: SessionCycle,
        store: SessionStore,
        values: TaggedValues,
        importer: Callable[[str], dict[str, Any] | None] | None = None,
        *,
        migrate_from: SyncSource | None = None,
        permanent: bool = False,
    ) -> None:
        super().__init__(cycle, store)
        self._values = values
        self._importer = importer
        self._migrate_from = migrate_from
        self._permanent_default = permanent
        self._live: dict[str, Any] = {}
        """Python values handed out or set in this request (re-encoded at save)."""
        self._as_stored: dict[str, bytes] = {}
        """JSON, at read time, of values handed out as stored (plain JSON, or a tagged
        value that failed to decode): never re-tagged at save unless changed in place."""
        self._modified = False
        self._permanent_before: bool | None = None
        """``permanent`` before this request first changed it (None: unchanged)."""

    # ------------------------------------------------------------ Flask's flags
    @property
    def accessed(self) -> bool:
        """True once the session was read or written in this request, or used through
        ``flask.session`` (Flask sets it then); adds ``Vary: Cookie`` to the response."""
        session = self.cycle.session
        return self.cycle.referenced or (session is not None and session.accessed)

    @accessed.setter
    def accessed(self, value: bool) -> None:
        self.cycle.referenced = bool(value)

    @property
    def modified(self) -> bool:
        """True once the session was changed through this object in this request (Flask's
        meaning). Informational only: what is saved comes from the change log, so setting
        it True is accepted and harmless (nested in-place changes are detected anyway), and
        setting it False does not discard changes."""
        return self._modified

    @modified.setter
    def modified(self, value: bool) -> None:
        self._modified = bool(value)

    @property
    def new(self) -> bool:  # type: ignore[override]  # Flask's mixin has a plain attribute
        """True when the session is not stored yet (loads the session if needed)."""
        return self.is_new

    @property
    def permanent(self) -> bool:
        """Flask's ``session.permanent`` (stored under ``"_permanent"``, default False).

        False: a browser-session cookie (no ``Max-Age``) and the configured lifetime. True:
        a persistent cookie whose ``Max-Age`` runs to the session's absolute deadline, and
        the session's own lifetime ``PERMANENT_SESSION_LIFETIME`` ("remember me": its idle
        timeout, the absolute one at least as long), within
        ``SessionConfig.max_idle_timeout`` / ``max_absolute_timeout``. Setting it to its
        current value writes nothing; changing it applies the lifetime at save and re-issues
        the cookie (same token)."""
        return bool(self.get(PERMANENT_KEY, False))

    @permanent.setter
    def permanent(self, value: bool) -> None:
        before = self.permanent
        if bool(value) == before:
            return
        if self._permanent_before is None:
            self._permanent_before = before
        if value:
            self[PERMANENT_KEY] = True
        else:
            self.pop(PERMANENT_KEY, None)

    # ------------------------------------------------------------ the proxy's hooks
    def load(self) -> Session:
        """The core session. A new one is given the data of the old session the request
        presented, if any: a Flask cookie session (``STICKLESS_IMPORT_COOKIE_SESSIONS``) or
        the ``STICKLESS_MIGRATE_FROM`` source's (Flask-Session's); else, with
        ``SESSION_PERMANENT``, it starts permanent."""
        fresh = not self.loaded
        if fresh and _passive_view():
            self.cycle.passive = True
        session = super().load()
        if not fresh or not session.is_new or not self.cycle.saveable:
            return session
        if self._importer is not None:
            self._adopt_cookie_session(self._importer)
        if self._migrate_from is not None:
            session = adopt.migrate(self.cycle, self._store, self._migrate_from, self.__setitem__)
        if self._permanent_default and self.cycle.saveable and dict.__len__(session) == 0:
            session[PERMANENT_KEY] = True  # alone, a marker: such a session is not stored
        return session

    def _decode(self, key: str, stored: Any) -> Any:
        if key in self._live:
            return self._live[key]
        value = self._values.decode(stored, key=key)
        core = self.cycle.session
        if value is stored:  # plain JSON: as the core loaded it (no second encoding)
            known = core.stored_json(key) if core is not None else None
            self._as_stored[key] = known if known is not None else codec.encode(value)
        elif isinstance(stored, Tagged) and value is stored.form:
            self._as_stored[key] = codec.encode(value)
        else:
            self._as_stored.pop(key, None)
        self._live[key] = value
        return value

    def _encode(self, key: str, value: Any) -> Any:
        return self._values.encode(value)  # TypeError at the core for non-JSON values

    def _wrote(self, key: str | None = None, value: Any = _MISSING) -> None:
        self._modified = True
        if key is not None:
            self._as_stored.pop(key, None)
            if value is _MISSING:
                self._live.pop(key, None)
            else:
                self._live[key] = value

    # --------------------------------------------------------------- Flask's API
    def invalidate(self) -> None:
        """End the session: emptied now, destroyed in Redis at save, cookie deleted. Data
        set afterwards in the same request goes into a new session (new token): Flask's
        ``session.clear()`` before a login is therefore fixation-safe."""
        super().invalidate()
        self._live.clear()
        self._as_stored.clear()

    def clear(self) -> None:
        """End the session (same as :meth:`invalidate`, and :meth:`logout`)."""
        self.invalidate()

    @property
    def core(self) -> Session:
        """The core :class:`~stickless.Session` (loads it if needed): ``meta``,
        ``created_at``, ``expires_at``, ``status``... Values there are in stored (tagged)
        form; go through this mapping to read and write them."""
        return self.load()

    def before_save(self) -> None:
        """Re-encode the values handed out in this request: in-place changes of tagged
        values (a list of tuples...) are then in the change log too. A value handed out as
        stored and left unchanged is not re-tagged: another writer's plain JSON that looks
        like a tag (``{" m": "x"}``) stays exactly what that writer stored."""
        session = self.cycle.session
        if session is None:
            return
        for key, value in self._live.items():
            if not dict.__contains__(session, key):
                continue
            as_stored = self._as_stored.get(key)
            if as_stored is not None and _json_or_none(value) == as_stored:
                continue
            stored = self._values.encode(value)
            if stored is not value and stored != dict.__getitem__(session, key):
                session[key] = stored

    def apply_permanent_lifetime(self, lifetime: timedelta) -> None:
        """At save: the lifetime ``permanent`` calls for, when it changed in this request or
        the session is new and permanent (``lifetime``: ``PERMANENT_SESSION_LIFETIME``)."""
        session = self.cycle.session
        if session is None or not self.cycle.saveable or session.lifetime is not None:
            return  # not used, a stand-in, or the app called set_lifetime itself
        now = bool(dict.get(session, PERMANENT_KEY, False))
        changed = self._permanent_before is not None and self._permanent_before != now
        if not (changed or (session.is_new and now)):
            return
        config = self._store.config
        if now:
            wanted = int(lifetime.total_seconds() * 1000)
            idle, absolute = wanted, max(wanted, config.absolute_ms)
        else:
            idle, absolute = configured_lifetime(session, config)
        idle, absolute = min(idle, config.max_idle_ms), min(absolute, config.max_absolute_ms)
        session.set_lifetime(idle=idle / 1000, absolute=absolute / 1000)  # re-issues the cookie

    @property
    def permanent_cookie(self) -> bool:
        """Whether the cookie is to be persistent (``permanent``, read without loading or
        recording an access)."""
        session = self.cycle.session
        return session is not None and bool(dict.get(session, PERMANENT_KEY, False))

    def _adopt_cookie_session(self, importer: Callable[[str], dict[str, Any] | None]) -> None:
        """``STICKLESS_IMPORT_COOKIE_SESSIONS``: the presented value is a valid Flask cookie
        session: carry its data into this new session (saved at the end of the request)."""
        data = importer(self.cycle.presented) if self.cycle.presented is not None else None
        for key, value in (data or {}).items():
            try:
                self[key] = value
            except TypeError:
                log.warning("cookie session import: key %r cannot be stored, dropped", key)


# ---------------------------------------------------------------------- interface
class Stickless(SessionInterface):
    """Flask extension and ``SessionInterface``: ``Stickless(app)`` or
    ``Stickless().init_app(app)``, after which ``flask.session`` is stored in Redis / Valkey.

    Settings (``app.config``):

    ``STICKLESS_URL``
        Store URL (``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``,
        ``redis+cluster://``). Default: the ``STICKLESS_URL`` environment variable, as for
        the ASGI and WSGI middlewares. Required (one or the other) unless a store is passed:
        ``Stickless(app, store=SessionStore(...))``.
    ``STICKLESS_CONFIG``
        A :class:`~stickless.SessionConfig` (default: ``SessionConfig()`` adjusted below).
    ``STICKLESS_HEADER``
        Also read / write the token in this header (e.g. ``"X-Session-Token"``; it wins
        over the cookie when both are present). Default None: cookie only.
    ``STICKLESS_FAIL_OPEN``
        Default False: when Redis is unreachable the request is answered 503 with a short
        plain body and ``Retry-After``. True: the request goes on with an empty session that
        is not saved.
    ``STICKLESS_IMPORT_COOKIE_SESSIONS``
        Default False. True: a request presenting a valid Flask *cookie* session (signed
        with ``SECRET_KEY``) gets its data carried over into a new stored session, so users
        stay logged in when you switch from Flask's default sessions.
    ``STICKLESS_MIGRATE_FROM``
        Default None: Flask-Session's sessions are migrated when its ``SESSION_TYPE =
        "redis"`` is still set. ``"flask-session"`` or a
        :class:`stickless.migrate.FlaskSessionRedis`: read Flask-Session's Redis sessions on
        first use (users stay logged in; the old key expires a minute later). False: never.

    Flask-Session's settings, when left in place (one log line at ``init_app`` says what
    they map to): ``SESSION_TYPE = "redis"`` turns the migration on; ``SESSION_REDIS``,
    ``SESSION_KEY_PREFIX`` and ``SESSION_USE_SIGNER`` say where and how its sessions are
    read; ``SESSION_PERMANENT`` (its default True when ``SESSION_TYPE`` is set) makes new
    sessions permanent. See :func:`stickless.web.migrate.flask_session.from_flask_config`.

    Flask's own settings, honoured as Flask does, read at each request unless noted:

    * ``SESSION_COOKIE_NAME`` / ``_DOMAIN`` / ``_PATH`` (falls back to ``APPLICATION_ROOT``)
      / ``_HTTPONLY`` / ``_PARTITIONED``: as in Flask.
    * ``SESSION_COOKIE_SECURE``: True always marks the cookie ``Secure``; False (Flask's
      default) still marks it ``Secure`` on https requests.
    * ``SESSION_COOKIE_SAMESITE``: ``"Lax"``, ``"Strict"``, ``"None"``; None (Flask's
      default) gives ``SameSite=Lax``, the stickless default.
    * ``session.permanent``: False (Flask's default) -> browser-session cookie; True ->
      persistent cookie (``Max-Age`` to the session's absolute deadline) and the session's
      own lifetime: ``PERMANENT_SESSION_LIFETIME`` as its idle timeout, its absolute one at
      least as long, each capped by ``max_idle_timeout`` / ``max_absolute_timeout`` of the
      config ("remember me"). Back to False: the configured lifetime again.
    * ``PERMANENT_SESSION_LIFETIME`` (read at ``init_app``) -> ``idle_timeout`` of the
      store's config, with ``absolute_timeout`` raised to it when lower. When
      ``STICKLESS_CONFIG`` is given it wins, unless ``PERMANENT_SESSION_LIFETIME`` was
      changed from Flask's default (31 days) and the config leaves ``max_idle_timeout``
      unset; with ``max_idle_timeout`` set, it is the lifetime of permanent sessions only.
    * ``STICKLESS_PASSIVE_PATHS`` (path prefixes, read at each request) and views decorated
      with :func:`passive`: the request reads the session without sliding its idle timeout
      (a poll that must not keep the session alive).
    * ``SESSION_REFRESH_EACH_REQUEST`` (read at ``init_app``): False -> reads do not extend
      the idle expiry (every load is passive); only writes do. The cookie is
      never re-sent on reads: its lifetime runs to the absolute deadline and the idle
      expiry is enforced by Redis.
    * ``SECRET_KEY`` (+ ``SECRET_KEY_FALLBACKS``), read at ``init_app``: when set and the
      config has no ``secret_key``, tokens are signed with a key derived from it (HMAC with
      a fixed salt), so forged tokens are refused without a round trip.

    Settings read at ``init_app`` do not apply to a store passed in (it has its config).
    """

    pickle_based = False
    session_class = FlaskSession

    def __init__(self, app: Flask | None = None, *, store: SessionStore | None = None) -> None:
        self._store = store
        self.serializer = TaggedJSONSerializer()
        """The tagger for values (Flask's); ``register()`` custom tags on it as with Flask's
        ``session_interface.serializer``."""
        self._values = TaggedValues(self.serializer)
        self._transports: dict[tuple[Any, ...], Transport] = {}
        if app is not None:
            self.init_app(app)

    # ---------------------------------------------------------------- set-up
    def init_app(self, app: Flask, *, store: SessionStore | None = None) -> None:
        """Install on ``app``: sets ``app.session_interface``, stores a
        :class:`SticklessState` in ``app.extensions["stickless"]`` and registers the 503
        error handler for :class:`~stickless.StoreUnavailable`. Raises ConfigurationError
        when neither a store nor ``STICKLESS_URL`` (in ``app.config`` or the environment)
        is given."""
        store = store or self._store
        configured: object = _PASSED if store is not None else app.config.get("STICKLESS_URL")
        if store is None:
            url = app.config.get("STICKLESS_URL")
            needs = "set app.config['STICKLESS_URL'] or pass a store: Stickless(app, store=...)"
            store = SessionStore.from_url(
                resolve_url(str(url) if url else None, needs=needs), self.session_config(app)
            )
        header = app.config.get("STICKLESS_HEADER") or None
        legacy = from_flask_config(app.config)
        if legacy.summary:
            log.warning("%s", legacy.summary)
        app.extensions[EXTENSION_KEY] = SticklessState(
            store=store,
            policy=FailurePolicy(fail_open=bool(app.config.get("STICKLESS_FAIL_OPEN", False))),
            header=str(header) if header else None,
            import_cookie_sessions=bool(app.config.get("STICKLESS_IMPORT_COOKIE_SESSIONS", False)),
            configured_url=configured,
            migrate_from=legacy.source,
            permanent_default=legacy.permanent,
            refresh_each_request=bool(app.config.get("SESSION_REFRESH_EACH_REQUEST", True)),
        )
        app.session_interface = self
        app.register_error_handler(StoreUnavailable, self._unavailable)

    @staticmethod
    def session_config(app: Flask) -> SessionConfig:
        """The store config for ``app``: ``STICKLESS_CONFIG`` (or the defaults) with Flask's
        ``PERMANENT_SESSION_LIFETIME`` and ``SECRET_KEY`` applied as described on
        :class:`Stickless` (``SESSION_REFRESH_EACH_REQUEST`` is applied per request)."""
        base = app.config.get("STICKLESS_CONFIG")
        if base is not None and not isinstance(base, SessionConfig):
            raise ConfigurationError("STICKLESS_CONFIG must be a stickless.SessionConfig")
        lifetime = app.permanent_session_lifetime
        use_lifetime = base is None or (
            lifetime != _FLASK_DEFAULT_LIFETIME and base.max_idle_timeout is None
        )
        config = base or SessionConfig()
        changes: dict[str, object] = {}
        if use_lifetime:
            seconds = lifetime.total_seconds()
            if seconds <= 0:
                raise ConfigurationError("PERMANENT_SESSION_LIFETIME must be positive")
            changes["idle_timeout"] = seconds
            changes["absolute_timeout"] = max(config.absolute_timeout, seconds)
        if config.secret_key is None and app.secret_key:
            fallbacks = list(app.config.get("SECRET_KEY_FALLBACKS") or [])
            changes["secret_key"] = [_derive(key) for key in [*fallbacks, app.secret_key]]
        return config.with_options(**changes) if changes else config

    # ------------------------------------------------------- SessionInterface
    def open_session(self, app: Flask, request: Request) -> FlaskSession:
        """A lazy session for ``request`` (no I/O here)."""
        state = _state(app)
        if state.configured_url is not _PASSED:
            _same_url(app, state.configured_url)
        cycle = SessionCycle(
            self._transport(app, state, persistent=True),
            state.policy,
            cookie_header=request.headers.get("Cookie"),
            token_header=request.headers.get(state.header) if state.header else None,
            https=request.is_secure,
            markers=_MARKERS,
        )
        request.environ[CYCLE_KEY] = cycle
        cycle.user_agent = request.headers.get("User-Agent")
        cycle.address = request.remote_addr  # REMOTE_ADDR: as the server or ProxyFix set it
        prefixes = passive_prefixes(
            app.config.get("STICKLESS_PASSIVE_PATHS"), "STICKLESS_PASSIVE_PATHS"
        )
        cycle.passive = not state.refresh_each_request or (
            bool(prefixes) and is_passive_path(request.path, prefixes)
        )
        importer = partial(_read_cookie_session, app) if state.import_cookie_sessions else None
        return self.session_class(
            cycle,
            state.store,
            self._values,
            importer,
            migrate_from=state.migrate_from,
            permanent=state.permanent_default,
        )

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Save the change log (one round trip, none when nothing changed), then add the
        cookie / header and ``Vary`` headers. Store down: the response becomes the 503 (or,
        failing open, is left alone and the changes are dropped)."""
        if not isinstance(session, FlaskSession):
            return
        state = _state(app)
        cycle = session.cycle
        session.before_save()
        session.apply_permanent_lifetime(app.permanent_session_lifetime)
        if not cycle.save(state.store):
            _become_unavailable(response, cycle.policy)
            return
        cycle.transport = self._transport(app, state, persistent=session.permanent_cookie)
        for name, value in cycle.response_headers():
            if name == "Vary":
                _vary_on(response, value)
            else:
                response.headers.add(name, value)

    # ---------------------------------------------------------------- helpers
    def _transport(self, app: Flask, state: SticklessState, *, persistent: bool) -> Transport:
        """The token's transport under Flask's cookie settings (read at each request, built
        once per distinct settings)."""
        settings = (
            self.get_cookie_name(app),
            self.get_cookie_path(app),
            self.get_cookie_domain(app),
            self.get_cookie_secure(app),
            self.get_cookie_httponly(app),
            self.get_cookie_samesite(app),
            self.get_cookie_partitioned(app),
            persistent,
            state.header,
        )
        transport = self._transports.get(settings)
        if transport is None:
            if len(self._transports) >= _TRANSPORTS_KEPT:  # settings made per request
                self._transports.clear()
            transport = self._transports[settings] = _build_transport(settings)
        return transport

    @staticmethod
    def _unavailable(exc: StoreUnavailable) -> Response:
        policy = _state(current_app).policy.answering(exc)
        cycle = request.environ.get(CYCLE_KEY)
        if isinstance(cycle, SessionCycle):
            cycle.refuse(exc)
            policy = cycle.policy
            if cycle.session is None:
                # the load failed: after_request hooks (Flask-Login's remember-cookie check)
                # still read the session. They get an empty stand-in that is never saved,
                # not the failure raised again past this handler (a 500 instead of the 503).
                cycle.session = _state(current_app).store.new()
                cycle.saveable, cycle.failure = False, None
        else:  # raised before the session was opened
            policy.report(exc, "request")
        response = current_app.response_class(policy.body, status=policy.status)
        for name, value in policy.headers:
            response.headers[name] = value
        return response


def _build_transport(settings: tuple[Any, ...]) -> Transport:
    """The transport of :meth:`Stickless._transport`'s settings tuple."""
    name, path, domain, secure, httponly, samesite_setting, partitioned, persistent, header = (
        settings
    )
    samesite = "lax" if samesite_setting is None else str(samesite_setting).lower()
    if samesite not in _SAMESITE:
        raise ConfigurationError(
            f"SESSION_COOKIE_SAMESITE must be 'Lax', 'Strict', 'None' or None, "
            f"not {samesite_setting!r}"
        )
    cookie = CookieSettings(
        name=name,
        path=path or "/",
        # as Werkzeug does (RFC 6265 5.2.3): a leading dot is not part of the domain
        domain=(domain.partition(":")[0].lstrip(".") or None) if domain else None,
        secure=True if secure else None,
        httponly=bool(httponly),
        samesite=_SAMESITE[samesite],
        partitioned=bool(partitioned),
        persistent=persistent,
    )
    return Transport(cookie=cookie, header=header)


def _vary_on(response: Response, name: str) -> None:
    """Add ``name`` to the response's ``Vary``: set at once when the response has none yet
    (the usual case; Werkzeug's ``response.vary`` parses and writes the header back at
    every change, which costs more than the rest of the save of a read). Every ``Vary``
    line the view set counts (Werkzeug's ``response.vary`` reads only the first and drops
    the others); ``Vary: *`` already varies on everything and stays as it is."""
    lines = response.headers.getlist("Vary")
    if not lines:
        response.headers["Vary"] = name
        return
    names: dict[str, str] = {}  # by lower case: each name once, as first written
    for item in ",".join(lines).split(","):
        if item := item.strip():
            names.setdefault(item.lower(), item)
    if "*" in names or name.lower() in names:
        return
    response.headers["Vary"] = ", ".join([*names.values(), name])


def _passive_view() -> bool:
    """True when the request's view is marked with :func:`passive` (the URL is matched by
    the time the session is first used)."""
    rule = request.url_rule if flask_has_request_context() else None
    if rule is None or rule.endpoint is None:
        return False
    return is_marked_passive(current_app.view_functions.get(rule.endpoint))


def _json_or_none(value: Any) -> bytes | None:
    """The plain JSON of ``value``, or None when it is no longer plain JSON."""
    try:
        return codec.encode(value)
    except TypeError:
        return None


_PASSED: Any = object()
_TRANSPORTS_KEPT: Final = 64
"""Distinct cookie settings whose transport is kept (an app computing the cookie domain per
request would otherwise grow the cache without bound)."""


def _same_url(app: Flask, configured: object) -> None:
    """Refuse a ``STICKLESS_URL`` changed after ``init_app`` (say, by a test that sets it
    after ``create_app()``): the store still talks to the server it was built for."""
    if app.config.get("STICKLESS_URL") != configured:
        raise ConfigurationError(
            "app.config['STICKLESS_URL'] changed after Stickless(app) read it, and the store "
            "still uses the URL it was built with: set STICKLESS_URL before Stickless(app) / "
            "init_app (in tests: hand it to your app factory)"
        )


def _state(app: Flask) -> SticklessState:
    state = app.extensions.get(EXTENSION_KEY)
    if not isinstance(state, SticklessState):
        raise RuntimeError("Stickless is not initialised on this app (call Stickless(app))")
    return state


def _derive(secret: str | bytes) -> str:
    """A token-signing key derived from a Flask secret (never the secret itself)."""
    raw = secret.encode() if isinstance(secret, str) else bytes(secret)
    return hmac.new(raw, _TOKEN_SIGNING_SALT, hashlib.sha256).hexdigest()


def _become_unavailable(response: Response, policy: FailurePolicy) -> None:
    """Turn the response in place into the policy's 503 (``save_session`` cannot return a
    new response object)."""
    body = response.response
    close = getattr(body, "close", None)
    if callable(close):
        close()
    response.headers.clear()
    response.status_code = policy.status
    response.set_data(policy.body)
    for name, value in policy.headers:
        response.headers[name] = value


def _read_cookie_session(app: Flask, value: str) -> dict[str, Any] | None:
    """The data of a Flask cookie session (as ``SecureCookieSessionInterface`` writes it,
    signed with ``SECRET_KEY`` or a fallback, not older than PERMANENT_SESSION_LIFETIME),
    or None."""
    serializer = SecureCookieSessionInterface().get_signing_serializer(app)
    if serializer is None:
        return None
    try:
        data = serializer.loads(value, max_age=int(app.permanent_session_lifetime.total_seconds()))
    except BadData:
        return None
    return data if isinstance(data, dict) else None
