"""The Django session engine (``SESSION_ENGINE = "stickless.django"``) through Django's test
Client, against a real Valkey: round trips, auth login / logout, key cycling, hostile cookies,
the store going down and coming back."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

sys.path.insert(0, str(Path(__file__).parent / "apps"))

from django_project import testing
from django_project.testing import configure

configure()

from django.contrib.auth.models import User  # noqa: E402
from django.test import AsyncClient, Client, override_settings  # noqa: E402

from stickless import SessionConfig, SessionStatus  # noqa: E402
from stickless.django import SessionStore, get_store  # noqa: E402
from stickless.embedded import start_standalone  # noqa: E402
from stickless.web.policy import FailurePolicy  # noqa: E402

COOKIE = "sessionid"


@pytest.fixture(scope="module")
def alice() -> User:
    return testing.user("alice", "wonderland")


def warm_up_scripts() -> None:
    """Run every script once, so that no counted round trip is a NOSCRIPT resend (the first
    use of a script on a server costs one extra round trip, see stickless.store.plan)."""
    store = get_store()
    session = store.new()
    session["warm"] = 1
    session.user_id = "warm-up"
    store.save(session)
    store.load(session.token)
    store.destroy(session.token)


@pytest.fixture
def url(stickless_url: str) -> Iterator[str]:
    with override_settings(STICKLESS_URL=stickless_url):
        warm_up_scripts()
        yield stickless_url


@contextlib.contextmanager
def batches() -> Iterator[list[Any]]:
    """Counts the round trips of the process's store: one ``send`` is one pipeline."""
    store = get_store()
    sent: list[Any] = []
    original = store.send

    def send(batch: Any) -> Any:
        sent.append(batch)
        return original(batch)

    store.send = send  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        del store.send


def token(client: Client) -> str:
    return client.cookies[COOKIE].value  # type: ignore[no-any-return]  # django has no types


def session_keys(url: str) -> list[bytes]:
    client = redis.Redis.from_url(url)
    try:
        return sorted(client.scan_iter("stickless:s:*"))
    finally:
        client.close()


# --------------------------------------------------------------------------- round trips
def test_untouched_session_costs_nothing(url: str) -> None:
    client = Client()
    with batches() as sent:
        assert client.get("/plain").status_code == 200
    assert sent == []
    assert COOKIE not in client.cookies
    client.get("/set", {"key": "a", "value": "1"})
    with batches() as sent:  # a cookie, but a view that does not read the session
        response = client.get("/plain")
    assert sent == []
    assert "Cookie" not in response.get("Vary", "")


def test_read_is_one_round_trip_write_is_two(url: str) -> None:
    client = Client()
    with batches() as sent:  # a brand-new session: the save only
        client.get("/set", {"key": "a", "value": "1"})
    assert len(sent) == 1
    with batches() as sent:
        assert client.get("/read").json() == {"a": "1"}
    assert len(sent) == 1
    with batches() as sent:
        client.get("/set", {"key": "b", "value": "2"})
    assert len(sent) == 2
    assert client.get("/read").json() == {"a": "1", "b": "2"}


def test_only_the_delta_is_written(url: str) -> None:
    client = Client()
    client.get("/set", {"key": "a", "value": "1"})
    first = SessionStore(token(client))
    first.load()  # request 1 loads...
    second = SessionStore(token(client))
    second["d"] = "4"  # ...request 2 writes "d"...
    second.save()
    first["e"] = "5"  # ...then request 1 writes "e": a whole-blob rewrite would drop "d"
    first.save()
    assert client.get("/read").json() == {"a": "1", "d": "4", "e": "5"}


def test_incr_is_atomic_and_visible_after_save(url: str) -> None:
    client = Client()
    assert [client.get("/incr").json()["value"] for _ in range(3)] == [1, 2, 3]
    other = SessionStore(token(client))
    other.stickless.incr("n", 10)
    other.save()
    assert client.get("/incr").json()["value"] == 14
    assert client.get("/read").json() == {"n": 14}


def test_in_place_change_of_a_nested_value_is_saved(url: str) -> None:
    client = Client()
    client.get("/append", {"item": "apple"})
    assert client.get("/append", {"item": "pear"}).json() == {"cart": ["apple", "pear"]}
    assert client.get("/read").json() == {"cart": ["apple", "pear"]}


def test_values_must_be_json(url: str) -> None:
    with pytest.raises(TypeError, match=r"session\['when'\]"):
        Client().get("/bad-value")


def test_async_session_api(url: str) -> None:
    async def run() -> list[Any]:
        client = AsyncClient()
        return [(await client.get("/async-incr")).json() for _ in range(3)]

    assert asyncio.run(run()) == [
        {"visits": 1, "n": 1},
        {"visits": 2, "n": 2},
        {"visits": 3, "n": 3},
    ]


# ---------------------------------------------------------------------- key life cycle
def test_cycle_key_renews_the_token(url: str) -> None:
    client = Client()
    client.get("/set", {"key": "cart", "value": "apple"})
    old = token(client)
    with batches() as sent:
        client.get("/cycle")
    assert len(sent) == 2  # load + renew
    new = token(client)
    assert new != old
    assert client.get("/read").json() == {"cart": "apple"}
    stale = Client()
    stale.cookies[COOKIE] = old
    assert stale.get("/read").json() == {}
    assert len(session_keys(url)) == 1


def test_auth_login_cycles_and_binds_logout_destroys(url: str, alice: User) -> None:
    client = Client()
    client.get("/set", {"key": "cart", "value": "apple"})
    anonymous = token(client)
    assert client.post("/login", {"username": "alice", "password": "wonderland"}).json() == {
        "ok": True
    }
    logged_in = token(client)
    assert logged_in != anonymous
    assert client.get("/whoami").json() == {"user": "alice"}
    assert client.get("/read").json()["cart"] == "apple"  # data survives login
    thief = Client()
    thief.cookies[COOKIE] = anonymous  # session fixation: the old token is dead
    assert thief.get("/whoami").json() == {"user": None}

    infos = get_store().sessions_for(str(alice.pk))
    assert len(infos) == 1
    assert SessionStore(logged_in).stickless.user_id == str(alice.pk)

    client.get("/logout")
    assert get_store().sessions_for(str(alice.pk)) == []
    replay = Client()
    replay.cookies[COOKIE] = logged_in
    assert replay.get("/whoami").json() == {"user": None}
    assert session_keys(url) == []


@pytest.mark.parametrize("how", ["flush", "delete"])
def test_the_pre_login_key_cannot_destroy_the_logged_in_session(
    url: str, alice: User, how: str
) -> None:
    """No race needed: after the victim's login, ``SessionStore(old_key).flush()`` or
    ``.delete(old_key)`` touches nothing (the old key lost all power at the login)."""
    client = Client()
    client.get("/set", {"key": "cart", "value": "apple"})
    planted = token(client)
    client.post("/login", {"username": "alice", "password": "wonderland"})
    assert token(client) != planted
    if how == "flush":
        SessionStore(planted).flush()
    else:
        SessionStore().delete(planted)
    assert client.get("/whoami").json() == {"user": "alice"}
    assert len(get_store().sessions_for(str(alice.pk))) == 1


def test_after_cycle_key_the_old_key_has_no_power(url: str) -> None:
    """As with Django's own engines (which delete the old key), the key ``cycle_key()``
    replaced can neither destroy nor write into the session."""
    s = SessionStore()
    s["cart"] = 1
    s.save()
    old = s.session_key
    in_flight = SessionStore(old)
    in_flight.load()
    s.cycle_key()
    assert s.session_key != old
    in_flight["member_id"] = "attacker"
    with contextlib.suppress(Exception):  # UpdateError: the session is gone for that key
        in_flight.save()
    SessionStore().delete(old)
    assert SessionStore(s.session_key).load() == {"cart": 1}


def test_login_on_a_fresh_session_is_one_write(url: str, alice: User) -> None:
    client = Client()
    with batches() as sent:
        client.post("/login", {"username": "alice", "password": "wonderland"})
    assert len(sent) == 1  # cycle_key on a new session writes nothing: the save creates it
    assert client.get("/whoami").json() == {"user": "alice"}


def test_revoke_user_logs_out_every_device(url: str, alice: User) -> None:
    phone, laptop = Client(), Client()
    for device in (phone, laptop):
        device.post("/login", {"username": "alice", "password": "wonderland"})
    assert len(get_store().sessions_for(str(alice.pk))) == 2
    assert get_store().revoke_user(str(alice.pk)) == 2
    assert phone.get("/whoami").json() == {"user": None}
    assert laptop.get("/whoami").json() == {"user": None}


def test_flush_deletes_the_cookie(url: str) -> None:
    client = Client()
    client.get("/set", {"key": "a", "value": "1"})
    response = client.get("/flush")
    assert response.cookies[COOKIE].value == ""
    assert session_keys(url) == []


def test_clear_keeps_the_session_and_empties_it(url: str) -> None:
    client = Client()
    client.get("/set", {"key": "a", "value": "1"})
    before = token(client)
    with batches() as sent:
        client.get("/clear")  # clear() does not load: the save loads, then deletes
    assert len(sent) == 2
    assert token(client) == before
    assert client.get("/read").json() == {}
    assert len(session_keys(url)) == 1


def test_custom_expiry(url: str) -> None:
    client = Client()
    client.get("/expire", {"delta": "-1"})  # a deadline in the past: dead at once
    assert client.get("/read").json() == {}
    assert session_keys(url) == []  # and destroyed when found
    client = Client()
    client.get("/expire", {"seconds": "2"})  # 2 s after the last save
    assert client.get("/read").json() == {"marker": "x", "_session_expiry": 2}
    time.sleep(2.05)
    assert client.get("/read").json() == {}


def test_session_deleted_during_the_request_is_not_resurrected(url: str) -> None:
    """Django's ``test_session_update_error_redirect`` uses a database session; the same
    contract here: a save into a session destroyed meanwhile raises UpdateError, which
    Django's middleware answers with 400 (SessionInterrupted), and nothing is written."""
    client = Client()
    client.get("/set", {"key": "a", "value": "1"})
    response = client.get("/deleted-meanwhile")
    assert response.status_code == 400
    assert session_keys(url) == []
    session = SessionStore(token(client))
    assert session.load() == {}
    assert session.session_key is None


def test_emptied_session_is_still_saved(url: str) -> None:
    """Django's ``test_empty_session_saved`` reads its database model; the same here."""
    client = Client()
    client.get("/set", {"key": "foo", "value": "bar"})
    key = token(client)
    session = SessionStore(key)
    del session["foo"]
    session.save()
    assert session.session_key == key
    assert SessionStore(key).load() == {}
    assert SessionStore(key).exists(key)


@override_settings(SESSION_SAVE_EVERY_REQUEST=True)  # type: ignore[untyped-decorator]
def test_save_every_request(url: str) -> None:
    client = Client()
    client.get("/set", {"key": "a", "value": "1"})
    with batches() as sent:  # untouched, but saved: the load refreshes the TTL
        response = client.get("/plain")
    assert len(sent) == 1
    assert response.cookies[COOKIE].value == token(client)
    stale = Client()
    stale.cookies[COOKIE] = SessionStore().stickless.token  # well-formed, unknown
    response = stale.get("/plain")
    assert response.status_code == 200
    assert response.cookies[COOKIE].value == ""  # deleted, not saved into
    assert len(session_keys(url)) == 1


# ------------------------------------------------------------------------ hostile input
HOSTILE = [
    "x" * 5000,
    "../../../../etc/passwd",
    "None",
    "' OR 1=1 --",
    "AAAAAAAAAAA." + "B" * 43,  # well-formed, unknown
    "AAAAAAAAAAA." + "B" * 42 + "!",
    "é" * 60,
    "%00%00%00%00%00%00%00%00",
    '"quoted.value.here"',
]


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_cookies_get_a_fresh_session(url: str, value: str) -> None:
    client = Client()
    response = client.get("/read", HTTP_COOKIE=f"{COOKIE}={value}")
    assert response.status_code == 200
    assert response.json() == {}
    response = client.get("/set", {"key": "a", "value": "1"}, HTTP_COOKIE=f"{COOKIE}={value}")
    assert response.status_code == 200
    fresh = response.cookies[COOKIE].value
    assert fresh != value
    assert SessionStore(fresh).load() == {"a": "1"}


def test_a_real_token_altered_is_unknown(url: str) -> None:
    client = Client()
    client.get("/set", {"key": "a", "value": "1"})
    real = token(client)
    forged = real[:-1] + ("A" if real[-1] != "A" else "B")
    assert Client().get("/read", HTTP_COOKIE=f"{COOKIE}={forged}").json() == {}


def test_signed_tokens(stickless_url: str) -> None:
    config = SessionConfig(secret_key="s3cret", idle_timeout=60)
    with override_settings(STICKLESS_URL=stickless_url, STICKLESS_CONFIG=config):
        client = Client()
        client.get("/set", {"key": "a", "value": "1"})
        assert token(client).count(".") == 2
        assert client.get("/read").json() == {"a": "1"}
        unsigned = token(client).rsplit(".", 1)[0]
        with batches() as sent:  # rejected without a round trip
            assert Client().get("/read", HTTP_COOKIE=f"{COOKIE}={unsigned}").json() == {}
        assert sent == []


# ------------------------------------------------------------------- store unavailable
def test_store_down_answers_503_and_recovers_on_the_same_port() -> None:
    valkey = start_standalone()
    port = valkey.node.port
    try:
        with override_settings(STICKLESS_URL=valkey.url):
            client = Client()
            client.get("/set", {"key": "a", "value": "1"})
            valkey.stop()

            started = time.monotonic()
            response = client.get("/read")  # the load fails in the view
            assert time.monotonic() - started < 5
            assert response.status_code == 503
            assert response["Retry-After"] == "1"
            assert response["Content-Type"].startswith("text/plain")
            assert b"unavailable" in response.content

            response = Client().get("/set", {"key": "a", "value": "1"})  # the save fails
            assert response.status_code == 503
            assert COOKIE not in response.cookies
            assert Client().get("/plain").status_code == 200  # no session, no problem

            valkey = start_standalone(port=port)
            assert client.get("/read").json() == {}  # the data died with the server
            client.get("/set", {"key": "b", "value": "2"})
            assert client.get("/read").json() == {"b": "2"}
    finally:
        valkey.stop()


def test_fail_open_serves_an_unsaved_empty_session() -> None:
    valkey = start_standalone()
    policy = FailurePolicy(fail_open=True)
    try:
        with override_settings(STICKLESS_URL=valkey.url, STICKLESS_FAILURE_POLICY=policy):
            client = Client()
            client.get("/set", {"key": "a", "value": "1"})
            before = token(client)
            valkey.stop()
            assert client.get("/read").json() == {}
            response = client.get("/set", {"key": "b", "value": "2"})
            assert response.status_code == 200
            assert token(client) == before  # the cookie is left alone
    finally:
        valkey.stop()


# --------------------------------------------------------------------------- the engine
def test_engine_module_and_settings(url: str) -> None:
    engine = importlib.import_module("stickless.django")
    assert issubclass(
        engine.SessionStore,
        importlib.import_module("django.contrib.sessions.backends.base").SessionBase,
    )
    assert importlib.import_module("django").__file__ != engine.__file__
    store = get_store()
    assert store.config.idle_timeout == 1209600  # SESSION_COOKIE_AGE
    with override_settings(SESSION_COOKIE_AGE=120):
        assert get_store().config.idle_timeout == 120
        assert get_store().config.absolute_timeout == 24 * 3600
    session = SessionStore()
    session["a"] = 1
    session.save()
    assert session.stickless.status is SessionStatus.LOADED
    assert SessionStore.clear_expired() is None


def test_url_from_environment(stickless_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings without ``STICKLESS_URL``: the environment's is used, as by every adapter."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    monkeypatch.setenv("STICKLESS_URL", stickless_url)
    with override_settings(STICKLESS_URL=None):  # rebuilds the stores, now and after
        del settings.STICKLESS_URL
        client = Client()
        client.get("/set", {"key": "a", "value": "1"})
        assert client.get("/read").json() == {"a": "1"}
        assert session_keys(stickless_url)
    monkeypatch.delenv("STICKLESS_URL")
    with override_settings(STICKLESS_URL=None), pytest.raises(ImproperlyConfigured, match="URL"):
        get_store()


@override_settings(STICKLESS_MIGRATE_FROM="django.contrib.sessions.backends.cache")  # type: ignore[untyped-decorator]
def test_migration_from_the_cache_engine(
    url: str, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.contrib.sessions.backends.cache import SessionStore as CacheSession

    from stickless.web import django_migrate

    monkeypatch.setattr(django_migrate, "LEGACY_GRACE", 1)

    old = CacheSession()
    old.update(
        {
            "cart": ["apple"],
            "_auth_user_id": str(alice.pk),
            "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
            "_auth_user_hash": alice.get_session_auth_hash(),
        }
    )
    old.save()
    legacy_key = old.session_key
    client = Client()
    client.cookies[COOKIE] = legacy_key
    assert client.get("/whoami").json() == {"user": "alice"}  # still logged in
    new = token(client)
    assert "." in new
    assert client.get("/read").json()["cart"] == ["apple"]
    assert len(get_store().sessions_for(str(alice.pk))) == 1  # bound to the user
    # a request the browser sent in parallel with the old cookie still finds the user
    parallel = Client()
    parallel.cookies[COOKIE] = legacy_key
    assert parallel.get("/whoami").json() == {"user": "alice"}
    time.sleep(1.2)  # LEGACY_GRACE (1 s here): then the old key is dead
    assert not CacheSession().exists(legacy_key)  # moved, not copied
    replay = Client()
    replay.cookies[COOKIE] = legacy_key
    assert replay.get("/whoami").json() == {"user": None}


def test_stickless_accessor_login_logout_and_reserved_keys(url: str) -> None:
    session = SessionStore()
    session["a"] = 1
    session.save()
    anonymous = session.session_key
    session = SessionStore(anonymous)
    session.stickless.login("bob")  # renew + bind, applied by the save
    assert session.modified
    session.save()
    assert session.session_key not in (None, anonymous)
    assert SessionStore(anonymous).load() == {}
    assert SessionStore(session.session_key).load() == {"a": 1}
    assert len(get_store().sessions_for("bob")) == 1

    session = SessionStore(session.session_key)
    session.stickless.logout()
    session.save()
    assert session.session_key is None
    assert get_store().sessions_for("bob") == []
    assert session_keys(url) == []

    session = SessionStore()
    session["_stickless:mine"] = 1
    with pytest.raises(ValueError, match="reserved"):
        session.save()


def test_header_transport(url: str) -> None:
    """STICKLESS_HEADER: API clients carry the token in a header instead of a cookie."""
    with override_settings(STICKLESS_HEADER="X-Session-Token"):
        api = Client()
        first = api.get("/set", {"key": "via", "value": "header"})
        token = first.headers["X-Session-Token"]
        assert token and "X-Session-Token" in first.headers.get("Vary", "")
        fresh = Client()  # no cookie jar shared: only the header identifies the session
        read = fresh.get("/read", headers={"X-Session-Token": token})
        assert read.json() == {"via": "header"}
        assert "X-Session-Token" not in read.headers  # unchanged key: nothing to send
        cycled = fresh.get("/cycle", headers={"X-Session-Token": token})
        renewed = cycled.headers["X-Session-Token"]
        assert renewed and renewed != token
        assert fresh.get("/read", headers={"X-Session-Token": token}).json() == {}
        hostile = fresh.get("/read", headers={"X-Session-Token": "x" * 5000 + "\u00e9"})
        assert hostile.status_code == 200 and hostile.json() == {}
        gone = fresh.get("/flush", headers={"X-Session-Token": renewed})
        assert gone.headers["X-Session-Token"] == ""
