"""The Flask adapter: ``flask.session`` behaves as Flask's own session, stored in Valkey.

The first part ports the intent of Flask's own session tests (tests/test_basic.py in the
Flask repository); deliberate differences are asserted as such, with the reason. Then:
round trips (counted), the token transport, login / logout, configuration, a store that
goes down and comes back on the same port, hostile cookies.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import flask
import pytest
from markupsafe import Markup
from werkzeug.test import TestResponse

from helpers import takes_hsetex
from stickless import SessionConfig, SessionStore, tokens
from stickless.embedded import ServerBinary, start_standalone
from stickless.errors import ConfigurationError
from stickless.flask import (
    FlaskSession,
    Stickless,
    SticklessState,
    current_session,
    current_store,
)
from stickless.web.policy import FailurePolicy

AppFactory = Callable[..., flask.Flask]


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture
def make_app(stickless_url: str) -> Iterator[AppFactory]:
    """Build Flask apps on the test's (flushed) Valkey; their stores are closed after."""
    apps: list[flask.Flask] = []

    def build(
        url: str | None = None, *, store: SessionStore | None = None, **config: Any
    ) -> flask.Flask:
        app = flask.Flask(f"app{len(apps)}")
        app.config.update(TESTING=True, STICKLESS_URL=url or stickless_url, **config)
        Stickless(app, store=store)
        add_routes(app)
        apps.append(app)
        return app

    yield build
    for app in apps:
        with contextlib.suppress(Exception):
            state(app).store.close()


def state(app: flask.Flask) -> SticklessState:
    result = app.extensions["stickless"]
    assert isinstance(result, SticklessState)
    return result


def add_routes(app: flask.Flask) -> None:
    """Views most tests share."""

    @app.get("/nothing")
    def nothing() -> str:
        return "nothing"

    @app.get("/read/<key>")
    def read(key: str) -> Any:
        return flask.jsonify(value=flask.session.get(key))

    @app.post("/write/<key>/<value>")
    def write(key: str, value: str) -> str:
        flask.session[key] = value
        return "written"

    @app.post("/login/<user>")
    def login(user: str) -> str:
        flask.session.login(user)  # type: ignore[attr-defined]
        return "logged in"

    @app.post("/logout")
    def logout() -> str:
        flask.session.logout()  # type: ignore[attr-defined]
        return "logged out"

    @app.get("/whoami")
    def whoami() -> Any:
        return flask.jsonify(user=flask.session.user_id)  # type: ignore[attr-defined]


class Batches:
    """Counts the round trips a store makes (each ``send`` is one pipeline = one trip)."""

    def __init__(self, store: SessionStore) -> None:
        self.count = 0
        original = store.send

        def send(batch: Any) -> Any:
            self.count += 1
            return original(batch)

        store.send = send  # type: ignore[method-assign]

    @contextlib.contextmanager
    def exactly(self, expected: int) -> Iterator[None]:
        before = self.count
        yield
        assert self.count - before == expected, f"{self.count - before} round trips"


def set_cookie_headers(rv: TestResponse) -> list[str]:
    return rv.headers.getlist("Set-Cookie")


def cookie_token(client: Any, name: str = "session") -> str | None:
    cookie = client.get_cookie(name)
    return None if cookie is None else cookie.value


# ================================================ Flask's own session tests, ported
def test_session_set_get_and_flags(make_app: AppFactory) -> None:
    """Flask's test_session: values round-trip; ``accessed`` / ``modified`` as Flask sets
    them (a read is not a modification)."""
    app = make_app()

    @app.post("/set")
    def set_value() -> str:
        assert not flask.session.modified
        flask.session["value"] = flask.request.form["value"]
        assert flask.session.accessed
        assert flask.session.modified
        return "value set"

    @app.get("/get")
    def get_value() -> str:
        assert not flask.session.modified
        value = flask.session.get("value", "None")
        assert flask.session.accessed
        assert not flask.session.modified
        return str(value)

    client = app.test_client()
    assert client.post("/set", data={"value": "42"}).data == b"value set"
    assert client.get("/get").data == b"42"
    assert isinstance(app.session_interface, Stickless)


def test_default_cookie_is_a_secure_browser_session_cookie(make_app: AppFactory) -> None:
    rv = make_app().test_client().post("/write/a/1")
    (cookie,) = set_cookie_headers(rv)
    lowered = cookie.lower()
    assert "httponly" in lowered
    assert "samesite=lax" in lowered
    assert "path=/" in lowered
    assert "max-age" not in lowered  # session.permanent is False by default, as in Flask
    assert "expires" not in lowered
    assert "secure" not in lowered  # plain http
    assert "domain" not in lowered


def test_session_using_server_name(make_app: AppFactory) -> None:
    """Flask >= 2.3: SERVER_NAME does not set the cookie domain."""
    app = make_app(SERVER_NAME="example.com")
    rv = app.test_client().post("/write/a/1", "http://example.com/")
    cookie = rv.headers["set-cookie"].lower()
    assert "domain" not in cookie
    assert "httponly" in cookie


def test_session_using_server_name_port_and_path(make_app: AppFactory) -> None:
    app = make_app(SERVER_NAME="example.com:8080", APPLICATION_ROOT="/foo")
    rv = app.test_client().post("/write/a/1", "http://example.com:8080/foo")
    cookie = rv.headers["set-cookie"].lower()
    assert "path=/foo" in cookie
    assert "httponly" in cookie


def test_session_using_application_root(make_app: AppFactory) -> None:
    app = make_app(APPLICATION_ROOT="/bar")
    inner = app.wsgi_app

    def prefixed(environ: dict[str, Any], start_response: Any) -> Any:
        environ["SCRIPT_NAME"] = "/bar"
        return inner(environ, start_response)

    app.wsgi_app = prefixed  # type: ignore[method-assign]
    rv = app.test_client().post("/write/a/1", "http://example.com:8080/")
    assert "path=/bar" in rv.headers["set-cookie"].lower()


def test_session_using_session_settings(make_app: AppFactory) -> None:
    app = make_app(
        SERVER_NAME="www.example.com:8080",
        APPLICATION_ROOT="/test",
        SESSION_COOKIE_NAME="sid",
        SESSION_COOKIE_DOMAIN=".example.com",
        SESSION_COOKIE_HTTPONLY=False,
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PATH="/",
    )
    rv = app.test_client().post("/write/a/1", "http://www.example.com:8080/test/")
    cookie = rv.headers["set-cookie"].lower()
    assert cookie.startswith("sid=")
    assert "domain=example.com" in cookie  # leading dot stripped, as Werkzeug does
    assert "path=/;" in cookie
    assert "secure" in cookie
    assert "httponly" not in cookie
    assert "samesite=strict" in cookie


def test_session_cookie_samesite_values(make_app: AppFactory) -> None:
    app = make_app()
    client = app.test_client()
    app.config.update(SESSION_COOKIE_SAMESITE="invalid")
    with pytest.raises(ValueError):
        client.post("/write/a/1")
    for setting, expected in (("Strict", "samesite=strict"), ("Lax", "samesite=lax")):
        app.config.update(SESSION_COOKIE_SAMESITE=setting)
        rv = app.test_client().post("/write/a/1")
        assert expected in rv.headers["set-cookie"].lower()
    # Deliberate difference: Flask's default None omits SameSite; stickless keeps Lax.
    app.config.update(SESSION_COOKIE_SAMESITE=None)
    rv = app.test_client().post("/write/a/1")
    assert "samesite=lax" in rv.headers["set-cookie"].lower()
    # SameSite=None needs Secure (browsers drop it otherwise).
    app.config.update(SESSION_COOKIE_SAMESITE="None")
    rv = app.test_client().post("/write/a/1")
    assert "samesite=none" in rv.headers["set-cookie"].lower()
    assert "secure" in rv.headers["set-cookie"].lower()


def test_secure_on_https_and_partitioned(make_app: AppFactory) -> None:
    app = make_app()
    rv = app.test_client().post("/write/a/1", "https://example.com/")
    assert "secure" in rv.headers["set-cookie"].lower()
    app.config.update(SESSION_COOKIE_PARTITIONED=True)
    rv = app.test_client().post("/write/a/1")
    cookie = rv.headers["set-cookie"].lower()
    assert "partitioned" in cookie
    assert "secure" in cookie


def test_session_expiration(make_app: AppFactory) -> None:
    """Flask's test_session_expiration: a permanent session gets a persistent cookie that
    lives PERMANENT_SESSION_LIFETIME; a non-permanent one gets a browser-session cookie.
    (Stickless writes Max-Age, to the session's absolute deadline, instead of Expires.)"""
    app = make_app()
    permanent = True

    @app.get("/")
    def index() -> str:
        flask.session["test"] = 42
        flask.session.permanent = permanent
        return ""

    @app.get("/test")
    def test() -> str:
        return str(flask.session.permanent)

    client = app.test_client()
    rv = client.get("/")
    match = re.search(r"(?i)\bmax-age=(\d+)", rv.headers["set-cookie"])
    assert match is not None
    expected = app.permanent_session_lifetime.total_seconds()
    assert expected - 5 <= int(match.group(1)) <= expected
    assert client.get("/test").data == b"True"

    permanent = False
    rv = app.test_client().get("/")
    assert "set-cookie" in rv.headers
    assert not re.search(r"(?i)\b(max-age|expires)=", rv.headers["set-cookie"])


def test_permanent_change_reissues_the_cookie(make_app: AppFactory) -> None:
    """Switching ``permanent`` on a stored session applies its lifetime at save, so the
    cookie is sent again (same token) with the new lifetime; setting it to its current
    value writes nothing."""
    app = make_app()

    @app.post("/permanent/<flag>")
    def make_permanent(flag: str) -> str:
        flask.session.permanent = flag == "1"
        return ""

    client = app.test_client()
    client.post("/write/a/1")
    first = cookie_token(client)
    rv = client.post("/permanent/1")
    (cookie,) = set_cookie_headers(rv)
    assert "max-age=" in cookie.lower()
    assert cookie_token(client) == first  # a lifetime change needs no new token
    loaded = state(app).store.load(first)
    assert loaded is not None and loaded["a"] == "1"
    assert set_cookie_headers(client.post("/permanent/1")) == []  # unchanged: no cookie
    rv = client.post("/permanent/0")
    (cookie,) = set_cookie_headers(rv)
    assert "max-age" not in cookie.lower()
    assert client.get("/read/a").json == {"value": "1"}


def test_session_stored_last(make_app: AppFactory) -> None:
    """A change made in an after_request handler is saved (save runs after them)."""
    app = make_app()

    @app.after_request
    def modify_session(response: flask.Response) -> flask.Response:
        flask.session["foo"] = 42
        return response

    @app.get("/")
    def dump() -> str:
        return repr(flask.session.get("foo"))

    client = app.test_client()
    assert client.get("/").data == b"None"
    assert client.get("/").data == b"42"


THE_UUID = uuid.uuid4()
NOW = datetime.now(UTC).replace(microsecond=0)


def test_session_special_types(make_app: AppFactory) -> None:
    """Flask's test_session_special_types: the tagged types round-trip through Redis, and
    dicts that merely look like tags come back as dicts."""
    app = make_app()

    @app.get("/")
    def store_special() -> tuple[str, int]:
        flask.session["t"] = (1, 2, 3)
        flask.session["b"] = b"\xff"
        flask.session["m"] = Markup("<html>")
        flask.session["u"] = THE_UUID
        flask.session["d"] = NOW
        flask.session["t_tag"] = {" t": "not-a-tuple"}
        flask.session["di_t_tag"] = {" t__": "not-a-tuple"}
        flask.session["di_tag"] = {" di": "not-a-dict"}
        flask.session["nested"] = {"when": [NOW, (b"x", {" u": 1})], "plain": [1, "two"]}
        return "", 204

    client = app.test_client()
    client.get("/")
    with client.session_transaction() as s:  # a new request: loaded from Redis
        assert s["t"] == (1, 2, 3)
        assert type(s["b"]) is bytes and s["b"] == b"\xff"
        assert type(s["m"]) is Markup and s["m"] == Markup("<html>")
        assert s["u"] == THE_UUID
        assert s["d"] == NOW
        assert s["t_tag"] == {" t": "not-a-tuple"}
        assert s["di_t_tag"] == {" t__": "not-a-tuple"}
        assert s["di_tag"] == {" di": "not-a-dict"}
        assert s["nested"] == {"when": [NOW, (b"x", {" u": 1})], "plain": [1, "two"]}
    # The stored form is Flask's tagged JSON, one hash field per key, in the envelope that
    # marks it as tagged by the adapter (other writers cannot produce it); plain values
    # stay plain JSON.
    loaded = state(app).store.load(cookie_token(client))
    assert loaded is not None
    assert dict.__getitem__(loaded, "t") == {"\x00stickless:tagged": {" t": [1, 2, 3]}}
    assert dict.__getitem__(loaded, "b") == {"\x00stickless:tagged": {" b": "/w=="}}
    assert dict.__getitem__(loaded, "t_tag") == {
        "\x00stickless:tagged": {" di": {" t__": "not-a-tuple"}}
    }


TAG_LOOKALIKES: dict[str, Any] = {
    "xss": {" m": "<script>x</script>"},
    "uuid": {" u": "junk"},
    "bytes": {" b": "!!not base64!!"},
    "date": {" d": "not a date"},
    "tuple": {" t": 5},
    "nested": [{" m": "<b>bold</b>"}, {"deep": {" u": "junk"}}],
}


def test_tag_lookalikes_from_other_writers_stay_plain_data(
    make_app: AppFactory, stickless_url: str
) -> None:
    """Values another writer (here the core API; an ASGI service is the same) stored that
    look like Flask's tagged JSON are served as the plain dicts they are: ``{" m": ...}``
    is never ``Markup`` (so Jinja escapes it), junk tags never 500, and reading them does
    not rewrite them."""
    app = make_app()

    @app.get("/render/<key>")
    def render(key: str) -> str:
        return flask.render_template_string("<p>{{ session[key] }}</p>", key=key)

    @app.get("/type/<key>")
    def type_of(key: str) -> str:
        return type(flask.session[key]).__name__

    core = SessionStore.from_url(stickless_url)
    try:
        s = core.new()
        s.update(TAG_LOOKALIKES)
        core.save(s)
        client = app.test_client(use_cookies=False)
        cookie = {"Cookie": f"session={s.token}"}

        rv = client.get("/render/xss", headers=cookie)
        assert rv.status_code == 200
        assert "<script>" not in rv.text and "&lt;script&gt;x&lt;/script&gt;" in rv.text
        for key in TAG_LOOKALIKES:
            rv = client.get(f"/render/{key}", headers=cookie)
            assert rv.status_code == 200, key
            assert "<b>" not in rv.text
            assert client.get(f"/type/{key}", headers=cookie).text in {"dict", "list"}

        again = core.load(s.token)
        assert again is not None and dict(again) == TAG_LOOKALIKES  # not re-tagged by reads
    finally:
        core.close()


def test_the_tagged_envelope_cannot_be_forged_and_bad_tags_inside_never_500(
    make_app: AppFactory, stickless_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Plain JSON holding the envelope's key is refused (at any depth), so only the adapter's
    own values are untagged; a tag that fails inside a real envelope (a custom tag gone
    wrong) is served as plain data with a log line that does not show the value."""
    from stickless.codec import TAGGED_KEY, Tagged

    app = make_app()

    @app.get("/type/<key>")
    def type_of(key: str) -> str:
        return type(flask.session[key]).__name__

    core = SessionStore.from_url(stickless_url)
    try:
        s = core.new()
        for forged in (
            {TAGGED_KEY: {" m": "<script>"}},
            [{TAGGED_KEY: {" m": "<script>"}}],
            {"a": {TAGGED_KEY: 1}},
        ):
            with pytest.raises(TypeError, match=r"'forged'.*reserved"):
                s["forged"] = forged
        s["broken"] = Tagged({" u": "secret-junk"})  # only Python code can build this
        s["markup"] = Tagged({" m": "<i>ok</i>"})  # what the adapter itself writes
        core.save(s)
        client = app.test_client(use_cookies=False)
        cookie = {"Cookie": f"session={s.token}"}
        with caplog.at_level(logging.WARNING, logger="stickless.web"):
            rv = client.get("/type/broken", headers=cookie)
        assert rv.status_code == 200 and rv.text == "dict"
        assert "'broken'" in caplog.text and "secret-junk" not in caplog.text
        assert client.get("/type/markup", headers=cookie).text == "Markup"
    finally:
        core.close()


def test_custom_tags_registered_on_the_serializer(make_app: AppFactory) -> None:
    from decimal import Decimal

    from flask.json.tag import JSONTag

    class TagDecimal(JSONTag):
        key = " dec"

        def check(self, value: Any) -> bool:
            return isinstance(value, Decimal)

        def to_json(self, value: Any) -> Any:
            return str(value)

        def to_python(self, value: Any) -> Any:
            return Decimal(value)

    app = make_app()
    assert isinstance(app.session_interface, Stickless)
    app.session_interface.serializer.register(TagDecimal)
    client = app.test_client()
    with client.session_transaction() as s:
        s["price"] = [Decimal("9.99")]
    with client.session_transaction() as s:
        assert s["price"] == [Decimal("9.99")] and type(s["price"][0]) is Decimal
        assert not isinstance(s, dict)


def test_values_flask_cannot_store_raise_at_the_assignment(make_app: AppFactory) -> None:
    app = make_app()
    with app.test_request_context():
        for value in ({1, 2}, object(), date(2024, 1, 1), {1: "non-str key"}, 2**70):
            with pytest.raises(TypeError, match="'bad'"):
                flask.session["bad"] = value
        with pytest.raises(TypeError):
            flask.session[1] = "non-str key"  # type: ignore[index]
        flask.session["fine"] = [1, 2]
        assert "bad" not in flask.session


def test_in_place_changes_are_saved_without_modified(make_app: AppFactory) -> None:
    """Flask's cookie session needs ``session.modified = True`` after a nested change;
    stickless detects it, for plain JSON and for tagged values alike."""
    app = make_app()

    @app.post("/seed")
    def seed() -> str:
        flask.session["cart"] = ["apple"]
        flask.session["pairs"] = [(1, 2)]
        return ""

    @app.post("/append")
    def append() -> str:
        flask.session["cart"].append("pear")
        flask.session["pairs"].append((3, 4))
        assert not flask.session.modified  # Flask's meaning: nothing assigned
        return ""

    client = app.test_client()
    client.post("/seed")
    client.post("/append")
    with client.session_transaction() as s:
        assert s["cart"] == ["apple", "pear"]
        assert s["pairs"] == [(1, 2), (3, 4)]


def test_modified_can_be_assigned(make_app: AppFactory) -> None:
    """Flask's test_flashes sets ``session.modified``; both values are accepted."""
    app = make_app()
    with app.test_request_context():
        assert not flask.session.modified
        flask.flash("Zap")
        flask.session.modified = False
        assert not flask.session.modified
        flask.flash("Zip")
        assert flask.session.modified
        assert list(flask.get_flashed_messages()) == ["Zap", "Zip"]
        flask.session.modified = True


def test_session_cookie_setting(make_app: AppFactory) -> None:
    """Flask's test_session_cookie_setting. Deliberate difference: a read never re-sends
    the cookie, whatever ``permanent`` and SESSION_REFRESH_EACH_REQUEST say: its lifetime
    runs to the absolute deadline and the idle expiry is kept in Redis (reads refresh it
    unless SESSION_REFRESH_EACH_REQUEST is False)."""
    for permanent in (True, False):
        for refresh in (True, False):
            app = make_app(SESSION_REFRESH_EACH_REQUEST=refresh)

            @app.get("/bump")
            def bump(permanent: bool = permanent) -> str:
                value = flask.session["foo"] = flask.session.get("foo", 0) + 1
                flask.session.permanent = permanent
                return str(value)

            @app.get("/read-foo")
            def read_foo() -> str:
                return str(flask.session.get("foo", 0))

            client = app.test_client()
            assert client.get("/bump").data == b"1"
            assert client.get("/bump").data == b"2"
            assert client.get("/bump").data == b"3"
            rv = client.get("/read-foo")
            assert rv.data == b"3"
            assert "set-cookie" not in rv.headers
            assert rv.headers["Vary"] == "Cookie"


def test_session_vary_cookie(make_app: AppFactory) -> None:
    """Flask's test_session_vary_cookie: ``Vary: Cookie`` exactly once when the session was
    accessed, merged with the app's own Vary values; absent otherwise."""
    app = make_app()

    @app.get("/set")
    def set_session() -> str:
        flask.session["test"] = "test"
        return ""

    @app.get("/get")
    def get() -> str:
        return str(flask.session.get("test"))

    @app.get("/getitem")
    def getitem() -> str:
        return str(flask.session["test"])

    @app.get("/setdefault")
    def setdefault() -> str:
        return str(flask.session.setdefault("test", "default"))

    @app.get("/clear")
    def clear() -> str:
        flask.session.clear()
        return ""

    @app.get("/vary-cookie-header-set")
    def vary_cookie_header_set() -> flask.Response:
        response = flask.Response()
        response.vary.add("Cookie")
        flask.session["test"] = "test"
        return response

    @app.get("/vary-header-set")
    def vary_header_set() -> flask.Response:
        response = flask.Response()
        response.vary.update(("Accept-Encoding", "Accept-Language"))
        flask.session["test"] = "test"
        return response

    # beyond Flask's test: Vary lines set by the view, as they are sent
    vary_lines = {
        "two-lines": ["Accept", "Origin"],
        "repeated": ["Accept", "accept, Origin"],
        "cookie-lowercase": ["Accept, cookie"],
        "star": ["*"],
    }

    @app.get("/vary-lines/<name>")
    def vary_set_by_the_view(name: str) -> flask.Response:
        response = flask.Response()
        for line in vary_lines[name]:
            response.headers.add("Vary", line)
        flask.session["test"] = "test"
        return response

    @app.get("/no-vary-header")
    def no_vary_header() -> str:
        return ""

    client = app.test_client()

    def expect(path: str, header_value: str | None = "Cookie") -> None:
        rv = client.get(path)
        if header_value:
            assert len(rv.headers.get_all("Vary")) == 1
            assert rv.headers["Vary"] == header_value
        else:
            assert "Vary" not in rv.headers

    expect("/set")
    expect("/get")
    expect("/getitem")
    expect("/setdefault")
    expect("/clear")
    expect("/vary-cookie-header-set")
    expect("/vary-header-set", "Accept-Encoding, Accept-Language, Cookie")
    # every Vary line counts (Werkzeug's response.vary keeps only the first), a name
    # already there in any case is not repeated, and * stays *
    expect("/vary-lines/two-lines", "Accept, Origin, Cookie")
    expect("/vary-lines/repeated", "Accept, Origin, Cookie")
    expect("/vary-lines/cookie-lowercase", "Accept, cookie")
    expect("/vary-lines/star", "*")
    expect("/no-vary-header", None)


def test_session_refresh_vary(make_app: AppFactory) -> None:
    """Flask's test_session_refresh_vary, with the deliberate difference above: Flask
    re-sends a permanent session's cookie on every request (so even a view that ignores the
    session varies on Cookie); stickless does not re-send it, so that response does not
    vary and stays cacheable."""
    app = make_app()

    @app.get("/remember-me")
    def remember_me() -> str:
        flask.session["user_id"] = 1
        flask.session.permanent = True
        return ""

    @app.get("/ignored")
    def ignored() -> str:
        return ""

    client = app.test_client()
    assert client.get("/remember-me").headers["Vary"] == "Cookie"
    rv = client.get("/ignored")
    assert "Vary" not in rv.headers
    assert "set-cookie" not in rv.headers


def test_extended_flashing(make_app: AppFactory) -> None:
    """Flask's test_extended_flashing: messages (with Markup) and categories survive the
    trip through Redis, and are consumed once read."""
    app = make_app()

    @app.get("/")
    def index() -> str:
        flask.flash("Hello World")
        flask.flash("Hello World", "error")
        flask.flash(Markup("<em>Testing</em>"), "warning")
        return ""

    @app.get("/test/")
    def test() -> str:
        messages = flask.get_flashed_messages()
        assert list(messages) == ["Hello World", "Hello World", Markup("<em>Testing</em>")]
        assert type(messages[2]) is Markup
        return ""

    @app.get("/test_with_categories/")
    def test_with_categories() -> str:
        messages = flask.get_flashed_messages(with_categories=True)
        assert list(messages) == [
            ("message", "Hello World"),
            ("error", "Hello World"),
            ("warning", Markup("<em>Testing</em>")),
        ]
        return ""

    @app.get("/test_filter/")
    def test_filter() -> str:
        messages = flask.get_flashed_messages(category_filter=["message"], with_categories=True)
        assert list(messages) == [("message", "Hello World")]
        return ""

    @app.get("/test_filters/")
    def test_filters() -> str:
        messages = flask.get_flashed_messages(
            category_filter=["message", "warning"], with_categories=True
        )
        assert list(messages) == [
            ("message", "Hello World"),
            ("warning", Markup("<em>Testing</em>")),
        ]
        return ""

    @app.get("/empty/")
    def empty() -> str:
        assert flask.get_flashed_messages() == []
        return ""

    for path in ("/test/", "/test_with_categories/", "/test_filter/", "/test_filters/"):
        client = app.test_client()
        client.get("/")
        assert client.get(path).status_code == 200
        assert client.get("/empty/").status_code == 200  # consumed


def test_session_transaction(make_app: AppFactory) -> None:
    """Flask's test client ``session_transaction()`` works both ways."""
    app = make_app()
    client = app.test_client()
    with client.session_transaction() as s:
        assert isinstance(s, FlaskSession)
        s["from_test"] = "yes"
    assert client.get("/read/from_test").json == {"value": "yes"}
    client.post("/write/from_app/1")
    with client.session_transaction() as s:
        assert s["from_app"] == "1"
        assert s.new is False


def test_url_from_environment(stickless_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``app.config["STICKLESS_URL"]``, the environment's is used, as by the ASGI and
    WSGI middlewares; the app's own setting wins over it."""
    monkeypatch.setenv("STICKLESS_URL", stickless_url)
    app = flask.Flask("from-env")
    app.testing = True
    Stickless(app)
    add_routes(app)
    client = app.test_client()
    client.post("/write/a/1")
    assert client.get("/read/a").json == {"value": "1"}
    state(app).store.close()
    monkeypatch.setenv("STICKLESS_URL", "redis://192.0.2.1:1/0")  # never contacted
    app = flask.Flask("own-setting")
    app.config["STICKLESS_URL"] = stickless_url
    Stickless(app)
    assert state(app).store.client.ping()
    state(app).store.close()


def test_membership_is_recorded_by_the_core_session(make_app: AppFactory) -> None:
    """``in`` is a read like any other: the core Session records it (``Vary: Cookie``), as
    for every adapter, not a flag of the Flask proxy's own."""
    app = make_app()
    with app.test_request_context():
        session = flask.session._get_current_object()  # type: ignore[attr-defined]
        assert isinstance(session, FlaskSession)
        session.accessed = False  # what Flask's request context set (every proxy use sets it)
        assert not session.accessed
        assert "a" not in session
        assert session.accessed and session.core.accessed


def test_mapping_behaviour(make_app: AppFactory) -> None:
    app = make_app()
    with app.test_request_context():
        s = flask.session
        assert s.new
        s.update({"a": 1, "b": (2,)}, c="3")
        assert len(s) == 3 and "a" in s and set(s) == {"a", "b", "c"}
        assert s.pop("a") == 1 and s.pop("zzz", None) is None
        assert s.setdefault("d", [4]) == [4]
        assert dict(s) == {"b": (2,), "c": "3", "d": [4]} == s.copy()  # type: ignore[attr-defined]
        assert s == {"b": (2,), "c": "3", "d": [4]}
        del s["c"]
        with pytest.raises(KeyError):
            s["c"]
        assert "FlaskSession" in repr(s) and "(2,)" not in repr(s)
        with pytest.raises(TypeError):
            __import__("pickle").dumps(s._get_current_object())  # type: ignore[attr-defined]


# ====================================================================== round trips
def test_round_trips(make_app: AppFactory) -> None:
    """0 for a request that does not touch the session (cookie or not), 1 for a read, 2 for
    a write (load + delta), 1 for the first write of a new session."""
    app = make_app()
    app.test_client().post("/login/warm-up")  # scripts cached (a NOSCRIPT costs a trip)
    batches = Batches(state(app).store)
    fresh = app.test_client()
    with batches.exactly(0):
        fresh.get("/nothing")
        fresh.get("/read/a")  # no cookie: nothing to load
    client = app.test_client()
    with batches.exactly(1):
        client.post("/write/a/1")
    with batches.exactly(0):
        client.get("/nothing")
    with batches.exactly(1):
        assert client.get("/read/a").json == {"value": "1"}
    with batches.exactly(2):
        client.post("/write/b/2")
    with batches.exactly(2):
        client.post("/login/alice")  # load + (renew + index) in one pipeline


def test_round_trips_seen_by_the_server(
    make_app: AppFactory, command_log: Any, stickless_server: ServerBinary
) -> None:
    """The same, counted by the server itself (MONITOR)."""
    app = make_app()
    client = app.test_client()
    client.post("/write/a/1")
    client.post("/write/b/2")
    client.get("/read/a")  # warm the script cache (both save scripts)
    with command_log.counting() as sent:
        client.get("/nothing")
    assert sent == []
    with command_log.counting() as sent:
        client.get("/read/a")
    assert sent == ["HGETALL", "PTTL"]  # one round trip, no script (see test_round_trips)
    with command_log.counting() as sent:
        client.post("/write/a/2")
    # a key the session holds: HSETEX where the server has it, else update.lua
    assert sent == ["HGETALL", "PTTL", "HSETEX" if takes_hsetex(stickless_server) else "EVALSHA"]


def test_permanent_every_request_costs_no_write(make_app: AppFactory) -> None:
    """The common ``before_request: session.permanent = True`` idiom: a session holding
    only ``_permanent`` is not created, and re-setting the same value writes nothing."""
    app = make_app()

    @app.before_request
    def make_permanent() -> None:
        flask.session.permanent = True

    batches = Batches(state(app).store)
    client = app.test_client()
    with batches.exactly(0):
        rv = client.get("/nothing")
    assert "set-cookie" not in rv.headers
    with batches.exactly(1):
        rv = client.post("/write/a/1")
    assert "max-age=" in rv.headers["set-cookie"].lower()
    with batches.exactly(1):
        assert client.get("/nothing").status_code == 200


# ======================================================================== transport
def test_header_transport(make_app: AppFactory) -> None:
    app = make_app(STICKLESS_HEADER="X-Session-Token")
    client = app.test_client()
    rv = client.post("/write/a/1")
    token = rv.headers["X-Session-Token"]
    assert token == cookie_token(client)
    header_client = app.test_client(use_cookies=False)
    rv = header_client.get("/read/a", headers={"X-Session-Token": token})
    assert rv.json == {"value": "1"}
    assert rv.headers["Vary"] == "Cookie, X-Session-Token"
    # the header wins over the cookie
    other = app.test_client()
    other.post("/write/a/other")
    assert other.get("/read/a", headers={"X-Session-Token": token}).json == {"value": "1"}


HOSTILE = [
    "garbage",
    "a" * 5000,
    "é-not-ascii",
    '"quoted"',
    "x.y.z",
    "....",
    "%00%ff",
    "AAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
]


@pytest.mark.parametrize("value", [*HOSTILE, "unknown"])
def test_hostile_cookies_get_a_fresh_session(make_app: AppFactory, value: str) -> None:
    app = make_app()
    if value == "unknown":
        value = tokens.new_raw_token()  # well formed, never issued
    client = app.test_client(use_cookies=False)
    rv = client.get("/read/a", headers={"Cookie": f"session={value}"})
    assert rv.status_code == 200 and rv.json == {"value": None}
    (deletion,) = set_cookie_headers(rv)  # the bad cookie is dropped
    assert deletion.startswith("session=;") and "max-age=0" in deletion.lower()
    rv = client.post("/write/a/1", headers={"Cookie": f"session={value}; other=1"})
    assert rv.status_code == 200
    (issued,) = set_cookie_headers(rv)
    assert issued.split(";")[0] != f"session={value}"


def test_odd_cookie_headers(make_app: AppFactory) -> None:
    app = make_app()
    client = app.test_client(use_cookies=False)
    for header in ("session=", "session", ";;;=;", "=session; session==", "session=a=b=c"):
        rv = client.get("/read/a", headers={"Cookie": header})
        assert rv.status_code == 200 and rv.json == {"value": None}


def test_signed_tokens_with_secret_key(make_app: AppFactory) -> None:
    app = make_app(SECRET_KEY="old-secret")
    client = app.test_client()
    client.post("/write/a/1")
    token = cookie_token(client)
    assert token is not None and token.count(".") == 2  # family.secret.signature
    batches = Batches(state(app).store)
    forged = token.rsplit(".", 1)[0] + ".AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    with batches.exactly(0):  # refused without asking Redis
        rv = app.test_client(use_cookies=False).get(
            "/read/a", headers={"Cookie": f"session={forged}"}
        )
    assert rv.json == {"value": None}
    assert "old-secret" not in str(state(app).store.config.secret_key)  # derived, not reused
    rotated = make_app(SECRET_KEY="new-secret", SECRET_KEY_FALLBACKS=["old-secret"])
    rotated_client = rotated.test_client(use_cookies=False)
    rv = rotated_client.get("/read/a", headers={"Cookie": f"session={token}"})
    assert rv.json == {"value": "1"}
    replaced = make_app(SECRET_KEY="new-secret")
    rv = replaced.test_client(use_cookies=False).get(
        "/read/a", headers={"Cookie": f"session={token}"}
    )
    assert rv.json == {"value": None}


def test_flask_cookie_sessions_can_be_imported(make_app: AppFactory) -> None:
    """STICKLESS_IMPORT_COOKIE_SESSIONS: a user holding a Flask cookie session keeps its
    data (and stays logged in) after the switch."""
    legacy = flask.Flask("legacy")
    legacy.secret_key = "shared-secret"

    @legacy.get("/")
    def legacy_login() -> str:
        flask.session["user"] = "bob"
        flask.session["pair"] = (1, 2)
        return ""

    legacy_client = legacy.test_client()
    legacy_client.get("/")
    old_cookie = cookie_token(legacy_client)
    assert old_cookie is not None
    app = make_app(SECRET_KEY="shared-secret", STICKLESS_IMPORT_COOKIE_SESSIONS=True)
    client = app.test_client()
    client.set_cookie("session", old_cookie)
    assert client.get("/read/user").json == {"value": "bob"}
    new_token = cookie_token(client)
    assert new_token != old_cookie
    assert state(app).store.load(new_token) is not None
    with client.session_transaction() as s:
        assert s["pair"] == (1, 2)
    # without the setting, the old cookie is just an unknown token
    plain = make_app(SECRET_KEY="shared-secret")
    rv = plain.test_client(use_cookies=False).get(
        "/read/user", headers={"Cookie": f"session={old_cookie}"}
    )
    assert rv.json == {"value": None}


# ==================================================================== login / logout
def test_login_renews_the_token(make_app: AppFactory) -> None:
    app = make_app()
    store = state(app).store
    client = app.test_client()
    client.post("/write/cart/apple")
    before = cookie_token(client)
    rv = client.post("/login/alice")
    after = cookie_token(client)
    assert set_cookie_headers(rv) and after != before
    assert store.load(before) is None  # the pre-login token is dead (fixation)
    loaded = store.load(after)
    assert loaded is not None and loaded.user_id == "alice" and loaded["cart"] == "apple"
    assert client.get("/whoami").json == {"user": "alice"}
    assert len(store.sessions_for("alice")) == 1


def test_logout_ends_the_session(make_app: AppFactory) -> None:
    app = make_app()
    store = state(app).store
    client = app.test_client()
    client.post("/login/alice")
    token = cookie_token(client)
    rv = client.post("/logout")
    (deletion,) = set_cookie_headers(rv)
    assert deletion.startswith("session=;")
    assert cookie_token(client) is None
    assert store.load(token) is None
    assert store.sessions_for("alice") == []
    # replaying the old cookie gives nothing back
    rv = app.test_client(use_cookies=False).get("/whoami", headers={"Cookie": f"session={token}"})
    assert rv.json == {"user": None}


def test_clear_then_set_is_a_fixation_safe_login(make_app: AppFactory) -> None:
    """The flaskr tutorial's login: ``session.clear(); session["user_id"] = ...``."""
    app = make_app()

    @app.post("/flaskr-login")
    def flaskr_login() -> str:
        flask.session.clear()
        flask.session["user_id"] = 7
        return ""

    client = app.test_client()
    client.post("/write/a/1")
    before = cookie_token(client)
    client.post("/flaskr-login")
    after = cookie_token(client)
    assert after != before
    assert state(app).store.load(before) is None
    with client.session_transaction() as s:
        assert dict(s) == {"user_id": 7}


def test_logout_everywhere(make_app: AppFactory) -> None:
    app = make_app()

    @app.post("/logout-everywhere")
    def logout_everywhere() -> Any:
        user = flask.session.user_id  # type: ignore[attr-defined]
        count = current_store().revoke_user(user, keep=flask.session.token)  # type: ignore[attr-defined]
        return flask.jsonify(revoked=count)

    devices = [app.test_client() for _ in range(3)]
    for device in devices:
        device.post("/login/alice")
    assert len(state(app).store.sessions_for("alice")) == 3
    assert devices[0].post("/logout-everywhere").json == {"revoked": 2}
    assert devices[0].get("/whoami").json == {"user": "alice"}
    for device in devices[1:]:
        assert device.get("/whoami").json == {"user": None}
    assert len(state(app).store.sessions_for("alice")) == 1


def test_incr_through_the_proxy(make_app: AppFactory) -> None:
    app = make_app()

    @app.post("/hit")
    def hit() -> str:
        return str(flask.session.incr("hits"))  # type: ignore[attr-defined]

    client = app.test_client()
    assert [client.post("/hit").data for _ in range(3)] == [b"1", b"2", b"3"]
    with client.session_transaction() as s:
        assert s["hits"] == 3
        assert s.core.created_at is not None  # type: ignore[attr-defined]  # a FlaskSession


def test_current_session_is_the_typed_session(make_app: AppFactory) -> None:
    app = make_app()
    with app.test_request_context():
        current_session().login("bob")
        assert flask.session.user_id == "bob"  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError):
        current_session()  # outside a request
    plain = flask.Flask("cookie-sessions")
    plain.secret_key = "x"
    with plain.test_request_context(), pytest.raises(RuntimeError, match="Stickless"):
        current_session()


# ==================================================================== configuration
def test_configuration_mapping() -> None:
    def config_of(**settings: Any) -> SessionConfig:
        app = flask.Flask("cfg")
        app.config.update(settings)
        return Stickless.session_config(app)

    default = config_of()
    assert default.idle_timeout == 31 * 86400 == default.absolute_timeout
    assert default.secret_key is None
    assert config_of(PERMANENT_SESSION_LIFETIME=600).idle_timeout == 600
    own = SessionConfig(idle_timeout=120, absolute_timeout=3600, key_prefix="mine")
    assert config_of(STICKLESS_CONFIG=own) == own  # Flask's default lifetime: config wins
    both = config_of(STICKLESS_CONFIG=own, PERMANENT_SESSION_LIFETIME=timedelta(hours=2))
    assert (both.idle_timeout, both.absolute_timeout, both.key_prefix) == (7200, 7200, "mine")
    assert config_of(SESSION_REFRESH_EACH_REQUEST=False).touch_interval == 60  # loads: passive
    signed = config_of(SECRET_KEY="k", SECRET_KEY_FALLBACKS=["old"])
    assert isinstance(signed.secret_key, list) and len(signed.secret_key) == 2
    assert "k" not in signed.secret_key and "old" not in signed.secret_key
    with pytest.raises(ConfigurationError):
        config_of(STICKLESS_CONFIG={"idle_timeout": 5})


def test_setup_errors_and_init_app(stickless_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STICKLESS_URL", raising=False)
    with pytest.raises(ConfigurationError, match="STICKLESS_URL"):
        Stickless(flask.Flask("no-url"))
    with SessionStore.from_url(stickless_url, SessionConfig(key_prefix="given")) as store:
        ext = Stickless(store=store)
        apps = [flask.Flask("one"), flask.Flask("two")]
        for app in apps:
            ext.init_app(app)
            add_routes(app)
            app.testing = True
        apps[0].test_client().post("/write/a/1")
        assert store.client.keys("given:*")
        with apps[1].app_context():
            assert current_store() is store
    with flask.Flask("bare").app_context(), pytest.raises(RuntimeError):
        current_store()


def test_idle_timeout_from_permanent_session_lifetime(make_app: AppFactory) -> None:
    app = make_app(PERMANENT_SESSION_LIFETIME=1)
    client = app.test_client()
    client.post("/write/a/1")
    assert client.get("/read/a").json == {"value": "1"}
    time.sleep(1.2)
    assert client.get("/read/a").json == {"value": None}


# ============================================================= store down, and back
FAST = SessionConfig(connect_timeout=0.3, socket_timeout=0.3, retries=1, retry_backoff=0.01)
BUDGET = (FAST.connect_timeout + FAST.socket_timeout) * (FAST.retries + 1) + 0.5


def assert_503(rv: Any) -> None:
    policy = FailurePolicy()
    assert rv.status_code == 503
    assert rv.data == policy.body
    assert rv.headers["Retry-After"] == "1"
    assert rv.headers["Content-Type"].startswith("text/plain")
    assert "set-cookie" not in rv.headers


def test_store_down_answers_503_then_recovers_on_the_same_port() -> None:
    valkey = start_standalone()
    try:
        port = valkey.node.port
        app = flask.Flask("down")
        app.config.update(TESTING=True, STICKLESS_URL=valkey.url, STICKLESS_CONFIG=FAST)
        Stickless(app)
        add_routes(app)
        node_ref = [valkey.node]

        @app.get("/revoke")
        def revoke() -> str:
            current_store().revoke_user("nobody")
            return ""

        @app.post("/kill-then-write")
        def kill_then_write() -> str:
            assert flask.session.get("a") == "1"  # loaded while Redis is up
            node_ref[0].kill()
            flask.session["a"] = "lost"
            return "the app's own body"

        client = app.test_client()
        client.post("/write/a/1")

        valkey.stop()
        started = time.monotonic()
        assert_503(client.get("/read/a"))  # load fails
        assert time.monotonic() - started < BUDGET
        assert client.get("/nothing").status_code == 200  # untouched: still served
        assert_503(client.get("/revoke"))  # the app's own store calls, too
        assert_503(client.post("/write/a/2"))

        valkey = start_standalone(port=port)  # a new, empty server on the same port
        node_ref[0] = valkey.node
        assert client.get("/read/a").json == {"value": None}  # no restart of the app
        assert client.post("/write/a/1").status_code == 200
        assert client.get("/read/a").json == {"value": "1"}

        rv = client.post("/kill-then-write")  # the save fails: 503, not the app's body
        assert_503(rv)
        valkey.stop()
        valkey = start_standalone(port=port)
        assert client.post("/write/b/2").status_code == 200
        assert client.get("/read/b").json == {"value": "2"}
    finally:
        valkey.stop()


def test_fail_open_serves_an_unsaved_empty_session(caplog: pytest.LogCaptureFixture) -> None:
    with start_standalone() as valkey:
        app = flask.Flask("open")
        app.config.update(
            TESTING=True, STICKLESS_URL=valkey.url, STICKLESS_CONFIG=FAST, STICKLESS_FAIL_OPEN=True
        )
        Stickless(app)
        add_routes(app)
        client = app.test_client()
        client.post("/write/a/1")
        token = cookie_token(client)
        valkey.node.kill()
        with caplog.at_level(logging.WARNING, logger="stickless.web"):
            rv = client.get("/read/a")
            assert rv.status_code == 200 and rv.json == {"value": None}
            rv = client.post("/write/a/2")
            assert rv.status_code == 200
            assert "set-cookie" not in rv.headers
        assert "session load failed" in caplog.text
        assert token is not None and token not in caplog.text


# ============================================================= in-process concurrency
def test_concurrent_requests_keep_every_change(make_app: AppFactory) -> None:
    """Threads in one process, each changing another key of one session (the multi-process
    version is tests/test_multiprocess_flask.py)."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    app = make_app()

    @app.post("/both/<int:i>")
    def both(i: int) -> str:
        flask.session[f"k{i}"] = i
        flask.session.incr("n")  # type: ignore[attr-defined]
        return ""

    client = app.test_client()
    client.post("/write/seed/1")
    token = cookie_token(client)
    barrier = Barrier(20)

    def hit(i: int) -> int:
        barrier.wait()
        own = app.test_client(use_cookies=False)
        return own.post(f"/both/{i}", headers={"Cookie": f"session={token}"}).status_code

    with ThreadPoolExecutor(20) as pool:
        assert set(pool.map(hit, range(20))) == {200}
    loaded = state(app).store.load(token)
    assert loaded is not None
    assert loaded["n"] == 20
    assert all(loaded[f"k{i}"] == i for i in range(20))


def test_a_url_set_after_init_app_is_refused_not_ignored(stickless_url: str) -> None:
    """The docs' old testing example set STICKLESS_URL after create_app(): the store had
    already been built (from the environment, perhaps a real server). Now it is loud."""
    app = flask.Flask(__name__)
    app.config.update(TESTING=True, STICKLESS_URL=stickless_url)
    Stickless(app)

    @app.get("/")
    def index() -> str:
        flask.session["a"] = 1
        return "ok"

    assert app.test_client().get("/").status_code == 200
    app.config["STICKLESS_URL"] = "redis://127.0.0.1:1/0"
    with pytest.raises(ConfigurationError, match="before Stickless"):
        app.test_client().get("/")
    passed = flask.Flask(__name__)
    passed.config["STICKLESS_URL"] = "redis://127.0.0.1:1/0"  # ignored: a store is passed
    Stickless(passed, store=SessionStore.from_url(stickless_url))
    passed.add_url_rule("/", view_func=index)
    assert passed.test_client().get("/").status_code == 200


def test_an_app_that_writes_on_every_request_keeps_its_session_without_refresh_each_request(
    make_app: AppFactory,
) -> None:
    """``SESSION_REFRESH_EACH_REQUEST = False``: reads do not slide the lifetime, but writes
    do (Flask saves a modified session), also where a save of held keys needs no script:
    a user writing every 0.2 s stays signed in past ``PERMANENT_SESSION_LIFETIME``."""
    app = make_app(
        SESSION_REFRESH_EACH_REQUEST=False, PERMANENT_SESSION_LIFETIME=timedelta(seconds=1.5)
    )
    client = app.test_client()
    client.post("/login/ann")
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < 3.0:
        n += 1
        client.post(f"/write/n/{n}")
        time.sleep(0.2)
    assert client.get("/whoami").json == {"user": "ann"}
    assert client.get("/read/n").json == {"value": str(n)}


def test_without_refresh_each_request_reads_never_extend_a_permanent_session(
    stickless_url: str, make_app: AppFactory
) -> None:
    """``SESSION_REFRESH_EACH_REQUEST = False`` makes every load passive, whatever the
    session's own lifetime (a permanent one, ``PERMANENT_SESSION_LIFETIME`` longer than the
    configured idle timeout): read-only use ends it on time."""
    app = make_app(
        STICKLESS_CONFIG=SessionConfig(idle_timeout=1, max_idle_timeout=10),
        SESSION_REFRESH_EACH_REQUEST=False,
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=2),
    )

    @app.post("/permanent")
    def make_permanent() -> str:
        flask.session.permanent = True
        flask.session["a"] = "1"
        return "ok"

    client = app.test_client()
    client.post("/permanent")
    started = time.monotonic()
    while time.monotonic() - started < 4.0:
        if client.get("/read/a").json == {"value": None}:
            break
        time.sleep(0.2)
    assert 1.7 < time.monotonic() - started < 2.7, "reads slid the idle timeout"
