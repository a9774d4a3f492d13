"""Looking into a live store: list sessions, show one, remove one, revoke a user, stats.

Everything takes a blocking :class:`~stickless.SessionStore` (any topology) and returns
plain dataclasses; the ``stickless`` command only renders them. Sessions are found with
``SCAN`` over the session keys (``<prefix>:s:*``) on **every primary** (one for standalone
and Sentinel, each of a cluster's), which is the source of truth; the per-user index is
only used where the store itself uses it (``users show`` / ``users revoke``).

No function here returns session *values* unless asked (``show_session(values=True)``);
listings and stats compute key counts and sizes on the server, so values do not even
leave Redis. Tokens are never known: a session is named by its id ``family:digest``.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from stickless import codec
from stickless.ops._nodes import (
    DataNode,
    ReadScript,
    data_nodes,
    guarded,
    node_for_key,
    pipeline,
    raise_if_error,
    scan_keys,
    text,
    topology_of,
)
from stickless.session import ms_to_datetime
from stickless.store import keys
from stickless.store.keys import KeyLayout
from stickless.store.sync import SessionStore
from stickless.tokens import parse_session_id

__all__ = [
    "TTL_BUCKETS",
    "MemoryStats",
    "NodeStats",
    "SessionDetail",
    "SessionSummary",
    "StoreStats",
    "TtlBucket",
    "destroy_by_id",
    "list_sessions",
    "parse_session_id",
    "revoke_user",
    "show_session",
    "store_stats",
]

log = logging.getLogger("stickless.ops")

_CHUNK = 500

# Read-only summary of one session hash: the values stay on the server.
# Reply: {} when the key is missing, else
# {now ms, PTTL ms, created, last access, deadline, user ('' = none), data keys, data bytes}
# ("data bytes" = names + JSON values, the measure SessionConfig.max_size limits.)
_DESCRIBE = ReadScript.of(
    """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return {} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local meta = {['m:c'] = '', ['m:a'] = '', ['m:x'] = '', ['m:u'] = ''}
local n, size = 0, 0
for i = 1, #fields, 2 do
  local name = fields[i]
  if string.sub(name, 1, 2) == 'd:' then
    n = n + 1
    size = size + #name - 2 + #fields[i + 1]
  elseif meta[name] then
    meta[name] = fields[i + 1]
  end
end
return {string.format('%d', now), redis.call('PTTL', KEYS[1]), meta['m:c'], meta['m:a'],
        meta['m:x'], meta['m:u'], n, size}
"""
)


# ------------------------------------------------------------------------- results
@dataclass(frozen=True, slots=True)
class SessionSummary:
    """One stored session, as ``stickless sessions ls`` shows it (no values)."""

    session_id: str
    """``family:digest``: names the session, cannot be used as a cookie."""
    user_id: str | None
    created_at: datetime | None
    last_access: datetime | None
    expires_at: datetime | None
    """When Redis will drop it (server time + TTL); None when the key has no TTL."""
    absolute_expires_at: datetime | None
    ttl_ms: int | None
    """Remaining TTL in milliseconds (None: no TTL, which stickless never leaves)."""
    keys: int
    """Number of keys (top-level entries) in the session."""
    size: int
    """Bytes of data: key names + JSON values (what ``SessionConfig.max_size`` limits)."""
    memory: int | None
    """Bytes of server memory (``MEMORY USAGE``), None when the server would not say."""
    node: str
    """The primary holding it (``host:port``)."""


@dataclass(frozen=True, slots=True)
class SessionDetail:
    """``stickless sessions show``: the summary, the key names and (only when asked) values."""

    summary: SessionSummary
    key_sizes: dict[str, int]
    """Each key's JSON size in bytes, by key name (sorted)."""
    values: dict[str, Any] | None = None
    """Decoded values, only with ``values=True``."""
    undecodable: list[str] = field(default_factory=list)
    """Keys whose stored value is not JSON (left out of ``values``)."""


@dataclass(frozen=True, slots=True)
class TtlBucket:
    """Sessions whose remaining TTL is in ``[low_s, high_s)`` seconds."""

    label: str
    low_s: int
    high_s: int | None
    count: int


@dataclass(frozen=True, slots=True)
class MemoryStats:
    """``MEMORY USAGE`` of sampled session keys, bytes."""

    sampled: int
    mean: float | None
    median: float | None
    p95: float | None
    min: int | None
    max: int | None
    estimated_total: int | None
    """``mean`` x the number of sessions."""


@dataclass(frozen=True, slots=True)
class NodeStats:
    address: str
    sessions: int
    forwards: int
    """Renew forwards (``<prefix>:f:*``, short-lived)."""
    tombstones: int
    """Tombstones of destroyed sessions (``<prefix>:t:*``, short-lived)."""
    user_indexes: int
    """Per-user indexes (``<prefix>:u:*``)."""
    no_ttl: int
    """Session keys without a TTL (should be 0: they would never expire)."""
    memory: MemoryStats
    ttl: list[TtlBucket]
    used_memory: int | None
    """The node's ``used_memory`` (all data, not only sessions)."""
    dbsize: int | None
    """All keys of the database on this node (not only sessions)."""


@dataclass(frozen=True, slots=True)
class StoreStats:
    """``stickless stats``: totals over all primaries, and each primary's share."""

    topology: str
    prefix: str
    sessions: int
    forwards: int
    tombstones: int
    user_indexes: int
    no_ttl: int
    memory: MemoryStats
    ttl: list[TtlBucket]
    nodes: list[NodeStats]


TTL_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("< 1m", 0, 60),
    ("1-5m", 60, 300),
    ("5-15m", 300, 900),
    ("15-30m", 900, 1800),
    ("30m-1h", 1800, 3600),
    ("1-2h", 3600, 7200),
    ("2-6h", 7200, 21600),
    ("6-24h", 21600, 86400),
    (">= 24h", 86400, None),
)
"""Histogram buckets of remaining TTL: (label, from seconds, to seconds or None)."""


# ------------------------------------------------------------------------ helpers
def _ms(value: bytes | str | None) -> int | None:
    if value is None:
        return None
    raw = text(value)
    try:
        return int(raw)
    except ValueError:
        return None


def _summary(session_id: str, reply: Sequence[Any], memory: Any, node: str) -> SessionSummary:
    now, pttl, created, access, deadline, user, count, size = reply
    ttl = int(pttl)
    now_ms = int(text(now))
    return SessionSummary(
        session_id=session_id,
        user_id=text(user) or None,
        created_at=ms_to_datetime(_ms(created)),
        last_access=ms_to_datetime(_ms(access)),
        expires_at=ms_to_datetime(now_ms + ttl) if ttl >= 0 else None,
        absolute_expires_at=ms_to_datetime(_ms(deadline)),
        ttl_ms=ttl if ttl >= 0 else None,
        keys=int(count),
        size=int(size),
        memory=int(memory) if isinstance(memory, int | str | bytes) else None,
        node=node,
    )


def _chunks(items: Iterator[str], size: int = _CHUNK) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _unique(items: Iterator[str]) -> Iterator[str]:
    seen: set[str] = set()
    for item in items:
        if item not in seen:
            seen.add(item)
            yield item


# ----------------------------------------------------------------------- listing
def list_sessions(
    store: SessionStore, *, user: str | None = None, limit: int | None = None
) -> list[SessionSummary]:
    """Sessions found by ``SCAN`` on every primary, oldest first.

    ``user``: only the sessions bound to this user id. ``limit``: stop after this many
    (the first ones SCAN finds, which is no particular order). Values are not read.
    """
    layout = KeyLayout(store.config.key_prefix)
    pattern = layout.pattern(keys.SESSION)
    found: list[SessionSummary] = []

    def collect() -> None:
        for node in data_nodes(store):
            for scanned in _chunks(_unique(scan_keys(node.client, pattern))):
                chunk = [key for key in scanned if layout.family_of(key) is not None]
                described = _DESCRIBE.run(node.client, chunk)
                memory = pipeline(node.client, [("MEMORY", "USAGE", key) for key in chunk])
                for key, reply, mem in zip(chunk, described, memory, strict=True):
                    raise_if_error(reply)
                    if not reply:  # gone since the SCAN
                        continue
                    family = layout.family_of(key)
                    assert family is not None
                    summary = _summary(family, reply, mem, node.address)
                    if user is not None and summary.user_id != user:
                        continue
                    found.append(summary)
                    if limit is not None and len(found) >= limit:
                        return

    guarded(store, collect)
    epoch = datetime.min.replace(tzinfo=UTC)
    found.sort(key=lambda s: (s.created_at or epoch, s.session_id))
    return found


def show_session(
    store: SessionStore, session_id: str, *, values: bool = False
) -> SessionDetail | None:
    """One session's metadata and key names (and values, decoded, only with ``values``);
    None when no such session is stored."""
    family = parse_session_id(session_id)
    key = KeyLayout(store.config.key_prefix).data(family)

    def read() -> SessionDetail | None:
        node = node_for_key(store, key)
        (reply,) = _DESCRIBE.run(node.client, [key])
        raise_if_error(reply)
        if not reply:
            return None
        names_reply, memory = pipeline(node.client, [("HKEYS", key), ("MEMORY", "USAGE", key)])
        raise_if_error(names_reply)
        names = sorted(
            text(n)[len(keys.DATA_PREFIX) :]
            for n in names_reply
            if text(n).startswith(keys.DATA_PREFIX)
        )
        sizes = pipeline(node.client, [("HSTRLEN", key, keys.DATA_PREFIX + name) for name in names])
        summary = _summary(family, reply, memory, node.address)
        key_sizes = {
            name: int(size) for name, size in zip(names, sizes, strict=True) if size is not None
        }
        if not values:
            return SessionDetail(summary, key_sizes)
        decoded: dict[str, Any] = {}
        bad: list[str] = []
        raw = node.client.hgetall(key)
        for field_name, value in sorted((text(k), v) for k, v in raw.items()):
            if not field_name.startswith(keys.DATA_PREFIX):
                continue
            name = field_name[len(keys.DATA_PREFIX) :]
            try:
                decoded[name] = codec.decode(value)
            except ValueError:
                bad.append(name)
        return SessionDetail(summary, key_sizes, decoded, bad)

    return guarded(store, read)


# ------------------------------------------------------------------ destroy by id
def destroy_by_id(store: SessionStore, session_id: str) -> bool:
    """Destroy a session by its id (``store.destroy_id``). True if it was live."""
    return store.destroy_id(session_id)


def revoke_user(store: SessionStore, user_id: str, *, keep: str | None = None) -> int:
    """Log ``user_id`` out everywhere but the session with id ``keep``; how many were
    destroyed (``store.revoke_user``, which accepts a session id as ``keep``)."""
    if keep is not None:
        parse_session_id(keep)
    return store.revoke_user(user_id, keep=keep)


# --------------------------------------------------------------------------- stats
def _memory_stats(samples: Sequence[int], sessions: int) -> MemoryStats:
    if not samples:
        return MemoryStats(0, None, None, None, None, None, None)
    ordered = sorted(samples)
    mean = statistics.fmean(ordered)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return MemoryStats(
        sampled=len(ordered),
        mean=round(mean, 1),
        median=float(statistics.median(ordered)),
        p95=float(p95),
        min=ordered[0],
        max=ordered[-1],
        estimated_total=round(mean * sessions),
    )


def _histogram(ttls_ms: Sequence[int]) -> list[TtlBucket]:
    counts = [0] * len(TTL_BUCKETS)
    for ttl in ttls_ms:
        seconds = ttl / 1000
        for i, (_, low, high) in enumerate(TTL_BUCKETS):
            if seconds >= low and (high is None or seconds < high):
                counts[i] += 1
                break
    return [
        TtlBucket(label, low, high, count)
        for (label, low, high), count in zip(TTL_BUCKETS, counts, strict=True)
    ]


@dataclass
class _NodeScan:
    stats: NodeStats
    ttls: list[int]
    samples: list[int]


def _scan_node(node: DataNode, prefix: str, sample: int) -> _NodeScan:
    layout = KeyLayout(prefix)
    counts = dict.fromkeys(keys.KINDS, 0)
    sessions: list[str] = []
    for key in _unique(scan_keys(node.client, layout.pattern())):
        kind = layout.kind_of(key)
        if kind is not None:
            counts[kind] += 1
            if kind == keys.SESSION:
                sessions.append(key)
    ttls: list[int] = []
    no_ttl = 0
    for start in range(0, len(sessions), _CHUNK):
        chunk = sessions[start : start + _CHUNK]
        for reply in pipeline(node.client, [("PTTL", key) for key in chunk]):
            if isinstance(reply, Exception) or int(reply) == -2:  # gone since the SCAN
                continue
            if int(reply) == -1:
                no_ttl += 1
            else:
                ttls.append(int(reply))
    samples: list[int] = []
    for start in range(0, min(sample, len(sessions)), _CHUNK):
        chunk = sessions[start : min(start + _CHUNK, sample)]
        for reply in pipeline(node.client, [("MEMORY", "USAGE", key) for key in chunk]):
            if isinstance(reply, int):
                samples.append(reply)
    info, dbsize = pipeline(node.client, [("INFO", "memory"), ("DBSIZE",)])
    used = info.get("used_memory") if isinstance(info, dict) else None
    live = len(ttls) + no_ttl
    stats = NodeStats(
        address=node.address,
        sessions=live,
        forwards=counts[keys.FORWARD],
        tombstones=counts[keys.TOMBSTONE],
        user_indexes=counts[keys.USER_INDEX],
        no_ttl=no_ttl,
        memory=_memory_stats(samples, live),
        ttl=_histogram(ttls),
        used_memory=int(used) if used is not None else None,
        dbsize=int(dbsize) if isinstance(dbsize, int) else None,
    )
    return _NodeScan(stats, ttls, samples)


def store_stats(store: SessionStore, *, sample: int = 1000) -> StoreStats:
    """Count the sessions (and forwards, tombstones, user indexes) on every primary, draw
    the remaining-TTL histogram, and sample ``MEMORY USAGE`` over up to ``sample`` session
    keys (split evenly among the primaries)."""
    prefix = store.config.key_prefix

    def gather() -> StoreStats:
        nodes = data_nodes(store)
        per_node = math.ceil(max(0, sample) / len(nodes)) if nodes else 0
        scans = [_scan_node(node, prefix, per_node) for node in nodes]
        ttls = [t for scan in scans for t in scan.ttls]
        samples = [m for scan in scans for m in scan.samples]
        stats = [scan.stats for scan in scans]
        sessions = sum(s.sessions for s in stats)
        return StoreStats(
            topology=topology_of(store),
            prefix=prefix,
            sessions=sessions,
            forwards=sum(s.forwards for s in stats),
            tombstones=sum(s.tombstones for s in stats),
            user_indexes=sum(s.user_indexes for s in stats),
            no_ttl=sum(s.no_ttl for s in stats),
            memory=_memory_stats(samples, sessions),
            ttl=_histogram(ttls),
            nodes=stats,
        )

    return guarded(store, gather)
