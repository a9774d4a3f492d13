"""Session as a dict with a change log: no Redis needed here."""

from __future__ import annotations

import copy
import json
import pickle

import pytest

from stickless import SessionConfig, SessionStatus
from stickless.session import Session
from stickless.store.plan import Planner


@pytest.fixture
def new() -> Session:
    return Planner(SessionConfig(), "test").new()


def loaded(data: dict[str, object]) -> Session:
    from stickless import codec
    from stickless.session import SessionMeta

    return Session(
        raw_token="f.x",
        token="f.x",
        data=data,
        stored={k: codec.encode(v) for k, v in data.items()},
        meta=SessionMeta(1, 1, 10_000, 1_000),
    )


def test_is_a_dict_that_json_and_frameworks_accept(new: Session) -> None:
    new["cart"] = ["apple"]
    new |= {"theme": "dark"}
    assert isinstance(new, dict)
    assert json.loads(json.dumps(new)) == {"cart": ["apple"], "theme": "dark"}
    assert dict(new) == {"cart": ["apple"], "theme": "dark"}
    assert new.copy() == dict(new) and type(new.copy()) is dict


def test_non_json_value_raises_type_error_naming_the_key(new: Session) -> None:
    with pytest.raises(TypeError, match="'when'"):
        new["when"] = object()
    with pytest.raises(TypeError, match="'big'"):
        new["big"] = 2**70
    with pytest.raises(TypeError, match="'nested'"):
        new["nested"] = {"a": {1, 2}}
    with pytest.raises(TypeError, match="keys must be str"):
        new[1] = "x"  # type: ignore[index]
    assert "when" not in new and "big" not in new and not new.pending_changes()


def test_update_setdefault_validate_too(new: Session) -> None:
    with pytest.raises(TypeError, match="'bad'"):
        new.update(ok=1, bad=object())
    with pytest.raises(TypeError, match="'bad'"):
        new.setdefault("bad", object())


def test_change_log_records_only_changes() -> None:
    s = loaded({"a": 1, "b": [1], "c": "x"})
    assert not s.pending_changes() and not s.modified
    s["a"] = 2
    del s["c"]
    changes = s.pending_changes()
    assert changes.sets == {"a": b"2"} and changes.deletes == ["c"] and not changes.incrs


def test_in_place_mutation_of_nested_values_is_detected() -> None:
    s = loaded({"cart": ["apple"], "prefs": {"x": 1}})
    s["cart"].append("pear")
    assert s.pending_changes().sets == {"cart": b'["apple","pear"]'}
    assert s.modified


def test_value_mutated_after_assignment_is_saved_as_it_is_at_save(new: Session) -> None:
    new["cart"] = []
    new["cart"].append(1)
    assert new.pending_changes().sets == {"cart": b"[1]"}


def test_incr_is_logged_as_increment_unless_the_key_was_set() -> None:
    s = loaded({"n": 5})
    assert s.incr("n") == 6 and s.incr("n", 4) == 10
    assert s.pending_changes().incrs == {"n": 5}
    s2 = loaded({})
    s2["n"] = 1
    s2.incr("n")
    assert s2.pending_changes().sets == {"n": b"2"} and not s2.pending_changes().incrs


def test_incr_refuses_non_integers() -> None:
    s = loaded({"name": "bob", "flag": True})
    with pytest.raises(TypeError, match="'name'"):
        s.incr("name")
    with pytest.raises(TypeError, match="'flag'"):
        s.incr("flag")
    with pytest.raises(TypeError):
        s.incr("n", 1.5)  # type: ignore[arg-type]


def test_pop_popitem_clear_record_deletes() -> None:
    s = loaded({"a": 1, "b": 2, "c": 3})
    assert s.pop("a") == 1
    assert s.pop("zz", "dflt") == "dflt"
    with pytest.raises(KeyError):
        s.pop("zz")
    s.popitem()
    s.clear()
    assert sorted(s.pending_changes().deletes) == ["a", "b", "c"]


def test_status_transitions(new: Session) -> None:
    assert new.status is SessionStatus.NEW and new.is_new
    new.renew()  # a new session's token is already fresh
    assert new.status is SessionStatus.NEW
    s = loaded({"a": 1})
    assert s.status is SessionStatus.LOADED
    s.login("alice")
    assert s.status is SessionStatus.RENEW and s.user_id == "alice" and s.user_changed  # type: ignore[comparison-overlap]  # login changes status; mypy keeps it narrowed
    s.logout()
    assert s.status is SessionStatus.INVALIDATED and dict(s) == {} and s.user_id is None


def test_repr_never_shows_values_and_pickle_is_refused(new: Session) -> None:
    new["password"] = "hunter2"
    assert "hunter2" not in repr(new) and "password" in repr(new)
    with pytest.raises(TypeError, match="never pickles"):
        pickle.dumps(new)
    with pytest.raises(TypeError):
        copy.deepcopy(new)


def test_accessed_tracks_reads(new: Session) -> None:
    assert not new.accessed
    new.get("x")
    assert new.accessed


def test_user_id_must_be_a_string(new: Session) -> None:
    with pytest.raises(TypeError):
        new.user_id = 42  # type: ignore[assignment]
    new.user_id = "bob"
    new.user_id = None


# ------------------------------------------------- values JSON cannot hold faithfully
NAN = float("nan")
INF = float("inf")
SURROGATE = "\ud800"


@pytest.mark.parametrize(
    "value",
    [
        NAN,
        INF,
        -INF,
        {"a": [1, {"b": NAN}]},
        [0.5, (INF,)],
        "x" + SURROGATE,
        ["ok", {"k" + SURROGATE: 1}],
        {"deep": [{"deeper": ["\udfff"]}]},
    ],
    ids=["nan", "inf", "-inf", "nested-nan", "tuple-inf", "str", "nested-key", "nested-str"],
)
def test_nan_infinity_and_lone_surrogates_are_refused_at_the_assignment(
    new: Session, value: object
) -> None:
    """orjson alone writes NaN / infinities as ``null`` (the value silently changes) and
    refuses lone surrogates: both are a TypeError naming the key, on the assigning line."""
    with pytest.raises(TypeError, match="'bad'"):
        new["bad"] = value
    with pytest.raises(TypeError, match="'bad'"):
        new.update(bad=value)
    with pytest.raises(TypeError, match="'bad'"):
        new.setdefault("bad", value)
    assert "bad" not in dict.keys(new) and not new.pending_changes()


def test_a_key_with_a_lone_surrogate_is_refused_at_the_assignment(new: Session) -> None:
    """Such a key used to be accepted and to fail only at save (a 500)."""
    key = "cart" + SURROGATE
    for assign in (
        lambda: new.__setitem__(key, 1),
        lambda: new.update({key: 1}),
        lambda: new.setdefault(key, 1),
        lambda: new.incr(key),
    ):
        with pytest.raises(TypeError, match=r"'cart\\ud800'"):
            assign()
    assert not dict.keys(new) and not new.pending_changes()


def test_refused_values_never_reach_redis_and_the_save_still_works(stickless_url: str) -> None:
    """Against a real server: what was refused is not stored, what was accepted round-trips
    exactly (before the fix NaN came back as None and a surrogate key made save raise), and
    a NaN slipped in by an in-place change fails the save cleanly instead of becoming null."""
    from stickless import SessionStore

    store = SessionStore.from_url(stickless_url)
    try:
        s = store.new()
        for key, value in (("score", NAN), ("k" + SURROGATE, 1), ("name", "a" + SURROGATE)):
            with pytest.raises(TypeError):
                s[key] = value
        s["score"] = 0.5
        s["big"] = 1e308
        s["cart"] = ["apple"]
        assert store.save(s).outcome == "saved"
        again = store.load(s.token)
        assert again is not None
        assert dict(again) == {"score": 0.5, "big": 1e308, "cart": ["apple"]}

        again["cart"].append(NAN)  # in place: no assignment to refuse it at
        with pytest.raises(TypeError, match="NaN"):
            store.save(again)
        reloaded = store.load(s.token)
        assert reloaded is not None and reloaded["cart"] == ["apple"]
    finally:
        store.close()


@pytest.mark.parametrize(
    "read",
    [
        lambda s: "user" in s,
        len,
        lambda s: list(iter(s)),
        lambda s: s.keys(),
        lambda s: s.values(),
        lambda s: s.items(),
        lambda s: s.get("user"),
        lambda s: s["user"],
    ],
    ids=["contains", "len", "iter", "keys", "values", "items", "get", "getitem"],
)
def test_every_read_records_access(read: object) -> None:
    """A page that depends on any read of the session must get ``Vary: Cookie``."""
    s = loaded({"user": "alice"})
    assert not s.accessed
    read(s)  # type: ignore[operator]
    assert s.accessed


def test_repr_is_not_an_access() -> None:
    s = loaded({"user": "alice"})
    repr(s)
    assert not s.accessed


def test_identity_change_is_detected_only_for_a_different_value() -> None:
    s = loaded({"user": "alice", "theme": "dark"})
    s["theme"] = "light"
    s["user"] = "alice"
    assert not s.identity_changed and not s.renew_pending
    s["user"] = "bob"
    assert s.identity_changed and s.renew_pending


def test_an_increment_is_an_identity_change_when_it_changes_or_creates_the_key() -> None:
    """``incr`` of an identity key renews, like a set of a new value: by 0 only where it
    creates the key (the save's ``HINCRBY`` by 0 writes a 0 that was not there)."""
    s = loaded({"logged_in": 1})
    s.incr("logged_in", 0)
    assert not s.identity_changed
    s.incr("user_id", 0)
    assert s.identity_changed and s.renew_pending
    t = loaded({"logged_in": 1})
    t.incr("logged_in")
    assert t.identity_changed


def test_user_id_must_be_printable_unicode(new: Session) -> None:
    with pytest.raises(ValueError, match="surrogate"):
        new.user_id = "\ud800"
    with pytest.raises(ValueError, match="control"):
        new.user_id = "a\x1b[2J"


@pytest.mark.parametrize("amount", [2**63, -(2**63) - 1])
def test_incr_outside_int64_is_refused_at_the_call(new: Session, amount: int) -> None:
    with pytest.raises(ValueError, match="64-bit"):
        new.incr("n", amount)
    assert "n" not in new


def test_incr_result_outside_int64_is_refused() -> None:
    s = loaded({"n": 2**63 - 1})
    with pytest.raises(ValueError, match="64-bit"):
        s.incr("n")
    assert s["n"] == 2**63 - 1
