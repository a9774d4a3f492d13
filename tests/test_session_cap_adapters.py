"""The cap on live sessions per user (issue 12, item 4) through the web adapters, with each
framework's own test client against the real Valkey the suite starts: with
``on_limit="refuse"``, ``TooManySessions`` reaches the app (WSGI) or the view (Django), which
decides what to show (never a 503); with ``"evict_oldest"`` every login succeeds and the
oldest session's cookie is no longer logged in (WSGI, Django, ASGI, Flask). The ASGI and
Flask refusals, and the concurrency across processes on standalone, Sentinel and Cluster,
are in ``tests/test_session_cap.py``."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.validate import validator

import flask
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from werkzeug.test import Client as WerkzeugClient

sys.path.insert(0, str(Path(__file__).parent / "apps"))

from django_project import testing
from django_project.testing import configure

configure()

from django.contrib.auth.models import User  # noqa: E402
from django.test import Client as DjangoClient  # noqa: E402
from django.test import override_settings  # noqa: E402

from stickless import SessionConfig, SessionStore, TooManySessions  # noqa: E402
from stickless.asgi import SessionMiddleware as ASGIMiddleware  # noqa: E402
from stickless.asgi import session_of  # noqa: E402
from stickless.django import get_store  # noqa: E402
from stickless.flask import Stickless, current_session  # noqa: E402
from stickless.wsgi import LazySession  # noqa: E402
from stickless.wsgi import SessionMiddleware as WSGIMiddleware  # noqa: E402

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


def capped(mode: str, limit: int) -> SessionConfig:
    return SessionConfig(
        key_prefix=f"capweb{uuid.uuid4().hex[:8]}",
        max_sessions_per_user=limit,
        on_limit=mode,  # type: ignore[arg-type]  # a str from the parametrization
    )


# ------------------------------------------------------------------------------- WSGI
def respond(start_response: StartResponse, body: object, status: str = "200 OK") -> list[bytes]:
    start_response(status, [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]


def wsgi_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    lazy: LazySession = environ["stickless.session"]
    path = environ["PATH_INFO"]
    if path == "/login":  # the app saves the login itself, to handle the cap
        session = lazy.load()
        session.login("lee")
        try:
            result = environ["stickless.store"].save(session)
        except TooManySessions as refused:
            session.user_id = None  # give the login up: this session stays anonymous
            return respond(start_response, {"limit": refused.limit}, "409 Conflict")
        return respond(start_response, {"evicted": len(result.evicted)})
    if path == "/late-login":  # saved by the middleware, after the app returned
        lazy.login("lee")
        return respond(start_response, "welcome")
    if path == "/cart":
        lazy["cart"] = ["pear"]
        return respond(start_response, "added")
    if path == "/whoami":
        return respond(start_response, lazy.user_id)
    return respond(start_response, "not found", "404 Not Found")


def wsgi_client(store: SessionStore) -> WerkzeugClient:
    return WerkzeugClient(validator(WSGIMiddleware(wsgi_app, store=store)))


def get(client: WerkzeugClient, path: str) -> Any:
    response = client.get(path)
    response.get_data()
    response.close()  # as a server does
    return response


@pytest.fixture
def wsgi_store(stickless_url: str, request: pytest.FixtureRequest) -> Iterator[SessionStore]:
    mode, limit = request.param
    with SessionStore.from_url(stickless_url, capped(mode, limit)) as store:
        yield store


def whoami(client: WerkzeugClient) -> object:
    return get(client, "/whoami").json


@pytest.mark.parametrize("wsgi_store", [("refuse", 1)], indirect=True)
def test_wsgi_refusal_reaches_the_app(wsgi_store: SessionStore) -> None:
    laptop, phone, tablet = (wsgi_client(wsgi_store) for _ in range(3))
    assert get(laptop, "/login").json == {"evicted": 0}
    refused = get(tablet, "/login")
    assert refused.status_code == 409 and refused.json == {"limit": 1}  # the app's answer
    assert "Set-Cookie" not in refused.headers  # a new session: nothing of it was stored
    get(phone, "/cart")  # an anonymous session with a cart, stored
    refused = get(phone, "/login")
    assert refused.status_code == 409 and refused.json == {"limit": 1}
    held = phone.get_cookie("session")
    assert held is not None
    kept = wsgi_store.load(held.value)  # still anonymous, its cart kept
    assert kept is not None and kept.user_id is None and kept["cart"] == ["pear"]
    assert whoami(phone) is None and whoami(laptop) == "lee"
    # a login the middleware saves: the refusal leaves the app's call, never a 503 (no
    # wsgiref validator here: it complains of the response the exception abandoned)
    late = WerkzeugClient(WSGIMiddleware(wsgi_app, store=wsgi_store))
    late.set_cookie("session", held.value)
    with pytest.raises(TooManySessions):
        get(late, "/late-login")
    assert whoami(phone) is None and whoami(laptop) == "lee"
    assert len(wsgi_store.sessions_for("lee")) == 1


@pytest.mark.parametrize("wsgi_store", [("evict_oldest", 2)], indirect=True)
def test_wsgi_evict_oldest_signs_the_oldest_out(wsgi_store: SessionStore) -> None:
    first, second, third, fourth = (wsgi_client(wsgi_store) for _ in range(4))
    assert get(first, "/late-login").status_code == 200
    assert get(second, "/late-login").status_code == 200
    assert get(third, "/login").json == {"evicted": 1}  # the app's own save reports it
    assert whoami(first) is None  # the oldest cookie no longer logged in
    assert whoami(second) == whoami(third) == "lee"
    assert get(fourth, "/late-login").status_code == 200  # the middleware's save evicts too
    assert whoami(second) is None
    assert whoami(third) == whoami(fourth) == "lee"
    assert len(wsgi_store.sessions_for("lee")) == 2


# ----------------------------------------------------------------------------- Django
CREDENTIALS = {"username": "alice", "password": "wonderland"}


@pytest.fixture(scope="module")
def alice() -> User:
    return testing.user("alice", "wonderland")


@pytest.fixture
def django_cap(stickless_url: str, request: pytest.FixtureRequest) -> Iterator[SessionStore]:
    mode, limit = request.param
    with override_settings(STICKLESS_URL=stickless_url, STICKLESS_CONFIG=capped(mode, limit)):
        yield get_store()


def django_user(client: DjangoClient) -> object:
    return client.get("/whoami").json()["user"]


@pytest.mark.parametrize("django_cap", [("refuse", 1)], indirect=True)
def test_django_refusal_reaches_the_view(django_cap: SessionStore, alice: User) -> None:
    laptop, phone = DjangoClient(), DjangoClient()
    assert laptop.post("/capped-login", CREDENTIALS).json() == {"ok": True}
    phone.get("/set", {"key": "cart", "value": "pear"})  # an anonymous stored session
    refused = phone.post("/capped-login", CREDENTIALS)
    assert refused.status_code == 409 and refused.json() == {"ok": False, "limit": 1}
    assert django_user(phone) is None and django_user(laptop) == "alice"
    assert len(django_cap.sessions_for(str(alice.pk))) == 1
    with pytest.raises(TooManySessions):  # saved by the middleware: never a 503
        phone.post("/login", CREDENTIALS)
    assert django_user(laptop) == "alice"
    assert len(django_cap.sessions_for(str(alice.pk))) == 1


@pytest.mark.parametrize("django_cap", [("evict_oldest", 2)], indirect=True)
def test_django_evict_oldest_signs_the_oldest_out(django_cap: SessionStore, alice: User) -> None:
    first, second, third, fourth = (DjangoClient() for _ in range(4))
    for client in (first, second, third):
        assert client.post("/login", CREDENTIALS).json() == {"ok": True}
    assert django_user(first) is None  # the oldest cookie no longer logged in
    assert django_user(second) == django_user(third) == "alice"
    assert fourth.post("/capped-login", CREDENTIALS).json() == {"ok": True}
    assert django_user(second) is None
    assert django_user(third) == django_user(fourth) == "alice"
    assert len(django_cap.sessions_for(str(alice.pk))) == 2


# ----------------------------------------------------------------- ASGI and Flask
def test_asgi_evict_oldest_signs_the_oldest_out(stickless_url: str) -> None:
    async def login(request: Request) -> PlainTextResponse:
        session_of(request.scope).login("jo")
        return PlainTextResponse("welcome")

    async def who(request: Request) -> JSONResponse:
        return JSONResponse(session_of(request.scope).user_id)

    app = Starlette(routes=[Route("/login", login, methods=["POST"]), Route("/whoami", who)])
    wrapped = ASGIMiddleware(app, url=stickless_url, config=capped("evict_oldest", 2))
    clients = [TestClient(wrapped) for _ in range(3)]
    for client in clients:
        assert client.post("/login").status_code == 200
    assert [c.get("/whoami").json() for c in clients] == [None, "jo", "jo"]


def test_flask_evict_oldest_signs_the_oldest_out(stickless_url: str) -> None:
    app = flask.Flask(__name__)
    store = SessionStore.from_url(stickless_url, capped("evict_oldest", 2))
    Stickless(app, store=store)

    @app.post("/login")
    def login() -> str:
        current_session().login("kim")
        return "welcome"

    @app.get("/whoami")
    def who() -> dict[str, str | None]:
        return {"user": current_session().user_id}

    try:
        clients = [app.test_client() for _ in range(3)]
        for client in clients:
            assert client.post("/login").status_code == 200
        assert [c.get("/whoami").json for c in clients] == [
            {"user": None},
            {"user": "kim"},
            {"user": "kim"},
        ]
    finally:
        store.close()
