"""Session: a ``dict`` that records what the request changed.

A :class:`Session` *is* a ``dict`` subclass, so framework code that expects a dict (``json.dumps``,
``JSONResponse(request.session)``, ``isinstance(x, dict)``) works unchanged. Every mutating
method is overridden to validate the value (JSON only: a bad value raises ``TypeError`` at the
line that set it, naming the key) and to record the change in a change log. At save, only the
change log is written (``HSET`` / ``HDEL`` / ``HINCRBY`` in one script), so two overlapping
requests that touch different keys both keep their changes.

In-place changes of nested values (``s["cart"].append(x)``) are detected at save by comparing the
value's JSON with what was loaded; no ``modified = True`` dance is needed.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar, overload

from stickless import codec, devices
from stickless.config import SessionConfig
from stickless.tokens import TokenId, token_id

_T = TypeVar("_T")
_MISSING: Any = object()
_DEFAULT_CONFIG = SessionConfig()
_CONTAINERS = (dict, list)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
"""The range of Redis integers (HINCRBY)."""


class SessionStatus(enum.StrEnum):
    """Where a session stands in its life."""

    NEW = "new"
    """Created by ``store.new()``; nothing is in Redis until the first save with data."""
    LOADED = "loaded"
    """Loaded from (or saved to) Redis."""
    RENEW = "renew"
    """``renew()`` was called: the next save moves the data under a new token."""
    INVALIDATED = "invalidated"
    """``invalidate()`` was called (destroyed at next save), or the session is gone."""


class _Op(enum.Enum):
    SET = "set"
    DELETE = "delete"
    SET_DEFAULT = "set_default"
    """``setdefault`` of an absent key: first writer wins (``HSETNX``) at save."""


@dataclass(frozen=True, slots=True)
class SessionMeta:
    """Timestamps kept by Redis for a stored session (milliseconds since the epoch)."""

    created_ms: int
    access_ms: int
    deadline_ms: int
    idle_ms: int

    @property
    def expires_ms(self) -> int:
        return min(self.access_ms + self.idle_ms, self.deadline_ms)


@dataclass(frozen=True, slots=True)
class Lifetime:
    """A session's own idle and absolute timeouts (ms), when ``set_lifetime`` changed them:
    ``None`` keeps that one as it is."""

    idle_ms: int | None
    absolute_ms: int | None


@dataclass(frozen=True, slots=True)
class Changes:
    """The delta a save writes: encoded sets, deleted keys, integer increments, and defaults
    (``setdefault``: written only where the key is still absent in Redis)."""

    sets: dict[str, bytes]
    deletes: list[str]
    incrs: dict[str, int]
    defaults: dict[str, bytes] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.sets or self.deletes or self.incrs or self.defaults)


@overload
def ms_to_datetime(ms: int) -> datetime: ...
@overload
def ms_to_datetime(ms: None) -> None: ...
@overload
def ms_to_datetime(ms: int | None) -> datetime | None: ...
def ms_to_datetime(ms: int | None) -> datetime | None:
    """Milliseconds since the epoch (the server clock's unit) as an aware UTC datetime."""
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


def _check_key(key: object) -> str:
    """``key`` if it can name a stored value (a ``str`` encodable as UTF-8), else TypeError
    naming it (a lone surrogate would only fail at save, as a 500)."""
    if not isinstance(key, str):
        raise TypeError(f"session keys must be str, not {type(key).__name__} ({key!r})")
    try:
        codec.check_text(key)
    except TypeError as exc:
        raise TypeError(f"session key {key!r} cannot be stored: {exc}") from None
    return key


def _encode_for(key: str, value: object) -> bytes:
    """The JSON of ``value`` for ``session[key]``; TypeError naming the key otherwise (NaN,
    infinities, lone surrogates and non-JSON types, at any depth)."""
    try:
        return codec.encode(value)
    except TypeError as exc:
        raise TypeError(f"session[{key!r}]: value cannot be stored as JSON: {exc}") from None


class Session(dict[str, Any]):
    """A user's session: a dict plus a change log, status, user binding and metadata.

    Get one from ``store.new()`` or ``store.load(token)``; never construct it directly.
    """

    __slots__ = (
        "_accessed",
        "_cleared",
        "_config",
        "_device",
        "_device_name",
        "_device_name_changed",
        "_device_source",
        "_identity_keys",
        "_lifetime",
        "_lifetime_changed",
        "_loaded_at",
        "_loaded_from",
        "_loaded_stamp",
        "_meta",
        "_ops",
        "_raw_token",
        "_renew",
        "_status",
        "_stored",
        "_stored_user_id",
        "_tid",
        "_token",
        "_ttl_ms",
        "_user_id",
    )

    def __init__(
        self,
        *,
        raw_token: str,
        token: str,
        data: Mapping[str, Any] | None = None,
        stored: Mapping[str, bytes] | None = None,
        meta: SessionMeta | None = None,
        user_id: str | None = None,
        config: SessionConfig | None = None,
        ttl_ms: int | None = None,
        device_name: str | None = None,
        tid: TokenId | None = None,
    ) -> None:
        super().__init__(data or {})
        self._tid = tid
        self._device: dict[str, str] = {}
        self._device_source: tuple[object, object] | None = None
        self._device_name = device_name
        self._device_name_changed = False
        self._config = config or _DEFAULT_CONFIG
        self._identity_keys = self._config.identity_keys
        self._lifetime: Lifetime | None = None
        self._lifetime_changed = False
        self._ttl_ms = ttl_ms
        self._loaded_at = time.monotonic()
        self._loaded_from: str | None = None
        self._loaded_stamp = 0
        self._raw_token = raw_token
        self._token = token
        self._stored: dict[str, bytes] = dict(stored or {})
        self._meta = meta
        self._user_id = user_id
        self._stored_user_id = user_id if meta is not None else None
        self._status = SessionStatus.NEW if meta is None else SessionStatus.LOADED
        self._renew: Literal["forward", "strict"] | None = None
        self._ops: dict[str, _Op | int] = {}
        self._accessed = False
        self._cleared = False

    # ----------------------------------------------------------------- identity & status
    @property
    def token(self) -> str:
        """The value the client keeps (cookie / header). Changes after a save that renewed."""
        return self._token

    @property
    def status(self) -> SessionStatus:
        """``new``, ``loaded``, ``renew`` (renewal pending) or ``invalidated``."""
        if self._status is SessionStatus.LOADED and self._renew is not None:
            return SessionStatus.RENEW
        return self._status

    @property
    def is_new(self) -> bool:
        """True until the session has been saved to Redis once."""
        return self._status is SessionStatus.NEW

    @property
    def accessed(self) -> bool:
        """True once a value was read or written in this request."""
        return self._accessed

    @property
    def modified(self) -> bool:
        """True when a save would write something (data, user, renew or invalidate)."""
        if self._status is SessionStatus.INVALIDATED:
            return self._meta is not None
        if self._meta is not None and any(type(op) is _Op or op for op in self._ops.values()):
            return True  # a stored session with a write recorded (no need to encode it)
        return (
            bool(self.pending_changes())
            or self._renew is not None
            or self.user_changed
            or self._lifetime is not None
            or self._device_name_changed
        )

    @property
    def emptied(self) -> bool:
        """True when this request removed the last key of a stored session that no user is
        bound to. The web middlewares then invalidate it, as Starlette and Flask do (an
        emptied session ends and its cookie is deleted); the store itself saves it as is
        (Django's contract keeps an emptied session)."""
        return (
            self._status is SessionStatus.LOADED
            and self._meta is not None
            and not dict.__len__(self)
            and self._user_id is None
            and self._renew is None
            and any(op is _Op.DELETE for op in self._ops.values())
        )

    @property
    def user_id(self) -> str | None:
        """The user this session belongs to (None: anonymous). Setting it binds the session
        to the user's index at the next save; prefer renewing at the same time (login)."""
        return self._user_id

    @user_id.setter
    def user_id(self, value: str | None) -> None:
        if value is not None and (not isinstance(value, str) or not value):
            raise TypeError("user_id must be a non-empty str or None")
        if value is not None:
            try:
                value.encode()
            except UnicodeEncodeError:
                raise ValueError("user_id must be valid Unicode (no lone surrogates)") from None
            if not value.isprintable():
                raise ValueError("user_id must be printable text (no control characters)")
        self._user_id = value

    @property
    def user_changed(self) -> bool:
        return self._user_id != self._stored_user_id

    @property
    def stored_user_id(self) -> str | None:
        """The user the session is bound to in Redis (before this request's changes)."""
        return self._stored_user_id

    # ---------------------------------------------------------------------- metadata
    @property
    def meta(self) -> SessionMeta | None:
        return self._meta

    @property
    def session_id(self) -> str:
        """This session's id, as ``SessionInfo.session_id`` shows it (the token's family:
        the same across renewals, safe to show, never usable as a token)."""
        return self.token_id.session_id

    @property
    def token_id(self) -> TokenId:
        """Where the store finds this session (family, token hash; internal), computed once
        per token."""
        tid = self._tid
        if tid is None:
            tid = self._tid = token_id(self._raw_token)
        return tid

    @property
    def device_name(self) -> str | None:
        """The name the user gave this device ("work laptop"; ``SessionInfo.device.name``),
        or None. Setting it (a printable ``str`` of at most 64 characters; ``None`` or ``""``
        clears it) writes it at the next save."""
        return self._device_name

    @device_name.setter
    def device_name(self, value: str | None) -> None:
        name = devices.check_device_name(value)
        self._accessed = True
        if name != self._device_name:
            self._device_name = name
            self._device_name_changed = True

    def record_device(self, *, user_agent: object, ip: str | None) -> None:
        """Set the device fields (``ip`` as ``SessionConfig.device_ip`` wants it stored),
        whatever the save: written with the next save that writes anything, never a save of
        its own. The web adapters use :meth:`note_device` instead."""
        self._device = _device_entry(user_agent, ip)

    def note_device(self, *, user_agent: object, address: object) -> None:
        """The request's device, as the web adapters see it when they hand the session out:
        its ``User-Agent`` and the client ``address`` the framework trusts. Recorded (as
        :meth:`record_device`, the address as ``SessionConfig.device_ip`` says) by the save
        that creates the session or logs it in, whoever calls that save (the adapter, or the
        app itself); any other save leaves it."""
        self._device_source = (user_agent, address)

    def device_writes(self) -> dict[str, str]:
        """The device fields the next save writes (``"ua"``, ``"ip"``, ``"dn"``: the user
        agent, address and name; ``""`` clears one)."""
        writes = dict(self._device)
        source = self._device_source
        if (
            source is not None
            and not writes
            and (self.is_new or (self.user_changed and self._user_id is not None))
        ):
            user_agent, address = source
            writes = _device_entry(user_agent, devices.client_ip(address, self._config.device_ip))
        if self._device_name_changed:
            writes["dn"] = self._device_name or ""
        return writes

    @property
    def created_at(self) -> datetime | None:
        """When the session was first saved (server clock, UTC); None while new."""
        return ms_to_datetime(self._meta.created_ms if self._meta else None)

    @property
    def last_access(self) -> datetime | None:
        """The last refresh of the idle TTL (UTC): by a load or save that found it due, or
        a save by script; at most ``touch_interval`` older than the last request. None while
        new."""
        return ms_to_datetime(self._meta.access_ms if self._meta else None)

    @property
    def absolute_expires_at(self) -> datetime | None:
        """The hard deadline (created + absolute_timeout, UTC); None while new."""
        return ms_to_datetime(self._meta.deadline_ms if self._meta else None)

    @property
    def expires_at(self) -> datetime | None:
        """When the session expires unless used again (UTC); None while new."""
        return ms_to_datetime(self._meta.expires_ms if self._meta else None)

    # -------------------------------------------------------------------- life cycle
    def set_lifetime(
        self,
        idle: float | timedelta | None = None,
        absolute: float | timedelta | None = None,
    ) -> None:
        """Give this session its own lifetime ("remember me"), applied and enforced by the
        server at the next save: ``idle`` (sliding timeout) and ``absolute`` (hard lifetime,
        counted from the session's creation), in seconds or as ``timedelta``; either may be
        omitted (kept as it is). Longer than ``SessionConfig.max_idle_timeout`` /
        ``max_absolute_timeout`` (by default the configured ``idle_timeout`` /
        ``absolute_timeout``: only shorter lifetimes unless you raise them) raises
        ``ValueError`` here. The cookie's ``Max-Age`` follows the session's own lifetime."""
        idle_ms = _milliseconds("idle", idle, self._config.max_idle_ms)
        absolute_ms = _milliseconds("absolute", absolute, self._config.max_absolute_ms)
        if idle_ms is None and absolute_ms is None:
            return
        self._accessed = True
        self._lifetime_changed = True
        previous = self._lifetime or Lifetime(None, None)
        self._lifetime = Lifetime(
            idle_ms if idle_ms is not None else previous.idle_ms,
            absolute_ms if absolute_ms is not None else previous.absolute_ms,
        )

    @property
    def lifetime(self) -> Lifetime | None:
        """The lifetime change the next save applies (None: no change)."""
        return self._lifetime

    @property
    def lifetime_changed(self) -> bool:
        """True once ``set_lifetime`` was called on this object (adapters then send the
        cookie again, with a ``Max-Age`` that follows the new lifetime)."""
        return self._lifetime_changed

    @property
    def seconds_left(self) -> float | None:
        """Seconds until the session expires unless used again: the server's TTL as the load
        read it, or as the last save or touch set it, less the time since (no clock is
        compared). None while new."""
        if self._ttl_ms is None:
            return None
        return max(0.0, self._ttl_ms / 1000 - (time.monotonic() - self._loaded_at))

    def renew(self, *, forward: bool = True) -> None:
        """Give the session a new token at the next save, keeping its data. The old token
        stops loading at once after that save. A new session already has a fresh token, so
        this is a no-op for it.

        There is no need to call this on login: a save that changes the session's identity
        (the bound user, or a key of ``SessionConfig.identity_keys``, or ``clear()`` followed
        by new data) renews by itself, and then the old token keeps no power at all.

        ``forward=True`` (default, a plain rotation): requests still in flight with the old
        token may save *data* (never identity keys or the user binding) into the renewed
        session for ``forward_ttl``. ``forward=False``: the old token keeps no power at all,
        as after an identity change (Django's ``cycle_key`` uses this)."""
        if self._status is SessionStatus.LOADED:
            self._renew = "strict" if not forward or self._renew == "strict" else "forward"

    def invalidate(self) -> None:
        """Empty the session and destroy it in Redis at the next save (logout)."""
        dict.clear(self)
        self._ops.clear()
        self._user_id = None
        self._renew = None
        self._status = SessionStatus.INVALIDATED

    def login(self, user_id: str) -> None:
        """Bind the session to ``user_id`` and renew its token at the next save (session
        fixation protection). Data is kept; the user's index lists this session."""
        self.user_id = user_id
        self.renew()

    def logout(self) -> None:
        """Same as :meth:`invalidate`: empty the session and destroy it at the next save."""
        self.invalidate()

    def incr(self, key: str, amount: int = 1) -> int:
        """Add ``amount`` to the integer at ``key`` (0 when absent) and return the new value.

        The increment is applied atomically in Redis at save (``HINCRBY``), so concurrent
        requests never lose counts; after the save, ``self[key]`` holds the value Redis
        computed, which includes other requests' increments.
        Raises ``TypeError`` when the current value is not an int, ``ValueError`` when the
        amount or the result is outside Redis's signed 64-bit range.
        """
        _check_key(key)
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise TypeError(f"incr amount must be int, not {type(amount).__name__}")
        current = dict.get(self, key, 0)
        if not isinstance(current, int) or isinstance(current, bool):
            raise TypeError(f"session[{key!r}] is {type(current).__name__}, incr needs an int")
        value = current + amount
        previous = self._ops.get(key)
        pending = amount if isinstance(previous, _Op) else (previous or 0) + amount
        for number in (value, pending):
            if not _INT64_MIN <= number <= _INT64_MAX:
                raise ValueError(
                    f"session[{key!r}]: incr by {amount} leaves Redis's signed 64-bit range"
                )
        self._mutating()
        dict.__setitem__(self, key, value)
        self._ops[key] = _Op.SET if isinstance(previous, _Op) else pending
        return value

    # ------------------------------------------------------------ dict: reading
    def __getitem__(self, key: str) -> Any:
        self._accessed = True
        return dict.__getitem__(self, key)

    def __contains__(self, key: object) -> bool:
        self._accessed = True
        return dict.__contains__(self, key)

    def __len__(self) -> int:
        self._accessed = True
        return dict.__len__(self)

    def keys(self) -> Any:
        self._accessed = True
        return dict.keys(self)

    def values(self) -> Any:
        self._accessed = True
        return dict.values(self)

    def items(self) -> Any:
        self._accessed = True
        return dict.items(self)

    @overload
    def get(self, key: str, default: None = None, /) -> Any | None: ...
    @overload
    def get(self, key: str, default: _T, /) -> Any | _T: ...
    def get(self, key: str, default: object = None, /) -> Any:
        self._accessed = True
        return dict.get(self, key, default)

    def mark_accessed(self) -> None:
        """Record a read the session cannot see (Starlette's ``request.session`` calls this;
        ``json.dumps`` reads a dict without calling its methods)."""
        self._accessed = True

    def copy(self) -> dict[str, Any]:
        """A plain ``dict`` copy of the data (not tracked); a read of every key."""
        self._accessed = True
        return dict(dict.items(self))  # dict(self) would call __getitem__ once per key

    def __repr__(self) -> str:
        # Never show values: sessions hold credentials and personal data.
        return f"<Session status={self.status.value} keys={sorted(dict.keys(self))!r}>"

    def __reduce__(self) -> Any:
        raise TypeError("Session objects are not picklable (stickless never pickles)")

    # ------------------------------------------------------------ dict: writing
    def __setitem__(self, key: str, value: Any) -> None:
        _encode_for(_check_key(key), value)
        if (
            self._config.encryption_keys
            and isinstance(self._ops.get(key), int)
            and (not isinstance(value, int) or isinstance(value, bool))
        ):
            raise TypeError(
                f"session[{key!r}] is a counter (incr keeps it a plain integer in Redis, "
                "even with SessionConfig.encryption_keys): store other values under another key"
            )
        self._mutating()
        dict.__setitem__(self, key, value)
        self._ops[key] = _Op.SET

    def __delitem__(self, key: str) -> None:
        self._mutating()
        dict.__delitem__(self, key)
        self._ops[key] = _Op.DELETE

    def pop(self, key: str, default: Any = _MISSING, /) -> Any:
        self._mutating()
        if key in self:
            self._ops[key] = _Op.DELETE
            return dict.pop(self, key)
        if default is _MISSING:
            raise KeyError(key)
        return default

    def popitem(self) -> tuple[str, Any]:
        self._mutating()
        key, value = dict.popitem(self)
        self._ops[key] = _Op.DELETE
        return key, value

    def setdefault(self, key: str, default: Any = None, /) -> Any:
        """``dict.setdefault``, first writer wins across requests: when ``key`` is absent
        here, ``default`` is stored at save only if no other request stored ``key`` first;
        after the save, ``self[key]`` holds the value Redis kept (a CSRF token or an OAuth
        ``state`` minted once however many tabs race). Returns the value as of now."""
        self._accessed = True
        if not dict.__contains__(self, _check_key(key)):
            _encode_for(key, default)
            self._mutating()
            dict.__setitem__(self, key, default)
            self._ops[key] = _Op.SET_DEFAULT
        return dict.__getitem__(self, key)

    def clear(self) -> None:
        """Remove every key. Data set after this in the same request counts as a new
        identity (Flask's documented login: ``clear()``, then the user's keys): the save
        renews the token."""
        self._mutating()
        for key in dict.keys(self):
            self._ops[key] = _Op.DELETE
        dict.clear(self)
        self._cleared = True

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        items: Iterable[tuple[str, Any]]
        if isinstance(other, Mapping):
            items = other.items()
        elif hasattr(other, "keys"):
            items = ((k, other[k]) for k in other.keys())  # noqa: SIM118 - the dict.update protocol
        else:
            items = other
        for key, value in items:
            self[key] = value
        for key, value in kwargs.items():
            self[key] = value

    def __ior__(self, other: Any) -> Session:  # type: ignore[override,misc]
        self.update(other)
        return self

    def __iter__(self) -> Iterator[str]:
        self._accessed = True
        return dict.__iter__(self)

    def _mutating(self) -> None:
        # Data written to an invalidated (or gone) session is saved into a brand-new
        # session under a new token (see SessionStore.save), never under the old token.
        self._accessed = True

    # ------------------------------------------------------------ for the store
    def pending_changes(self) -> Changes:
        """The delta the next save writes (values encoded now, so in-place edits count)."""
        sets: dict[str, bytes] = {}
        deletes: list[str] = []
        incrs: dict[str, int] = {}
        defaults: dict[str, bytes] = {}
        for key, op in self._ops.items():
            if op is _Op.DELETE:
                if key in self._stored or self._meta is not None:
                    deletes.append(key)
            elif op is _Op.SET:
                sets[key] = _encode_for(key, dict.__getitem__(self, key))
            elif op is _Op.SET_DEFAULT:
                defaults[key] = _encode_for(key, dict.__getitem__(self, key))
            elif isinstance(op, int) and (op or key not in self._stored):
                incrs[key] = op  # by 0 too, where Redis may lack the key: HINCRBY creates it
        for key, value in dict.items(self):
            if key not in self._ops and isinstance(value, _CONTAINERS):
                encoded = _encode_for(key, value)
                if encoded != self._stored.get(key):
                    sets[key] = encoded
        return Changes(sets, deletes, incrs, defaults)

    def encoded_size(self, changes: Changes) -> int:
        """Bytes the session occupies once ``changes`` are applied (names + values + the
        bound user id)."""
        total = len(self._user_id.encode()) if self._user_id else 0
        sets, incrs, stored = changes.sets, changes.incrs, self._stored
        for key, value in dict.items(self):
            encoded = sets.get(key) or changes.defaults.get(key)
            if encoded is not None:
                size = len(encoded)
            elif key in incrs:
                size = len(str(value))
            else:
                known = stored.get(key)
                size = len(known) if known is not None else len(codec.encode(value))
            total += size + (len(key) if key.isascii() else len(key.encode()))
        return total

    def _identity_writes(self) -> tuple[bool, bool]:
        """``(touched, changed)``: whether the next save writes an identity key at all, and
        whether it changes one's stored value (a new value, a delete, an increment, or an
        in-place change of a nested value)."""
        identity = self._identity_keys
        touched = changed = False
        for key in identity.intersection(self._ops):
            touched = True
            op = self._ops[key]
            if op is _Op.SET:
                encoded = codec.encode(dict.__getitem__(self, key))
                changed = changed or encoded != self._stored.get(key)
            elif op is _Op.DELETE:
                changed = changed or key in self._stored
            elif op or key not in self._stored:  # by 0 too, where it creates the key
                changed = True
        for key in identity.intersection(dict.keys(self)):  # type: ignore[arg-type]
            value = dict.__getitem__(self, key)  # changed in place: session["user"]["id"] = 1
            if (
                key not in self._ops
                and isinstance(value, _CONTAINERS)
                and codec.encode(value) != self._stored.get(key)
            ):
                return True, True
        return touched, changed

    @property
    def identity_changed(self) -> bool:
        """True when a save would change who this session is: the bound user changes, an
        identity key (``SessionConfig.identity_keys``) gets a different value (or is
        deleted, incremented, or changed in place), or the session was cleared and then
        given new data. Writing an identity key's stored value again changes nothing."""
        if self.user_changed or (self._cleared and dict.__len__(self)):
            return True
        return self._identity_writes()[1]

    @property
    def touches_identity(self) -> bool:
        """True when the next save writes any identity key or the user binding (such a save
        is never applied through a renew forward)."""
        return self.user_changed or self._identity_writes()[0]

    @property
    def renew_pending(self) -> bool:
        """True when the next save gives a stored session a new token: ``renew()`` was
        called, or its identity changed."""
        return self._meta is not None and (self._renew is not None or self.identity_changed)

    @property
    def forwards_old_token(self) -> bool:
        """True when the pending renew is a plain rotation: requests in flight with the old
        token may still save data for ``forward_ttl``. False after an identity change or
        ``renew(forward=False)``: the old token then keeps no power at all."""
        return self._renew == "forward" and not self.identity_changed

    @property
    def raw_token(self) -> str:
        """The unsigned token (internal: never log it)."""
        return self._raw_token

    def mark_saved(
        self,
        *,
        changes: Changes,
        meta: SessionMeta,
        counters: Mapping[str, int],
        kept: Mapping[str, bytes] | None = None,
        raw_token: str,
        token: str,
        refreshed: bool = True,
    ) -> None:
        """Record a successful save: the change log is now the stored state. ``kept``: the
        stored JSON of each ``setdefault`` key (another request's, when it was first).
        ``refreshed``: the save set the idle TTL (at ``meta.access_ms``); False: it left it
        as it was (:attr:`seconds_left` keeps counting down)."""
        for key, value in counters.items():
            dict.__setitem__(self, key, value)
        for key, encoded in (kept or {}).items():
            dict.__setitem__(self, key, codec.decode(encoded))
            self._stored[key] = encoded
        for key in changes.deletes:
            self._stored.pop(key, None)
        self._stored.update(changes.sets)
        self._stored.update({k: codec.encode(v) for k, v in counters.items()})
        self._ops.clear()
        self._cleared = False
        self._lifetime = None
        self._device = {}
        self._device_name_changed = False
        self._meta = meta
        if refreshed:
            self._count_down_from(meta)
        self._status = SessionStatus.LOADED
        self._renew = None
        self._stored_user_id = self._user_id
        self._tid = None if raw_token != self._raw_token else self._tid
        self._raw_token = raw_token
        self._token = token

    def restart(self, *, raw_token: str, token: str) -> None:
        """Turn into a brand-new session under a new token, keeping the current data
        (used when data is written after ``invalidate()``)."""
        self._tid = None
        self._raw_token = raw_token
        self._token = token
        self._status = SessionStatus.NEW
        self._meta = None
        self._ttl_ms = None
        self._stored.clear()
        self._stored_user_id = None
        self._renew = None
        self._cleared = False
        self._loaded_from = None
        self._ops = {key: _Op.SET for key in dict.keys(self)}

    def stored_json(self, key: str) -> bytes | None:
        """The JSON ``key``'s value was loaded or last saved as, while this request has not
        set it again (None otherwise): what an adapter compares against to see an in-place
        change, without encoding the value again."""
        return self._stored.get(key) if key not in self._ops else None

    def stored_jsons(self) -> dict[str, bytes]:
        """:meth:`stored_json` of every key that has one, as a new dict (a copy)."""
        if not self._ops:
            return self._stored.copy()
        return {key: value for key, value in self._stored.items() if key not in self._ops}

    def is_stored(self, key: str) -> bool:
        """True when ``key`` holds a value this session loaded or saved (so it is in Redis,
        unless another request removed it since)."""
        return key in self._stored

    def forget(self, key: str) -> None:
        """Drop ``key`` here without recording a delete (the store removed it already)."""
        self._accessed = True
        dict.pop(self, key, None)
        self._stored.pop(key, None)
        self._ops.pop(key, None)

    def rewrite_at_save(self, names: Iterable[str]) -> None:
        """Write these keys again at the next save (the store re-seals them with the newest
        encryption key), as they are."""
        for name in names:
            if dict.__contains__(self, name) and name not in self._ops:
                self._ops[name] = _Op.SET

    @property
    def loaded_from(self) -> str | None:
        """In a cluster, the node (``host:port``) this session was loaded from, ``""`` when
        the slot map changed during the read; None for a new session or outside a cluster.
        Its saves go to that node only: if the slot has moved since (a failover), the save
        is refused with :class:`~stickless.errors.StoreUnavailable`, as the load may have
        been answered by a primary that had been replaced."""
        return self._loaded_from

    @property
    def loaded_as(self) -> tuple[str, int] | None:
        """:attr:`loaded_from` and the last-access stamp (``m:a``, server ms) that node held
        then, or last took from this request (a touch or save it served); None for a new
        session or outside a cluster."""
        node = self._loaded_from
        return None if node is None else (node, self._loaded_stamp)

    def mark_loaded_from(self, node: str | None, access_ms: int) -> None:
        """Record the node the store read this session from (see :attr:`loaded_from`) and
        the session's last-access stamp there."""
        self._loaded_from = node
        self._loaded_stamp = access_ms

    def mark_touched(self, access_ms: int) -> None:
        """Record that the store refreshed the idle TTL at ``access_ms`` (server clock)."""
        if self._meta is not None:
            self._meta = replace(self._meta, access_ms=access_ms)
            self._count_down_from(self._meta)

    def _count_down_from(self, meta: SessionMeta) -> None:
        """The TTL the server just set (at ``meta.access_ms``, by its clock): what
        :attr:`seconds_left` counts down from."""
        self._ttl_ms = min(meta.idle_ms, meta.deadline_ms - meta.access_ms)
        self._loaded_at = time.monotonic()

    def mark_gone(self) -> None:
        """Record that the session no longer exists in Redis (destroyed or expired)."""
        dict.clear(self)
        self._ops.clear()
        self._stored.clear()
        self._renew = None
        self._status = SessionStatus.INVALIDATED
        self._meta = None
        self._ttl_ms = None


def _device_entry(user_agent: object, ip: str | None) -> dict[str, str]:
    """The device fields of :meth:`Session.device_writes` for a request's device."""
    return {"ua": devices.clean_user_agent(user_agent) or "", "ip": ip or ""}


def _milliseconds(name: str, value: float | timedelta | None, limit_ms: int) -> int | None:
    """A ``set_lifetime`` argument in whole milliseconds, checked against its limit."""
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
        raise ValueError(f"set_lifetime({name}=...) must be a positive number of seconds")
    ms = int(seconds * 1000)
    if ms > limit_ms:
        setting = "max_idle_timeout" if name == "idle" else "max_absolute_timeout"
        raise ValueError(
            f"set_lifetime({name}={seconds:g}) is longer than SessionConfig.{setting} "
            f"({limit_ms / 1000:g} s): raise that setting to allow it"
        )
    return max(ms, 1)
