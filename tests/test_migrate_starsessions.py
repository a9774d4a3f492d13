"""Migration from starsessions' Redis store to ``stickless.asgi.SessionMiddleware``.

The old sessions are written by the real starsessions (``SessionMiddleware`` +
``RedisStore``, JSON with its ``__metadata__``) through Starlette's test client; then the
same routes run behind stickless's middleware with ``migrate_from=StarsessionsRedis(...)``,
on the same Valkey. Proved here: the data and the login survive (eager and lazy mode); the
metadata is not carried as data; the old key lives only the grace; parallel requests with
the old cookie stay logged in; a replayed old cookie is worthless afterwards; a planted
pickle is never executed; a stickless token never reaches the old store; an old store that
is down is a 503 (or, failing open, a stand-in that keeps the old cookie).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")

from starlette.applications import Starlette  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse, PlainTextResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from migrate_helpers import (  # noqa: E402
    PROTOCOLS,
    assert_live,
    assert_nothing_secret_logged,
    planted,
)
from stickless.asgi import SessionMiddleware, load_session  # noqa: E402
from stickless.errors import ConfigurationError  # noqa: E402
from stickless.migrate import StarletteCookie, StarsessionsRedis  # noqa: E402

starsessions = pytest.importorskip("starsessions")
redis_store = pytest.importorskip("starsessions.stores.redis")

PROFILE = {"lang": "fr", "scores": [1, 2.5, None, True], "nested": {"a": {"b": "c"}}}


# ----------------------------------------------------------------------- the routes
async def login(request: Request) -> PlainTextResponse:
    await _loaded(request)
    request.session["user"] = "alice"
    request.session["cart"] = ["apple", "pear"]
    request.session["profile"] = PROFILE
    return PlainTextResponse("in")


async def whoami(request: Request) -> JSONResponse:
    session = await _loaded(request)
    return JSONResponse({"user": session.get("user")})


async def data(request: Request) -> JSONResponse:
    session = await _loaded(request)
    return JSONResponse(dict(session))


async def logout(request: Request) -> PlainTextResponse:
    session = await _loaded(request)
    session.logout()
    return PlainTextResponse("out")


async def _loaded(request: Request) -> Any:
    """The session: stickless's lazy mode needs ``load_session``; starsessions loaded it."""
    if request.scope.get("stickless.cycle") is not None:
        return await load_session(request)
    return request.session


ROUTES = [
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/whoami", whoami),
    Route("/data", data),
]


def old_app(url: str) -> tuple[Starlette, Any]:
    connection = redis.asyncio.Redis.from_url(url)
    store = redis_store.RedisStore(connection=connection)
    app = Starlette(
        routes=ROUTES,
        middleware=[
            Middleware(
                starsessions.SessionMiddleware,
                store=store,
                lifetime=3600,
                cookie_https_only=False,  # the test client speaks http
            ),
            Middleware(starsessions.SessionAutoloadMiddleware),
        ],
    )
    return app, connection


def new_app(url: str, source: Any, **options: Any) -> Starlette:
    return Starlette(
        routes=ROUTES,
        middleware=[Middleware(SessionMiddleware, url=url, migrate_from=source, **options)],
    )


class Old:
    """alice, logged in on the starsessions app."""

    def __init__(self, url: str) -> None:
        app, connection = old_app(url)
        with TestClient(app) as client:
            assert client.post("/login").status_code == 200
            assert client.get("/whoami").json() == {"user": "alice"}
            self.view = client.get("/data").json()
            """What the old app showed of the session."""
            self.cookie: str = client.cookies["session"]
            assert client.portal is not None
            client.portal.call(connection.aclose)
        self.key = "starsessions." + self.cookie


def client_with(app: Starlette, cookie: str) -> TestClient:
    client = TestClient(app)
    client.cookies.set("session", cookie, domain="testserver.local")
    return client


@pytest.fixture
def old_redis(stickless_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(stickless_url)
    yield client
    client.close()


# ---------------------------------------------------------------------------- tests
@pytest.mark.parametrize("lazy", [False, True], ids=["eager", "lazy"])
@pytest.mark.parametrize("where", ["stickless's client", "url"])
def test_users_stay_logged_in_across_the_switch(
    stickless_url: str,
    old_redis: redis.Redis,
    caplog: pytest.LogCaptureFixture,
    lazy: bool,
    where: str,
) -> None:
    old = Old(stickless_url)
    stored = old_redis.get(old.key)
    assert isinstance(stored, bytes) and b'"__metadata__"' in stored  # JSON + its metadata
    assert old.view == {"user": "alice", "cart": ["apple", "pear"], "profile": PROFILE}
    caplog.set_level(logging.INFO, logger="stickless")
    source = StarsessionsRedis(url=stickless_url if where == "url" else None)
    app = new_app(stickless_url, source, lazy=lazy)

    with client_with(app, old.cookie) as client:
        assert client.get("/whoami").json() == {"user": "alice"}  # still logged in
        token = client.cookies["session"]
        assert token != old.cookie and "." in token  # a stickless token now
        assert client.get("/data").json() == old.view  # same data, no __metadata__
        assert 0 < old_redis.pttl(old.key) <= 60_000  # retired: the grace, not 1 hour
    with client_with(app, old.cookie) as parallel:  # sent with the old cookie meanwhile
        assert parallel.get("/whoami").json() == {"user": "alice"}
    assert 0 < old_redis.pttl(old.key) <= 60_000  # not extended
    assert any("migrated from starsessions (3 keys)" in r.getMessage() for r in caplog.records)
    assert_nothing_secret_logged(caplog, old.cookie, token, "apple", "pear")


def test_the_old_session_dies_after_the_grace(stickless_url: str, old_redis: redis.Redis) -> None:
    old = Old(stickless_url)
    app = new_app(stickless_url, StarsessionsRedis(grace=1))
    with client_with(app, old.cookie) as client:
        assert client.get("/whoami").json() == {"user": "alice"}
        time.sleep(1.2)
        assert old_redis.exists(old.key) == 0  # moved, not copied
        assert client.get("/whoami").json() == {"user": "alice"}  # the new session lives on
        client.post("/logout")
        assert client.get("/whoami").json() == {"user": None}
    with client_with(app, old.cookie) as replay:  # a copy of the old cookie is worthless
        assert replay.get("/whoami").json() == {"user": None}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_planted_pickle_is_never_executed(
    stickless_url: str, old_redis: redis.Redis, tmp_path: Path, protocol: int
) -> None:
    old = Old(stickless_url)
    marker = tmp_path / "pwned"
    payload = planted(marker, protocol)
    old_redis.set(old.key, payload, ex=3600)
    with client_with(new_app(stickless_url, StarsessionsRedis()), old.cookie) as client:
        assert client.get("/whoami").json() == {"user": None}  # a fresh session
        assert client.get("/data").json() == {}
    assert not marker.exists()
    assert old_redis.get(old.key) == payload  # left alone
    assert_live(tmp_path, protocol)


@pytest.mark.parametrize("stored", [b"[1, 2]", b"nope", b'"text"', b"\x81\xa1a\x01"])
def test_undecodable_values_are_no_session(
    stickless_url: str, old_redis: redis.Redis, stored: bytes
) -> None:
    old = Old(stickless_url)
    old_redis.set(old.key, stored, ex=3600)
    with client_with(new_app(stickless_url, StarsessionsRedis()), old.cookie) as client:
        assert client.get("/whoami").json() == {"user": None}
    assert old_redis.get(old.key) == stored


def test_only_foreign_values_reach_the_old_store(stickless_url: str) -> None:
    """A callable prefix (starsessions allows one) records what is looked up: a stickless
    token, live or dead, never is; malformed ids are not either."""
    asked: list[str] = []

    def prefix(session_id: str) -> str:
        asked.append(session_id)
        return "starsessions." + session_id

    app = new_app(stickless_url, StarsessionsRedis(prefix=prefix))
    with TestClient(app) as client:
        client.post("/login")
        token = client.cookies["session"]
    for value in (token, token[:-1] + ("A" if token[-1] != "A" else "B")):
        with client_with(app, value) as client:
            client.get("/whoami")
    for value in ("a{b}", "x" * 300, "a,b"):
        with client_with(app, value) as client:
            assert client.get("/whoami").json() == {"user": None}
    with client_with(app, "0123456789abcdef0123456789abcdef") as client:
        assert client.get("/whoami").json() == {"user": None}  # unknown: asked, not found
    assert asked == ["0123456789abcdef0123456789abcdef"]


def test_the_old_store_down(stickless_url: str) -> None:
    old = Old(stickless_url)
    dead = StarsessionsRedis(url="redis://127.0.0.1:1/0")
    with client_with(new_app(stickless_url, dead), old.cookie) as client:
        response = client.get("/whoami")
        assert response.status_code == 503 and response.headers["retry-after"]
        assert "set-cookie" not in response.headers
    with client_with(new_app(stickless_url, dead, fail_open=True), old.cookie) as client:
        response = client.get("/whoami")
        assert response.status_code == 200 and response.json() == {"user": None}
        assert "set-cookie" not in response.headers  # the old cookie stays for a retry
    with client_with(new_app(stickless_url, StarsessionsRedis()), old.cookie) as client:
        assert client.get("/whoami").json() == {"user": "alice"}  # back: still logged in


def test_migrate_from_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="asyncio migration source"):
        SessionMiddleware(PlainTextResponse("x"), url="redis://x", migrate_from="starsessions")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="url or client"):
        StarsessionsRedis(url="redis://x", client=object())
    with pytest.raises(ConfigurationError, match="grace"):
        StarsessionsRedis(grace=0)
    assert StarletteCookie(secret_key="s").name  # an AsyncSource as well
