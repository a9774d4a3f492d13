"""Reading Flask-Session's Redis sessions (Flask-Session >= 0.7), never unpickling.

What Flask-Session 0.7 and 0.8 write (``flask_session.redis.RedisSessionInterface``): the
cookie (``SESSION_COOKIE_NAME``, Flask's) holds the session id, ``secrets.token_urlsafe(32)``,
or with ``SESSION_USE_SIGNER`` the id signed by ``itsdangerous.Signer(SECRET_KEY,
salt="flask-session", key_derivation="hmac")`` (``<sid>.<signature>``); the Redis key is
``SESSION_KEY_PREFIX + sid`` (default ``"session:"``), a string holding the session dict
encoded by ``msgspec``: msgpack by default, JSON with ``SESSION_SERIALIZATION_FORMAT =
"json"``, with the TTL ``PERMANENT_SESSION_LIFETIME``. Versions before 0.7 pickled it (and
0.7 / 0.8 still *read* pickle as a fallback): such a value is no session here.

:class:`FlaskSessionRedis` reads that key for a cookie that is not a stickless token,
decodes it (a JSON object, or a msgpack map through ``msgspec``, which only builds plain
types), and shortens its TTL to the grace. :func:`from_flask_config` builds it from the
Flask-Session settings still in ``app.config``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import redis
from itsdangerous import BadSignature, Signer

from stickless.errors import ConfigurationError
from stickless.store.sync import SessionStore
from stickless.web.migrate import adopt
from stickless.web.migrate.adopt import LEGACY_GRACE, SyncSource

log = logging.getLogger("stickless.web.migrate")

DEFAULT_PREFIX: Final = "session:"
"""Flask-Session's ``SESSION_KEY_PREFIX`` default."""
SIGNER_SALT: Final = "flask-session"
"""The salt of Flask-Session's id signer (``SESSION_USE_SIGNER``)."""

_SID: Final = re.compile(r"[A-Za-z0-9_-]{1,256}")
"""A Flask-Session id: ``token_urlsafe`` (0.6+) or a uuid4 string (older)."""
_MSGPACK_MAP: Final = frozenset([*range(0x80, 0x90), 0xDE, 0xDF])
"""First byte of a msgpack map (fixmap, map 16, map 32)."""


@dataclass(frozen=True)
class FlaskSessionRedis:
    """Flask-Session's Redis backend, as a migration source for :class:`stickless.flask.Stickless`
    (``STICKLESS_MIGRATE_FROM``).

    Args:
        client: the blocking ``redis.Redis`` Flask-Session used (its ``SESSION_REDIS``).
            Default None: stickless's own client (same server and database as
            ``STICKLESS_URL``).
        key_prefix: its ``SESSION_KEY_PREFIX``. Default ``"session:"``.
        signer_keys: with ``SESSION_USE_SIGNER``, the keys its ids were signed with
            (``SECRET_KEY``, plus any ``SECRET_KEY_FALLBACKS``; the newest last); only signed
            ids are then accepted. Default None: unsigned ids (Flask-Session's default).
        grace: seconds the old session stays readable once migrated. Default
            :data:`~stickless.web.migrate.adopt.LEGACY_GRACE` (60).
    """

    client: Any = None
    key_prefix: str = DEFAULT_PREFIX
    signer_keys: Sequence[str | bytes] | None = None
    grace: float = LEGACY_GRACE
    _signer: Signer | None = field(init=False, repr=False, compare=False)

    name = "Flask-Session"

    def __post_init__(self) -> None:
        if not isinstance(self.key_prefix, str):
            raise ConfigurationError("SESSION_KEY_PREFIX must be a str")
        if isinstance(self.signer_keys, str | bytes):
            object.__setattr__(self, "signer_keys", [self.signer_keys])
        if self.signer_keys is not None and not self.signer_keys:
            raise ConfigurationError(
                "SESSION_USE_SIGNER needs SECRET_KEY (Flask-Session signed ids with it)"
            )
        if self.grace <= 0:
            raise ConfigurationError("grace must be > 0 seconds")
        signer = None
        if self.signer_keys is not None:
            keys = [k.encode() if isinstance(k, str) else bytes(k) for k in self.signer_keys]
            signer = Signer(keys, salt=SIGNER_SALT, key_derivation="hmac")
        object.__setattr__(self, "_signer", signer)

    @property
    def signed(self) -> bool:
        """True when only signed ids are accepted (``SESSION_USE_SIGNER``)."""
        return self._signer is not None

    def session_id(self, presented: str) -> str | None:
        """The Flask-Session id inside a cookie value (signature checked when signed), or
        None. No I/O."""
        sid = presented
        if self._signer is not None:
            try:
                sid = self._signer.unsign(presented).decode("ascii")
            except (BadSignature, UnicodeError, ValueError):
                return None
        return sid if _SID.fullmatch(sid) else None

    def take(self, presented: str, store: SessionStore) -> dict[str, Any] | None:
        """See :meth:`~stickless.web.migrate.adopt.SyncSource.take`: one GET, and once the
        value is a session, one script shortening its TTL to ``grace``."""
        sid = self.session_id(presented)
        if sid is None:
            return None
        client = self.client if self.client is not None else store.client
        key = self.key_prefix + sid
        try:
            raw = client.get(key)
        except adopt.REDIS_ERRORS as exc:
            adopt.old_store_failed(f"{self.name}'s Redis", exc)
            return None
        if not isinstance(raw, bytes) or not raw:
            return None
        data = self.decode(raw, max_size=store.config.max_size)
        if data is None:
            return None
        try:
            adopt.retire_script(client)(keys=[key], args=[adopt.grace_ms(self.grace)])
        except adopt.REDIS_ERRORS as exc:
            adopt.old_store_failed(f"{self.name}'s Redis", exc)
            return None
        return data

    def decode(self, raw: bytes, *, max_size: int) -> dict[str, Any] | None:
        """A stored Flask-Session value as session data, or None: JSON object or msgpack
        map, nothing else (a pickle is never unpickled)."""
        if adopt.refuse_pickle(raw, self.name):
            return None
        value: object = None
        if raw[:1] == b"{":
            value = adopt.json_object(raw)
        elif raw[0] in _MSGPACK_MAP:
            value = _msgpack(raw)
        if value is None:
            log.info("%s session value is neither JSON nor msgpack: fresh session", self.name)
            return None
        return adopt.session_data(value, self.name, size=len(raw), max_size=max_size)


def _msgpack(raw: bytes) -> object:
    """``raw`` decoded as one msgpack object by ``msgspec`` (Flask-Session's own
    dependency): plain types only (``datetime`` for msgpack timestamps, ``msgspec.msgpack.Ext``
    for other extensions, which the session then refuses). None when it is not msgpack."""
    try:
        import msgspec  # noqa: PLC0415  # optional: only sessions in msgpack need it
    except ImportError:
        raise ConfigurationError(
            "reading Flask-Session's msgpack sessions needs msgspec (Flask-Session's own "
            "dependency): pip install msgspec"
        ) from None
    try:
        return msgspec.msgpack.decode(raw)
    except (msgspec.DecodeError, ValueError, TypeError):
        return None


# ------------------------------------------------------------------ from app.config
SETTINGS: Final = (
    "SESSION_TYPE",
    "SESSION_REDIS",
    "SESSION_KEY_PREFIX",
    "SESSION_PERMANENT",
    "SESSION_USE_SIGNER",
)
"""The Flask-Session settings :class:`stickless.flask.Stickless` reads."""


@dataclass(frozen=True, slots=True)
class FlaskSessionSettings:
    """What the Flask-Session settings in ``app.config`` mean for stickless."""

    source: SyncSource | None
    """The migration source (None: no migration)."""
    permanent: bool
    """New sessions start permanent (``SESSION_PERMANENT``, Flask-Session's default True)."""
    summary: str
    """The log line saying what the settings map to (no secret in it)."""


def from_flask_config(config: Mapping[str, Any]) -> FlaskSessionSettings:
    """Read the Flask-Session settings in ``config`` (``app.config``).

    ``STICKLESS_MIGRATE_FROM``: ``"flask-session"`` (read Flask-Session's Redis sessions,
    configured by the settings below), a ready :class:`FlaskSessionRedis`, or False (no
    migration even with ``SESSION_TYPE = "redis"``). Unset: migration follows
    ``SESSION_TYPE == "redis"``. ``SESSION_REDIS`` (default, as Flask-Session's: a
    ``redis.Redis()`` on localhost:6379, database 0),
    ``SESSION_KEY_PREFIX`` (default ``"session:"``), ``SESSION_USE_SIGNER`` (default False;
    True: ids signed with ``SECRET_KEY`` / ``SECRET_KEY_FALLBACKS``) configure the source;
    ``SESSION_PERMANENT`` (Flask-Session's default True when ``SESSION_TYPE`` is set) makes
    new sessions permanent. Raises :class:`ConfigurationError` for values that cannot work.
    """
    chosen = config.get("STICKLESS_MIGRATE_FROM")
    kind = config.get("SESSION_TYPE")
    kind_text = str(kind).lower() if kind is not None else None
    parts: list[str] = []
    source: SyncSource | None = None
    if adopt.is_sync_source(chosen):
        source = chosen
    elif chosen is False:
        pass
    elif chosen not in (None, "flask-session"):
        raise ConfigurationError(
            "STICKLESS_MIGRATE_FROM must be 'flask-session', a migration source such as "
            "stickless.migrate.FlaskSessionRedis, False or None"
        )
    elif chosen == "flask-session" or kind_text == "redis":
        source = _source_from(config)
    elif kind_text is not None:
        parts.append(
            f"SESSION_TYPE={kind!r} -> not migrated (only Flask-Session's redis sessions can "
            "be read; their users start a fresh session)"
        )
    if source is not None:
        parts.insert(0, _describe(source, config, "SESSION_TYPE" if chosen is None else None))
    permanent = bool(config.get("SESSION_PERMANENT", kind is not None))
    if "SESSION_PERMANENT" in config or kind is not None:
        parts.append(
            f"SESSION_PERMANENT={permanent} -> new sessions start "
            + ("permanent (persistent cookie)" if permanent else "as browser-session cookies")
        )
    summary = ""
    if parts:
        summary = (
            "Flask-Session settings: "
            + "; ".join(parts)
            + (". Remove them and Session(app) once PERMANENT_SESSION_LIFETIME has passed.")
        )
    return FlaskSessionSettings(source=source, permanent=permanent, summary=summary)


def _describe(source: SyncSource, config: Mapping[str, Any], setting: str | None) -> str:
    """What the migration part of the log line says (never a secret or a client's repr)."""
    head = f"SESSION_TYPE={config.get('SESSION_TYPE')!r}" if setting else "STICKLESS_MIGRATE_FROM"
    if not isinstance(source, FlaskSessionRedis):
        return f"{head} -> sessions of {source.name} are migrated on first use"
    where = (
        "stickless's own Redis"
        if source.client is None
        else "SESSION_REDIS"
        if "SESSION_REDIS" in config
        else "localhost:6379/0, Flask-Session's default without SESSION_REDIS"
    )
    signed = "signed" if source.signed else "unsigned"
    return (
        f"{head} -> Flask-Session's sessions are migrated on first use (read from {where}, "
        f"keys {source.key_prefix!r} + id, {signed} ids; the old key expires "
        f"{source.grace:g} s later)"
    )


def _source_from(config: Mapping[str, Any]) -> FlaskSessionRedis:
    client = config.get("SESSION_REDIS")
    if client is None:
        client = redis.Redis()  # Flask-Session's own default; connects on first use
    elif not callable(getattr(client, "get", None)):
        raise ConfigurationError("SESSION_REDIS must be a redis.Redis client")
    signer_keys: list[str | bytes] | None = None
    if config.get("SESSION_USE_SIGNER", False):
        secret = config.get("SECRET_KEY")
        signer_keys = [*(config.get("SECRET_KEY_FALLBACKS") or []), *([secret] if secret else [])]
    return FlaskSessionRedis(
        client=client,
        key_prefix=config.get("SESSION_KEY_PREFIX", DEFAULT_PREFIX),
        signer_keys=signer_keys,
    )
