"""OpenTelemetry spans and metrics around real store operations (the SDK's in-memory span
exporter and metric reader, real Valkey): span names, attributes and outcomes, parent and
child spans under an app's span, the sync and async stores through one hook, no token,
user id or value in any attribute unless asked for, error spans for an unavailable store,
the OTel metrics equal to the Prometheus ones, redis-py's own instrumentation nesting under
our spans (cluster)."""

from __future__ import annotations

import asyncio
import importlib
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from stickless import (
    AsyncSessionStore,
    ReplicationTimeout,
    SessionConfig,
    SessionConflict,
    SessionStore,
    StoreUnavailable,
)
from stickless.ops import metrics as prometheus
from stickless.ops.observe import observers_of, topology_of
from stickless.ops.tracing import OtelMetrics, instrument, tracing_of
from stickless.store import sync


class Telemetry:
    """A tracer provider and a meter provider of their own, read in memory."""

    def __init__(self) -> None:
        self.spans_out = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans_out))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.tracer = self.tracer_provider.get_tracer("app")

    def instrument(self, store: Any, **options: Any) -> Any:
        return instrument(
            store,
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            **options,
        )

    def spans(self) -> list[ReadableSpan]:
        return sorted(self.spans_out.get_finished_spans(), key=lambda s: s.start_time or 0)

    def ours(self) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name.startswith("stickless.")]

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        return [
            s
            for s in self.spans()
            if s.parent is not None and s.parent.span_id == parent.context.span_id
        ]

    def points(self) -> dict[str, list[Any]]:
        data = self.reader.get_metrics_data()
        found: dict[str, list[Any]] = {}
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
        return found

    def value(self, name: str, **attributes: str) -> float:
        for point in self.points().get(name, []):
            if dict(point.attributes) == attributes:
                return float(point.value)
        return 0.0

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    telemetry = Telemetry()
    yield telemetry
    telemetry.shutdown()


@pytest.fixture
def config() -> SessionConfig:
    return SessionConfig(key_prefix=f"t{uuid.uuid4().hex[:10]}")


@pytest.fixture
def store(stickless_url: str, config: SessionConfig) -> Iterator[SessionStore]:
    store = SessionStore.from_url(stickless_url, config)
    yield store
    store.close()


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def every_string(otel: Telemetry) -> list[str]:
    """Every span name, attribute key and value, event name and event attribute, and every
    metric attribute, as text."""
    found: list[str] = []
    for span in otel.spans():
        found.append(span.name)
        for key, value in attrs(span).items():
            found += [key, str(value)]
        for event in span.events:
            found.append(event.name)
            for key, value in (event.attributes or {}).items():
                found += [key, str(value)]
        found.append(str(span.status.description))
    for name, points in otel.points().items():
        found.append(name)
        for point in points:
            found += [str(v) for kv in dict(point.attributes).items() for v in kv]
    return found


def conflicting_save(store: SessionStore, text: str = "text") -> None:
    """A save refused with SessionConflict: an incr on a field another request made text."""
    s = store.new()
    s["n"] = 1
    store.save(s)
    mine, other = store.load(s.token), store.load(s.token)
    assert mine is not None and other is not None
    other["n"] = text
    store.save(other)
    mine.incr("n")
    with pytest.raises(SessionConflict):
        store.save(mine)


# ------------------------------------------------------------------------ spans
def test_spans_of_every_operation_under_the_apps_span(store: SessionStore, otel: Telemetry) -> None:
    assert otel.instrument(store) is store
    with otel.tracer.start_as_current_span("request") as request:
        s = store.new()
        s["cart"] = ["apple"]
        s.user_id = "alice"
        assert store.save(s).outcome == "saved"
        loaded = store.load(s.token)
        assert loaded is not None
        assert store.load("not-a-token") is None  # malformed: no round trip at all
        loaded.renew()
        assert store.save(loaded).outcome == "saved"
        assert store.save(loaded).outcome == "unchanged"
        assert len(store.sessions_for("alice")) == 1
        assert store.destroy(loaded.token) is True
        assert store.destroy(loaded.token) is False
        assert store.revoke_user("alice") == 0

    ours = otel.ours()
    assert [s.name for s in ours] == [
        "stickless.save",
        "stickless.load",
        "stickless.load",
        "stickless.save",
        "stickless.save",
        "stickless.sessions_for",
        "stickless.destroy",
        "stickless.destroy",
        "stickless.revoke_user",
    ]
    for span in ours:  # each one a child of the app's span, INTERNAL, OK
        assert span.parent is not None
        assert span.parent.span_id == request.get_span_context().span_id
        assert span.kind is SpanKind.INTERNAL
        assert span.status.status_code is StatusCode.UNSET
        assert attrs(span)["stickless.topology"] == "standalone"
        assert attrs(span)["stickless.durability"] == "none"
        assert attrs(span)["stickless.operation"] == span.name.removeprefix("stickless.")

    def facts(span: ReadableSpan) -> dict[str, Any]:
        keep = ("stickless.operation", "stickless.topology", "stickless.durability")
        return {k.removeprefix("stickless."): v for k, v in attrs(span).items() if k not in keep}

    assert [facts(span) for span in ours] == [
        {"outcome": "saved", "round_trips": 1, "renewed": False, "forwarded": False},
        {"outcome": "hit", "round_trips": 1, "touched": False},
        {"outcome": "miss", "round_trips": 0, "touched": False},
        {"outcome": "saved", "round_trips": 1, "renewed": True, "forwarded": False},
        {"outcome": "unchanged", "round_trips": 0, "renewed": False, "forwarded": False},
        {"outcome": "listed", "round_trips": 2, "sessions": 1},
        {"outcome": "destroyed", "round_trips": 2},
        {"outcome": "missing", "round_trips": 1},
        {"outcome": "revoked", "round_trips": 1, "revoked": 0},
    ]
    # one CLIENT span per round trip, a child of its operation's span
    for span in ours:
        round_trips = otel.children(span)
        assert len(round_trips) == attrs(span)["stickless.round_trips"]
        for child in round_trips:
            assert child.kind is SpanKind.CLIENT
            assert attrs(child)["db.system.name"] == "redis"
    first_save, load = ours[0], ours[1]
    assert [c.name for c in otel.children(load)] == ["HGETALL PTTL"]
    assert attrs(otel.children(load)[0])["db.operation.batch.size"] == 2
    (save_trip,) = otel.children(first_save)
    # the first use of a script goes by source, with the load of its "#!lua" form
    assert save_trip.name == "EVAL SCRIPT"
    assert attrs(save_trip)["stickless.scripts"] == ("save", "index")
    assert [c.name for c in otel.children(ours[6])] == ["EVAL", "EVALSHA"]  # destroy, index


def test_a_due_touch_and_a_forwarded_save(
    stickless_url: str, config: SessionConfig, otel: Telemetry
) -> None:
    store = otel.instrument(
        SessionStore.from_url(stickless_url, config.with_options(touch_interval=0))
    )
    try:
        s = store.new()
        s["n"] = 1
        store.save(s)
        old_token = s.token
        first, late = store.load(old_token), store.load(old_token)  # two overlapping requests
        assert first is not None and late is not None
        first.renew()  # a plain rotation: the late request may still save data
        store.save(first)
        late["seen"] = True
        assert store.save(late).outcome == "saved"
        assert late.token == old_token
    finally:
        store.close()
    loads = [s for s in otel.ours() if s.name == "stickless.load"]
    assert [attrs(s)["stickless.touched"] for s in loads] == [True, True]
    assert [attrs(s)["stickless.round_trips"] for s in loads] == [2, 2]
    saves = [attrs(s) for s in otel.ours() if s.name == "stickless.save"]
    assert [(a["stickless.renewed"], a["stickless.forwarded"]) for a in saves] == [
        (False, False),
        (True, False),
        (False, True),
    ]


def test_a_logout_is_one_save_span(store: SessionStore, otel: Telemetry) -> None:
    """A save that destroys an invalidated session runs the destroy plan inside: one span,
    outcome ``destroyed``, its round trips counted on it."""
    otel.instrument(store)
    s = store.new()
    s["n"] = 1
    s.user_id = "bob"
    store.save(s)
    s.invalidate()
    assert store.save(s).outcome == "destroyed"
    late = store.new()
    assert store.save(late).outcome == "unchanged"
    names = [span.name for span in otel.ours()]
    assert names == ["stickless.save", "stickless.save", "stickless.save"]
    logout = attrs(otel.ours()[1])
    assert logout["stickless.outcome"] == "destroyed"
    assert logout["stickless.round_trips"] == 2  # destroy.lua, then the user index


def test_gone_and_conflict_outcomes(store: SessionStore, otel: Telemetry) -> None:
    otel.instrument(store)
    conflicting_save(store)
    s = store.new()
    s["x"] = 1
    store.save(s)
    stale = store.load(s.token)
    assert stale is not None
    store.destroy(s.token)
    stale["x"] = 2
    assert store.save(stale).outcome == "gone"
    saves = [span for span in otel.ours() if span.name == "stickless.save"]
    conflict, gone = saves[2], saves[4]
    assert attrs(conflict)["stickless.outcome"] == "conflict"
    assert attrs(conflict)["error.type"] == "SessionConflict"
    assert conflict.status.status_code is StatusCode.ERROR
    assert [e.name for e in conflict.events] == ["exception"]
    assert attrs(gone)["stickless.outcome"] == "gone"
    assert gone.status.status_code is StatusCode.UNSET
    assert otel.value("stickless_stale_writes_refused_total") == 1
    assert otel.value("stickless_errors_total", operation="save", error="SessionConflict") == 1


def test_no_token_user_id_or_value_in_any_attribute(
    store: SessionStore, otel: Telemetry, stickless_url: str, config: SessionConfig
) -> None:
    user = f"user-{uuid.uuid4().hex}"
    value = f"value-{uuid.uuid4().hex}"
    otel.instrument(store)
    s = store.new()
    s["secret"] = value
    s.user_id = user
    store.save(s)
    tokens = {s.token, s.raw_token}
    loaded = store.load(s.token)
    assert loaded is not None and loaded["secret"] == value
    loaded.renew()
    loaded["secret2"] = value
    store.save(loaded)
    tokens |= {loaded.token, loaded.raw_token}
    store.sessions_for(user)
    conflicting_save(store, value)  # its exception event is scanned too
    store.destroy(loaded.token)
    store.revoke_user(user, keep=loaded)
    assert otel.ours() and otel.points()
    for text in every_string(otel):
        for secret in (*tokens, value, user):
            assert secret not in text

    # opted in: the user id and the session id (the token's family), still no token or value
    opted = Telemetry()
    other = opted.instrument(
        SessionStore.from_url(stickless_url, config), record_user_id=True, record_session_id=True
    )
    s = other.new()
    s["secret"] = value
    s.user_id = user
    other.save(s)
    assert other.load(s.token) is not None
    other.destroy(s.token)
    other.sessions_for(user)
    other.close()
    ours = opted.ours()
    assert [attrs(span).get("user.id") for span in ours] == [user, user, None, user]
    family = s.raw_token.partition(".")[0]
    assert [attrs(span).get("stickless.session_id") for span in ours] == [
        family,
        family,
        family,
        None,
    ]
    for text in every_string(opted):
        assert value not in text and s.token not in text and s.raw_token not in text
    opted.shutdown()


def test_an_unavailable_store_gives_error_spans(config: SessionConfig, otel: Telemetry) -> None:
    down = otel.instrument(
        SessionStore.from_url(
            "redis://127.0.0.1:1/0", config.with_options(retries=1, connect_timeout=0.5)
        )
    )
    with otel.tracer.start_as_current_span("request"), pytest.raises(StoreUnavailable):
        down.load(down.new().token)
    down.close()
    (span,) = otel.ours()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "StoreUnavailable"
    assert attrs(span)["stickless.outcome"] == "unavailable"
    assert attrs(span)["error.type"] == "StoreUnavailable"
    assert attrs(span)["stickless.round_trips"] == 2  # the load is retried once
    (event,) = span.events
    assert event.name == "exception"
    assert str((event.attributes or {})["exception.type"]).endswith("StoreUnavailable")
    trips = otel.children(span)
    assert len(trips) == 2
    for trip in trips:
        assert trip.status.status_code is StatusCode.ERROR
        assert attrs(trip)["error.type"] == "ConnectionError"
    assert otel.value("stickless_errors_total", operation="load", error="StoreUnavailable") == 1
    assert otel.value("stickless_loads_total", result="miss") == 0


def test_durability_and_replicas_acknowledged(
    stickless_url: str, config: SessionConfig, otel: Telemetry
) -> None:
    """A standalone server has no replica: ``WAIT 0`` answers 0 at once; ``WAIT 1`` times
    out, the save applied but not replicated."""
    relaxed = config.with_options(durability="replicated", min_replicas=0)
    strict = config.with_options(durability="replicated", min_replicas=1, wait_timeout=0.05)
    for options in (relaxed, strict):
        store = otel.instrument(SessionStore.from_url(stickless_url, options))
        s = store.new()
        s["n"] = 1
        try:
            store.save(s)
        except ReplicationTimeout:
            pass
        store.close()
    ok, timed_out = otel.ours()
    assert attrs(ok)["stickless.durability"] == "replicated"
    assert attrs(ok)["stickless.replicas_acknowledged"] == 0
    assert attrs(ok)["stickless.outcome"] == "saved"
    assert [c.name for c in otel.children(ok)] == ["EVAL WAIT SCRIPT"]
    assert attrs(timed_out)["stickless.outcome"] == "not_replicated"
    assert attrs(timed_out)["stickless.replicas_acknowledged"] == 0
    assert timed_out.status.status_code is StatusCode.ERROR


# ------------------------------------------------------------------------ async
async def test_async_store_traces_the_same(
    stickless_url: str, config: SessionConfig, otel: Telemetry
) -> None:
    store = otel.instrument(AsyncSessionStore.from_url(stickless_url, config))
    try:
        s = store.new()
        s["n"] = 1
        s.user_id = "carol"
        with otel.tracer.start_as_current_span("setup"):
            await store.save(s)

        async def request(i: int) -> None:  # concurrent tasks: each its own parent
            with otel.tracer.start_as_current_span(f"request-{i}"):
                loaded = await store.load(s.token)
                assert loaded is not None
                loaded[f"k{i}"] = i
                await store.save(loaded)

        await asyncio.gather(*(request(i) for i in range(5)))
        assert len(await store.sessions_for("carol")) == 1
        assert await store.revoke_user("carol") == 1
        assert await store.destroy(s.token) is False
    finally:
        await store.aclose()
    by_id = {span.context.span_id: span for span in otel.spans()}
    for i in range(5):
        (parent,) = [span for span in otel.spans() if span.name == f"request-{i}"]
        mine = [
            span
            for span in otel.ours()
            if span.parent and span.parent.span_id == parent.context.span_id
        ]
        assert [span.name for span in mine] == ["stickless.load", "stickless.save"]
        assert attrs(mine[0])["stickless.outcome"] == "hit"
        assert attrs(mine[1])["stickless.outcome"] == "saved"
        for span in mine:  # the round trips under the right operation, in the right task
            (trip,) = otel.children(span)
            assert by_id[trip.parent.span_id] is span  # type: ignore[union-attr]
    rest = [span.name for span in otel.ours()[-3:]]
    assert rest == ["stickless.sessions_for", "stickless.revoke_user", "stickless.destroy"]
    assert attrs(otel.ours()[-2])["stickless.revoked"] == 1
    assert otel.value("stickless_saves_total", outcome="saved") == 6
    assert otel.value("stickless_loads_total", result="hit") == 5


async def test_a_cancelled_operation_ends_its_span(
    stickless_url: str, config: SessionConfig, otel: Telemetry
) -> None:
    """A load cut short by a timeout ends its span (outcome ``cancelled``); the task goes on
    and its next operation is traced under the app's span, not under the dead one."""
    store = AsyncSessionStore.from_url(stickless_url, config)
    send = store.send
    stalls = [True]

    async def stalling_send(batch: Any) -> Any:
        if stalls and stalls.pop():
            await asyncio.sleep(5)
        return await send(batch)

    store.send = stalling_send  # type: ignore[method-assign]
    otel.instrument(store)
    try:
        s = store.new()
        s["n"] = 1
        with otel.tracer.start_as_current_span("request") as request:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await store.save(s)
            s2 = store.new()
            s2["n"] = 2
            await store.save(s2)
    finally:
        await store.aclose()
    cancelled, saved = otel.ours()
    assert attrs(cancelled)["stickless.outcome"] == "cancelled"
    assert cancelled.status.status_code is StatusCode.UNSET
    assert attrs(saved)["stickless.outcome"] == "saved"
    assert saved.parent is not None
    assert saved.parent.span_id == request.get_span_context().span_id


# ------------------------------------------------------------------ one hook, two exporters
def test_otel_metrics_mirror_the_prometheus_ones(store: SessionStore, otel: Telemetry) -> None:
    registry = CollectorRegistry()
    prometheus.instrument(store, registry=registry)
    otel.instrument(store)
    assert len(observers_of(store)) == 2  # one hook for both
    otel.instrument(store)  # twice: nothing more
    assert len(observers_of(store)) == 2 and tracing_of(store) is not None

    s = store.new()
    s["a"] = 1
    s.user_id = "dave"
    store.save(s)
    store.load(s.token)
    store.load("nope")
    late = store.load(s.token)
    assert late is not None
    store.destroy(s.token)
    store.destroy(s.token)
    late["b"] = 2
    store.save(late)  # gone
    store.sessions_for("dave")
    store.revoke_user("dave")
    conflicting_save(store)

    points = otel.points()
    counters = [name for name in points if name.endswith("_total")]
    assert sorted(counters) == sorted(
        f"stickless_{spec.name}_total" for spec in prometheus.COUNTERS
    )
    for name in counters:  # the same names, attributes and values as the Prometheus samples
        for point in points[name]:
            labels = {k: str(v) for k, v in dict(point.attributes).items()}
            assert registry.get_sample_value(name, labels) == point.value, (name, labels)
    assert otel.value("stickless_saves_total", outcome="gone") == 1
    assert otel.value("stickless_destroys_total", result="missing") == 1
    (histogram,) = [m for m in points if m.endswith("_seconds")]
    assert histogram == "stickless_operation_duration_seconds"
    for point in points[histogram]:
        operation = str(point.attributes["operation"])
        count = registry.get_sample_value(f"{histogram}_count", {"operation": operation})
        assert point.count == count
        assert tuple(point.explicit_bounds) == prometheus.DEFAULT_BUCKETS
        # the same observations in the same buckets (Prometheus counts them cumulatively)
        cumulative = 0
        for bound, in_bucket in zip(point.explicit_bounds, point.bucket_counts, strict=False):
            cumulative += in_bucket
            le = {"operation": operation, "le": str(bound)}
            assert registry.get_sample_value(f"{histogram}_bucket", le) == cumulative
    # each round trip counted once: the store's send is wrapped once for both
    assert [attrs(s)["stickless.round_trips"] for s in otel.ours()][:2] == [1, 1]
    assert [c.name for c in otel.children(otel.ours()[0])] == ["EVAL SCRIPT"]


def test_own_metrics_or_none(store: SessionStore, otel: Telemetry) -> None:
    custom = OtelMetrics(otel.meter_provider, namespace="shop")
    otel.instrument(store, metrics=custom)
    store.load("nope")
    assert otel.value("shop_loads_total", result="miss") == 1
    bare = Telemetry()
    other = bare.instrument(SessionStore.from_url("redis://127.0.0.1:1/0"), metrics=False)
    other.load("nope")  # malformed: no I/O
    assert bare.points() == {} and [s.name for s in bare.ours()] == ["stickless.load"]
    bare.shutdown()


def test_round_trip_spans_can_be_left_out(store: SessionStore, otel: Telemetry) -> None:
    otel.instrument(store, round_trip_spans=False)
    s = store.new()
    s["a"] = 1
    store.save(s)
    (span,) = otel.spans()
    assert attrs(span)["stickless.round_trips"] == 1


def test_plans_driven_directly_are_observed(store: SessionStore, otel: Telemetry) -> None:
    """Django's engine composes the store's plans and drives them itself: still traced."""
    otel.instrument(store)
    s = store.new()
    s["a"] = 1
    store.save(s)

    def flow(plan: Any) -> Any:
        found = yield from plan.load(s.token)
        yield from plan.destroy(found)
        return found

    assert sync.drive(flow(store.plan), store) is not None
    assert [span.name for span in otel.ours()] == [
        "stickless.save",
        "stickless.load",
        "stickless.destroy",
    ]


def test_topology_without_connecting() -> None:
    assert topology_of(SessionStore.from_url("redis://127.0.0.1:1/0")) == "standalone"
    assert topology_of(SessionStore.from_url("redis+sentinel://127.0.0.1:1/mymaster")) == "sentinel"
    assert topology_of(SessionStore.from_url("redis+cluster://127.0.0.1:1")) == "cluster"
    with pytest.raises(TypeError, match="not a session store"):
        instrument(object())


def test_missing_opentelemetry_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "stickless.ops.tracing")
    with pytest.raises(ImportError, match=r"pip install 'stickless\[otel\]'"):
        importlib.import_module("stickless.ops.tracing")


# ------------------------------------------------- redis-py's instrumentation underneath
@pytest.fixture
def redis_instrumented(otel: Telemetry) -> Iterator[None]:
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    RedisInstrumentor().instrument(tracer_provider=otel.tracer_provider)
    try:
        yield
    finally:
        RedisInstrumentor().uninstrument()


def test_redis_py_spans_nest_under_ours_in_a_cluster(
    stickless_cluster: Any, config: SessionConfig, otel: Telemetry, redis_instrumented: None
) -> None:
    replicated = config.with_options(durability="replicated", min_replicas=1, wait_timeout=2)
    store = otel.instrument(SessionStore.from_url(stickless_cluster.url, replicated))
    try:
        s = store.new()
        s["a"] = 1
        _ = store.client  # the slot map is loaded before the spans we look at
        otel.spans_out.clear()
        with otel.tracer.start_as_current_span("request"):
            store.save(s)
            assert store.load(s.token) is not None
    finally:
        store.close()
    save, load = otel.ours()
    assert attrs(save)["stickless.topology"] == "cluster"
    assert attrs(save)["stickless.replicas_acknowledged"] == 1
    (trip,) = otel.children(load)
    assert trip.name == "HGETALL PTTL"
    (redis_span,) = otel.children(trip)  # redis-py's pipeline span, a child of ours
    assert redis_span.kind is SpanKind.CLIENT
    assert attrs(redis_span)["db.statement"] == "HGETALL ?\nPTTL ?"  # arguments masked
    (save_trip,) = otel.children(save)
    assert save_trip.name == "EVAL WAIT"
    # the script and its WAIT go on one connection of the slot's owner, past redis-py
    assert otel.children(save_trip) == []
    for text in every_string(otel):
        assert s.token not in text and s.raw_token not in text


def test_redis_py_sees_no_command_of_a_standalone_store(
    store: SessionStore, otel: Telemetry, redis_instrumented: None
) -> None:
    """The standalone and Sentinel executors write their batches on a pooled connection
    themselves: redis-py's instrumentation has nothing to wrap there, our round-trip spans
    are the Redis calls."""
    otel.instrument(store)
    s = store.new()
    s["a"] = 1
    store.save(s)
    store.load(s.token)
    assert {span.kind for span in otel.spans() if not span.name.startswith("stickless.")} == {
        SpanKind.CLIENT
    }
    assert all("db.statement" not in attrs(span) for span in otel.spans())
