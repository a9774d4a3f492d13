"""Session fixation through each adapter, the way apps really log in (issue 7, item 1).

The attacker gets a valid token T0 (any page that writes to the session) and plants it in the
victim's browser. The victim logs in with the framework's usual idiom, never calling
``login()``: Starlette / FastAPI ``request.session["user"] = name``, a WSGI app writing
``session["user_id"]``, Flask + Flask-Login ``login_user(user)``, Flask's documented
``session.clear()`` then new keys. Afterwards T0 must load nothing (the attacker's copy is
anonymous), the victim holds a new token, and the victim's data is intact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import fastapi
import flask
import flask_login
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket
from werkzeug.test import Client as WerkzeugClient

import stickless.asgi
import stickless.wsgi
from stickless.flask import Stickless

COOKIE = "session"


def _token_of(response: Any, name: str = COOKIE) -> str | None:
    """The token a response's Set-Cookie hands out, or None."""
    headers = response.headers  # werkzeug's (get_all) or httpx's (get_list)
    values = headers.get_all("set-cookie") if hasattr(headers, "get_all") else None
    header: str
    for header in values if values is not None else headers.get_list("set-cookie"):
        key, _, rest = header.partition("=")
        if key.strip() == name:
            return rest.split(";", 1)[0]
    return None


# ------------------------------------------------------------------ Starlette / FastAPI
def starlette_app(url: str) -> Starlette:
    async def touch(request: Request) -> Response:
        request.session["visits"] = request.session.get("visits", 0) + 1
        return PlainTextResponse("ok")

    async def signin(request: Request) -> Response:
        request.session["user"] = request.path_params["name"]
        return PlainTextResponse("in")

    async def whoami(request: Request) -> Response:
        return JSONResponse({"user": request.session.get("user")})

    app = Starlette(
        routes=[
            Route("/touch", touch),
            Route("/signin/{name}", signin),
            Route("/whoami", whoami),
        ]
    )
    app.add_middleware(stickless.asgi.SessionMiddleware, url=url)
    return app


def fastapi_app(url: str) -> fastapi.FastAPI:
    app = fastapi.FastAPI()

    @app.get("/touch")
    async def touch(request: fastapi.Request) -> dict[str, int]:
        request.session["visits"] = request.session.get("visits", 0) + 1
        return {"visits": request.session["visits"]}

    @app.post("/signin/{name}")
    async def signin(name: str, request: fastapi.Request) -> dict[str, bool]:
        request.session["user"] = name
        return {"ok": True}

    @app.get("/whoami")
    async def whoami(request: fastapi.Request) -> dict[str, str | None]:
        return {"user": request.session.get("user")}

    app.add_middleware(stickless.asgi.SessionMiddleware, url=url)
    return app


@pytest.mark.parametrize("build", [starlette_app, fastapi_app], ids=["starlette", "fastapi"])
def test_asgi_login_by_writing_the_user_key_renews(stickless_url: str, build: Any) -> None:
    with TestClient(build(stickless_url)) as http:

        def send(method: str, path: str, token: str) -> Any:
            http.cookies.clear()  # each request carries exactly the token given
            return http.request(method, path, headers={"Cookie": f"{COOKIE}={token}"})

        http.cookies.clear()
        planted = _token_of(http.get("/touch"))
        assert planted
        # the victim's browser carries the planted token and signs in
        renewed = _token_of(send("POST" if build is fastapi_app else "GET", "/signin/v", planted))
        assert renewed and renewed != planted
        assert send("GET", "/whoami", renewed).json() == {"user": "v"}
        assert send("GET", "/touch", renewed).status_code == 200
        assert send("GET", "/whoami", planted).json() == {"user": None}  # the planted copy


# ----------------------------------------------------------------------------- WSGI
def wsgi_app(url: str) -> stickless.wsgi.SessionMiddleware:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        session = environ["stickless.session"]
        path = environ["PATH_INFO"]
        if path == "/touch":
            session["visits"] = session.get("visits", 0) + 1
            body = "ok"
        elif path.startswith("/signin/"):
            session["user_id"] = path.rsplit("/", 1)[1]
            body = "in"
        else:
            body = str(session.get("user_id"))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body.encode()]

    return stickless.wsgi.SessionMiddleware(app, url=url)


def test_wsgi_login_by_writing_the_user_key_renews(stickless_url: str) -> None:
    app = wsgi_app(stickless_url)
    # arg-type: stickless' StartResponse takes exc_info with a None traceback, typeshed's does
    # not, so mypy sees no WSGIApplication in SessionMiddleware (werkzeug and wsgiref run it)
    attacker, victim = WerkzeugClient(app), WerkzeugClient(app)
    planted = _token_of(attacker.get("/touch"))
    assert planted
    victim.set_cookie(COOKIE, planted)
    renewed = _token_of(victim.get("/signin/victim"))
    assert renewed and renewed != planted
    assert victim.get("/whoami").text == "victim"
    assert attacker.get("/whoami").text == "None"
    app.store.close()


# ---------------------------------------------------------------------- Flask-Login
class User(flask_login.UserMixin):  # type: ignore[misc]  # flask_login has no types
    def __init__(self, name: str) -> None:
        self.id = name


@pytest.fixture
def flask_app(stickless_url: str) -> Iterator[flask.Flask]:
    app = flask.Flask("fixation")
    app.config.update(TESTING=True, SECRET_KEY="test only", STICKLESS_URL=stickless_url)
    Stickless(app)
    manager = flask_login.LoginManager(app)
    manager.user_loader(User)

    @app.get("/touch")
    def touch() -> str:
        flask.session["visits"] = flask.session.get("visits", 0) + 1
        return "ok"

    @app.post("/login/<name>")
    def login(name: str) -> str:
        flask_login.login_user(User(name))
        return "in"

    @app.post("/clear-login/<name>")
    def clear_login(name: str) -> str:  # Flask's documented way: clear, then the user's keys
        flask.session.clear()
        flask.session["name"] = name
        return "in"

    @app.get("/whoami")
    def whoami() -> dict[str, str | None]:
        current = flask_login.current_user
        return {
            "user": current.id if current.is_authenticated else None,
            "name": flask.session.get("name"),
        }

    yield app
    with contextlib.suppress(Exception):
        app.extensions["stickless"].store.close()


@pytest.mark.parametrize("route", ["/login/victim", "/clear-login/victim"])
def test_flask_login_renews_and_the_planted_token_stays_anonymous(
    flask_app: flask.Flask, route: str
) -> None:
    attacker, victim = flask_app.test_client(), flask_app.test_client()
    planted = _token_of(attacker.get("/touch"))
    assert planted
    victim.set_cookie(COOKIE, planted)
    renewed = _token_of(victim.post(route))
    assert renewed and renewed != planted
    me = victim.get("/whoami").get_json()
    assert me["user"] == "victim" or me["name"] == "victim"
    assert attacker.get("/whoami").get_json() == {"user": None, "name": None}


# ----------------------------------------------------- identity changed in place
def nested_starlette_app(url: str) -> Starlette:
    """Anonymous preferences live under ``user``; login fills in ``user["name"]`` in place,
    in a plain route, a streaming body (after the headers went out) or a WebSocket."""

    async def prefs(request: Request) -> Response:
        request.session.setdefault("user", {})["theme"] = "dark"
        return PlainTextResponse("ok")

    async def signin(request: Request) -> Response:
        request.session["user"]["name"] = "victim"
        return PlainTextResponse("in")

    async def signin_streaming(request: Request) -> Response:
        async def body() -> Any:
            yield b"a"
            request.session["user"]["name"] = "victim"  # too late for a new cookie
            yield b"b"

        return StreamingResponse(body())

    async def signin_websocket(websocket: WebSocket) -> None:
        await websocket.accept()
        websocket.session["user"]["name"] = await websocket.receive_text()
        await websocket.send_text("ok")
        await websocket.close()

    async def whoami(request: Request) -> Response:
        return JSONResponse(request.session.get("user"))

    app = Starlette(
        routes=[
            Route("/prefs", prefs),
            Route("/signin", signin),
            Route("/signin-streaming", signin_streaming),
            WebSocketRoute("/signin-websocket", signin_websocket),
            Route("/whoami", whoami),
        ]
    )
    app.add_middleware(stickless.asgi.SessionMiddleware, url=url)
    return app


@pytest.mark.parametrize("how", ["plain", "streaming", "websocket"])
def test_asgi_identity_changed_in_place_never_lands_under_the_planted_token(
    stickless_url: str, how: str
) -> None:
    with TestClient(nested_starlette_app(stickless_url)) as http:
        http.cookies.clear()
        planted = _token_of(http.get("/prefs"))
        assert planted
        cookie = {"Cookie": f"{COOKIE}={planted}"}
        http.cookies.clear()
        if how == "websocket":
            with http.websocket_connect("/signin-websocket", headers=cookie) as ws:
                ws.send_text("victim")
                ws.receive_text()
        else:
            response = http.get(
                "/signin" if how == "plain" else "/signin-streaming", headers=cookie
            )
            if how == "plain":
                assert _token_of(response) not in (None, planted)
        http.cookies.clear()
        # renewed: the planted token loads nothing; too late to renew: the change is dropped
        expected = None if how == "plain" else {"theme": "dark"}
        assert http.get("/whoami", headers=cookie).json() == expected


def test_flask_and_wsgi_identity_changed_in_place_renews(stickless_url: str) -> None:
    app = flask.Flask("nested")
    app.config.update(TESTING=True, SECRET_KEY="test only", STICKLESS_URL=stickless_url)
    Stickless(app)

    @app.get("/prefs")
    def prefs() -> str:
        flask.session.setdefault("user", {})["theme"] = "dark"
        return "ok"

    @app.get("/signin")
    def signin() -> str:
        flask.session["user"]["name"] = "victim"
        return "in"

    @app.get("/whoami")
    def whoami() -> Any:
        return flask.session.get("user") or {}

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        session = environ["stickless.session"]
        if environ["PATH_INFO"] == "/prefs":
            session.setdefault("user", {})["theme"] = "dark"
        elif environ["PATH_INFO"] == "/signin":
            session["user"]["name"] = "victim"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [repr(sorted(session.get("user", {}))).encode()]

    plain = stickless.wsgi.SessionMiddleware(wsgi, url=stickless_url)
    for target in (app, plain):
        client = WerkzeugClient(target, use_cookies=False)
        planted = _token_of(client.get("/prefs"))
        assert planted
        cookie = {"Cookie": f"{COOKIE}={planted}"}
        assert _token_of(client.get("/signin", headers=cookie)) not in (None, planted)
        assert b"victim" not in client.get("/whoami", headers=cookie).data
        assert b"name" not in client.get("/whoami", headers=cookie).data
    plain.store.close()
    app.extensions["stickless"].store.close()
