"""Sans-IO planning: every decision of the session store, and no I/O at all.

Each store operation is written once here as a generator. It *yields* a :class:`Batch`
(commands to send in one round trip), receives the replies, and finally *returns* its
result. The sync and async stores (``sync.py`` / ``aio.py``) only drive these generators:
they send each batch with the client library and feed the replies back (or throw the
exception in).
So the two stores cannot drift apart: there is one copy of the logic.

The planner knows no I/O types: the executors hand it error replies as
:class:`~stickless.errors.ServerError` (with the server's error ``code``) and failures that
mean "not available right now" as :class:`~stickless.store.failures.Unavailable`.

A driver may also receive a :class:`Pause` (sleep before retrying an idempotent batch) or a
:class:`Refresh` (reload the cluster's slot map: the owner of a key moved or stopped
answering).
"""

from __future__ import annotations

import enum
import hashlib
import logging
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from importlib import resources
from typing import Any, TypeVar

from stickless import codec, crypto, tokens
from stickless.config import SessionConfig
from stickless.devices import Device, user_agent_parts
from stickless.errors import (
    ReplicationTimeout,
    ServerError,
    SessionConflict,
    SessionTooLarge,
    StoreUnavailable,
    TooManySessions,
)
from stickless.session import Changes, Session, SessionMeta, SessionStatus, ms_to_datetime
from stickless.store import keys
from stickless.store.failures import Misconfigured, SlotMoved, Unavailable
from stickless.store.keys import KeyLayout
from stickless.tokens import TokenCodec, TokenId

log = logging.getLogger("stickless.store")
T = TypeVar("T")


# --------------------------------------------------------------------------- wire model
@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script of ``store/lua``, sent by SHA (EVALSHA), by source after NOSCRIPT.

    Each file starts with a ``#!lua`` line: Redis >= 7 and Valkey then run the script
    without the per-command checks of the pre-7 EVAL mode (measured on Valkey 9: about 2 µs
    less per ``redis.call``; the save makes four), and refuse it as a whole, before it runs,
    when out of memory (a logout, ``pop_once`` and the user index upkeep say
    ``flags=allow-oom``: they free memory, as in the old mode, where only a first write that
    adds memory was refused). ``legacy`` is the same script without that line, for Redis
    6.2, which cannot parse it (see :meth:`Planner.run`)."""

    name: str
    source: str
    sha: str
    legacy: Script | None = None

    @classmethod
    def bundled(cls, name: str) -> Script:
        source = resources.files("stickless.store").joinpath(f"lua/{name}.lua").read_text()
        shebang, _, body = source.partition("\n")
        if not shebang.startswith("#!lua"):
            raise RuntimeError(f"lua/{name}.lua must start with a #!lua line")
        return cls(name, source, _sha1(source), cls(name, body, _sha1(body)))


def _sha1(source: str) -> str:
    return hashlib.sha1(source.encode()).hexdigest()  # noqa: S324


TOUCH = Script.bundled("touch")
SAVE = Script.bundled("save")
UPDATE = Script.bundled("update")
_UPDATE_FIELDS = 990
"""The most fields ``update.lua`` takes at once (device metadata adds up to 6)."""
DESTROY = Script.bundled("destroy")
INDEX = Script.bundled("index")
POP = Script.bundled("pop")
CAP = Script.bundled("cap")

LOGIN_WINDOW_MS = 30_000
"""``max_sessions_per_user``: a login reserved its place this recently (ms) may still be in
flight (its save not applied yet), so other logins count it as live. Much longer than any
save takes: a login whose save would go out later than half of it is abandoned."""
_monotonic = time.monotonic


@dataclass(frozen=True, slots=True)
class ScriptCall:
    script: Script
    keys: tuple[str, ...]
    args: tuple[str | bytes | int, ...]
    by_source: bool = False
    """Send with EVAL (after the server answered NOSCRIPT)."""

    def command(self) -> tuple[str | bytes | int, ...]:
        head = ("EVAL", self.script.source) if self.by_source else ("EVALSHA", self.script.sha)
        return (*head, len(self.keys), *self.keys, *self.args)

    @property
    def routing_key(self) -> str:
        return self.keys[0]


@dataclass(frozen=True, slots=True)
class Command:
    args: tuple[str | bytes | int, ...]

    def command(self) -> tuple[str | bytes | int, ...]:
        return self.args

    @property
    def routing_key(self) -> str:
        return str(self.args[1])


Call = ScriptCall | Command


@dataclass(frozen=True, slots=True)
class Batch:
    """Calls sent together in one pipeline (one round trip on a single node).

    ``wait``: ``(replicas, timeout_ms)``: a ``WAIT`` is sent right after the *first* call, on
    the same connection, and its reply appended to the replies. A batch that writes (not
    ``idempotent``) is *pinned*: in a cluster its first call (and the WAIT) go to one
    connection of the node that owns the first call's key, with no redirection followed (a
    redirection makes the planner refresh the slot map and resend it).
    ``idempotent``: the batch may be resent after a connection error.
    ``origin``: in a cluster, where and as what the session this write is built on was
    loaded (:class:`Origin`). When the first call's key is owned by another node by then (a
    failover or a slot migration since the load), the executor refuses the batch unsent
    (:class:`~stickless.store.failures.SlotMoved`): that load may have been answered by a
    primary that had been replaced and did not know yet (see :class:`Locate`), so a save
    built on it could overwrite newer values. The planner then asks the new owner whether
    the session is still as loaded, and resends only if it is.
    Replies come back in order; a command that failed with a server error is returned as
    the exception instance (not raised).
    """

    calls: tuple[Call, ...]
    idempotent: bool
    wait: tuple[int, int] | None = None
    origin: Origin | None = None
    asking: bool = False
    """Sent after ``ASKING``: to the node an ``ASK`` reply named (a slot being migrated;
    the executors set it when they follow one on a pinned batch)."""


@dataclass(frozen=True, slots=True)
class Pause:
    """Sleep this long before the next batch (backoff between retries)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Refresh:
    """Reload the cluster's slot map and drop the clients pinned to nodes (no-op outside a
    cluster; executors may throttle it): a pinned batch met a redirection (MOVED / ASK), or a
    batch found the store unavailable (a node may have died)."""


@dataclass(frozen=True, slots=True)
class Origin:
    """The node a session was loaded from (``host:port``; ``""``: not known for sure) and
    its last-access stamp then (``m:a``, server ms: every save and touch writes a new one)."""

    node: str
    access_ms: int


@dataclass(slots=True)
class Served:
    """Which cluster node answered a batch (:meth:`Planner.run` fills it in): the owner of
    ``key``'s slot when the batch was sent, ``""`` if the slot map changed before the answer
    came (the batch may have been redirected, or sent to a node the map no longer trusts),
    None when not known (no map loaded yet, or not a cluster)."""

    key: str
    node: str | None = None


@dataclass(frozen=True, slots=True)
class Locate:
    """Which cluster node owns ``key``'s slot now, by the executor's slot map (no I/O): its
    name (``host:port``), or None (not a cluster, or no map loaded yet).

    A load asks before and after its read (:class:`Served`), and the session keeps the
    answer (its ``loaded_from``; ``""`` when they differ). A frozen primary that the
    cluster replaced answers, when it wakes up, what its clients sent meanwhile as the
    primary it still believes it is: reads that miss what the new primary took since. A
    process that sent nothing else to it cannot tell such an answer from a quick one (the
    stall guard of :mod:`stickless.store.stalls` judges by time). Its slot map changes
    right after (the node answers MOVED from then on), so the save built on that read is
    refused (:attr:`Batch.origin`) instead of overwriting newer values on the new primary."""

    key: str


Step = Batch | Pause | Refresh | Locate
Op = Generator[Step, Any, T]


# ------------------------------------------------------------------------- results
class SaveOutcome(enum.StrEnum):
    """What a save did (a ``str``: ``outcome == "gone"`` works too)."""

    SAVED = "saved"
    """The changes are stored."""
    UNCHANGED = "unchanged"
    """Nothing to write: no command was sent."""
    DESTROYED = "destroyed"
    """The invalidated session was removed."""
    GONE = "gone"
    """The session had expired, was destroyed elsewhere, or the token lost its power (an
    identity renew elsewhere): nothing written, the Session is now invalidated."""


@dataclass(frozen=True, slots=True)
class SaveResult:
    """What ``store.save`` did: its :class:`SaveOutcome`, and ``replicas``, the number of
    replicas that acknowledged (``durability="replicated"``)."""

    outcome: SaveOutcome
    replicas: int | None = None
    evicted: tuple[str, ...] = ()
    """``max_sessions_per_user`` with ``on_limit="evict_oldest"``: the ids
    (``SessionInfo.session_id``) of the user's older sessions this login ended."""

    @property
    def written(self) -> bool:
        return self.outcome in (SaveOutcome.SAVED, SaveOutcome.DESTROYED)


class SaveStatus(enum.IntEnum):
    """The first element of ``save.lua``'s reply."""

    SAVED = 1
    FORWARDED = 2
    """Saved through a renew forward: data only, no renew."""
    GONE = 0
    DESTROYED = -1
    """Gone, and a tombstone says it was destroyed."""
    EXISTS = -2
    """A new session's key is taken."""
    NOT_INTEGER = -3
    """An ``incr`` met a non-integer or would overflow (the field is in ``reply[1]``)."""


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One live session in a user's index. Never carries the token, only its digest."""

    session_id: str
    """The session's id (its token family: the same across renewals, safe to show, cannot
    be used as a cookie)."""
    user_id: str
    created_at: datetime
    last_access: datetime
    expires_at: datetime
    absolute_expires_at: datetime
    device: Device | None = None
    """The device (user agent and its label, address, the user's name for it, created,
    last seen), as the web adapters recorded it; None only for a hand-built SessionInfo."""


# ------------------------------------------------------------------------ the planner
def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass
class Planner:
    """Knows the configuration, the key layout and the token codec; plans every operation."""

    config: SessionConfig
    address: str
    """Human-readable server address, for error messages."""
    probe_scripts: bool = False
    """Learn, with the first save, whether the server runs the scripts' ``#!lua`` form (the
    stores do, except on a cluster, whose executor sends each call apart). Without: that
    form from the start, and the legacy one after a server refuses it."""
    locate: bool = False
    """A cluster: note the node each load was read from, and send each save only to that
    node (see :class:`Locate`)."""
    hsetex: bool | None = None
    """Whether the server takes ``HSETEX ... FXX`` (Valkey >= 9, Redis >= 8), which makes the
    usual save of held keys one command without a script (:meth:`_set_existing`): None
    until the first such save tries it, then known; False: never tried (the stores' choice
    in a cluster, whose saves carry the stamp of their load, see :class:`Origin`)."""
    layout: KeyLayout = field(init=False)
    codec: TokenCodec = field(init=False)

    def __post_init__(self) -> None:
        self.layout = KeyLayout(self.config.key_prefix)
        self.codec = TokenCodec(self.config.secret_key)
        keys_ = self.config.encryption_keys
        self.cipher = crypto.ValueCipher(keys_) if keys_ else None
        self._scripts_sent: set[str] = set()  # by SHA
        # the #!lua form: None until the probe answers
        self._modern_scripts: bool | None = None if self.probe_scripts else True

    # ------------------------------------------------------------------ plumbing
    def run(self, batch: Batch, served: Served | None = None) -> Generator[Step, Any, list[Any]]:
        """Send ``batch``: retry idempotent ones on connection errors, resend scripts the
        server forgot (NOSCRIPT, e.g. after a failover), map failures to our errors.
        ``served``: filled in with the cluster node that answered (see :class:`Locate`).

        A script this planner never sent goes by source (EVAL) the first time, so the first
        use costs one round trip too, not NOSCRIPT + EVAL. Until the planner knows whether
        the server parses the ``#!lua`` line (:class:`Script`), scripts go in their legacy
        form, and the first save also loads the ``#!lua`` form of its scripts (``SCRIPT LOAD``,
        in the same round trip): the answers settle it."""
        probes: tuple[Script, ...] = ()
        scripted = any(isinstance(c, ScriptCall) for c in batch.calls)
        if scripted:
            if self._modern_scripts is None and self.probe_scripts and not batch.idempotent:
                # a save: only its first reply is judged, a refused probe fails nothing
                scripts = (c.script for c in batch.calls if isinstance(c, ScriptCall))
                probes = tuple(dict.fromkeys(scripts))
            batch = replace(batch, calls=tuple(map(self._sendable, batch.calls)))
        sent = batch
        if probes:
            loads = (Command(("SCRIPT", "LOAD", script.source)) for script in probes)
            sent = replace(batch, calls=(*batch.calls, *loads))
        attempt = redirects = 0
        rechecked = False
        while True:
            before = (yield Locate(served.key)) if served is not None else None
            try:
                replies: list[Any] = yield sent
            except Unavailable as exc:
                if isinstance(exc, SlotMoved) and batch.origin is not None and not rechecked:
                    rechecked = True
                    origin = yield from self._still_as_loaded(batch.calls[0], batch.origin)
                    if origin is not None:  # the new owner has it as loaded: send it there
                        batch, sent = replace(batch, origin=origin), replace(sent, origin=origin)
                        continue
                yield Refresh()  # in a cluster, a node may have died: ask for the slot map
                wrong = isinstance(exc, Misconfigured)  # credentials / ACL: no retry helps
                if wrong or not batch.idempotent or attempt >= self.config.retries:
                    raise StoreUnavailable(self.address, exc) from exc  # StoreMisconfigured
                attempt += 1
                yield Pause(self.config.retry_backoff * 2 ** (attempt - 1))
                continue
            if not batch.idempotent and _redirected(replies[0]):
                if redirects >= 2:
                    raise StoreUnavailable(self.address, replies[0])
                redirects += 1  # the slot moved (failover): the script did not run
                yield Refresh()
                continue
            if served is not None:  # "": the map changed meanwhile (a redirection, a reload)
                after = yield Locate(served.key)
                served.node = after if before in (None, after) else ""
            if probes:
                n = len(batch.calls)
                self._settle_form(probes, replies[n : n + len(probes)])
                del replies[n : n + len(probes)]
            if not scripted:  # plain commands (a load): nothing a server can have forgotten
                return replies
            missing = [
                i
                for i, r in enumerate(replies[: len(batch.calls)])
                if _noscript(r) or self._refused_shebang(batch.calls[i], r)
            ]
            if not missing:
                return replies
            # Only the calls refused that way did not run: resend just those, by source.
            retry = replace(
                batch,
                calls=tuple(_by_source(batch.calls[i]) for i in missing),
                wait=batch.wait if 0 in missing else None,
                origin=batch.origin if 0 in missing else None,  # it concerns call 0's key
            )
            again: list[Any] = yield from self.run(retry)
            for slot, i in enumerate(missing):
                replies[i] = again[slot]
            if batch.wait is not None and 0 in missing:
                replies[len(batch.calls)] = again[len(retry.calls)]
            return replies

    def _still_as_loaded(self, call: Call, origin: Origin) -> Op[Origin | None]:
        """After a save was refused because its session's slot moved since the load: the
        :class:`Origin` to send it with if the new owner holds the session as it was loaded
        (the same last-access stamp: nothing saved or touched it since, so the load was not
        stale), else None (a planned failover keeps its saves; a stale read does not). A
        save landing after this check is ordinary concurrency, as between any two requests
        that loaded the same state."""
        key = call.routing_key
        served = Served(key)
        try:
            (stamps,) = yield from self.run(
                Batch((Command(("HMGET", key, keys.META_ACCESS)),), idempotent=True), served
            )
        except StoreUnavailable:  # the save stays refused unsent (applied False)
            return None
        try:
            same = int(stamps[0]) == origin.access_ms
        except (TypeError, ValueError, IndexError):  # gone (None), or an error reply
            same = False
        return Origin(served.node, origin.access_ms) if same and served.node else None

    def _sendable(self, call: Call) -> Call:
        """``call`` as this server takes it: a script in the form it parses (the legacy one
        while that is not known), by source the first time this planner sends it."""
        if not isinstance(call, ScriptCall):
            return call
        script = call.script
        if not self._modern_scripts and script.legacy is not None:
            script = script.legacy
        first = script.sha not in self._scripts_sent
        self._scripts_sent.add(script.sha)
        if script is call.script and not first:
            return call
        return ScriptCall(script, call.keys, call.args, by_source=call.by_source or first)

    def _settle_form(self, probes: tuple[Script, ...], replies: list[Any]) -> None:
        """The answers to ``SCRIPT LOAD`` of the ``#!lua`` form of ``probes``: SHAs when the
        server runs that form (then loaded: later calls go by SHA), errors when it cannot
        parse it (Redis 6.2) or may not load scripts (an ACL): the legacy form then."""
        self._modern_scripts = not any(isinstance(r, Exception) for r in replies)
        if self._modern_scripts:
            self._scripts_sent.update(script.sha for script in probes)

    def _refused_shebang(self, call: Call, reply: object) -> bool:
        """``reply`` is a server older than Redis 7 refusing to parse the ``#!lua`` line (a
        failover to an older server than the one that answered the probe): from now on
        this planner sends the legacy form of every script."""
        refused = (
            isinstance(call, ScriptCall)
            and call.script.legacy is not None
            and isinstance(reply, ServerError)
            and "near '#'" in reply.message
        )
        if refused:
            self._modern_scripts = False
        return refused

    # --------------------------------------------------------------------- new
    def new(self) -> Session:
        raw = tokens.new_raw_token()
        return Session(raw_token=raw, token=self.codec.dump(raw), config=self.config)

    # -------------------------------------------------------------------- load
    def load(self, presented: object, *, touch: bool = True) -> Op[Session | None]:
        """One round trip, no script: ``HGETALL`` + ``PTTL`` of the family's hash; the token
        must be the session's current one (the hash has its field ``k:<digest>``). When the
        idle TTL was last refreshed more than ``touch_interval`` ago, a second round trip
        refreshes it (``touch.lua``): at most once per interval per session; never with
        ``touch=False`` (a passive read: it does not keep the session alive). The server's
        TTL enforces both expiries (it never outlives the absolute deadline), so a hash that
        exists is a live session."""
        opened = self.codec.open(presented)
        if opened is None:
            return None
        raw, client_token = opened
        tid = tokens.token_id(raw)
        key = self.layout.data(tid.family)
        read = Batch((Command(("HGETALL", key)), Command(("PTTL", key))), idempotent=True)
        served = Served(key) if self.locate else None
        fields, ttl = yield from self.run(read, served)
        if _wrong_type(fields):
            log.warning("session %s: the key is not a session hash, ignored", tid.family)
            return None
        _raise_server_error(fields)
        _raise_server_error(ttl)
        if isinstance(fields, list):  # RESP2: a flat field, value, ... list
            fields = dict(zip(fields[::2], fields[1::2], strict=True))
        if not fields or keys.token_field(tid.digest).encode() not in fields:
            return None  # unknown, expired, destroyed, or a token a renew replaced
        if int(ttl) < 0:  # no TTL: not written by stickless (it would never expire)
            log.warning("session %s: the key has no TTL, treated as missing", tid.family)
            return None
        session = self._session_from_hash(raw, client_token, tid, fields, int(ttl))
        if session is None or session.meta is None:
            return None
        if served is not None:
            session.mark_loaded_from(served.node or "", session.meta.access_ms)
        if touch and self._touch_due(session.meta, int(ttl)):
            refresh = ScriptCall(TOUCH, (key,), (tid.digest, session.meta.idle_ms))
            touched = Served(key) if served is not None else None
            (stamp,) = yield from self.run(Batch((refresh,), idempotent=True), touched)
            _raise_server_error(stamp)
            if not int(stamp):
                return None  # gone or renewed between the two round trips
            session.mark_touched(int(stamp))
            if served is not None and served.node and touched and touched.node == served.node:
                # the stamp the read's node now holds (a touch served by another node, a
                # redirected one, must not vouch for what the read returned)
                session.mark_loaded_from(served.node, int(stamp))
        return session

    def _touch_due(self, meta: SessionMeta, ttl_ms: int) -> bool:
        """The idle TTL was last set ``idle - ttl`` ms ago (it counts down from ``idle``), so
        this needs no clock: due once that is ``touch_interval``, or half the idle timeout
        when that is sooner (a session whose own idle timeout is at most the interval, a
        short ``set_lifetime``, would otherwise never be refreshed by reads). Near the
        absolute deadline the TTL is capped by it and a touch could not extend it: none is
        sent."""
        idle = meta.idle_ms
        if meta.deadline_ms - meta.access_ms <= idle:
            return False
        return idle - ttl_ms >= min(int(self.config.touch_interval * 1000), idle // 2)

    def _session_from_hash(
        self, raw: str, client_token: str, tid: TokenId, fields: dict[bytes, bytes], ttl_ms: int
    ) -> Session | None:
        try:
            own_idle = fields.get(_IDLE_FIELD)
            meta = SessionMeta(
                created_ms=int(fields[_CREATED_FIELD]),
                access_ms=int(fields[_ACCESS_FIELD]),
                deadline_ms=int(fields[_DEADLINE_FIELD]),
                idle_ms=int(own_idle) if own_idle is not None else self.config.idle_ms,
            )
            user = fields.get(_USER_FIELD)
            user_id = user.decode() if user is not None else None
        except (KeyError, ValueError):  # UnicodeDecodeError is a ValueError
            log.warning("session %s: metadata unreadable, treated as missing", tid.family)
            return None
        try:
            named = fields.get(_DEVICE_NAME_FIELD)
            device_name = self._opened_meta(tid.family, keys.META_DEVICE_NAME, named)
        except ValueError:  # not UTF-8: not ours, no name
            device_name = None
        reseal: list[str] = []
        plain = self._plain_data(fields) if self.cipher is None else None
        # None: encryption on, or a field stickless did not write: one by one
        data, stored = plain or self._data_fields(tid.family, fields, reseal)
        session = Session(
            raw_token=raw,
            token=client_token,
            tid=tid,
            data=data,
            stored=stored,
            meta=meta,
            user_id=user_id,
            config=self.config,
            ttl_ms=ttl_ms,
            device_name=device_name,
        )
        session.rewrite_at_save(reseal)  # sealed with an older key, or not yet sealed
        return session

    @staticmethod
    def _plain_data(
        fields: dict[bytes, bytes],
    ) -> tuple[dict[str, Any], dict[str, bytes]] | None:
        """The data fields decoded all at once (see :func:`stickless.codec.decode_many`);
        None when they do not (a name that is not UTF-8, a value that is not JSON: then
        :meth:`_data_fields` takes them one by one, dropping and logging that one)."""
        prefix, skip = _DATA_PREFIX, len(_DATA_PREFIX)
        try:
            stored = {
                name[skip:].decode(): value
                for name, value in fields.items()
                if name[:skip] == prefix
            }
        except UnicodeDecodeError:
            return None
        values = codec.decode_many(stored.values())
        if values is None:
            return None
        return dict(zip(stored, values, strict=True)), stored

    def _data_fields(
        self, family: str, fields: dict[bytes, bytes], reseal: list[str]
    ) -> tuple[dict[str, Any], dict[str, bytes]]:
        """The data fields one by one: opened when sealed (see :meth:`_opened`); a field
        whose name is not UTF-8 or whose value is not JSON is dropped, and logged."""
        data: dict[str, Any] = {}
        stored: dict[str, bytes] = {}
        prefix, skip, sealed = _DATA_PREFIX, len(_DATA_PREFIX), self.cipher is not None
        for name, raw_value in fields.items():
            if not name.startswith(prefix):
                continue
            try:
                key = name[skip:].decode()
            except UnicodeDecodeError:
                log.warning("session %s: a field name is not UTF-8, ignored", family)
                continue
            value = self._opened(family, key, raw_value, reseal) if sealed else raw_value
            if value is None:
                continue
            try:
                data[key] = codec.decode(value)
            except ValueError:
                # Never unpickle, never guess: a non-JSON value is dropped (and logged
                # without its content); the rest of the session survives.
                log.warning(
                    "session %s: field %r is not JSON (%d bytes), ignored",
                    family,
                    key,
                    len(value),
                )
                continue
            stored[key] = value
        return data, stored

    def _opened(self, family: str, key: str, value: bytes, reseal: list[str]) -> bytes | None:
        """A stored value's JSON: opened when sealed (None, logged, when it does not open);
        with encryption on, a value still plain (other than an integer) is noted in
        ``reseal``, as is one sealed with an older key."""
        if self.cipher is None:
            return value
        if not crypto.is_sealed(value):
            if not crypto.is_plain_integer(value):
                reseal.append(key)
            return value
        try:
            opened = self.cipher.open(family, keys.DATA_PREFIX + key, value)
        except ValueError as exc:
            log.warning("session %s: field %r dropped: %s", family, key, exc)
            return None
        if opened.stale:
            reseal.append(key)
        return opened.plaintext

    def _sealed(self, family: str, field: str, value: bytes) -> bytes:
        """``value`` as stored: sealed when encryption is on (integers stay plain: incr)."""
        if self.cipher is None or crypto.is_plain_integer(value):
            return value
        return self.cipher.seal(family, field, value)

    # -------------------------------------------------------------------- save
    def save(self, session: Session) -> Op[SaveResult]:
        if session.status is SessionStatus.INVALIDATED:
            result = SaveResult(SaveOutcome.UNCHANGED)
            if session.meta is not None:
                yield from self.destroy(session)
                result = SaveResult(SaveOutcome.DESTROYED)
            if not dict.__len__(session):
                session.mark_gone()
                return result
            self._restart_as_new(session)
        changes = session.pending_changes()
        is_new = session.meta is None
        renew_to = tokens.new_raw_token(session.token_id.family) if session.renew_pending else None
        metadata = not is_new and "dn" in session.device_writes()  # a device name
        if not (changes or session.user_changed or renew_to or session.lifetime or metadata):
            return SaveResult(SaveOutcome.UNCHANGED)
        if is_new and not (changes or session.user_id):
            return SaveResult(SaveOutcome.UNCHANGED)
        size = session.encoded_size(changes)
        if size > self.config.max_size:
            raise SessionTooLarge(size, self.config.max_size)

        tid = session.token_id
        wait = self._wait()
        if renew_to is None and not is_new and _usual(session, changes):
            started = time.monotonic()
            refused = False
            if self._sets_existing_only(session, changes):
                updated = yield from self._set_existing(session, changes, wait)
                if updated is not None:
                    return updated
                refused = bool(self.hsetex)  # it ran and wrote nothing: save.lua says why
            if not refused:
                wait = self._wait(spent=time.monotonic() - started)
                updated = yield from self._update(session, changes, wait)
                if updated is not None:
                    return updated
            # nothing was written, but a WAIT may have blocked (too few replicas): save.lua's
            # gets the rest of wait_timeout, so the save stays bounded by it
            wait = self._wait(spent=time.monotonic() - started)
        new_tid = tokens.token_id(renew_to) if renew_to else None
        call = self._save_call(session, tid=tid, changes=changes, is_new=is_new, new_tid=new_tid)
        crowd = None
        probes: tuple[Command, ...] = ()
        login = self._capped_login(session)
        if login is not None:  # max_sessions_per_user: this save logs in
            crowd = yield from self._reserve(login, session, tid.session_id)
            probes = yield from self._admit(crowd)
        dead = crowd.dead if crowd is not None else ()
        calls: list[Call] = [call, *self._index_calls(session, tid, remove=dead)]
        origin = None if is_new else _origin(session)
        batch = Batch((*calls, *probes), idempotent=False, wait=wait, origin=origin)
        replies = yield from self.run(batch)
        reply = replies[0]
        if crowd is not None and (isinstance(reply, Exception) or int(reply[0]) <= 0):
            yield from self._forget(crowd.user_id, [crowd.family])  # nothing written
        _raise_refusal(reply)
        status = SaveStatus(int(reply[0]))
        if status is SaveStatus.NOT_INTEGER:
            field_name = _text(reply[1])[len(keys.DATA_PREFIX) :]
            raise SessionConflict(
                f"session[{field_name!r}]: incr refused (the value in Redis is not an integer, "
                "or the result would overflow 64 bits); nothing was saved"
            )
        if status is SaveStatus.EXISTS:
            raise SessionConflict("new session token already exists; nothing was saved")
        if status in (SaveStatus.GONE, SaveStatus.DESTROYED):
            session.mark_gone()
            return SaveResult(SaveOutcome.GONE)
        for extra in replies[1 : len(calls)]:
            if isinstance(extra, Exception):
                log.warning("user index update failed (repaired lazily): %s", extra)
        meta = SessionMeta(
            created_ms=int(reply[2]),
            access_ms=int(reply[1]),
            deadline_ms=int(reply[3]),
            idle_ms=_idle_ms(session, self.config)
            if status is SaveStatus.SAVED
            else (session.meta.idle_ms if session.meta else self.config.idle_ms),
        )
        # each counter as Redis computed it (a string past 2**53, where Lua numbers are inexact)
        tail = reply[4:]
        counters = {k: int(v) for k, v in zip(changes.incrs, tail, strict=False)}
        family = tid.family
        kept = {
            name: opened
            for name, value in zip(changes.defaults, tail[len(counters) :], strict=True)
            if (opened := self._opened(family, name, value, [])) is not None
        }
        # status 2: saved through a renew forward (a request still carrying the token a
        # plain renew replaced): its data went into the live session, but it does not renew
        raw, token = session.raw_token, session.token
        if renew_to is not None and status is SaveStatus.SAVED:
            raw, token = renew_to, self.codec.dump(renew_to)
        session.mark_saved(
            changes=changes,
            meta=meta,
            counters=counters,
            kept=kept,
            raw_token=raw,
            token=token,
        )
        yield from self._note_saved_at(session)
        evicted: tuple[str, ...] = ()
        if crowd is not None and probes:  # evict_oldest: the others beyond the cap end now
            self._judge(crowd, replies[len(calls) : len(calls) + len(probes)])
            evicted = yield from self._evict(crowd)
        return SaveResult(SaveOutcome.SAVED, _acked(wait, replies), evicted)

    def _wait(self, spent: float = 0.0) -> tuple[int, int] | None:
        """The ``WAIT`` a save sends (``durability="replicated"``): replicas, timeout (ms),
        the ``spent`` seconds taken off (at least 1 ms: ``WAIT`` with 0 would block for
        ever)."""
        if self.config.durability != "replicated":
            return None
        return self.config.min_replicas, max(1, int((self.config.wait_timeout - spent) * 1000))

    def _sets_existing_only(self, session: Session, changes: Changes) -> bool:
        """Whether the usual save can go as one ``HSETEX`` (see :meth:`_set_existing`): the
        server takes it (not known yet: tried), the session is not in a cluster (whose saves
        carry the last-access stamp of their load, see :class:`Origin`), the save only sets
        keys the session loaded or saved (no delete, no device metadata), and its idle TTL
        needs no refresh yet (:meth:`_refresh_due`, on the TTL counted down since the
        load)."""
        meta, left = session.meta, session.seconds_left
        if self.hsetex is False or meta is None or left is None or changes.deletes:
            return False
        if session.device_writes() or not all(map(session.is_stored, changes.sets)):
            return False
        return not self._refresh_due(meta, int(left * 1000))

    def _refresh_due(self, meta: SessionMeta, left_ms: int) -> bool:
        """Whether a save must set the idle TTL (by script), ``left_ms`` being what is left
        of it: when it was set at least ``touch_interval`` ago (as :meth:`_touch_due`
        judges a load), or a tenth of the idle timeout ago, whichever is sooner (so a
        write slides the idle timeout to within a tenth of it, also when
        ``touch_interval`` is as long as the idle timeout: a short ``set_lifetime``,
        Flask's ``SESSION_REFRESH_EACH_REQUEST = False``); and when it is longer than the
        idle timeout (lowered since it was set). Not near the absolute deadline, which
        caps it."""
        idle = meta.idle_ms
        if left_ms > idle:
            return True
        if meta.deadline_ms - meta.access_ms <= idle:
            return False
        return idle - left_ms >= min(int(self.config.touch_interval * 1000), idle // 10)

    def _set_existing(
        self, session: Session, changes: Changes, wait: tuple[int, int] | None
    ) -> Op[SaveResult | None]:
        """The usual save without a script: ``HSETEX <hash> FXX FIELDS n k:<digest> 1
        d:<key> <json>...`` sets the fields only if every one of them exists, the presented
        token's own field among them. So nothing is written when the token is not the
        session's current one (renewed away), the session is gone (destroyed, expired: a
        hash that exists has not reached its deadline, as its TTL never outlives it) or
        another request deleted one of those keys meanwhile. The TTL and the last-access
        stamp stay as the last refresh set them (no refresh was due). None when nothing was
        written: then ``save.lua`` follows, which says why or saves anyway (a key deleted
        meanwhile, a token a plain renew replaced); or when the server has no such command
        (:attr:`hsetex` False from then on): ``update.lua`` then."""
        assert session.meta is not None
        tid = session.token_id
        sets, _ = self._writes(session, changes)
        key = self.layout.data(tid.family)
        fields = (keys.token_field(tid.digest), "1", *sets)
        call = Command(("HSETEX", key, "FXX", "FIELDS", len(fields) // 2, *fields))
        try:  # sent as is: no script to resend, no retry (a save), never in a cluster
            replies: list[Any] = yield Batch((call,), idempotent=False, wait=wait)
        except Misconfigured as exc:  # an ACL without +hsetex (docs/production.md)
            log.info("HSETEX refused (%s): the usual save runs update.lua", exc)
            self.hsetex = False
            return None
        except Unavailable as exc:
            yield Refresh()  # as run() asks after every failed batch
            raise StoreUnavailable(self.address, exc) from exc
        reply = replies[0]
        if isinstance(reply, ServerError) and not _wrong_type(reply):
            self.hsetex = False  # unknown command or syntax: Valkey < 9, Redis < 8
            return None
        self.hsetex = True
        _raise_refusal(reply)
        if reply != 1:
            return None
        session.mark_saved(
            changes=changes,
            meta=session.meta,
            counters={},
            raw_token=session.raw_token,
            token=session.token,
            refreshed=False,
        )
        return SaveResult(SaveOutcome.SAVED, _acked(wait, replies))

    def _update(
        self, session: Session, changes: Changes, wait: tuple[int, int] | None
    ) -> Op[SaveResult | None]:
        """The usual save (see :func:`_usual`) in ``update.lua``: None when it wrote nothing
        (the token is not the session's current one, or the session is past its deadline),
        and then :meth:`save` sends ``save.lua``, which says why, or saves through a renew
        forward: one round trip in the usual case, a second one in those."""
        assert session.meta is not None
        tid = session.token_id
        sets, deletes = self._writes(session, changes)
        idle = _idle_ms(session, self.config)
        call = ScriptCall(
            UPDATE,
            (self.layout.data(tid.family),),
            (tid.digest, idle, len(sets) // 2, *sets, *deletes),
        )
        batch = Batch((call,), idempotent=False, wait=wait, origin=_origin(session))
        replies = yield from self.run(batch)
        reply = replies[0]
        _raise_refusal(reply)
        if not isinstance(reply, list):
            return None
        now, deadline = int(reply[0]), int(reply[1])
        meta = SessionMeta(session.meta.created_ms, now, deadline, idle)
        session.mark_saved(
            changes=changes,
            meta=meta,
            counters={},
            raw_token=session.raw_token,
            token=session.token,
        )
        yield from self._note_saved_at(session)
        return SaveResult(SaveOutcome.SAVED, _acked(wait, replies))

    def _note_saved_at(self, session: Session) -> Op[None]:
        """In a cluster, after a save of a loaded session: the node it went to (the slot's
        owner now) and the stamp it wrote are what a later save in this request is checked
        against (see :attr:`Batch.origin`)."""
        if session.loaded_as is not None and session.meta is not None:
            node = yield Locate(self.layout.data(session.token_id.family))
            session.mark_loaded_from(node or "", session.meta.access_ms)

    def _restart_as_new(self, session: Session) -> None:
        """Data written after ``invalidate()`` goes into a brand-new session (new token)."""
        raw = tokens.new_raw_token()
        session.restart(raw_token=raw, token=self.codec.dump(raw))

    def _save_call(
        self,
        session: Session,
        *,
        tid: TokenId,
        changes: Changes,
        is_new: bool,
        new_tid: TokenId | None,
    ) -> ScriptCall:
        cfg = self.config
        lifetime = session.lifetime
        user = ""
        if session.user_changed:
            user = "-" if session.user_id is None else "=" + session.user_id
        args: list[str | bytes | int] = [
            "new" if is_new else "old",
            tid.digest,
            _idle_ms(session, cfg),
            cfg.absolute_ms,
            int(cfg.forward_ttl * 1000),
            new_tid.digest if new_tid else "",
            "rotate" if session.forwards_old_token else "identity",
            user,
            "1" if session.touches_identity else "",
            lifetime.idle_ms if lifetime and lifetime.idle_ms else "",
            lifetime.absolute_ms if lifetime and lifetime.absolute_ms else "",
        ]
        sets, deletes = self._writes(session, changes)
        args += [len(sets) // 2, *sets, len(deletes), *deletes, len(changes.incrs)]
        for name, amount in changes.incrs.items():
            args += [keys.DATA_PREFIX + name, amount]
        args.append(len(changes.defaults))
        for name, value in changes.defaults.items():
            field_name = keys.DATA_PREFIX + name
            args += [field_name, self._sealed(tid.family, field_name, value)]
        return ScriptCall(SAVE, self.layout.session_keys(tid.family), tuple(args))

    def _writes(self, session: Session, changes: Changes) -> tuple[list[str | bytes], list[str]]:
        """The hash fields a save sets (as field, value, field, value...) and deletes: the
        changed data (sealed when encryption is on) and the device's metadata."""
        family = session.token_id.family
        device, cleared = _device_fields(session.device_writes())
        sets: list[str | bytes] = []
        for name, value in changes.sets.items():
            field_name = keys.DATA_PREFIX + name
            sets += [field_name, self._sealed(family, field_name, value)]
        for field_name, text in device:  # metadata: written as the data is
            sets += [field_name, self._sealed(family, field_name, text.encode())]
        return sets, [*(keys.DATA_PREFIX + name for name in changes.deletes), *cleared]

    def _index_calls(
        self, session: Session, tid: TokenId, *, remove: Sequence[str] = ()
    ) -> list[Call]:
        """User index upkeep sent with the save: additions only (the save may yet be
        refused), and ``remove``: entries a capped login found dead. An entry a save makes
        stale (the old user) is not removed here: readers check each entry's owner and
        existence and prune the dead ones."""
        lifetime = session.lifetime
        absolute = lifetime.absolute_ms if lifetime is not None else None
        if session.user_id is None or not (session.user_changed or absolute is not None):
            return []
        deadline, absolute = self._index_deadline(session)
        return [
            self._index_call(
                session.user_id, tid.session_id, deadline, remove, absolute_ms=absolute
            )
        ]

    def _index_deadline(self, session: Session) -> tuple[int, int | None]:
        """``(deadline_ms, absolute_ms)`` of the session's index entry, as
        :meth:`_index_call` takes them: a new session's counts from the script's clock."""
        lifetime = session.lifetime
        absolute = lifetime.absolute_ms if lifetime is not None else None
        if session.meta is None:
            return 0, absolute
        deadline = session.meta.deadline_ms
        if absolute is not None:  # set_lifetime: the entry lives as long as the session
            deadline = session.meta.created_ms + absolute
        return deadline, None

    def _index_call(
        self,
        user_id: str,
        add: str,
        deadline_ms: int,
        remove: Sequence[str],
        *,
        absolute_ms: int | None = None,
    ) -> ScriptCall:
        """``deadline_ms`` 0: the index script uses its clock + ``absolute_ms`` (default: the
        configured absolute timeout)."""
        return ScriptCall(
            INDEX,
            (self.layout.user_index(user_id),),
            (add, deadline_ms, absolute_ms or self.config.absolute_ms, *remove),
        )

    # ------------------------------------------------------- sessions per user cap
    # A login (a save binding a user) with max_sessions_per_user first reserves its place in
    # the user's logins (cap.lua, in the user's slot), which names every other session of the
    # user: those in the index and the logins reserved before this one. Sessions live in
    # other slots, so whether each is live is read next (HMGET; a login reserved within
    # LOGIN_WINDOW_MS counts as live unless it is known dead: it may be in flight). refuse:
    # read before the save, which is not sent when as many are live as the cap allows.
    # evict_oldest: read with the save; then the oldest beyond the cap are destroyed, a
    # login still in flight among them by tombstone (its save then finds it destroyed). Each
    # login sees all the logins reserved before its own, so the newest ones survive and no
    # interleaving leaves more live sessions than the cap.
    def _capped_login(self, session: Session) -> str | None:
        """The user a save logs in, when the cap applies to it."""
        if self.config.max_sessions_per_user is None or not session.user_changed:
            return None
        return session.user_id

    def _reserve(self, user_id: str, session: Session, family: str) -> Op[_Crowd]:
        """Round trip 1 of a capped login: reserve its place; the other sessions."""
        deadline, absolute = self._index_deadline(session)
        call = ScriptCall(
            CAP,
            self.layout.user_keys(user_id),
            (family, LOGIN_WINDOW_MS, deadline, absolute or self.config.absolute_ms),
        )
        started = _monotonic()
        (reply,) = yield from self.run(Batch((call,), idempotent=True))  # a resend re-reserves
        crowd = _Crowd(user_id, family, started)
        if _wrong_type(reply):
            log.warning("a user index is not a sorted set: the session cap is not enforced")
            return crowd
        _raise_server_error(reply)
        crowd.now_ms = int(reply[0])
        for member, login in zip(reply[1::2], reply[2::2], strict=True):
            try:
                other = tokens.parse_session_id(_text(member))
            except ValueError:
                continue  # not a session id (written by another program): ignored
            login_ms = int(float(_text(login))) if login not in (b"", "") else None
            crowd.others.append((other, login_ms))
        return crowd

    def _admit(self, crowd: _Crowd) -> Op[tuple[Command, ...]]:
        """With fewer others than the cap, nothing to check. refuse: check them now, and
        raise :class:`TooManySessions` (the reservation withdrawn) when the login would be
        one too many. evict_oldest: the checks to send with the save."""
        limit = self.config.max_sessions_per_user or 0
        if len(crowd.others) < limit:
            probes: tuple[Command, ...] = ()
        elif self.config.on_limit == "refuse":
            replies = yield from self.run(Batch(self._probes(crowd), idempotent=True))
            self._judge(crowd, replies)
            if len(crowd.live) >= limit:
                yield from self._forget(crowd.user_id, [crowd.family])
                raise TooManySessions(limit)
            probes = ()
        else:
            probes = self._probes(crowd)
        if _monotonic() - crowd.started > LOGIN_WINDOW_MS / 2000:
            yield from self._forget(crowd.user_id, [crowd.family])
            raise StoreUnavailable(
                self.address,
                Unavailable(None, "the login took too long to reserve its place", applied=False),
            )
        return probes

    def _probes(self, crowd: _Crowd) -> tuple[Command, ...]:
        """Is each other session live? Its creation and user, and, for a recent login, its
        tombstone (a login in flight has none; one that logged out has)."""
        calls: list[Command] = []
        for family, login_ms in crowd.others:
            calls.append(
                Command(("HMGET", self.layout.data(family), keys.META_CREATED, keys.META_USER))
            )
            if crowd.recent(login_ms):
                calls.append(Command(("EXISTS", self.layout.tombstone(family))))
        return tuple(calls)

    def _judge(self, crowd: _Crowd, replies: Sequence[Any]) -> None:
        """Sort the others into ``crowd.live`` (``(login or creation ms, id, bound)``) and
        ``crowd.dead``, from the replies of :meth:`_probes`."""
        at = iter(replies)
        for family, login_ms in crowd.others:
            fields = next(at)
            recent = crowd.recent(login_ms)
            tomb = next(at) if recent else None
            if isinstance(fields, Exception):
                if not _wrong_type(fields):  # unreadable now: counted, never pruned
                    crowd.live.append((login_ms or 0, family, True))
                else:
                    crowd.dead.append(family)
                continue
            created, owner = fields
            try:
                created_ms = int(created) if created is not None else None
                user = _text(owner) if owner is not None else None
            except (TypeError, ValueError):  # unreadable metadata: like sessions_for, dead
                crowd.dead.append(family)
                continue
            if user == crowd.user_id:
                order = login_ms if login_ms is not None else created_ms or 0
                crowd.live.append((order, family, True))
            elif user is None and recent and (created_ms is not None or tomb != 1):
                crowd.live.append((login_ms or 0, family, False))  # a login in flight
            else:  # gone, logged out, or another user's
                crowd.dead.append(family)

    def _evict(self, crowd: _Crowd) -> Op[tuple[str, ...]]:
        """After the login's save: end the oldest of the live others beyond the cap, prune
        the dead from the index. Round trip 3, only when there is something to do. The
        login is applied already: a failure here is logged, and the next login of the user
        evicts what this one could not."""
        keep = (self.config.max_sessions_per_user or 1) - 1
        ranked = sorted(crowd.live)
        doomed = ranked[: max(0, len(ranked) - keep)]
        evicted = tuple(family for _, family, _ in doomed)
        gone = [*evicted, *crowd.dead]
        if not gone:
            return ()
        calls: list[Call] = [
            self._destroy_call(family, "", owner=crowd.user_id, evict=not bound)
            for _, family, bound in doomed
        ]
        calls += [
            self._index_call(crowd.user_id, "", 0, gone),
            self._forget_call(crowd.user_id, gone),
        ]
        try:
            replies = yield from self.run(Batch(tuple(calls), idempotent=True))
        except StoreUnavailable as exc:
            log.warning("login saved, older sessions beyond the cap not ended yet: %s", exc)
            return ()
        for extra in replies:
            if isinstance(extra, Exception):
                log.warning("ending sessions beyond the cap: %s", extra)
        return evicted

    def _forget_call(self, user_id: str, families: Sequence[str]) -> ScriptCall:
        return ScriptCall(
            CAP,
            self.layout.user_keys(user_id),
            ("", LOGIN_WINDOW_MS, 0, self.config.absolute_ms, *families),
        )

    def _forget(self, user_id: str, families: Sequence[str]) -> Op[None]:
        """Withdraw reservations (a refused or failed login), best effort: a reservation
        left behind only counts for :data:`LOGIN_WINDOW_MS`, and only while its session is
        not known dead."""
        try:
            (reply,) = yield from self.run(
                Batch((self._forget_call(user_id, families),), idempotent=True)
            )
        except StoreUnavailable as exc:
            log.warning("a login's reservation not withdrawn: %s", exc)
            return
        if isinstance(reply, Exception):
            log.warning("a login's reservation not withdrawn: %s", reply)

    # ---------------------------------------------------------------- pop_once
    def pop_once(self, session: Session, key: str, default: Any = None) -> Op[Any]:
        """Take ``key`` out of the stored session, atomically: of several requests (tabs)
        popping it at once, exactly one gets the value, the others ``default``. One round
        trip (none when the value was never stored: it is popped locally)."""
        if not session.is_stored(key):
            return session.pop(key, default)
        tid = session.token_id
        call = ScriptCall(
            POP, (self.layout.data(tid.family),), (tid.digest, keys.DATA_PREFIX + key)
        )
        # not resent after a lost reply: at most once, never twice
        (reply,) = yield from self.run(Batch((call,), idempotent=False))
        _raise_server_error(reply)
        session.forget(key)
        if reply is None:
            return default
        opened = self._opened(tid.family, key, reply, [])
        if opened is None:
            return default
        try:
            return codec.decode(opened)
        except ValueError:
            log.warning("session %s: field %r is not JSON, dropped", tid.family, key)
            return default

    # ----------------------------------------------------------------- destroy
    def destroy(self, presented: object) -> Op[bool]:
        """Destroy the session of a token (client-facing) or Session. True if one was live.
        A token that lost its power in an identity renew destroys nothing."""
        if isinstance(presented, Session):
            raw: str | None = presented.raw_token
        else:
            raw = self.codec.parse(presented)
        if raw is None:
            return False
        tid = tokens.token_id(raw)
        return (yield from self._destroy(tid.family, tid.digest))

    def destroy_id(self, session_id: str, user_id: str | None = None) -> Op[bool]:
        """Destroy the session with id ``session_id`` (its family: no token is checked), and
        with ``user_id`` only if it is bound to that user (checked in the script itself).
        True if one was live."""
        return (yield from self._destroy(session_id, "", owner=user_id or ""))

    def _destroy(self, family: str, digest: str, owner: str = "") -> Op[bool]:
        """Destroy now, leave a tombstone, drop the user index entry."""
        call = self._destroy_call(family, digest, owner=owner)
        (reply,) = yield from self.run(Batch((call,), idempotent=True))
        _raise_server_error(reply)
        if int(reply[0]) != 1:
            return False
        user = _text(reply[1])
        if user:
            index = self._index_call(user, "", 0, [family])
            replies = yield from self.run(Batch((index,), idempotent=True))
            if isinstance(replies[0], Exception):
                log.warning("user index update failed (repaired lazily): %s", replies[0])
        return True

    # ------------------------------------------------------------ user index
    def _index_members(self, user_id: str) -> Op[list[str]]:
        """The session ids in the user's index. A corrupt index (not a sorted set, or a
        member that is not a session id) is treated as holding nothing (logged)."""
        index_key = self.layout.user_index(user_id)
        (members,) = yield from self.run(
            Batch((Command(("ZRANGE", index_key, 0, -1)),), idempotent=True)
        )
        if _wrong_type(members):
            log.warning("a user index is not a sorted set (written by another program?)")
            return []
        _raise_server_error(members)
        ids: list[str] = []
        for member in members:
            try:
                ids.append(tokens.parse_session_id(_text(member)))
            except ValueError:
                log.warning("a user index member is not a session id, ignored")
        return ids

    def sessions_for(self, user_id: str) -> Op[list[SessionInfo]]:
        """The user's live sessions, oldest first; dead index entries are pruned."""
        members = yield from self._index_members(user_id)
        calls = tuple(
            Command(("HMGET", self.layout.data(family), *keys.INFO_FIELDS)) for family in members
        )
        replies = (yield from self.run(Batch(calls, idempotent=True))) if calls else []
        live: list[SessionInfo] = []
        dead: list[str] = []
        for family, reply in zip(members, replies, strict=True):
            info = self._info(family, user_id, reply)
            if info is None:
                dead.append(family)
            else:
                live.append(info)
        if dead:
            prune = self._index_call(user_id, "", 0, dead)
            yield from self.run(Batch((prune,), idempotent=True))
        live.sort(key=lambda info: info.created_at)
        return live

    def _info(self, family: str, user_id: str, reply: Any) -> SessionInfo | None:
        """A user index entry's session, or None when it is dead (gone, another user's,
        or unreadable)."""
        if _wrong_type(reply):
            return None
        _raise_server_error(reply)
        created, access, deadline, owner, own_idle, address, named, *agent = reply
        try:
            if owner is None or _text(owner) != user_id:
                return None
            created_ms, access_ms, deadline_ms = int(created), int(access), int(deadline)
            idle_ms = int(own_idle) if own_idle is not None else self.config.idle_ms
        except (TypeError, ValueError):
            return None
        fields = [(keys.META_IP, address), (keys.META_DEVICE_NAME, named)]
        fields += zip(keys.META_USER_AGENT, agent, strict=True)
        try:
            ip, name, *pieces = (self._opened_meta(family, f, v) for f, v in fields)
        except ValueError:  # not UTF-8: not ours, shown as unknown
            ip = name = None
            pieces = []
        user_agent = "".join(piece or "" for piece in pieces) or None
        last_access = ms_to_datetime(access_ms)
        return SessionInfo(
            session_id=family,
            user_id=user_id,
            created_at=ms_to_datetime(created_ms),
            last_access=last_access,
            expires_at=ms_to_datetime(min(access_ms + idle_ms, deadline_ms)),
            absolute_expires_at=ms_to_datetime(deadline_ms),
            device=Device(
                user_agent=user_agent,
                ip=ip,
                name=name,
                created_at=ms_to_datetime(created_ms),
                last_seen=last_access,
            ),
        )

    def _opened_meta(self, family: str, field_name: str, value: bytes | None) -> str | None:
        """A device metadata field as text (opened when sealed; None when absent, empty, or
        sealed with no key that opens it). ValueError when it is not UTF-8."""
        if value is None:
            return None
        if self.cipher is not None and crypto.is_sealed(value):
            try:
                value = self.cipher.open(family, field_name, value).plaintext
            except ValueError:
                return None
        return _text(value) or None

    def revoke_user(self, user_id: str, keep: object = None) -> Op[int]:
        """Destroy all of the user's sessions but ``keep``: a Session or a client token (its
        session is kept only while that token is its current one: a stale or forged token
        keeps nothing), a session id (operators: that session is kept), or None."""
        keep_id, spare = self._kept(keep)
        members = yield from self._index_members(user_id)
        doomed = [family for family in members if family != keep_id]
        count = 0
        if doomed:
            calls = tuple(
                self._destroy_call(family, "", owner=user_id, spare=spare) for family in doomed
            )
            replies = yield from self.run(Batch(calls, idempotent=True))
            gone = []
            for family, reply in zip(doomed, replies, strict=True):
                _raise_server_error(reply)
                count += int(reply[0]) == 1
                if int(reply[0]) == 1 or not spare:
                    gone.append(family)
            if gone:
                prune = self._index_call(user_id, "", 0, gone)
                yield from self.run(Batch((prune,), idempotent=True))
        return count

    def _destroy_call(
        self, family: str, digest: str, *, owner: str = "", spare: str = "", evict: bool = False
    ) -> ScriptCall:
        """Destroy the session of ``family`` if ``digest`` may (any when ''); with
        ``owner``, only if bound to that user; never when ``spare`` is its current digest.
        ``evict``: a login in flight (cap): also when bound to no user yet, and a session
        not written yet gets its tombstone."""
        args: tuple[str | int, ...] = (digest, int(self.config.tombstone_ttl * 1000), owner, spare)
        return ScriptCall(
            DESTROY, self.layout.session_keys(family), (*args, "1") if evict else args
        )

    def _kept(self, keep: object) -> tuple[str | None, str]:
        """``keep`` of :meth:`revoke_user` as ``(session id kept outright, digest spared)``."""
        if keep is None:
            return None, ""
        raw = keep.raw_token if isinstance(keep, Session) else self.codec.parse(keep)
        if raw is not None:
            return None, tokens.token_id(raw).digest
        try:
            return tokens.parse_session_id(keep), ""  # type: ignore[arg-type]
        except ValueError:
            return None, ""


@dataclass(slots=True)
class _Crowd:
    """What a capped login knows of its user's other sessions."""

    user_id: str
    family: str
    """The login's own session id."""
    started: float
    """``time.monotonic()`` when it reserved its place."""
    now_ms: int = 0
    """The server's clock at the reservation."""
    others: list[tuple[str, int | None]] = field(default_factory=list)
    """Every other session of the user: ``(id, when it reserved its login, or None)``."""
    live: list[tuple[int, str, bool]] = field(default_factory=list)
    """``(login or creation ms, id, bound to the user)``: live, or a login in flight."""
    dead: list[str] = field(default_factory=list)

    def recent(self, login_ms: int | None) -> bool:
        return login_ms is not None and login_ms > self.now_ms - LOGIN_WINDOW_MS


def _noscript(reply: object) -> bool:
    return isinstance(reply, ServerError) and reply.code == "NOSCRIPT"


def _origin(session: Session) -> Origin | None:
    """Where and as what ``session`` was loaded, in a cluster (None: new, or no cluster)."""
    loaded = session.loaded_as
    return None if loaded is None or session.meta is None else Origin(*loaded)


def _redirected(reply: object) -> bool:
    """A cluster redirection answered by a node (the command did not run)."""
    return isinstance(reply, ServerError) and reply.code in ("MOVED", "ASK")


def _by_source(call: Call) -> Call:
    if isinstance(call, ScriptCall):
        return ScriptCall(call.script, call.keys, call.args, by_source=True)
    return call


_DATA_PREFIX = keys.DATA_PREFIX.encode()
_CREATED_FIELD = keys.META_CREATED.encode()
_ACCESS_FIELD = keys.META_ACCESS.encode()
_DEADLINE_FIELD = keys.META_DEADLINE.encode()
_USER_FIELD = keys.META_USER.encode()
_IDLE_FIELD = keys.META_IDLE.encode()
_DEVICE_NAME_FIELD = keys.META_DEVICE_NAME.encode()


def _idle_ms(session: Session, config: SessionConfig) -> int:
    """The idle timeout that applies to ``session`` (ms): its pending ``set_lifetime``, its
    stored one, else the configured one."""
    lifetime = session.lifetime
    if lifetime is not None and lifetime.idle_ms is not None:
        return lifetime.idle_ms
    return session.meta.idle_ms if session.meta is not None else config.idle_ms


def _usual(session: Session, changes: Changes) -> bool:
    """A save ``update.lua`` can make (with the session loaded and no renew pending): plain
    sets and deletes, no login or logout, lifetime, increment or default, and few enough
    fields for one ``HSET`` (far below the 8000 values Lua's ``unpack`` takes; ``save.lua``
    writes in chunks)."""
    return not (
        session.user_changed
        or session.lifetime
        or changes.incrs
        or changes.defaults
        or len(changes.sets) + len(changes.deletes) > _UPDATE_FIELDS
    )


def _acked(wait: tuple[int, int] | None, replies: list[Any]) -> int | None:
    """How many replicas acknowledged the save whose ``WAIT`` replied last in ``replies``
    (None without one); :class:`ReplicationTimeout` when fewer than asked. A refused WAIT
    (UNBLOCKED: the node was demoted under it): applied, replication unknown, so reported
    as not replicated."""
    if wait is None:
        return None
    acked = 0 if isinstance(replies[-1], Exception) else int(replies[-1])
    if acked < wait[0]:
        raise ReplicationTimeout(acked, wait[0], wait[1])
    return acked


def _raise_refusal(reply: object) -> None:
    """Raise what a save script's reply says went wrong: a key that is not a session hash
    (the script's HMGET met WRONGTYPE), or any other error."""
    if _wrong_type(reply):
        raise SessionConflict("the key is not a session hash (written by another program?)")
    _raise_server_error(reply)


def _device_fields(writes: dict[str, str]) -> tuple[list[tuple[str, str]], list[str]]:
    """``Session.device_writes()`` as hash fields to set and fields to delete: the user
    agent in pieces, only the pieces it fills (the others, which a longer one may have
    left, deleted); an empty address or name is deleted too. Nothing empty is stored."""
    fields: list[tuple[str, str]] = []
    if "ua" in writes:
        fields += zip(keys.META_USER_AGENT, user_agent_parts(writes["ua"]), strict=True)
    if "ip" in writes:
        fields.append((keys.META_IP, writes["ip"]))
    if "dn" in writes:
        fields.append((keys.META_DEVICE_NAME, writes["dn"]))
    return [(f, v) for f, v in fields if v], [f for f, v in fields if not v]


def _wrong_type(reply: object) -> bool:
    """A command, or a command of a script, met a key of another type (Redis 6.2 wraps a
    script's error: "Error running script (...): @user_script:42: WRONGTYPE ...")."""
    return isinstance(reply, ServerError) and (
        reply.code == "WRONGTYPE" or ": WRONGTYPE " in reply.message
    )


def _raise_server_error(reply: object) -> None:
    if isinstance(reply, Exception):
        raise reply


# ---------------------------------------------------------- helpers for the executors
def pipeline_commands(batch: Batch) -> list[tuple[str | bytes | int, ...]]:
    """The commands of a pipeline on one connection, WAIT right after the first (ASKING
    before them all, for :attr:`Batch.asking`)."""
    commands = [call.command() for call in batch.calls]
    if batch.wait is not None:
        commands.insert(1, ("WAIT", *batch.wait))
    if batch.asking:
        commands.insert(0, ("ASKING",))
    return commands


def order_replies(batch: Batch, replies: list[Any]) -> list[Any]:
    """Replies of :func:`pipeline_commands` in :class:`Batch` order (WAIT's reply last)."""
    replies = list(replies[1:] if batch.asking else replies)
    if batch.wait is not None:
        replies.append(replies.pop(1))
    return replies
