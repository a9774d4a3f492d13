"""Prometheus metrics around real store operations: every counter and histogram moves
exactly as the operations say, for SessionStore and AsyncSessionStore, and the documented
ways to expose them (Starlette, Flask/WSGI) serve them."""

from __future__ import annotations

import sys
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from stickless import (
    AsyncSessionStore,
    SessionConfig,
    SessionStore,
    SessionTooLarge,
    StoreUnavailable,
)
from stickless.ops.metrics import OPERATIONS, SessionMetrics, instrument, metrics_of


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def config() -> SessionConfig:
    return SessionConfig(key_prefix=f"m{uuid.uuid4().hex[:10]}")


@pytest.fixture
def store(stickless_valkey: Any, config: SessionConfig) -> Iterator[SessionStore]:
    store = SessionStore.from_url(stickless_valkey.url, config)
    yield store
    store.close()


class Reader:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def __call__(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(f"stickless_{name}", labels)
        return 0.0 if value is None else value

    def calls(self, operation: str) -> float:
        return self("operation_duration_seconds_count", operation=operation)

    def counters(self) -> dict[str, float]:
        saves = ("saved", "unchanged", "destroyed", "gone")
        return {
            "load:hit": self("loads_total", result="hit"),
            "load:miss": self("loads_total", result="miss"),
            **{f"save:{o}": self("saves_total", outcome=o) for o in saves},
            "stale": self("stale_writes_refused_total"),
            "destroy:destroyed": self("destroys_total", result="destroyed"),
            "destroy:missing": self("destroys_total", result="missing"),
            "revoked": self("revoked_sessions_total"),
        }


def test_every_operation_is_counted(store: SessionStore, registry: CollectorRegistry) -> None:
    assert instrument(store, registry=registry) is store
    read = Reader(registry)
    assert all(value == 0 for value in read.counters().values())  # exported from the start

    s = store.new()
    s["cart"] = ["apple"]
    assert store.save(s).outcome == "saved"  # saved 1
    again = store.load(s.token)  # hit 1
    assert again is not None
    assert store.save(again).outcome == "unchanged"  # unchanged 1
    assert store.load("not-a-token") is None  # miss 1
    late = store.load(s.token)  # hit 2
    assert late is not None
    again.invalidate()
    assert store.save(again).outcome == "destroyed"  # destroyed 1 (logout)
    late["x"] = 1
    assert store.save(late).outcome == "gone"  # gone 1, stale write refused 1
    assert store.load(s.token) is None  # miss 2

    other = store.new()
    other["n"] = 1
    store.save(other)  # saved 2
    assert store.destroy(other.token) is True  # destroys: destroyed 1
    assert store.destroy(other.token) is False  # destroys: missing 1

    for _ in range(2):
        u = store.new()
        u.user_id = "alice"
        store.save(u)  # saved 3, 4
    assert len(store.sessions_for("alice")) == 2
    assert store.revoke_user("alice") == 2  # revoked 2

    assert read.counters() == {
        "load:hit": 2,
        "load:miss": 2,
        "save:saved": 4,
        "save:unchanged": 1,
        "save:destroyed": 1,
        "save:gone": 1,
        "stale": 1,
        "destroy:destroyed": 1,
        "destroy:missing": 1,
        "revoked": 2,
    }
    assert read.calls("load") == 4
    assert read.calls("save") == 7
    assert read.calls("destroy") == 2
    assert read.calls("sessions_for") == 1
    assert read.calls("revoke_user") == 1
    assert read("operation_duration_seconds_sum", operation="load") > 0
    bucket = read("operation_duration_seconds_bucket", operation="load", le="+Inf")
    assert bucket == 4
    assert read("errors_total", operation="save", error="SessionTooLarge") == 0


def test_errors_are_counted_by_type(
    stickless_valkey: Any, config: SessionConfig, registry: CollectorRegistry
) -> None:
    small = instrument(
        SessionStore.from_url(stickless_valkey.url, config.with_options(max_size=10)),
        registry=registry,
    )
    read = Reader(registry)
    s = small.new()
    s["big"] = "x" * 100
    with pytest.raises(SessionTooLarge):
        small.save(s)
    small.close()
    down = instrument(
        SessionStore.from_url(
            "redis://127.0.0.1:1/0", config.with_options(retries=0, connect_timeout=0.5)
        ),
        registry=registry,
    )
    with pytest.raises(StoreUnavailable):
        down.load(down.new().token)
    down.close()
    assert read("errors_total", operation="save", error="SessionTooLarge") == 1
    assert read("errors_total", operation="load", error="StoreUnavailable") == 1
    assert read.calls("save") == 1 and read.calls("load") == 1  # errors are timed too
    assert read("saves_total", outcome="saved") == 0
    assert read("loads_total", result="miss") == 0


async def test_async_store_is_counted_the_same(
    stickless_valkey: Any, config: SessionConfig, registry: CollectorRegistry
) -> None:
    store = instrument(AsyncSessionStore.from_url(stickless_valkey.url, config), registry=registry)
    read = Reader(registry)
    try:
        s = store.new()
        s["n"] = 1
        s.user_id = "bob"
        assert (await store.save(s)).outcome == "saved"
        assert await store.load(s.token) is not None
        assert await store.load("nope") is None
        assert len(await store.sessions_for("bob")) == 1
        assert await store.revoke_user("bob") == 1
        assert await store.destroy(s.token) is False
    finally:
        await store.aclose()
    assert read("saves_total", outcome="saved") == 1
    assert read("loads_total", result="hit") == 1
    assert read("loads_total", result="miss") == 1
    assert read("revoked_sessions_total") == 1
    assert read("destroys_total", result="missing") == 1
    assert {op: read.calls(op) for op in OPERATIONS} == {
        "load": 2,
        "save": 1,
        "destroy": 1,
        "sessions_for": 1,
        "revoke_user": 1,
    }


def test_instrumenting_twice_and_sharing_a_registry(
    stickless_valkey: Any, config: SessionConfig, registry: CollectorRegistry
) -> None:
    first = SessionStore.from_url(stickless_valkey.url, config)
    second = SessionStore.from_url(stickless_valkey.url, config)
    instrument(first, registry=registry)
    instrument(first, registry=registry)  # no double counting
    instrument(second, registry=registry)  # no "duplicated timeseries" error: shared
    assert metrics_of(first) is metrics_of(second) is not None
    read = Reader(registry)
    for store in (first, second):
        store.load("nope")
        store.close()
    assert read("loads_total", result="miss") == 2
    custom = SessionMetrics(CollectorRegistry(), namespace="shop_sessions")
    third = instrument(SessionStore.from_url(stickless_valkey.url, config), metrics=custom)
    third.load("nope")
    third.close()
    assert custom.registry.get_sample_value("shop_sessions_loads_total", {"result": "miss"}) == 1
    assert b"stickless_saves_total" in generate_latest(registry)


def test_missing_prometheus_client_says_how_to_install(
    stickless_valkey: Any, config: SessionConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    store = SessionStore.from_url(stickless_valkey.url, config)
    with pytest.raises(ImportError, match=r"pip install 'stickless\[metrics\]'"):
        instrument(store, registry=object())
    store.close()


def test_starlette_exposure(
    stickless_valkey: Any, config: SessionConfig, registry: CollectorRegistry
) -> None:
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from prometheus_client import make_asgi_app
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route
    from starlette.testclient import TestClient

    from stickless.asgi import SessionMiddleware

    async def visit(request: Request) -> PlainTextResponse:
        request.session["visits"] = request.session.get("visits", 0) + 1
        return PlainTextResponse(str(request.session["visits"]))

    store = instrument(AsyncSessionStore.from_url(stickless_valkey.url, config), registry=registry)
    app = Starlette(
        routes=[Route("/", visit), Mount("/metrics", app=make_asgi_app(registry))],
        # no session for the scrapes: they would load it (and count a load) for nothing
        middleware=[Middleware(SessionMiddleware, store=store, exclude_paths=["/metrics"])],
    )
    with TestClient(app) as client:
        assert client.get("/").text == "1"
        assert client.get("/").text == "2"
        metrics = client.get("/metrics/").text
    assert 'stickless_saves_total{outcome="saved"} 2.0' in metrics
    assert 'stickless_loads_total{result="hit"} 1.0' in metrics


def test_flask_exposure(
    stickless_valkey: Any, config: SessionConfig, registry: CollectorRegistry
) -> None:
    from flask import Flask, session
    from prometheus_client import make_wsgi_app
    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from werkzeug.test import Client

    from stickless.flask import Stickless

    app = Flask(__name__)
    app.config["SECRET_KEY"] = "test"
    store = instrument(SessionStore.from_url(stickless_valkey.url, config), registry=registry)
    Stickless(app, store=store)

    @app.get("/")
    def visit() -> str:
        session["visits"] = session.get("visits", 0) + 1
        return str(session["visits"])

    app.wsgi_app = DispatcherMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, {"/metrics": make_wsgi_app(registry)}
    )
    client = Client(app)
    assert client.get("/").get_data(as_text=True) == "1"
    assert client.get("/").get_data(as_text=True) == "2"
    metrics = client.get("/metrics").get_data(as_text=True)
    store.close()
    assert 'stickless_saves_total{outcome="saved"} 2.0' in metrics
    assert 'stickless_loads_total{result="hit"} 1.0' in metrics


def test_django_engine_is_counted(stickless_url: str, registry: CollectorRegistry) -> None:
    """Django's engine runs the store's plans itself (not its methods): counted all the same,
    as docs/operations.md tells Django users to ``instrument(get_store())``."""
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "apps"))
    from django_project.testing import configure

    configure()
    from django.test import Client, override_settings

    from stickless.django import get_store

    with override_settings(STICKLESS_URL=stickless_url):
        instrument(get_store(), registry=registry)
        client = Client()
        assert client.get("/set?key=a&value=1").status_code == 200
        assert client.get("/read?key=a").status_code == 200
    read = Reader(registry)
    assert read("saves_total", outcome="saved") == 1
    assert read("loads_total", result="hit") == 1
