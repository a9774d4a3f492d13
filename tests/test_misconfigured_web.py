"""Every adapter answers a misconfigured store (WRONGPASS, NOPERM) with a 500 and no
Retry-After, never "retry shortly", and never fails open on it; an outage stays a 503."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import flask
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from werkzeug.test import Client

from stickless import SessionConfig
from stickless.asgi import SessionMiddleware as AsgiMiddleware
from stickless.embedded import Standalone, start_standalone
from stickless.flask import Stickless
from stickless.wsgi import SessionMiddleware

PASSWORD = "right-password"


@pytest.fixture(scope="module")
def server() -> Iterator[Standalone]:
    with start_standalone() as node:
        admin = node.node.client()
        admin.execute_command(  # type: ignore[no-untyped-call]
            "ACL", "SETUSER", "app", "on", f">{PASSWORD}", "allkeys", "+@all"
        )
        admin.execute_command(  # type: ignore[no-untyped-call]
            "ACL",
            "SETUSER",
            "reader",
            "on",
            f">{PASSWORD}",
            "allkeys",
            "-@all",
            "+ping",
            "+hello",
            "+hgetall",
            "+pttl",
        )
        admin.close()
        yield node


def urls(server: Standalone) -> list[str]:
    host = f"{server.node.host}:{server.node.port}"
    return [
        f"redis://app:{quote('wrong')}@{host}/0",  # WRONGPASS at the load
        f"redis://reader:{PASSWORD}@{host}/0",  # NOPERM at the save
    ]


CFG = SessionConfig(retries=0)


def assert_misconfigured(status: int, headers: Any, body: bytes) -> None:
    assert status == 500, body
    assert "Retry-After" not in headers
    assert b"retry" not in body.lower()


def counter(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    session = environ["stickless.session"]
    session["n"] = session.get("n", 0) + 1
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


@pytest.mark.parametrize("fail_open", [False, True])
def test_wsgi(server: Standalone, fail_open: bool) -> None:
    for url in urls(server):
        app = SessionMiddleware(counter, url=url, config=CFG, fail_open=fail_open)
        client = Client(cast(Any, app))
        client.set_cookie("session", "A" * 11 + "." + "B" * 43)  # a load happens
        response = client.get("/")
        assert_misconfigured(response.status_code, response.headers, response.get_data())


@pytest.mark.parametrize("fail_open", [False, True])
def test_starlette(server: Standalone, fail_open: bool) -> None:
    async def endpoint(request: Request) -> PlainTextResponse:
        request.session["n"] = request.session.get("n", 0) + 1
        return PlainTextResponse("ok")

    for url in urls(server):
        asgi = Starlette(routes=[Route("/", endpoint)])
        asgi.add_middleware(AsgiMiddleware, url=url, config=CFG, fail_open=fail_open)
        with TestClient(asgi) as client:
            client.cookies.set("session", "A" * 11 + "." + "B" * 43)
            response = client.get("/")
        assert_misconfigured(response.status_code, response.headers, response.content)


@pytest.mark.parametrize("fail_open", [False, True])
def test_flask(server: Standalone, fail_open: bool) -> None:
    for url in urls(server):
        app = flask.Flask("misconfigured")

        @app.get("/")
        def count() -> str:
            flask.session["n"] = flask.session.get("n", 0) + 1
            return "ok"

        app.config.update(STICKLESS_URL=url, STICKLESS_CONFIG=CFG, STICKLESS_FAIL_OPEN=fail_open)
        Stickless(app)
        client = app.test_client()
        client.set_cookie("session", "A" * 11 + "." + "B" * 43)
        response = client.get("/")
        assert_misconfigured(response.status_code, response.headers, response.get_data())


def test_django(server: Standalone) -> None:
    sys.path.insert(0, str(Path(__file__).parent / "apps"))
    from django_project.testing import configure

    configure()
    from django.test import Client as DjangoClient
    from django.test import override_settings

    from stickless.web.policy import FailurePolicy

    for url in urls(server):
        for policy in (FailurePolicy(), FailurePolicy(fail_open=True)):
            with override_settings(
                STICKLESS_URL=url, STICKLESS_CONFIG=CFG, STICKLESS_FAILURE_POLICY=policy
            ):
                client = DjangoClient(raise_request_exception=False)
                client.cookies["sessionid"] = "A" * 11 + "." + "B" * 43
                response = client.get("/set", {"key": "n", "value": "1"})
                assert_misconfigured(response.status_code, response.headers, response.content)
