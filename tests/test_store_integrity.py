"""What the store's scripts promise about the data itself, checked behind the store's back on a
real Valkey: every key a script touches is declared in KEYS; a big save is one atomic save;
a refused save writes nothing; no key stickless writes is ever left without a TTL; corrupt
data in Redis is treated as missing, never as a crash."""

from __future__ import annotations

import contextlib
import re
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from stickless import (
    SessionConfig,
    SessionConflict,
    SessionStore,
    SessionTooLarge,
    TooManySessions,
)
from stickless.store.keys import KeyLayout
from stickless.store.plan import Batch
from stickless.store.sync import drive
from stickless.tokens import token_id

_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|.)")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b", '"': '"', "\\": "\\"}


def _unescape(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        return chr(int(code[1:], 16)) if code.startswith("x") else _ESCAPES.get(code, code)

    return _ESCAPE.sub(one, text)


class Monitor:
    """Every command the server ran (client's and scripts'), with its arguments."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.monitor = self.client.monitor()  # type: ignore[no-untyped-call]  # redis-py: untyped
        self.monitor.__enter__()
        self.lines: list[tuple[str, list[str]]] = []
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        with contextlib.suppress(Exception):
            while True:
                raw = self.monitor.connection.read_response()
                text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
                head, _, rest = text.partition('"')
                origin = "lua" if "[0 lua]" in head else "client"
                self.lines.append((origin, [_unescape(a) for a in _ARG.findall('"' + rest)]))

    def settle(self) -> list[tuple[str, list[str]]]:
        marker = f"monitor-end-{uuid.uuid4().hex}"
        self.client.echo(marker)  # on another connection: it shows up after what came before
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if any(args[:2] == ["ECHO", marker] for _, args in self.lines):
                return list(self.lines)
            time.sleep(0.01)
        raise AssertionError("MONITOR never saw the marker")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.monitor.connection.disconnect()
        self.client.close()


@pytest.fixture
def config() -> SessionConfig:
    return SessionConfig(key_prefix=f"i{uuid.uuid4().hex[:10]}")


@pytest.fixture
def store(stickless_url: str, config: SessionConfig) -> Iterator[SessionStore]:
    with SessionStore.from_url(stickless_url, config) as made:
        yield made


@pytest.fixture
def raw(stickless_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(stickless_url)
    yield client
    client.close()


def keys_without_ttl(raw: redis.Redis, config: SessionConfig, planted: set[bytes]) -> list[bytes]:
    """Keys under the prefix that would never expire (keys the test planted aside)."""
    return [
        key
        for key in raw.scan_iter(f"{config.key_prefix}:*")
        if key not in planted and raw.pttl(key) == -1
    ]


# -------------------------------------------------------------- declared keys
def capped_logins(url: str, config: SessionConfig) -> None:
    """Logins under max_sessions_per_user: reserve, check, evict (an older session, a login
    in flight not written yet, an anonymous one logging in), refuse and withdraw."""
    with (
        SessionStore.from_url(url, config.with_options(max_sessions_per_user=1)) as evicting,
        SessionStore.from_url(
            url, config.with_options(max_sessions_per_user=1, on_limit="refuse")
        ) as refusing,
    ):
        first = evicting.new()
        first.login("bob")
        evicting.save(first)
        second = evicting.new()
        second.login("bob")
        assert evicting.save(second).evicted == (token_id(first.raw_token).family,)
        anonymous = evicting.new()
        anonymous["a"] = 1
        evicting.save(anonymous)
        plan = evicting._plan  # the in-flight branch, called as an evicting login would
        dooms = (
            plan._destroy_call(token_id(new.raw_token).family, "", owner="bob", evict=True)
            for new in (evicting.new(), anonymous)
        )
        replies = drive(plan.run(Batch(tuple(dooms), idempotent=True)), evicting)
        assert [r[0] for r in replies] == [0, 1]
        third = refusing.new()
        third.login("bob")
        with pytest.raises(TooManySessions):
            refusing.save(third)


def test_every_key_a_script_touches_is_declared(
    stickless_url: str, store: SessionStore, raw: redis.Redis
) -> None:
    monitor = Monitor(stickless_url)
    try:
        s = store.new()
        s["cart"] = ["apple"]
        s.incr("visits")
        store.save(s)  # new
        s["theme"] = "dark"
        s.setdefault("csrf", "token")  # first writer wins (HSETNX)
        store.save(s)  # delta
        assert store.pop_once(s, "csrf") == "token"  # exactly once
        in_flight = store.load(s.token)
        assert in_flight is not None
        s.renew()  # plain rotation, with an in-flight old token
        store.save(s)
        in_flight["late"] = 1
        assert store.save(in_flight).outcome == "saved"  # through the forward
        reloaded = store.load(s.token)
        assert reloaded is not None
        s = reloaded
        s["user"] = "alice"  # identity change: login the framework way
        s.user_id = "alice"
        store.save(s)
        other = store.new()
        other.login("alice")
        other["x"] = 1
        store.save(other)
        assert len(store.sessions_for("alice")) == 2  # listing
        reloaded = store.load(s.token)
        assert reloaded is not None
        s = reloaded
        s.invalidate()  # logout
        store.save(s)
        assert store.revoke_user("alice") == 1  # log out everywhere
        capped_logins(stickless_url, store.config)
        lines = monitor.settle()
    finally:
        monitor.close()

    connection = raw.connection_pool.get_connection()  # raw replies: no response callbacks

    def keys_of(args: list[str]) -> list[str]:
        connection.send_command("COMMAND", "GETKEYS", *args)  # type: ignore[no-untyped-call]  # redis-py: untyped
        try:
            return [k.decode() for k in connection.read_response()]
        except redis.ResponseError:
            return []  # a command without keys (TIME)

    declared: set[str] = set()
    checked = 0
    scripts = 0
    for origin, args in lines:
        if origin == "client" and args and args[0].upper() in {"EVAL", "EVALSHA"}:
            scripts += 1
            count = int(args[2])
            declared = set(args[3 : 3 + count])
        elif origin == "lua":
            used = keys_of(args)
            assert set(used) <= declared, f"{args[0]} touched undeclared {set(used) - declared}"
            checked += 1
    raw.connection_pool.release(connection)
    assert scripts >= 10 and checked >= 30  # the life above really ran its scripts


# ------------------------------------------------------------------ big saves
def test_a_save_of_thousands_of_keys_is_one_atomic_save(
    store: SessionStore, raw: redis.Redis, config: SessionConfig
) -> None:
    s = store.new()
    for i in range(5000):
        s[f"k{i}"] = i
    assert s.encoded_size(s.pending_changes()) < config.max_size
    assert store.save(s).outcome == "saved"
    loaded = store.load(s.token)
    assert loaded is not None and len(loaded) == 5000 and loaded["k4999"] == 4999
    # an existing session: thousands of sets, deletes and increments in one save
    for i in range(2500):
        del loaded[f"k{i}"]
    for i in range(2500, 5000):
        loaded.incr(f"k{i}", 1)
    for i in range(4100):
        loaded[f"n{i}"] = "v"
    assert store.save(loaded).outcome == "saved"
    again = store.load(s.token)
    assert again is not None and "k0" not in again and again["k4999"] == 5000
    assert len(again) == 2500 + 4100
    assert keys_without_ttl(raw, config, set()) == []


def test_max_size_counts_the_user_id(store: SessionStore, config: SessionConfig) -> None:
    s = store.new()
    s["v"] = "x" * (config.max_size - 100)
    s.user_id = "u" * 200
    with pytest.raises(SessionTooLarge):
        store.save(s)


# ------------------------------------------- refused saves write nothing, no TTL-less key
def test_incr_overflow_writes_nothing_and_restores_exact_values(
    store: SessionStore, raw: redis.Redis, config: SessionConfig
) -> None:
    big = 2**62 + 1  # beyond 2**53: a double would round it
    s = store.new()
    s["a"] = big
    s["counter"] = 0
    s["keep"] = "kept"
    store.save(s)
    key = KeyLayout(config.key_prefix).data(token_id(s.raw_token).family)
    setter, adder = store.load(s.token), store.load(s.token)
    assert setter is not None and adder is not None
    setter["counter"] = 2**63 - 1
    store.save(setter)
    before = raw.hgetall(key)
    adder.incr("a", 2**60)  # applies first in the script, then must be undone exactly
    adder.incr("counter")  # overflows 64 bits in Redis
    adder["keep"] = "changed"
    del adder["a"]
    adder["new"] = 1
    with pytest.raises(SessionConflict, match="counter"):
        store.save(adder)
    after = raw.hgetall(key)
    assert after == before and after[b"d:a"] == str(big).encode()
    assert keys_without_ttl(raw, config, set()) == []


def test_a_non_hash_key_is_refused_and_nothing_is_left_behind(
    store: SessionStore, raw: redis.Redis, config: SessionConfig
) -> None:
    s = store.new()
    s["a"] = 1
    store.save(s)
    key = KeyLayout(config.key_prefix).data(token_id(s.raw_token).family)
    loaded = store.load(s.token)
    assert loaded is not None
    raw.delete(key)
    raw.set(key, "not a session")  # another program wrote there
    loaded["b"] = 2
    with pytest.raises(SessionConflict):
        store.save(loaded)
    assert raw.get(key) == b"not a session"
    assert store.load(s.token) is None
    assert keys_without_ttl(raw, config, {key.encode()}) == []


# ------------------------------------------------------------ corrupt data
@pytest.mark.parametrize(
    "foreign",
    [b"not json", b"1,2", b"[1", b"", b'"\\u0000"'],
    ids=["text", "two-values", "unclosed", "empty", "escaped-nul"],
)
def test_a_value_that_is_not_json_is_dropped_alone(
    store: SessionStore, raw: redis.Redis, config: SessionConfig, foreign: bytes
) -> None:
    """The load decodes the values at once; a value another program garbled makes that
    fail (or miscount), and the values go one by one: that field is dropped, the others
    stay. A string holding NUL (escaped in JSON) goes one by one too, and is kept."""
    s = store.new()
    s.update({"a": 1, "b": [2, 3], "c": "x"})
    store.save(s)
    key = KeyLayout(config.key_prefix).data(token_id(s.raw_token).family)
    raw.hset(key, "d:bad", foreign)
    loaded = store.load(s.token)
    assert loaded is not None
    expected = {"a": 1, "b": [2, 3], "c": "x"}
    if foreign == b'"\\u0000"':
        expected["bad"] = "\x00"  # valid JSON: a string holding NUL, which is allowed
    assert dict(loaded) == expected


def test_non_utf8_field_names_and_user_ids_read_as_missing(
    store: SessionStore, raw: redis.Redis, config: SessionConfig
) -> None:
    s = store.new()
    s["a"] = 1
    store.save(s)
    key = KeyLayout(config.key_prefix).data(token_id(s.raw_token).family)
    raw.hset(key, b"d:\xff\xfe", b"1")
    loaded = store.load(s.token)
    assert loaded is not None
    assert dict(loaded) == {"a": 1}  # that field is dropped, never a 500
    raw.hdel(key, b"d:\xff\xfe")
    raw.hset(key, "m:u", b"\xff")
    assert store.load(s.token) is None


def test_corrupt_user_index_reads_as_empty(
    store: SessionStore, raw: redis.Redis, config: SessionConfig
) -> None:
    s = store.new()
    s.login("zoe")
    s["a"] = 1
    store.save(s)
    index = KeyLayout(config.key_prefix).user_index("zoe")
    raw.zadd(index, {b"\xff\xfe": time.time() * 1000 + 60_000, b"not an id": 1e15})
    assert [i.session_id for i in store.sessions_for("zoe")] == [token_id(s.raw_token).family]
    raw.delete(index)
    raw.set(index, "oops")
    assert store.sessions_for("zoe") == []
    assert store.revoke_user("zoe") == 0
