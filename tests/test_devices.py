"""Issue 12, item 3: ``SessionInfo.device``: the user agent (raw, and its label), the client
address (truncated by default), the user's name for the device, created and last seen;
recorded by every adapter at creation and at login, behind a proxy only as the framework's
own proxy settings say, never logged. Against a real Valkey."""

from __future__ import annotations

import logging
import sys
import uuid
from pathlib import Path
from typing import Any

import flask
import pytest
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.test import Client as WerkzeugClient

sys.path.insert(0, str(Path(__file__).parent / "apps"))

from django_project import testing
from django_project.testing import configure

configure()

from django.contrib.auth.models import User  # noqa: E402
from django.test import Client, override_settings  # noqa: E402

from stickless import SessionConfig, SessionStore  # noqa: E402
from stickless import devices as dev  # noqa: E402
from stickless.asgi import SessionMiddleware, session_of  # noqa: E402
from stickless.django import get_store  # noqa: E402
from stickless.flask import Stickless, current_session  # noqa: E402
from stickless.store.keys import KeyLayout  # noqa: E402
from stickless.wsgi import SessionMiddleware as WSGIMiddleware  # noqa: E402

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)


def config(**options: Any) -> SessionConfig:
    return SessionConfig(key_prefix=f"dv{uuid.uuid4().hex[:8]}", **options)


# ======================================================================== the model
@pytest.mark.parametrize(
    ("address", "mode", "stored"),
    [
        ("203.0.113.77", "truncated", "203.0.113.0/24"),
        ("2001:db8:1:2:3::9", "truncated", "2001:db8:1::/48"),
        ("::ffff:198.51.100.4", "truncated", "198.51.100.0/24"),
        ("203.0.113.77", "full", "203.0.113.77"),
        ("fe80::1%eth0", "full", "fe80::1"),
        ("203.0.113.77", "none", None),
        ("testclient", "truncated", None),
        ("", "full", None),
        (None, "full", None),
    ],
)
def test_client_ip(address: Any, mode: Any, stored: str | None) -> None:
    assert dev.client_ip(address, mode) == stored


@pytest.mark.parametrize(
    ("agent", "label"),
    [
        (FIREFOX, "Firefox on Linux"),
        (IPHONE, "Safari on iOS"),
        (CHROME_WINDOWS, "Chrome on Windows"),
        (CHROME_WINDOWS + " Edg/126.0.0.0", "Edge on Windows"),
        ("Mozilla/5.0 (Linux; Android 14; Pixel 8) Chrome/126.0 Mobile Safari/537.36", None),
        ("curl/8.5.0", "curl"),
        ("Mozilla/5.0", "Unknown device"),
        ("", "Unknown device"),
        (None, "Unknown device"),
    ],
)
def test_heuristic_label(agent: str | None, label: str | None) -> None:
    assert dev.heuristic_label(agent) == (label or "Chrome on Android")


def test_the_parser_labels_when_installed() -> None:
    pytest.importorskip("ua_parser")
    assert dev.user_agent_label(FIREFOX) == "Firefox on Linux"
    assert dev.user_agent_label(IPHONE) == "Mobile Safari on iOS"
    assert dev.user_agent_label("curl/8.5.0") == "curl"
    assert dev.user_agent_label("") == "Unknown device"


def test_user_agents_are_kept_in_compact_pieces() -> None:
    parts = dev.user_agent_parts(CHROME_WINDOWS)
    assert "".join(parts) == CHROME_WINDOWS and len(parts) == dev.AGENT_PARTS
    assert all(len(p.encode()) <= dev.PART_BYTES for p in dev.user_agent_parts("é" * 500))
    cleaned = dev.clean_user_agent(" x\x00y " + "z" * 1000)
    assert cleaned is not None and cleaned.startswith("xy z") and len(cleaned) <= 256
    assert dev.clean_user_agent("   ") is None


def test_device_names_are_checked() -> None:
    assert dev.check_device_name("  work laptop ") == "work laptop"
    assert dev.check_device_name("") is None
    with pytest.raises(ValueError, match="64 bytes"):
        dev.check_device_name("é" * 33)
    with pytest.raises(ValueError, match="printable"):
        dev.check_device_name("a\nb")
    with pytest.raises(TypeError):
        dev.check_device_name(7)


# ======================================================================== the store
def test_the_store_keeps_the_device_compact_and_lists_it(
    stickless_url: str, store_factory: Any
) -> None:
    cfg = config()
    store = store_factory(stickless_url, cfg)
    s = store.new()
    s["cart"] = ["apple"]
    s.login("ann")
    s.record_device(user_agent=CHROME_WINDOWS, ip="203.0.113.0/24")
    store.save(s)
    raw = redis.Redis.from_url(stickless_url)
    try:
        key = KeyLayout(cfg.key_prefix).data(s.session_id)
        assert raw.object("encoding", key) == b"listpack"  # every value <= 64 bytes
    finally:
        raw.close()
    (info,) = store.sessions_for("ann")
    device = info.device
    assert device is not None
    assert device.user_agent == CHROME_WINDOWS and device.label == "Chrome on Windows"
    assert device.ip == "203.0.113.0/24" and device.name is None
    assert device.created_at == info.created_at and device.last_seen == info.last_access
    assert info.session_id == s.session_id

    loaded = store.load(s.token)
    assert loaded is not None and loaded.device_name is None
    loaded.device_name = "work laptop"
    assert loaded.modified
    store.save(loaded)
    again = store.load(s.token)
    assert again is not None and again.device_name == "work laptop"
    assert store.sessions_for("ann")[0].device.display_name == "work laptop"
    again.device_name = None
    store.save(again)
    assert store.sessions_for("ann")[0].device.name is None


def test_a_shorter_user_agent_replaces_a_longer_one(stickless_url: str, store_factory: Any) -> None:
    store = store_factory(stickless_url, config())
    s = store.new()
    s.login("ann")
    s.record_device(user_agent=IPHONE, ip=None)
    store.save(s)
    s.login("bob")
    s.record_device(user_agent="curl/8.5.0", ip=None)
    store.save(s)
    device = store.sessions_for("bob")[0].device
    assert device is not None and device.user_agent == "curl/8.5.0"


def test_device_fields_are_sealed_with_encryption(stickless_url: str) -> None:
    pytest.importorskip("cryptography")
    import base64
    import secrets

    key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    cfg = config(encryption_keys=[key])
    with SessionStore.from_url(stickless_url, cfg) as store:
        s = store.new()
        s.login("ann")
        s.device_name = "work laptop"
        s.record_device(user_agent=FIREFOX, ip="203.0.113.0/24")
        store.save(s)
        dump = b"".join(store.client.hvals(KeyLayout(cfg.key_prefix).data(s.session_id)))
        assert b"Firefox" not in dump and b"203.0.113" not in dump and b"laptop" not in dump
        device = store.sessions_for("ann")[0].device
        assert device is not None and device.label == "Firefox on Linux"
        assert device.name == "work laptop" and device.ip == "203.0.113.0/24"


# ======================================================================= adapters
def only_device(store: Any, user: str) -> dev.Device:
    (info,) = store.sessions_for(user)
    assert info.device is not None
    return info.device  # type: ignore[no-any-return]


def flask_app(url: str, cfg: SessionConfig) -> flask.Flask:
    app = flask.Flask(f"dv{uuid.uuid4().hex[:6]}")
    app.config.update(TESTING=True, STICKLESS_URL=url, STICKLESS_CONFIG=cfg)
    Stickless(app)

    @app.post("/visit")
    def visit() -> str:
        flask.session["seen"] = True
        return "ok"

    @app.post("/login")
    def login() -> str:
        current_session().login("ann")
        return "ok"

    @app.post("/name/<name>")
    def name(name: str) -> str:
        current_session().device_name = name
        return "ok"

    return app


def test_flask_records_the_device_at_login_and_names_it(stickless_url: str) -> None:
    app = flask_app(stickless_url, config())
    store = app.extensions["stickless"].store
    client = app.test_client()
    env = {"REMOTE_ADDR": "203.0.113.9"}
    client.post("/visit", headers={"User-Agent": IPHONE}, environ_base=env)
    client.post("/login", headers={"User-Agent": FIREFOX}, environ_base=env)  # at login
    client.post("/name/work laptop", environ_base=env)
    device = only_device(store, "ann")
    assert (device.label, device.ip, device.name) == (
        "Firefox on Linux",
        "203.0.113.0/24",
        "work laptop",
    )


def test_flask_behind_a_proxy_honours_proxyfix_only(stickless_url: str) -> None:
    app = flask_app(stickless_url, config(device_ip="full"))
    store = app.extensions["stickless"].store
    forwarded = {"X-Forwarded-For": "198.51.100.23", "User-Agent": FIREFOX}
    env = {"REMOTE_ADDR": "10.0.0.2"}
    app.test_client().post("/login", headers=forwarded, environ_base=env)
    assert only_device(store, "ann").ip == "10.0.0.2"  # a raw X-Forwarded-For is not trusted
    store.revoke_user("ann")
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]
    app.test_client().post("/login", headers=forwarded, environ_base=env)
    assert only_device(store, "ann").ip == "198.51.100.23"


def test_asgi_records_the_client_the_server_set(stickless_url: str) -> None:
    async def login(request: Request) -> Response:
        session = session_of(request.scope)
        session["user"] = "ann"
        session.user_id = "ann"
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/login", login, methods=["POST"])])
    cfg = config(device_ip="full")
    app.add_middleware(SessionMiddleware, url=stickless_url, config=cfg)
    with SessionStore.from_url(stickless_url, cfg) as store:
        with TestClient(app, client=("2001:db8::7", 5000)) as http:
            http.post("/login", headers={"User-Agent": IPHONE, "X-Forwarded-For": "1.2.3.4"})
        device = only_device(store, "ann")
        assert device.ip == "2001:db8::7" and device.user_agent == IPHONE
        store.revoke_user("ann")
        with TestClient(app) as http:  # the test client's placeholder is no address
            http.post("/login")
        assert only_device(store, "ann").ip is None


def test_wsgi_records_remote_addr_truncated(stickless_url: str) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ["stickless.session"].user_id = "ann"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    cfg = config()
    with SessionStore.from_url(stickless_url, cfg) as store:
        http = WerkzeugClient(WSGIMiddleware(app, store=store))
        http.post("/", headers={"User-Agent": FIREFOX}, environ_base={"REMOTE_ADDR": "192.0.2.200"})
        device = only_device(store, "ann")
        assert (device.ip, device.label) == ("192.0.2.0/24", "Firefox on Linux")


def test_a_login_the_app_saves_itself_records_the_device(stickless_url: str) -> None:
    """An app that saves the login itself (to handle TooManySessions, or read which devices
    the cap ended) gets the device recorded as the middleware's own save would, once: a
    later save of the same login does not overwrite it."""
    cfg = config()
    with SessionStore.from_url(stickless_url, cfg) as store:

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            session = environ["stickless.session"]
            session.user_id = "ann"
            store.save(session.load())  # the app's own save, as docs/adapters/wsgi.md shows
            session["later"] = 1  # saved by the middleware: nothing about the device
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]

        http = WerkzeugClient(WSGIMiddleware(app, store=store))
        http.post("/", headers={"User-Agent": FIREFOX}, environ_base={"REMOTE_ADDR": "192.0.2.9"})
        device = only_device(store, "ann")
        assert (device.ip, device.label) == ("192.0.2.0/24", "Firefox on Linux")


@pytest.fixture
def alice() -> User:
    return testing.user("alice", "wonderland")


def test_django_records_the_device_at_login(stickless_url: str, alice: User) -> None:
    with override_settings(STICKLESS_URL=stickless_url, STICKLESS_CONFIG=config()):
        client = Client(HTTP_USER_AGENT=CHROME_WINDOWS, REMOTE_ADDR="203.0.113.50")
        client.post("/login", {"username": "alice", "password": "wonderland"})
        device = only_device(get_store(), str(alice.pk))
        assert (device.label, device.ip) == ("Chrome on Windows", "203.0.113.0/24")
        assert device.user_agent == CHROME_WINDOWS


def test_user_agents_and_addresses_are_never_logged(
    stickless_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = flask_app(stickless_url, config(device_ip="full"))
    with caplog.at_level(logging.DEBUG):
        client = app.test_client()
        env = {"REMOTE_ADDR": "203.0.113.9"}
        client.post("/login", headers={"User-Agent": FIREFOX}, environ_base=env)
        client.post("/name/x", headers={"User-Agent": FIREFOX}, environ_base=env)
        only_device(app.extensions["stickless"].store, "ann")
    text = caplog.text
    assert "Firefox" not in text and "203.0.113" not in text


def test_without_the_parser_the_heuristic_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dev, "_parser", lambda: None)
    dev.user_agent_label.cache_clear()
    try:
        assert dev.user_agent_label(IPHONE) == "Safari on iOS"
    finally:
        dev.user_agent_label.cache_clear()
