"""Review of f736b51 (opened values / token ids cached) and ebbdcaa (save.lua: HMGET by
redis.call, the usual save in one HSET): held up; one hardening (a str subclass is opened
as a plain str)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from stickless import SessionConfig, SessionConflict, SessionStore, tokens
from stickless.tokens import OPENED_KEPT, TokenCodec, new_raw_token

# ---------------------------------------------------------------- tokens (f736b51)


def test_forgery_never_cached_and_other_codec_isolated() -> None:
    a, b = TokenCodec("key-a"), TokenCodec("key-b")
    value = a.dump(new_raw_token())
    assert a.open(value) is not None
    assert a.open(value) is not None  # cached
    assert b.open(value) is None  # separate state per codec
    assert a.open(value[:-1] + ("A" if value[-1] != "A" else "B")) is None
    assert b._opened == {}


def test_old_key_value_resigned_from_cache() -> None:
    old, rotated = TokenCodec("old"), TokenCodec(["old", "new"])
    raw = new_raw_token()
    presented = old.dump(raw)
    first = rotated.open(presented)
    assert first == (raw, rotated.dump(raw))
    assert rotated.open(presented) == first  # the cached answer is the re-signed one
    removed = TokenCodec("new")
    assert removed.open(presented) is None


def test_types_do_not_hit_or_poison_cache() -> None:
    codec = TokenCodec("k")
    raw = new_raw_token()
    value = codec.dump(raw)

    class S(str):
        pass

    assert codec.open(value.encode()) == (raw, value)
    assert codec.open(S(value)) == (raw, value)
    assert codec._opened == {}
    assert codec.open(value + "x" * 300) is None
    assert codec.open(value.encode() + b"\xff") is None
    assert codec.open(None) is None and codec.open(123) is None


def test_cache_bounded_and_cleared() -> None:
    codec = TokenCodec(None)  # unsigned: any well-formed value opens (attacker can mint)
    for _ in range(OPENED_KEPT * 2 + 3):
        codec.open(new_raw_token())
    assert len(codec._opened) <= OPENED_KEPT
    assert tokens.token_id.cache_info().currsize <= 4096


def test_a_str_subclass_opens_as_a_plain_str() -> None:
    """A framework handing a str subclass (here one lying in encode()) gets plain strs back,
    so no cache (token ids, opened values) keeps an object that hashes like the token."""
    codec = TokenCodec(None)  # unsigned: the presented value is the raw token
    raw = new_raw_token()

    class Evil(str):
        def encode(self, *a: Any, **k: Any) -> bytes:
            return b"other"

    opened = codec.open(Evil(raw))
    assert opened is not None
    assert type(opened[0]) is str and type(opened[1]) is str
    assert tokens.token_id(opened[0]) == tokens.token_id(raw)


def test_threads_agree() -> None:
    codec = TokenCodec(["old", "new"])
    olds = [(r, TokenCodec("old").dump(r)) for r in (new_raw_token() for _ in range(300))]
    wrong: list[Any] = []

    def run() -> None:
        for _ in range(30):
            for raw, value in olds:
                got = codec.open(value)
                if got != (raw, codec.dump(raw)):
                    wrong.append(got)
            codec._opened.clear()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong


# ---------------------------------------------------------------- save.lua (ebbdcaa)


@pytest.fixture
def build(stickless_url: str) -> Iterator[Any]:
    made: list[SessionStore] = []

    def make(**config: Any) -> SessionStore:
        store = SessionStore.from_url(stickless_url, SessionConfig(**config))
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def _client(store: SessionStore) -> Any:
    return store.client


def _data_key(store: SessionStore) -> str:
    found: list[str] = [k.decode() for k in _client(store).keys("*:s:*")]
    assert len(found) == 1, found
    return found[0]


CONFIGS = [
    {},
    {"encryption_keys": [b"k" * 32]},
]


@pytest.mark.parametrize("config", CONFIGS, ids=["plain", "encrypted"])
@pytest.mark.parametrize("n", [0, 1, 499, 500, 501, 1000, 1203])
def test_update_sizes(build: Any, config: dict[str, Any], n: int) -> None:
    try:
        store = build(max_size=10_000_000, **config)
    except TypeError:
        store = build(**config)
    s = store.new()
    s["seed"] = 1
    store.save(s)
    s = store.load(s.token)
    for i in range(n):
        s[f"f{i}"] = i
    if n == 0:
        s.renew()  # something to write with no sets
    store.save(s)
    again = store.load(s.token)
    assert again is not None
    assert {k: again[k] for k in again if k != "seed"} == {f"f{i}": i for i in range(n)}
    assert again["seed"] == 1


@pytest.mark.parametrize("n", [1, 499, 700])
def test_new_session_sizes(build: Any, n: int) -> None:
    store = build(max_size=10_000_000)
    s = store.new()
    for i in range(n):
        s[f"f{i}"] = str(i)
    store.save(s)
    again = store.load(s.token)
    assert dict(again) == {f"f{i}": str(i) for i in range(n)}
    assert _client(store).ttl(_data_key(store)) > 0


@pytest.mark.parametrize("n", [1, 499, 600])
def test_forwarded_save_after_renew(build: Any, n: int) -> None:
    store = build(max_size=10_000_000)
    s = store.new()
    s["a"] = 1
    store.save(s)
    old = store.load(s.token)
    fresh = store.load(s.token)
    fresh.renew()
    store.save(fresh)
    for i in range(n):
        old[f"f{i}"] = i
    result = store.save(old)
    assert result is not None
    got = store.load(fresh.token)
    assert got[f"f{n - 1}"] == n - 1 and got["a"] == 1
    key = _data_key(store)
    assert _client(store).ttl(key) > 0


def test_non_hash_key_with_existing_token(build: Any) -> None:
    store = build()
    s = store.new()
    s["a"] = 1
    store.save(s)
    key = _data_key(store)
    s = store.load(s.token)
    client = _client(store)
    client.delete(key)
    client.set(key, "not a hash")
    s["b"] = 2
    with pytest.raises(SessionConflict, match="not a session hash"):
        store.save(s)
    assert client.get(key) == b"not a hash"
    client.delete(key)
    client.rpush(key, "x")
    with pytest.raises(SessionConflict, match="not a session hash"):
        store.save(s)
    assert client.lrange(key, 0, -1) == [b"x"]


def test_user_and_renew_paths(build: Any) -> None:
    store = build(max_size=10_000_000)
    s = store.new()
    s["a"] = 1
    store.save(s)
    s = store.load(s.token)
    s.user_id = "alice"
    for i in range(10):
        s[f"f{i}"] = i
    store.save(s)
    s = store.load(s.token)
    assert s.user_id == "alice" and s["f9"] == 9
    s.user_id = None
    s["z"] = 1
    store.save(s)
    s = store.load(s.token)
    assert s.user_id is None and s["z"] == 1


@pytest.mark.parametrize("n", [0, 3, 499, 500])
def test_device_name_with_sets(build: Any, n: int) -> None:
    store = build(max_size=10_000_000)
    s = store.new()
    s["a"] = 1
    store.save(s)
    s = store.load(s.token)
    s.device_name = "work laptop"
    for i in range(n):
        s[f"f{i}"] = i
    store.save(s)
    again = store.load(s.token)
    assert again.device_name == "work laptop"
    assert len(again) == n + 1
