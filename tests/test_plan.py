"""The planner in memory: each operation driven with scripted replies, no server at all.

Every branch the executors can hand the plan is covered here (gone, forwarded, conflicts,
NOSCRIPT, MOVED, unavailable with and without retries, a short WAIT), fast; the real-server
tests (test_store.py and the others) stay as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from helpers import drive
from stickless import (
    ReplicationTimeout,
    SaveOutcome,
    SessionConfig,
    SessionConflict,
    SessionStatus,
    StoreUnavailable,
)
from stickless.errors import ServerError
from stickless.session import Session
from stickless.store.failures import Unavailable
from stickless.store.plan import (
    SAVE,
    TOUCH,
    UPDATE,
    Batch,
    Command,
    Op,
    Planner,
    Refresh,
    Script,
    ScriptCall,
)
from stickless.tokens import token_id

NOW = 1_700_000_000_000
IDLE = 30 * 60 * 1000


def planner(*, hsetex: bool | None = None, **options: Any) -> Planner:
    """A planner; ``hsetex=False``: for a server without HSETEX (the usual save a script)."""
    return Planner(SessionConfig(retry_backoff=0.01, **options), "memory", hsetex=hsetex)


def run(op: Op[Any], replies: Iterable[Any]) -> tuple[Any, list[Any]]:
    """Drive ``op``: each batch gets the next scripted reply (a list, or an exception to
    throw in). Returns the result and every step the plan yielded."""
    steps: list[Any] = []
    return drive(op, replies, steps), steps


def batches(steps: list[Any]) -> list[Batch]:
    return [s for s in steps if isinstance(s, Batch)]


def scripts_sent(steps: list[Any]) -> list[Script]:
    """The script of each call of each batch in ``steps``."""
    return [c.script for b in batches(steps) for c in b.calls if isinstance(c, ScriptCall)]


def stored_hash(session: Session, fields: dict[bytes, bytes] | None = None) -> dict[bytes, bytes]:
    """What HGETALL returns for ``session`` (its current token), plus ``fields``."""
    return {
        b"k:" + token_id(session.raw_token).digest.encode(): b"1",
        b"m:c": str(NOW).encode(),
        b"m:a": str(NOW).encode(),
        b"m:x": str(NOW + 24 * 3600 * 1000).encode(),
        **(fields or {}),
    }


def saved(p: Planner, **data: Any) -> Session:
    """A session as a save left it (status loaded)."""
    s = p.new()
    s.update(data)
    result, _ = run(p.save(s), [[[1, NOW, NOW, NOW + 86_400_000]]])
    assert result.outcome is SaveOutcome.SAVED
    return s


# --------------------------------------------------------------------------- load
def test_load_is_one_batch_of_hgetall_and_pttl() -> None:
    p = planner()
    s = saved(p, cart=["apple"])
    loaded, steps = run(p.load(s.token), [[stored_hash(s, {b"d:cart": b'["apple"]'}), IDLE]])
    assert isinstance(loaded, Session) and loaded["cart"] == ["apple"]
    (batch,) = batches(steps)
    assert [c.args[0] for c in batch.calls if isinstance(c, Command)] == ["HGETALL", "PTTL"]
    assert batch.idempotent


@pytest.mark.parametrize(
    "reply",
    [
        [{}, -2],  # unknown or expired
        [{b"k:another-digest": b"1", b"m:c": b"1", b"m:a": b"1", b"m:x": b"9"}, IDLE],  # renewed
        [ServerError("WRONGTYPE", "WRONGTYPE Operation against a key"), IDLE],  # not a hash
    ],
    ids=["unknown", "not-the-current-token", "wrong-type"],
)
def test_load_finds_nothing(reply: list[Any]) -> None:
    p = planner()
    s = saved(p, a=1)
    assert run(p.load(s.token), [reply])[0] is None


def test_a_malformed_token_costs_no_batch() -> None:
    assert run(planner().load("not a token"), []) == (None, [])


def test_load_touches_once_the_interval_passed() -> None:
    p = planner(touch_interval=60)
    s = saved(p, a=1)
    fresh, steps = run(p.load(s.token), [[stored_hash(s), IDLE - 59_000]])
    assert fresh is not None and len(batches(steps)) == 1
    due, steps = run(p.load(s.token), [[stored_hash(s), IDLE - 60_000], [NOW + 60_000]])
    touch = batches(steps)[1].calls[0]
    assert isinstance(touch, ScriptCall) and touch.script is TOUCH
    assert due is not None and due.meta is not None and due.meta.access_ms == NOW + 60_000
    gone, _ = run(p.load(s.token), [[stored_hash(s), IDLE - 60_000], [0]])
    assert gone is None  # destroyed or renewed between the two round trips


def test_seconds_left_after_a_save_counts_down_from_the_ttl_it_set() -> None:
    """The save's reply is the server's clock (NOW, years ago here): this host's clock is
    never compared with it."""
    s = saved(planner(), a=1)
    assert s.seconds_left == pytest.approx(IDLE / 1000, abs=1)


def test_no_touch_near_the_absolute_deadline() -> None:
    p = planner(touch_interval=0)
    s = saved(p, a=1)
    near = stored_hash(s, {b"m:x": str(NOW + IDLE - 1).encode()})
    loaded, steps = run(p.load(s.token), [[near, 1000]])
    assert loaded is not None and len(batches(steps)) == 1


def test_idempotent_batches_are_retried_with_backoff_then_give_up() -> None:
    p = planner(retries=2)
    s = saved(p, a=1)
    down = Unavailable(ConnectionError("refused"))
    loaded, steps = run(p.load(s.token), [down, down, [stored_hash(s), IDLE]])
    assert loaded is not None
    kinds = [type(x).__name__ for x in steps]
    assert kinds == ["Batch", "Refresh", "Pause", "Batch", "Refresh", "Pause", "Batch"]
    with pytest.raises(StoreUnavailable):
        run(p.load(s.token), [down, down, down])


# --------------------------------------------------------------------------- save
def test_a_save_is_never_resent() -> None:
    p = planner(retries=5)
    s = saved(p, a=1)
    s["a"] = 2
    with pytest.raises(StoreUnavailable):
        run(p.save(s), [Unavailable(TimeoutError("timed out"), applied=None)])


def test_first_use_of_a_script_goes_by_source_then_by_sha() -> None:
    p = planner(hsetex=False)
    s = p.new()
    s["a"] = 1
    _, steps = run(p.save(s), [[[1, NOW, NOW, NOW + 1]]])
    assert batches(steps)[0].calls[0].command()[0] == "EVAL"
    s["a"] = 2  # the usual save: update.lua, whose first use this is
    _, steps = run(p.save(s), [[[NOW, NOW + 1]]])
    assert batches(steps)[0].calls[0].command()[:2] == ("EVAL", UPDATE.source)
    s["a"] = 3
    _, steps = run(p.save(s), [[[NOW, NOW + 1]]])
    assert batches(steps)[0].calls[0].command()[:2] == ("EVALSHA", UPDATE.sha)


def test_noscript_resends_only_that_call_by_source() -> None:
    p = planner()
    s = saved(p, a=1)
    s.login("ann")  # the save and the user index, in one batch
    s["a"] = 2
    noscript = ServerError("NOSCRIPT", "NOSCRIPT No matching script")
    result, steps = run(p.save(s), [[noscript, 1], [[1, NOW, NOW, NOW + 1]]])
    assert result.outcome is SaveOutcome.SAVED
    retry = batches(steps)[1]
    assert len(retry.calls) == 1 and retry.calls[0].command()[0] == "EVAL"


@pytest.mark.parametrize("status", [0, -1])
def test_gone_invalidates_and_writes_nothing(status: int) -> None:
    p = planner()
    s = saved(p, a=1)
    s["b"] = 2
    # update.lua writes nothing and cannot tell why: save.lua, sent next, says
    result, steps = run(p.save(s), [[0], [[status]]])
    assert result.outcome is SaveOutcome.GONE and s.status is SessionStatus.INVALIDATED
    assert scripts_sent(steps) == [UPDATE, SAVE]


def test_forwarded_save_keeps_the_old_token() -> None:
    p = planner()
    s = saved(p, a=1)
    token = s.token
    s.renew()
    s["b"] = 2
    result, _ = run(p.save(s), [[[2, NOW, NOW, NOW + 1]]])
    assert result.outcome is SaveOutcome.SAVED and s.token == token


def test_a_token_a_renew_replaced_saves_data_through_save_lua() -> None:
    p = planner()
    s = saved(p, a=1)  # another request renewed the session since this one loaded it
    token = s.token
    s["b"] = 2
    result, steps = run(p.save(s), [[0], [[2, NOW, NOW, NOW + 1]]])
    assert result.outcome is SaveOutcome.SAVED and s.token == token
    assert scripts_sent(steps) == [UPDATE, SAVE]


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        ([-3, b"d:n"], "'n'"),
        ([-2], "already exists"),
        (ServerError("WRONGTYPE", "WRONGTYPE Operation against a key"), "not a session hash"),
    ],
)
def test_conflicts_raise_and_name_the_cause(reply: Any, match: str) -> None:
    p = planner()
    s = saved(p, n=1)
    s.incr("n")
    with pytest.raises(SessionConflict, match=match):
        run(p.save(s), [[reply]])


def test_an_identity_change_renews_and_names_it_to_the_script() -> None:
    p = planner()
    s = saved(p, a=1)
    token = s.token
    s["user"] = "ann"
    result, steps = run(p.save(s), [[[1, NOW, NOW, NOW + 1]]])
    call = batches(steps)[0].calls[0]
    assert isinstance(call, ScriptCall) and call.script is SAVE
    assert call.args[5] and call.args[6] == "identity" and call.args[8] == "1"
    assert result.outcome is SaveOutcome.SAVED and s.token != token


def test_counters_take_the_value_redis_computed_exactly() -> None:
    p = planner()
    s = saved(p, n=2**62)
    s.incr("n")
    run(p.save(s), [[[1, NOW, NOW, NOW + 1, b"4611686018427387905"]]])
    assert s["n"] == 2**62 + 1


# ------------------------------------------------------ replicated saves and the cluster
def test_wait_short_raises_replication_timeout_after_applying() -> None:
    p = planner(durability="replicated", min_replicas=1, hsetex=False)
    s = saved_replicated(p)
    s["a"] = 2
    with pytest.raises(ReplicationTimeout) as info:
        run(p.save(s), [[[1, NOW, NOW, NOW + 1], 0]])
    assert info.value.acknowledged == 0 and s["a"] == 2 and s.status is SessionStatus.LOADED


def test_a_save_after_an_update_that_wrote_nothing_waits_only_for_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """update.lua wrote nothing but its WAIT blocked (too few replicas): save.lua's WAIT
    gets what is left of wait_timeout, so the save stays bounded by it (never 0: WAIT 0
    blocks for ever)."""
    p = planner(durability="replicated", min_replicas=1, wait_timeout=0.5, hsetex=False)
    s = saved_replicated(p)
    clock = [100.0]
    monkeypatch.setattr("stickless.store.plan.time.monotonic", lambda: clock[0])
    for blocked, left in ((0.3, 200), (0.7, 1)):
        s["a"] = s["a"] + 1
        op = p.save(s)
        first = next(op)
        assert isinstance(first, Batch) and first.wait == (1, 500)
        assert scripts_sent([first]) == [UPDATE]
        clock[0] += blocked
        second = op.send([0, 0])  # the update wrote nothing; its WAIT timed out
        assert isinstance(second, Batch) and second.wait == (1, left)
        assert scripts_sent([second]) == [SAVE]
        with pytest.raises(StopIteration) as done:
            op.send([[1, NOW, NOW, NOW + 1], 1])
        assert done.value.value.outcome is SaveOutcome.SAVED and done.value.value.replicas == 1


def test_moved_refreshes_the_slot_map_and_resends() -> None:
    p = planner(durability="replicated", min_replicas=1, hsetex=False)
    s = saved_replicated(p)
    s["a"] = 2
    moved = ServerError("MOVED", "MOVED 1234 127.0.0.1:7001")
    result, steps = run(p.save(s), [[moved, 0], [[1, NOW, NOW, NOW + 1], 1]])
    assert result.outcome is SaveOutcome.SAVED and result.replicas == 1
    assert [type(x).__name__ for x in steps] == ["Batch", "Refresh", "Batch"]
    s["a"] = 3
    with pytest.raises(StoreUnavailable):
        run(p.save(s), [[moved, 0]] * 3)


def test_a_pinned_save_whose_node_died_refreshes_then_fails() -> None:
    """The save is not resent, but the slot map is reloaded first, so that the next save
    goes to the promoted replica."""
    p = planner(durability="replicated", min_replicas=1)
    s = saved_replicated(p)
    s["a"] = 2
    op = p.save(s)
    assert isinstance(next(op), Batch)
    assert isinstance(op.throw(Unavailable(ConnectionError("reset"))), Refresh)
    with pytest.raises(StoreUnavailable):
        op.send(None)


def saved_replicated(p: Planner) -> Session:
    s = p.new()
    s["a"] = 1
    run(p.save(s), [[[1, NOW, NOW, NOW + 1], 1]])
    return s
