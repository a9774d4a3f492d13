"""Migration from Flask-Session (>= 0.7, its Redis backend) to ``Stickless(app)``.

The old sessions are written by the real Flask-Session (the installed 0.8) through Flask's
test client, with Flask-Login logging the user in; then the same app configuration runs
with ``Stickless(app)`` instead of ``Session(app)``, on the same Valkey. Proved here: the
old session's data (values of every msgpack / JSON type) and login survive the switch,
under a new stickless token; the old key lives only the grace; parallel requests with the
old cookie stay logged in; a pickle planted in the old store is never executed and gives
a fresh session; the settings' log line says what they map to and never shows a secret.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import flask
import flask_login
import flask_session  # type: ignore[import-untyped]  # Flask-Session ships no types
import pytest
import redis

from migrate_helpers import PROTOCOLS, assert_live, assert_nothing_secret_logged, planted
from stickless import tokens
from stickless.errors import ConfigurationError
from stickless.flask import Stickless
from stickless.migrate import FlaskSessionRedis
from stickless.web.migrate.flask_session import from_flask_config

SECRET = "the app's SECRET_KEY"
WHEN = datetime(2024, 3, 18, 12, 30, tzinfo=UTC)

AppFactory = Callable[..., flask.Flask]


class User(flask_login.UserMixin):  # type: ignore[misc]  # flask_login has no types
    def __init__(self, user_id: str) -> None:
        self.id = user_id


def add_routes(app: flask.Flask) -> None:
    """The app both before and after the switch (only the session backend changes)."""
    manager = flask_login.LoginManager(app)
    manager.user_loader(User)

    @app.post("/login/<user>")
    def login(user: str) -> str:
        flask_login.login_user(User(user))
        flask.session["cart"] = ["apple", "pear"]
        flask.session["when"] = WHEN
        flask.session["raw"] = b"\x00\xff"
        flask.session["n"] = 3
        return "logged in"

    @app.get("/whoami")
    def whoami() -> Any:
        user = flask_login.current_user
        return flask.jsonify(user=user.id if user.is_authenticated else None)

    @app.get("/data")
    def data() -> Any:
        """What the app sees: every key, as the Python value it gets (type and value)."""
        session = flask.session
        return flask.jsonify(
            values={key: repr(session[key]) for key in sorted(session)},
            permanent=session.permanent,
        )


@pytest.fixture
def old_redis(stickless_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(stickless_url)
    yield client
    client.close()


@pytest.fixture
def make_app(stickless_url: str, old_redis: redis.Redis) -> Iterator[AppFactory]:
    """``make_app(flask_session=True)``: the old app (Flask-Session); else the new one
    (Stickless) with the same SESSION_* settings left in app.config."""
    apps: list[flask.Flask] = []

    def build(*, old: bool = False, **config: Any) -> flask.Flask:
        app = flask.Flask(f"app{len(apps)}")
        app.config.update(
            TESTING=True,
            SECRET_KEY=SECRET,
            SESSION_TYPE="redis",
            SESSION_REDIS=old_redis,
            STICKLESS_URL=stickless_url,
        )
        app.config.update(config)
        if old:
            with (
                pytest.warns(DeprecationWarning)
                if config.get("SESSION_USE_SIGNER")
                else (contextlib.nullcontext())
            ):
                flask_session.Session(app)
        else:
            Stickless(app)
        add_routes(app)
        apps.append(app)
        return app

    yield build
    for app in apps:
        state = app.extensions.get("stickless")
        if state is not None:
            state.store.close()


class Old:
    """A user logged in on the Flask-Session app."""

    def __init__(self, make_app: AppFactory, **config: Any) -> None:
        client = make_app(old=True, **config).test_client()
        assert client.post("/login/alice").status_code == 200
        assert client.get("/whoami").json == {"user": "alice"}
        self.view: Any = client.get("/data").json
        """What the old app showed of the session."""
        cookie = client.get_cookie("session")
        assert cookie is not None
        self.cookie: str = cookie.value
        sid = self.cookie.partition(".")[0] if config.get("SESSION_USE_SIGNER") else self.cookie
        self.key: str = config.get("SESSION_KEY_PREFIX", "session:") + sid


def old_login(make_app: AppFactory, **config: Any) -> tuple[str, str]:
    """Log alice in on the Flask-Session app: (the cookie value, the Redis key)."""
    old = Old(make_app, **config)
    return old.cookie, old.key


def with_cookie(app: flask.Flask, value: str) -> Any:
    client = app.test_client()
    client.set_cookie("session", value)
    return client


def data_of(client: Any) -> Any:
    """What ``/data`` shows."""
    body = client.get("/data").json
    assert body is not None
    return body


def stickless_token(client: Any) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return str(cookie.value)


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({}, id="msgpack-unsigned"),
        pytest.param(
            {"SESSION_SERIALIZATION_FORMAT": "json", "SESSION_USE_SIGNER": True},
            id="json-signed",
        ),
        pytest.param({"SESSION_KEY_PREFIX": "myapp:"}, id="msgpack-prefix"),
    ],
)
def test_users_stay_logged_in_across_the_switch(
    make_app: AppFactory,
    old_redis: redis.Redis,
    settings: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    old = Old(make_app, **settings)
    old_cookie, old_key = old.cookie, old.key
    assert set(old.view["values"]) >= {"_user_id", "_fresh", "_id", "cart", "when", "raw", "n"}
    stored = old_redis.get(old_key)
    assert isinstance(stored, bytes)
    if settings.get("SESSION_SERIALIZATION_FORMAT") == "json":
        assert stored.startswith(b"{")  # what Flask-Session wrote: JSON
    else:
        assert stored[0] & 0xF0 == 0x80  # a msgpack map
    assert old_redis.ttl(old_key) > 3600

    caplog.set_level(logging.INFO, logger="stickless")
    app = make_app(**settings)
    client = with_cookie(app, old_cookie)
    assert client.get("/whoami").json == {"user": "alice"}  # still logged in
    new_token = stickless_token(client)
    assert new_token != old_cookie
    assert tokens.TokenCodec(None).parse(new_token.rsplit(".", 1)[0]) is not None  # ours
    # the app sees what it saw before: every key, same types, same values
    assert client.get("/data").json == old.view
    assert old.view["permanent"] is True  # Flask-Session's SESSION_PERMANENT default
    if "SESSION_SERIALIZATION_FORMAT" not in settings:  # msgpack keeps these types
        assert old.view["values"]["when"] == repr(WHEN)
        assert old.view["values"]["raw"] == repr(b"\x00\xff")
    # the old key is retired: it lives the grace (60 s), not PERMANENT_SESSION_LIFETIME
    assert 0 < old_redis.pttl(old_key) <= 60_000
    # a request the browser sent in parallel with the old cookie still finds alice
    assert with_cookie(app, old_cookie).get("/whoami").json == {"user": "alice"}
    assert 0 < old_redis.pttl(old_key) <= 60_000  # not extended by the second use

    assert any("migrated from Flask-Session" in r.getMessage() for r in caplog.records)
    assert_nothing_secret_logged(caplog, old_cookie, old_key, new_token, "apple", SECRET)


def test_the_old_session_dies_after_the_grace(make_app: AppFactory, old_redis: redis.Redis) -> None:
    old_cookie, old_key = old_login(make_app)
    app = make_app(STICKLESS_MIGRATE_FROM=FlaskSessionRedis(client=old_redis, grace=1))
    client = with_cookie(app, old_cookie)
    assert client.get("/whoami").json == {"user": "alice"}
    time.sleep(1.2)
    assert old_redis.exists(old_key) == 0  # moved, not copied
    assert client.get("/whoami").json == {"user": "alice"}  # the new session lives on
    replay = with_cookie(app, old_cookie)
    assert replay.get("/whoami").json == {"user": None}  # a replayed old cookie is worthless


def test_logging_out_after_the_switch_ends_the_migrated_session(
    make_app: AppFactory, old_redis: redis.Redis
) -> None:
    old_cookie, _ = old_login(make_app)
    app = make_app(STICKLESS_MIGRATE_FROM=FlaskSessionRedis(client=old_redis, grace=1))

    @app.post("/logout")
    def logout() -> str:
        flask_login.logout_user()
        flask.session.clear()
        return "bye"

    client = with_cookie(app, old_cookie)
    assert client.get("/whoami").json == {"user": "alice"}
    client.post("/logout")
    assert client.get("/whoami").json == {"user": None}
    time.sleep(1.2)
    assert with_cookie(app, old_cookie).get("/whoami").json == {"user": None}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_planted_pickle_is_never_executed(
    make_app: AppFactory, old_redis: redis.Redis, tmp_path: Path, protocol: int
) -> None:
    old_cookie, old_key = old_login(make_app)
    marker = tmp_path / "pwned"
    payload = planted(marker, protocol)
    old_redis.set(old_key, payload, ex=3600)

    app = make_app()
    client = with_cookie(app, old_cookie)
    assert client.get("/whoami").json == {"user": None}  # no session: a fresh one
    assert not {"_user_id", "cart"} & set(data_of(client)["values"])
    assert not marker.exists()
    assert old_redis.get(old_key) == payload  # left alone (Flask-Session < 0.7 may still run)
    assert_live(tmp_path, protocol)


@pytest.mark.parametrize(
    "stored",
    [b"\x80", b"[1, 2]", b"\x92\x01\x02", b"not json", b"\xc1", b'{"a": 1} trailing'],
    ids=["fixmap-truncated", "json-list", "msgpack-array", "text", "msgpack-never", "junk"],
)
def test_undecodable_values_are_no_session(
    make_app: AppFactory, old_redis: redis.Redis, stored: bytes
) -> None:
    old_cookie, old_key = old_login(make_app)
    old_redis.set(old_key, stored, ex=3600)
    client = with_cookie(make_app(), old_cookie)
    assert client.get("/whoami").json == {"user": None}
    assert old_redis.get(old_key) == stored


def test_forged_and_unknown_cookies_read_nothing(
    make_app: AppFactory, old_redis: redis.Redis
) -> None:
    old_cookie, _ = old_login(make_app, SESSION_USE_SIGNER=True)
    app = make_app(SESSION_USE_SIGNER=True)
    sid, _, signature = old_cookie.partition(".")
    for value in (sid, f"{sid}.{signature[:-2]}xx", "x" * 300, "unknown-sid"):
        assert with_cookie(app, value).get("/whoami").json == {"user": None}
    # the signed cookie still works after all that
    assert with_cookie(app, old_cookie).get("/whoami").json == {"user": "alice"}


def test_a_stickless_token_never_reaches_the_old_store(
    make_app: AppFactory, old_redis: redis.Redis
) -> None:
    app = make_app()
    client = app.test_client()
    client.post("/login/bob")
    token = stickless_token(client)
    reads: list[str] = []
    original = old_redis.get

    def get(key: str) -> Any:
        reads.append(key)
        return original(key)

    old_redis.get = get  # type: ignore[method-assign,assignment]
    try:
        assert with_cookie(app, token).get("/whoami").json == {"user": "bob"}
        app.extensions["stickless"].store.destroy(token)
        assert with_cookie(app, token).get("/whoami").json == {"user": None}  # ours, dead
    finally:
        del old_redis.get
    assert reads == []


def test_new_sessions_follow_session_permanent(make_app: AppFactory) -> None:
    permanent = make_app().test_client()  # SESSION_TYPE set: Flask-Session's default True
    permanent.post("/login/carol")
    cookie = permanent.get_cookie("session")
    assert cookie is not None and cookie.max_age is not None
    assert data_of(permanent)["permanent"] is True

    browser = make_app(SESSION_PERMANENT=False).test_client()
    browser.post("/login/dave")
    cookie = browser.get_cookie("session")
    assert cookie is not None and cookie.max_age is None
    assert data_of(browser)["permanent"] is False


def test_the_settings_log_one_line(make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="stickless")
    make_app(SESSION_USE_SIGNER=True, SESSION_KEY_PREFIX="myapp:")
    (line,) = [r.getMessage() for r in caplog.records if "Flask-Session" in r.getMessage()]
    assert "SESSION_TYPE='redis'" in line and "'myapp:'" in line and "signed ids" in line
    assert "SESSION_PERMANENT=True" in line and SECRET not in line


def test_setting_combinations() -> None:
    assert from_flask_config({}).source is None and not from_flask_config({}).summary
    assert (
        from_flask_config({"SESSION_TYPE": "redis", "STICKLESS_MIGRATE_FROM": False}).source is None
    )
    other = from_flask_config({"SESSION_TYPE": "filesystem"})
    assert other.source is None and "not migrated" in other.summary and other.permanent
    chosen = from_flask_config({"STICKLESS_MIGRATE_FROM": "flask-session"})
    assert isinstance(chosen.source, FlaskSessionRedis) and not chosen.permanent
    with pytest.raises(ConfigurationError, match="STICKLESS_MIGRATE_FROM"):
        from_flask_config({"STICKLESS_MIGRATE_FROM": "flask_sessions"})
    with pytest.raises(ConfigurationError, match="SECRET_KEY"):
        from_flask_config({"SESSION_TYPE": "redis", "SESSION_USE_SIGNER": True})
    with pytest.raises(ConfigurationError, match="SESSION_REDIS"):
        from_flask_config({"SESSION_TYPE": "redis", "SESSION_REDIS": "redis://x"})


def test_the_old_store_down_is_a_503(make_app: AppFactory, old_redis: redis.Redis) -> None:
    old_cookie, _ = old_login(make_app)
    dead = redis.Redis(port=1, socket_connect_timeout=0.2)  # nothing listens there
    app = make_app(STICKLESS_MIGRATE_FROM=FlaskSessionRedis(client=dead))
    response = with_cookie(app, old_cookie).get("/whoami")
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert not response.headers.getlist("Set-Cookie")  # the old cookie stays for the retry
    fail_open = make_app(
        STICKLESS_MIGRATE_FROM=FlaskSessionRedis(client=dead), STICKLESS_FAIL_OPEN=True
    )
    response = with_cookie(fail_open, old_cookie).get("/whoami")
    assert response.status_code == 200 and response.json == {"user": None}
    assert not response.headers.getlist("Set-Cookie")
    # and once it is back, alice is still logged in
    assert with_cookie(make_app(), old_cookie).get("/whoami").json == {"user": "alice"}


def test_stickless_down_with_flask_login_is_a_503(make_app: AppFactory) -> None:
    """Flask-Login's after_request hook reads the session after the 503 was chosen: it gets
    an empty stand-in, not the failure again (which would turn the 503 into a 500)."""
    app = make_app(STICKLESS_URL="redis://127.0.0.1:1/0", STICKLESS_MIGRATE_FROM=False)
    client = app.test_client()
    store = app.extensions["stickless"].store
    client.set_cookie("session", store.plan.codec.dump(tokens.new_raw_token()))  # one of ours
    response = client.get("/whoami")  # its load fails
    assert response.status_code == 503
    assert not response.headers.getlist("Set-Cookie")
