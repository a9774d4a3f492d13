"""Issue 12, items 1 and 2 through every adapter, against a real Valkey: Django's
``set_expiry()`` and Flask's ``session.permanent`` become the session's own lifetime (within
the maxima), and passive requests (``passive_paths``, the view decorators, the lazy ASGI
load) read the session without sliding its idle timeout."""

from __future__ import annotations

import re
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import flask
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient
from werkzeug.test import Client as WerkzeugClient

sys.path.insert(0, str(Path(__file__).parent / "apps"))

from django_project.testing import configure

configure()

from django.test import Client, override_settings  # noqa: E402

from stickless import Session, SessionConfig, SessionStore  # noqa: E402
from stickless.asgi import SessionMiddleware, load_session  # noqa: E402
from stickless.django import SessionStore as DjangoSession  # noqa: E402
from stickless.django import get_store  # noqa: E402
from stickless.fastapi import passive_session  # noqa: E402
from stickless.flask import Stickless, current_session, passive  # noqa: E402
from stickless.wsgi import SessionMiddleware as WSGIMiddleware  # noqa: E402

DAY = 86400
REMEMBER = SessionConfig(
    idle_timeout=60,
    absolute_timeout=3600,
    max_idle_timeout=30 * DAY,
    max_absolute_timeout=90 * DAY,
    touch_interval=0,
)


def prefixed(config: SessionConfig) -> SessionConfig:
    return config.with_options(key_prefix=f"wl{uuid.uuid4().hex[:8]}")


def lifetime(store: Any, token: str) -> tuple[int, int, float]:
    """``(idle_ms, absolute_ms, seconds_left)`` of the stored session (read passively)."""
    session = store.load(token, touch=False)
    assert session is not None and session.meta is not None
    meta = session.meta
    return meta.idle_ms, meta.deadline_ms - meta.created_ms, session.seconds_left


def max_age(set_cookie: str) -> int | None:
    match = re.search(r"(?i)\bmax-age=(\d+)", set_cookie)
    return int(match.group(1)) if match else None


# ==================================================================== Django
@pytest.fixture
def django_remember(stickless_url: str) -> Iterator[SessionStore]:
    with override_settings(STICKLESS_URL=stickless_url, STICKLESS_CONFIG=prefixed(REMEMBER)):
        yield get_store()


def django_token(client: Client) -> str:
    return str(client.cookies["sessionid"].value)


def test_django_set_expiry_extends_within_the_maxima(django_remember: SessionStore) -> None:
    client = Client()
    client.get("/expire", {"seconds": str(14 * DAY)})  # remember me for two weeks
    idle, absolute, left = lifetime(django_remember, django_token(client))
    assert idle == 14 * DAY * 1000  # far past the configured 60 s
    assert absolute >= 14 * DAY * 1000  # the deadline is at least that far ahead
    assert left > 13 * DAY
    assert client.cookies["sessionid"]["max-age"] == 14 * DAY  # Django's cookie agrees


def test_django_set_expiry_shortens_and_the_server_enforces_it(
    django_remember: SessionStore,
) -> None:
    client = Client()
    client.get("/expire", {"seconds": "1"})
    idle, _, left = lifetime(django_remember, django_token(client))
    assert idle == 1000 and left <= 1
    time.sleep(1.3)
    assert client.get("/read").json() == {}


def test_django_set_expiry_with_a_date_and_back_to_the_default(
    django_remember: SessionStore,
) -> None:
    client = Client()
    client.get("/expire", {"delta": str(10 * DAY)})
    idle, absolute, left = lifetime(django_remember, django_token(client))
    assert abs(absolute - 10 * DAY * 1000) < 5000  # that deadline, from creation
    assert idle == 30 * DAY * 1000  # inactivity does not end it before the date
    assert 10 * DAY - 10 < left <= 10 * DAY
    client.get("/expire", {"default": "1"})  # set_expiry(None): the configured lifetime
    idle, absolute, left = lifetime(django_remember, django_token(client))
    assert (idle, absolute) == (60_000, 3600_000) and left <= 60


def test_django_set_expiry_past_the_maxima_raises_at_the_call(
    django_remember: SessionStore,
) -> None:
    session = DjangoSession()
    with pytest.raises(ValueError, match="max_idle_timeout"):
        session.set_expiry(31 * DAY)
    with pytest.raises(ValueError, match="max_absolute_timeout"):
        session.set_expiry(timedelta(days=91))
    assert session.get("_session_expiry") is None  # nothing changed
    session.set_expiry(30 * DAY)  # the maximum itself is fine


def test_django_passive_view_and_paths_do_not_slide_the_idle_timeout(
    django_remember: SessionStore,
) -> None:
    client = Client()
    client.get("/set", {"key": "a", "value": "1"})
    token = django_token(client)
    time.sleep(1.1)
    for path in ("/status", "/async-status"):
        left = client.get(path).json()["seconds_left"]
        assert 57 < left < 59.1  # the time left as it is: not reset to 60
    assert lifetime(django_remember, token)[2] < 59.1
    with override_settings(STICKLESS_PASSIVE_PATHS=["/time-"]):
        assert client.get("/time-left").json()["seconds_left"] < 59.1
    assert client.get("/time-left").json()["seconds_left"] > 59.5  # an ordinary read slides
    assert client.get("/status").json()["expires_at"] is not None


# ===================================================================== Flask
def flask_app(url: str, config: SessionConfig, **settings: Any) -> flask.Flask:
    app = flask.Flask(f"lt{uuid.uuid4().hex[:6]}")
    app.config.update(TESTING=True, STICKLESS_URL=url, STICKLESS_CONFIG=config, **settings)
    Stickless(app)

    @app.post("/remember/<flag>")
    def remember(flag: str) -> str:
        flask.session["user"] = "ann"
        flask.session.permanent = flag == "1"
        return "ok"

    @app.get("/status")
    @passive
    def status() -> Any:
        s = current_session()
        return {"seconds_left": s.seconds_left, "user": s.get("user")}

    @app.get("/read")
    def read() -> Any:
        return {"seconds_left": current_session().seconds_left}

    return app


def flask_token(client: Any) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return str(cookie.value)


def test_flask_permanent_is_remember_me_within_the_maxima(stickless_url: str) -> None:
    app = flask_app(stickless_url, prefixed(REMEMBER), PERMANENT_SESSION_LIFETIME=14 * DAY)
    store: SessionStore = app.extensions["stickless"].store
    client = app.test_client()
    rv = client.post("/remember/1")
    assert (age := max_age(rv.headers["set-cookie"])) is not None and age > 13 * DAY
    idle, absolute, left = lifetime(store, flask_token(client))
    assert (idle, absolute) == (14 * DAY * 1000, 14 * DAY * 1000) and left > 13 * DAY
    rv = client.post("/remember/0")  # unticked: a browser-session cookie, the default lifetime
    assert max_age(rv.headers["set-cookie"]) is None
    idle, absolute, left = lifetime(store, flask_token(client))
    assert idle == 60_000 and absolute == 3600_000 and left <= 60


def test_flask_permanent_lifetime_is_capped_by_the_maxima(stickless_url: str) -> None:
    config = prefixed(REMEMBER.with_options(max_idle_timeout=7 * DAY))
    app = flask_app(stickless_url, config)  # Flask's default PERMANENT_SESSION_LIFETIME: 31 days
    client = app.test_client()
    client.post("/remember/1")
    idle, absolute, _ = lifetime(app.extensions["stickless"].store, flask_token(client))
    assert (idle, absolute) == (7 * DAY * 1000, 31 * DAY * 1000)


def test_flask_passive_view_and_paths(stickless_url: str) -> None:
    app = flask_app(stickless_url, prefixed(REMEMBER))
    client = app.test_client()
    client.post("/remember/0")
    time.sleep(1.1)
    assert client.get("/status").json["seconds_left"] < 59.1  # type: ignore[index]
    app.config["STICKLESS_PASSIVE_PATHS"] = ["/read"]
    assert client.get("/read").json["seconds_left"] < 59.1  # type: ignore[index]
    app.config["STICKLESS_PASSIVE_PATHS"] = []
    assert client.get("/read").json["seconds_left"] > 59.5  # type: ignore[index]


# ========================================================== Starlette / FastAPI / WSGI
async def time_left(request: Request) -> Response:
    session = await load_session(request)
    return JSONResponse({"seconds_left": session.seconds_left})


async def write(request: Request) -> Response:
    (await load_session(request))["a"] = 1
    return PlainTextResponse("ok")


async def poll(request: Request) -> Response:
    session = await load_session(request, touch=False)
    return JSONResponse({"seconds_left": session.seconds_left})


def starlette_client(url: str, **options: Any) -> TestClient:
    app = Starlette(
        routes=[Route("/write", write), Route("/poll", poll), Route("/api/left", time_left)]
    )
    app.add_middleware(SessionMiddleware, url=url, config=prefixed(REMEMBER), **options)
    return TestClient(app)


def test_starlette_lazy_passive_load(stickless_url: str) -> None:
    with starlette_client(stickless_url, lazy=True) as client:
        client.get("/write")
        time.sleep(1.1)
        assert client.get("/poll").json()["seconds_left"] < 59.1
        assert client.get("/api/left").json()["seconds_left"] > 59.5


def test_starlette_passive_paths_in_both_modes(stickless_url: str) -> None:
    for lazy in (False, True):
        with starlette_client(stickless_url, lazy=lazy, passive_paths=["/api/"]) as client:
            client.get("/write")
            time.sleep(1.1)
            assert client.get("/api/left").json()["seconds_left"] < 59.1


def test_eager_middleware_refuses_a_passive_load_it_cannot_honour(stickless_url: str) -> None:
    with starlette_client(stickless_url) as client:
        client.get("/write")
        with pytest.raises(RuntimeError, match="lazy=True"):
            client.get("/poll")


def test_fastapi_passive_dependency(stickless_url: str) -> None:
    app = FastAPI()
    app.add_middleware(SessionMiddleware, url=stickless_url, config=prefixed(REMEMBER), lazy=True)

    @app.post("/write")
    async def write_route(s: Session = Depends(load_session)) -> dict[str, bool]:
        s["a"] = 1
        return {"ok": True}

    @app.get("/status")
    async def status(s: Session = Depends(passive_session)) -> dict[str, float | None]:
        return {"seconds_left": s.seconds_left}

    with TestClient(app) as client:
        client.post("/write")
        time.sleep(1.1)
        assert (client.get("/status").json()["seconds_left"] or 0) < 59.1


def test_wsgi_passive_paths(stickless_url: str) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        session = environ["stickless.session"]
        if environ["PATH_INFO"] == "/write":
            session["a"] = 1
        body = f"{session.seconds_left}".encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    config = prefixed(REMEMBER)
    http = WerkzeugClient(
        WSGIMiddleware(app, url=stickless_url, config=config, passive_paths=["/poll"])
    )
    http.get("/write")
    time.sleep(1.1)
    assert float(http.get("/poll").get_data(as_text=True)) < 59.1
    assert float(http.get("/read").get_data(as_text=True)) > 59.5
