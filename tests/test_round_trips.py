"""Round trips and commands, counted exactly: round trips as the batches the store sends
(one batch is one pipeline), commands with MONITOR (commands run by our Lua scripts are
tagged ``lua`` by the server and are not counted: they cost no round trip)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from helpers import trips
from stickless import SessionConfig
from stickless.embedded import server_binary
from stickless.store.plan import SAVE, ScriptCall


def config(**options: Any) -> SessionConfig:
    return SessionConfig(key_prefix=f"rt{uuid.uuid4().hex[:8]}", **options)


def warm(store: Any) -> Any:
    """Create a session, change it once (``save.lua``, then ``update.lua``: a delete) and
    load it, so scripts are cached and touch is recent."""
    s = store.new()
    s["a"] = 1
    s["z"] = 0
    s.user_id = "u"
    store.save(s)
    s["a"] = 2
    del s["z"]
    store.save(s)
    store.load(s.token)
    return s


def test_load_is_one_round_trip_and_no_script(
    stickless_url: str, store_factory: Any, command_log: Any
) -> None:
    store = store_factory(stickless_url, config())
    s = warm(store)
    with command_log.counting() as sent, trips(store) as batches:
        assert store.load(s.token) is not None
    assert sent == ["HGETALL", "PTTL"] and len(batches) == 1


def test_a_due_touch_is_one_more_round_trip(
    stickless_url: str, store_factory: Any, command_log: Any
) -> None:
    """The idle TTL is refreshed at most once per ``touch_interval``: the load that finds it
    due sends the touch script (0 here: every load is due)."""
    store = store_factory(stickless_url, config(touch_interval=0))
    s = warm(store)
    with command_log.counting() as sent, trips(store) as batches:
        store.load(s.token)
    assert sent == ["HGETALL", "PTTL", "EVALSHA"] and len(batches) == 2


def test_load_of_unknown_token_is_one_round_trip(
    stickless_url: str, store_factory: Any, command_log: Any
) -> None:
    from stickless import tokens

    store = store_factory(stickless_url, config())
    warm(store)
    with command_log.counting() as sent, trips(store) as batches:
        assert store.load(tokens.new_raw_token()) is None
    assert sent == ["HGETALL", "PTTL"] and len(batches) == 1


@pytest.mark.parametrize(("incr", "script"), [(False, "update"), (True, "save")])
def test_a_save_of_a_change_is_one_script_call(
    stickless_url: str, store_factory: Any, command_log: Any, incr: bool, script: str
) -> None:
    """Sets and deletes of a loaded session take the lean ``update.lua``; an increment
    takes ``save.lua``: one command in one round trip either way."""
    store = store_factory(stickless_url, config())
    s = warm(store)
    loaded = store.load(s.token)
    loaded["b"] = 2
    if incr:
        loaded.incr("n")
    del loaded["a"]
    with command_log.counting() as sent, trips(store) as batches:
        assert store.save(loaded).outcome == "saved"
    assert sent == ["EVALSHA"] and len(batches) == 1
    assert isinstance(call := batches[0].calls[0], ScriptCall) and call.script.name == script
    assert dict(store.load(s.token)) == ({"b": 2, "n": 1} if incr else {"b": 2})


def test_a_usual_save_of_a_token_a_renew_replaced_takes_save_lua(
    stickless_url: str, store_factory: Any, command_log: Any
) -> None:
    """``update.lua`` writes nothing for a token that is not the current one; ``save.lua``
    then saves the data through the renew's forward, in a second round trip."""
    store = store_factory(stickless_url, config())
    s = warm(store)
    late = store.load(s.token)
    s.renew()
    store.save(s)
    late["b"] = 3
    with command_log.counting() as sent, trips(store) as batches:
        assert store.save(late).outcome == "saved"
    assert sent == ["EVALSHA", "EVALSHA"] and len(batches) == 2
    assert [b.calls[0].script.name for b in batches] == ["update", "save"]
    assert store.load(late.token) is None and store.load(s.token)["b"] == 3


def test_new_session_save_is_one_command(
    stickless_url: str, store_factory: Any, command_log: Any
) -> None:
    store = store_factory(stickless_url, config())
    warm(store)
    s = store.new()
    s["x"] = 1
    with command_log.counting() as sent:
        store.save(s)
    assert sent == ["EVALSHA"]


def test_unchanged_save_is_zero_commands(
    stickless_url: str, store_factory: Any, command_log: Any
) -> None:
    store = store_factory(stickless_url, config())
    s = warm(store)
    loaded = store.load(s.token)
    _ = loaded["a"], dict(loaded)
    with command_log.counting() as sent:
        assert store.save(loaded).outcome == "unchanged"
        assert store.save(store.new()).outcome == "unchanged"
    assert sent == []


def test_replicated_save_pipelines_wait(
    stickless_url: str, store_factory: Any, command_log: Any
) -> None:
    store = store_factory(stickless_url, config(durability="replicated", min_replicas=0))
    s = warm(store)
    s["b"] = 2
    with command_log.counting() as sent:
        result = store.save(s)
    assert sent == ["EVALSHA", "WAIT"] and result.replicas == 0


def test_login_save_updates_the_index_in_the_same_round_trip(
    stickless_url: str, store_factory: Any, command_log: Any
) -> None:
    store = store_factory(stickless_url, config())
    s = warm(store)
    loaded = store.load(s.token)
    loaded.login("someone")
    with trips(store) as calls, command_log.counting() as sent:
        store.save(loaded)
    assert len(calls) == 1  # one pipeline = one round trip
    assert sent == ["EVALSHA", "EVALSHA"]  # save + the new user's index (old entries: lazy)


def test_scripts_are_reloaded_after_the_server_forgets_them(
    stickless_url: str, store_factory: Any, command_log: Any
) -> None:
    import redis

    store = store_factory(stickless_url, config())
    s = warm(store)
    redis.Redis.from_url(stickless_url).script_flush()
    time.sleep(0.01)
    s["b"] = 2
    with command_log.counting() as sent:
        assert store.save(s).outcome == "saved"
    assert sent == ["EVALSHA", "EVAL"]
    s["c"] = 3  # a new key: update.lua again
    with command_log.counting() as sent:
        store.save(s)
    assert sent == ["EVALSHA"]


def test_first_use_of_a_script_is_one_round_trip_too(
    stickless_url: str, store_factory: Any, command_log: Any
) -> None:
    import redis

    redis.Redis.from_url(stickless_url).script_flush()
    store = store_factory(stickless_url, config())
    store.sessions_for("nobody")  # opens the connection (HELLO etc.), runs no script
    s = store.new()
    s["a"] = 1
    with command_log.counting() as sent, trips(store) as batches:
        store.save(s)
        s.incr("n")
        store.save(s)
    # the first script goes by source in the form every server parses, and its "#!lua" form
    # is loaded in the same round trip: the answer says which form this server runs
    assert sent == ["EVAL", "SCRIPT", "EVALSHA"]
    assert len(batches) == 2
    assert SAVE.legacy is not None
    modern = server_binary().at_least(7)
    assert batches[1].calls[0].command()[1] == (SAVE.sha if modern else SAVE.legacy.sha)
    with command_log.counting() as sent:
        other = store.new()
        other["b"] = 2
        store.save(other)
        assert store.destroy(other.token)
    assert sent == ["EVALSHA", "EVAL"]  # another script's first use: by source, that form
