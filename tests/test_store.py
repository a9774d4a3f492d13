"""The store contract, against real Valkey servers: standalone, sentinel and cluster,
through both SessionStore and AsyncSessionStore."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from typing import Any

import pytest
import redis

from stickless import (
    AsyncSessionStore,
    ConfigurationError,
    SaveOutcome,
    SessionConfig,
    SessionConflict,
    SessionStatus,
    SessionTooLarge,
)


def fresh_config(**options: Any) -> SessionConfig:
    """A config with a key prefix of its own, so tests never see each other's keys."""
    return SessionConfig(key_prefix=f"t{uuid.uuid4().hex[:10]}", **options)


def saved_with_key(store: Any, url: str, config: SessionConfig, **data: Any) -> Any:
    """A saved session, a raw client and the session's Redis key, to look behind the store."""
    s = store.new()
    s.update(data)
    store.save(s)
    r = redis.Redis.from_url(url)
    return s, r, next(r.scan_iter(f"{config.key_prefix}:s:*"))


# ------------------------------------------------------------------ basic contract
def test_save_and_load_round_trip(topology_url: str, store_factory: Any) -> None:
    store = store_factory(topology_url, fresh_config())
    s = store.new()
    s["cart"] = ["apple"]
    s["n"] = 1
    s.user_id = "alice"
    assert store.save(s).outcome == "saved"
    assert s.status is SessionStatus.LOADED and s.created_at is not None
    again = store.load(s.token)
    assert again is not None and dict(again) == {"cart": ["apple"], "n": 1}
    assert again.user_id == "alice" and again.created_at == s.created_at
    assert again.expires_at is not None and again.absolute_expires_at is not None
    assert again.expires_at <= again.absolute_expires_at


def test_empty_new_session_is_not_written(stickless_url: str, store_factory: Any) -> None:
    store = store_factory(stickless_url, fresh_config())
    s = store.new()
    assert store.save(s).outcome == "unchanged"
    assert store.load(s.token) is None


def test_redis_never_holds_the_raw_token(stickless_url: str, store_factory: Any) -> None:
    config = fresh_config()
    store = store_factory(stickless_url, config)
    s = store.new()
    s["x"] = 1
    s.user_id = "carol"
    store.save(s)
    secret = s.token.split(".")[1]
    r = redis.Redis.from_url(stickless_url)
    for key in r.scan_iter(f"{config.key_prefix}:*"):
        assert secret.encode() not in key
        kind = r.type(key)
        blob = repr(r.hgetall(key) if kind == b"hash" else r.zrange(key, 0, -1))
        assert secret not in blob


def _read(s: Any) -> None:
    assert s["cart"] == ["apple"] and s.get("missing") is None and "n" in s


def _in_place_no_op(s: Any) -> None:
    s["cart"].sort()


def _in_place_edit(s: Any) -> None:
    s["cart"].append("pear")


def _same_user(s: Any) -> None:
    s.user_id = "alice"


def _set_existing(s: Any) -> None:
    s["n"] = 1


def _set_new(s: Any) -> None:
    s["k"] = {"a": 1}


def _delete(s: Any) -> None:
    del s["n"]


def _pop_missing(s: Any) -> None:
    assert s.pop("missing", None) is None


def _setdefault_existing(s: Any) -> None:
    assert s.setdefault("n", 5) == 1


def _incr(s: Any) -> None:
    s.incr("n")


def _renew(s: Any) -> None:
    s.renew()


def _new_user(s: Any) -> None:
    s.user_id = "bob"


def _incr_zero_existing(s: Any) -> None:
    s.incr("n", 0)


def _incr_zero_absent(s: Any) -> None:
    s.incr("absent", 0)


def _clear_then_incr_zero(s: Any) -> None:
    s.clear()
    s.incr("n", 0)


def _same_values_again(s: Any) -> None:
    s.update(dict(s))


def _lifetime(s: Any) -> None:
    s.set_lifetime(idle=600)


def _device_name(s: Any) -> None:
    s.device_name = "work laptop"


def _login_same_user(s: Any) -> None:
    s.login("alice")


_DATA = {"cart": ["apple"], "n": 1}
_USES_OF_DATA = [_read, _in_place_no_op, _in_place_edit, _setdefault_existing, _delete]
_USES = [
    _pop_missing,
    _same_user,
    _set_existing,
    _set_new,
    _incr,
    _renew,
    _new_user,
    _incr_zero_existing,
    _incr_zero_absent,
    _clear_then_incr_zero,
    _same_values_again,
    _lifetime,
    _device_name,
    _login_same_user,
]


@pytest.mark.parametrize(
    ("stored", "use"),
    [
        *(pytest.param(_DATA, use, id=f"data-{use.__name__}") for use in _USES_OF_DATA + _USES),
        *(pytest.param({}, use, id=f"user only-{use.__name__}") for use in _USES),
    ],
)
def test_modified_is_false_exactly_when_the_save_would_write_nothing(
    stickless_url: str, store_factory: Any, command_log: Any, use: Any, stored: dict[str, Any]
) -> None:
    """The web cycle skips the save of a loaded session that is not ``modified``: so
    ``modified`` must be false only where the save itself would find nothing to write (and
    send no command), and true wherever it writes; for a session with data and for one
    that holds only its user."""
    store = store_factory(stickless_url, fresh_config())
    s = store.new()
    s.update(stored)
    s.user_id = "alice"
    store.save(s)
    loaded = store.load(s.token)
    use(loaded)
    modified = loaded.modified
    with command_log.counting() as sent:
        outcome = store.save(loaded).outcome
    assert (outcome is SaveOutcome.UNCHANGED) is (not modified)
    assert bool(sent) is modified


def test_in_place_edits_are_saved(topology_url: str, store_factory: Any) -> None:
    store = store_factory(topology_url, fresh_config())
    s = store.new()
    s["cart"] = ["apple"]
    store.save(s)
    loaded = store.load(s.token)
    loaded["cart"].append("pear")
    assert store.save(loaded).outcome == "saved"
    assert store.load(s.token)["cart"] == ["apple", "pear"]


def test_deletes_are_applied(stickless_url: str, store_factory: Any) -> None:
    store = store_factory(stickless_url, fresh_config())
    s = store.new()
    s.update(a=1, b=2)
    store.save(s)
    loaded = store.load(s.token)
    del loaded["a"]
    store.save(loaded)
    assert dict(store.load(s.token)) == {"b": 2}


def test_too_large_session_raises_with_sizes_and_writes_nothing(
    stickless_url: str, store_factory: Any
) -> None:
    store = store_factory(stickless_url, fresh_config(max_size=1000))
    s = store.new()
    s["ok"] = 1
    store.save(s)
    s["blob"] = "x" * 2000
    with pytest.raises(SessionTooLarge, match=r"\d+ bytes.*max_size=1000"):
        store.save(s)
    assert dict(store.load(s.token)) == {"ok": 1}


# ---------------------------------------------------------------- concurrency
def _hammer_threads(store: Any, token: str, action: Any, n: int = 50) -> None:
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            s = store.load(token)
            barrier.wait()
            action(s, i)
            store.save(s)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_50_threads_distinct_keys_all_kept(topology_url: str) -> None:
    from stickless import SessionStore

    store = SessionStore.from_url(topology_url, fresh_config())
    s = store.new()
    s["start"] = True
    store.save(s)
    _hammer_threads(store, s.token, lambda x, i: x.__setitem__(f"k{i}", i))
    final = store.load(s.token)
    assert final is not None
    assert {k: v for k, v in final.items() if k.startswith("k")} == {f"k{i}": i for i in range(50)}
    _hammer_threads(store, s.token, lambda x, i: x.incr("counter"))
    final = store.load(s.token)
    assert final is not None
    assert final["counter"] == 50
    store.close()


async def test_50_tasks_distinct_keys_and_counter(topology_url: str) -> None:
    store = AsyncSessionStore.from_url(topology_url, fresh_config())
    s = store.new()
    s["start"] = True
    await store.save(s)
    found = await asyncio.gather(*(store.load(s.token) for _ in range(50)))
    loaded = [x for x in found if x is not None]
    assert len(loaded) == 50
    for i, x in enumerate(loaded):
        x[f"k{i}"] = i
        x.incr("counter")
    await asyncio.gather(*(store.save(x) for x in loaded))
    final = await store.load(s.token)
    assert final is not None
    assert sum(1 for k in final if k.startswith("k")) == 50
    assert final["counter"] == 50
    await store.aclose()


def test_incr_returns_the_value_redis_computed(stickless_url: str, store_factory: Any) -> None:
    store = store_factory(stickless_url, fresh_config())
    s = store.new()
    s["n"] = 10
    store.save(s)
    a, b = store.load(s.token), store.load(s.token)
    a.incr("n")
    b.incr("n", 5)
    store.save(a)
    store.save(b)
    assert a["n"] == 11 and b["n"] == 16


def test_incr_by_zero_of_an_absent_key_stores_zero(stickless_url: str, store_factory: Any) -> None:
    """``incr(key, 0)`` counts an absent key as 0, and the save stores that 0 (``HINCRBY``
    by 0 creates the field): the next load has it, as the incr's caller does."""
    store = store_factory(stickless_url, fresh_config())
    s = store.new()
    s["x"] = 1
    store.save(s)
    loaded = store.load(s.token)
    assert loaded.incr("hits", 0) == 0 and loaded.modified
    assert store.save(loaded).outcome == "saved"
    assert store.load(s.token)["hits"] == 0


def test_incr_on_a_non_integer_in_redis_is_refused_cleanly(
    stickless_url: str, store_factory: Any
) -> None:
    store = store_factory(stickless_url, fresh_config())
    s = store.new()
    s["n"] = 1
    store.save(s)
    counter, other = store.load(s.token), store.load(s.token)
    other["n"] = "not a number"
    store.save(other)
    counter.incr("n")
    counter["side"] = "effect"
    with pytest.raises(SessionConflict, match="'n'"):
        store.save(counter)
    assert dict(store.load(s.token)) == {"n": "not a number"}  # nothing of it written


# ---------------------------------------------------------------- no resurrection
def test_destroy_then_stale_save_stays_gone(topology_url: str, store_factory: Any) -> None:
    store = store_factory(topology_url, fresh_config())
    s = store.new()
    s["a"] = 1
    store.save(s)
    stale = store.load(s.token)
    assert store.destroy(s.token) is True
    stale["b"] = 2
    result = store.save(stale)
    assert result.outcome == "gone" and stale.status is SessionStatus.INVALIDATED
    assert store.load(s.token) is None
    assert store.destroy(s.token) is False


def test_invalidate_then_stale_save_stays_gone(topology_url: str, store_factory: Any) -> None:
    store = store_factory(topology_url, fresh_config())
    s = store.new()
    s["a"] = 1
    s.user_id = "dave"
    store.save(s)
    stale = store.load(s.token)
    logout = store.load(s.token)
    logout.logout()
    assert store.save(logout).outcome == "destroyed"
    stale.incr("n")
    assert store.save(stale).outcome == "gone"
    assert store.load(s.token) is None
    assert store.sessions_for("dave") == []


def test_data_written_after_logout_goes_to_a_new_session(
    stickless_url: str, store_factory: Any
) -> None:
    store = store_factory(stickless_url, fresh_config())
    s = store.new()
    s["secret"] = "x"
    store.save(s)
    old_token = s.token
    s.logout()
    s["flash"] = "bye"
    store.save(s)
    assert store.load(old_token) is None
    assert s.token != old_token and dict(store.load(s.token)) == {"flash": "bye"}


# ---------------------------------------------------------------------- renew
def test_login_renews_and_the_old_token_loses_all_power(
    topology_url: str, store_factory: Any
) -> None:
    store = store_factory(topology_url, fresh_config())
    s = store.new()
    s["cart"] = ["apple"]
    store.save(s)
    old = s.token
    in_flight = store.load(old)  # a request that started before the login
    doomed = store.load(old)
    s.login("erin")
    assert store.save(s).outcome == "saved"
    assert s.token != old and s.token.split(".")[0] == old.split(".")[0]
    assert store.load(old) is None
    renewed = store.load(s.token)
    assert renewed["cart"] == ["apple"] and renewed.user_id == "erin"
    assert [i.session_id for i in store.sessions_for("erin")] == [old.split(".")[0]]
    # an identity change leaves the old token no power: its saves write nothing...
    in_flight["late"] = True
    assert store.save(in_flight).outcome == "gone"
    # ...and its destroys touch nothing
    assert store.destroy(old) is False
    doomed.invalidate()
    store.save(doomed)
    assert dict(store.load(s.token)) == {"cart": ["apple"]}
    assert store.load(s.token).user_id == "erin"


def test_plain_renew_forwards_data_saves_only(topology_url: str, store_factory: Any) -> None:
    store = store_factory(topology_url, fresh_config())
    s = store.new()
    s.login("frank")
    s["cart"] = ["apple"]
    store.save(s)
    old = s.token
    data_only, identity, rebind = store.load(old), store.load(old), store.load(old)
    s.renew()  # same identity: a rotation
    store.save(s)
    assert store.load(old) is None and store.load(s.token) is not None
    # a request still in flight with the old token saves its data into the live session
    data_only["late"] = True
    assert store.save(data_only).outcome == "saved"
    assert store.load(s.token)["late"] is True
    # but never an identity key, nor the user binding
    identity["user_id"] = "mallory"
    assert store.save(identity).outcome == "gone"
    rebind.user_id = "mallory"
    assert store.save(rebind).outcome == "gone"
    live = store.load(s.token)
    assert "user_id" not in live and live.user_id == "frank"
    # renew again: the index keeps one entry (the session id does not change)
    again = store.load(s.token)
    again.renew()
    store.save(again)
    assert [i.session_id for i in store.sessions_for("frank")] == [old.split(".")[0]]
    assert store.load(s.token) is None and store.load(again.token) is not None


@pytest.mark.parametrize(
    "login",
    [
        lambda s: s.__setitem__("user", "victim"),
        lambda s: s.__setitem__("_user_id", "7"),  # Flask-Login
        lambda s: s.__setitem__("_auth_user_id", "7"),  # Django
        lambda s: s.update({"account_id": 7}),
        lambda s: (s.clear(), s.__setitem__("name", "victim")),  # Flask's documented login
        lambda s: s.__delitem__("user"),  # logout by deleting the identity key
        lambda s: s.incr("uid"),
    ],
    ids=["user", "flask-login", "django", "update", "clear-then-data", "delete", "incr"],
)
def test_identity_change_renews_without_login(
    stickless_url: str, store_factory: Any, login: Any
) -> None:
    store = store_factory(stickless_url, fresh_config())
    planted = store.new()
    planted["user"] = "anonymous"
    planted["theme"] = "dark"
    store.save(planted)
    victim = store.load(planted.token)  # the victim's browser carries the planted token
    login(victim)
    assert store.save(victim).outcome == "saved"
    assert victim.token != planted.token
    assert store.load(planted.token) is None  # the attacker's copy loads nothing


def test_same_identity_value_again_does_not_renew(stickless_url: str, store_factory: Any) -> None:
    store = store_factory(stickless_url, fresh_config())
    s = store.new()
    s["user"] = "alice"
    store.save(s)
    token = s.token
    again = store.load(token)
    again["user"] = "alice"
    again["n"] = 1
    store.save(again)
    assert again.token == token and store.load(token)["n"] == 1


def test_identity_keys_are_configurable(stickless_url: str, store_factory: Any) -> None:
    from stickless import DEFAULT_IDENTITY_KEYS

    store = store_factory(
        stickless_url, fresh_config(identity_keys=DEFAULT_IDENTITY_KEYS | {"member"})
    )
    s = store.new()
    s["x"] = 1
    store.save(s)
    token = s.token
    again = store.load(token)
    again["member"] = "m-1"
    store.save(again)
    assert again.token != token and store.load(token) is None


# ---------------------------------------------------------------------- expiry
def test_idle_expiry(stickless_url: str, store_factory: Any) -> None:
    store = store_factory(stickless_url, fresh_config(idle_timeout=0.6, touch_interval=0))
    s = store.new()
    s["a"] = 1
    store.save(s)
    time.sleep(0.3)
    assert store.load(s.token) is not None  # touch slides the idle window
    time.sleep(0.4)
    assert store.load(s.token) is not None  # 0.7 s after creation, 0.4 s idle
    time.sleep(0.9)
    assert store.load(s.token) is None


def test_absolute_expiry_beats_activity(stickless_url: str, store_factory: Any) -> None:
    config = fresh_config(idle_timeout=0.8, absolute_timeout=1.5, touch_interval=0)
    store = store_factory(stickless_url, config)
    s, r, key = saved_with_key(store, stickless_url, config, a=1)
    deadline = time.time() + 1.5
    while time.time() < deadline - 0.25:
        assert store.load(s.token) is not None
        assert r.pttl(key) <= int((deadline - time.time()) * 1000) + 100  # never outlives it
        time.sleep(0.2)
    time.sleep(0.6)
    assert store.load(s.token) is None


def test_touch_is_throttled(stickless_url: str, store_factory: Any) -> None:
    config = fresh_config(idle_timeout=60, touch_interval=30)
    store = store_factory(stickless_url, config)
    s, r, key = saved_with_key(store, stickless_url, config, a=1)
    stamp = r.hget(key, "m:a")
    time.sleep(0.05)
    first = store.load(s.token)
    assert r.hget(key, "m:a") == stamp  # within the interval: no write
    assert first.last_access == s.last_access
    fast = store_factory(stickless_url, config.with_options(touch_interval=0))
    fast.load(s.token)
    assert int(r.hget(key, "m:a")) > int(stamp)


# --------------------------------------------------------------- hostile input
@pytest.mark.parametrize(
    "token", ["", "garbage", "x" * 5000, "A" * 11 + ".", "{a}.b", "\x00\x01", None]
)
def test_malformed_tokens_load_none_without_a_command(
    stickless_url: str, store_factory: Any, command_log: Any, token: object
) -> None:
    store = store_factory(stickless_url, fresh_config())
    with command_log.counting() as sent:
        assert store.load(token) is None
    assert sent == []


def test_forged_tokens_with_signing(
    stickless_url: str, store_factory: Any, command_log: Any
) -> None:
    store = store_factory(stickless_url, fresh_config(secret_key="s3cret"))
    s = store.new()
    s["a"] = 1
    store.save(s)
    assert store.load(s.token)["a"] == 1
    raw = s.token.rsplit(".", 1)[0]
    with command_log.counting() as sent:
        assert store.load(raw) is None  # valid token, signature stripped
        assert store.load(raw + ".forgedsignature") is None
    assert sent == []


def test_unknown_well_formed_token_loads_none(topology_url: str, store_factory: Any) -> None:
    from stickless import tokens

    store = store_factory(topology_url, fresh_config())
    assert store.load(tokens.new_raw_token()) is None


def test_corrupt_data_is_never_unpickled(
    stickless_url: str, store_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import pickle

    config = fresh_config()
    store = store_factory(stickless_url, config)
    s, r, key = saved_with_key(store, stickless_url, config, good=1)

    class Boom:
        def __reduce__(self) -> Any:
            return (exec, ("raise SystemExit('unpickled!')",))

    r.hset(key, mapping={"d:pickled": pickle.dumps(Boom()), "d:text": b"not json {"})
    with caplog.at_level(logging.WARNING, logger="stickless"):
        loaded = store.load(s.token)
    assert loaded is not None and dict(loaded) == {"good": 1}
    assert "pickled" in caplog.text and "not json" not in caplog.text
    r.hset(key, "m:x", "garbage")
    assert store.load(s.token) is None  # unreadable metadata: treated as missing


@pytest.mark.parametrize("deadline", [None, b"garbage"])
def test_a_hash_whose_deadline_broke_after_the_load_is_gone_at_the_save(
    stickless_url: str, store_factory: Any, deadline: bytes | None
) -> None:
    """Another program removed or garbled ``m:x`` between this request's load and save:
    the usual save's script writes nothing (no script error), and the hash is dropped as
    expired. (A save of held keys only, ``HSETEX``, does not read ``m:x``: the server's TTL
    still ends the session on time, and the next load finds its metadata unreadable.)"""
    config = fresh_config()
    store = store_factory(stickless_url, config)
    s, r, key = saved_with_key(store, stickless_url, config, good=1, old=1)
    loaded = store.load(s.token)
    assert loaded is not None
    if deadline is None:
        r.hdel(key, "m:x")
    else:
        r.hset(key, "m:x", deadline)
    loaded["good"] = 2
    del loaded["old"]  # a delete: update.lua, which reads the deadline
    assert store.save(loaded).outcome is SaveOutcome.GONE
    assert r.exists(key) == 0


def test_a_hash_whose_deadline_broke_is_not_loaded_after_a_plain_save(
    stickless_url: str, store_factory: Any
) -> None:
    config = fresh_config()
    store = store_factory(stickless_url, config)
    s, r, key = saved_with_key(store, stickless_url, config, good=1)
    loaded = store.load(s.token)
    assert loaded is not None
    r.hset(key, "m:x", b"garbage")
    ttl = r.pttl(key)
    loaded["good"] = 2
    store.save(loaded)  # HSETEX (where the server has it) or update.lua: either way
    assert store.load(s.token) is None  # unreadable metadata: treated as missing
    assert r.pttl(key) <= ttl  # the server's TTL was not extended


# ---------------------------------------------------------------- user index
def test_sessions_for_and_revoke_user(topology_url: str, store_factory: Any) -> None:
    store = store_factory(topology_url, fresh_config())
    devices = []
    for i in range(4):
        s = store.new()
        s["device"] = i
        s.login("frank")
        store.save(s)
        devices.append(s)
    listed = store.sessions_for("frank")
    assert len(listed) == 4 and all(info.user_id == "frank" for info in listed)
    assert all(d.token.split(".")[1] not in repr(listed) for d in devices)
    store.destroy(devices[0].token)
    assert len(store.sessions_for("frank")) == 3
    assert store.revoke_user("frank", keep=devices[1]) == 2
    assert store.load(devices[1].token) is not None
    assert all(store.load(d.token) is None for d in (devices[2], devices[3]))
    assert [i.session_id for i in store.sessions_for("frank")] == [
        store.sessions_for("frank")[0].session_id
    ]
    assert store.revoke_user("frank") == 1 and store.sessions_for("frank") == []


def test_index_entries_are_pruned_and_the_index_expires(
    stickless_url: str, store_factory: Any
) -> None:
    config = fresh_config(idle_timeout=0.3, absolute_timeout=0.6)
    store = store_factory(stickless_url, config)
    s = store.new()
    s["a"] = 1
    s.user_id = "gina"
    store.save(s)
    r = redis.Redis.from_url(stickless_url)
    index = f"{config.key_prefix}:u:{{gina}}"
    ttl = r.pttl(index)
    assert 0 < ttl <= 600
    time.sleep(0.4)  # idle-expired, still in the index until read
    assert store.sessions_for("gina") == []
    assert r.zcard(index) == 0


def test_rebinding_a_session_moves_it_between_users(stickless_url: str, store_factory: Any) -> None:
    store = store_factory(stickless_url, fresh_config())
    s = store.new()
    s["a"] = 1
    s.user_id = "hal"
    store.save(s)
    s.user_id = "ivy"
    store.save(s)
    assert store.sessions_for("hal") == [] and len(store.sessions_for("ivy")) == 1
    s.user_id = None
    store.save(s)
    assert store.sessions_for("ivy") == [] and store.load(s.token).user_id is None


def test_one_async_store_serves_several_event_loops(stickless_url: str) -> None:
    """asyncio connections belong to their loop: the store keeps a client per loop."""
    store = AsyncSessionStore.from_url(stickless_url, fresh_config())

    async def write() -> str:
        s = store.new()
        s["loop"] = id(asyncio.get_running_loop())
        await store.save(s)
        return s.token

    async def read(token: str) -> object:
        loaded = await store.load(token)
        return None if loaded is None else loaded["loop"]

    token = asyncio.run(write())  # a first loop, closed afterwards
    assert asyncio.run(read(token)) is not None  # a second loop: no "different loop" error
    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(asyncio.run(read(token))))
    thread.start()
    thread.join()
    assert results and results[0] is not None


# ------------------------------------------------------------- review findings
def test_a_stale_pre_login_copy_cannot_renew_or_rebind_the_live_session(
    stickless_url: str, store_factory: Any
) -> None:
    """Fixation: a request opened with the planted token before the victim's login can do
    nothing to the victim's session: no data, no token of it, no change of its user."""
    store = store_factory(stickless_url, fresh_config())
    planted = store.new()
    planted["cart"] = []
    store.save(planted)
    attacker = store.load(planted.token)
    victim = store.load(planted.token)
    victim.login("alice")
    victim["secret"] = "victim-data"
    store.save(victim)
    attacker.renew()
    attacker.user_id = "mallory"
    attacker["note"] = "late"
    assert store.save(attacker).outcome == "gone"  # nothing written
    assert store.load(attacker.token) is None
    live = store.load(victim.token)
    assert live is not None and live.user_id == "alice" and "note" not in live
    assert store.sessions_for("mallory") == []


def test_a_refused_save_leaves_the_user_index_usable(
    stickless_url: str, store_factory: Any
) -> None:
    store = store_factory(stickless_url, fresh_config())
    s = store.new()
    s["n"] = 1
    s.user_id = "alice"
    store.save(s)
    rebinding, other = store.load(s.token), store.load(s.token)
    other["n"] = "text"
    store.save(other)
    rebinding.user_id = "bob"
    rebinding.incr("n")
    with pytest.raises(SessionConflict):
        store.save(rebinding)
    assert store.load(s.token).user_id == "alice"
    assert store.sessions_for("bob") == []  # the hint added for bob is pruned
    assert store.revoke_user("bob") == 0  # and cannot destroy alice's session
    assert store.revoke_user("alice") == 1
    assert store.load(s.token) is None


@pytest.mark.parametrize("how", ["destroyed", "expired"])
def test_a_gone_session_reused_never_comes_back_under_its_token(
    stickless_url: str, store_factory: Any, how: str
) -> None:
    store = store_factory(stickless_url, fresh_config(idle_timeout=0.3, touch_interval=0))
    s = store.new()
    s["a"] = 1
    store.save(s)
    stale = store.load(s.token)
    if how == "destroyed":
        store.destroy(s.token)
    else:
        time.sleep(0.45)
    stale["b"] = 2
    assert store.save(stale).outcome == "gone"
    stale["c"] = 3  # the object is used again
    assert store.save(stale).outcome == "saved"
    assert stale.token != s.token and store.load(s.token) is None
    assert dict(store.load(stale.token)) == {"c": 3}


def test_a_key_of_another_type_is_refused_cleanly(
    stickless_url: str, store_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    config = fresh_config()
    store = store_factory(stickless_url, config)
    s, r, key = saved_with_key(store, stickless_url, config, a=1)
    r.delete(key)
    r.set(key, b"\x80\x04\x95 pickled-by-someone-else")
    with caplog.at_level(logging.WARNING, logger="stickless"):
        assert store.load(s.token) is None
    assert "not a session hash" in caplog.text
    s["b"] = 2
    with pytest.raises(SessionConflict, match="not a session hash"):
        store.save(s)
    assert r.get(key) == b"\x80\x04\x95 pickled-by-someone-else"


def test_incr_overflow_is_refused_and_writes_nothing(
    stickless_url: str, store_factory: Any
) -> None:
    store = store_factory(stickless_url, fresh_config())
    s = store.new()
    s["n"] = 2**63 - 2
    s["m"] = 0
    store.save(s)
    a, b = store.load(s.token), store.load(s.token)
    a.incr("n")
    store.save(a)
    b.incr("m")  # applied first in the script, then undone
    b.incr("n")  # would overflow now
    b["other"] = "partial"
    with pytest.raises(SessionConflict, match="overflow"):
        store.save(b)
    assert dict(store.load(s.token)) == {"n": 2**63 - 1, "m": 0}


# ------------------------------------------------------------- review findings (2)
def test_in_place_change_of_a_nested_identity_value_renews(
    stickless_url: str, store_factory: Any
) -> None:
    store = store_factory(stickless_url, fresh_config())
    s = store.new()
    s["user"] = {"id": None, "theme": "dark"}
    store.save(s)
    planted = s.token
    in_flight = store.load(planted)
    victim = store.load(planted)
    victim["user"]["id"] = "victim"  # login by changing the value in place
    store.save(victim)
    assert victim.token != planted and store.load(planted) is None
    in_flight["user"]["role"] = "admin"  # nor through the old token, in place
    assert store.save(in_flight).outcome == "gone"
    assert store.load(victim.token)["user"] == {"id": "victim", "theme": "dark"}


def test_in_flight_in_place_identity_write_is_refused_after_a_rotation(
    stickless_url: str, store_factory: Any
) -> None:
    store = store_factory(stickless_url, fresh_config())
    s = store.new()
    s["user"] = {"name": "ann"}
    store.save(s)
    old = store.load(s.token)
    s.renew()
    store.save(s)
    old["user"]["role"] = "admin"
    assert store.save(old).outcome == "gone"
    assert store.load(s.token)["user"] == {"name": "ann"}


def test_renew_without_forward_leaves_the_old_token_no_power(
    stickless_url: str, store_factory: Any
) -> None:
    store = store_factory(stickless_url, fresh_config())
    s = store.new()
    s["cart"] = [1]
    store.save(s)
    old = s.token
    in_flight = store.load(old)
    s.renew(forward=False)
    store.save(s)
    in_flight["cart"] = [2]
    assert store.save(in_flight).outcome == "gone"
    assert store.destroy(old) is False and store.load(s.token)["cart"] == [1]


@pytest.mark.parametrize("field", ["forward_ttl", "tombstone_ttl", "idle_timeout"])
@pytest.mark.parametrize("value", [0, 0.0004, -1])
def test_durations_below_a_millisecond_are_refused(field: str, value: float) -> None:
    with pytest.raises(ConfigurationError, match=field):
        kwargs: dict[str, Any] = {field: value}
        SessionConfig(**kwargs)


def test_revoke_keep_spares_only_the_current_token(stickless_url: str, store_factory: Any) -> None:
    store = store_factory(stickless_url, fresh_config())
    s = store.new()
    s.login("u")
    s["x"] = 1
    store.save(s)
    stale = s.token
    s = store.load(stale)
    s["user"] = "u"  # identity change: the stale token loses its power
    store.save(s)
    assert store.revoke_user("u", keep=stale) == 1  # a powerless token keeps nothing
    t = store.new()
    t.login("u")
    t["x"] = 1
    store.save(t)
    forged = t.raw_token.split(".")[0] + "." + "A" * 43
    assert store.revoke_user("u", keep=forged) == 1  # nor does a forged one
    mine, other = store.new(), store.new()
    for session in (mine, other):
        session.login("u")
        session["x"] = 1
        store.save(session)
    assert store.revoke_user("u", keep=mine.token) == 1  # the current token: kept
    assert store.load(mine.token) is not None and store.load(other.token) is None
    assert [i.session_id for i in store.sessions_for("u")] == [mine.raw_token.split(".")[0]]


def test_destroy_id_with_an_owner_checks_it(stickless_url: str) -> None:
    from stickless import SessionStore

    with SessionStore.from_url(stickless_url, fresh_config()) as store:
        s = store.new()
        s.login("ann")
        s["x"] = 1
        store.save(s)
        session_id = s.raw_token.split(".")[0]
        assert store.destroy_id(session_id, user_id="mallory") is False
        assert store.load(s.token) is not None
        assert store.destroy_id(session_id, user_id="ann") is True
        assert store.load(s.token) is None


@pytest.mark.parametrize("value", [-0.05, float("nan")])
def test_a_negative_retry_backoff_is_refused(value: float) -> None:
    with pytest.raises(ConfigurationError, match="retry_backoff"):
        SessionConfig(retry_backoff=value)
