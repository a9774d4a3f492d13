"""The usual save without a script: ``HSETEX <hash> FXX FIELDS n k:<digest> 1 d:<key> ...``.

A save that only sets keys the session already holds, with no idle refresh due yet, is that
one command on Valkey >= 9 and Redis >= 8: it writes only if every field it names exists,
the presented token's own field among them. Each test here is the attack or the race the
script used to refuse, against a real server, sync and asyncio: a token renewed away, a
session destroyed or expired between load and save, a key deleted meanwhile. On an older
server the store learns, with its first save, that the command is missing, and runs
``update.lua`` from then on.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import redis

from helpers import takes_hsetex, trips
from stickless import SessionConfig
from stickless.embedded import ServerBinary
from stickless.store.keys import KeyLayout
from stickless.store.plan import Command, ScriptCall


def config(**options: Any) -> SessionConfig:
    options.setdefault("key_prefix", f"ps{uuid.uuid4().hex[:8]}")
    return SessionConfig(**options)


@pytest.fixture
def hsetex(stickless_server: ServerBinary) -> None:
    if not takes_hsetex(stickless_server):
        pytest.skip(f"{stickless_server} has no HSETEX")


def stored(store: Any, **data: Any) -> Any:
    """A session saved with ``data`` (save.lua), and loaded again: what a request holds."""
    s = store.new()
    s.update(data)
    store.save(s)
    loaded = store.load(s.token)
    assert loaded is not None
    return loaded


def names(batches: list[Any]) -> list[str]:
    """The command (or script) each batch sent first."""
    return [
        c.script.name if isinstance(c := b.calls[0], ScriptCall) else str(c.args[0])
        for b in batches
    ]


def server_side(url: str, store: Any, session: Any, *command: Any) -> Any:
    """Run ``command`` on the session's hash (its key where ``{}`` stands)."""
    key = KeyLayout(store.config.key_prefix).data(session.token_id.family)
    client = redis.Redis.from_url(url)
    try:
        return client.execute_command(*(key if part == "{}" else part for part in command))  # type: ignore[no-untyped-call]
    finally:
        client.close()


# ------------------------------------------------------------------- the usual save
def test_a_save_of_held_keys_is_one_hsetex_and_no_script(
    stickless_url: str, store_factory: Any, command_log: Any, hsetex: None
) -> None:
    store = store_factory(stickless_url, config())
    s = stored(store, n=1, name="a")
    s["n"] = 2
    s["name"] = "b"
    with command_log.counting() as sent, trips(store) as batches:
        assert store.save(s).outcome == "saved"
    assert sent == ["HSETEX"] and len(batches) == 1
    (call,) = batches[0].calls
    assert isinstance(call, Command) and call.args[2:4] == ("FXX", "FIELDS")
    again = store.load(s.token)
    assert again is not None and dict(again) == {"n": 2, "name": "b"}


def test_a_replicated_plain_save_sends_wait_with_it(
    stickless_url: str, store_factory: Any, command_log: Any, hsetex: None
) -> None:
    store = store_factory(stickless_url, config(durability="replicated", min_replicas=0))
    s = stored(store, n=1)
    s["n"] = 2
    with command_log.counting() as sent:
        result = store.save(s)
    assert sent == ["HSETEX", "WAIT"] and result.replicas == 0


@pytest.mark.parametrize(
    "change",
    ["new key", "delete", "increment"],
)
def test_other_saves_take_a_script(
    stickless_url: str, store_factory: Any, command_log: Any, change: str
) -> None:
    """Only sets of held keys go without a script: a new key (HSETEX FXX would refuse it),
    a delete, an increment go to update.lua / save.lua, in one round trip."""
    store = store_factory(stickless_url, config())
    s = stored(store, n=1, a="x")
    if change == "new key":
        s["b"] = 1
    elif change == "delete":
        del s["a"]
    else:
        s.incr("n")
    with command_log.counting() as sent, trips(store) as batches:
        assert store.save(s).outcome == "saved"
    assert sent in (["EVAL"], ["EVALSHA"]) and len(batches) == 1  # by source the first time
    assert names(batches) == ["save" if change == "increment" else "update"]


# ------------------------------------------------------------------ what it refuses
def test_a_token_a_login_replaced_writes_nothing(
    stickless_url: str, store_factory: Any, hsetex: None
) -> None:
    """Fixation: a request still carrying the pre-login token saves after the login renewed
    it. Its HSETEX names the old token's field, which the login removed: nothing written,
    and the scripts after it say gone (an identity change leaves the old token no power)."""
    store = store_factory(stickless_url, config())
    late = stored(store, role="guest", n=1)
    victim = store.load(late.token)
    victim.login("alice")
    store.save(victim)
    late["role"] = "admin"
    with trips(store) as batches:
        assert store.save(late).outcome == "gone"
    assert names(batches)[0] == "HSETEX"
    assert store.load(late.token) is None
    assert store.load(victim.token)["role"] == "guest"


def test_a_token_a_plain_renew_replaced_saves_through_the_forward(
    stickless_url: str, store_factory: Any, hsetex: None
) -> None:
    """After a plain ``renew()``, a request in flight with the old token may still save
    data for ``forward_ttl``: its HSETEX writes nothing, save.lua saves through the
    forward (a second round trip for the save, in that rare case only)."""
    store = store_factory(stickless_url, config())
    late = stored(store, n=1)
    current = store.load(late.token)
    current.renew()
    store.save(current)
    late["n"] = 5
    with trips(store) as batches:
        assert store.save(late).outcome == "saved"
    assert names(batches) == ["HSETEX", "save"]
    assert store.load(current.token)["n"] == 5


@pytest.mark.parametrize("ending", ["destroyed", "expired"])
def test_a_session_gone_between_load_and_save_is_not_brought_back(
    stickless_url: str, store_factory: Any, hsetex: None, ending: str
) -> None:
    store = store_factory(stickless_url, config())
    s = stored(store, n=1)
    if ending == "destroyed":
        assert store.destroy(s.token)
    else:  # as if its idle timeout had passed: the server expires the hash
        server_side(stickless_url, store, s, "PEXPIRE", "{}", 20)
        time.sleep(0.1)
    s["n"] = 2
    with trips(store) as batches:
        assert store.save(s).outcome == "gone"
    assert names(batches)[0] == "HSETEX"
    assert server_side(stickless_url, store, s, "EXISTS", "{}") == 0


def test_a_key_deleted_meanwhile_is_written_by_the_script(
    stickless_url: str, store_factory: Any, hsetex: None
) -> None:
    """Another request deleted a key this one sets: HSETEX FXX refuses (the field is
    missing), save.lua writes it, as any set of a key is written."""
    store = store_factory(stickless_url, config())
    s = stored(store, a=1, b=1)
    other = store.load(s.token)
    del other["a"]
    store.save(other)
    s["a"] = 2
    s["b"] = 2
    with trips(store) as batches:
        assert store.save(s).outcome == "saved"
    assert names(batches) == ["HSETEX", "save"]
    assert dict(store.load(s.token)) == {"a": 2, "b": 2}


def test_overlapping_plain_saves_keep_every_key(
    stickless_url: str, store_factory: Any, hsetex: None
) -> None:
    """No lost update: requests that loaded the same session each set their own held key."""
    store = store_factory(stickless_url, config())
    keys = [f"k{i}" for i in range(20)]
    first = stored(store, **dict.fromkeys(keys, 0))
    loaded = [store.load(first.token) for _ in keys]
    for key, session in zip(keys, loaded, strict=True):
        session[key] = 1
    for session in loaded:
        assert store.save(session).outcome == "saved"
    assert dict(store.load(first.token)) == dict.fromkeys(keys, 1)


# ------------------------------------------------------------------- the idle refresh
def test_the_ttl_is_refreshed_once_per_touch_interval(
    stickless_url: str, store_factory: Any, hsetex: None
) -> None:
    """A plain save leaves the idle TTL as the last refresh set it; once ``touch_interval``
    has passed since, the save refreshes it (update.lua), as a load would."""
    store = store_factory(stickless_url, config(idle_timeout=30, touch_interval=1))
    s = stored(store, n=0)
    access = s.meta.access_ms
    time.sleep(0.3)
    s["n"] = 1
    with trips(store) as batches:
        store.save(s)
    assert names(batches) == ["HSETEX"]
    assert (
        server_side(stickless_url, store, s, "PTTL", "{}") < 29_800
    )  # counting down since the first save
    assert s.meta.access_ms == access and s.seconds_left < 29.8
    time.sleep(0.8)  # 1.1 s since the last refresh
    s["n"] = 2
    with trips(store) as batches:
        store.save(s)
    assert names(batches) == ["update"]
    assert server_side(stickless_url, store, s, "PTTL", "{}") > 29_500
    assert s.meta.access_ms > access and s.seconds_left > 29.5


@pytest.mark.parametrize("how", ["idle below touch_interval", "set_lifetime"])
def test_a_session_every_request_writes_stays_alive(
    stickless_url: str, store_factory: Any, how: str
) -> None:
    """A save refreshes the TTL at least every tenth of the idle timeout, whatever
    touch_interval says: an idle timeout at or below it (the configured one, or a session's
    own) would otherwise never be refreshed by saves of held keys, and the session would end
    while every request writes."""
    if how == "set_lifetime":
        store = store_factory(stickless_url, config())  # touch_interval 60 s
        s = store.new()
        s["n"] = 0
        s.set_lifetime(idle=1.5)
        store.save(s)
    else:
        store = store_factory(stickless_url, config(idle_timeout=1.5, touch_interval=60))
        s = store.new()
        s["n"] = 0
        store.save(s)
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < 3.0:  # twice the idle timeout, a write every 0.2 s
        loaded = store.load(s.token)
        assert loaded is not None, f"expired while in use, after {n} writes"
        n = loaded["n"] + 1
        loaded["n"] = n
        assert store.save(loaded).outcome == "saved"
        time.sleep(0.2)
    assert n >= 10


def test_a_write_slides_the_idle_timeout_to_within_a_tenth_of_it(
    stickless_url: str, store_factory: Any
) -> None:
    """Writes 0.8 s and then 1.5 s apart, with a 2 s idle timeout and a touch_interval
    longer than it (reads never refresh): the second write comes 2.3 s after the first
    refresh, but only 1.5 s after the last write, so the session must still be there."""
    store = store_factory(stickless_url, config(idle_timeout=2, touch_interval=60))
    s = stored(store, n=0)
    for gap in (0.8, 1.5):
        time.sleep(gap)
        loaded = store.load(s.token)
        assert loaded is not None, f"expired {gap} s after a write"
        loaded["n"] += 1
        assert store.save(loaded).outcome == "saved"
    assert store.load(s.token)["n"] == 2


def test_a_lowered_idle_timeout_applies_at_the_next_save(
    stickless_url: str, store_factory: Any
) -> None:
    """After a deploy lowers idle_timeout, a session whose TTL is still the old, longer one
    gets the new one from its next save (the TTL is longer than the idle timeout: due)."""
    cfg = config(idle_timeout=60)
    before = store_factory(stickless_url, cfg)
    s = stored(before, n=0)
    after = store_factory(stickless_url, config(idle_timeout=2, key_prefix=cfg.key_prefix))
    loaded = after.load(s.token)
    loaded["n"] = 1
    after.save(loaded)
    assert server_side(stickless_url, after, s, "PTTL", "{}") <= 2000


def test_without_hsetex_the_first_save_learns_it_and_scripts_follow(
    stickless_url: str, store_factory: Any, stickless_server: ServerBinary
) -> None:
    if takes_hsetex(stickless_server):
        pytest.skip(f"{stickless_server} has HSETEX")
    store = store_factory(stickless_url, config())
    s = stored(store, n=1)
    s["n"] = 2
    with trips(store) as batches:
        assert store.save(s).outcome == "saved"
    assert names(batches) == ["HSETEX", "update"]  # once per store
    s["n"] = 3
    with trips(store) as batches:
        assert store.save(s).outcome == "saved"
    assert names(batches) == ["update"]
    assert store.load(s.token)["n"] == 3
