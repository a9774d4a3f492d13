"""The per-user session cap in the planner, in memory (scripted replies, no server): each
branch of a capped login, its round trips and the commands it sends (issue 12, item 4)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from helpers import drive
from stickless import (
    ConfigurationError,
    SaveOutcome,
    SessionConfig,
    StoreUnavailable,
    TooManySessions,
)
from stickless.errors import ServerError
from stickless.session import Session
from stickless.store import plan as plan_module
from stickless.store.plan import (
    CAP,
    DESTROY,
    INDEX,
    LOGIN_WINDOW_MS,
    SAVE,
    Batch,
    Command,
    Op,
    Planner,
    ScriptCall,
)
from stickless.tokens import new_raw_token, token_id

NOW = 1_700_000_000_000
DAY = 86_400_000
SAVED = [1, NOW, NOW, NOW + DAY]
OLD = NOW - 10 * 60_000  # a login long done (outside the window)


def planner(limit: int | None = 2, mode: str = "evict_oldest", **options: Any) -> Planner:
    config = SessionConfig(
        max_sessions_per_user=limit,
        on_limit=mode,  # type: ignore[arg-type]
        retry_backoff=0.01,
        **options,
    )
    return Planner(config, "memory")


def run(op: Op[Any], replies: Iterable[Any]) -> tuple[Any, list[Batch]]:
    """Drive ``op`` with scripted replies; the result (or the exception raised, returned)
    and the batches it sent."""
    steps: list[Any] = []
    try:
        result = drive(op, replies, steps)
    except Exception as exc:  # the operation raised: hand it to the test
        result = exc
    return result, [step for step in steps if isinstance(step, Batch)]


def family() -> str:
    return token_id(new_raw_token()).family


def login(p: Planner, user: str = "ann") -> Session:
    s = p.new()
    s["n"] = 1
    s.login(user)
    return s


def reserved(*others: tuple[str, int | None]) -> list[Any]:
    """cap.lua's reply: the server clock, then each other session and its login (ms)."""
    reply: list[Any] = [NOW]
    for other, at in others:
        reply += [other.encode(), b"" if at is None else str(at).encode()]
    return [reply]


def scripts(batch: Batch) -> list[str]:
    return [c.script.name if isinstance(c, ScriptCall) else str(c.args[0]) for c in batch.calls]


def test_the_config_is_checked() -> None:
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ConfigurationError, match="max_sessions_per_user"):
            SessionConfig(max_sessions_per_user=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="on_limit"):
        SessionConfig(max_sessions_per_user=1, on_limit="wait")  # type: ignore[arg-type]
    assert SessionConfig().max_sessions_per_user is None
    assert SessionConfig().on_limit == "evict_oldest"


def test_without_a_cap_a_login_is_one_round_trip() -> None:
    p = planner(None)
    result, sent = run(p.save(login(p)), [[SAVED, 1]])
    assert result.outcome is SaveOutcome.SAVED
    assert [scripts(b) for b in sent] == [["save", "index"]]


def test_a_save_that_does_not_log_in_is_not_capped() -> None:
    p = planner(1)
    s = login(p)
    run(p.save(s), [reserved(), [SAVED, 1]])
    s["more"] = 2  # the same user: no login, the usual save
    result, sent = run(p.save(s), [[[NOW, NOW + DAY]]])
    assert result.outcome is SaveOutcome.SAVED and [scripts(b) for b in sent] == [["update"]]


@pytest.mark.parametrize("mode", ["evict_oldest", "refuse"])
def test_fewer_others_than_the_cap_costs_one_more_round_trip(mode: str) -> None:
    p = planner(2, mode)
    s = login(p)
    other = family()
    result, sent = run(p.save(s), [reserved((other, OLD)), [SAVED, 2]])
    assert result.outcome is SaveOutcome.SAVED and result.evicted == ()
    assert [scripts(b) for b in sent] == [["cap"], ["save", "index"]]
    (reserve,) = sent[0].calls
    assert isinstance(reserve, ScriptCall) and reserve.script is CAP
    me = token_id(s.raw_token).family
    assert reserve.keys == (p.layout.user_index("ann"), p.layout.logins("ann"))
    assert reserve.args[:2] == (me, LOGIN_WINDOW_MS)
    assert sent[0].idempotent and not sent[1].idempotent


def test_refuse_checks_before_the_save_and_sends_none_when_full() -> None:
    p = planner(2, "refuse")
    s = login(p)
    token, pending = s.token, s.pending_changes()
    a, b = family(), family()
    probes = [[str(OLD).encode(), b"ann"], [str(OLD).encode(), b"ann"]]
    error, sent = run(p.save(s), [reserved((a, OLD), (b, None)), probes, [[NOW]]])
    assert isinstance(error, TooManySessions) and error.limit == 2
    assert "ann" not in str(error)
    assert [scripts(b) for b in sent] == [["cap"], ["HMGET", "HMGET"], ["cap"]]
    forget = sent[2].calls[0]
    assert isinstance(forget, ScriptCall) and forget.args[0] == ""  # reserves nothing
    assert forget.args[4:] == (token_id(s.raw_token).family,)  # withdraws its own
    assert SAVE.name not in {n for batch in sent for n in scripts(batch)}
    # the Session is as it was: saving it again retries the login
    assert s.token == token and s.user_changed and s.pending_changes() == pending


def test_refuse_does_not_count_the_dead_and_prunes_them_with_the_save() -> None:
    p = planner(2, "refuse")
    s = login(p)
    live, expired, rebound = family(), family(), family()
    probes = [[b"1", b"ann"], [None, None], [b"1", b"bob"]]
    others = reserved((live, OLD), (expired, OLD), (rebound, None))
    result, sent = run(p.save(s), [others, probes, [SAVED, 1]])
    assert result.outcome is SaveOutcome.SAVED
    assert [scripts(b) for b in sent] == [["cap"], ["HMGET"] * 3, ["save", "index"]]
    index = sent[2].calls[1]
    assert isinstance(index, ScriptCall) and index.script is INDEX
    assert set(index.args[3:]) == {expired, rebound}


@pytest.mark.parametrize(
    ("fields", "tomb", "counted"),
    [
        ([None, None], 0, True),  # a new session logging in: not written yet
        ([b"1", None], None, True),  # an anonymous session logging in
        ([None, None], 1, False),  # logged out since (tombstone)
        ([b"1", b"bob"], None, False),  # another user's now
    ],
    ids=["new-in-flight", "anonymous-in-flight", "logged-out", "another-user"],
)
def test_a_recent_login_counts_while_it_may_be_in_flight(
    fields: list[Any], tomb: int | None, counted: bool
) -> None:
    p = planner(1, "refuse")
    s = login(p)
    recent = family()
    then = [[NOW]] if counted else [SAVED, 1]  # withdraw the reservation, or save
    result, sent = run(p.save(s), [reserved((recent, NOW - 1000)), [fields, tomb or 0], then])
    assert [c.args[0] for c in sent[1].calls if isinstance(c, Command)] == ["HMGET", "EXISTS"]
    assert isinstance(result, TooManySessions) is counted


def test_evict_checks_with_the_save_then_ends_the_oldest() -> None:
    p = planner(2)
    s = login(p)
    oldest, older, in_flight = family(), family(), family()
    others = reserved((older, OLD + 1), (oldest, None), (in_flight, NOW - 5))
    # oldest: no login recorded (bound before the cap): ordered by its creation
    probes = [[str(OLD + 2).encode(), b"ann"], [str(OLD).encode(), b"ann"], [None, None], 0]
    result, sent = run(
        p.save(s), [others, [SAVED, 1, *probes], [[1, b"ann"], [1, b"ann"], 1, [NOW]]]
    )
    assert result.outcome is SaveOutcome.SAVED
    assert [scripts(b) for b in sent] == [
        ["cap"],
        ["save", "index", "HMGET", "HMGET", "HMGET", "EXISTS"],
        ["destroy", "destroy", "index", "cap"],
    ]
    assert result.evicted == (oldest, older)  # the login in flight is newer: kept
    destroys = [c for c in sent[2].calls if isinstance(c, ScriptCall) and c.script is DESTROY]
    assert [c.keys[0] for c in destroys] == [p.layout.data(oldest), p.layout.data(older)]
    assert all(c.args[2] == "ann" and len(c.args) == 4 for c in destroys)  # owner-checked
    assert sent[2].idempotent


def test_evict_stops_a_login_in_flight_by_tombstone() -> None:
    p = planner(1)
    s = login(p)
    in_flight = family()
    probes = [[None, None], 0]
    result, sent = run(
        p.save(s), [reserved((in_flight, NOW - 5)), [SAVED, 1, *probes], [[0], 1, [NOW]]]
    )
    assert result.evicted == (in_flight,)
    doom = sent[2].calls[0]
    assert isinstance(doom, ScriptCall) and doom.script is DESTROY
    assert doom.args[2:] == ("ann", "", "1")  # also unbound or not written yet


def test_evict_with_only_dead_others_just_prunes() -> None:
    p = planner(1)
    s = login(p)
    expired = family()
    result, sent = run(p.save(s), [reserved((expired, OLD)), [SAVED, 1, [None, None]], [1, [NOW]]])
    assert result.outcome is SaveOutcome.SAVED and result.evicted == ()
    assert [scripts(b) for b in sent][2] == ["index", "cap"]


def test_evict_after_the_save_failing_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from stickless.store.failures import Unavailable

    p = planner(1, retries=0)
    s = login(p)
    other = family()
    down = Unavailable(ConnectionError("down"))
    result, _ = run(p.save(s), [reserved((other, OLD)), [SAVED, 1, [b"1", b"ann"]], down])
    assert result.outcome is SaveOutcome.SAVED and result.evicted == ()
    assert "beyond the cap" in caplog.text


@pytest.mark.parametrize("mode", ["evict_oldest", "refuse"])
def test_a_login_whose_save_is_refused_withdraws_its_reservation(mode: str) -> None:
    uncapped, p = planner(None), planner(2, mode)
    s = uncapped.new()
    s["a"] = 1
    run(uncapped.save(s), [[SAVED]])
    s.login("ann")  # a stored session, which expired before its login's save
    result, sent = run(p.save(s), [reserved(), [[0], 1], [[NOW]]])
    assert result.outcome is SaveOutcome.GONE
    assert [scripts(b) for b in sent] == [["cap"], ["save", "index"], ["cap"]]


def test_a_login_too_slow_to_reserve_is_abandoned(monkeypatch: pytest.MonkeyPatch) -> None:
    p = planner(1, "refuse")
    s = login(p)
    clock = iter([0.0, LOGIN_WINDOW_MS / 1000])
    monkeypatch.setattr(plan_module, "_monotonic", lambda: next(clock))
    error, sent = run(p.save(s), [reserved(), [[NOW]]])
    assert isinstance(error, StoreUnavailable) and error.applied is False
    assert [scripts(b) for b in sent] == [["cap"], ["cap"]]


def test_a_corrupt_user_index_leaves_the_login_uncapped(caplog: pytest.LogCaptureFixture) -> None:
    p = planner(1, "refuse")
    s = login(p)
    wrong = ServerError("WRONGTYPE", "WRONGTYPE Operation against a key")
    result, sent = run(p.save(s), [[wrong], [SAVED, 1]])
    assert result.outcome is SaveOutcome.SAVED and len(sent) == 2
    assert "not enforced" in caplog.text
