"""The ASGI middleware's lazy mode: routes that never use the session cost no round trip, even
with a cookie; routes that do await ``load_session`` (a FastAPI dependency)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fastapi
import pytest
from fastapi.testclient import TestClient

from stickless import Session, SessionConfig
from stickless.asgi import SessionMiddleware
from stickless.embedded import start_standalone
from stickless.fastapi import session as session_dependency


def make_app(url: str) -> fastapi.FastAPI:
    app = fastapi.FastAPI()

    @app.get("/untouched")
    async def untouched() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/count")
    async def count(session: Session = fastapi.Depends(session_dependency)) -> dict[str, int]:
        return {"n": session.incr("n")}

    @app.get("/forgot-to-load")
    async def forgot(request: fastapi.Request) -> dict[str, Any]:
        return {"user": request.session.get("user")}

    app.add_middleware(SessionMiddleware, url=url, lazy=True, config=SessionConfig(retries=0))
    return app


@pytest.fixture
def client(stickless_url: str) -> Iterator[TestClient]:
    with TestClient(make_app(stickless_url)) as http:
        yield http


def batches_of(client: TestClient) -> list[Any]:
    """Count the store's round trips (each ``send`` is one)."""
    middleware = client.app.middleware_stack  # type: ignore[attr-defined]
    while not isinstance(middleware, SessionMiddleware):
        middleware = middleware.app
    store = middleware.store
    sent: list[Any] = []
    original = store.send

    async def send(batch: Any) -> Any:
        sent.append(batch)
        return await original(batch)

    store.send = send  # type: ignore[method-assign]
    return sent


def test_a_route_that_never_loads_costs_nothing_even_with_a_cookie(client: TestClient) -> None:
    assert client.get("/count").json() == {"n": 1}
    assert client.cookies.get("session")  # the client holds a token now
    sent = batches_of(client)
    response = client.get("/untouched")
    assert response.status_code == 200 and sent == []
    assert "set-cookie" not in response.headers and "vary" not in response.headers


def test_the_dependency_loads_and_the_middleware_saves(client: TestClient) -> None:
    client.get("/count")
    sent = batches_of(client)
    assert client.get("/count").json() == {"n": 2}
    assert len(sent) == 2  # load + save
    assert client.get("/count").json() == {"n": 3}


def test_using_the_session_without_loading_it_says_what_to_do(client: TestClient) -> None:
    with pytest.raises(RuntimeError, match="load_session"):
        client.get("/forgot-to-load")


def test_an_unavailable_store_in_the_dependency_is_a_503() -> None:
    with start_standalone() as server:
        url = server.url
        with TestClient(make_app(url)) as http:
            assert http.get("/count").json() == {"n": 1}
            server.stop()
            response = http.get("/count")
            assert response.status_code == 503 and response.headers["retry-after"]
            assert http.get("/untouched").status_code == 200  # no session, no store needed
