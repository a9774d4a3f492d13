"""Per-session lifetimes (remember me) and passive reads, on a real Valkey (issue 12, items 1
and 2): the server enforces a session's own timeouts; a passive load does not slide them."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from stickless import SessionConfig
from stickless.asgi import SessionMiddleware
from stickless.store.keys import KeyLayout
from stickless.tokens import token_id


def config(**options: Any) -> SessionConfig:
    return SessionConfig(key_prefix=f"lt{uuid.uuid4().hex[:8]}", **options)


def pttl(url: str, cfg: SessionConfig, session: Any) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.pttl(KeyLayout(cfg.key_prefix).data(token_id(session.raw_token).family)))
    finally:
        client.close()


def test_remember_me_outlives_the_configured_idle_timeout(
    stickless_url: str, store_factory: Any
) -> None:
    cfg = config(idle_timeout=60, max_idle_timeout=30 * 86400, max_absolute_timeout=90 * 86400)
    store = store_factory(stickless_url, cfg)
    s = store.new()
    s.login("ann")
    s.set_lifetime(idle=timedelta(days=30), absolute=timedelta(days=90))
    store.save(s)
    assert pttl(stickless_url, cfg, s) > 60_000 * 60  # far past the 60 s default
    loaded = store.load(s.token)
    assert loaded is not None and loaded.meta is not None
    assert loaded.meta.idle_ms == 30 * 86400 * 1000
    assert loaded.meta.deadline_ms - loaded.meta.created_ms == 90 * 86400 * 1000
    # the user index entry lives as long as the session
    assert store.sessions_for("ann")[0].absolute_expires_at == loaded.absolute_expires_at


def test_a_shorter_lifetime_is_enforced_by_the_server(
    stickless_url: str, store_factory: Any
) -> None:
    store = store_factory(stickless_url, config(touch_interval=0))
    s = store.new()
    s["a"] = 1
    s.set_lifetime(idle=0.4)
    store.save(s)
    time.sleep(0.2)
    assert store.load(s.token) is not None  # used: the idle window slides
    time.sleep(0.3)
    assert store.load(s.token) is not None
    time.sleep(0.6)
    assert store.load(s.token) is None  # 0.6 s idle > 0.4 s: gone


def test_an_absolute_lifetime_counts_from_creation(stickless_url: str, store_factory: Any) -> None:
    store = store_factory(stickless_url, config(touch_interval=0))
    s = store.new()
    s["a"] = 1
    store.save(s)
    s.set_lifetime(absolute=0.6)
    store.save(s)
    deadline = time.monotonic() + 0.45
    while time.monotonic() < deadline:  # activity does not help
        assert store.load(s.token) is not None
        time.sleep(0.05)
    time.sleep(0.4)
    assert store.load(s.token) is None


@pytest.mark.parametrize(("idle", "absolute"), [(61, None), (None, 86401), (0, None)])
def test_lifetimes_past_the_maxima_are_refused_at_the_call(
    idle: float | None, absolute: float | None
) -> None:
    from stickless.store.plan import Planner

    s = Planner(config(idle_timeout=60), "memory").new()
    with pytest.raises(ValueError, match=r"max_|positive"):
        s.set_lifetime(idle=idle, absolute=absolute)
    assert s.lifetime is None


def test_a_passive_load_does_not_keep_the_session_alive(
    stickless_url: str, store_factory: Any
) -> None:
    cfg = config(idle_timeout=1.0, touch_interval=0)
    store = store_factory(stickless_url, cfg)
    s = store.new()
    s["a"] = 1
    store.save(s)
    time.sleep(0.3)
    before = pttl(stickless_url, cfg, s)
    passive = store.load(s.token, touch=False)
    assert passive is not None and passive.last_access == s.last_access
    assert pttl(stickless_url, cfg, s) <= before  # not refreshed
    left = passive.seconds_left
    assert left is not None and 0.4 < left <= 0.75
    time.sleep(0.8)
    assert store.load(s.token, touch=False) is None  # polling did not keep it alive


def test_the_cookie_follows_the_sessions_own_lifetime(stickless_url: str) -> None:
    async def remember(request: Request) -> Response:
        request.session["user"] = "ann"
        request.session.set_lifetime(absolute=7 * 86400)  # type: ignore[attr-defined]  # Session
        return PlainTextResponse("ok")

    async def touch(request: Request) -> Response:
        request.session["n"] = 1
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/touch", touch), Route("/remember", remember)])
    cfg = config(max_absolute_timeout=30 * 86400)
    app.add_middleware(SessionMiddleware, url=stickless_url, config=cfg)
    with TestClient(app) as http:
        first = http.get("/touch").headers["set-cookie"]
        assert "Max-Age=86400" in first or "Max-Age=86399" in first  # the configured 24 h
        again = http.get("/remember").headers["set-cookie"]
        max_age = int(again.split("Max-Age=")[1].split(";")[0])
        assert 7 * 86400 - 5 <= max_age <= 7 * 86400


def test_reads_keep_a_session_whose_own_idle_timeout_is_below_touch_interval(
    stickless_url: str, store_factory: Any
) -> None:
    """A session given a 1 s idle timeout (``set_lifetime``) under the default 60 s
    touch_interval, read every 0.2 s: the load touches it once half its idle timeout has
    passed, so it stays alive while it is read (it expired after 1 s before)."""
    store = store_factory(stickless_url, config())
    s = store.new()
    s["a"] = 1
    s.set_lifetime(idle=1)
    store.save(s)
    started = time.monotonic()
    reads = 0
    while time.monotonic() - started < 2.5:
        assert store.load(s.token) is not None, f"expired while read, after {reads} reads"
        reads += 1
        time.sleep(0.2)
    time.sleep(1.2)  # and unused, it ends on time
    assert store.load(s.token) is None
